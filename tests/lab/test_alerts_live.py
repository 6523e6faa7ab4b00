"""The alert rules on a live lab: a real Prometheus scrapes every exporter (1 s) with alerts/*.rules.yml as
they are, and a real Alertmanager applies alerts/alertmanager.example.yml's routes and inhibit rules.

Healthy: nothing pending or firing. clusterip-nat on node2: the ClusterIP differential pages for node2 and
nothing else pages. dns-down: CoreDNS-down pages and the DNS-path alerts are inhibited in Alertmanager.
Every wait is bounded; Prometheus and Alertmanager run in node1's namespace and are queried there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab import monitoring, scenarios
from lab.monitoring import wait_for
from lab.topology import Topology

pytestmark = pytest.mark.lab

BROKEN_NODE = "node2"


@pytest.fixture(scope="module")
def monitored(lab: Topology) -> Iterator[Topology]:
    """Prometheus and Alertmanager (fresh data) on the module's lab for every test, stopped afterwards."""
    monitoring.start(lab)
    try:
        up = 'up{job="netpath-exporter"} == 1'
        wait_for(lambda: len(monitoring.prometheus_query(lab, up)) == 3, 30, lambda: "3 exporters up")
        yield lab
    finally:
        monitoring.stop()


@pytest.fixture(autouse=True)
def healed(lab: Topology) -> Iterator[None]:
    yield
    scenarios.heal(lab)


def firing(topo: Topology, severity: str = "critical") -> list[dict[str, str]]:
    return [
        a["labels"]
        for a in monitoring.prometheus_alerts(topo)
        if a["state"] == "firing" and a["labels"].get("severity") == severity
    ]


def notified(topo: Topology, severity: str = "critical") -> list[dict[str, str]]:
    """What Alertmanager would page for: received, not inhibited or silenced."""
    return [
        a["labels"]
        for a in monitoring.alertmanager_alerts(topo)
        if a["status"]["state"] == "active" and a["labels"].get("severity") == severity
    ]


def test_healthy_lab_has_no_alert_pending_or_firing(monitored: Topology) -> None:
    # Wait until every path has the minimum volume the burn-rate alerts need, so they could go pending.
    low = "source_path:netpath_probe_attempts:rate5m * 300 < 10"
    wait_for(lambda: monitoring.prometheus_query(monitored, "source_path:netpath_probe_attempts:rate5m"), 30, str)
    wait_for(lambda: not monitoring.prometheus_query(monitored, low), 90, lambda: "minimum volume on every path")
    for _ in range(8):  # 16 s of 1 s evaluations
        alerts = monitoring.prometheus_alerts(monitored)
        assert alerts == [], monitoring.report(monitored)
        time.sleep(2)


def test_clusterip_nat_pages_the_differential_for_that_node_only(monitored: Topology) -> None:
    scenarios.break_(monitored, "clusterip-nat", BROKEN_NODE)

    def differential() -> list[dict[str, str]]:
        return [a for a in firing(monitored) if a["alertname"] == "NetpathClusterIPPathFailing"]

    fired = wait_for(differential, 150, lambda: f"differential firing\n{monitoring.report(monitored)}")
    # one alert per perspective (from="pod" and from="node"): both lose the NAT hook; one notification group
    assert {a["source_node"] for a in fired} == {BROKEN_NODE}
    report = monitoring.report(monitored)
    assert {(a["alertname"], a["source_node"]) for a in firing(monitored)} == {
        ("NetpathClusterIPPathFailing", BROKEN_NODE)
    }, report
    paged = wait_for(lambda: notified(monitored), 30, lambda: "Alertmanager received the page")
    assert {(a["alertname"], a["source_node"]) for a in paged} == {("NetpathClusterIPPathFailing", BROKEN_NODE)}, report


def test_dns_down_pages_coredns_down_and_inhibits_the_dns_path_alerts(monitored: Topology) -> None:
    scenarios.break_(monitored, "dns-down")

    def both_firing() -> bool:
        names = {a["alertname"] for a in firing(monitored)}
        return {"NetpathCoreDNSDown", "NetpathDNSServicePathFailing"} <= names

    wait_for(both_firing, 200, lambda: f"both firing\n{monitoring.report(monitored)}")

    def dns_path_in_alertmanager() -> list[dict[str, Any]]:
        return [
            a
            for a in monitoring.alertmanager_alerts(monitored)
            if a["labels"]["alertname"] == "NetpathDNSServicePathFailing"
        ]

    dns_path = wait_for(dns_path_in_alertmanager, 30, lambda: "Alertmanager received the DNS-path alerts")
    report = monitoring.report(monitored)
    assert all(a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in dns_path), report
    paged = {a["alertname"] for a in notified(monitored)}
    assert "NetpathCoreDNSDown" in paged, report
    assert "NetpathDNSServicePathFailing" not in paged, report
