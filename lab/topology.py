"""The lab's desired state: nodes, pods, Services and their addresses, computed from (layout, mtu).

A :class:`Layout` says where the workloads run: one of the two named layouts (the ingress controller on every node,
or the reported cluster's one controller on node1), or a layout drawn from a random seed (``seed:N``: 3 to 5 nodes,
the controller on one node or on every node, CoreDNS on one or two nodes, the app's replicas on some nodes only), so
the localizer is checked on layouts its rules were not written on. Pure data, no side effects. `lab up` builds
exactly this and writes it as JSON (``topology.json`` in the state dir) so tests, the demo and later tools find
every namespace and address without guessing.
"""

from __future__ import annotations

import json
import random
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
SEED_PREFIX = "seed:"  # a layout drawn from a random seed: "seed:42"
SEEDED_NODES = (3, 5)  # the node counts a seeded layout draws from, inclusive
UNDERLAY_NS = f"{PREFIX}ul"
UNDERLAY_BRIDGE = "br0"


@dataclass(frozen=True)
class Layout:
    """Where the workloads run, by node number (1 = node1). Exporters run on every node (a DaemonSet)."""

    name: str  # "every-node", "one-node" or "seed:N": what `lab up --layout` takes
    nodes: int
    ingress: tuple[int, ...]  # the nodes running an ingress controller
    coredns: tuple[int, ...]  # one CoreDNS replica on each of these nodes
    front: tuple[int, ...]  # one keybuzz-front replica on each of these nodes
    # keybuzz-api: a second Service over keybuzz-front's pods (the reported cluster has two). Seeded layouts only:
    # the named layouts stay as their matrix and lab tests were measured.
    shared_pods_service: bool = False

    @property
    def ingress_layout(self) -> str:
        """every-node: each node has a controller and probes its own; else every node reaches the one(s) there."""
        return INGRESS_EVERY_NODE if len(self.ingress) == self.nodes else INGRESS_ONE_NODE

    def summary(self) -> str:
        def on(nodes: tuple[int, ...]) -> str:
            return "every node" if len(nodes) == self.nodes > 1 else ", ".join(f"node{i}" for i in nodes)

        return (
            f"{self.name}: {self.nodes} nodes; ingress controller on {on(self.ingress)}; CoreDNS on "
            f"{on(self.coredns)}; keybuzz-front pods on {on(self.front)}"
            + (" (and keybuzz-api over them)" if self.shared_pods_service else "")
        )


def named_layout(name: str, nodes: int = 3) -> Layout:
    """The two fixed layouts: CoreDNS on node1, the app's replicas on node1 and node2 (a local and a remote endpoint
    from node1 and node2, only remote ones from node3+); the ingress controller on every node, or on node1 only."""
    if name not in INGRESS_LAYOUTS:
        raise ValueError(f"--layout: expected one of {', '.join(INGRESS_LAYOUTS)} or {SEED_PREFIX}N, got {name!r}")
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"--nodes: expected 1 to {MAX_NODES}, got {nodes}")
    ingress = tuple(range(1, nodes + 1)) if name == INGRESS_EVERY_NODE else (1,)
    return Layout(name, nodes, ingress, coredns=(1,), front=(1, min(2, nodes)))


def seeded_layout(seed: int) -> Layout:
    """A layout drawn from ``seed`` (the same seed, the same layout): 3 to 5 nodes; the ingress controller on every
    node or on one node (any node); CoreDNS on one or two nodes; two or three app replicas, never on every node."""
    rng = random.Random(seed)
    nodes = rng.randint(*SEEDED_NODES)
    every = list(range(1, nodes + 1))
    ingress = tuple(every) if rng.random() < 0.5 else (rng.choice(every),)
    coredns = tuple(sorted(rng.sample(every, rng.randint(1, 2))))
    front = tuple(sorted(rng.sample(every, rng.randint(2, min(3, nodes - 1)))))
    return Layout(f"{SEED_PREFIX}{seed}", nodes, ingress, coredns, front, shared_pods_service=True)


def parse_layout(spec: str, nodes: int = 3) -> Layout:
    """`--layout`: a named layout on ``nodes`` nodes, or ``seed:N`` (which draws its own node count)."""
    if spec.startswith(SEED_PREFIX):
        raw = spec[len(SEED_PREFIX) :]
        if not raw.isdigit():
            raise ValueError(f"--layout: expected {SEED_PREFIX}N with N a non-negative integer, got {spec!r}")
        return seeded_layout(int(raw))
    return named_layout(spec, nodes)


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
    layout: str = INGRESS_EVERY_NODE  # the Layout's name: parse_layout(layout, len(nodes)) gives it back

    @property
    def placement(self) -> Layout:
        return parse_layout(self.layout, len(self.nodes))

    @property
    def ingress_layout(self) -> str:
        return self.placement.ingress_layout

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
API = "keybuzz-api"  # a second Service selecting keybuzz-front's pods
INGRESS = "ingress-nginx"
EXPORTER = "netpath-exporter"


def build(
    nodes: int = 3, mtu: int = 1500, state_dir: str = "", ingress: str = INGRESS_EVERY_NODE, layout: str | None = None
) -> Topology:
    """The lab on an underlay of MTU ``mtu``, its workloads placed per ``layout`` (a name or ``seed:N``; default: the
    named layout ``ingress`` on ``nodes`` nodes)."""
    place = parse_layout(layout if layout is not None else ingress, nodes)
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
        for i in range(1, place.nodes + 1)
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

    # Placement per the layout: an exporter on every node (a DaemonSet), the ingress controller(s), CoreDNS and
    # the app's replicas where the layout puts them.
    for n in node_list:
        add(f"netpath-exporter-{n.name}", EXPORTER_NAMESPACE, EXPORTER, n, "exporter", {"metrics": EXPORTER_PORT})
    for i in place.ingress:
        n = node_list[i - 1]
        add(f"ingress-nginx-controller-{n.name}", "ingress-nginx", INGRESS, n, "ingress", {"http": 80})
    for k, i in enumerate(place.coredns):
        add(f"coredns-{k}", "kube-system", COREDNS, node_list[i - 1], f"coredns{k or ''}", {"dns": 53, "dns-tcp": 53})
    for k, i in enumerate(place.front):
        add(f"keybuzz-front-{k}", "keybuzz", FRONT, node_list[i - 1], f"front{k}", {"http": APP_PORT})

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
        # A second Service over the same pods (the reported cluster has two): its own ClusterIP and port, so a
        # fault of the pods shows on both Services and a fault of one Service's rules on that one only
        *(
            [svc(API, "keybuzz", "10.43.20.11", [ServicePort("http", APP_PORT, APP_PORT, "TCP")], FRONT)]
            if place.shared_pods_service
            else []
        ),
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
        layout=place.name,
    )
