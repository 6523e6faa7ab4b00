"""The rule table: from a picture of every target's window (and the node facts) to verdicts.

Each rule is a function that looks at the failing targets no earlier rule has explained, and returns the
verdicts it is sure of, each naming the targets it explains. Rules run in order of specificity, so a
specific cause suppresses the generic ones it explains (a dead overlay also breaks the ClusterIP and DNS
paths through it; those failures are not a second cause). What is left unexplained is the "unknown" verdict.
docs/diagnosis.md documents every rule, its condition and its precedence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ..model import AnyTarget, DNSTarget, HTTPTarget, PathClass, Perspective, Reason, TCPTarget, Transport, Via
from ..node.facts import (
    BridgeNetfilterFacts,
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
from .causes import CAUSES, Cause
from .window import NO_ANSWER, Health, TargetStatus

VXLAN_OVERHEAD = 50  # bytes a VXLAN-over-IPv4 packet adds; the overlay MTU must leave this much headroom
CONNTRACK_FULL_RATIO = 0.9  # entries / limit at which new connections start to be early-dropped
STALL_REASONS = frozenset(
    {Reason.BODY_TIMEOUT, Reason.SHORT_BODY, Reason.TIMEOUT, Reason.RESPONSE_TIMEOUT, Reason.RESET}
)
SLOW_REASONS = frozenset({Reason.RESPONSE_TIMEOUT, Reason.TIMEOUT})
GATEWAY_TIMEOUT = 504
# A DNS server's own answers that say it is the one failing: an error rcode, nothing, or the wrong record.
DNS_ANSWERS = frozenset(
    {Reason.NXDOMAIN, Reason.SERVFAIL, Reason.DNS_REFUSED, Reason.DNS_ERROR, Reason.NO_ANSWER, Reason.WRONG_ANSWER}
)
# An application's answers that say it is down or not ready: nothing listens (RST), or an HTTP 5xx other
# than 504 (a 504 is a proxy reporting *silence* from its upstream).
BACKEND_DOWN_STATUSES = frozenset({500, 502, 503})


@dataclass(frozen=True)
class Verdict:
    cause: Cause
    summary: str  # the cause in one line, with its particulars ("… towards node3")
    evidence: tuple[str, ...]
    next_steps: tuple[str, ...]
    targets: tuple[str, ...] = ()  # keys ("name/transport") of the failing targets this verdict explains
    peer_nodes: tuple[str, ...] = ()  # nodes the cause is about, when it is about other nodes

    @staticmethod
    def of(
        cause: Cause,
        evidence: Iterable[str],
        targets: Iterable[TargetStatus] = (),
        *,
        summary: str = "",
        peer_nodes: Iterable[str] = (),
    ) -> Verdict:
        info = CAUSES[cause]
        return Verdict(
            cause=cause,
            summary=summary or info.title,
            evidence=tuple(evidence),
            next_steps=info.next_steps,
            targets=tuple(key(s.target) for s in targets),
            peer_nodes=tuple(peer_nodes),
        )


def key(target: AnyTarget) -> str:
    return f"{target.name}/{target.transport.value}"


# --- the node facts, as the rules need them ----------------------------------------------------------------


@dataclass(frozen=True)
class FactsView:
    """The latest node-facts snapshot and the one before it (for counters that must be rising)."""

    current: NodeFacts
    previous: NodeFacts | None = None

    @property
    def node_view(self) -> bool:
        """The facts describe a Kubernetes node's namespace (it has the VXLAN link), not a pod's: only then
        do "no NAT hook" or "bridge-nf-call-iptables=0" mean anything."""
        return isinstance(self.current.overlay, OverlayFacts)

    def fresh_for(self, statuses: Sequence[TargetStatus]) -> bool:
        """Read after these targets started failing, so they describe the broken state."""
        since = [s.failing_since for s in statuses if s.failing_since is not None]
        return not since or self.current.read_at >= min(since)

    def unavailable_reason(self) -> str:
        if not isinstance(self.current.overlay, Unavailable):
            return ""
        return self.current.overlay.reason

    def iptables(self) -> list[tuple[str, IptablesFacts]]:
        out = []
        for name, facts in (("legacy", self.current.iptables_legacy), ("nft", self.current.iptables_nft)):
            if isinstance(facts, IptablesFacts):
                out.append((name, facts))
        return out

    def kube_backends(self) -> list[tuple[str, IptablesFacts]]:
        return [(name, f) for name, f in self.iptables() if f.kube_chains > 0]

    def counter_delta(self, pick: Callable[[NodeFacts], int | None]) -> int | None:
        if self.previous is None:
            return None
        now, before = pick(self.current), pick(self.previous)
        return None if now is None or before is None else now - before


def _conntrack_stat(name: str) -> Callable[[NodeFacts], int | None]:
    def pick(facts: NodeFacts) -> int | None:
        return facts.conntrack.stats.get(name) if isinstance(facts.conntrack, ConntrackFacts) else None

    return pick


def _csum_errors(facts: NodeFacts) -> int | None:
    return facts.snmp.udp_in_csum_errors if isinstance(facts.snmp, SnmpFacts) else None


# --- what every rule sees ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    source_node: str
    perspective: Perspective
    statuses: tuple[TargetStatus, ...]
    facts: FactsView | None = None
    explained: frozenset[str] = field(default_factory=frozenset)
    other_view: tuple[TargetStatus, ...] = ()  # the same targets probed from the other perspective

    def seen_from_other(self, status: TargetStatus) -> TargetStatus | None:
        """The same target as probed from the other perspective (the node's namespace), if it is."""
        wanted = (status.target.name, status.target.transport)
        return next((o for o in self.other_view if (o.target.name, o.target.transport) == wanted), None)

    def unexplained_failing(self) -> list[TargetStatus]:
        return [s for s in self.statuses if s.failing and key(s.target) not in self.explained]

    def service_targets(self) -> list[TargetStatus]:
        """Targets through a Service ClusterIP (kube-proxy NAT on this node)."""
        return [s for s in self.statuses if s.target.via is Via.SERVICE and s.target.path is not PathClass.INGRESS]

    def endpoints(self, service: str) -> list[TargetStatus]:
        """Direct probes of the pods behind `service` (pod IP or DNS to the pod), excluding large-body ones:
        the "does the backend itself answer" contrast for a Service target."""
        if not service:
            return []
        return [
            s
            for s in self.statuses
            if s.target.via is Via.POD and s.target.service == service and not is_large(s.target)
        ]

    @property
    def node_view(self) -> bool:
        return self.facts is not None and self.facts.node_view


def is_large(target: AnyTarget) -> bool:
    return isinstance(target, HTTPTarget) and target.min_body_bytes > 0


def host_of(target: AnyTarget) -> str:
    if isinstance(target, TCPTarget):
        return target.host
    if isinstance(target, DNSTarget):
        return target.server
    return urlsplit(target.url).hostname or ""


def describe(status: TargetStatus) -> str:
    """One target's state as evidence: "svc-front (cluster_ip 10.43.20.10:80): connect_timeout in 3 of 3"."""
    t = status.target
    where = f" → {t.target_node}" if t.target_node else ""
    reasons = status.failure_reasons
    if not reasons:
        typical = status.typical_ok_seconds
        speed = f", {typical * 1000:.1f} ms" if typical is not None else ""
        return f"{t.name} ({t.path.value} {t.transport.value} {t.address}{where}): ok in {len(status.samples)}{speed}"
    what = ", ".join(f"{r.value} ×{n}" for r, n in reasons.most_common())
    codes = sorted({s.http_status for s in status.samples if s.http_status is not None and not s.ok})
    if codes:
        what += f" (HTTP {', '.join(map(str, codes))})"
    if status.syn_retransmits:
        what += f", {status.syn_retransmits} SYN retransmits"
    return (
        f"{t.name} ({t.path.value} {t.transport.value} {t.address}{where}): "
        f"{status.failures} of {len(status.samples)} failed: {what}"
    )


Rule = Callable[[Picture], list[Verdict]]


# --- facts-only rules --------------------------------------------------------------------------------------


def iptables_split(p: Picture) -> list[Verdict]:
    """C2: both iptables backends hold rules, and kube-proxy's and the firewall's chains are not in the same
    one (or kube-proxy's are in both)."""
    if p.facts is None:
        return []
    backends = p.facts.iptables()
    if len(backends) < 2 or not all(f.rules > 0 for _, f in backends):
        return []
    kube = {name for name, f in backends if f.kube_chains > 0}
    ufw = {name for name, f in backends if f.ufw_chains > 0}
    if not (len(kube) == 2 or (kube and ufw and kube != ufw)):
        return []
    evidence = [
        f"iptables-{name}: {f.rules} rules, {f.kube_chains} KUBE-* chains, {f.ufw_chains} ufw chains"
        for name, f in backends
    ]
    explained = [s for s in p.unexplained_failing() if s.target.via is Via.SERVICE]
    evidence += [describe(s) for s in explained]
    return [Verdict.of(Cause.IPTABLES_SPLIT, evidence, explained)]


def conntrack_full(p: Picture) -> list[Verdict]:
    """C7b: the table is (nearly) full, or the kernel is dropping entries to make room."""
    if p.facts is None or not isinstance(p.facts.current.conntrack, ConntrackFacts):
        return []
    ct = p.facts.current.conntrack
    evidence = []
    if ct.max > 0 and ct.count >= CONNTRACK_FULL_RATIO * ct.max:
        evidence.append(f"nf_conntrack_count {ct.count} of nf_conntrack_max {ct.max} ({ct.count / ct.max:.0%})")
    for stat in ("early_drop", "drop"):
        delta = p.facts.counter_delta(_conntrack_stat(stat))
        if delta:
            evidence.append(f"conntrack {stat} rose by {delta} since the previous facts reading")
    if not evidence:
        return []
    explained = p.unexplained_failing()
    evidence += [describe(s) for s in explained]
    return [Verdict.of(Cause.CONNTRACK_FULL, evidence, explained)]


# --- the overlay -------------------------------------------------------------------------------------------


def overlay_down(p: Picture) -> list[Verdict]:
    """C1/C10: every pod-IP probe to node Y fails with silence (all sizes), while pods on other nodes answer;
    or every other node is silent, which puts the fault on this node's side."""
    pod_targets = [
        s
        for s in p.statuses
        if s.target.path is PathClass.POD_IP
        and s.target.via is Via.POD
        and s.target.target_node
        and s.target.target_node != p.source_node
        and s.health is not Health.PENDING
    ]
    remote = sorted({s.target.target_node for s in pod_targets})
    unreachable = []
    for node in remote:
        on_node = [s for s in pod_targets if s.target.target_node == node]
        if (
            all(s.failing for s in on_node)
            and any(s.health is Health.DOWN for s in on_node)
            and all(s.no_answer for s in on_node)
        ):
            unreachable.append(node)
    if not unreachable:
        return []
    everyone = len(unreachable) == len(remote)
    gone = set(unreachable)

    def explained_by_overlay(s: TargetStatus) -> bool:
        t = s.target
        if t.target_node in gone and t.via is Via.POD:
            return True
        if t.via is Via.SERVICE:
            return everyone or any(e.target.target_node in gone for e in p.endpoints(t.service))
        # an ingress controller on an unreachable node is a pod-IP leg to that node
        return t.path is PathClass.INGRESS and (everyone or t.target_node in gone)

    explained = [s for s in p.unexplained_failing() if explained_by_overlay(s)]
    if everyone and len(remote) > 1:
        summary = "Overlay down on this node: no pod on any other node answers"
    else:
        summary = f"Overlay down or VXLAN blocked towards {', '.join(unreachable)}"
    evidence = [
        f"pod-IP probes to {node}: every one fails without an answer; "
        + "; ".join(describe(s) for s in pod_targets if s.target.target_node == node)
        for node in unreachable
    ]
    onset = _onset([s for s in pod_targets if s.target.target_node in gone])
    working = [s for s in pod_targets if s.target.target_node not in gone and s.works_since(onset)]
    if working:
        evidence.append(
            "pods on "
            + ", ".join(sorted({s.target.target_node for s in working}))
            + " answer: "
            + "; ".join(describe(s) for s in working[:3])
        )
    evidence += _overlay_facts(p, [s for s in pod_targets if s.target.target_node in gone])
    return [Verdict.of(Cause.OVERLAY_DOWN, evidence, explained, summary=summary, peer_nodes=unreachable)]


def _overlay_facts(p: Picture, unreachable: list[TargetStatus]) -> list[str]:
    if p.facts is None or not p.node_view:
        return []
    facts = p.facts.current
    out = []
    if isinstance(facts.overlay, OverlayFacts):
        for link in facts.overlay.vxlan:
            if not link.up:
                out.append(f"node facts: {link.name} is down")
            if link.underlay_up is False:
                out.append(f"node facts: {link.name}'s underlay {link.underlay} is down")
            if link.underlay:
                out.append(f"node facts: {link.name} sends via {link.underlay} from {link.local or '(no local)'}")
    if isinstance(facts.routes, RouteFacts):
        for status in unreachable:
            try:
                ip = ipaddress.ip_address(host_of(status.target))
            except ValueError:
                continue
            route = next((r for r in facts.routes.peers if ip in ipaddress.ip_network(r.pod_cidr, strict=False)), None)
            if route is None:
                out.append(f"node facts: no route via the overlay to {ip} (no peer route covers it)")
            elif not route.complete:
                out.append(
                    f"node facts: route to {route.pod_cidr} via {route.device} lacks its "
                    + ("neighbour entry" if not route.neighbour_mac else "FDB entry")
                )
    return sorted(set(out), key=out.index)


# --- large packets -----------------------------------------------------------------------------------------


def mtu_blackhole(p: Picture) -> list[Verdict]:
    """C6: large HTTP responses stall (body_timeout/short_body) where a small probe to the same pod works; or the
    node facts show an overlay MTU without the 50 bytes of VXLAN headroom."""
    stalled = []
    contrast = []
    for status in p.unexplained_failing():
        if not is_large(status.target) or not all(r in STALL_REASONS for r in status.failure_reasons):
            continue
        host = host_of(status.target)
        small = [s for s in p.statuses if not is_large(s.target) and host_of(s.target) == host and s.ok]
        if small:
            stalled.append(status)
            contrast += small
    gaps = []
    if p.facts is not None and isinstance(p.facts.current.overlay, OverlayFacts):
        for link in p.facts.current.overlay.vxlan:
            if link.mtu_gap is not None and link.mtu_gap < VXLAN_OVERHEAD:
                gaps.append(
                    f"node facts: {link.name} MTU {link.mtu} vs underlay {link.underlay} MTU {link.underlay_mtu}: "
                    f"{link.mtu_gap} bytes of headroom, VXLAN needs {VXLAN_OVERHEAD}"
                )
    if not stalled and not gaps:
        return []
    evidence = [f"large response stalls: {describe(s)}" for s in stalled]
    evidence += [f"small request to the same pod works: {describe(s)}" for s in contrast[:3]]
    evidence += gaps
    return [Verdict.of(Cause.MTU_BLACKHOLE, evidence, stalled)]


# --- DNS ---------------------------------------------------------------------------------------------------


def coredns_down(p: Picture) -> list[Verdict]:
    """DNS through the Service and straight to every CoreDNS pod fails (pods on reachable nodes)."""
    failing = p.unexplained_failing()
    direct = [s for s in p.statuses if isinstance(s.target, DNSTarget) and s.target.via is Via.POD]
    probed = [s for s in direct if s.health is not Health.PENDING]
    if not probed or not all(s.failing for s in probed):
        return []
    if not any(key(s.target) not in p.explained for s in probed):
        return []
    if any(r in DNS_ANSWERS for s in probed for r in s.failure_reasons):
        return []  # it answers, wrongly: dns_bad_answer's case, not a dead server
    services = {s.target.service for s in probed}
    via_service = [
        s
        for s in failing
        if isinstance(s.target, DNSTarget)
        and s.target.via is Via.SERVICE
        and (s.target.service in services or not s.target.service)
    ]
    explained = [s for s in probed if key(s.target) not in p.explained] + via_service
    evidence = [f"straight to the CoreDNS pod: {describe(s)}" for s in probed]
    evidence += [f"via the Service: {describe(s)}" for s in via_service]
    refused = [s for s in probed if Reason.REFUSED in s.failure_reasons]
    if refused:
        evidence.append("connection refused / port unreachable: nothing listens on port 53 there")
    nodes = {s.target.target_node for s in probed if s.target.target_node}
    onset = _onset(probed)
    peers_ok = [
        s
        for s in p.statuses
        if s.target.path is PathClass.POD_IP and s.target.target_node in nodes and s.works_since(onset)
    ]
    if peers_ok:
        evidence.append("other pods on those nodes answer, so the pod network works: " + describe(peers_ok[0]))
    if not refused and not peers_ok:
        return []  # silence only, and nothing shows the path to those pods works: not proof of a dead server
    return [Verdict.of(Cause.COREDNS_DOWN, evidence, explained)]


def dns_bad_answer(p: Picture) -> list[Verdict]:
    """CoreDNS answers, but with an error rcode (SERVFAIL, REFUSED, NXDOMAIN), no record or the wrong one —
    straight from its pods, and every failing DNS target fails that way: an answer, so no packet path is at
    fault."""
    failing = [s for s in p.unexplained_failing() if isinstance(s.target, DNSTarget)]
    direct = [s for s in failing if s.target.via is Via.POD]
    if not direct or not all(_dns_answers_only(s) for s in failing):
        return []
    evidence = [f"straight to the CoreDNS pod: {describe(s)}" for s in direct]
    evidence += [f"via the Service: {describe(s)}" for s in failing if s.target.via is not Via.POD]
    details = sorted({x.detail for s in failing for x in s.samples if not x.ok and x.detail})
    evidence += [f"the server said: {d}" for d in details[:3]]
    evidence.append("these are answers: the queries reached CoreDNS and came back, so no packet path is at fault")
    nodes = sorted({s.target.target_node for s in direct if s.target.target_node})
    return [Verdict.of(Cause.DNS_BAD_ANSWER, evidence, failing, peer_nodes=nodes)]


def _dns_answers_only(status: TargetStatus) -> bool:
    reasons = status.failure_reasons
    return bool(reasons) and all(r in DNS_ANSWERS for r in reasons)


# --- the application ---------------------------------------------------------------------------------------


def backend_down(p: Picture) -> list[Verdict]:
    """The backend itself is down or not ready: its pods answer "refused" or HTTP 5xx when asked directly, and
    the Service answers the same way. Answers, so no packet path is at fault; the ingress's 502/503 follow."""
    failing = p.unexplained_failing()
    services = sorted(
        {s.target.service for s in failing if s.target.via is Via.SERVICE and not isinstance(s.target, DNSTarget)}
    )
    verdicts = []
    for service in services:
        via_service = [s for s in failing if s.target.via is Via.SERVICE and s.target.service == service]
        endpoints = [e for e in p.endpoints(service) if e.health is not Health.PENDING]
        if not via_service or not endpoints or not all(e.failing and _backend_answers(e) for e in endpoints):
            continue
        if not all(_backend_answers(s) for s in via_service):
            continue
        ingress = [s for s in failing if s.target.path is PathClass.INGRESS and _backend_answers(s)]
        evidence = [f"the backend, asked directly: {describe(e)}" for e in endpoints]
        evidence += [f"via the Service: {describe(s)}" for s in via_service]
        evidence += [f"so the ingress fails: {describe(s)}" for s in ingress]
        evidence.append(
            "refused and 5xx are answers: the packets reached the pods' nodes and came back — the application, "
            "not the network"
        )
        large = [
            s
            for s in failing
            if s.target.via is Via.POD and s.target.service == service and is_large(s.target) and _backend_answers(s)
        ]
        explained = [e for e in endpoints if key(e.target) not in p.explained] + large + via_service + ingress
        summary = f"Backend {service} down or not ready: its pods refuse or answer 5xx"
        nodes = sorted({e.target.target_node for e in endpoints if e.target.target_node})
        verdicts.append(Verdict.of(Cause.BACKEND_DOWN, evidence, explained, summary=summary, peer_nodes=nodes))
        failing = [s for s in failing if s not in explained]
    return verdicts


def _backend_answers(status: TargetStatus) -> bool:
    """Every failure an answer saying the application is not serving: refused, reset, or an HTTP 5xx (not 504)."""
    for sample in status.samples:
        if sample.ok:
            continue
        if sample.reason is Reason.BAD_STATUS:
            if sample.http_status not in BACKEND_DOWN_STATUSES:
                return False
        elif sample.reason not in (Reason.REFUSED, Reason.RESET):
            return False
    return status.failures > 0


# --- the Service (kube-proxy NAT) path ---------------------------------------------------------------------


def service_path(p: Picture) -> list[Verdict]:
    """ClusterIP and DNS-via-Service failures whose backends answer when probed directly, told apart by the
    pattern (UDP only, DNS only, local endpoints only) and by the node facts (NAT hook, DNAT rules,
    bridge-nf-call-iptables, offload)."""
    # principle 1: a dropped-path verdict needs silence; a Service target that answered (refused, an error
    # rcode) reached something, and is left to the answer rules or the unknown verdict
    failing = [s for s in p.unexplained_failing() if s.target.via is Via.SERVICE and s.no_answer]
    verdicts: list[Verdict] = []
    facts = p.facts if p.node_view else None
    fresh = facts is not None and facts.fresh_for(failing)

    bridge = _bridge_nf_facts(facts) if facts is not None else []
    if bridge and (fresh or not failing):
        local = [s for s in failing if _has_local_endpoint(p, s) or not p.endpoints(s.target.service)]
        observable = any(_has_local_endpoint(p, s) for s in p.service_targets())
        if local or not observable:
            evidence = bridge + [f"fails (has an endpoint on this node): {describe(s)}" for s in local]
            verdicts.append(Verdict.of(Cause.BRIDGE_NF_OFF, evidence, local))
            failing = [s for s in failing if s not in local]

    if facts is not None:
        offload = _offload_corroborated(p, facts, failing)
        if offload is not None:
            verdicts.append(offload)
            failing = [s for s in failing if key(s.target) not in offload.targets]

    race = _conntrack_race(p, failing)
    if race is not None:
        verdicts.append(race)
        failing = [s for s in failing if key(s.target) not in race.targets]

    if not failing:
        return verdicts

    # what the backends say when asked directly: a Service whose every endpoint also fails is not a
    # Service-path problem (the unknown verdict lists it)
    failing = [s for s in failing if not _endpoints_all_failing(p, s)]
    if not failing:
        return verdicts

    cluster_ip_failing = [s for s in failing if s.target.path is PathClass.CLUSTER_IP]
    dns_failing = [s for s in failing if isinstance(s.target, DNSTarget)]
    if (
        dns_failing
        and not cluster_ip_failing
        and not any(
            s.target.path is PathClass.CLUSTER_IP and s.failed_since(_onset(dns_failing)) for s in p.service_targets()
        )
    ):
        onset = _onset(dns_failing)
        direct_ok = [e for s in dns_failing for e in p.endpoints(s.target.service) if e.works_since(onset)]
        if direct_ok:
            evidence = [f"via the Service: {describe(s)}" for s in dns_failing]
            evidence += [f"straight to CoreDNS: {describe(e)}" for e in direct_ok]
            others = [s for s in p.service_targets() if s.target.path is PathClass.CLUSTER_IP]
            evidence += [f"other Services work: {describe(s)}" for s in others[:2]]
            evidence += _other_view_evidence(p, dns_failing)
            if fresh and facts is not None:
                evidence += _dnat_evidence(facts, dns_failing)
            verdicts.append(Verdict.of(Cause.DNS_SERVICE_PATH, evidence, dns_failing))
            return verdicts

    if facts is None:
        bridge_pattern = _bridge_pattern(p, failing)
        if bridge_pattern is not None:
            verdicts.append(bridge_pattern)
            return verdicts

    verdicts.append(_nat_or_forward(p, facts, fresh, failing))
    return verdicts


def _onset(statuses: Sequence[TargetStatus]) -> float:
    return min((s.failing_since for s in statuses if s.failing_since is not None), default=0.0)


def _has_local_endpoint(p: Picture, status: TargetStatus) -> bool:
    return any(e.target.target_node == p.source_node for e in p.endpoints(status.target.service))


def _endpoints_all_failing(p: Picture, status: TargetStatus) -> bool:
    endpoints = [e for e in p.endpoints(status.target.service) if e.health is not Health.PENDING]
    return bool(endpoints) and all(e.failing for e in endpoints)


def _bridge_nf_facts(facts: FactsView) -> list[str]:
    current = facts.current
    if not isinstance(current.overlay, OverlayFacts) or current.overlay.bridge_mtu is None:
        return []  # no pod bridge in this namespace: bridged traffic is not a thing here
    if isinstance(current.sysctl, SysctlFacts) and not current.sysctl.br_netfilter_loaded:
        return ["node facts: br_netfilter is not loaded (no /proc/sys/net/bridge): bridged traffic skips iptables"]
    if isinstance(current.bridge_netfilter, BridgeNetfilterFacts) and current.bridge_netfilter.call_iptables == 0:
        return ["node facts: net.bridge.bridge-nf-call-iptables = 0: replies bridged on cni0 skip kube-proxy's NAT"]
    return []


def _conntrack_race(p: Picture, failing: list[TargetStatus]) -> Verdict | None:
    """C7a: UDP DNS via the Service fails while TCP DNS to the same Service, UDP DNS straight to CoreDNS and
    every ClusterIP are clean over the whole window."""
    udp = [s for s in failing if isinstance(s.target, DNSTarget) and s.target.protocol is Transport.UDP]
    if not udp:
        return None
    services = p.service_targets()
    tcp_dns = [
        s
        for s in services
        if isinstance(s.target, DNSTarget)
        and s.target.protocol is Transport.TCP
        and any(s.target.server == u.target.server for u in udp)  # type: ignore[union-attr]
    ]
    # the contrast must hold since UDP began failing: a failure there (TCP DNS, a ClusterIP) means the loss is
    # not UDP-only; failures before that belong to an earlier, healed fault
    onset = _onset(udp)
    if not tcp_dns or any(s.failed_since(onset) or s.health is Health.PENDING for s in tcp_dns):
        return None
    if any(s.failed_since(onset) for s in services if s.target.path is PathClass.CLUSTER_IP):
        return None
    direct_udp = [
        e
        for u in udp
        for e in p.endpoints(u.target.service)
        if isinstance(e.target, DNSTarget) and e.target.protocol is Transport.UDP
    ]
    if any(e.failing for e in direct_udp):
        return None
    evidence = [f"UDP via the Service: {describe(s)}" for s in udp]
    evidence += [f"TCP via the Service, clean: {describe(s)}" for s in tcp_dns]
    evidence += [f"UDP straight to CoreDNS, fine: {describe(e)}" for e in direct_udp[:2]]
    if p.facts is not None:
        delta = p.facts.counter_delta(_conntrack_stat("insert_failed"))
        if delta:
            evidence.append(f"node facts: conntrack insert_failed rose by {delta} since the previous reading")
        elif delta == 0:
            evidence.append("node facts: conntrack insert_failed did not rise (loss elsewhere on the UDP NAT path?)")
    return Verdict.of(Cause.CONNTRACK_RACE, evidence, udp)


def _offload_corroborated(p: Picture, facts: FactsView, failing: list[TargetStatus]) -> Verdict | None:
    """C5: tx checksum offload on the VXLAN link, and either UDP checksum errors rising or (from the host
    network) ClusterIPs with remote endpoints failing while pod IPs work."""
    current = facts.current
    if not isinstance(current.offload, OffloadFacts):
        return None
    on = sorted(dev for dev, enabled in current.offload.tx_checksum_ip_generic.items() if enabled)
    if not on:
        return None
    evidence = [f"node facts: tx-checksum-ip-generic is on for {', '.join(on)}"]
    csum = facts.counter_delta(_csum_errors)
    explained: list[TargetStatus] = []
    if csum:
        evidence.append(f"node facts: Udp InCsumErrors rose by {csum} since the previous reading")
    if p.perspective is Perspective.NODE:
        explained = [
            s
            for s in failing
            if s.target.path is PathClass.CLUSTER_IP
            and any(e.target.target_node != p.source_node and e.ok for e in p.endpoints(s.target.service))
        ]
        evidence += [f"from the host network: {describe(s)}" for s in explained]
    if not csum and not explained:
        return None
    return Verdict.of(Cause.CHECKSUM_OFFLOAD_RISK, evidence, explained)


def _dnat_evidence(facts: FactsView, statuses: list[TargetStatus]) -> list[str]:
    out = []
    for backend, ipt in facts.kube_backends():
        for cip, present in sorted(ipt.dnat.items()):
            for s in statuses:
                if host_of(s.target) == cip.ip and s.target.transport.value == cip.protocol:
                    state = "leads to a DNAT" if present else "has NO DNAT rule"
                    out.append(f"node facts ({backend}): KUBE-SERVICES {cip.ip}:{cip.port}/{cip.protocol} {state}")
    return sorted(set(out))


def _bridge_pattern(p: Picture, failing: list[TargetStatus]) -> Verdict | None:
    """C4 without facts: every failing Service has an endpoint on this node, a Service with endpoints here and
    elsewhere fails only part of the time, and Services with only remote endpoints work."""
    if not all(_has_local_endpoint(p, s) for s in failing):
        return None
    mixed = [
        s
        for s in failing
        if s.health is Health.FLAKY
        and any(e.target.target_node != p.source_node for e in p.endpoints(s.target.service))
    ]
    if not mixed:
        return None
    remote_only = [s for s in p.service_targets() if p.endpoints(s.target.service) and not _has_local_endpoint(p, s)]
    if any(not s.ok for s in remote_only):
        return None
    evidence = [f"fails with an endpoint on this node: {describe(s)}" for s in failing]
    for s in mixed:
        endpoints = p.endpoints(s.target.service)
        local = sum(e.target.target_node == p.source_node for e in endpoints)
        evidence.append(
            f"{s.target.name}: fails {s.failures} of {len(s.samples)}; endpoints on this node: {local} of "
            f"{len(endpoints)} (bridge-nf-call-iptables=0 breaks exactly the local ones)"
        )
    evidence += [f"Services with only remote endpoints work: {describe(s)}" for s in remote_only[:2]]
    evidence.append("node facts unavailable: cannot confirm with bridge-nf-call-iptables")
    return Verdict.of(Cause.BRIDGE_NF_OFF, evidence, failing)


def _nat_or_forward(p: Picture, facts: FactsView | None, fresh: bool, failing: list[TargetStatus]) -> Verdict:
    evidence = [f"via the Service: {describe(s)}" for s in failing]
    onset = _onset(failing)
    endpoints_ok = [e for s in failing for e in p.endpoints(s.target.service) if e.works_since(onset)]
    evidence += [f"the backend answers directly: {describe(e)}" for e in _unique(endpoints_ok)[:4]]
    evidence += _other_view_evidence(p, failing)
    if facts is None:
        why = p.facts.unavailable_reason() if p.facts is not None else "not read yet"
        evidence.append(f"node facts for this node's namespace unavailable ({why or 'a pod namespace'})")
        return Verdict.of(Cause.SERVICE_PATH_BROKEN, evidence, failing)
    if not fresh:
        evidence.append("node facts were read before these failures began; the next reading decides")
        return Verdict.of(Cause.SERVICE_PATH_BROKEN, evidence, failing)
    backends = facts.kube_backends()
    if not facts.iptables():
        evidence.append("node facts: neither iptables backend could be read (CAP_NET_ADMIN?)")
        return Verdict.of(Cause.SERVICE_PATH_BROKEN, evidence, failing)
    if not backends:
        evidence.append("node facts: no KUBE-* chains in either iptables backend: kube-proxy's rules are gone")
        return Verdict.of(Cause.CLUSTERIP_NAT_BROKEN, evidence, failing)
    hook = "OUTPUT" if p.perspective is Perspective.NODE else "PREROUTING"
    missing_hook = [name for name, ipt in backends if not ipt.nat_hook.get(hook, False)]
    missing_dnat = [
        f"{cip.ip}:{cip.port}/{cip.protocol} ({name})"
        for name, ipt in backends
        for cip, present in sorted(ipt.dnat.items())
        if not present and any(host_of(s.target) == cip.ip for s in failing)
    ]
    if missing_hook or missing_dnat:
        if missing_hook:
            evidence.append(
                f"node facts: nat {hook} does not jump to KUBE-SERVICES in iptables-{', '.join(missing_hook)}: "
                "ClusterIP packets are never DNATed"
            )
        if missing_dnat:
            evidence.append(f"node facts: no KUBE-SERVICES DNAT rule for {', '.join(missing_dnat)}")
        return Verdict.of(Cause.CLUSTERIP_NAT_BROKEN, evidence, failing)
    evidence.append(
        f"node facts: nat {hook} jumps to KUBE-SERVICES and every failing ClusterIP has a DNAT rule, so the "
        "packets are DNATed and then dropped: the filter FORWARD path"
    )
    return Verdict.of(Cause.FORWARD_DROP, evidence, failing)


def _other_view_evidence(p: Picture, statuses: list[TargetStatus]) -> list[str]:
    """What the other perspective saw of the same targets: the "from the node it works" contrast."""
    out = []
    for s in statuses:
        other = p.seen_from_other(s)
        if other is None or other.health is Health.PENDING:
            continue
        where = f"from the {other.target.perspective.value}'s own network namespace"
        onset = s.failing_since or 0.0
        if other.failing:
            out.append(f"{where} it fails too: {describe(other)}")
        elif other.failed_since(onset):  # principle 4: never "works" next to its own failures
            out.append(f"{where} it fails now and then too: {describe(other)}")
        else:
            out.append(f"{where} the same request works: {describe(other)}")
    return out


def _unique(statuses: list[TargetStatus]) -> list[TargetStatus]:
    seen: set[str] = set()
    out = []
    for s in statuses:
        if key(s.target) not in seen:
            seen.add(key(s.target))
            out.append(s)
    return out


# --- the ingress -------------------------------------------------------------------------------------------


def backend_slow(p: Picture) -> list[Verdict]:
    """Ingress requests end in 504 (or no response in time) while every pod-IP and ClusterIP path works."""
    # principle 3: only an ingress controller on this node has its legs (to the backends) observed here
    slow = [
        s
        for s in p.unexplained_failing()
        if s.target.path is PathClass.INGRESS
        and s.target.via is Via.INGRESS
        and s.target.target_node == p.source_node
        and all(r in SLOW_REASONS or (r is Reason.BAD_STATUS and _only_504(s)) for r in s.failure_reasons)
    ]
    if not slow:
        return []
    if p.explained:
        # a network cause already stands on this node: the ingress dials through it (bridge-nf-off fails the
        # ingress whenever the local replica is picked, even while the ClusterIP probe picked the remote one)
        return []
    network = [s for s in p.statuses if s.target.path in (PathClass.POD_IP, PathClass.CLUSTER_IP)]
    onset = _onset(slow)
    if not network or not all(s.works_since(onset) for s in network):
        return []  # network failures since the 504s began: the ingress is failing because of them
    evidence = [f"the ingress gives up: {describe(s)}" for s in slow]
    durations = [x.duration for s in slow for x in s.samples if not x.ok]
    if durations:
        evidence.append(
            f"failing requests end after {min(durations):.1f}–{max(durations):.1f} s: a timeout, not a drop"
        )
    fine = [s for s in p.statuses if s.target.path is PathClass.INGRESS and s.works_since(onset)]
    evidence += [f"other ingress routes work: {describe(s)}" for s in fine[:2]]
    evidence.append(f"every pod-IP and ClusterIP path works ({len(network)} targets), e.g. {describe(network[0])}")
    return [Verdict.of(Cause.BACKEND_SLOW, evidence, slow)]


def _only_504(status: TargetStatus) -> bool:
    codes = {s.http_status for s in status.samples if not s.ok and s.reason is Reason.BAD_STATUS}
    return codes == {GATEWAY_TIMEOUT}


def remote_ingress(p: Picture) -> list[Verdict]:
    """Principle 3: an ingress controller on another node dials the backends from *that* node. Its failures
    belong to that node's legs, not this one's; this node names no cause for them (its own legs work, or an
    earlier rule would have explained them) and says where to look."""
    remote = [
        s
        for s in p.unexplained_failing()
        if s.target.path is PathClass.INGRESS and s.target.target_node not in ("", p.source_node)
    ]
    verdicts = []
    for node in sorted({s.target.target_node for s in remote}):
        on_node = [s for s in remote if s.target.target_node == node]
        evidence = [f"through the ingress controller on {node}: {describe(s)}" for s in on_node]
        codes = sorted({x.http_status for s in on_node for x in s.samples if not x.ok and x.http_status})
        if codes:
            evidence.append(
                f"the controller on {node} answered (HTTP {', '.join(map(str, codes))}): this node's leg to it "
                f"works; what fails is behind it, on {node}'s legs to the backends"
            )
        else:
            evidence.append(f"no answer from the controller on {node}: this node's leg to it, or the controller")
        evidence += _ruled_out(p, _onset(on_node))
        evidence.append(
            f"not named here: the legs from {node} to the backends are {node}'s — its own diagnosis "
            f'(netpath_diagnosis{{source_node="{node}"}}) says which fails; a slow backend cannot be told '
            "from here"
        )
        summary = f"Unknown: requests through the ingress controller on {node} fail; this node's own paths work"
        verdicts.append(Verdict.of(Cause.UNKNOWN, evidence, on_node, summary=summary, peer_nodes=[node]))
    return verdicts


def _ruled_out(p: Picture, onset: float) -> list[str]:
    """What works from here since the failures began, by path: what an unknown verdict has ruled out."""
    out = []
    for path in (PathClass.POD_IP, PathClass.CLUSTER_IP, PathClass.DNS):
        working = [s for s in p.statuses if s.target.path is path and s.works_since(onset)]
        if not working:
            continue
        nodes = sorted({s.target.target_node for s in working if s.target.target_node})
        to = f" (to {', '.join(nodes)})" if nodes else ""
        out.append(f"works from here: {len(working)} {path.value} targets{to}, e.g. {describe(working[0])}")
    return out


# Silence upstream: what a drop on this node's paths does to an ingress controller that dials them.
UPSTREAM_SILENT = NO_ANSWER | {Reason.BAD_STATUS}


def _upstream_silent(status: TargetStatus) -> bool:
    return all(r in UPSTREAM_SILENT for r in status.failure_reasons) and (
        Reason.BAD_STATUS not in status.failure_reasons or _only_504(status)
    )


RULES: tuple[Rule, ...] = (
    iptables_split,
    conntrack_full,
    overlay_down,
    mtu_blackhole,
    dns_bad_answer,
    coredns_down,
    backend_down,
    service_path,
    backend_slow,
    remote_ingress,
)

# Causes whose verdict says a packet path on this node drops: an ingress on this node that gets silence from
# its upstream (504, timeouts) follows from them.
DROP_CAUSES = frozenset(
    {
        Cause.IPTABLES_SPLIT,
        Cause.CONNTRACK_FULL,
        Cause.OVERLAY_DOWN,
        Cause.MTU_BLACKHOLE,
        Cause.BRIDGE_NF_OFF,
        Cause.CHECKSUM_OFFLOAD_RISK,
        Cause.CONNTRACK_RACE,
        Cause.DNS_SERVICE_PATH,
        Cause.CLUSTERIP_NAT_BROKEN,
        Cause.FORWARD_DROP,
        Cause.SERVICE_PATH_BROKEN,
    }
)


def evaluate(picture: Picture) -> list[Verdict]:
    """Run the rule table in order; each rule sees only what the earlier ones left unexplained."""
    verdicts: list[Verdict] = []
    for rule in RULES:
        for verdict in rule(picture):
            verdicts.append(verdict)
            picture = replace(picture, explained=picture.explained | set(verdict.targets))
    network = [v for v in verdicts if v.targets and v.cause in DROP_CAUSES]
    # only an ingress that dials this node's paths (on this node, or where it runs is not known), and only
    # silence from its upstream (a 502/503 is an answer, not a drop)
    ingress = [
        s
        for s in picture.unexplained_failing()
        if s.target.path is PathClass.INGRESS
        and s.target.target_node in ("", picture.source_node)
        and _upstream_silent(s)
    ]
    if network and ingress:
        # an ingress dials the same broken paths: its failures follow from the cause already named
        first = network[0]
        verdicts[verdicts.index(first)] = replace(
            first,
            evidence=(*first.evidence, *(f"and so the ingress fails: {describe(s)}" for s in ingress)),
            targets=(*first.targets, *(key(s.target) for s in ingress)),
        )
        picture = replace(picture, explained=picture.explained | {key(s.target) for s in ingress})
    left = picture.unexplained_failing()
    if left:
        evidence = [describe(s) for s in left]
        answered = [s for s in left if s.answered]
        if answered:
            evidence.append(
                "answered (refused, an HTTP or DNS error): a packet got there and back, so no dropped-path cause: "
                + ", ".join(s.target.name for s in answered)
            )
        evidence += _ruled_out(picture, _onset(left))
        verdicts.append(Verdict.of(Cause.UNKNOWN, evidence, left))
    return verdicts
