"""Kubernetes discovery: peers, Services and their endpoints, cluster DNS and ingresses, found by watching
the API, pushed into :class:`exporter.targets.TargetSources` per source."""

from .access import AccessError, resolve_access
from .config import DiscoveryConfig, parse_discovery
from .run import DiscoveryStatus, run_discovery

__all__ = ["AccessError", "DiscoveryConfig", "DiscoveryStatus", "parse_discovery", "resolve_access", "run_discovery"]
