"""The latest node-facts snapshot as ``netpath_node_*`` metrics, a custom collector on the registry it is given.

A source that could not be read renders only ``netpath_node_fact_source_up{source=...} 0`` and none of its
values: a missing conntrack reading must not look like an empty, healthy conntrack table. The names and labels
are part of the Prometheus contract in docs/metrics.md ("Node facts").
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .facts import (
    CONNTRACK_STATS,
    BridgeNetfilterFacts,
    ConntrackFacts,
    IptablesFacts,
    NodeFacts,
    OffloadFacts,
    OverlayFacts,
    RouteFacts,
    SnmpFacts,
    Source,
    SysctlFacts,
    Unavailable,
)
from .readers import BRIDGE

BACKENDS = {Source.IPTABLES_LEGACY: "legacy", Source.IPTABLES_NFT: "nft"}


class NodeFactsMetrics(Collector):
    """Renders the snapshot last passed to :meth:`update` (the refresher's ``on_snapshot``)."""

    def __init__(self, registry: CollectorRegistry, *, source_node: str) -> None:
        self._source_node = source_node
        self._snapshot: NodeFacts | None = None  # replaced whole, never mutated: a scrape reads one snapshot
        registry.register(self)

    def update(self, snapshot: NodeFacts) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: which families appear depends on which sources were readable

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        if snapshot is None:
            return  # not read yet: no facts rather than facts that look healthy
        node = self._source_node
        yield from self._meta(node, snapshot)
        if isinstance(snapshot.overlay, OverlayFacts):
            yield from _overlay(node, snapshot.overlay)
        if isinstance(snapshot.offload, OffloadFacts):
            yield from _offload(node, snapshot.offload)
        if isinstance(snapshot.routes, RouteFacts):
            yield from _routes(node, snapshot.routes)
        if isinstance(snapshot.sysctl, SysctlFacts):
            yield from _sysctl(node, snapshot.sysctl)
        if isinstance(snapshot.bridge_netfilter, BridgeNetfilterFacts):
            yield from _bridge_netfilter(node, snapshot.bridge_netfilter)
        if isinstance(snapshot.conntrack, ConntrackFacts):
            yield from _conntrack(node, snapshot.conntrack)
        if isinstance(snapshot.snmp, SnmpFacts):
            yield from _snmp(node, snapshot.snmp)
        yield from _iptables(node, snapshot)

    def _meta(self, node: str, snapshot: NodeFacts) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "netpath_node_fact_source_up",
            "1 if the node fact source was readable at the last refresh, 0 if unavailable (its values are absent).",
            labels=["source_node", "source"],
        )
        for source, fact in snapshot.by_source().items():
            up.add_metric([node, source.value], 0 if isinstance(fact, Unavailable) else 1)
        read_at = GaugeMetricFamily(
            "netpath_node_facts_last_refresh_timestamp_seconds",
            "Unix time the node facts were last read.",
            labels=["source_node"],
        )
        read_at.add_metric([node], snapshot.read_at)
        duration = GaugeMetricFamily(
            "netpath_node_facts_refresh_duration_seconds",
            "How long the last reading of all node facts took.",
            labels=["source_node"],
        )
        duration.add_metric([node], snapshot.read_seconds)
        yield from (up, read_at, duration)


def _overlay(node: str, facts: OverlayFacts) -> Iterator[Metric]:
    labels = ["source_node", "device", "role"]
    mtu = GaugeMetricFamily("netpath_node_link_mtu_bytes", "MTU of an overlay-relevant link.", labels=labels)
    up = GaugeMetricFamily("netpath_node_link_up", "1 if the link is up (admin and oper state).", labels=labels)
    gap = GaugeMetricFamily(
        "netpath_node_overlay_mtu_gap_bytes",
        "Underlay MTU minus VXLAN MTU; VXLAN over IPv4 needs at least 50.",
        labels=["source_node", "device"],
    )
    info = GaugeMetricFamily(
        "netpath_node_vxlan_info",
        "Always 1; a VXLAN link's underlay device, local VTEP address, UDP port and VNI as labels.",
        labels=["source_node", "device", "underlay", "local", "port", "vni"],
    )
    for link in facts.vxlan:
        mtu.add_metric([node, link.name, "overlay"], link.mtu)
        up.add_metric([node, link.name, "overlay"], 1 if link.up else 0)
        if link.underlay_mtu is not None:
            mtu.add_metric([node, link.underlay, "underlay"], link.underlay_mtu)
            up.add_metric([node, link.underlay, "underlay"], 1 if link.underlay_up else 0)
        if link.mtu_gap is not None:
            gap.add_metric([node, link.name], link.mtu_gap)
        info.add_metric([node, link.name, link.underlay, link.local, _text(link.port), _text(link.vni)], 1)
    if facts.bridge_mtu is not None:
        mtu.add_metric([node, BRIDGE, "bridge"], facts.bridge_mtu)
        up.add_metric([node, BRIDGE, "bridge"], 1 if facts.bridge_up else 0)
    yield from (mtu, up, gap, info)


def _offload(node: str, facts: OffloadFacts) -> Iterator[Metric]:
    offload = GaugeMetricFamily(
        "netpath_node_vxlan_tx_checksum_offload",
        "1 if tx-checksum-ip-generic is on for the VXLAN link (with the fwmark masquerade bug: bad UDP checksums).",
        labels=["source_node", "device"],
    )
    for device, enabled in sorted(facts.tx_checksum_ip_generic.items()):
        offload.add_metric([node, device], 1 if enabled else 0)
    yield offload


def _routes(node: str, facts: RouteFacts) -> Iterator[Metric]:
    routes = GaugeMetricFamily(
        "netpath_node_overlay_peer_routes",
        "Routes to other nodes' pod CIDRs via the VXLAN link.",
        labels=["source_node", "device"],
    )
    incomplete = GaugeMetricFamily(
        "netpath_node_overlay_peer_routes_incomplete",
        "Of those routes, how many lack their neighbour entry or FDB entry (traffic to that node is lost).",
        labels=["source_node", "device"],
    )
    peer = GaugeMetricFamily(
        "netpath_node_overlay_peer",
        "1 if the route to this pod CIDR has its neighbour and FDB entry, else 0; vtep_dst is the FDB's underlay IP.",
        labels=["source_node", "device", "pod_cidr", "vtep_dst"],
    )
    counts: dict[str, list[int]] = {}
    for p in facts.peers:
        count = counts.setdefault(p.device, [0, 0])
        count[0] += 1
        count[1] += 0 if p.complete else 1
        peer.add_metric([node, p.device, p.pod_cidr, p.fdb_dst], 1 if p.complete else 0)
    for device, (total, missing) in sorted(counts.items()):
        routes.add_metric([node, device], total)
        incomplete.add_metric([node, device], missing)
    yield from (routes, incomplete, peer)


def _sysctl(node: str, facts: SysctlFacts) -> Iterator[Metric]:
    ip_forward = GaugeMetricFamily("netpath_node_ip_forward", "net.ipv4.ip_forward.", labels=["source_node"])
    ip_forward.add_metric([node], facts.ip_forward)
    forwarding = GaugeMetricFamily(
        "netpath_node_ipv4_forwarding_all", "net.ipv4.conf.all.forwarding.", labels=["source_node"]
    )
    forwarding.add_metric([node], facts.forwarding_all)
    loaded = GaugeMetricFamily(
        "netpath_node_br_netfilter_loaded",
        "1 if br_netfilter is loaded (/proc/sys/net/bridge exists); 0: bridged traffic bypasses iptables.",
        labels=["source_node"],
    )
    loaded.add_metric([node], 1 if facts.br_netfilter_loaded else 0)
    rp_filter = GaugeMetricFamily(
        "netpath_node_rp_filter",
        "Effective rp_filter, max(conf.all, conf.<device>): 0 off, 1 strict, 2 loose.",
        labels=["source_node", "device"],
    )
    for device, value in sorted(facts.rp_filter.items()):
        rp_filter.add_metric([node, device], value)
    yield from (ip_forward, forwarding, loaded, rp_filter)


def _bridge_netfilter(node: str, facts: BridgeNetfilterFacts) -> Iterator[Metric]:
    call = GaugeMetricFamily(
        "netpath_node_bridge_nf_call_iptables", "net.bridge.bridge-nf-call-iptables.", labels=["source_node"]
    )
    call.add_metric([node], facts.call_iptables)
    yield call


def _conntrack(node: str, facts: ConntrackFacts) -> Iterator[Metric]:
    entries = GaugeMetricFamily(
        "netpath_node_conntrack_entries", "Connections tracked now (nf_conntrack_count).", labels=["source_node"]
    )
    entries.add_metric([node], facts.count)
    limit = GaugeMetricFamily(
        "netpath_node_conntrack_entries_limit",
        "Size of the conntrack table (nf_conntrack_max).",
        labels=["source_node"],
    )
    limit.add_metric([node], facts.max)
    stats = CounterMetricFamily(
        "netpath_node_conntrack_stat",
        "Conntrack statistics summed over CPUs (/proc/net/stat/nf_conntrack), a closed set of columns.",
        labels=["source_node", "stat"],
    )
    for stat in CONNTRACK_STATS:
        if stat in facts.stats:
            stats.add_metric([node, stat], facts.stats[stat])
    yield from (entries, limit, stats)


def _snmp(node: str, facts: SnmpFacts) -> Iterator[Metric]:
    csum = CounterMetricFamily(
        "netpath_node_udp_in_csum_errors", "UDP datagrams received with a bad checksum (Udp InCsumErrors).",
        labels=["source_node"],
    )  # fmt: skip
    csum.add_metric([node], facts.udp_in_csum_errors)
    frag = CounterMetricFamily(
        "netpath_node_ip_frag_fails", "IP datagrams that needed fragmenting but could not be (Ip FragFails).",
        labels=["source_node"],
    )  # fmt: skip
    frag.add_metric([node], facts.ip_frag_fails)
    yield from (csum, frag)
    if facts.reverse_path_filter_drops is not None:
        rpf = CounterMetricFamily(
            "netpath_node_reverse_path_filter_drops", "Packets dropped by rp_filter (TcpExt IPReversePathFilter).",
            labels=["source_node"],
        )  # fmt: skip
        rpf.add_metric([node], facts.reverse_path_filter_drops)
        yield rpf


def _iptables(node: str, snapshot: NodeFacts) -> Iterator[Metric]:
    rules = GaugeMetricFamily(
        "netpath_node_iptables_rules",
        "Rules held by an iptables backend, all tables.",
        labels=["source_node", "backend"],
    )
    chains = GaugeMetricFamily(
        "netpath_node_iptables_chains",
        "Chains in an iptables backend by owner: kube_proxy (KUBE-*) or ufw (ufw-*).",
        labels=["source_node", "backend", "owner"],
    )
    hook = GaugeMetricFamily(
        "netpath_node_clusterip_nat_hook",
        "1 if the nat chain jumps to KUBE-SERVICES (the ClusterIP NAT hook).",
        labels=["source_node", "backend", "chain"],
    )
    dnat = GaugeMetricFamily(
        "netpath_node_clusterip_dnat_rule",
        "1 if KUBE-SERVICES has a path ending in DNAT for this probed ClusterIP and port.",
        labels=["source_node", "backend", "cluster_ip", "port", "protocol"],
    )
    for source, backend in BACKENDS.items():
        facts = snapshot.by_source()[source]
        if not isinstance(facts, IptablesFacts):
            continue
        rules.add_metric([node, backend], facts.rules)
        chains.add_metric([node, backend, "kube_proxy"], facts.kube_chains)
        chains.add_metric([node, backend, "ufw"], facts.ufw_chains)
        for chain, hooked in facts.nat_hook.items():
            hook.add_metric([node, backend, chain], 1 if hooked else 0)
        for cip, present in facts.dnat.items():
            dnat.add_metric([node, backend, cip.ip, str(cip.port), cip.protocol], 1 if present else 0)
    yield from (rules, chains, hook, dnat)


def _text(value: int | None) -> str:
    return "" if value is None else str(value)
