"""Wiring: config → target sources → scheduler → metrics. The CLI and the tests both build this.

Nothing here touches the global Prometheus registry; the caller passes the registry in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CollectorRegistry

from .config import Config
from .metrics import ProbeMetrics
from .probes import run_probe
from .scheduler import ProbeFn, Scheduler
from .targets import TargetSources

# /healthz fails when the event loop has not ticked for this long: probes are not running any more and the
# kubelet should restart the pod. Generous, so a CPU-throttled pod is not restarted for being slow.
HEARTBEAT_STALE_SECONDS = 30.0
_HEARTBEAT_EVERY = 1.0


class Exporter:
    def __init__(self, config: Config, registry: CollectorRegistry, *, probe: ProbeFn = run_probe) -> None:
        self.config = config
        self.metrics = ProbeMetrics(
            registry,
            source_node=config.source_node,
            perspective=config.perspective,
            latency_buckets=config.latency_buckets,
            targets=lambda: self.scheduler.targets(),
            in_flight=lambda: self.scheduler.in_flight,
        )
        self.scheduler = Scheduler(
            self.metrics,
            max_concurrency=config.scheduler.max_concurrency,
            jitter=config.scheduler.jitter,
            probe=probe,
        )
        self.sources = TargetSources(config.targets, self.scheduler.set_targets)
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat = time.monotonic()
        self._started = False

    async def start(self) -> None:
        self.sources.apply()
        self._tasks.append(asyncio.create_task(self._beat(), name="heartbeat"))
        self._started = True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.scheduler.close()

    async def __aenter__(self) -> Exporter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _beat(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            await asyncio.sleep(_HEARTBEAT_EVERY)

    # Called from the HTTP thread: they read plain attributes only.
    def healthy(self) -> tuple[bool, str]:
        stale = time.monotonic() - self._heartbeat
        if stale > HEARTBEAT_STALE_SECONDS:
            return False, f"event loop has not run for {stale:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        return True, f"ok: {len(self.scheduler.targets())} targets scheduled"
