"""The exporter's long-running work besides probing — discovery, node facts, the node perspective, the heartbeat
— each kept alive: a task that fails is logged and restarted with backoff, and the health endpoints and
``netpath_background_task_up`` say so while it is down, so a stopped task is never a silent one.

Every task runs until cancelled; returning is a failure like raising. :meth:`BackgroundTasks.close` cancels them
all and waits a bounded time (see scheduler.cancel_and_wait).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .scheduler import DEFAULT_CLOSE_DEADLINE, cancel_and_wait

log = logging.getLogger("netpath_exporter.background")

Work = Callable[[], Coroutine[Any, Any, None]]

# A run that lasted this long counts as recovered: the next failure starts the backoff from the beginning.
_STABLE_AFTER = 60.0
# Failing this many times in a row without a stable run means restarting in-process does not help: /healthz
# fails, so the kubelet restarts the whole pod.
CRASH_LOOP_FAILURES = 5


@dataclass
class _State:
    up: bool = False
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str = ""


class BackgroundTasks(Collector):
    """Starts named tasks, restarts them with backoff when they fail, and reports their state."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        source_node: str,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._source_node = source_node
        self._backoff = (backoff_initial, backoff_max)
        self._rng = rng or random.Random()
        self._states: dict[str, _State] = {}
        self._tasks: list[asyncio.Task[None]] = []
        registry.register(self)

    def spawn(self, name: str, work: Work) -> None:
        """Run ``work()`` as task ``name``, calling it again (with backoff) whenever it ends by itself."""
        self._states[name] = _State(up=True)  # starting counts as running: it is down only after a failure
        self._tasks.append(asyncio.create_task(self._supervise(name, work), name=name))

    async def close(self, deadline: float = DEFAULT_CLOSE_DEADLINE) -> list[str]:
        """Cancel every task; wait at most ``deadline`` seconds. Returns the names of those still running."""
        left = await cancel_and_wait(self._tasks, deadline)
        if left:
            log.warning("background tasks still running at the shutdown deadline: %s", ", ".join(left))
        return left

    async def _supervise(self, name: str, work: Work) -> None:
        state = self._states[name]
        wait = self._backoff[0]
        while True:
            started = time.monotonic()
            state.up = True
            try:
                await work()
                error = "returned (it should run until cancelled)"
                exc_info: BaseException | None = None
            except asyncio.CancelledError:
                state.up = False
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                exc_info = exc
            state.up = False
            if time.monotonic() - started >= _STABLE_AFTER:
                wait, state.failures_in_a_row = self._backoff[0], 0
            state.failures_in_a_row += 1
            state.last_error = error
            delay = wait * self._rng.uniform(0.8, 1.2)
            log.error(
                "background task %r stopped: %s; restarting in %.1fs (failure %d in a row)",
                name,
                error,
                delay,
                state.failures_in_a_row,
                exc_info=exc_info,
            )
            await asyncio.sleep(delay)
            wait = min(wait * 2, self._backoff[1])
            state.restarts += 1

    # --- read by the health endpoints (from the HTTP thread: plain attributes only) and by /metrics --------

    def down(self) -> list[str]:
        """Tasks not running now (between a failure and their restart), with why."""
        return [f"{name} ({s.last_error})" for name, s in self._states.items() if not s.up]

    def crash_looping(self) -> list[str]:
        """Tasks that failed CRASH_LOOP_FAILURES times in a row without a run of a minute in between."""
        return [
            f"{name} failed {s.failures_in_a_row} times in a row ({s.last_error})"
            for name, s in self._states.items()
            if s.failures_in_a_row >= CRASH_LOOP_FAILURES
        ]

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "netpath_background_task_up",
            "1 while the background task runs, 0 between a failure and its restart.",
            labels=["source_node", "task"],
        )
        restarts = CounterMetricFamily(
            "netpath_background_task_restarts",
            "Restarts of the background task after it failed.",
            labels=["source_node", "task"],
        )
        for name, state in list(self._states.items()):
            up.add_metric([self._source_node, name], 1.0 if state.up else 0.0)
            restarts.add_metric([self._source_node, name], float(state.restarts))
        yield up
        yield restarts
