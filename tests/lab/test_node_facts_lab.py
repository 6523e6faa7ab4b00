"""Node facts read from a lab node's namespace equal what the lab built and what the kernel's files say."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.node import read_node_facts
from exporter.node.facts import (
    ClusterIPPort,
    ConntrackFacts,
    IptablesFacts,
    OffloadFacts,
    OverlayFacts,
    RouteFacts,
    SysctlFacts,
)
from exporter.node.readers import parse_conntrack_stat
from lab import netns, scenarios
from lab.topology import Topology

pytestmark = pytest.mark.lab


def in_node(topo: Topology, node: str, *cmd: str) -> str:
    return netns.ns_exec(topo.node(node).netns, list(cmd))


def front_clusterip(topo: Topology) -> ClusterIPPort:
    front = topo.service("keybuzz-front")
    return ClusterIPPort(front.cluster_ip, front.ports[0].port, "tcp")


def test_overlay_mtus_routes_and_sysctls_are_the_labs(lab: Topology) -> None:
    facts = read_node_facts([], netns=lab.node("node1").netns)
    assert isinstance(facts.overlay, OverlayFacts)
    (vxlan,) = facts.overlay.vxlan
    assert (vxlan.name, vxlan.vni, vxlan.port, vxlan.underlay) == ("flannel.1", 1, lab.vxlan_port, "eth0")
    assert (vxlan.mtu, vxlan.underlay_mtu, vxlan.mtu_gap) == (lab.overlay_mtu, lab.underlay_mtu, 50)
    assert vxlan.local == lab.node("node1").underlay_ip
    assert facts.overlay.bridge_mtu == lab.overlay_mtu

    assert isinstance(facts.routes, RouteFacts)
    peers = {p.pod_cidr: p for p in facts.routes.peers}
    assert set(peers) == {n.pod_cidr for n in lab.nodes if n.name != "node1"}
    for node in lab.nodes[1:]:
        assert peers[node.pod_cidr].fdb_dst == node.underlay_ip and peers[node.pod_cidr].neighbour_mac

    assert isinstance(facts.sysctl, SysctlFacts)
    assert facts.sysctl.ip_forward == 1 and facts.sysctl.br_netfilter_loaded


def test_offload_state_is_what_ethtool_reports(lab: Topology) -> None:
    facts = read_node_facts([], netns=lab.node("node2").netns)
    assert isinstance(facts.offload, OffloadFacts)
    line = next(
        ln
        for ln in in_node(lab, "node2", "ethtool", "-k", "flannel.1").splitlines()
        if ln.strip().startswith("tx-checksum-ip-generic:")
    )
    assert facts.offload.tx_checksum_ip_generic["flannel.1"] is (line.split(":")[1].split()[0] == "on")


def test_conntrack_stats_are_the_live_files_summed_over_cpus(lab: Topology) -> None:
    facts = read_node_facts([], netns=lab.node("node1").netns)
    after = parse_conntrack_stat(in_node(lab, "node1", "cat", "/proc/net/stat/nf_conntrack"))
    assert isinstance(facts.conntrack, ConntrackFacts)
    assert set(facts.conntrack.stats) <= set(after)
    for column, value in facts.conntrack.stats.items():
        assert value <= after[column], column  # counters only grow between the two reads
    limit = int(in_node(lab, "node1", "cat", "/proc/sys/net/netfilter/nf_conntrack_max"))
    assert facts.conntrack.max == limit


def test_the_nat_hook_and_dnat_rules_follow_the_clusterip_nat_scenario(lab: Topology) -> None:
    target = front_clusterip(lab)
    before = read_node_facts([target], netns=lab.node("node2").netns)
    assert isinstance(before.iptables_nft, IptablesFacts)
    assert before.iptables_nft.nat_hook == {"PREROUTING": True, "OUTPUT": True}
    assert before.iptables_nft.dnat[target] is True
    scenarios.break_(lab, "clusterip-nat", "node2")
    try:
        broken = read_node_facts([target], netns=lab.node("node2").netns)
        other = read_node_facts([target], netns=lab.node("node1").netns)
    finally:
        scenarios.heal(lab, "clusterip-nat")
    assert isinstance(broken.iptables_nft, IptablesFacts) and isinstance(other.iptables_nft, IptablesFacts)
    assert broken.iptables_nft.nat_hook == {"PREROUTING": False, "OUTPUT": False}
    assert other.iptables_nft.nat_hook == {"PREROUTING": True, "OUTPUT": True}


def test_without_privileges_the_iptables_sources_are_unavailable_not_healthy(lab: Topology) -> None:
    code = (
        "from exporter.node import read_node_facts, Unavailable\n"
        "f = read_node_facts([])\n"
        "print(type(f.iptables_nft).__name__, type(f.iptables_legacy).__name__)\n"
    )
    # the lab node's namespace, entered as root by `ip netns exec`, then privileges dropped to nobody
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.node("node1").netns,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.split() == ["Unavailable", "Unavailable"]


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5)
except OSError:
    pass
"""


def test_the_packet_walk_names_the_forward_drop_rule_and_its_counter_rises(lab: Topology) -> None:
    """The real `iptables-save -c` of a node with forward-drop-dnat: a ClusterIP packet from a pod on that node is
    DNATed to the app's pods, then dropped by the fault's FORWARD rule, whose counter rises with every connect."""
    from exporter.diagnose import netfilter
    from exporter.model import Perspective

    target = front_clusterip(lab)
    client = lab.pod_on("netpath-exporter", "node2")
    scenarios.break_(lab, "forward-drop-dnat", "node2")
    try:
        before = read_node_facts([target], netns=lab.node("node2").netns)
        for _ in range(3):  # bounded: 3 connects of at most 0.5 s each, from the pod's namespace
            netns.ns_exec(client.netns, [sys.executable, "-c", CONNECT, target.ip, str(target.port)], check=False)
        after = read_node_facts([target], netns=lab.node("node2").netns)
    finally:
        scenarios.heal(lab, "forward-drop-dnat")
    assert isinstance(before.iptables_nft, IptablesFacts) and isinstance(after.iptables_nft, IptablesFacts)
    packet = netfilter.Packet("tcp", target.ip, target.port, Perspective.POD)
    result = netfilter.walk(after.iptables_nft, packet)
    front = {
        f"{e.ip}:{lab.service('keybuzz-front').ports[0].target_port}" for e in lab.service("keybuzz-front").endpoints
    }
    assert set(result.dnat) == front
    assert result.drop is not None and result.drop.chain == "FORWARD" and "forward-drop-dnat" in result.drop.rule.text
    delta = netfilter.counter_delta(result.drop, before.iptables_nft)
    assert delta is not None and delta >= 3  # SYN retransmits count too
