"""Discovery's self-metrics, a custom collector on the registry it is given (never the global one).

Read on the scrape thread while the event loop writes: every value read is a plain int/float/bool and
the per-reason error dict has a fixed key set, so a scrape sees a consistent-enough snapshot without locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .decode import DECODE_REASONS
from .derive import ADDRESS_REASONS, ANNOTATIONS, SOURCES

if TYPE_CHECKING:
    from .run import DiscoveryStatus

# The resources whose objects carry opt-in annotations.
ANNOTATED = ("services", "ingresses")


class DiscoveryMetrics(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        source_node: str,
        status: DiscoveryStatus,
        target_counts: Callable[[], Mapping[str, int]],
    ) -> None:
        self._source_node = source_node
        self._status = status
        self._target_counts = target_counts
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: families depend on which resources are watched

    def collect(self) -> Iterator[Metric]:
        node = self._source_node
        up = GaugeMetricFamily(
            "netpath_discovery_up",
            "1 when the last list or watch request for this Kubernetes resource succeeded and the discovery task "
            "runs, else 0.",
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
        decode = CounterMetricFamily(
            "netpath_discovery_decode_errors",
            "List items and watch events skipped because they do not decode, by resource and reason.",
            labels=["source_node", "resource", "reason"],
        )
        status = self._status
        stores = {i.resource.name: len(i.store) for i in list(status.informers)}
        for name, stats in sorted(dict(status.stats).items()):
            up.add_metric([node, name], 1 if status.resource_up(name) else 0)
            last.add_metric([node, name], stats.last_success)
            for reason, count in sorted(dict(stats.errors).items()):
                errors.add_metric([node, name, reason], count)
            for reason in DECODE_REASONS:
                decode.add_metric([node, name, reason], stats.decode_errors.get(reason, 0))
            relists.add_metric([node, name], stats.relists)
            objects.add_metric([node, name], stores.get(name, 0))
        restarts = CounterMetricFamily(
            "netpath_discovery_restarts",
            "Times the discovery task failed and was restarted (with backoff); each is logged with its traceback.",
            labels=["source_node"],
        )
        restarts.add_metric([node], status.restarts)
        notes = status.notes
        skipped = GaugeMetricFamily(
            "netpath_discovery_skipped_addresses",
            "Discovered addresses not probed, by source and reason: not an IP, a special address, outside the CIDRs.",
            labels=["source_node", "source", "reason"],
        )
        for source in SOURCES:
            for reason in ADDRESS_REASONS:
                skipped.add_metric([node, source, reason], notes.skipped_addresses.get((source, reason), 0))
        bad_annotations = GaugeMetricFamily(
            "netpath_discovery_annotation_errors",
            "Opted-in objects not probed because this annotation's value was rejected.",
            labels=["source_node", "resource", "annotation"],
        )
        per_annotation = {(r, a): 0 for r in ANNOTATED for a in ANNOTATIONS}
        for (resource, _, _), problems in list(notes.annotation_errors.items()):
            for annotation in {a for a, _ in problems}:
                per_annotation[(resource, annotation)] = per_annotation.get((resource, annotation), 0) + 1
        for (resource, annotation), count in sorted(per_annotation.items()):
            bad_annotations.add_metric([node, resource, annotation], count)
        excluded = GaugeMetricFamily(
            "netpath_discovery_excluded_objects",
            "Opted-in objects not probed because their namespace is not allowed (discovery.namespaces).",
            labels=["source_node", "resource"],
        )
        for resource in ANNOTATED:
            excluded.add_metric([node, resource], notes.excluded.get(resource, 0))
        targets = GaugeMetricFamily(
            "netpath_discovery_targets",
            "Targets each discovery source yields (before merging with static targets).",
            labels=["source_node", "source"],
        )
        for source, count in sorted(self._target_counts().items()):
            targets.add_metric([node, source], count)
        yield from (up, last, errors, decode, relists, objects, targets, restarts, skipped, bad_annotations, excluded)
