"""Acceptance for kube-prometheus-stack: a real Prometheus scrapes the lab's exporters the way prometheus-operator
would for the chart's rendered ServiceMonitor and PodMonitor (lab/operator_scrape.py: the operator's target
labels job, namespace, service, pod, container, endpoint, instance, the monitor's relabelings, honor_labels
false), with alerts/*.rules.yml loaded. The per-Service recording rules must carry the probed Service, and no
exporter label may arrive renamed exported_*.

Prometheus is not pointed at the lab's API server (its stand-in serves what netpath-exporter reads, not every
resource Prometheus' Kubernetes discovery watches), so the targets carry the __meta_kubernetes_* labels
discovery would give the chart's pods (release netpath-exporter in namespace monitoring) and Prometheus applies
the relabeling. Every lab Prometheus scrapes this way (lab/monitoring.py); this test also covers the PodMonitor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import monitoring, operator_scrape
from lab.monitoring import wait_for
from lab.topology import Topology

pytestmark = pytest.mark.lab

RELEASE, NAMESPACE = operator_scrape.RELEASE, operator_scrape.NAMESPACE


def scrape_config(topo: Topology, kind: str) -> dict[str, Any]:
    return operator_scrape.stack_monitoring(topo.exporters, kind, monitoring.INTERVAL).scrape_config


def probed_services(topo: Topology) -> set[str]:
    """The Services the lab's exporters probe (static and discovered targets), read from their own /metrics: what
    target_service must show."""
    return {
        sample.labels["target_service"]
        for info in topo.exporters.values()
        for family in text_string_to_metric_families(monitoring.http_get(topo, info["metrics"]))
        for sample in family.samples
        if sample.name == "netpath_probe_attempts_total" and sample.labels.get("target_service")
    }


@pytest.fixture(params=["ServiceMonitor", "PodMonitor"])
def scraped_as(request: pytest.FixtureRequest, lab: Topology) -> Iterator[tuple[str, Topology]]:
    kind = request.param
    monitoring.start(lab, [scrape_config(lab, kind)])
    try:
        wait_for(
            lambda: len(monitoring.prometheus_query(lab, 'up{job="netpath-exporter"} == 1')) == 3,
            45,
            lambda: f"3 exporters up through the {kind}'s relabeling",
        )
        yield kind, lab
    finally:
        monitoring.stop()


def test_operator_style_scrape_keeps_every_exporter_label_and_the_probed_service(
    scraped_as: tuple[str, Topology],
) -> None:
    kind, topo = scraped_as
    # The target labels the operator gives every series, and the chart's node label.
    ups = {r["metric"]["pod"]: r["metric"] for r in monitoring.prometheus_query(topo, 'up{job="netpath-exporter"}')}
    assert set(ups) == {e["pod"] for e in topo.exporters.values()}
    for node, e in topo.exporters.items():
        labels = ups[e["pod"]]
        assert (
            labels["namespace"] == NAMESPACE and labels["container"] == "exporter" and labels["endpoint"] == "metrics"
        )
        assert labels["node"] == node and labels["instance"].startswith(e["ip"] + ":")
        if kind == "ServiceMonitor":
            assert labels["service"] == f"{RELEASE}-peers"
    # No exporter label collided with a target label: nothing renamed exported_*.
    names = json.loads(monitoring.http_get(topo, f"http://{monitoring.PROMETHEUS_ADDR}/api/v1/labels"))["data"]
    assert [n for n in names if n.startswith("exported_")] == []
    # The per-Service recording rules group by the probed Service, with the exporter's namespace kept.
    wanted = probed_services(topo)

    def per_service() -> list[dict[str, Any]]:
        rows = monitoring.prometheus_query(topo, "source_service:netpath_probe_attempts:rate5m")
        return rows if {r["metric"].get("target_service") for r in rows} >= wanted else []

    rows = wait_for(per_service, 60, lambda: f"source_service:* for every probed Service {sorted(wanted)}")
    assert {r["metric"].get("target_service", "") for r in rows} - {""} == wanted
    assert {r["metric"]["namespace"] for r in rows} == {NAMESPACE}
    assert not [r for r in rows if "service" in r["metric"] or "exported_service" in r["metric"]]
    # And on the raw series both arrive side by side: the exporter's target_service, the operator's service.
    raw = monitoring.prometheus_query(topo, "count by (service, target_service) (netpath_probe_attempts_total)")
    assert {r["metric"].get("target_service", "") for r in raw} - {""} == wanted
    if kind == "ServiceMonitor":
        assert {r["metric"]["service"] for r in raw} == {f"{RELEASE}-peers"}
