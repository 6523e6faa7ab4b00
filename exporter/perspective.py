"""The node perspective: the same targets probed from the node's own network namespace.

The manual diagnosis that netpath-exporter replaces hinged on "from the node it works, from pods it doesn't".
The exporter runs in its pod's namespace; for the node's view it starts a worker process that enters the
node's namespace (setns(2) before any thread exists, so every socket it opens lives there) and runs a
scheduler of its own. The parent sends the worker the target set as JSON lines on stdin whenever it changes
and reads results as JSON lines from stdout, recording them with ``from="node"``. A separate process rather
than per-socket namespace switching, so every probe kind (httpx, dnspython) works unchanged. The worker
exits when its stdin closes, so it never outlives the exporter.

Privileges (documented in docs/perspectives.md): CAP_SYS_ADMIN to setns, and the namespace file itself —
``/proc/1/ns/net`` with ``hostPID: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable, Iterator

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import AnyTarget, Perspective, ProbeResult, TargetKey, seen_from
from .probes import prepare as prepare_probes
from .probes import result_from_json, result_to_json, target_from_json, target_to_json
from .scheduler import ResultSink, Scheduler

log = logging.getLogger("netpath_exporter.perspective")

_MAX_LINE = 64 << 20  # a target set of thousands of targets is one line
_RESTART_BACKOFF = (1.0, 30.0)  # seconds: first and longest wait before restarting a dead worker
_REAP_WITHIN = 0.5  # seconds to wait for a killed worker to be reaped at shutdown
_WORKER_CLOSE_DEADLINE = 0.5  # seconds the worker waits for its probe loops when told to stop


# --- the wire format between exporter and worker -----------------------------------------------------------


# --- the exporter's side -----------------------------------------------------------------------------------


class NodePerspective(Collector):
    """Runs (and restarts) the worker, keeps it told of the targets, records its results."""

    def __init__(
        self,
        netns: str,
        sink: ResultSink,
        registry: CollectorRegistry,
        *,
        source_node: str,
        max_concurrency: int,
        jitter: float,
    ) -> None:
        self._netns = netns
        self._sink = sink
        self._source_node = source_node
        self._args = ["--max-concurrency", str(max_concurrency), "--jitter", str(jitter)]
        self._targets: dict[TargetKey, AnyTarget] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._up = False
        registry.register(self)

    def set_targets(self, targets: Iterable[AnyTarget]) -> None:
        """The targets to probe from the node (stamped with the node perspective here)."""
        wanted: dict[TargetKey, AnyTarget] = {}
        for target in targets:
            node_target = seen_from(target, Perspective.NODE)
            wanted[node_target.key] = node_target
        for key, target in self._targets.items():
            if key not in wanted:
                self._sink.forget(target)
        self._targets = wanted
        self._send()

    def _send(self) -> None:
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.is_closing():
            return
        line = json.dumps({"targets": [target_to_json(t) for t in self._targets.values()]})
        self._proc.stdin.write(line.encode() + b"\n")

    async def run(self) -> None:
        """Keep a worker running until cancelled; a dead worker is restarted with backoff."""
        wait = _RESTART_BACKOFF[0]
        try:
            while True:
                self._proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "exporter",
                    "worker",
                    "--netns",
                    self._netns,
                    *self._args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
                self._send()
                assert self._proc.stdout is not None
                async for line in self._proc.stdout:
                    self._up = True
                    wait = _RESTART_BACKOFF[0]
                    self._handle(line)
                code = await self._proc.wait()
                self._up = False
                log.warning(
                    "node-perspective worker (netns %s) exited with %s; restarting in %.0fs", self._netns, code, wait
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, _RESTART_BACKOFF[1])
        finally:
            self._up = False
            await self._stop_worker()

    async def _stop_worker(self) -> None:
        """End the worker now: it holds no state worth a graceful stop. Bounded: a kill is reaped at once, and
        the exporter's shutdown must not hang on a child it cannot reap."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            async with asyncio.timeout(_REAP_WITHIN):
                await proc.wait()
        except TimeoutError:
            log.warning("node-perspective worker (pid %d) not reaped within %.1fs of SIGKILL", proc.pid, _REAP_WITHIN)

    def _handle(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            key = tuple(message["key"])
            result = result_from_json(message["result"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("node-perspective worker sent an unreadable line (%s): %r", exc, line[:200])
            return
        target = self._targets.get(key)
        if target is not None:  # else: removed while its probe was in flight
            self._sink.record(target, result)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "netpath_node_perspective_up",
            "1 while the worker probing from the node's network namespace is running and reporting, else 0.",
            labels=["source_node"],
        )
        up.add_metric([self._source_node], 1.0 if self._up else 0.0)
        yield up


# --- the worker's side -------------------------------------------------------------------------------------


class _StdoutSink:
    def record(self, target: AnyTarget, result: ProbeResult) -> None:
        sys.stdout.write(json.dumps({"key": list(target.key), "result": result_to_json(result)}) + "\n")
        sys.stdout.flush()

    def forget(self, target: AnyTarget) -> None:
        pass  # the exporter forgets: it decided the target is gone

    def observe_lag(self, seconds: float) -> None:
        pass


def worker_main(netns: str, *, max_concurrency: int, jitter: float) -> int:
    """Enter ``netns``, then probe whatever target sets arrive on stdin until it closes."""
    from pyroute2.netns import setns

    try:
        setns(netns, flags=0)  # flags=0: never create a namespace that is not there
    except Exception as exc:
        print(f"netpath-exporter worker: cannot enter network namespace {netns}: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_work(max_concurrency, jitter))
    return 0


async def _work(max_concurrency: int, jitter: float) -> None:
    """Probe until stdin closes (the exporter is gone) or a SIGTERM/SIGINT arrives (a container runtime or a
    terminal signals the whole process group); either way stop within a bounded time, quietly."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_LINE)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    prepare_probes()
    scheduler = Scheduler(_StdoutSink(), max_concurrency=max_concurrency, jitter=jitter)
    reading = asyncio.create_task(_apply_target_sets(reader, scheduler), name="worker stdin")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, reading.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    finally:
        left = await scheduler.close(_WORKER_CLOSE_DEADLINE)
        if left:  # logged by the scheduler; exit without waiting for them
            sys.stdout.flush()
            os._exit(0)


async def _apply_target_sets(reader: asyncio.StreamReader, scheduler: Scheduler) -> None:
    async for line in reader:
        scheduler.set_targets(target_from_json(t) for t in json.loads(line)["targets"])
