"""The probe scheduler: one asyncio task per target, so a blackholed target only ever delays itself.

Each target runs its own loop: wait until due (interval with jitter), take a slot from a bounded pool, probe
within the target's timeout, report the result to the sink. Targets are added, changed and removed at
runtime with :meth:`Scheduler.set_targets`; a removed target's loop is cancelled and the sink told to forget
it, so its series disappear.

Cancellation is total: a library under a probe may swallow a cancellation (Python 3.11's ``asyncio.wait_for``
does when the awaited thing completes at the same moment, gh-86296), so each loop checks after every probe
whether it was asked to stop, and :meth:`Scheduler.close` cancels again until the loops have ended or its
deadline has passed — it never waits forever, and it says which loops it left behind.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from .model import AnyTarget, ProbeResult, Reason, TargetKey
from .probes import run_probe

ProbeFn = Callable[[AnyTarget, float], Awaitable[ProbeResult]]

# A probe that overruns its own timeout by this much is cut off by the scheduler: probes promise never to
# outlive their timeout, this is the belt to that pair of braces.
_OVERRUN_GRACE = 0.5

# While closing, loops that have not ended after the first grace are cancelled again this often: a
# cancellation swallowed by a library is then delivered at the loop's next await.
_RECANCEL_EVERY = 0.05
_FIRST_CANCEL_GRACE = 0.25
DEFAULT_CLOSE_DEADLINE = 1.0

log = logging.getLogger("netpath_exporter.scheduler")


class ResultSink(Protocol):
    """Where results go (the metrics store, the localizer's window, …)."""

    def record(self, target: AnyTarget, result: ProbeResult) -> None: ...

    def forget(self, target: AnyTarget) -> None: ...

    def observe_lag(self, seconds: float) -> None: ...


class Scheduler:
    def __init__(
        self,
        sink: ResultSink,
        *,
        max_concurrency: int = 128,
        jitter: float = 0.1,
        probe: ProbeFn = run_probe,
        rng: random.Random | None = None,
    ) -> None:
        self._sink = sink
        self._probe = probe
        self._jitter = jitter
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: dict[TargetKey, tuple[AnyTarget, asyncio.Task[None]]] = {}
        self._in_flight = 0
        self._closed = False

    # --- state read by the metrics and health endpoints ----------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def targets(self) -> list[AnyTarget]:
        return [target for target, _ in self._tasks.values()]

    # --- changing the target set ---------------------------------------------------------------------------

    def set_targets(self, targets: Iterable[AnyTarget]) -> None:
        """Make the scheduled set equal ``targets``: start new ones, restart changed ones, stop removed ones.

        Must be called from the event loop's thread. Unchanged targets keep their schedule.
        """
        if self._closed:
            raise RuntimeError("scheduler is closed")
        wanted = {t.key: t for t in targets}
        for key in list(self._tasks):
            current, _ = self._tasks[key]
            if key not in wanted or wanted[key] != current:
                self._stop(key, forget=key not in wanted)
        for key, target in wanted.items():
            if key not in self._tasks:
                task = asyncio.get_running_loop().create_task(
                    self._loop(target), name=f"probe {target.kind} {target.name}"
                )
                self._tasks[key] = (target, task)

    def _stop(self, key: TargetKey, *, forget: bool) -> None:
        target, task = self._tasks.pop(key)
        task.cancel()
        if forget:
            self._sink.forget(target)

    async def close(self, deadline: float = DEFAULT_CLOSE_DEADLINE) -> list[str]:
        """Stop every loop; wait at most ``deadline`` seconds for them to end. Returns the names of the loops
        still running then (logged; normally none), which the caller leaves to the process exit."""
        self._closed = True
        tasks = [task for _, task in self._tasks.values()]
        for key in list(self._tasks):
            self._stop(key, forget=False)
        left = await cancel_and_wait(tasks, deadline)
        if left:
            log.warning("scheduler closed with %d probe loops still running: %s", len(left), ", ".join(left))
        return left

    # --- one target's life ---------------------------------------------------------------------------------

    def _spread(self, interval: float) -> float:
        return interval * (1 + self._rng.uniform(-self._jitter, self._jitter))

    async def _loop(self, target: AnyTarget) -> None:
        loop = asyncio.get_running_loop()
        # A random first offset spreads targets over the interval, so a restart doesn't probe all at once.
        due = loop.time() + self._rng.uniform(0, target.interval * max(self._jitter, 0.1))
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            async with self._slots:
                self._sink.observe_lag(max(0.0, loop.time() - due))
                started = loop.time()
                result = await self._run_one(target)
            if _cancel_requested():
                # A library swallowed our cancellation and returned a result instead: stop anyway.
                raise asyncio.CancelledError
            self._sink.record(target, result)
            # Schedule from the planned time, not from when the probe ended, so probe duration doesn't
            # stretch the interval; but never queue up a burst after a long stall.
            due = max(due + self._spread(target.interval), started)

    async def _run_one(self, target: AnyTarget) -> ProbeResult:
        self._in_flight += 1
        start = time.monotonic()
        try:
            async with asyncio.timeout(target.timeout + _OVERRUN_GRACE):
                return await self._probe(target, target.timeout)
        except TimeoutError:
            return ProbeResult.failure(Reason.TIMEOUT, time.monotonic() - start, "probe overran its timeout")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe bug must not kill the target's loop
            return ProbeResult.failure(
                Reason.ERROR, time.monotonic() - start, f"probe raised {type(exc).__name__}: {exc}"
            )
        finally:
            self._in_flight -= 1


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], deadline: float) -> list[str]:
    """Cancel ``tasks`` and wait up to ``deadline`` seconds for all of them to end, cancelling the stragglers
    again every few tens of milliseconds after a first grace of a quarter second. Returns the names of those
    still running at the deadline.

    Never waits longer than the deadline and never raises for the tasks' own outcomes; a cancellation of the
    caller itself still propagates.
    """
    tasks = list(tasks)
    pending = set(tasks)
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    wait = _FIRST_CANCEL_GRACE  # undisturbed at first: cleanup in `finally` (reaping a child) may await
    while pending:
        for task in pending:
            task.cancel()
        remaining = until - loop.time()
        if remaining <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(wait, remaining))
        wait = _RECANCEL_EVERY
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log "exception was never retrieved" at exit
    return sorted(task.get_name() for task in pending)
