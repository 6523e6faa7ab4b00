"""One reader per fact source, each returning its fact or :class:`Unavailable`; and the snapshot of them all.

"Here" is the network namespace of the calling *thread*: netlink sockets, ethtool ioctls and /proc/sys/net
files resolve against it, /proc/net is read as /proc/thread-self/net, and child processes inherit it. So
reading another namespace (a node's, for the localizer) is setns(2) in a short-lived thread of its own, which
ends afterwards: a pooled thread must never be left in a foreign namespace.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.ethtool import Ethtool
from pyroute2.netns import setns

from .facts import (
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
    Source,
    SysctlFacts,
    Unavailable,
    VxlanLink,
)
from .iptables import iptables_facts

log = logging.getLogger(__name__)

PROC_SYS_NET = Path("/proc/sys/net")
PROC_NET = Path("/proc/thread-self/net")  # /proc/net follows the process's first thread, not this one
BRIDGE = "cni0"
OFFLOAD_FEATURE = "tx-checksum-ip-generic"
IPTABLES_SAVE = {Source.IPTABLES_LEGACY: "iptables-legacy-save", Source.IPTABLES_NFT: "iptables-nft-save"}

_IFF_UP = 0x1
_NUD_INCOMPLETE, _NUD_FAILED = 0x01, 0x20
_MAIN_TABLE = 254

T = TypeVar("T")


# --- links, routes, neighbours (netlink) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mtu: int
    up: bool
    kind: str
    vxlan: Mapping[str, Any]  # IFLA_INFO_DATA of a VXLAN link, {} otherwise


@dataclass(frozen=True)
class Netlink:
    """One netlink dump of links, IPv4 routes of the main table, IPv4 neighbours and the bridge FDB."""

    links: tuple[Link, ...]
    routes: tuple[Any, ...]
    neighbours: tuple[Any, ...]
    fdb: tuple[Any, ...]

    def by_index(self) -> dict[int, Link]:
        return {link.index: link for link in self.links}


def dump_netlink() -> Netlink:
    with IPRoute() as ipr:
        links = tuple(_link(msg) for msg in ipr.get_links())
        routes = tuple(
            r for r in ipr.get_routes(family=socket.AF_INET) if r.get("RTA_TABLE", r["table"]) == _MAIN_TABLE
        )
        neighbours = tuple(ipr.get_neighbours(family=socket.AF_INET))
        fdb = tuple(ipr.get_neighbours(family=socket.AF_BRIDGE))
    return Netlink(links, routes, neighbours, fdb)


def _link(msg: Any) -> Link:
    info = msg.get("IFLA_LINKINFO")
    kind = (info.get("IFLA_INFO_KIND") if info else None) or ""
    data = (info.get("IFLA_INFO_DATA") if info and kind == "vxlan" else None) or {}
    vxlan = {key: data.get(key) for key in ("IFLA_VXLAN_ID", "IFLA_VXLAN_LINK", "IFLA_VXLAN_LOCAL", "IFLA_VXLAN_PORT")}
    operstate = msg.get("IFLA_OPERSTATE") or ""
    return Link(
        index=msg["index"],
        name=msg.get("IFLA_IFNAME") or "",
        mtu=msg.get("IFLA_MTU") or 0,
        # Virtual devices (vxlan, bridge) report operstate UNKNOWN when working; DOWN/LOWERLAYERDOWN are not up.
        up=bool(msg["flags"] & _IFF_UP) and operstate in ("UP", "UNKNOWN"),
        kind=kind,
        vxlan=vxlan if kind == "vxlan" else {},
    )


def read_overlay(netlink: Netlink) -> OverlayFacts | Unavailable:
    by_index = netlink.by_index()
    vxlan = []
    for link in netlink.links:
        if link.kind != "vxlan":
            continue
        underlay = by_index.get(link.vxlan.get("IFLA_VXLAN_LINK") or 0)
        vxlan.append(
            VxlanLink(
                name=link.name,
                ifindex=link.index,
                mtu=link.mtu,
                up=link.up,
                vni=link.vxlan.get("IFLA_VXLAN_ID"),
                port=link.vxlan.get("IFLA_VXLAN_PORT"),
                local=str(link.vxlan.get("IFLA_VXLAN_LOCAL") or ""),
                underlay=underlay.name if underlay else "",
                underlay_mtu=underlay.mtu if underlay else None,
                underlay_up=underlay.up if underlay else None,
            )
        )
    if not vxlan:
        return Unavailable("no VXLAN link in this network namespace")
    bridge = next((link for link in netlink.links if link.name == BRIDGE), None)
    return OverlayFacts(
        vxlan=tuple(sorted(vxlan, key=lambda v: v.name)),
        bridge_mtu=bridge.mtu if bridge else None,
        bridge_up=bridge.up if bridge else None,
    )


def read_offload(devices: Iterable[str]) -> OffloadFacts | Unavailable:
    names = sorted(devices)
    if not names:
        return Unavailable("no VXLAN link in this network namespace")
    states: dict[str, bool] = {}
    with Ethtool() as ethtool:
        for name in names:
            feature = ethtool.get_features(name).features.get(OFFLOAD_FEATURE)
            if feature is not None:
                states[name] = bool(feature.enable)
    if not states:
        return Unavailable(f"{OFFLOAD_FEATURE} not reported by ethtool for {', '.join(names)}")
    return OffloadFacts(tx_checksum_ip_generic=states)


def read_routes(netlink: Netlink) -> RouteFacts | Unavailable:
    """Routes to other nodes' pod CIDRs via a VXLAN link, each with its neighbour and FDB entry (flannel's
    three per-peer kernel objects: a route, a permanent neighbour for the peer VTEP, an FDB entry to its IP)."""
    by_index = netlink.by_index()
    vxlan = {link.index: link.name for link in netlink.links if link.kind == "vxlan"}
    if not vxlan:
        return Unavailable("no VXLAN link in this network namespace")
    neighbour_mac = {
        (n["ifindex"], n.get("NDA_DST")): str(n.get("NDA_LLADDR") or "")
        for n in netlink.neighbours
        if n["ifindex"] in vxlan and n.get("NDA_LLADDR") and not n["state"] & (_NUD_INCOMPLETE | _NUD_FAILED)
    }
    fdb_dst: dict[tuple[int, str], str] = {}
    for entry in sorted(netlink.fdb, key=lambda e: str(e.get("NDA_DST") or "")):
        if entry["ifindex"] in vxlan and entry.get("NDA_DST") and entry.get("NDA_LLADDR"):
            fdb_dst.setdefault((entry["ifindex"], str(entry.get("NDA_LLADDR")).lower()), str(entry.get("NDA_DST")))
    peers = []
    for route in netlink.routes:
        oif, gateway = route.get("RTA_OIF"), route.get("RTA_GATEWAY")
        if oif not in vxlan or not gateway or route["dst_len"] == 32:
            continue
        mac = neighbour_mac.get((oif, gateway), "")
        peers.append(
            PeerRoute(
                device=by_index[oif].name,
                pod_cidr=f"{route.get('RTA_DST') or '0.0.0.0'}/{route['dst_len']}",
                gateway=str(gateway),
                neighbour_mac=mac,
                fdb_dst=fdb_dst.get((oif, mac.lower()), "") if mac else "",
            )
        )
    return RouteFacts(peers=tuple(sorted(peers, key=lambda p: (p.device, p.pod_cidr))))


def relevant_devices(netlink: Netlink) -> list[str]:
    """Devices whose rp_filter and forwarding matter: VXLAN links, their underlays, cni0, default-route devices.
    Not every veth: a node has one per pod, and the series count must not grow with pods."""
    by_index = netlink.by_index()
    names = set()
    for link in netlink.links:
        if link.kind == "vxlan":
            names.add(link.name)
            underlay = by_index.get(link.vxlan.get("IFLA_VXLAN_LINK") or 0)
            if underlay:
                names.add(underlay.name)
        elif link.name == BRIDGE:
            names.add(link.name)
    for route in netlink.routes:
        oif = route.get("RTA_OIF")
        if route["dst_len"] == 0 and oif in by_index:
            names.add(by_index[oif].name)
    return sorted(names)


# --- /proc ----------------------------------------------------------------------------------------------------


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def read_sysctl(devices: Iterable[str]) -> SysctlFacts | Unavailable:
    ipv4 = PROC_SYS_NET / "ipv4"
    rp_all = _read_int(ipv4 / "conf" / "all" / "rp_filter")
    rp_filter = {}
    for device in devices:
        path = ipv4 / "conf" / device / "rp_filter"
        if path.exists():  # the kernel uses max(all, device): "all"=2 makes every interface loose
            rp_filter[device] = max(rp_all, _read_int(path))
    return SysctlFacts(
        ip_forward=_read_int(ipv4 / "ip_forward"),
        forwarding_all=_read_int(ipv4 / "conf" / "all" / "forwarding"),
        br_netfilter_loaded=(PROC_SYS_NET / "bridge").is_dir(),
        rp_filter=rp_filter,
    )


def read_bridge_netfilter() -> BridgeNetfilterFacts | Unavailable:
    path = PROC_SYS_NET / "bridge" / "bridge-nf-call-iptables"
    if not path.exists():
        # The C4 signal itself: bridged pod-to-pod traffic on one node skips iptables, so ClusterIP DNAT replies
        # to a same-node endpoint bypass conntrack's reverse NAT.
        return Unavailable(f"br_netfilter not loaded ({path} absent)")
    return BridgeNetfilterFacts(call_iptables=_read_int(path))


def parse_conntrack_stat(text: str) -> dict[str, int]:
    """/proc/net/stat/nf_conntrack: a header of column names, then one row of hex counters per CPU. Columns
    differ between kernels, so they are taken from the header. `entries` is the table size repeated on every
    row, not a per-CPU count, so it is not summed (nf_conntrack_count is the table size)."""
    lines = text.splitlines()
    if not lines:
        raise ValueError("empty /proc/net/stat/nf_conntrack")
    columns = lines[0].split()
    totals = dict.fromkeys(columns, 0)
    for line in lines[1:]:
        values = line.split()
        if not values:
            continue
        if len(values) != len(columns):
            raise ValueError(f"nf_conntrack stat row has {len(values)} fields, header has {len(columns)}")
        for column, value in zip(columns, values, strict=True):
            totals[column] += int(value, 16)
    totals.pop("entries", None)
    return totals


def read_conntrack() -> ConntrackFacts | Unavailable:
    count_path = PROC_SYS_NET / "netfilter" / "nf_conntrack_count"
    if not count_path.exists():
        return Unavailable(f"nf_conntrack not loaded ({count_path} absent)")
    return ConntrackFacts(
        count=_read_int(count_path),
        max=_read_int(PROC_SYS_NET / "netfilter" / "nf_conntrack_max"),
        stats=parse_conntrack_stat((PROC_NET / "stat" / "nf_conntrack").read_text()),
    )


def parse_proc_pairs(text: str) -> dict[tuple[str, str], int]:
    """/proc/net/snmp and /proc/net/netstat: "Proto: names" then "Proto: values" line pairs."""
    out: dict[tuple[str, str], int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        proto, _, names = header.partition(":")
        vproto, _, numbers = values.partition(":")
        if proto != vproto:
            raise ValueError(f"unpaired lines {proto!r} and {vproto!r}")
        for name, number in zip(names.split(), numbers.split(), strict=True):
            out[(proto, name)] = int(number)
    return out


def read_snmp() -> SnmpFacts | Unavailable:
    snmp = parse_proc_pairs((PROC_NET / "snmp").read_text())
    netstat_path = PROC_NET / "netstat"
    netstat = parse_proc_pairs(netstat_path.read_text()) if netstat_path.exists() else {}
    return SnmpFacts(
        udp_in_csum_errors=snmp[("Udp", "InCsumErrors")],
        ip_frag_fails=snmp[("Ip", "FragFails")],
        reverse_path_filter_drops=netstat.get(("TcpExt", "IPReversePathFilter")),
    )


# --- iptables -------------------------------------------------------------------------------------------------


def read_iptables(source: Source, cluster_ips: Iterable[ClusterIPPort], timeout: float) -> IptablesFacts | Unavailable:
    binary = IPTABLES_SAVE[source]
    path = shutil.which(binary)
    if path is None:
        return Unavailable(f"{binary} not installed")
    try:
        done = subprocess.run(
            # -c: the packet counters, so a rule that drops while probes fail can be named (diagnose/netfilter.py)
            [path, "-c"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Unavailable(f"{binary} timed out after {timeout:g} s")
    if done.returncode != 0:
        first = (done.stderr.strip() or done.stdout.strip()).splitlines()[:1]
        return Unavailable(f"{binary} exited {done.returncode}: {first[0] if first else 'no output'}")
    return iptables_facts(done.stdout, cluster_ips)


# --- the snapshot ---------------------------------------------------------------------------------------------


def _guard(source: Source, read: Callable[[], T | Unavailable]) -> T | Unavailable:
    """Run one reader; any failure becomes Unavailable, so one broken source never hides the others."""
    try:
        return read()
    except PermissionError as error:
        return Unavailable(f"permission denied: {error.filename or error}")
    except Exception as error:  # netlink, ioctl, parse errors: all "cannot read", none may crash the exporter
        log.warning("node fact source %s unavailable: %s", source.value, error)
        return Unavailable(f"{type(error).__name__}: {error}")


def read_here(cluster_ips: Iterable[ClusterIPPort] = (), *, command_timeout: float = 5.0) -> NodeFacts:
    """Read every source in the calling thread's network namespace."""
    started, clock = time.time(), time.monotonic()
    wanted = tuple(cluster_ips)
    netlink = _guard(Source.OVERLAY, dump_netlink)
    if isinstance(netlink, Unavailable):
        overlay: OverlayFacts | Unavailable = netlink
        offload: OffloadFacts | Unavailable = netlink
        routes: RouteFacts | Unavailable = netlink
        devices: list[str] = []
    else:
        overlay = _guard(Source.OVERLAY, lambda: read_overlay(netlink))
        vxlan = [link.name for link in netlink.links if link.kind == "vxlan"]
        offload = _guard(Source.OFFLOAD, lambda: read_offload(vxlan))
        routes = _guard(Source.ROUTES, lambda: read_routes(netlink))
        found = _guard(Source.SYSCTL, lambda: relevant_devices(netlink))
        devices = [] if isinstance(found, Unavailable) else found
    return NodeFacts(
        overlay=overlay,
        offload=offload,
        routes=routes,
        sysctl=_guard(Source.SYSCTL, lambda: read_sysctl(devices)),
        bridge_netfilter=_guard(Source.BRIDGE_NETFILTER, read_bridge_netfilter),
        conntrack=_guard(Source.CONNTRACK, read_conntrack),
        snmp=_guard(Source.SNMP, read_snmp),
        iptables_legacy=_guard(
            Source.IPTABLES_LEGACY, lambda: read_iptables(Source.IPTABLES_LEGACY, wanted, command_timeout)
        ),
        iptables_nft=_guard(Source.IPTABLES_NFT, lambda: read_iptables(Source.IPTABLES_NFT, wanted, command_timeout)),
        read_at=started,
        read_seconds=time.monotonic() - clock,
    )


def unavailable_everywhere(reason: str) -> NodeFacts:
    gone = Unavailable(reason)
    return NodeFacts(
        overlay=gone, offload=gone, routes=gone, sysctl=gone, bridge_netfilter=gone, conntrack=gone, snmp=gone,
        iptables_legacy=gone, iptables_nft=gone, read_at=time.time(), read_seconds=0.0,
    )  # fmt: skip


def read_node_facts(
    cluster_ips: Iterable[ClusterIPPort] = (), *, netns: str | None = None, command_timeout: float = 5.0
) -> NodeFacts:
    """Read every fact source, in this network namespace or in `netns` (a name under /run/netns or a path such
    as /proc/1/ns/net). Blocking; never raises for a source that cannot be read."""
    wanted = tuple(cluster_ips)
    if netns is None:
        return read_here(wanted, command_timeout=command_timeout)
    result: list[NodeFacts] = []

    def in_namespace() -> None:
        try:
            setns(netns, flags=0)  # flags=0: never create a namespace that is not there
        except Exception as error:
            result.append(unavailable_everywhere(f"cannot enter network namespace {netns}: {error}"))
            return
        result.append(read_here(wanted, command_timeout=command_timeout))

    # A thread of its own that ends after reading: its namespace change dies with it.
    thread = threading.Thread(target=in_namespace, name="node-facts-netns", daemon=True)
    thread.start()
    thread.join()
    return result[0] if result else unavailable_everywhere(f"reading network namespace {netns} failed")
