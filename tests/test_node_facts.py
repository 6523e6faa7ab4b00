"""Node facts read from real network namespaces built here: a flannel-like node (VXLAN over a veth underlay,
cni0, per-peer routes/neighbours/FDB, kube-proxy-style NAT in the nft backend, a ufw chain in the legacy one)
and a pod-like namespace. Every namespace is named npfacts-* and deleted in the fixture finalizer; nothing is
added to the root namespace."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.node import readers
from exporter.node.facts import (
    BridgeNetfilterFacts,
    ClusterIPPort,
    ConntrackFacts,
    IptablesFacts,
    NodeFacts,
    OffloadFacts,
    OverlayFacts,
    RouteFacts,
    SnmpFacts,
    SysctlFacts,
    Unavailable,
)
from exporter.node.iptables import iptables_facts, parse_save
from exporter.node.readers import parse_conntrack_stat, parse_proc_pairs, read_node_facts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds network namespaces: needs root")

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python")
DNS = ClusterIPPort("10.43.0.10", 53, "udp")
EMPTY_SERVICE = ClusterIPPort("10.43.0.20", 80, "tcp")  # a Service without endpoints: no DNAT path
NOT_A_SERVICE = ClusterIPPort("10.43.0.99", 443, "tcp")

KUBE_NAT = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-DNS - [0:0]
:KUBE-SEP-DNS1 - [0:0]
:KUBE-SVC-EMPTY - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -d 10.43.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-DNS
-A KUBE-SERVICES -d 10.43.0.20/32 -p tcp -m comment --comment "default/empty cluster IP" -m tcp --dport 80 -j KUBE-SVC-EMPTY
-A KUBE-SVC-DNS ! -s 10.42.0.0/16 -d 10.43.0.10/32 -p udp -m udp --dport 53 -j KUBE-MARK-MASQ
-A KUBE-SVC-DNS -j KUBE-SEP-DNS1
-A KUBE-SEP-DNS1 -s 10.42.1.5/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-DNS1 -p udp -m udp -j DNAT --to-destination 10.42.1.5:53
COMMIT
"""  # noqa: E501


def run(*argv: str, input: str | None = None) -> str:
    done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


def in_ns(ns: str, *argv: str, input: str | None = None) -> str:
    return run("ip", "netns", "exec", ns, *argv, input=input)


def sysctl(ns: str, path: str, value: int) -> None:
    in_ns(ns, "sh", "-c", f"echo {value} > /proc/sys/{path}")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"npfacts-{uuid.uuid4().hex[:8]}"
    run("ip", "netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=20)


@pytest.fixture
def node_ns(netns: str) -> str:
    """A flannel-like node: eth0 (MTU 1450) under flannel.1 (VXLAN 1, port 8472, MTU 1400), cni0, two peers of
    which one (10.42.2.0/24) has its route and neighbour but no FDB entry."""
    ns = netns
    for command in (
        "link set lo up",
        "link add eth0 mtu 1450 type veth peer name ulpeer0 mtu 1450",
        "link set ulpeer0 up",
        "link set eth0 up",
        "addr add 192.168.77.1/24 dev eth0",
        "link add flannel.1 mtu 1400 type vxlan id 1 dstport 8472 dev eth0 local 192.168.77.1 nolearning",
        "link set flannel.1 up",
        "addr add 10.42.0.0/32 dev flannel.1",
        "link add cni0 mtu 1400 type bridge",
        "link set cni0 up",
        "addr add 10.42.0.1/24 dev cni0",
        "route add default via 192.168.77.254 dev eth0",
        "route add 10.42.1.0/24 via 10.42.1.0 dev flannel.1 onlink",
        "neigh replace 10.42.1.0 lladdr 02:00:00:00:01:01 dev flannel.1 nud permanent",
        "route add 10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink",
        "neigh replace 10.42.2.0 lladdr 02:00:00:00:02:01 dev flannel.1 nud permanent",
    ):
        run("ip", "-n", ns, *command.split())
    in_ns(ns, "bridge", "fdb", "append", "02:00:00:00:01:01", "dev", "flannel.1", "dst", "192.168.77.2")
    in_ns(ns, "ethtool", "-K", "flannel.1", "tx-checksum-ip-generic", "off")
    sysctl(ns, "net/ipv4/ip_forward", 1)
    sysctl(ns, "net/ipv4/conf/all/rp_filter", 0)
    sysctl(ns, "net/ipv4/conf/eth0/rp_filter", 2)
    sysctl(ns, "net/ipv4/conf/flannel.1/rp_filter", 1)
    sysctl(ns, "net/bridge/bridge-nf-call-iptables", 0)
    in_ns(ns, "iptables-nft-restore", input=KUBE_NAT)
    in_ns(ns, "iptables-legacy", "-N", "ufw-before-forward")
    in_ns(ns, "iptables-legacy", "-A", "FORWARD", "-j", "ufw-before-forward")
    return ns


def read(ns: str) -> NodeFacts:
    return read_node_facts([DNS, EMPTY_SERVICE, NOT_A_SERVICE], netns=ns)


def test_overlay_link_mtus_and_the_50_byte_gap_are_read(node_ns: str) -> None:
    overlay = read(node_ns).overlay
    assert isinstance(overlay, OverlayFacts)
    (link,) = overlay.vxlan
    assert (link.name, link.mtu, link.up) == ("flannel.1", 1400, True)
    assert (link.vni, link.port, link.local) == (1, 8472, "192.168.77.1")
    assert (link.underlay, link.underlay_mtu, link.underlay_up) == ("eth0", 1450, True)
    assert link.mtu_gap == 50
    assert (overlay.bridge_mtu, overlay.bridge_up) == (1400, True)


def test_offload_state_follows_ethtool(node_ns: str) -> None:
    assert read(node_ns).offload == OffloadFacts(tx_checksum_ip_generic={"flannel.1": False})
    in_ns(node_ns, "ethtool", "-K", "flannel.1", "tx-checksum-ip-generic", "on")
    assert read(node_ns).offload == OffloadFacts(tx_checksum_ip_generic={"flannel.1": True})


def test_each_peer_route_reports_its_neighbour_and_fdb_entry(node_ns: str) -> None:
    routes = read(node_ns).routes
    assert isinstance(routes, RouteFacts)
    complete, missing_fdb = routes.peers
    assert (complete.pod_cidr, complete.gateway, complete.device) == ("10.42.1.0/24", "10.42.1.0", "flannel.1")
    assert (complete.neighbour_mac, complete.fdb_dst, complete.complete) == ("02:00:00:00:01:01", "192.168.77.2", True)
    assert (missing_fdb.pod_cidr, missing_fdb.fdb_dst, missing_fdb.complete) == ("10.42.2.0/24", "", False)


def test_sysctls_are_read_from_the_namespace_with_effective_rp_filter(node_ns: str) -> None:
    facts = read(node_ns)
    assert isinstance(facts.sysctl, SysctlFacts)
    assert (facts.sysctl.ip_forward, facts.sysctl.forwarding_all, facts.sysctl.br_netfilter_loaded) == (1, 1, True)
    assert dict(facts.sysctl.rp_filter) == {"cni0": 0, "eth0": 2, "flannel.1": 1}
    sysctl(node_ns, "net/ipv4/conf/all/rp_filter", 2)  # "all" raises every interface: effective = max
    assert dict(read(node_ns).sysctl.rp_filter) == {"cni0": 2, "eth0": 2, "flannel.1": 2}  # type: ignore[union-attr]
    assert facts.bridge_netfilter == BridgeNetfilterFacts(call_iptables=0)


def test_conntrack_stats_equal_a_direct_parse_of_the_live_file(node_ns: str) -> None:
    # A few tracked UDP datagrams so the counters are not all zero (the nat table makes conntrack track).
    send = "import socket; s = socket.socket(2, 2); [s.sendto(b'x', ('127.0.0.1', 9)) for _ in range(3)]"
    in_ns(node_ns, PYTHON, "-c", send)
    facts = read(node_ns).conntrack
    live = in_ns(node_ns, "cat", "/proc/net/stat/nf_conntrack").splitlines()
    header = live[0].split()
    expected = {name: sum(int(row.split()[i], 16) for row in live[1:]) for i, name in enumerate(header)}
    assert isinstance(facts, ConntrackFacts)
    assert facts.stats == {name: value for name, value in expected.items() if name != "entries"}
    assert facts.max == int(in_ns(node_ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_max"))
    assert facts.count == int(in_ns(node_ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"))


def test_snmp_counters_are_read(node_ns: str) -> None:
    snmp = read(node_ns).snmp
    assert isinstance(snmp, SnmpFacts)
    live = parse_proc_pairs(in_ns(node_ns, "cat", "/proc/net/snmp"))
    assert snmp.udp_in_csum_errors == live[("Udp", "InCsumErrors")]
    assert snmp.ip_frag_fails == live[("Ip", "FragFails")]


def test_iptables_backends_hook_and_dnat_paths(node_ns: str) -> None:
    facts = read(node_ns)
    nft, legacy = facts.iptables_nft, facts.iptables_legacy
    assert isinstance(nft, IptablesFacts) and isinstance(legacy, IptablesFacts)
    assert dict(nft.nat_hook) == {"PREROUTING": True, "OUTPUT": True}
    assert dict(nft.dnat) == {DNS: True, EMPTY_SERVICE: False, NOT_A_SERVICE: False}
    assert (nft.kube_chains, nft.ufw_chains, nft.rules) == (5, 0, 9)
    # The split-backend signature (C2): KUBE-* chains in nft, ufw chains in legacy.
    assert (legacy.kube_chains, legacy.ufw_chains, legacy.rules) == (0, 1, 1)
    assert dict(legacy.nat_hook) == {"PREROUTING": False, "OUTPUT": False}


def test_deleting_the_prerouting_jump_shows_the_hook_missing(node_ns: str) -> None:
    in_ns(node_ns, "iptables-nft", "-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment",
          "kubernetes service portals", "-j", "KUBE-SERVICES")  # fmt: skip
    nft = read(node_ns).iptables_nft
    assert isinstance(nft, IptablesFacts)
    assert dict(nft.nat_hook) == {"PREROUTING": False, "OUTPUT": True}


def test_reading_this_namespace_in_a_subprocess_matches_reading_it_by_name(node_ns: str) -> None:
    script = (
        "from exporter.node.readers import read_node_facts; "
        "f = read_node_facts(); print(f.overlay.vxlan[0].mtu_gap, f.offload.tx_checksum_ip_generic['flannel.1'])"
    )
    assert in_ns(node_ns, PYTHON, "-c", script).split() == ["50", "False"]


UNPRIVILEGED_READ = """
import json
from exporter.node.facts import Unavailable
from exporter.node.readers import read_node_facts
facts = read_node_facts()
print(json.dumps({s.value: f.reason if isinstance(f, Unavailable) else None for s, f in facts.by_source().items()}))
"""


def test_without_privileges_iptables_is_unavailable_not_healthy(node_ns: str) -> None:
    out = in_ns(
        node_ns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
        PYTHON, "-c", UNPRIVILEGED_READ,
    )  # fmt: skip
    reasons = json.loads(out)
    assert reasons["iptables_nft"] and "root" in reasons["iptables_nft"]
    assert reasons["iptables_legacy"] and "Permission denied" in reasons["iptables_legacy"]
    # Netlink, ethtool and /proc stay readable to anyone: those sources still report.
    assert reasons["overlay"] is None and reasons["offload"] is None and reasons["conntrack"] is None


def test_a_pod_namespace_has_no_overlay_and_says_so(netns: str) -> None:
    run("ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "host0")
    run("ip", "-n", netns, "link", "set", "eth0", "up")
    run("ip", "-n", netns, "addr", "add", "10.42.0.9/24", "dev", "eth0")
    run("ip", "-n", netns, "route", "add", "default", "via", "10.42.0.1")
    facts = read(netns)
    for absent in (facts.overlay, facts.offload, facts.routes):
        assert absent == Unavailable("no VXLAN link in this network namespace")
    assert isinstance(facts.sysctl, SysctlFacts) and set(facts.sysctl.rp_filter) == {"eth0"}


def test_a_missing_namespace_makes_every_source_unavailable() -> None:
    facts = read_node_facts(netns=f"npfacts-missing-{uuid.uuid4().hex[:8]}")
    assert all(isinstance(fact, Unavailable) for fact in facts.by_source().values())
    assert not any(name.startswith("npfacts-missing") for name in os.listdir("/run/netns"))


def test_without_br_netfilter_the_bridge_source_says_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ipv4" / "conf" / "all").mkdir(parents=True)
    for name, value in {"ip_forward": "1", "conf/all/forwarding": "1", "conf/all/rp_filter": "0"}.items():
        (tmp_path / "ipv4" / name).write_text(value + "\n")
    monkeypatch.setattr(readers, "PROC_SYS_NET", tmp_path)  # a /proc/sys/net tree without net/bridge
    unavailable = readers.read_bridge_netfilter()
    assert isinstance(unavailable, Unavailable) and unavailable.reason.startswith("br_netfilter not loaded")
    sysctls = readers.read_sysctl([])
    assert isinstance(sysctls, SysctlFacts) and sysctls.br_netfilter_loaded is False


# --- parsers, on text from other kernels and hand-written rule sets ---------------------------------------------

OLD_KERNEL_STAT = """entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000001a  00000000 00000010 00000000 00000002 00000000 00000000 00000000 00000000 00000001 00000003 00000000 00000000  00000000 00000000 00000000 0000000a
0000001a  00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 0000000f 00000000 00000000 00000000  00000000 00000000 00000000 00000000
"""  # noqa: E501


def test_conntrack_stat_columns_come_from_the_header() -> None:
    stats = parse_conntrack_stat(OLD_KERNEL_STAT)
    assert stats["insert_failed"] == 16 and stats["drop"] == 3 and stats["found"] == 17
    assert stats["searched"] == 0 and "clashres" not in stats and "entries" not in stats  # entries is not per CPU


def test_a_conntrack_row_not_matching_the_header_is_an_error() -> None:
    with pytest.raises(ValueError, match="header has 2"):
        parse_conntrack_stat("entries found\n00000001 00000002 00000003\n")


def test_negated_destinations_and_other_protocols_do_not_count_as_dnat() -> None:
    text = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-A - [0:0]
-A KUBE-SERVICES ! -d 10.43.0.30/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-A
-A KUBE-SERVICES -d 10.43.0.31/32 -p udp -m udp --dport 80 -j KUBE-SVC-A
-A KUBE-SVC-A -p tcp -j DNAT --to-destination 10.42.1.7:80
COMMIT
"""
    facts = iptables_facts(text, [ClusterIPPort("10.43.0.30", 80), ClusterIPPort("10.43.0.31", 80)])
    assert not any(facts.dnat.values())
    assert len(parse_save(text)["nat"].chains["KUBE-SERVICES"]) == 2


def test_a_jump_loop_ends() -> None:
    text = "*nat\n-A KUBE-SERVICES -d 10.43.0.40/32 -p tcp --dport 80 -j LOOP\n-A LOOP -j LOOP\nCOMMIT\n"
    assert iptables_facts(text, [ClusterIPPort("10.43.0.40", 80)]).dnat == {ClusterIPPort("10.43.0.40", 80): False}


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [("cluster_ip", {"ip": "10.43.0.x", "port": 80}), ("port", {"ip": "10.43.0.1", "port": 0}),
     ("protocol", {"ip": "10.43.0.1", "port": 80, "protocol": "icmp"})],
)  # fmt: skip
def test_bad_cluster_ip_ports_name_the_field(field: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        ClusterIPPort(**kwargs)  # type: ignore[arg-type]
