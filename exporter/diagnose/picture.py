"""What the rules read: every target's window (the `Picture`, its lookups built once), the node facts as the
rules need them (`FactsView`), the verdict they produce, and how a target's state is quoted as evidence."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from ..model import AnyTarget, PathClass, Perspective, Transport, Via
from ..node.facts import ConntrackFacts, IptablesFacts, NodeFacts, OverlayFacts, SnmpFacts, Unavailable
from ..probes import destination
from ..probes.dns import DNSTarget
from ..probes.http import HTTPTarget
from .causes import CAUSES, Cause
from .window import Health, TargetStatus


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
            targets=tuple(dict.fromkeys(key(s.target) for s in targets)),
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


def conntrack_stat(name: str) -> Callable[[NodeFacts], int | None]:
    def pick(facts: NodeFacts) -> int | None:
        return facts.conntrack.stats.get(name) if isinstance(facts.conntrack, ConntrackFacts) else None

    return pick


def csum_errors(facts: NodeFacts) -> int | None:
    return facts.snmp.udp_in_csum_errors if isinstance(facts.snmp, SnmpFacts) else None


# --- what every rule sees ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """One node's targets and facts at one moment. Immutable; the lookups the rules share are built once, on
    first use (a picture is evaluated once, so "once" is per diagnosis)."""

    source_node: str
    perspective: Perspective
    statuses: tuple[TargetStatus, ...]
    facts: FactsView | None = None
    other_view: tuple[TargetStatus, ...] = ()  # the same targets probed from the other perspective

    @cached_property
    def failing(self) -> tuple[TargetStatus, ...]:
        return tuple(s for s in self.statuses if s.failing)

    @cached_property
    def service_targets(self) -> tuple[TargetStatus, ...]:
        """Targets through a Service ClusterIP (kube-proxy NAT on this node)."""
        return tuple(s for s in self.statuses if s.target.via is Via.SERVICE and s.target.path is not PathClass.INGRESS)

    @cached_property
    def cluster_ips(self) -> tuple[TargetStatus, ...]:
        return tuple(s for s in self.service_targets if s.target.path is PathClass.CLUSTER_IP)

    @cached_property
    def direct_probes(self) -> tuple[TargetStatus, ...]:
        """Direct probes of pods (pod IP or DNS to the pod), excluding large-body ones: what says whether a
        backend itself answers."""
        return tuple(s for s in self.statuses if s.target.via is Via.POD and not is_large(s.target))

    @cached_property
    def _endpoints(self) -> dict[str, tuple[TargetStatus, ...]]:
        by_service: dict[str, list[TargetStatus]] = defaultdict(list)
        for s in self.direct_probes:
            if s.target.service:
                by_service[s.target.service].append(s)
        return {service: tuple(found) for service, found in by_service.items()}

    def endpoints(self, service: str) -> tuple[TargetStatus, ...]:
        """Direct probes of the pods behind `service` (pod IP or DNS to the pod), excluding large-body ones:
        the "does the backend itself answer" contrast for a Service target."""
        return self._endpoints.get(service, ()) if service else ()

    @cached_property
    def remote_pods(self) -> dict[str, tuple[TargetStatus, ...]]:
        """Pod-IP probes (TCP and HTTP, all sizes) by the remote node they go to; pending ones left out."""
        by_node: dict[str, list[TargetStatus]] = defaultdict(list)
        for s in self.statuses:
            t = s.target
            if (
                t.path is PathClass.POD_IP
                and t.via is Via.POD
                and t.target_node
                and t.target_node != self.source_node
                and s.health is not Health.PENDING
            ):
                by_node[t.target_node].append(s)
        return {node: tuple(found) for node, found in sorted(by_node.items())}

    @cached_property
    def coredns_direct(self) -> tuple[TargetStatus, ...]:
        """DNS probes straight to a CoreDNS pod, pending ones left out."""
        return tuple(
            s
            for s in self.statuses
            if isinstance(s.target, DNSTarget) and s.target.via is Via.POD and s.health is not Health.PENDING
        )

    @cached_property
    def _other(self) -> dict[tuple[str, Transport], TargetStatus]:
        return {(o.target.name, o.target.transport): o for o in self.other_view}

    def seen_from_other(self, status: TargetStatus) -> TargetStatus | None:
        """The same target as probed from the other perspective (the node's namespace), if it is."""
        return self._other.get((status.target.name, status.target.transport))

    @property
    def node_view(self) -> bool:
        return self.facts is not None and self.facts.node_view

    @property
    def node_facts(self) -> FactsView | None:
        """The facts, when they describe this node's namespace (else they prove nothing about it)."""
        return self.facts if self.node_view else None

    def has_local_endpoint(self, status: TargetStatus) -> bool:
        return any(e.target.target_node == self.source_node for e in self.endpoints(status.target.service))

    def endpoints_all_failing(self, status: TargetStatus) -> bool:
        endpoints = [e for e in self.endpoints(status.target.service) if e.health is not Health.PENDING]
        return bool(endpoints) and all(e.failing for e in endpoints)


def is_large(target: AnyTarget) -> bool:
    return isinstance(target, HTTPTarget) and target.min_body_bytes > 0


def host_of(target: AnyTarget) -> str:
    dialled = destination(target)
    return "" if dialled is None else dialled[0]


def onset(statuses: Iterable[TargetStatus]) -> float:
    """When the earliest of these targets' current bout of failures began (0: none failing)."""
    return min((s.failing_since for s in statuses if s.failing_since is not None), default=0.0)


def describe(status: TargetStatus, since: float | None = None) -> str:
    """One target's state as evidence: "svc-front (cluster_ip 10.43.20.10:80): connect_timeout in 3 of 3".

    With ``since``, a target that has worked since then is described by those probes only ("ok in 2 since the
    failures began"): an earlier failure of its own is not this fault's, and "works: … 1 of 2 failed" would
    contradict itself (docs/diagnosis.md, principle 4)."""
    t = status.target
    where = f" → {t.target_node}" if t.target_node else ""
    reasons = status.failure_reasons
    if since is not None and reasons and status.works_since(since):
        probes = sum(1 for x in status.samples if x.at >= since)
        head = f"{t.name} ({t.path.value} {t.transport.value} {t.address}{where})"
        return f"{head}: ok in {probes} since the failures began"
    if not reasons:
        typical = status.typical_ok_seconds
        speed = f", {typical * 1000:.1f} ms" if typical is not None else ""
        lossy = sum(1 for x in status.samples if x.syn_retransmits)
        resent = f", a SYN retransmitted in {lossy} of them ({status.syn_retransmits} in all)" if lossy else ""
        return (
            f"{t.name} ({t.path.value} {t.transport.value} {t.address}{where}): ok in {len(status.samples)}{speed}"
            f"{resent}"
        )
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
