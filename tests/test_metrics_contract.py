"""The Prometheus contract: what /metrics serves is valid, parses back, and equals docs/metrics.md."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator

import pytest
from contract import documented, exposed
from prometheus_client import ProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import Config
from exporter.exposition import ExpositionRegistry
from exporter.model import AnyTarget, PathClass, Transport, Via
from exporter.probes.dns import DNSTarget
from exporter.probes.http import HTTPTarget
from exporter.probes.tcp import TCPTarget
from exporter.server import MetricsServer
from lab.apps.httpapp import serve_in_thread
from lab.loopback import blackhole_listener, dnsmasq, tcp_listener

# Sections whose metrics a loopback exporter exposes in full. "Node facts" depend on the namespace read (no VXLAN
# link here) and "Discovery" on an API server: tests/test_node_metrics.py and tests/test_discovery.py hold those
# sections against a full exposition of their own.
CORE_SECTIONS = ("Per-target metrics", "Exporter self-metrics")


@pytest.fixture
async def metrics_text() -> AsyncIterator[str]:
    """/metrics of an exporter that has probed every kind of target, failures and HTTP codes included."""
    with (
        tcp_listener() as listener,
        blackhole_listener() as hole,
        serve_in_thread() as app,
        dnsmasq({"web.default.svc.cluster.local": "10.43.0.20"}, local_zones=["cluster.local"]) as dns,
    ):
        common = {"interval": 0.5, "timeout": 0.4}
        targets: list[AnyTarget] = [
            TCPTarget(
                name="peer/node2",
                path=PathClass.POD_IP,
                via=Via.POD,
                target_node="node2",
                host=listener.host,
                port=listener.port,
                **common,
            ),
            TCPTarget(
                name="svc/default/web",
                path=PathClass.CLUSTER_IP,
                via=Via.SERVICE,
                service="default/web",
                host=hole.host,
                port=hole.port,
                **common,
            ),
            HTTPTarget(name="ingress/ok", path=PathClass.INGRESS, via=Via.INGRESS, url=f"{app.url}/", **common),
            HTTPTarget(
                name="ingress/504", path=PathClass.INGRESS, via=Via.INGRESS, url=f"{app.url}/status/504", **common
            ),
            DNSTarget(
                name="dns/kube-dns",
                path=PathClass.DNS,
                via=Via.SERVICE,
                server=dns.host,
                port=dns.port,
                protocol=Transport.UDP,
                query_name="web.default.svc.cluster.local",
                **common,
            ),
        ]
        registry = ExpositionRegistry()  # as `netpath-exporter run` has it: the per-target families pre-rendered
        ProcessCollector(registry=registry)
        config = Config(source_node="node1", listen_host="127.0.0.1", listen_port=0, targets=tuple(targets))
        async with Exporter(config, registry) as exporter:
            server = MetricsServer("127.0.0.1", 0, registry, healthy=exporter.healthy, ready=exporter.ready)
            server.start()
            try:
                url = f"http://127.0.0.1:{server.port}/metrics"
                text = ""
                for _ in range(40):  # bounded: at most ~4 s for every target's first probe
                    await asyncio.sleep(0.1)
                    text = await asyncio.to_thread(fetch_gzipped, url)
                    if all(f'target="{t.name}"' in text for t in targets) and "reason=" in text:
                        break
                yield text
            finally:
                server.close()


def fetch_gzipped(url: str) -> str:
    """GET as Prometheus does: gzip accepted (and the answer must be gzipped)."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=2) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        return gzip.decompress(response.read()).decode()


def test_metrics_pass_promtool(metrics_text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package prometheus; `make test` installs it)")
    check = subprocess.run([promtool, "check", "metrics"], input=metrics_text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_exposed_metric_is_documented_with_its_labels(metrics_text: str) -> None:
    everything = documented()
    for name, labels in exposed(metrics_text).items():
        documented_labels = everything.get(name)
        assert documented_labels is not None, f"{name} is exposed but not in docs/metrics.md"
        assert labels <= documented_labels, f"{name}: labels {labels - documented_labels} not documented"


def test_every_documented_metric_is_exposed(metrics_text: str) -> None:
    missing = sorted(set(documented(*CORE_SECTIONS)) - set(exposed(metrics_text)))
    assert not missing, f"documented in docs/metrics.md but not exposed: {missing}"


def test_the_series_parse_back_with_the_right_values(metrics_text: str) -> None:
    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
    codes = {s.labels["code"] for s in families["netpath_http_responses"].samples}
    assert {"200", "504"} <= codes
    reasons = {(s.labels["target"], s.labels["reason"]) for s in families["netpath_probe_failures"].samples}
    assert ("svc/default/web", "connect_timeout") in reasons and ("ingress/504", "bad_status") in reasons
    success = {s.labels["target"]: s.value for s in families["netpath_probe_success"].samples}
    assert success["peer/node2"] == 1 and success["dns/kube-dns"] == 1 and success["svc/default/web"] == 0
    peer = next(s for s in families["netpath_probe_attempts"].samples if s.labels["target"] == "peer/node2")
    assert peer.labels["source_node"] == "node1" and peer.labels["target_node"] == "node2"
    assert peer.labels["path"] == "pod_ip" and peer.labels["from"] == "pod"


def test_each_target_stays_within_the_documented_series_budget(metrics_text: str) -> None:
    # docs/metrics.md: ~25-30 series per target with the default buckets, so 100 targets fit in ~3,000
    per_target: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if "target" in sample.labels:
                per_target[sample.labels["target"]] = per_target.get(sample.labels["target"], 0) + 1
    assert len(per_target) == 5
    assert max(per_target.values()) <= 30, per_target


# Labels the scrape sets on every series (Prometheus: job, instance; prometheus-operator's ServiceMonitor and
# PodMonitor: namespace, service, pod, container, endpoint; the chart's monitor: node). An exporter label of the
# same name is renamed exported_<name> under honor_labels: false, breaking every rule that reads it.
SCRAPE_TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint", "node"}


def test_no_documented_label_collides_with_a_scrape_target_label() -> None:
    collisions = {name: labels & SCRAPE_TARGET_LABELS for name, labels in documented().items()}
    assert {name: labels for name, labels in collisions.items() if labels} == {}


def test_no_exposed_label_collides_with_a_scrape_target_label(metrics_text: str) -> None:
    collisions = {name: labels & SCRAPE_TARGET_LABELS for name, labels in exposed(metrics_text).items()}
    assert {name: labels for name, labels in collisions.items() if labels} == {}
