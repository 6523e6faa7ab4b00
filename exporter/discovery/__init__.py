"""Kubernetes discovery: peers, Services and their endpoints, cluster DNS and ingresses, found by watching
the API, pushed into :class:`exporter.targets.TargetSources` per source."""

from .config import DiscoveryConfig, parse_discovery
from .run import run_discovery

__all__ = ["DiscoveryConfig", "parse_discovery", "run_discovery"]
