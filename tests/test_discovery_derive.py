"""Target derivation corner cases, as pure functions of API objects."""

from __future__ import annotations

from kubeapi import endpoint_slice, exporter_pod, ingress, node, port, service

from exporter.discovery.config import DiscoveryConfig, IngressConfig
from exporter.discovery.derive import ClusterState, Deriver, parse_resolv_conf
from exporter.model import HTTPTarget, Transport, Via


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
    svc = service("db", "shop", "None", [port("pg", 5432), port("metrics", 9187)],
                  annotations={"netpath.io/probe": "true", "netpath.io/ports": "5432"})
    sl = endpoint_slice("db", "shop", [("db-0", "10.42.2.5", "node-2")],
                        [{"name": "pg", "port": 5432}, {"name": "metrics", "port": 9187}])
    services, endpoints = Deriver(DiscoveryConfig(), "node-1").services(
        ClusterState(nodes=NODES, services=store(svc), endpointslices=store(sl)), {"node-1", "node-2"})
    assert not any("shop/db" in t.name for t in services)
    assert [t.name for t in endpoints] == ["ep/shop/db/db-0:5432"]


def test_tls_ingress_hosts_use_https_and_wildcards_are_skipped() -> None:
    traefik = service("traefik", "kube-system", "10.43.0.80", [port("web", 80), port("websecure", 443)],
                      type_="LoadBalancer", lb_ips=["192.168.50.1", "192.168.50.2"])
    secure = ingress("a", "shop", "a.example.com", "web", "http", annotations={"netpath.io/probe": "true"}, tls=True)
    wild = ingress("w", "shop", "*.example.com", "web", 80, annotations={"netpath.io/probe": "true"})
    state = ClusterState(nodes=NODES, services=store(traefik), ingresses=store(secure, wild),
                         pods=store(exporter_pod("node-2", "10.42.2.10")))
    cfg = DiscoveryConfig(ingress=IngressConfig(host_ports=True))
    out = Deriver(cfg, "node-1").ingress(state, {"node-1", "node-2"})
    by_name = {t.name: t for t in out}
    assert set(by_name) == {"ingress/shop/a/a.example.com", "ingress/shop/a/a.example.com@node/node-1",
                            "ingress/shop/a/a.example.com@node/node-2"}
    target = by_name["ingress/shop/a/a.example.com"]
    assert isinstance(target, HTTPTarget) and target.url == "https://10.43.0.80:443/"
