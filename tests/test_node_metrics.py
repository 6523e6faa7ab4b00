"""Node facts as metrics: what is rendered for readable and unavailable sources, the "Node facts" section of
docs/metrics.md against the exposition, promtool, and the refresher."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from types import MappingProxyType

import pytest
from contract import documented, exposed
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.node.facts import (
    CONNTRACK_STATS,
    BridgeNetfilterFacts,
    ClusterIPPort,
    ConntrackFacts,
    IptablesFacts,
    NodeFacts,
    OffloadFacts,
    OverlayFacts,
    PeerRoute,
    RouteFacts,
    SnmpFacts,
    SysctlFacts,
    Unavailable,
    VxlanLink,
)
from exporter.node.metrics import NodeFactsMetrics
from exporter.node.refresh import refresh_forever

DNS = ClusterIPPort("10.43.0.10", 53, "udp")


def iptables(kube: bool) -> IptablesFacts:
    return IptablesFacts(
        rules=9 if kube else 1,
        kube_chains=5 if kube else 0,
        ufw_chains=0 if kube else 1,
        nat_hook={"PREROUTING": kube, "OUTPUT": kube},
        dnat={DNS: kube},
    )


FULL = NodeFacts(
    overlay=OverlayFacts(
        vxlan=(
            VxlanLink(
                name="flannel.1",
                ifindex=4,
                mtu=1400,
                up=True,
                vni=1,
                port=8472,
                local="192.168.77.1",
                underlay="eth0",
                underlay_mtu=1450,
                underlay_up=True,
            ),
        ),
        bridge_mtu=1400,
        bridge_up=True,
    ),
    offload=OffloadFacts(tx_checksum_ip_generic={"flannel.1": True}),
    routes=RouteFacts(
        peers=(
            PeerRoute("flannel.1", "10.42.1.0/24", "10.42.1.0", "02:00:00:00:01:01", "192.168.77.2"),
            PeerRoute("flannel.1", "10.42.2.0/24", "10.42.2.0", "", ""),
        )
    ),
    sysctl=SysctlFacts(ip_forward=1, forwarding_all=1, br_netfilter_loaded=True, rp_filter={"eth0": 2}),
    bridge_netfilter=BridgeNetfilterFacts(call_iptables=1),
    conntrack=ConntrackFacts(
        count=12, max=262144, stats=MappingProxyType({**dict.fromkeys(CONNTRACK_STATS, 3), "chainlength": 7})
    ),
    snmp=SnmpFacts(udp_in_csum_errors=4, ip_frag_fails=0, reverse_path_filter_drops=2),
    iptables_legacy=iptables(kube=False),
    iptables_nft=iptables(kube=True),
    read_at=1_700_000_000.0,
    read_seconds=0.02,
)


def render(snapshot: NodeFacts | None) -> str:
    registry = CollectorRegistry()
    collector = NodeFactsMetrics(registry, source_node="node1")
    if snapshot is not None:
        collector.update(snapshot)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset({"source_node": "node1", **labels}.items())))


def test_readable_sources_render_their_facts() -> None:
    text = render(FULL)
    assert value(text, "netpath_node_overlay_mtu_gap_bytes", device="flannel.1") == 50
    assert value(text, "netpath_node_link_mtu_bytes", device="eth0", role="underlay") == 1450
    assert value(text, "netpath_node_link_mtu_bytes", device="cni0", role="bridge") == 1400
    assert value(text, "netpath_node_vxlan_tx_checksum_offload", device="flannel.1") == 1
    assert value(text, "netpath_node_overlay_peer_routes_incomplete", device="flannel.1") == 1
    assert value(text, "netpath_node_overlay_peer", device="flannel.1", pod_cidr="10.42.2.0/24", vtep_dst="") == 0
    assert value(text, "netpath_node_conntrack_stat_total", stat="insert_failed") == 3
    assert value(text, "netpath_node_conntrack_stat_total", stat="chainlength") is None  # not in the closed set
    assert value(text, "netpath_node_udp_in_csum_errors_total") == 4
    dnat = {"cluster_ip": "10.43.0.10", "port": "53", "protocol": "udp"}
    assert value(text, "netpath_node_clusterip_dnat_rule", backend="nft", **dnat) == 1
    assert value(text, "netpath_node_clusterip_dnat_rule", backend="legacy", **dnat) == 0
    assert value(text, "netpath_node_iptables_chains", backend="legacy", owner="ufw") == 1
    assert all(value(text, "netpath_node_fact_source_up", source=s) == 1 for s in ("overlay", "conntrack"))


def test_an_unavailable_source_renders_up_zero_and_no_values() -> None:
    gone = Unavailable("nf_conntrack not loaded")
    text = render(replace(FULL, conntrack=gone, iptables_nft=Unavailable("permission denied")))
    assert value(text, "netpath_node_fact_source_up", source="conntrack") == 0
    assert value(text, "netpath_node_fact_source_up", source="iptables_nft") == 0
    assert not any(name.startswith("netpath_node_conntrack") for name, _ in samples(text))
    assert not any(dict(labels).get("backend") == "nft" for _, labels in samples(text))
    assert value(text, "netpath_node_iptables_rules", backend="legacy") == 1


def test_br_netfilter_not_loaded_is_its_own_signal() -> None:
    snapshot = replace(
        FULL,
        sysctl=SysctlFacts(ip_forward=1, forwarding_all=1, br_netfilter_loaded=False, rp_filter={}),
        bridge_netfilter=Unavailable("br_netfilter not loaded"),
    )
    text = render(snapshot)
    assert value(text, "netpath_node_br_netfilter_loaded") == 0
    assert value(text, "netpath_node_fact_source_up", source="bridge_netfilter") == 0
    assert value(text, "netpath_node_bridge_nf_call_iptables") is None


def test_nothing_is_rendered_before_the_first_reading() -> None:
    assert render(None) == ""


# --- the contract -----------------------------------------------------------------------------------------------


def test_the_docs_section_and_the_exposition_name_the_same_metrics_and_labels() -> None:
    assert exposed(render(FULL)) == documented("Node facts")


def test_every_node_metric_carries_source_node() -> None:
    assert all("source_node" in labels for labels in exposed(render(FULL)).values())


def test_the_exposition_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not installed (Debian package prometheus)")
    check = subprocess.run([promtool, "check", "metrics"], input=render(FULL), capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# --- the refresher, on a real namespace ---------------------------------------------------------------------------


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("builds a network namespace: needs root")
    name = f"npfacts-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=20)


async def test_the_refresher_hands_over_snapshots_on_its_interval(netns: str) -> None:
    snapshots: list[NodeFacts] = []
    got_two = asyncio.Event()

    def on_snapshot(snapshot: NodeFacts) -> None:
        snapshots.append(snapshot)
        if len(snapshots) >= 2:
            got_two.set()

    task = asyncio.create_task(refresh_forever(0.05, on_snapshot, cluster_ips=lambda: [DNS], netns=netns))
    try:
        await asyncio.wait_for(got_two.wait(), timeout=30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    first = snapshots[0]
    assert first.overlay == Unavailable("no VXLAN link in this network namespace")  # an empty namespace
    assert isinstance(first.iptables_nft, IptablesFacts) and dict(first.iptables_nft.dnat) == {DNS: False}
    text = render(snapshots[-1])
    assert value(text, "netpath_node_fact_source_up", source="overlay") == 0
    assert value(text, "netpath_node_fact_source_up", source="sysctl") == 1


async def test_a_bad_interval_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^interval:"):
        await refresh_forever(0, lambda _: None)
