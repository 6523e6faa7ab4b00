"""Wiring: config → target sources → scheduler → metrics. The CLI and the tests both build this.

Nothing here touches the global Prometheus registry; the caller passes the registry in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from .config import Config
from .diagnose import DiagnosisMetrics, Localizer
from .logs import TargetStateLog
from .metrics import ProbeMetrics
from .model import AnyTarget, DNSTarget, HTTPTarget, ProbeResult, TCPTarget, Via, seen_from
from .node import ClusterIPPort, NodeFacts, NodeFactsMetrics, refresh_forever
from .perspective import NodePerspective
from .probes import prepare as prepare_probes
from .probes import run_probe
from .scheduler import ProbeFn, ResultSink, Scheduler
from .targets import TargetSources

# /healthz fails when the event loop has not ticked for this long: probes are not running any more and the
# kubelet should restart the pod. Generous, so a CPU-throttled pod is not restarted for being slow.
HEARTBEAT_STALE_SECONDS = 30.0
_HEARTBEAT_EVERY = 1.0

log = logging.getLogger("netpath_exporter")


class Exporter:
    def __init__(self, config: Config, registry: CollectorRegistry, *, probe: ProbeFn = run_probe) -> None:
        self.config = config
        self.metrics = ProbeMetrics(
            registry,
            source_node=config.source_node,
            latency_buckets=config.latency_buckets,
            targets=lambda: self.scheduler.targets(),
            in_flight=lambda: self.scheduler.in_flight,
        )
        self.localizer = Localizer(source_node=config.source_node, perspective=config.perspective)
        DiagnosisMetrics(registry, self.localizer.diagnose, source_node=config.source_node)
        sink = Tee(self.metrics, self.localizer, TargetStateLog())  # TargetStateLog: flips, for the logs
        self.scheduler = Scheduler(
            sink,
            max_concurrency=config.scheduler.max_concurrency,
            jitter=config.scheduler.jitter,
            probe=probe,
        )
        self.node_perspective = (
            NodePerspective(
                config.node_perspective.netns,
                sink,
                registry,
                source_node=config.source_node,
                max_concurrency=config.scheduler.max_concurrency,
                jitter=config.scheduler.jitter,
            )
            if config.node_perspective.enabled
            else None
        )
        self.sources = TargetSources(config.targets, self._apply_targets)
        self._registry = registry
        self.node_facts = (
            NodeFactsMetrics(registry, source_node=config.source_node) if config.node_facts.enabled else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._heartbeat = time.monotonic()
        self._started = False

    def _apply_targets(self, targets: list[AnyTarget]) -> None:
        """Every target from the exporter's own namespace and, when on, from the node's as well."""
        own = self.config.perspective
        self.scheduler.set_targets(seen_from(t, own) for t in targets)
        if self.node_perspective is not None:
            self.node_perspective.set_targets(targets)

    async def start(self) -> None:
        prepare_probes()
        self.sources.apply()
        self._spawn("heartbeat", self._beat())
        if self.node_perspective is not None:
            self._spawn("node perspective", self.node_perspective.run())
        if self.node_facts is not None:
            facts = self.config.node_facts
            self._spawn(
                "node facts",
                refresh_forever(
                    facts.interval,
                    self._on_node_facts,
                    cluster_ips=self.probed_cluster_ips,
                    netns=facts.netns or None,
                ),
            )
        if self.config.discovery is not None:
            from .discovery import run_discovery  # only when configured: it needs cluster credentials

            self._spawn(
                "discovery",
                run_discovery(
                    self.config.discovery,
                    source_node=self.config.source_node,
                    sources=self.sources,
                    registry=self._registry,
                ),
            )
        self._started = True

    def _spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(_log_crash)
        self._tasks.append(task)

    def _on_node_facts(self, snapshot: NodeFacts) -> None:
        if self.node_facts is not None:
            self.node_facts.update(snapshot)
        self.localizer.update_facts(snapshot)

    def probed_cluster_ips(self) -> list[ClusterIPPort]:
        """The Service addresses being probed, so node facts can check kube-proxy has a DNAT rule for each."""
        return service_addresses(self.scheduler.targets())

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


def service_addresses(targets: Iterable[AnyTarget]) -> list[ClusterIPPort]:
    """Every Service ClusterIP:port/protocol the targets go through (those probed `via: service`)."""
    out = []
    for target in targets:
        if target.via is not Via.SERVICE:
            continue
        if isinstance(target, TCPTarget):
            out.append(ClusterIPPort(target.host, target.port, "tcp"))
        elif isinstance(target, DNSTarget):
            out.append(ClusterIPPort(target.server, target.port, target.transport.value))
        elif isinstance(target, HTTPTarget):
            url = urlsplit(target.url)
            if url.hostname:
                out.append(ClusterIPPort(url.hostname, url.port or (443 if url.scheme == "https" else 80), "tcp"))
    return out


class Tee:
    """A ResultSink that hands every result to several sinks: the metrics and the localizer's window."""

    def __init__(self, *sinks: ResultSink) -> None:
        self._sinks = sinks

    def record(self, target: AnyTarget, result: ProbeResult) -> None:
        for sink in self._sinks:
            sink.record(target, result)

    def forget(self, target: AnyTarget) -> None:
        for sink in self._sinks:
            sink.forget(target)

    def observe_lag(self, seconds: float) -> None:
        for sink in self._sinks:
            sink.observe_lag(seconds)


def _log_crash(task: asyncio.Task[None]) -> None:
    # Background work ends only by cancellation; anything else is a bug that must be visible, not silent.
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %r stopped", task.get_name(), exc_info=task.exception())
