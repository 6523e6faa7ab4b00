"""Discovery's self-metrics, a custom collector on the registry it is given (never the global one).

Read on the scrape thread while the event loop writes: every value read is a plain int/float/bool and
the per-reason error dict has a fixed key set, so a scrape sees a consistent-enough snapshot without locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .informer import Informer


class DiscoveryMetrics(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        source_node: str,
        informers: Callable[[], list[Informer]],
        target_counts: Callable[[], Mapping[str, int]],
    ) -> None:
        self._source_node = source_node
        self._informers = informers
        self._target_counts = target_counts
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: families depend on which resources are watched

    def collect(self) -> Iterator[Metric]:
        node = self._source_node
        up = GaugeMetricFamily(
            "netpath_discovery_up",
            "1 when the last list or watch request for this Kubernetes resource succeeded, else 0.",
            labels=["source_node", "resource"],
        )
        last = GaugeMetricFamily(
            "netpath_discovery_last_success_timestamp_seconds",
            "Unix time the Kubernetes API last answered a list or watch for this resource (0: never).",
            labels=["source_node", "resource"],
        )
        errors = CounterMetricFamily(
            "netpath_discovery_errors",
            "Failed list or watch requests to the Kubernetes API, by resource and reason.",
            labels=["source_node", "resource", "reason"],
        )
        relists = CounterMetricFamily(
            "netpath_discovery_relists",
            "Full lists after the first successful one, made because the watch version expired (410 Gone).",
            labels=["source_node", "resource"],
        )
        objects = GaugeMetricFamily(
            "netpath_discovery_objects",
            "Objects of this resource currently known to discovery.",
            labels=["source_node", "resource"],
        )
        for informer in self._informers():
            name = informer.resource.name
            stats = informer.stats
            up.add_metric([node, name], 1 if stats.up else 0)
            last.add_metric([node, name], stats.last_success)
            for reason, count in sorted(dict(stats.errors).items()):
                errors.add_metric([node, name, reason], count)
            relists.add_metric([node, name], stats.relists)
            objects.add_metric([node, name], len(informer.store))
        targets = GaugeMetricFamily(
            "netpath_discovery_targets",
            "Targets each discovery source yields (before merging with static targets).",
            labels=["source_node", "source"],
        )
        for source, count in sorted(self._target_counts().items()):
            targets.add_metric([node, source], count)
        yield from (up, last, errors, relists, objects, targets)
