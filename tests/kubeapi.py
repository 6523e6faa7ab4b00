"""The discovery tests' cluster: the stand-in API server (lab/kubeapi.py) and a small K3s-like cluster in it."""

from __future__ import annotations

from typing import Any

from lab.kubeapi import (
    RESOURCES,
    FakeKubeAPI,
    Obj,
    Request,
    endpoint_slice,
    ingress,
    iter_all,
    node,
    pod,
    port,
    service,
)

__all__ = [
    "EXPORTER_LABELS",
    "EXPORTER_NS",
    "RESOURCES",
    "FakeKubeAPI",
    "Obj",
    "Request",
    "endpoint_slice",
    "exporter_pod",
    "ingress",
    "iter_all",
    "node",
    "pod",
    "populate_small_cluster",
    "port",
    "service",
]

# --- a small K3s-like cluster, the starting point of the discovery tests ------------------------------------

EXPORTER_NS = "netpath"
EXPORTER_LABELS = {"app.kubernetes.io/name": "netpath-exporter", "app.kubernetes.io/instance": "netpath"}


def exporter_pod(node_name: str, ip: str, **kw: Any) -> Obj:
    return pod(f"netpath-exporter-{node_name}", EXPORTER_NS, node_name, ip, labels=EXPORTER_LABELS, **kw)


def populate_small_cluster(api: FakeKubeAPI, nodes: int = 3) -> None:
    """node-1..N with an exporter pod each, the API/kube-dns/exporter/traefik Services, two CoreDNS pods."""
    for i in range(1, nodes + 1):
        api.add("nodes", node(f"node-{i}", f"192.168.50.{i}"))
        api.add("pods", exporter_pod(f"node-{i}", f"10.42.{i}.10"))
        # noise: a pod that is not an exporter must never become a peer
        api.add("pods", pod(f"other-{i}", EXPORTER_NS, f"node-{i}", f"10.42.{i}.99", labels={"app": "other"}))
    api.add("services", service("kubernetes", "default", "10.43.0.1", [port("https", 443, 6443)]))
    api.add("services", service("netpath-exporter", EXPORTER_NS, "10.43.0.47", [port("metrics", 10047)]))
    dns_ports = [port("dns", 53, 53, "UDP"), port("dns-tcp", 53, 53, "TCP"), port("metrics", 9153)]
    api.add("services", service("kube-dns", "kube-system", "10.43.0.10", dns_ports))
    api.add(
        "endpointslices",
        endpoint_slice(
            "kube-dns",
            "kube-system",
            [("coredns-a", "10.42.1.3", "node-1"), ("coredns-b", "10.42.2.3", "node-2")],
            dns_ports,
        ),
    )
    api.add(
        "services",
        service(
            "traefik",
            "kube-system",
            "10.43.0.80",
            [port("web", 80, 8000), port("websecure", 443, 8443)],
            type_="LoadBalancer",
            lb_ips=[f"192.168.50.{i}" for i in range(1, nodes + 1)],
        ),
    )
