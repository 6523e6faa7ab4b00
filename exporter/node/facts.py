"""Node facts as frozen dataclasses: one per fact source, plus :class:`Unavailable` and the snapshot of all.

Every field is what the kernel reported, not a verdict: the localizer and the alerts decide what is bad.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Source(StrEnum):
    """The fact sources, each read (and reported up or unavailable) on its own. A closed set: label values."""

    OVERLAY = "overlay"  # VXLAN links, their underlay, cni0 (pyroute2)
    OFFLOAD = "offload"  # tx-checksum-ip-generic on each VXLAN link (pyroute2.ethtool)
    ROUTES = "routes"  # per-peer pod-CIDR route, neighbour and FDB entry (pyroute2)
    SYSCTL = "sysctl"  # ip_forward, forwarding, rp_filter (/proc/sys)
    BRIDGE_NETFILTER = "bridge_netfilter"  # bridge-nf-call-iptables; unavailable when br_netfilter is not loaded
    CONNTRACK = "conntrack"  # nf_conntrack_count/_max and /proc/net/stat/nf_conntrack
    SNMP = "snmp"  # /proc/net/snmp and /proc/net/netstat
    IPTABLES_LEGACY = "iptables_legacy"  # iptables-legacy-save
    IPTABLES_NFT = "iptables_nft"  # iptables-nft-save


@dataclass(frozen=True)
class Unavailable:
    """A fact source that could not be read, and why. Never to be mistaken for a healthy reading."""

    reason: str


@dataclass(frozen=True)
class VxlanLink:
    name: str
    ifindex: int
    mtu: int
    up: bool  # administratively up and operstate UP or UNKNOWN (what virtual devices report when fine)
    vni: int | None
    port: int | None  # UDP destination port (flannel: 8472)
    local: str  # local VTEP address, "" when not set
    underlay: str  # name of the IFLA_VXLAN_LINK device, "" when the link is not bound to one
    underlay_mtu: int | None  # None when there is no underlay device in this namespace
    underlay_up: bool | None

    @property
    def mtu_gap(self) -> int | None:
        """Underlay MTU minus overlay MTU: VXLAN over IPv4 needs 50 bytes of headroom."""
        return None if self.underlay_mtu is None else self.underlay_mtu - self.mtu


@dataclass(frozen=True)
class OverlayFacts:
    vxlan: tuple[VxlanLink, ...]  # never empty: no VXLAN link at all is Unavailable
    bridge_mtu: int | None  # cni0's MTU, None when this namespace has no cni0
    bridge_up: bool | None


@dataclass(frozen=True)
class OffloadFacts:
    tx_checksum_ip_generic: Mapping[str, bool]  # VXLAN device → feature enabled


@dataclass(frozen=True)
class PeerRoute:
    """A flannel-style route to another node's pod CIDR and what makes it work."""

    device: str  # the VXLAN device the route leaves by
    pod_cidr: str  # e.g. 10.42.1.0/24
    gateway: str  # e.g. 10.42.1.0: the peer's VTEP address on the overlay
    neighbour_mac: str  # permanent neighbour entry for the gateway, "" when missing
    fdb_dst: str  # underlay address of the FDB entry for that MAC (the peer node's IP), "" when missing

    @property
    def complete(self) -> bool:
        return bool(self.neighbour_mac and self.fdb_dst)


@dataclass(frozen=True)
class RouteFacts:
    peers: tuple[PeerRoute, ...]  # sorted by (device, pod_cidr)


@dataclass(frozen=True)
class SysctlFacts:
    ip_forward: int
    forwarding_all: int  # net.ipv4.conf.all.forwarding
    br_netfilter_loaded: bool  # /proc/sys/net/bridge exists only while br_netfilter is loaded
    rp_filter: Mapping[str, int]  # device → effective rp_filter, max(conf.all, conf.<device>)


@dataclass(frozen=True)
class BridgeNetfilterFacts:
    call_iptables: int  # net.bridge.bridge-nf-call-iptables


# The /proc/net/stat/nf_conntrack columns exported: monotonic counters that tell the insert race (C7a) and a
# full table (C7b) apart. A closed set so the `stat` label stays bounded; a column the kernel lacks is absent.
CONNTRACK_STATS = (
    "found",
    "invalid",
    "insert",
    "insert_failed",
    "drop",
    "early_drop",
    "icmp_error",
    "clashres",
    "search_restart",
)


@dataclass(frozen=True)
class ConntrackFacts:
    count: int
    max: int
    stats: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # column → sum over CPUs


@dataclass(frozen=True)
class SnmpFacts:
    udp_in_csum_errors: int
    ip_frag_fails: int
    reverse_path_filter_drops: int | None  # TcpExt IPReversePathFilter, None when the kernel lacks it


@dataclass(frozen=True, order=True)
class ClusterIPPort:
    """A Service ClusterIP and port whose kube-proxy DNAT rule is looked for."""

    ip: str
    port: int
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.ip)
        except ValueError:
            raise ValueError(f"cluster_ip: {self.ip!r} is not an IP address") from None
        if not 0 < self.port < 65536:
            raise ValueError(f"port: {self.port} is not a port number (1-65535)")
        if self.protocol not in ("tcp", "udp", "sctp"):
            raise ValueError(f"protocol: {self.protocol!r} is not one of tcp, udp, sctp")


@dataclass(frozen=True)
class IptablesRule:
    """One `-A` line of `iptables-save -c`: its chain, options, and packet counter (None without -c)."""

    chain: str
    options: Mapping[str, str]  # option → value, for options not preceded by "!"
    negated: frozenset[str] = frozenset()  # options preceded by "!"
    text: str = ""  # the rule as saved, without its counters: what evidence quotes
    packets: int | None = None

    @property
    def target(self) -> str:
        return self.options.get("-j") or self.options.get("-g") or ""


@dataclass(frozen=True)
class IptablesFacts:
    """What one iptables backend (legacy or nft) holds."""

    rules: int  # rules in all tables
    kube_chains: int  # chains named KUBE-*
    ufw_chains: int  # chains named ufw-*/ufw6-*
    nat_hook: Mapping[str, bool]  # "PREROUTING"/"OUTPUT" → jumps to KUBE-SERVICES in the nat table
    dnat: Mapping[ClusterIPPort, bool]  # probed ClusterIP:port → a KUBE-SERVICES path ends in DNAT
    # the parsed tables (table → chain → rules in order) and the built-in chains' policies ("filter/FORWARD" →
    # "DROP"), for following a probe's packet through them (exporter/diagnose/netfilter.py)
    tables: Mapping[str, Mapping[str, tuple[IptablesRule, ...]]] = field(default_factory=dict, compare=False)
    policies: Mapping[str, str] = field(default_factory=dict, compare=False)


Fact = (
    OverlayFacts
    | OffloadFacts
    | RouteFacts
    | SysctlFacts
    | BridgeNetfilterFacts
    | ConntrackFacts
    | SnmpFacts
    | IptablesFacts
)


@dataclass(frozen=True)
class NodeFacts:
    """One reading of every source. Each field is the fact or why it could not be read."""

    overlay: OverlayFacts | Unavailable
    offload: OffloadFacts | Unavailable
    routes: RouteFacts | Unavailable
    sysctl: SysctlFacts | Unavailable
    bridge_netfilter: BridgeNetfilterFacts | Unavailable
    conntrack: ConntrackFacts | Unavailable
    snmp: SnmpFacts | Unavailable
    iptables_legacy: IptablesFacts | Unavailable
    iptables_nft: IptablesFacts | Unavailable
    read_at: float  # Unix time the reading started
    read_seconds: float  # how long the reading took

    def by_source(self) -> dict[Source, Fact | Unavailable]:
        return {source: getattr(self, source.value) for source in Source}
