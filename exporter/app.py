"""Wiring: config → target sources → scheduler → metrics. The CLI and the tests both build this.

Nothing here touches the global Prometheus registry; the caller passes the registry in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from .background import BackgroundTasks
from .config import Config
from .diagnose import Diagnosis, DiagnosisMetrics, Localizer
from .diagnose.attribution import with_peer_reports
from .logs import TargetStateLog
from .metrics import ProbeMetrics
from .model import AnyTarget, ProbeResult, Via, seen_from
from .node import ClusterIPPort, NodeFacts, NodeFactsMetrics, refresh_forever
from .peer_reports import PeerReports, peer_urls
from .perspective import NodePerspective
from .probes import destination, run_probe
from .probes import prepare as prepare_probes
from .scheduler import DEFAULT_CLOSE_DEADLINE, ProbeFn, ResultSink, Scheduler
from .targets import TargetSources

if TYPE_CHECKING:
    from .discovery import DiscoveryStatus

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
        self.peer_reports = (
            PeerReports(
                registry,
                source_node=config.source_node,
                peers=lambda: peer_urls(self.scheduler.targets()),
                interval=config.peer_reports.interval,
                timeout=config.peer_reports.timeout,
            )
            if config.peer_reports.enabled
            else None
        )
        DiagnosisMetrics(registry, self.diagnose, source_node=config.source_node)
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
        self.background = BackgroundTasks(registry, source_node=config.source_node)
        self._heartbeat = time.monotonic()
        self._started = False
        self._discovery_status: DiscoveryStatus | None = None
        # Ready needs one full listing first; an API outage after that keeps the pod ready, because the exporter
        # goes on probing its last targets (and netpath_discovery_up says the API is lost): taking every exporter
        # out of its Service whenever the API server flakes would stop peers probing them and hide the outage.
        self._discovery_listed_once = False

    def _apply_targets(self, targets: list[AnyTarget]) -> None:
        """Every target from the exporter's own namespace and, when on, from the node's as well."""
        own = self.config.perspective
        self.scheduler.set_targets(seen_from(t, own) for t in targets)
        if self.node_perspective is not None:
            self.node_perspective.set_targets(targets)

    async def start(self) -> None:
        prepare_probes()
        self.sources.apply()
        spawn = self.background.spawn
        spawn("heartbeat", self._beat)
        if self.node_perspective is not None:
            spawn("node_perspective", self.node_perspective.run)
        if self.peer_reports is not None:
            spawn("peer_reports", self.peer_reports.run)
        if self.node_facts is not None:
            facts = self.config.node_facts
            spawn(
                "node_facts",
                lambda: refresh_forever(
                    facts.interval,
                    self._on_node_facts,
                    cluster_ips=self.probed_cluster_ips,
                    netns=facts.netns or None,
                ),
            )
        discovery = self.config.discovery
        if discovery is not None:
            from .discovery import DiscoveryStatus, run_discovery  # only when configured: needs credentials

            status = self._discovery_status = DiscoveryStatus()
            spawn(
                "discovery",
                lambda: run_discovery(
                    discovery,
                    source_node=self.config.source_node,
                    sources=self.sources,
                    registry=self._registry,
                    status=status,
                ),
            )
        self._started = True

    def diagnose(self) -> Diagnosis:
        """This node's diagnosis, with failures through a peer's faulty component attributed to that peer
        (its own report, when fresh). Called from the HTTP thread: /metrics and /diagnose."""
        own = self.localizer.diagnose()
        return own if self.peer_reports is None else with_peer_reports(own, self.peer_reports.fresh())

    def _on_node_facts(self, snapshot: NodeFacts) -> None:
        if self.node_facts is not None:
            self.node_facts.update(snapshot)
        self.localizer.update_facts(snapshot)

    def probed_cluster_ips(self) -> list[ClusterIPPort]:
        """The Service addresses being probed, so node facts can check kube-proxy has a DNAT rule for each."""
        return service_addresses(self.scheduler.targets())

    async def close(self, deadline: float = DEFAULT_CLOSE_DEADLINE) -> list[str]:
        """Stop the background tasks and the probe loops, waiting at most ``deadline`` seconds for them.
        Returns the names of the tasks still running then (normally none; each is logged)."""
        background, probes = await asyncio.gather(self.background.close(deadline), self.scheduler.close(deadline))
        return background + probes

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
        looping = self.background.crash_looping()
        if looping:  # restarting it in-process has not helped; a restart of the pod may
            return False, "background task crash-looping: " + "; ".join(looping)
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        down = self.background.down()
        if down:  # restarting with backoff; meanwhile targets or facts are stale
            return False, "background task down: " + "; ".join(down)
        status = self._discovery_status
        if status is not None:
            ok, why = status.ready()
            if not status.running:  # the discovery task itself failed and waits to be restarted
                return False, why
            self._discovery_listed_once = self._discovery_listed_once or ok
            if not self._discovery_listed_once:
                return False, why
        return True, f"ok: {len(self.scheduler.targets())} targets scheduled"


def service_addresses(targets: Iterable[AnyTarget]) -> list[ClusterIPPort]:
    """Every Service ClusterIP:port/protocol the targets go through (those probed `via: service`)."""
    out = []
    for target in targets:
        if target.via is not Via.SERVICE:
            continue
        address = destination(target)
        if address is not None:
            out.append(ClusterIPPort(*address))
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
