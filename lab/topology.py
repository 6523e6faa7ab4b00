"""The lab's desired state: nodes, pods, Services and their addresses, computed from (nodes, mtu).

Pure data, no side effects. `lab up` builds exactly this and writes it as JSON (``topology.json`` in the
state dir) so tests, the demo and later tools find every namespace and address without guessing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .netns import PREFIX

MAX_NODES = 8
UNDERLAY_NET = "192.168.100.0/24"
POD_CIDR = "10.42.0.0/16"
SERVICE_CIDR = "10.43.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
KUBE_DNS_IP = "10.43.0.10"
KUBERNETES_IP = "10.43.0.1"  # the `kubernetes` Service: K3s gives it the first address of --service-cidr
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
EXPORTER_PORT = 10047
APP_PORT = 8080
INGRESS_HOST = "platform.keybuzz.io"
EXPORTER_NAMESPACE = "monitoring"  # where the lab installs the chart (lab/operator_scrape.py's NAMESPACE)
API_SERVER_PORT = 6443  # the K3s server's API port on node1, behind the `kubernetes` Service (lab/apiserver.py)
# Where the ingress controller runs: on every node (a DaemonSet, the lab's first layout) or on node1 only,
# reached from every node (K3s' default: one Traefik replica behind ServiceLB) — the reported cluster's layout.
INGRESS_EVERY_NODE = "every-node"
INGRESS_ONE_NODE = "one-node"
INGRESS_LAYOUTS = (INGRESS_EVERY_NODE, INGRESS_ONE_NODE)
UNDERLAY_NS = f"{PREFIX}ul"
UNDERLAY_BRIDGE = "br0"


@dataclass(frozen=True)
class Pod:
    name: str  # Kubernetes pod name
    namespace: str  # Kubernetes namespace
    app: str  # the "app" label: which Service selects it
    node: str
    netns: str  # Linux network namespace
    ip: str
    host_veth: str  # the pod's veth end in the node namespace (on cni0)
    ports: dict[str, int] = field(default_factory=dict)  # name -> container port


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int
    protocol: str  # "TCP" | "UDP"


@dataclass(frozen=True)
class Endpoint:
    pod: str
    node: str
    ip: str


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str
    ports: list[ServicePort]
    endpoints: list[Endpoint]
    dns_name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Node:
    name: str
    index: int
    netns: str
    underlay_ip: str  # on eth0
    underlay_port: str  # the node's port on the underlay bridge, in the underlay namespace
    pod_cidr: str
    cni_ip: str  # cni0 gateway address
    vtep_ip: str  # flannel.1 address (10.42.N.0)
    vtep_mac: str


@dataclass(frozen=True)
class Topology:
    nodes: list[Node]
    pods: list[Pod]
    services: list[Service]
    underlay_mtu: int
    overlay_mtu: int
    underlay_netns: str = UNDERLAY_NS
    underlay_bridge: str = UNDERLAY_BRIDGE
    underlay_net: str = UNDERLAY_NET
    pod_cidr: str = POD_CIDR
    service_cidr: str = SERVICE_CIDR
    cluster_domain: str = CLUSTER_DOMAIN
    kube_dns_ip: str = KUBE_DNS_IP
    vxlan_port: int = VXLAN_PORT
    vxlan_vni: int = VXLAN_VNI
    ingress_host: str = INGRESS_HOST
    state_dir: str = ""
    exporters: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> {pod, netns, metrics, config}
    ingress_layout: str = INGRESS_EVERY_NODE

    # --- lookups ---------------------------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if name in (n.name, n.netns, str(n.index)):
                return n
        raise KeyError(f"no node {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    def pod(self, name: str) -> Pod:
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(f"no pod {name!r}")

    def pods_of(self, app: str) -> list[Pod]:
        return [p for p in self.pods if p.app == app]

    def pod_on(self, app: str, node: str) -> Pod:
        for p in self.pods:
            if p.app == app and p.node == node:
                return p
        raise KeyError(f"no {app} pod on {node}")

    def service(self, name: str) -> Service:
        for s in self.services:
            if name in (s.name, s.key):
                return s
        raise KeyError(f"no Service {name!r}")

    @property
    def namespaces(self) -> list[str]:
        return [self.underlay_netns, *(n.netns for n in self.nodes), *(p.netns for p in self.pods)]

    # --- JSON ------------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @staticmethod
    def from_json(text: str) -> Topology:
        raw: dict[str, Any] = json.loads(text)
        raw["nodes"] = [Node(**n) for n in raw["nodes"]]
        raw["pods"] = [Pod(**p) for p in raw["pods"]]
        raw["services"] = [
            Service(
                **{
                    **s,
                    "ports": [ServicePort(**p) for p in s["ports"]],
                    "endpoints": [Endpoint(**e) for e in s["endpoints"]],
                }
            )
            for s in raw["services"]
        ]
        return Topology(**raw)

    @staticmethod
    def load(path: Path) -> Topology:
        return Topology.from_json(path.read_text())


# App labels of the lab's workloads
COREDNS = "kube-dns"
FRONT = "keybuzz-front"
INGRESS = "ingress-nginx"
EXPORTER = "netpath-exporter"


def build(nodes: int = 3, mtu: int = 1500, state_dir: str = "", ingress: str = INGRESS_EVERY_NODE) -> Topology:
    """The lab for ``nodes`` nodes on an underlay of MTU ``mtu``, the ingress controller placed per ``ingress``."""
    if ingress not in INGRESS_LAYOUTS:
        raise ValueError(f"--ingress: expected one of {', '.join(INGRESS_LAYOUTS)}, got {ingress!r}")
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"--nodes: expected 1 to {MAX_NODES}, got {nodes}")
    if not 1280 <= mtu <= 9000:
        raise ValueError(f"--mtu: expected 1280 to 9000, got {mtu}")
    node_list = [
        Node(
            name=f"node{i}",
            index=i,
            netns=f"{PREFIX}node{i}",
            underlay_ip=f"192.168.100.{i}",
            underlay_port=f"p-node{i}",
            pod_cidr=f"10.42.{i}.0/24",
            cni_ip=f"10.42.{i}.1",
            vtep_ip=f"10.42.{i}.0",
            vtep_mac=f"0e:42:00:00:00:{i:02x}",
        )
        for i in range(1, nodes + 1)
    ]
    pods: list[Pod] = []
    next_host = {n.name: 2 for n in node_list}

    def add(name: str, namespace: str, app: str, node: Node, short: str, ports: dict[str, int]) -> Pod:
        host = next_host[node.name]
        next_host[node.name] += 1
        pod = Pod(
            name=name,
            namespace=namespace,
            app=app,
            node=node.name,
            netns=f"{PREFIX}n{node.index}-{short}",
            ip=f"10.42.{node.index}.{host}",
            host_veth=f"veth{host}",
            ports=ports,
        )
        pods.append(pod)
        return pod

    # Placement: CoreDNS and the first app replica on node1, the second replica on node2 (so the app has
    # a local and a remote endpoint from node1 and node2, and only remote ones from node3+), an ingress
    # controller and an exporter on every node (DaemonSets).
    for n in node_list:
        add(f"netpath-exporter-{n.name}", EXPORTER_NAMESPACE, EXPORTER, n, "exporter", {"metrics": EXPORTER_PORT})
    for n in node_list if ingress == INGRESS_EVERY_NODE else node_list[:1]:
        add(f"ingress-nginx-controller-{n.name}", "ingress-nginx", INGRESS, n, "ingress", {"http": 80})
    add("coredns-0", "kube-system", COREDNS, node_list[0], "coredns", {"dns": 53, "dns-tcp": 53})
    front_nodes = [node_list[0], node_list[1 if nodes > 1 else 0]]
    for k, n in enumerate(front_nodes):
        add(f"keybuzz-front-{k}", "keybuzz", FRONT, n, f"front{k}", {"http": APP_PORT})

    def endpoints(app: str) -> list[Endpoint]:
        return [Endpoint(pod=p.name, node=p.node, ip=p.ip) for p in pods if p.app == app]

    def svc(name: str, ns: str, ip: str, ports: list[ServicePort], app: str) -> Service:
        return Service(name, ns, ip, ports, endpoints(app), f"{name}.{ns}.svc.{CLUSTER_DOMAIN}")

    services = [
        # Every cluster's API Service: its endpoint is the server node's address, not a pod (lab/apiserver.py)
        Service(
            "kubernetes",
            "default",
            KUBERNETES_IP,
            [ServicePort("https", 443, API_SERVER_PORT, "TCP")],
            [Endpoint(pod="", node=node_list[0].name, ip=node_list[0].underlay_ip)],
            f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
        ),
        svc(
            "kube-dns",
            "kube-system",
            KUBE_DNS_IP,
            [ServicePort("dns", 53, 53, "UDP"), ServicePort("dns-tcp", 53, 53, "TCP")],
            COREDNS,
        ),
        svc("keybuzz-front", "keybuzz", "10.43.20.10", [ServicePort("http", 80, APP_PORT, "TCP")], FRONT),
        svc(
            "ingress-nginx-controller",
            "ingress-nginx",
            "10.43.30.10",
            [ServicePort("http", 80, 80, "TCP")],
            INGRESS,
        ),
        svc(
            "netpath-exporter",
            EXPORTER_NAMESPACE,
            "10.43.40.10",
            [ServicePort("metrics", EXPORTER_PORT, EXPORTER_PORT, "TCP")],
            EXPORTER,
        ),
    ]
    return Topology(
        nodes=node_list,
        pods=pods,
        services=services,
        underlay_mtu=mtu,
        overlay_mtu=mtu - VXLAN_OVERHEAD,
        state_dir=state_dir,
        ingress_layout=ingress,
    )
