"""The discovery task: watch the few resources it needs, derive targets, push them per source.

It never dies silently. Bad objects are skipped where they are decoded (:mod:`.decode`) and bad annotations
where they are read (:mod:`.derive`); if the task fails anyway — a bug, something nobody foresaw — it is
logged with its traceback, ``netpath_discovery_up`` says 0 for every resource while it is down, and it is
restarted with exponential backoff (``backoff.initial`` … ``backoff.max``, jittered). The sources keep their
last targets meanwhile, as they do while the API is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from ..targets import TargetSources
from .access import ApiAccess, resolve_access
from .config import DiscoveryConfig
from .derive import SOURCES, ClusterState, Deriver, Notes, parse_resolv_conf
from .informer import Informer, Resource, ResourceStats, jittered_backoff
from .metrics import DiscoveryMetrics

log = logging.getLogger(__name__)

# A run that lasted this long before failing was a healthy one: the next restart backs off from the start.
_HEALTHY_RUN_SECONDS = 60.0


def resources(cfg: DiscoveryConfig) -> list[Resource]:
    """Exactly what the enabled sources read; docs/discovery.md's RBAC rules list the same."""
    out = [Resource("nodes", "/api/v1/nodes"), Resource("services", "/api/v1/services")]
    if cfg.peers.enabled:
        out.append(Resource("pods", f"/api/v1/namespaces/{cfg.namespace}/pods", cfg.peers.label_selector))
    if cfg.services.enabled or cfg.dns.enabled:
        out.append(Resource("endpointslices", "/apis/discovery.k8s.io/v1/endpointslices"))
    if cfg.ingress.enabled:
        out.append(Resource("ingresses", "/apis/networking.k8s.io/v1/ingresses"))
    return out


def read_nameservers(path: str) -> tuple[str, ...]:
    if not path:
        return ()
    try:
        return parse_resolv_conf(Path(path).read_text())
    except OSError:
        return ()


@dataclass
class DiscoveryStatus:
    """What the self-metrics and health read, from the HTTP thread: plain attributes, replaced whole."""

    stats: dict[str, ResourceStats] = field(default_factory=dict)  # per resource, kept across restarts
    informers: list[Informer] = field(default_factory=list)  # of the current (or last) run
    running: bool = False  # False while the task is down, waiting to be restarted
    restarts: int = 0
    last_failure: str = ""
    notes: Notes = field(default_factory=Notes)  # what the last derivation skipped

    def resource_up(self, name: str) -> bool:
        stats = self.stats.get(name)
        return self.running and stats is not None and stats.up

    def ready(self) -> tuple[bool, str]:
        """For /readyz, if the app wants it: discovery running and every resource listed."""
        if not self.running:
            return False, f"discovery down ({self.last_failure or 'starting'}), restarts: {self.restarts}"
        if not self.informers or not all(i.synced.is_set() for i in self.informers):
            return False, "discovery: not every resource listed yet"
        return True, "ok"


async def run_discovery(
    cfg: DiscoveryConfig,
    *,
    source_node: str,
    sources: TargetSources,
    registry: CollectorRegistry,
    access: ApiAccess | None = None,
    rng: random.Random | None = None,
    status: DiscoveryStatus | None = None,
) -> None:
    """Run until cancelled, restarting after any failure. Targets are pushed once every watched resource has
    been listed, then on every change; while the API is unreachable or the task is down, the sources keep
    their last targets."""
    rng = rng or random.Random()
    status = status if status is not None else DiscoveryStatus()
    watched = resources(cfg)
    for resource in watched:
        status.stats.setdefault(resource.name, ResourceStats())
    collector = DiscoveryMetrics(
        registry,
        source_node=source_node,
        status=status,
        target_counts=lambda: {s: n for s, n in sources.counts().items() if s in SOURCES},
    )
    loop = asyncio.get_running_loop()
    failures = 0
    try:
        while True:
            started = loop.time()
            try:
                await _run_once(cfg, watched, source_node, sources, access, rng, status)
                problem = "ended by itself"  # it never should: every informer loops until cancelled
            except Exception as exc:  # whatever it was, discovery must come back
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.error("discovery failed", exc_info=True)
            status.running = False
            status.last_failure = problem
            status.restarts += 1
            for stats in status.stats.values():
                stats.up = False
            failures = 1 if loop.time() - started > _HEALTHY_RUN_SECONDS else failures + 1
            delay = jittered_backoff(failures, cfg.backoff_initial, cfg.backoff_max, rng)
            log.error("discovery down (%s); restarting in %.1fs (restart %d)", problem, delay, status.restarts)
            await asyncio.sleep(delay)
    finally:
        status.running = False
        registry.unregister(collector)


async def _run_once(
    cfg: DiscoveryConfig,
    watched: list[Resource],
    source_node: str,
    sources: TargetSources,
    access: ApiAccess | None,
    rng: random.Random,
    status: DiscoveryStatus,
) -> None:
    access = access or resolve_access(cfg)
    deriver = Deriver(cfg, source_node, read_nameservers(cfg.dns.resolv_conf) if cfg.dns.enabled else ())
    informers: dict[str, Informer] = {}
    reported: dict[tuple[str, str, str], list[tuple[str, str]]] = {}

    def publish() -> None:
        if not all(i.synced.is_set() for i in informers.values()):
            return
        derivation = deriver.all(ClusterState(**{name: i.store for name, i in informers.items()}))
        for source, targets in derivation.targets.items():
            sources.update(source, targets)
        status.notes = derivation.notes
        for key, problems in derivation.notes.annotation_errors.items():
            if reported.get(key) != problems:  # once per object and problem, not once per round
                resource, ns, name = key
                log.warning("%s %s/%s not probed: %s", resource, ns, name, "; ".join(f"{a}: {p}" for a, p in problems))
        reported.clear()
        reported.update(derivation.notes.annotation_errors)

    async with access.client(httpx.Timeout(10.0)) as http:
        for resource in watched:
            informers[resource.name] = Informer(
                resource,
                http,
                access,
                on_change=publish,
                watch_timeout=cfg.watch_timeout,
                backoff_initial=cfg.backoff_initial,
                backoff_max=cfg.backoff_max,
                rng=rng,
                max_line_bytes=cfg.max_watch_line_bytes,
                max_list_bytes=cfg.max_list_bytes,
                stats=status.stats[resource.name],
            )
        status.informers = list(informers.values())
        status.running = True
        tasks = [asyncio.create_task(i.run(), name=f"discovery {name}") for name, i in informers.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
