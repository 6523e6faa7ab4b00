"""exporter.exposition: the pre-rendered /metrics body is what prometheus_client would write, and parses back.

The reference everywhere is prometheus_client's own encoder run over the same collectors' collect(): the fast path
must not change a byte of a sample line, nor a parsed value, in the text and OpenMetrics formats, gzip included.
"""

from __future__ import annotations

import gzip
from types import MappingProxyType

import pytest
from contract import documented
from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.exposition import ExpositionRegistry, render
from exporter.metrics import ProbeMetrics, _count_text
from exporter.model import PathClass, ProbeResult, Reason, TCPInfo, Transport, Via
from exporter.probes.dns import DNSTarget
from exporter.probes.http import HTTPTarget
from exporter.probes.tcp import TCPTarget

BUCKETS = (0.0001, 0.00025, 0.001, 0.01, 0.1, 1.0)
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
TARGETS = (
    TCPTarget(name="peer/node2", path=PathClass.POD_IP, via=Via.POD, target_node="node2", host="10.42.2.3", port=1),
    TCPTarget(
        name="svc/default/web", path=PathClass.CLUSTER_IP, via=Via.SERVICE, service="default/web", host="h", port=80
    ),
    HTTPTarget(name="ingress/web", path=PathClass.INGRESS, via=Via.INGRESS, url="http://10.42.1.9/"),
    DNSTarget(
        name="dns/kube-dns",
        path=PathClass.DNS,
        via=Via.SERVICE,
        server="10.43.0.10",
        protocol=Transport.TCP,
        query_name="kubernetes.default.svc.cluster.local",
    ),
    # Label values that need escaping, in both formats
    TCPTarget(name='odd "name" \\ with\nnewline', path=PathClass.POD_IP, via=Via.POD, host="10.42.3.4", port=2),
)


class _Only(Collector):
    """One collector's collect() alone: what prometheus_client renders for it."""

    def __init__(self, collector: ProbeMetrics) -> None:
        self._collector = collector

    def collect(self):  # type: ignore[no-untyped-def]
        return self._collector.collect()


def probed(registry: CollectorRegistry) -> ProbeMetrics:
    """ProbeMetrics that has seen every kind of outcome: latencies, failures by reason, TCP_INFO, HTTP codes."""
    metrics = ProbeMetrics(registry, source_node="node1", latency_buckets=BUCKETS)
    info = TCPInfo(syn_retransmits=1, rtt_seconds=0.00021, rttvar_seconds=0.0001)
    for i, target in enumerate(TARGETS):
        phases = MappingProxyType({"connect": 0.0003 * (i + 1), "total": 0.0009})
        metrics.record(target, ProbeResult.success(0.000_123_4 * (i + 1), phases=phases, tcp_info=info))
        metrics.record(target, ProbeResult.success(0.7, http_status=200 if i == 2 else None))
        metrics.record(target, ProbeResult.failure(Reason.CONNECT_TIMEOUT, 2.0))
        if i == 2:
            metrics.record(target, ProbeResult.failure(Reason.BAD_STATUS, 0.01, http_status=504))
    return metrics


def pre_rendered_text(metrics: ProbeMetrics, openmetrics: bool) -> str:
    return "".join(
        family.header.text(openmetrics) + b"".join(family.lines).decode() for family in metrics.rendered_families()
    )


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text-0.0.4", "openmetrics-1.0.0"])
def test_pre_rendered_families_are_byte_for_byte_what_prometheus_client_writes(openmetrics: bool) -> None:
    metrics = probed(CollectorRegistry())
    reference = (openmetrics_latest if openmetrics else generate_latest)(_Only(metrics)).decode()
    assert pre_rendered_text(metrics, openmetrics) + ("# EOF\n" if openmetrics else "") == reference


def test_a_result_after_a_rendering_is_in_the_next_one() -> None:
    metrics = probed(CollectorRegistry())
    pre_rendered_text(metrics, False)  # renders and keeps every target's lines
    metrics.record(TARGETS[0], ProbeResult.failure(Reason.REFUSED, 0.001))
    again = pre_rendered_text(metrics, False)
    assert again == generate_latest(_Only(metrics)).decode()
    assert 'reason="refused"' in again


def test_a_forgotten_target_leaves_no_series_in_the_pre_rendered_path() -> None:
    metrics = probed(CollectorRegistry())
    pre_rendered_text(metrics, True)
    metrics.forget(TARGETS[1])
    assert 'target="svc/default/web"' not in pre_rendered_text(metrics, True)


def test_counts_are_written_as_prometheus_client_writes_them() -> None:
    for n in (0, 1, 12, 999_999, 1_000_000, 1_234_567, 10**12):
        assert _count_text(n) == floatToGoString(n)


def whole_registry() -> ExpositionRegistry:
    registry = ExpositionRegistry()
    ProcessCollector(registry=registry)
    Counter("netpath_example_library_counter", "A family prometheus_client renders.", registry=registry).inc(3)
    probed(registry)
    return registry


def samples(families: object) -> set[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    return {
        (family.name, family.type, tuple(sorted(s.labels.items())), s.value)  # type: ignore[attr-defined]
        for family in families  # type: ignore[attr-defined]
        for s in family.samples
        if not s.name.startswith("process_")  # the process collector moves between two readings
    }


@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize("accept", ["", OPENMETRICS], ids=["text", "openmetrics"])
def test_the_whole_body_parses_back_to_what_prometheus_client_renders(accept: str, gzipped: bool) -> None:
    registry = whole_registry()
    out = render(registry, accept, "gzip" if gzipped else "")
    assert out.gzipped is gzipped
    body = (gzip.decompress(out.body) if gzipped else out.body).decode()
    if accept:
        assert out.content_type.startswith("application/openmetrics-text; version=1.0.0")
        assert body.endswith("# EOF\n") and body.count("# EOF") == 1
        parsed, reference = parse_openmetrics(body), parse_openmetrics(openmetrics_latest(registry).decode())
    else:
        assert out.content_type.startswith("text/plain; version=0.0.4")
        parsed, reference = parse_text(body), parse_text(generate_latest(registry).decode())
    assert samples(parsed) == samples(reference)


def test_every_pre_rendered_family_is_in_the_contract() -> None:
    """The fast path exposes only documented names and labels (the exporter's full contract: test_metrics_contract)."""
    contract = documented()
    body = render(whole_registry(), "", "").body.decode()
    for family in parse_text(body):
        if family.name.startswith("netpath_example"):
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        assert name in contract, f"{name} is exposed but not in docs/metrics.md"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= contract[name], (name, sample.labels)


def test_a_name_filter_gets_prometheus_client_rendering_of_just_those_families() -> None:
    registry = whole_registry()
    out = render(registry, "", "", "name[]=netpath_probe_success&name[]=netpath_example_library_counter_total")
    names = {family.name for family in parse_text(out.body.decode())}
    assert names == {"netpath_probe_success", "netpath_example_library_counter"}


def test_a_plain_registry_is_rendered_by_prometheus_client_alone() -> None:
    registry = CollectorRegistry()
    probed(registry)
    assert render(registry, "", "").body == generate_latest(registry)


def test_an_escaping_scheme_the_fast_path_does_not_write_falls_back_to_the_library() -> None:
    registry = whole_registry()
    accept = "application/openmetrics-text;version=1.0.0;escaping=dots"
    out = render(registry, accept, "")
    assert "escaping=dots" in out.content_type
    assert "netpath__probe__success" in out.body.decode()  # the dots scheme escapes underscores
