"""Builds the lab's links, addresses, routes, neighbour and FDB entries — all inside lab namespaces.

Every veth pair is created from inside a lab namespace with its peer placed straight into another lab
namespace (``ip -n A link add X type veth peer name Y netns B``), so no interface ever exists in the root
namespace, not even for an instant. The overlay is set up the way flannel's vxlan backend does it:
flannel.1 (VNI 1, UDP 8472, MTU = underlay - 50), and per remote node a route
``10.42.X.0/24 via 10.42.X.0 dev flannel.1 onlink``, a permanent neighbour entry for 10.42.X.0 with the
remote VTEP MAC, and an FDB entry sending that MAC to the remote node's underlay IP.
"""

from __future__ import annotations

from . import netns
from .topology import Node, Pod, Topology

SILENT_GATEWAY = "192.168.100.254"  # in the underlay /24, never assigned to a node
SILENT_GATEWAY_MAC = "02:00:00:00:00:fe"  # locally administered, owned by no interface


def build_underlay(topo: Topology) -> None:
    netns.create(topo.underlay_netns)
    netns.ip_batch(
        topo.underlay_netns,
        [
            f"link add {topo.underlay_bridge} mtu {topo.underlay_mtu} type bridge",
            f"link set {topo.underlay_bridge} up",
        ],
    )


def build_node(topo: Topology, node: Node) -> None:
    ns = node.netns
    netns.create(ns)
    cmds = [
        f"link add eth0 mtu {topo.underlay_mtu} type veth peer name {node.underlay_port} netns {topo.underlay_netns}",
        f"addr add {node.underlay_ip}/24 dev eth0",
        "link set eth0 up",
        f"link add flannel.1 address {node.vtep_mac} mtu {topo.overlay_mtu} type vxlan id {topo.vxlan_vni} "
        f"local {node.underlay_ip} dev eth0 dstport {topo.vxlan_port} nolearning",
        f"addr add {node.vtep_ip}/32 dev flannel.1",
        "link set flannel.1 up",
        f"link add cni0 mtu {topo.overlay_mtu} type bridge",
        f"addr add {node.cni_ip}/24 dev cni0",
        "link set cni0 up",
        # A real node has a default route via a gateway: a ClusterIP packet no NAT rule caught leaves by it and
        # vanishes, so clients wait (nginx answers 504). The gateway here is silent: a permanent neighbour
        # entry to a MAC nobody has, so frames go out eth0 and are dropped. Not a `blackhole` route: the
        # node's own packets are routed before OUTPUT's DNAT, and a blackhole would fail them at once with
        # EINVAL even when the NAT rules are fine.
        f"neigh add {SILENT_GATEWAY} lladdr {SILENT_GATEWAY_MAC} dev eth0 nud permanent",
        f"route add default via {SILENT_GATEWAY} dev eth0",
    ]
    netns.ip_batch(ns, cmds)
    install_overlay_peers(topo, node)
    netns.ip_batch(
        topo.underlay_netns,
        [
            f"link set {node.underlay_port} master {topo.underlay_bridge}",
            f"link set {node.underlay_port} up",
        ],
    )
    # A real NIC puts wire-sized frames on the wire. veth would pass 64 KiB GSO super-packets through the
    # underlay untouched, so an MTU mismatch there would go unnoticed; segmenting at eth0 makes it bite.
    netns.ns_exec(
        ns,
        [
            "ethtool",
            "-K",
            "eth0",
            "tso",
            "off",
            "gso",
            "off",
            "tx-udp_tnl-segmentation",
            "off",
            "tx-udp_tnl-csum-segmentation",
            "off",
        ],
    )
    netns.sysctl(ns, "net.ipv4.ip_forward", 1)
    # K3s loads br_netfilter and sets this at agent start; it is per network namespace on this kernel.
    netns.sysctl(ns, "net.bridge.bridge-nf-call-iptables", 1)


def install_overlay_peers(topo: Topology, node: Node) -> None:
    """What flanneld installs for every other node; `replace`, so running it again changes nothing."""
    peers = [p for p in topo.nodes if p.name != node.name]
    if not peers:
        return
    cmds = []
    for peer in peers:
        cmds += [
            f"route replace {peer.pod_cidr} via {peer.vtep_ip} dev flannel.1 onlink",
            f"neigh replace {peer.vtep_ip} lladdr {peer.vtep_mac} dev flannel.1 nud permanent",
        ]
    netns.ip_batch(node.netns, cmds)
    fdb = [f"fdb replace {p.vtep_mac} dev flannel.1 dst {p.underlay_ip} self permanent" for p in peers]
    netns.run(["bridge", "-n", node.netns, "-batch", "-"], stdin="\n".join(fdb) + "\n")


def build_pod(topo: Topology, pod: Pod) -> None:
    node = topo.node(pod.node)
    netns.create(pod.netns)
    netns.ip_batch(
        node.netns,
        [
            f"link add {pod.host_veth} mtu {topo.overlay_mtu} type veth peer name eth0 netns {pod.netns}",
            f"link set {pod.host_veth} master cni0",
            # flannel's bridge CNI sets hairpin mode so a pod can reach itself through its Service
            f"link set {pod.host_veth} type bridge_slave hairpin on",
            f"link set {pod.host_veth} up",
        ],
    )
    netns.ip_batch(
        pod.netns,
        [
            # the CNI gives pods the overlay MTU; the peer end would otherwise keep the default 1500
            f"link set eth0 mtu {topo.overlay_mtu}",
            f"addr add {pod.ip}/24 dev eth0",
            "link set eth0 up",
            f"route add default via {node.cni_ip}",
        ],
    )
    search = [f"{pod.namespace}.svc.{topo.cluster_domain}", f"svc.{topo.cluster_domain}", topo.cluster_domain]
    netns.write_resolv_conf(pod.netns, topo.kube_dns_ip, search)


def build(topo: Topology) -> None:
    build_underlay(topo)
    for node in topo.nodes:
        build_node(topo, node)
    for pod in topo.pods:
        build_pod(topo, pod)


def set_underlay_port_mtu(topo: Topology, mtu: int, nodes: list[Node] | None = None) -> None:
    """The underlay's MTU as the switch sees it (mtu-blackhole shrinks it below what the nodes send)."""
    netns.ip_batch(
        topo.underlay_netns,
        [f"link set {n.underlay_port} mtu {mtu}" for n in (nodes if nodes is not None else topo.nodes)],
    )
