"""``netpath_diagnosis{source_node, cause}``: 1 while the localizer holds a verdict for the cause, else 0; and
``netpath_peer_fault{source_node, peer_node, cause}``: 1 while this node's failures are a peer's named cause.

Rendered for every cause, held or not (a closed set: one series per cause per exporter), so an alert can say
``netpath_diagnosis == 1`` and a dashboard can show a cause going back to 0. The diagnosis is computed at
scrape time from the probe windows, so the gauge is as fresh as the last probe results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .causes import Cause
from .localizer import Diagnosis


class DiagnosisMetrics(Collector):
    def __init__(self, registry: CollectorRegistry, diagnose: Callable[[], Diagnosis], *, source_node: str) -> None:
        self._diagnose = diagnose
        self._source_node = source_node
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # computed at scrape time; skip the registry's describe-time collect

    def collect(self) -> Iterator[Metric]:
        diagnosis = self._diagnose()
        held = diagnosis.causes
        family = GaugeMetricFamily(
            "netpath_diagnosis",
            "1 while the localizer names this cause from the recent probe results and node facts, else 0.",
            labels=["source_node", "cause"],
        )
        for cause in Cause:
            family.add_metric([self._source_node, cause.value], 1.0 if cause in held else 0.0)
        yield family
        # Only the attributions held now: a peer's fault that cleared leaves no series.
        peer = GaugeMetricFamily(
            "netpath_peer_fault",
            "1 while failures seen from this node run through a component on peer_node that peer_node's own "
            "localizer explains by cause (its report, read by this exporter).",
            labels=["source_node", "peer_node", "cause"],
        )
        for fault in diagnosis.peer_faults:
            for owner_cause in fault.causes:
                peer.add_metric([self._source_node, fault.owner, owner_cause], 1.0)
        yield peer
