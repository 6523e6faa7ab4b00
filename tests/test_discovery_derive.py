"""Target derivation corner cases, as pure functions of API objects."""

from __future__ import annotations

import ipaddress

import pytest
from kubeapi import endpoint_slice, exporter_pod, ingress, node, port, service

from exporter.discovery.config import DiscoveryConfig, IngressConfig
from exporter.discovery.derive import (
    ClusterState,
    Deriver,
    Notes,
    ProbeAnnotations,
    check_address,
    parse_resolv_conf,
    read_annotations,
)
from exporter.model import Transport, Via
from exporter.probes.http import HTTPTarget


def store(*objs: dict) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    return {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}


NODES = store(node("node-1", "192.168.50.1"), node("node-2", "192.168.50.2"))


def test_resolv_conf_nameservers() -> None:
    text = "search netpath.svc.cluster.local svc.cluster.local\nnameserver 10.43.0.10\nnameserver fe80::1%eth0\n#x\n"
    assert parse_resolv_conf(text) == ("10.43.0.10", "fe80::1")


def test_a_node_local_nameserver_is_probed_separately_from_the_kube_dns_clusterip() -> None:
    dns = service("kube-dns", "kube-system", "10.43.0.10", [port("dns", 53, 53, "UDP")])
    state = ClusterState(nodes=NODES, services=store(dns))
    same = Deriver(DiscoveryConfig(), "node-1", ("10.43.0.10",)).dns(state, {"node-1", "node-2"})
    assert not any(t.name.startswith("dns/resolv/") for t in same)
    local = Deriver(DiscoveryConfig(), "node-1", ("169.254.20.10",)).dns(state, {"node-1", "node-2"})
    resolv = [t for t in local if t.name.startswith("dns/resolv/169.254.20.10/")]
    assert resolv and all(t.via is Via.NODE and t.target_node == "node-1" for t in resolv)
    assert {t.transport for t in resolv} == {Transport.UDP, Transport.TCP}


def test_headless_services_get_endpoint_targets_only_and_ports_select_by_number() -> None:
    svc = service(
        "db",
        "shop",
        "None",
        [port("pg", 5432), port("metrics", 9187)],
        annotations={"netpath.io/probe": "true", "netpath.io/ports": "5432"},
    )
    sl = endpoint_slice(
        "db",
        "shop",
        [("db-0", "10.42.2.5", "node-2")],
        [{"name": "pg", "port": 5432}, {"name": "metrics", "port": 9187}],
    )
    services, endpoints = Deriver(DiscoveryConfig(), "node-1").services(
        ClusterState(nodes=NODES, services=store(svc), endpointslices=store(sl)), {"node-1", "node-2"}
    )
    assert not any("shop/db" in t.name for t in services)
    assert [t.name for t in endpoints] == ["ep/shop/db/db-0:5432"]


def test_tls_ingress_hosts_use_https_and_wildcards_are_skipped() -> None:
    traefik = service(
        "traefik",
        "kube-system",
        "10.43.0.80",
        [port("web", 80), port("websecure", 443)],
        type_="LoadBalancer",
        lb_ips=["192.168.50.1", "192.168.50.2"],
    )
    secure = ingress("a", "shop", "a.example.com", "web", "http", annotations={"netpath.io/probe": "true"}, tls=True)
    wild = ingress("w", "shop", "*.example.com", "web", 80, annotations={"netpath.io/probe": "true"})
    state = ClusterState(
        nodes=NODES,
        services=store(traefik),
        ingresses=store(secure, wild),
        pods=store(exporter_pod("node-2", "10.42.2.10")),
    )
    cfg = DiscoveryConfig(ingress=IngressConfig(host_ports=True))
    out = Deriver(cfg, "node-1").ingress(state, {"node-1", "node-2"})
    by_name = {t.name: t for t in out}
    assert set(by_name) == {
        "ingress/shop/a/a.example.com",
        "ingress/shop/a/a.example.com@node/node-1",
        "ingress/shop/a/a.example.com@node/node-2",
    }
    target = by_name["ingress/shop/a/a.example.com"]
    assert isinstance(target, HTTPTarget) and target.url == "https://10.43.0.80:443/"


@pytest.mark.parametrize(
    ("replicas", "target_node"),
    [
        ([("traefik-0", "10.42.1.7", "node-1")], "node-1"),
        ([("t-0", "10.42.1.7", "node-1"), ("t-1", "10.42.2.7", "node-2")], ""),
    ],
)
def test_the_ingress_through_the_controllers_clusterip_is_on_the_controllers_node_when_it_runs_on_one(
    replicas: list[tuple[str, str, str]], target_node: str
) -> None:
    # K3s' one Traefik replica: requests through its ClusterIP land on its node, so failures seen through it are
    # attributed by that node (principle 3); with replicas on several nodes there is no one node
    traefik = service("traefik", "kube-system", "10.43.0.80", [port("web", 80)])
    sl = endpoint_slice("traefik", "kube-system", replicas, [{"name": "web", "port": 8000}])
    web = ingress("a", "shop", "a.example.com", "web", "http", annotations={"netpath.io/probe": "true"})
    state = ClusterState(nodes=NODES, services=store(traefik), ingresses=store(web), endpointslices=store(sl))
    (target,) = Deriver(DiscoveryConfig(ingress=IngressConfig(host_ports=False)), "node-2").ingress(
        state, {"node-1", "node-2"}
    )
    assert target.via is Via.INGRESS and target.target_node == target_node


# --- strict annotations -------------------------------------------------------------------------------------

OPT_IN = {"netpath.io/probe": "true"}


@pytest.mark.parametrize(
    ("annotations", "parsed"),
    [
        ({}, None),
        ({"netpath.io/probe": "false", "netpath.io/expect-status": "²"}, None),  # not opted in: not read
        (OPT_IN, ProbeAnnotations()),
        (
            {"netpath.io/probe": "True", "netpath.io/expect-status": " 200 , 401"},
            ProbeAnnotations(expect=frozenset({200, 401})),
        ),
        (
            {**OPT_IN, "netpath.io/ports": "http, 8443", "netpath.io/path": "/healthz?full=1"},
            ProbeAnnotations(ports=frozenset({"http", "8443"}), path="/healthz?full=1"),
        ),
    ],
)
def test_good_annotations_parse(annotations: dict[str, str], parsed: ProbeAnnotations | None) -> None:
    assert read_annotations(annotations) == (parsed, [])


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("netpath.io/probe", "ture"),
        ("netpath.io/expect-status", "²"),  # str.isdigit() is True for it, int() raises
        ("netpath.io/expect-status", "٢٠٠"),  # Arabic-Indic digits: int() would take them
        ("netpath.io/expect-status", "99"),
        ("netpath.io/expect-status", "600"),
        ("netpath.io/expect-status", "2OO"),
        ("netpath.io/expect-status", "200,,201"),
        ("netpath.io/expect-status", "+200"),
        ("netpath.io/expect-status", ",".join(["200"] * 33)),
        ("netpath.io/ports", "0"),
        ("netpath.io/ports", "65536"),
        ("netpath.io/ports", "080"),
        ("netpath.io/ports", "Http"),
        ("netpath.io/ports", "a-very-long-port-name"),
        ("netpath.io/path", "healthz"),
        ("netpath.io/path", "/a b"),
        ("netpath.io/path", "/x\r\nHost: evil"),
        ("netpath.io/path", "/" + "a" * 1024),
    ],
)
def test_bad_annotation_values_are_problems_never_exceptions(annotation: str, value: str) -> None:
    parsed, problems = read_annotations({**OPT_IN, annotation: value})
    assert parsed is None and [a for a, _ in problems] == [annotation]
    assert len(problems[0][1]) < 120  # the value is shown cut short


def test_a_ports_annotation_naming_no_port_rejects_the_service() -> None:
    svc = service("web", "shop", "10.43.0.99", [port("http", 80)], annotations={**OPT_IN, "netpath.io/ports": "admin"})
    notes = Notes()
    services, _ = Deriver(DiscoveryConfig(), "node-1").services(ClusterState(services=store(svc)), set(), notes)
    assert not any("shop/web" in t.name for t in services)
    assert [a for a, _ in notes.annotation_errors[("services", "shop", "web")]] == ["netpath.io/ports"]


# --- addresses and namespaces ---------------------------------------------------------------------------------

PODS = (ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("fd00:42::/56"))


@pytest.mark.parametrize(
    ("raw", "result"),
    [
        ("10.42.3.4", ("10.42.3.4", None)),
        ("fd00:42::0:5", ("fd00:42::5", None)),
        ("localhost", ("", "not_ip")),
        ("10.42.3.4 ", ("", "not_ip")),
        ("010.042.3.4", ("", "not_ip")),
        ("", ("", "not_ip")),
        ("127.0.0.1", ("", "special")),
        ("::1", ("", "special")),
        ("::ffff:127.0.0.1", ("", "special")),
        ("169.254.169.254", ("", "special")),
        ("fe80::1", ("", "special")),
        ("0.0.0.0", ("", "special")),
        ("224.0.0.1", ("", "special")),
        ("255.255.255.255", ("", "special")),
        ("10.43.0.1", ("", "outside_cidrs")),
        ("8.8.8.8", ("", "outside_cidrs")),
    ],
)
def test_check_address(raw: str, result: tuple[str, str | None]) -> None:
    assert check_address(raw, PODS) == result


def test_namespace_allow_and_deny_lists_apply_to_opted_in_objects_only() -> None:
    objs = [service("web", ns, "10.43.0.99", [port("http", 80)], annotations=OPT_IN) for ns in ("a", "b", "c")]
    state = ClusterState(services=store(*objs, service("kube-dns", "kube-system", "10.43.0.10", [port("dns", 53)])))

    def probed(**kw: tuple[str, ...]) -> tuple[set[str], int]:
        derivation = Deriver(DiscoveryConfig(**kw), "node-1").all(state)  # type: ignore[arg-type]
        names = {t.name for t in derivation.targets["services"] if t.name.startswith("svc/")}
        return {n.split("/")[1] for n in names if "/web:" in n}, derivation.notes.excluded["services"]

    assert probed() == ({"a", "b", "c"}, 0)
    assert probed(namespaces_deny=("b",)) == ({"a", "c"}, 1)
    assert probed(namespaces_allow=("a", "b"), namespaces_deny=("b",)) == ({"a"}, 2)
    # the configured cluster services are the operator's, not a tenant's: never filtered
    dns = Deriver(DiscoveryConfig(namespaces_allow=("a",)), "node-1").dns(state, set())
    assert any(t.name.startswith("dns/kube-dns/") for t in dns)


def test_a_bad_annotation_on_an_ingress_rejects_that_ingress_only() -> None:
    traefik = service("traefik", "kube-system", "10.43.0.80", [port("web", 80)])
    bad = ingress("bad", "shop", "a.example.com", "web", 80, annotations={**OPT_IN, "netpath.io/expect-status": "²"})
    good = ingress("good", "shop", "b.example.com", "web", 80, annotations=OPT_IN)
    notes = Notes()
    cfg = DiscoveryConfig(ingress=IngressConfig(host_ports=False))
    out = Deriver(cfg, "node-1").ingress(
        ClusterState(services=store(traefik), ingresses=store(bad, good)), set(), notes
    )
    assert [t.name for t in out] == ["ingress/shop/good/b.example.com"]
    assert list(notes.annotation_errors) == [("ingresses", "shop", "bad")]
