"""Discovery end to end against the stand-in API server: watch → targets → scheduler → /metrics.

Probes are replaced by a recorder: the targets carry cluster addresses (10.42/10.43/192.168.50) that must not
be dialled from the root namespace, and what is under test here is which targets get scheduled.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import pytest
from contract import documented, exposed
from kubeapi import (
    EXPORTER_NS,
    FakeKubeAPI,
    endpoint_slice,
    exporter_pod,
    ingress,
    node,
    populate_small_cluster,
    port,
    service,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import Config
from exporter.discovery import run_discovery
from exporter.discovery.access import ApiAccess
from exporter.discovery.config import DiscoveryConfig, DNSConfig
from exporter.discovery.run import DiscoveryStatus
from exporter.model import AnyTarget, PathClass, ProbeResult, Transport, Via
from exporter.probes.dns import DNSTarget
from exporter.probes.http import HTTPTarget
from exporter.probes.tcp import TCPTarget
from exporter.targets import TargetSources

pytestmark = pytest.mark.timeout(60)


def discovery_config(api: FakeKubeAPI, **kw: object) -> DiscoveryConfig:
    base: dict[str, object] = {
        "api_url": api.url,
        "namespace": EXPORTER_NS,
        "interval": 0.2,
        "timeout": 0.1,
        "watch_timeout": 30.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "dns": DNSConfig(resolv_conf=""),
    }
    base.update(kw)
    return DiscoveryConfig(**base)  # type: ignore[arg-type]


@dataclass
class Running:
    api: FakeKubeAPI
    exporter: Exporter
    registry: CollectorRegistry
    probed: list[str] = field(default_factory=list)

    def names(self) -> set[str]:
        return {t.name for t in self.exporter.scheduler.targets()}

    def target(self, name: str, transport: Transport = Transport.TCP) -> AnyTarget:
        for t in self.exporter.scheduler.targets():
            if t.name == name and t.transport is transport:
                return t
        raise KeyError(name)

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(generate_latest(self.registry).decode()):
            for s in family.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def metric_targets(self) -> set[str]:
        return {labels["target"] for labels, _ in self.metrics().get("netpath_probe_attempts_total", [])}

    def sample(self, name: str, **labels: str) -> float:
        total = 0.0
        for got, value in self.metrics().get(name, []):
            if all(got.get(k) == v for k, v in labels.items()):
                total += value
        return total


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``check`` until true; bounded in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(api: FakeKubeAPI, *, static: tuple[AnyTarget, ...] = (), **kw: object) -> AsyncIterator[Running]:
    registry = CollectorRegistry()
    probed: list[str] = []

    async def record(target: AnyTarget, timeout: float) -> ProbeResult:
        probed.append(target.name)
        return ProbeResult.success(0.001)

    config = Config(source_node="node-1", listen_host="127.0.0.1", listen_port=0, targets=static)
    async with Exporter(config, registry, probe=record) as exporter:
        run = Running(api, exporter, registry, probed)
        task = asyncio.create_task(
            run_discovery(
                discovery_config(api, **kw),
                source_node="node-1",
                sources=exporter.sources,
                registry=registry,
                rng=random.Random(1),
            )
        )
        try:
            await eventually(lambda: any(n.startswith("peer/") for n in run.names()))
            yield run
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeAPI]:
    server = FakeKubeAPI()
    populate_small_cluster(server)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --- what is discovered ------------------------------------------------------------------------------------


async def test_a_small_cluster_yields_peers_services_dns_with_path_and_node_filled(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        names = run.names()
        assert {"peer/node-2", "peer/node-3"} <= names
        assert "peer/node-1" not in names  # never itself
        peer = run.target("peer/node-2")
        assert isinstance(peer, TCPTarget)
        assert (peer.host, peer.port, peer.path, peer.via, peer.target_node, peer.source) == (
            "10.42.2.10",
            10047,
            PathClass.POD_IP,
            Via.POD,
            "node-2",
            "peers",
        )

        own = run.target("svc/netpath/netpath-exporter:10047")
        assert isinstance(own, TCPTarget)
        assert (own.host, own.path, own.via) == ("10.43.0.47", PathClass.CLUSTER_IP, Via.SERVICE)
        assert run.target("svc/default/kubernetes:443").source == "services"

        dns_svc = run.target("dns/kube-dns/kubernetes.default.svc.cluster.local", Transport.UDP)
        assert isinstance(dns_svc, DNSTarget)
        assert dns_svc.server == "10.43.0.10" and dns_svc.via is Via.SERVICE and dns_svc.path is PathClass.DNS
        assert dns_svc.expect == frozenset({"10.43.0.1"})  # the kubernetes Service's ClusterIP
        assert run.target("dns/kube-dns/kubernetes.default.svc.cluster.local", Transport.TCP).transport is Transport.TCP
        coredns = run.target("dns/coredns/coredns-b/netpath-exporter.netpath.svc.cluster.local", Transport.UDP)
        assert isinstance(coredns, DNSTarget)
        assert (coredns.server, coredns.via, coredns.target_node) == ("10.42.2.3", Via.POD, "node-2")
        assert not any(n.startswith("ingress/") for n in names)  # nothing opted in yet


async def test_static_targets_merge_with_discovered_ones(api: FakeKubeAPI) -> None:
    static = TCPTarget(name="my-db", path=PathClass.CLUSTER_IP, via=Via.SERVICE, host="10.43.9.9", port=5432)
    async with running(api, static=(static,)) as run:
        assert "my-db" in run.names() and "peer/node-2" in run.names()
        api.delete("pods", EXPORTER_NS, "netpath-exporter-node-2")
        await eventually(lambda: "peer/node-2" not in run.names())
        assert "my-db" in run.names()


# --- changes arrive within one watch event -----------------------------------------------------------------


async def test_a_peer_pod_joining_and_leaving_changes_targets_and_its_series_vanish(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        api.add("nodes", node("node-4", "192.168.50.4"))
        api.add("pods", exporter_pod("node-4", "10.42.4.10"))
        await eventually(lambda: "peer/node-4" in run.names())
        await eventually(lambda: "peer/node-4" in run.metric_targets())

        api.delete("pods", EXPORTER_NS, "netpath-exporter-node-4")
        await eventually(lambda: "peer/node-4" not in run.names())
        assert "peer/node-4" not in run.metric_targets()


async def test_a_not_ready_node_and_a_terminating_pod_are_not_probed(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        await eventually(lambda: {"peer/node-2", "peer/node-3"} <= set(run.probed))
        api.modify("nodes", node("node-2", "192.168.50.2", ready=False))
        api.modify("pods", exporter_pod("node-3", "10.42.3.10", terminating=True))
        await eventually(lambda: not {"peer/node-2", "peer/node-3"} & run.names())
        # CoreDNS on the NotReady node goes too: its failures would be the node's, not the network's.
        assert not any(n.startswith("dns/coredns/coredns-b/") for n in run.names())
        run.probed.clear()
        await asyncio.sleep(0.5)  # a bounded window of 2+ intervals
        assert "peer/node-2" not in run.probed and "peer/node-3" not in run.probed
        assert "peer/node-2" not in run.metric_targets()

        api.modify("nodes", node("node-2", "192.168.50.2", unschedulable=True))  # cordoned: still skipped
        await asyncio.sleep(0.1)
        assert "peer/node-2" not in run.names()
        api.modify("nodes", node("node-2", "192.168.50.2"))
        await eventually(lambda: "peer/node-2" in run.names())


async def test_an_annotated_service_is_probed_by_clusterip_and_by_each_endpoint(api: FakeKubeAPI) -> None:
    web_ports = [port("http", 80, 8080), port("admin", 9000)]
    api.add(
        "endpointslices",
        endpoint_slice(
            "web",
            "shop",
            [("web-1", "10.42.2.20", "node-2"), ("web-2", "10.42.3.20", "node-3")],
            [{"name": "http", "port": 8080}, {"name": "admin", "port": 9000}],
        ),
    )
    async with running(api) as run:
        api.add(
            "services",
            service(
                "web",
                "shop",
                "10.43.0.99",
                web_ports,
                annotations={"netpath.io/probe": "true", "netpath.io/ports": "http", "netpath.io/path": "/healthz"},
            ),
        )
        await eventually(lambda: "svc/shop/web:80" in run.names())
        svc = run.target("svc/shop/web:80")
        assert isinstance(svc, HTTPTarget) and svc.url == "http://10.43.0.99:80/healthz"
        assert (svc.service, svc.path, svc.source) == ("shop/web", PathClass.CLUSTER_IP, "services")
        ep = run.target("ep/shop/web/web-2:8080")
        assert isinstance(ep, HTTPTarget) and ep.url == "http://10.42.3.20:8080/healthz"
        assert (ep.target_node, ep.via, ep.service, ep.source) == ("node-3", Via.POD, "shop/web", "endpoints")
        assert "svc/shop/web:9000" not in run.names()  # not selected by the ports annotation

        # an endpoint going away (scale down) is one watch event
        api.modify(
            "endpointslices",
            endpoint_slice("web", "shop", [("web-1", "10.42.2.20", "node-2")], [{"name": "http", "port": 8080}]),
        )
        await eventually(lambda: "ep/shop/web/web-2:8080" not in run.names())
        await eventually(lambda: "svc/shop/web:80" in run.metric_targets())

        api.delete("services", "shop", "web")
        await eventually(lambda: not any("shop/web" in n for n in run.names()))
        assert not any("shop/web" in n for n in run.metric_targets())


async def test_coredns_endpoints_coming_and_going_change_dns_targets(api: FakeKubeAPI) -> None:
    qname = "kubernetes.default.svc.cluster.local"
    dns_ports = [port("dns", 53, 53, "UDP"), port("dns-tcp", 53, 53, "TCP")]
    async with running(api) as run:
        api.modify(
            "endpointslices",
            endpoint_slice(
                "kube-dns",
                "kube-system",
                [
                    ("coredns-a", "10.42.1.3", "node-1"),
                    ("coredns-b", "10.42.2.3", "node-2"),
                    ("coredns-c", "10.42.3.3", "node-3"),
                ],
                dns_ports,
            ),
        )
        await eventually(lambda: f"dns/coredns/coredns-c/{qname}" in run.names())
        api.modify(
            "endpointslices",
            endpoint_slice(
                "kube-dns",
                "kube-system",
                [
                    ("coredns-a", "10.42.1.3", "node-1"),
                    ("coredns-b", "10.42.2.3", "node-2"),
                    ("coredns-c", "10.42.3.3", "node-3"),
                ],
                dns_ports,
                terminating={"coredns-a"},
            ),
        )
        await eventually(lambda: f"dns/coredns/coredns-a/{qname}" not in run.names())
        assert f"dns/kube-dns/{qname}" in run.names()


async def test_an_annotated_ingress_is_probed_through_the_controller_and_node_host_ports(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        api.add(
            "ingresses",
            ingress(
                "shop", "shop", "shop.example.com", "web", 80, annotations={"netpath.io/probe": "true"}, path="/cart"
            ),
        )
        api.add("ingresses", ingress("quiet", "shop", "quiet.example.com", "web", 80))  # not opted in
        await eventually(lambda: "ingress/shop/shop/shop.example.com" in run.names())
        via_svc = run.target("ingress/shop/shop/shop.example.com")
        assert isinstance(via_svc, HTTPTarget)
        assert (via_svc.url, via_svc.host_header, via_svc.path, via_svc.via, via_svc.service) == (
            "http://10.43.0.80:80/cart",
            "shop.example.com",
            PathClass.INGRESS,
            Via.INGRESS,
            "shop/web",
        )
        on_node = run.target("ingress/shop/shop/shop.example.com@node/node-3")
        assert isinstance(on_node, HTTPTarget)
        assert (on_node.url, on_node.target_node, on_node.via) == ("http://192.168.50.3:80/cart", "node-3", Via.NODE)
        assert not any("quiet" in n for n in run.names())

        api.delete("ingresses", "shop", "shop")
        await eventually(lambda: not any(n.startswith("ingress/") for n in run.names()))


# --- the API misbehaving -------------------------------------------------------------------------------------


async def test_api_down_keeps_targets_counts_errors_and_resumes_watches_without_relisting(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        before = run.names()
        lists_before = len([r for r in api.requests if not r.watch])
        await eventually(lambda: api.watch_count("pods") == 1)
        await api.go_down()
        await eventually(lambda: run.sample("netpath_discovery_errors_total", resource="pods") >= 3)
        assert run.sample("netpath_discovery_up", resource="pods") == 0
        assert run.names() == before  # probing goes on with the last known targets
        assert run.sample("netpath_discovery_targets", source="peers") == 2
        stale = run.sample("netpath_discovery_last_success_timestamp_seconds", resource="pods")

        await api.come_up()
        await eventually(lambda: all(api.watch_count(r) == 1 for r in ("pods", "nodes", "services")))
        assert len([r for r in api.requests if not r.watch]) == lists_before  # resumed, not relisted
        resumed = api.requests_for("pods", watch=True)[-1]
        assert resumed.params["resourceVersion"] not in ("", "0")
        assert run.sample("netpath_discovery_up", resource="pods") == 1
        assert run.sample("netpath_discovery_last_success_timestamp_seconds", resource="pods") > stale

        api.add("nodes", node("node-4", "192.168.50.4"))
        api.add("pods", exporter_pod("node-4", "10.42.4.10"))
        await eventually(lambda: "peer/node-4" in run.names())
        peers = [t for t in run.exporter.scheduler.targets() if t.name.startswith("peer/")]
        assert sorted(t.name for t in peers) == ["peer/node-2", "peer/node-3", "peer/node-4"]


async def test_server_errors_are_counted_and_recovered_from(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        await eventually(lambda: api.watch_count("services") == 1)
        api.fail_with(500)
        api.end_watches()
        await eventually(
            lambda: run.sample("netpath_discovery_errors_total", resource="services", reason="server_error") >= 2
        )
        assert "svc/default/kubernetes:443" in run.names()
        api.fail_with(None)
        api.delete("services", "default", "kubernetes")
        await eventually(lambda: "svc/default/kubernetes:443" not in run.names())


async def test_a_compacted_resource_version_leads_to_a_relist_that_drops_what_vanished(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        await eventually(lambda: api.watch_count("pods") == 1)
        await api.go_down()
        # while we are away: a peer leaves, and the server compacts its history
        api.delete("pods", EXPORTER_NS, "netpath-exporter-node-3")
        api.compact()
        await api.come_up()
        await eventually(lambda: "peer/node-3" not in run.names())
        assert run.sample("netpath_discovery_relists_total", resource="pods") >= 1
        assert "peer/node-2" in run.names()


async def test_a_watch_ended_by_the_server_is_resumed_from_its_version(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        await eventually(lambda: api.watch_count("nodes") == 1)
        lists = len([r for r in api.requests if not r.watch])
        api.end_watches()
        api.add("nodes", node("node-4", "192.168.50.4"))  # happens between two watches
        api.add("pods", exporter_pod("node-4", "10.42.4.10"))
        await eventually(lambda: "peer/node-4" in run.names())
        assert len([r for r in api.requests if not r.watch]) == lists
        assert len(api.requests_for("nodes", watch=True)) == 2


async def test_bookmarks_move_the_version_without_changing_targets(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        await eventually(lambda: api.watch_count("pods") == 1)
        api.add("services", service("unrelated", "shop", "10.43.0.77", [port("x", 1)]))  # moves the global rv
        api.bookmark()
        before = run.names()
        await asyncio.sleep(0.1)
        api.end_watches()
        await eventually(lambda: len(api.requests_for("pods", watch=True)) == 2)
        assert api.requests_for("pods", watch=True)[-1].params["resourceVersion"] == str(api.rv)
        assert run.names() == before


async def test_the_bearer_token_is_read_from_its_file_for_each_request(api: FakeKubeAPI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    token = tmp_path / "token"
    token.write_text("first\n")
    registry = CollectorRegistry()
    got: list[list[AnyTarget]] = []
    sources = TargetSources((), got.append)
    task = asyncio.create_task(
        run_discovery(
            discovery_config(api),
            source_node="node-1",
            sources=sources,
            registry=registry,
            access=ApiAccess(base_url=api.url, token_file=str(token)),
        )
    )
    try:
        await eventually(lambda: bool(got))
        assert {r.headers.get("authorization") for r in api.requests} == {"Bearer first"}
        await eventually(lambda: all(api.watch_count(r) == 1 for r in ("pods", "nodes", "services")))
        token.write_text("rotated\n")
        api.end_watches()
        await eventually(lambda: api.requests[-1].headers.get("authorization") == "Bearer rotated")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_discovery_metrics_are_the_documented_ones(api: FakeKubeAPI) -> None:
    async with running(api) as run:
        text = generate_latest(run.registry).decode()
    discovery = {name: labels for name, labels in exposed(text).items() if name.startswith("netpath_discovery_")}
    documented_names = documented("Discovery")
    assert set(discovery) == set(documented_names)
    for name, labels in discovery.items():
        # errors_total has no samples (so no labels seen) until an error has happened
        assert labels == documented_names[name] or (name == "netpath_discovery_errors_total" and not labels), name


# --- hostile input: what a tenant or a broken API can send (issue 15, rows 2-4) ------------------------------


def bad_pod(name: str, node_name: str, **status: object) -> dict[str, object]:
    obj = exporter_pod(node_name, "10.42.9.9")
    obj["metadata"]["name"] = name
    obj["status"].update(status)
    return obj


async def test_mistyped_objects_are_skipped_counted_and_the_stream_goes_on(
    api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # in the first list: an item whose metadata is a string, one that is not an object, a mistyped field
    api.add_raw_item("pods", {"metadata": "netpath-exporter-x", "status": {"podIP": "10.42.9.9"}})
    api.add_raw_item("pods", "not an object")
    api.add("pods", bad_pod("netpath-exporter-typo", "node-2", podIP=["10.42.9.9"]))
    async with running(api) as run:
        assert run.sample("netpath_discovery_decode_errors_total", resource="pods", reason="bad_metadata") == 1
        assert run.sample("netpath_discovery_decode_errors_total", resource="pods", reason="not_object") == 1
        assert run.sample("netpath_discovery_decode_errors_total", resource="pods", reason="bad_field") == 1
        assert {"peer/node-2", "peer/node-3"} <= run.names()
        await eventually(lambda: all(api.watch_count(r) == 1 for r in ("pods", "services", "nodes")))

        # on the watch: the same and worse
        api.send_event("pods", {"type": "ADDED", "object": {"metadata": "a string"}})
        api.send_event("services", {"type": "MODIFIED", "object": {"metadata": "a string", "spec": {}}})
        api.send_event(
            "services",
            {
                "type": "ADDED",
                "object": {"metadata": {"name": "x", "namespace": "shop"}, "spec": {"ports": [{"port": "80"}]}},
            },
        )
        api.send_event("nodes", {"type": "ADDED", "object": {"metadata": {"name": 7}}})
        api.send_event("pods", ["not", "an", "event"])
        api.send_event("pods", {"type": "EXPLODED", "object": {}})
        api.send_raw("pods", b"{this is not json\n")
        api.send_raw("pods", b"[" * 200_000 + b"\n")  # deeper than the JSON parser goes
        api.send_raw("pods", b"\xff\xfe\n")
        api.add("nodes", node("node-4", "192.168.50.4"))
        api.add("pods", exporter_pod("node-4", "10.42.4.10"))
        await eventually(lambda: "peer/node-4" in run.names())  # new pods still become targets

        def decode(resource: str, reason: str) -> float:
            return run.sample("netpath_discovery_decode_errors_total", resource=resource, reason=reason)

        assert decode("pods", "bad_metadata") == 2 and decode("services", "bad_metadata") == 1
        assert decode("services", "bad_field") == 1 and decode("nodes", "bad_metadata") == 1
        assert decode("pods", "bad_event") == 2 and decode("pods", "not_json") == 3
        assert api.watch_count("pods") == 1  # the same stream: nothing was dropped
        assert run.sample("netpath_discovery_errors_total", resource="pods") == 0
        assert run.sample("netpath_discovery_up", resource="pods") == 1

        # an object that stops fitting stops being probed (it is not kept as it was)
        api.modify("pods", bad_pod("netpath-exporter-node-4", "node-4", phase=["Running"]))
        await eventually(lambda: "peer/node-4" not in run.names())
        skips = [r.getMessage() for r in caplog.records if "does not decode" in r.getMessage()]
        assert len(skips) >= 12 and max(len(m) for m in skips) < 400  # named briefly, never dumped whole


async def test_bad_annotation_values_reject_that_object_counted_per_object(api: FakeKubeAPI) -> None:
    web_ports = [port("http", 80, 8080)]

    def web(name: str, **annotations: str) -> dict[str, object]:
        return service(
            name,
            "shop",
            "10.43.0.99",
            web_ports,
            annotations={
                "netpath.io/probe": "true",
                **{f"netpath.io/{k.replace('_', '-')}": v for k, v in annotations.items()},
            },
        )

    async with running(api) as run:
        api.add("services", web("superscript", path="/healthz", expect_status="²"))
        api.add("services", web("arabic", path="/healthz", expect_status="٢٠٠"))
        api.add("services", web("range", path="/healthz", expect_status="200,99"))
        api.add("services", web("nopath", path="healthz"))
        api.add("services", web("noport", ports="metrics"))
        api.add("services", web("typo", probe="ture"))
        api.add("services", web("good", path="/healthz", expect_status=" 200 , 401 "))
        await eventually(lambda: "svc/shop/good:80" in run.names())
        good = run.target("svc/shop/good:80")
        assert isinstance(good, HTTPTarget) and good.expect_status == frozenset({200, 401})
        assert not any(n.startswith("svc/shop/") and n != "svc/shop/good:80" for n in run.names())

        def errors(annotation: str) -> float:
            return run.sample(
                "netpath_discovery_annotation_errors", resource="services", annotation=f"netpath.io/{annotation}"
            )

        assert (errors("expect-status"), errors("path"), errors("ports"), errors("probe")) == (3, 1, 1, 1)
        assert run.sample("netpath_discovery_restarts_total") == 0

        api.modify("services", web("superscript", path="/healthz", expect_status="204"))
        await eventually(lambda: "svc/shop/superscript:80" in run.names())
        assert errors("expect-status") == 2


class FlakySources(TargetSources):
    """Real target sources that fail while ``broken``: the stand-in for a bug anywhere in discovery."""

    broken = True

    def update(self, source: str, targets: Iterable[AnyTarget]) -> None:
        if self.broken:
            raise RuntimeError("injected failure")
        super().update(source, targets)


async def test_a_failing_discovery_task_is_restarted_with_backoff_and_says_down_meanwhile(
    api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    got: list[list[AnyTarget]] = []
    sources = FlakySources((), got.append)
    status = DiscoveryStatus()
    run = Running(api, None, registry)  # type: ignore[arg-type]
    task = asyncio.create_task(
        run_discovery(
            discovery_config(api),
            source_node="node-1",
            sources=sources,
            registry=registry,
            rng=random.Random(1),
            status=status,
        )
    )
    try:
        await eventually(lambda: run.sample("netpath_discovery_restarts_total") >= 3)
        assert all(run.sample("netpath_discovery_up", resource=r) == 0 for r in ("nodes", "pods", "services"))
        assert not got and not status.ready()[0]
        assert "discovery down (RuntimeError: injected failure); restarting in" in caplog.text
        assert any(r.exc_info for r in caplog.records if r.message == "discovery failed")  # with its traceback

        sources.broken = False
        await eventually(lambda: any(t.name == "peer/node-2" for t in sources.merged()))
        await eventually(lambda: run.sample("netpath_discovery_up", resource="pods") == 1)
        assert status.ready() == (True, "ok")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_only_literal_ips_inside_the_cidrs_are_probed(api: FakeKubeAPI) -> None:
    for i, ip in ((4, "localhost"), (5, "127.0.0.1"), (6, "10.99.0.6"), (7, "::ffff:127.0.0.1")):
        api.add("nodes", node(f"node-{i}", f"192.168.50.{i}"))
        api.add("pods", exporter_pod(f"node-{i}", ip))
    # a selector-less Service with a hand-written EndpointSlice: anyone who may write both in their namespace
    api.add(
        "services",
        service("meta", "tenant", "10.43.0.200", [port("http", 80)], annotations={"netpath.io/probe": "true"}),
    )
    slice_ = endpoint_slice("meta", "tenant", [], [port("http", 80)], suffix="manual")
    slice_["metadata"]["labels"].pop("endpointslice.kubernetes.io/managed-by")
    slice_["endpoints"] = [
        {"addresses": [a]} for a in ("169.254.169.254", "127.0.0.1", "8.8.8.8", "localhost", "10.42.3.50")
    ]
    api.add("endpointslices", slice_)
    api.add(
        "services",
        service("outside", "tenant", "10.99.0.1", [port("http", 80)], annotations={"netpath.io/probe": "true"}),
    )
    async with running(api) as run:
        await eventually(lambda: "ep/tenant/meta/10.42.3.50:80" in run.names())
        names = run.names()
        assert {"peer/node-2", "peer/node-3"} <= names
        assert not {f"peer/node-{i}" for i in range(4, 8)} & names
        assert not any(n.startswith("ep/tenant/meta/") and n != "ep/tenant/meta/10.42.3.50:80" for n in names)
        assert "svc/tenant/meta:80" in names and "svc/tenant/outside:80" not in names
        hosts = {getattr(t, "host", "") for t in run.exporter.scheduler.targets()}
        assert not hosts & {"localhost", "127.0.0.1", "169.254.169.254", "8.8.8.8", "10.99.0.1", "10.99.0.6"}

        def skipped(source: str, reason: str) -> float:
            return run.sample("netpath_discovery_skipped_addresses", source=source, reason=reason)

        assert (skipped("peers", "not_ip"), skipped("peers", "special"), skipped("peers", "outside_cidrs")) == (1, 2, 1)
        assert (skipped("endpoints", "special"), skipped("endpoints", "outside_cidrs")) == (2, 1)
        assert skipped("endpoints", "not_ip") == 1 and skipped("services", "outside_cidrs") == 1


async def test_services_in_denied_namespaces_are_not_probed_and_counted(api: FakeKubeAPI) -> None:
    opt_in = {"netpath.io/probe": "true"}
    api.add("services", service("web", "shop", "10.43.0.99", [port("http", 80)], annotations=opt_in))
    api.add("services", service("web", "tenant", "10.43.0.98", [port("http", 80)], annotations=opt_in))
    api.add("ingresses", ingress("web", "tenant", "web.example.com", "web", 80, annotations=opt_in))
    async with running(api, namespaces_deny=("tenant",)) as run:
        await eventually(lambda: "svc/shop/web:80" in run.names())
        assert not any("tenant" in n for n in run.names())
        assert run.sample("netpath_discovery_excluded_objects", resource="services") == 1
        assert run.sample("netpath_discovery_excluded_objects", resource="ingresses") == 1
    async with running(api, namespaces_allow=("tenant",)) as run:
        await eventually(lambda: "svc/tenant/web:80" in run.names())
        assert "svc/shop/web:80" not in run.names()
        assert run.sample("netpath_discovery_excluded_objects", resource="services") == 1


# --- bounded reads (issue 15, row 4) -------------------------------------------------------------------------


async def test_a_watch_line_without_newline_is_cut_at_the_limit_and_the_resource_relisted(api: FakeKubeAPI) -> None:
    async with running(api) as run:  # the default limit, 4 MiB
        await eventually(lambda: api.watch_count("pods") == 1)
        lists = len(api.requests_for("pods", watch=False))
        api.send_raw("pods", b'{"type":"ADDED","object":{"metadata":{"name":"' + b"x" * (6 * 1024 * 1024))
        await eventually(lambda: run.sample("netpath_discovery_errors_total", resource="pods", reason="too_large") == 1)
        await eventually(lambda: len(api.requests_for("pods", watch=False)) == lists + 1)  # relisted
        await eventually(lambda: run.sample("netpath_discovery_relists_total", resource="pods") == 1)
        api.add("nodes", node("node-4", "192.168.50.4"))
        api.add("pods", exporter_pod("node-4", "10.42.4.10"))
        await eventually(lambda: "peer/node-4" in run.names())
        assert run.sample("netpath_discovery_errors_total", resource="nodes") == 0  # other watches untouched


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_list_answer_over_the_limit_fails_that_list_counted(api: FakeKubeAPI, chunked: bool) -> None:
    api.list_padding, api.list_chunked = 300 * 1024, chunked
    registry = CollectorRegistry()
    sources = TargetSources((), lambda _: None)
    run = Running(api, None, registry)  # type: ignore[arg-type]
    task = asyncio.create_task(
        run_discovery(
            discovery_config(api, max_list_bytes=256 * 1024),
            source_node="node-1",
            sources=sources,
            registry=registry,
            rng=random.Random(1),
        )
    )
    try:
        await eventually(lambda: run.sample("netpath_discovery_errors_total", resource="pods", reason="too_large") >= 2)
        assert not sources.merged() and run.sample("netpath_discovery_up", resource="pods") == 0
        api.list_padding = 100 * 1024  # under the limit: lists go through
        await eventually(lambda: any(t.name == "peer/node-2" for t in sources.merged()))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_compressed_answer_is_refused_before_it_inflates(api: FakeKubeAPI) -> None:
    api.list_padding, api.list_gzip = 8 * 1024 * 1024, True  # ~8 KiB on the wire, 8 MiB inflated
    registry = CollectorRegistry()
    sources = TargetSources((), lambda _: None)
    run = Running(api, None, registry)  # type: ignore[arg-type]
    task = asyncio.create_task(
        run_discovery(
            discovery_config(api),
            source_node="node-1",
            sources=sources,
            registry=registry,
            rng=random.Random(1),
        )
    )
    try:
        await eventually(
            lambda: run.sample("netpath_discovery_errors_total", resource="nodes", reason="decode") >= 1, within=20
        )
        assert {r.headers.get("accept-encoding") for r in api.requests} == {"identity"}
        api.list_padding, api.list_gzip = 0, False
        await eventually(lambda: any(t.name == "peer/node-2" for t in sources.merged()))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_ready_waits_for_the_first_listing_and_stays_ready_when_the_api_is_lost(api: FakeKubeAPI) -> None:
    """/readyz: not ready until discovery has listed everything once; an API outage afterwards keeps the
    exporter ready (it goes on probing its last targets) while netpath_discovery_up says the API is lost."""
    registry = CollectorRegistry()

    async def record(target: AnyTarget, timeout: float) -> ProbeResult:
        return ProbeResult.success(0.001)

    config = Config(source_node="node-1", listen_host="127.0.0.1", listen_port=0, discovery=discovery_config(api))
    exporter = Exporter(config, registry, probe=record)
    await api.go_down()
    await exporter.start()
    try:
        await asyncio.sleep(0.5)
        ok, why = exporter.ready()
        assert not ok and "listed" in why  # never listed yet: not ready
        await api.come_up()
        await eventually(lambda: exporter.ready()[0], within=10)
        last_targets = {t.name for t in exporter.scheduler.targets()}
        assert any(n.startswith("peer/") for n in last_targets)

        run = Running(api, exporter, registry)
        up = run.metrics()["netpath_discovery_up"]
        assert up and all(value == 1 for _, value in up)
        await api.go_down()
        await eventually(lambda: run.sample("netpath_discovery_up") == 0, within=10)
        assert exporter.ready()[0]
        assert {t.name for t in exporter.scheduler.targets()} == last_targets
    finally:
        await exporter.close()
