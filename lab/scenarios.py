"""The 504 faults on demand: each scenario breaks one thing the way it breaks on real clusters.

Every scenario is idempotent (breaking twice = breaking once) and reversible (`heal`). Active faults are
recorded in the state dir, so `heal` with no name heals everything, also from another process.
The real-world cause each one stands for is in docs/lab.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import apiserver, netns, network, workloads
from .cluster import apply_rules
from .netns import LabError
from .state import LabState
from .topology import COREDNS, FRONT, Node, Topology


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    per_node: bool  # True: one node (default node2); False: every node unless --node narrows it
    takes_rate: bool = False
    default_rate: float = 0.5
    kind: str = "rules"  # "rules": rendered into iptables; else a custom break/heal below


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "clusterip-nat", "node X: the NAT hook for ClusterIPs (PREROUTING/OUTPUT -> KUBE-SERVICES) is missing", True
        ),
        Scenario("forward-drop-dnat", "node X: the firewall drops forwarded DNATed traffic", True),
        Scenario("dns-clusterip", "node X: only the kube-dns ClusterIP rules are missing", True),
        Scenario("dns-down", "the CoreDNS stand-in (dnsmasq) is stopped", False, kind="dns-down"),
        Scenario("overlay-down", "node X: flannel.1 is down (and its routes gone)", True, kind="overlay-down"),
        Scenario("vxlan-blocked", "node X: the firewall drops VXLAN (UDP 8472) arriving at the node", True),
        Scenario(
            "intermittent-loss",
            "node X: a fraction P of ClusterIP-path (DNATed) packets dropped",
            True,
            takes_rate=True,
        ),
        Scenario(
            "mtu-blackhole",
            "the underlay carries less than flannel.1 sends and frag-needed ICMP is "
            "dropped: small requests pass, large responses stall",
            False,
            kind="mtu-blackhole",
        ),
        Scenario(
            "udp-dns-loss",
            "a fraction P of UDP DNS queries to the kube-dns ClusterIP dropped, TCP DNS "
            "fine (the conntrack insert race)",
            False,
            takes_rate=True,
        ),
        Scenario(
            "bridge-nf-off",
            "node X: bridge-nf-call-iptables=0, so a ClusterIP answered by a pod on the same node fails",
            True,
            kind="bridge-nf-off",
        ),
        Scenario(
            "backend-down",
            "every keybuzz-front replica is stopped: its port refuses, directly and through the Service; 502 at "
            "the ingress",
            False,
            kind="backend-down",
        ),
        Scenario(
            "dns-wrong-answer",
            "CoreDNS (dnsmasq) answers keybuzz-front's name with an address nothing serves (a stale record)",
            False,
            kind="dns-wrong-answer",
        ),
        Scenario(
            "backend-slow",
            "the app answers /slow slower than the ingress's upstream timeout: 504 while every network path is fine",
            False,
            kind="backend-slow",
        ),
    )
}


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise LabError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


def target_nodes(topo: Topology, scenario: Scenario, node: str | None) -> list[Node]:
    if node is not None:
        try:
            return [topo.node(node)]
        except KeyError as exc:
            raise LabError(f"--node: {exc.args[0]}") from None
    if scenario.per_node:
        return [topo.nodes[1] if len(topo.nodes) > 1 else topo.nodes[0]]
    return list(topo.nodes)


def break_(topo: Topology, name: str, node: str | None = None, rate: float | None = None) -> list[str]:
    """Break ``name`` (on ``node``, or its default nodes); returns the nodes it now affects."""
    scenario = get(name)
    if rate is not None and not scenario.takes_rate:
        raise LabError(f"--rate: scenario {name} takes no rate")
    if rate is not None and not 0.0 < rate <= 1.0:
        raise LabError(f"--rate: expected a fraction in (0, 1], got {rate}")
    value = (rate if rate is not None else scenario.default_rate) if scenario.takes_rate else None
    nodes = target_nodes(topo, scenario, node)
    state = LabState.load()
    active = state.faults.setdefault(name, {})
    for n in nodes:
        active[n.name] = value
    state.save()
    _BREAK[scenario.kind](topo, state, nodes)
    return [n.name for n in nodes]


def heal(topo: Topology, name: str | None = None) -> list[str]:
    """Heal one scenario, or every active one; healing what is not broken does nothing."""
    state = LabState.load()
    names = [name] if name is not None else list(state.faults)
    healed = []
    for fault in names:
        scenario = get(fault)
        where = state.faults.pop(fault, {})
        state.save()
        if where:
            _HEAL[scenario.kind](topo, state, [topo.node(n) for n in where])
            healed.append(fault)
    return healed


# --- how each kind breaks and heals ------------------------------------------------------------------------

Action = Callable[[Topology, LabState, list[Node]], None]


def _reapply(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    for n in nodes:
        apply_rules(topo, n, state.node_faults(n.name))


def _overlay_down(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    for n in nodes:
        netns.ip_batch(n.netns, ["link set flannel.1 down"])


def _overlay_up(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    for n in nodes:
        netns.ip_batch(n.netns, ["link set flannel.1 up"])
        # the kernel dropped the routes via flannel.1 when it went down; flanneld would put them back
        network.install_overlay_peers(topo, n)


def _mtu_break(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    network.set_underlay_port_mtu(topo, topo.overlay_mtu, nodes)
    _reapply(topo, state, nodes)
    _forget_path_mtus(topo)


def _forget_path_mtus(topo: Topology) -> None:
    # A path MTU learned before the break (cached per destination for 10 minutes) would let a sender use smaller
    # segments and pass the blackhole; after a heal, a shrunken one would outlive the fault. Start from none.
    for ns in topo.namespaces:
        netns.ip_batch(ns, ["route flush cache"])


def _mtu_heal(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    network.set_underlay_port_mtu(topo, topo.underlay_mtu, nodes)
    _reapply(topo, state, nodes)
    _forget_path_mtus(topo)


def _bridge_nf(value: int) -> Action:
    def act(topo: Topology, state: LabState, nodes: list[Node]) -> None:
        for n in nodes:
            netns.sysctl(n.netns, "net.bridge.bridge-nf-call-iptables", value)
            netns.ns_exec(n.netns, ["conntrack", "-F"], check=False)

    return act


def _not_ready(topo: Topology, app: str, ready: bool) -> None:
    """The API's side of stopping or starting an app's replicas: their readiness probes fail or pass, so the pods
    turn (not) Ready and their endpoints (not) ready — what discovery and a user's kubectl then see."""
    apiserver.Control().set_ready(topo, [p.name for p in topo.pods_of(app)], ready)


def _dns_down(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    workloads.stop_coredns(topo, state)
    _not_ready(topo, COREDNS, False)


def _dns_up(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    if not all(f"dnsmasq/{p.name}" in state.processes for p in topo.pods_of(COREDNS)):
        workloads.stop_coredns(topo, state)
        workloads.start_coredns(topo, state)
    _not_ready(topo, COREDNS, True)


def _front_down(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    workloads.stop_front(topo, state)
    _not_ready(topo, FRONT, False)


def _front_up(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    if not all(f"httpapp/{p.name}" in state.processes for p in topo.pods_of(FRONT)):
        workloads.stop_front(topo, state)
        workloads.start_front(topo, state)
    _not_ready(topo, FRONT, True)


def _dns_wrong(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    workloads.stop_coredns(topo, state)
    workloads.start_coredns(topo, state, wrong=True)


def _dns_right(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    workloads.stop_coredns(topo, state)
    workloads.start_coredns(topo, state)


def _slow_front(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    # The replicas read the file on every /slow request: no restart, so pod-IP probes never see the app go
    # away and the only symptom is the one real slow backends give — 504s at the ingress.
    workloads.slow_delay_file().write_text(f"{workloads.SLOW_DELAY_BROKEN}\n")


def _fast_front(topo: Topology, state: LabState, nodes: list[Node]) -> None:
    workloads.slow_delay_file().unlink(missing_ok=True)


_BREAK: dict[str, Action] = {
    "rules": _reapply,
    "overlay-down": _overlay_down,
    "mtu-blackhole": _mtu_break,
    "bridge-nf-off": _bridge_nf(0),
    "dns-down": _dns_down,
    "backend-slow": _slow_front,
    "backend-down": _front_down,
    "dns-wrong-answer": _dns_wrong,
}
_HEAL: dict[str, Action] = {
    "rules": _reapply,
    "overlay-down": _overlay_up,
    "mtu-blackhole": _mtu_heal,
    "bridge-nf-off": _bridge_nf(1),
    "dns-down": _dns_up,
    "backend-slow": _fast_front,
    "backend-down": _front_up,
    "dns-wrong-answer": _dns_right,
}
