"""The discovery task: watch the few resources it needs, derive targets, push them per source."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from ..targets import TargetSources
from .access import ApiAccess, resolve_access
from .config import DiscoveryConfig
from .derive import SOURCES, ClusterState, Deriver, parse_resolv_conf
from .informer import Informer, Resource
from .metrics import DiscoveryMetrics

log = logging.getLogger(__name__)


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


async def run_discovery(
    cfg: DiscoveryConfig,
    *,
    source_node: str,
    sources: TargetSources,
    registry: CollectorRegistry,
    access: ApiAccess | None = None,
    rng: random.Random | None = None,
) -> None:
    """Run until cancelled. Targets are pushed once every watched resource has been listed, then on every
    change; while the API is unreachable the sources keep their last targets."""
    access = access or resolve_access(cfg)
    deriver = Deriver(cfg, source_node, read_nameservers(cfg.dns.resolv_conf) if cfg.dns.enabled else ())
    informers: dict[str, Informer] = {}

    def publish() -> None:
        if not all(i.synced.is_set() for i in informers.values()):
            return
        state = ClusterState(**{name: i.store for name, i in informers.items()})
        for source, targets in deriver.all(state).items():
            sources.update(source, targets)

    async with access.client(httpx.Timeout(10.0)) as http:
        for resource in resources(cfg):
            informers[resource.name] = Informer(
                resource, http, access, on_change=publish, watch_timeout=cfg.watch_timeout,
                backoff_initial=cfg.backoff_initial, backoff_max=cfg.backoff_max, rng=rng,
            )
        collector = DiscoveryMetrics(
            registry,
            source_node=source_node,
            informers=lambda: list(informers.values()),
            target_counts=lambda: {s: n for s, n in sources.counts().items() if s in SOURCES},
        )
        tasks = [asyncio.create_task(i.run(), name=f"discovery {name}") for name, i in informers.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            registry.unregister(collector)
