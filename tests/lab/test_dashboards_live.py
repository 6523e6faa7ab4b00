"""The dashboards against the lab's real Prometheus: after a short healthy run every panel query returns data, and
with clusterip-nat on node2 the matrices and the side-by-side panels single out node2 (its pod IPs still fine).

Queries go through Prometheus's HTTP API exactly as Grafana sends them (variables substituted; $__rate_interval
30 s, see grafana/preview.py), from inside the lab namespace Prometheus runs in."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("lab.monitoring", reason="needs lab/monitoring.py (issue 6): the lab's Prometheus")

from lab import scenarios
from lab.topology import Topology

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from grafana import preview, queries, render

pytestmark = pytest.mark.lab

HEALTHY_SECONDS = 45  # several probes (every 5 s) and rule evaluations inside one 30 s rate window
BROKEN_SECONDS = 35
# Panels that show problems only: empty while the lab is healthy, by design ("no verdict", "no alert").
PROBLEM_ONLY = {
    "Localizer verdicts now",
    "Localizer verdicts over time",
    "Localizer verdicts on $node",
    "Alerts pending and firing",
}


@pytest.fixture(scope="module")
def prometheus(lab: Topology) -> Iterator[tuple[render.PrometheusApi, float]]:
    with preview.lab_prometheus(lab) as api:
        yield api, time.time()


def evaluate_all(api: render.PrometheusApi, start: float) -> dict[tuple[str, str, str], list[render.Series]]:
    out = {}
    for dashboard in queries.dashboards().values():
        node = {} if preview._multi_node(dashboard) else {"node": preview.BROKEN_NODE}
        window = render.Window(start, time.time(), preview.STEP, {**preview.LAB_VARIABLES, **node})
        for evaluated in preview.evaluate(api, dashboard, window):
            q = evaluated.query
            out[(q.dashboard, q.panel, q.ref_id)] = evaluated.series
    return out


def by(series: list[render.Series], *labels: str) -> dict[tuple[str, ...], float | None]:
    return {tuple(s.labels.get(name, "") for name in labels): s.last() for s in series}


def panel(results: dict[tuple[str, str, str], list[render.Series]], title: str) -> list[render.Series]:
    return [s for (_, t, _), series in results.items() if t == title for s in series]


def test_every_panel_query_returns_data_after_a_short_run(
    prometheus: tuple[render.PrometheusApi, float],
) -> None:
    api, start = prometheus
    time.sleep(max(0.0, start + HEALTHY_SECONDS - time.time()))
    results = evaluate_all(api, start)
    empty = [key for key, series in results.items() if not series and key[1] not in PROBLEM_ONLY]
    assert not empty, f"panel queries without data: {empty}"
    assert len(results) == sum(len(queries.panel_queries(d)) for d in queries.dashboards().values())


def test_with_clusterip_nat_on_node2_the_matrices_show_node2(
    lab: Topology, prometheus: tuple[render.PrometheusApi, float]
) -> None:
    api, _ = prometheus
    broken_at = time.time()
    scenarios.break_(lab, "clusterip-nat", "node2")
    try:
        time.sleep(BROKEN_SECONDS)
        results = evaluate_all(api, broken_at)
    finally:
        scenarios.heal(lab)

    by_path = by(panel(results, "Error ratio: source node × path class"), "source_node", "path")
    assert by_path[("node2", "cluster_ip")] > 0.5  # type: ignore[operator]
    assert by_path[("node2", "ingress")] > 0.2  # type: ignore[operator]
    assert by_path[("node2", "pod_ip")] == 0
    for node in ("node1", "node3"):
        assert by_path[(node, "cluster_ip")] == 0, node

    pod_matrix = by(panel(results, "Pod-IP error ratio: source node → target node"), "source_node", "target_node")
    assert pod_matrix and all(v == 0 for v in pod_matrix.values()), f"pod IPs must stay clean: {pod_matrix}"

    clusterip = by(panel(results, "ClusterIP success by source node"), "source_node")
    pod_ip = by(panel(results, "Pod IP success by source node"), "source_node")
    assert clusterip[("node2",)] < 0.5 < clusterip[("node1",)]  # type: ignore[operator]
    assert pod_ip[("node2",)] == 1

    verdicts = by(panel(results, "Localizer verdicts now"), "source_node", "cause")
    assert ("node2", "clusterip_nat_broken") in verdicts
    share_504 = by(panel(results, "504 share by source node"), "source_node")
    assert share_504[("node2",)] > 0 == share_504[("node1",)]  # type: ignore[operator]
    nat_hook = by(panel(results, "ClusterIP NAT hook"), "chain")  # the node dashboard, for node2
    assert nat_hook[("PREROUTING",)] == 0
    empty = [key for key, series in results.items() if not series and "Alerts" not in key[1]]
    assert not empty, f"panel queries without data while node2 is broken: {empty}"
