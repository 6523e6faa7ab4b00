"""ProbeMetrics: results become series at scrape time; forgotten targets leave none behind."""

from __future__ import annotations

from types import MappingProxyType

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import ProbeMetrics
from exporter.model import PathClass, ProbeResult, Reason, TCPInfo, Via
from exporter.probes.http import HTTPTarget
from exporter.probes.tcp import TCPTarget

BUCKETS = (0.001, 0.01, 0.1, 1.0)
PEER = TCPTarget(
    name="peer/node2", path=PathClass.POD_IP, via=Via.POD, target_node="node2", host="10.42.2.3", port=10047
)
INGRESS = HTTPTarget(name="ingress/web", path=PathClass.INGRESS, via=Via.INGRESS, url="http://10.42.1.9/")


def families(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float, str]]]:
    out: dict[str, list[tuple[dict[str, str], float, str]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value, family.type))
    return out


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    matches = [v for lv, v, _ in families(registry).get(name, []) if labels.items() <= lv.items()]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def test_success_feeds_the_histogram_and_failures_count_by_reason() -> None:
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, source_node="node1", latency_buckets=BUCKETS)
    info = TCPInfo(syn_retransmits=1, rtt_seconds=0.0002, rttvar_seconds=0.0001)
    metrics.record(PEER, ProbeResult.success(0.0005, tcp_info=info, phases=MappingProxyType({"connect": 0.0005})))
    metrics.record(PEER, ProbeResult.success(1.003, tcp_info=info, phases=MappingProxyType({"connect": 1.003})))
    metrics.record(PEER, ProbeResult.failure(Reason.CONNECT_TIMEOUT, 3.0))

    assert value(registry, "netpath_probe_attempts_total", target="peer/node2") == 3
    assert value(registry, "netpath_probe_failures_total", reason="connect_timeout") == 1
    assert value(registry, "netpath_probe_duration_seconds_count", target="peer/node2") == 2  # not the failure
    assert value(registry, "netpath_probe_duration_seconds_bucket", le="0.001") == 1
    assert value(registry, "netpath_probe_duration_seconds_bucket", le="1.0") == 1
    assert value(registry, "netpath_probe_duration_seconds_bucket", le="+Inf") == 2
    assert value(registry, "netpath_tcp_syn_retransmits_total") == 2
    assert value(registry, "netpath_probe_success") == 0
    assert value(registry, "netpath_probe_phase_seconds", phase="connect") == 1.003  # the last success
    assert value(registry, "netpath_targets", path="pod_ip") == 0  # nothing scheduled: targets() is empty


def test_http_codes_are_counted_and_labels_localize() -> None:
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, source_node="node1", latency_buckets=BUCKETS, targets=lambda: [INGRESS])
    metrics.record(INGRESS, ProbeResult.success(0.01, http_status=200))
    metrics.record(INGRESS, ProbeResult.failure(Reason.BAD_STATUS, 2.0, http_status=504))
    assert value(registry, "netpath_http_responses_total", code="504") == 1
    assert value(registry, "netpath_http_responses_total", code="200") == 1
    labels = next(lv for lv, _, _ in families(registry)["netpath_probe_attempts_total"])
    assert labels == {
        "source_node": "node1",
        "from": "pod",
        "path": "ingress",
        "via": "ingress",
        "target": "ingress/web",
        "transport": "tcp",
        "target_node": "",
        "target_service": "",
    }
    assert value(registry, "netpath_targets", path="ingress") == 1


def test_forgotten_targets_leave_no_series() -> None:
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, source_node="node1", latency_buckets=BUCKETS)
    metrics.record(PEER, ProbeResult.success(0.001))
    metrics.record(INGRESS, ProbeResult.success(0.01, http_status=200))
    metrics.forget(PEER)
    text = generate_latest(registry).decode()
    assert 'target="peer/node2"' not in text and 'target="ingress/web"' in text


def test_scheduler_lag_is_a_histogram() -> None:
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry, source_node="node1", latency_buckets=BUCKETS)
    metrics.observe_lag(0.002)
    metrics.observe_lag(2.0)
    assert value(registry, "netpath_scheduler_lag_seconds_count") == 2
    assert value(registry, "netpath_scheduler_lag_seconds_bucket", le="0.005") == 1
