"""exporter/diagnose/netfilter.py: a probe's packet followed through `iptables-save -c` text as node facts read it."""

from __future__ import annotations

import pytest

from exporter.diagnose import netfilter
from exporter.model import Perspective
from exporter.node.facts import ClusterIPPort, IptablesFacts
from exporter.node.iptables import iptables_facts

NAT = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
:KUBE-SEP-1 - [0:0]
:KUBE-SEP-2 - [0:0]
[5:300] -A PREROUTING -j KUBE-SERVICES
[0:0] -A OUTPUT -j KUBE-SERVICES
[5:300] -A KUBE-SERVICES -d 10.43.0.20/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
[3:180] -A KUBE-SVC-A -m statistic --mode random --probability 0.5 -j KUBE-SEP-1
[2:120] -A KUBE-SVC-A -j KUBE-SEP-2
[3:180] -A KUBE-SEP-1 -p tcp -m tcp -j DNAT --to-destination 10.42.1.7:8080
[2:120] -A KUBE-SEP-2 -p tcp -m tcp -j DNAT --to-destination 10.42.2.7:8080
COMMIT
"""


def facts(filter_rules: str, policy: str = "DROP", nat: str = NAT) -> IptablesFacts:
    text = nat + f"*filter\n:INPUT ACCEPT [0:0]\n:FORWARD {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n{filter_rules}COMMIT\n"
    return iptables_facts(text, [ClusterIPPort("10.43.0.20", 80)])


PACKET = netfilter.Packet("tcp", "10.43.0.20", 80, Perspective.POD)


def test_every_endpoint_dnat_is_found_and_a_decided_drop_named() -> None:
    walk = netfilter.walk(facts("[7:420] -A FORWARD -m conntrack --ctstate DNAT -j DROP\n"), PACKET)
    assert walk.dnat == ["10.42.1.7:8080", "10.42.2.7:8080"]
    assert walk.drop is not None and (walk.drop.chain, walk.drop.number, walk.drop.rule.packets) == ("FORWARD", 1, 7)


def test_the_destination_after_dnat_decides_the_filter_rules() -> None:
    walk = netfilter.walk(facts("-A FORWARD -d 10.42.0.0/16 -j ACCEPT\n-A FORWARD -j DROP\n"), PACKET)
    assert walk.accepted_by is not None and walk.drop is None and not walk.policy_drop


def test_nothing_accepting_falls_to_the_drop_policy() -> None:
    walk = netfilter.walk(facts("-A FORWARD -d 192.168.0.0/16 -j ACCEPT\n"), PACKET)
    assert walk.policy_drop == "filter/FORWARD"
    assert netfilter.walk(facts("", policy="ACCEPT"), PACKET).policy_drop == ""


def test_an_interface_match_is_undecided_so_the_drop_is_only_possible() -> None:
    walk = netfilter.walk(facts("-A FORWARD -i cni0 -j DROP\n"), PACKET)
    assert walk.drop is None and [m.rule.text for m in walk.may_drop] == ["-A FORWARD -i cni0 -j DROP"]


def test_no_nat_hook_means_no_dnat_and_the_clusterip_kept() -> None:
    nat = NAT.replace("[5:300] -A PREROUTING -j KUBE-SERVICES\n", "")
    walk = netfilter.walk(facts("-A FORWARD -d 10.43.0.0/16 -j DROP\n", nat=nat), PACKET)
    assert walk.dnat == [] and walk.drop is not None  # the ClusterIP destination met the rule for it
    lines = netfilter.describe_walk("nft", PACKET, walk, None)
    assert any("meets no DNAT in nat PREROUTING" in line for line in lines)


def test_the_node_perspective_walks_output() -> None:
    node = netfilter.Packet("tcp", "10.43.0.20", 80, Perspective.NODE)
    walk = netfilter.walk(facts("[1:60] -A FORWARD -j DROP\n"), node)
    assert walk.dnat and walk.drop is None  # FORWARD is not on a locally sent packet's path


def test_counters_compare_only_the_same_rule_at_the_same_place() -> None:
    before = facts("[7:420] -A FORWARD -m conntrack --ctstate DNAT -j DROP\n")
    after = facts("[19:1140] -A FORWARD -m conntrack --ctstate DNAT -j DROP\n")
    walk = netfilter.walk(after, PACKET)
    assert walk.drop is not None and netfilter.counter_delta(walk.drop, before) == 12
    assert netfilter.rising_drop(walk, before) == walk.drop
    moved = facts("[0:0] -A FORWARD -p udp -j ACCEPT\n[7:420] -A FORWARD -m conntrack --ctstate DNAT -j DROP\n")
    assert netfilter.counter_delta(walk.drop, moved) is None  # rule 1 is another rule there


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.42.1.5:8080", ("10.42.1.5", 8080)),
        ("[fd00:42::5]:8080", ("fd00:42::5", 8080)),
        ("10.42.1.5", ("10.42.1.5", 0)),
    ],
)
def test_a_dnat_destination_reads_as_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert netfilter.to_destination(value) == expected
