"""The rule table, as data: each rule a record naming its cause, the targets it looks at and may explain, the
conditions it needs (shared by name, conditions.py), whether it needs node facts read after the failures
began, and the evidence it prints. One evaluator runs the records in order and tracks what is explained, so
a specific cause suppresses the generic ones it explains (a dead overlay also breaks the ClusterIP and DNS
paths through it; those failures are not a second cause). What is left is the "unknown" verdict.
docs/diagnosis.md's rule table is rendered from these records (:func:`table_markdown`); a test holds the two
together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..model import PathClass
from .causes import Cause
from .conditions import (
    CONDITIONS,
    EVIDENCE,
    GROUPS,
    PEERS,
    PENDING,
    SELECTORS,
    SUMMARIES,
    WALK_SHOWS,
    Scope,
    own_walk_shows,
    ruled_out,
    upstream_silent,
)
from .picture import FactsView, Picture, Verdict, describe, key, onset

__all__ = ["RULES", "FactsView", "Picture", "Rule", "Verdict", "evaluate", "table_markdown"]


@dataclass(frozen=True)
class Rule:
    number: str  # its row in docs/diagnosis.md
    cause: Cause
    looks_at: str  # selector: the failing targets it considers (its candidates)
    needs: tuple[str, ...]  # conditions, all of which must hold
    explains: str = "the candidates"  # selector: the targets the verdict explains
    fresh_facts: bool = False  # needs node facts of this node read after the candidates began failing
    evidence: tuple[str, ...] = ("the targets",)
    per: str = "once"  # group: once, or once per Service / remote ingress node
    summary: str = ""  # a SUMMARIES entry when the cause's title does not say enough
    peers: str = ""  # a PEERS entry: the nodes the verdict is about

    def __post_init__(self) -> None:
        unknown = [
            name
            for name, table in (
                (self.looks_at, SELECTORS),
                (self.explains, SELECTORS),
                (self.per, GROUPS),
                *((c, CONDITIONS) for c in self.needs),
                *((e, EVIDENCE) for e in self.evidence),
                *(((self.summary, SUMMARIES),) if self.summary else ()),
                *(((self.peers, PEERS),) if self.peers else ()),
            )
            if name not in table
        ]
        if unknown:
            raise ValueError(f"rule {self.number} ({self.cause}): unknown names {unknown}")

    def holds(self, scope: Scope) -> bool:
        if self.fresh_facts:
            facts = scope.picture.node_facts
            if facts is None or not facts.fresh_for(scope.candidates):
                return False
        return all(CONDITIONS[name](scope) for name in self.needs)

    def waits(self, scope: Scope) -> bool:
        """Every condition holds or is undecided for want of a probe since the failures began (PENDING), at
        least one is undecided: the rule may hold once the evidence is in."""
        if self.fresh_facts or not scope.candidates:
            return False
        undecided = [name for name in self.needs if name in PENDING and PENDING[name](scope)]
        return bool(undecided) and all(name in undecided or CONDITIONS[name](scope) for name in self.needs)

    def verdict(self, scope: Scope) -> Verdict:
        return Verdict.of(
            self.cause,
            [line for name in self.evidence for line in EVIDENCE[name](scope)],
            SELECTORS[self.explains](scope),
            summary=SUMMARIES[self.summary](scope) if self.summary else "",
            peer_nodes=PEERS[self.peers](scope) if self.peers else (),
        )


SERVICE_PATH = "silent Service targets whose pods answer"
VIA_SERVICE_EVIDENCE = ("via the Service vs direct", "other perspective")

RULES: tuple[Rule, ...] = (
    Rule(
        "1",
        Cause.IPTABLES_SPLIT,
        "failing Service targets",
        ("facts_read", "iptables_split_in_facts"),
        evidence=("iptables backends", "the targets"),
    ),
    Rule(
        "2",
        Cause.CONNTRACK_FULL,
        "every failing target",
        ("facts_read", "conntrack_full_in_facts"),
        evidence=("conntrack fill", "the targets"),
    ),
    Rule(
        "3",
        Cause.OVERLAY_DOWN,
        "targets through the unreachable nodes",
        ("pods_of_a_node_silent",),
        evidence=("silent nodes", "pods elsewhere answer", "overlay facts"),
        summary="overlay",
        peers="unreachable nodes",
    ),
    Rule(
        "4",
        Cause.MTU_BLACKHOLE,
        "large responses stalling where small pass",
        ("large_stall_or_mtu_gap",),
        evidence=("stalls and small contrasts", "MTU headroom"),
    ),
    Rule(
        "5a",
        Cause.DNS_BAD_ANSWER,
        "failing DNS targets",
        ("coredns_pod_fails", "dns_failures_all_answers"),
        evidence=("DNS answers",),
        peers="CoreDNS nodes",
    ),
    Rule(
        "5b",
        Cause.COREDNS_DOWN,
        "direct CoreDNS probes",
        ("coredns_pods_all_fail", "coredns_failures_not_dns_answers", "coredns_dead_shown"),
        explains="CoreDNS probes and DNS via its Service",
        evidence=("CoreDNS failures",),
    ),
    Rule(
        "5c",
        Cause.BACKEND_DOWN,
        "the Service's failing targets",
        ("service_pods_refuse", "service_refuses"),
        explains="the Service, its pods, the ingress answering 5xx",
        evidence=("backend answers",),
        per="each Service",
        summary="backend",
        peers="the pods' nodes",
    ),
    Rule(
        "6a",
        Cause.BRIDGE_NF_OFF,
        "silent Service targets",
        ("node_view", "bridge_nf_off_in_facts", "local_endpoints_fail_or_unobservable"),
        explains="candidates with a local endpoint",
        fresh_facts=True,
        evidence=("bridge facts",),
    ),
    Rule(
        "6b",
        Cause.CHECKSUM_OFFLOAD_RISK,
        "silent Service targets",
        ("node_view", "offload_on", "offload_corroborated"),
        explains="host-network ClusterIPs with a remote endpoint",
        evidence=("offload facts",),
    ),
    Rule(
        "6c",
        Cause.FORWARD_DROP,
        "Service targets losing packets whose pods are clean",
        ("has_candidates", "node_view", "nat_rules_in_place", "walk_meets_a_drop"),
        explains="the candidates and the silent Service failures whose pods answer",
        evidence=("packets lost via the Service, not direct", "NAT in place", "packet walk"),
        summary="lossy",
    ),
    Rule(
        "6d",
        Cause.CONNTRACK_RACE,
        "silent UDP DNS via the Service",
        (
            "has_candidates",
            "tcp_dns_via_service_clean",
            "cluster_ips_clean_since",
            "udp_dns_direct_not_failing",
            "query_loss_not_the_service_paths",
        ),
        evidence=("UDP vs TCP",),
    ),
    Rule(
        "6e",
        Cause.DNS_SERVICE_PATH,
        "silent DNS-via-Service targets whose CoreDNS answers",
        ("has_candidates", "cluster_ips_clean_since", "coredns_answers_directly", "query_loss_not_the_service_paths"),
        evidence=("DNS via Service vs direct", "other perspective", "DNAT rules"),
    ),
    Rule(
        "6f",
        Cause.BRIDGE_NF_OFF,
        SERVICE_PATH,
        (
            "has_candidates",
            "no_node_facts",
            "failing_services_have_local_endpoint",
            "mixed_service_fails_partly",
            "remote_only_services_work",
        ),
        evidence=("bridge pattern",),
    ),
    Rule(
        "6g",
        Cause.CLUSTERIP_NAT_BROKEN,
        SERVICE_PATH,
        ("has_candidates", "node_view", "iptables_read", "nat_hook_or_dnat_missing"),
        fresh_facts=True,
        evidence=(*VIA_SERVICE_EVIDENCE, "NAT missing", "packet walk"),
    ),
    Rule(
        "6h",
        Cause.FORWARD_DROP,
        SERVICE_PATH,
        ("has_candidates", "node_view", "nat_rules_in_place", "drop_rule_on_path"),
        fresh_facts=True,
        evidence=(*VIA_SERVICE_EVIDENCE, "NAT in place", "packet walk"),
    ),
    Rule(
        "6i",
        Cause.SERVICE_PATH_BROKEN,
        SERVICE_PATH,
        ("has_candidates", "facts_undecided"),
        evidence=(*VIA_SERVICE_EVIDENCE, "why undecided"),
    ),
    Rule(
        "7",
        Cause.BACKEND_SLOW,
        "the ingress on this node down with 504s",
        ("has_candidates", "nothing_explained", "local_ingress_clean_legs"),
        evidence=("ingress timing",),
    ),
    Rule(
        "8",
        Cause.UNKNOWN,
        "the ingress targets on that node",
        ("has_candidates",),
        evidence=("the remote controller", "what works here", "where to look"),
        per="each remote ingress node",
        summary="remote ingress",
        peers="that node",
    ),
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


def _extended(verdict: Verdict, evidence: Iterable[str], targets: Iterable[str]) -> Verdict:
    """The verdict, also explaining ``targets``, with ``evidence`` added."""
    return replace(verdict, evidence=(*verdict.evidence, *evidence), targets=(*verdict.targets, *targets))


def evaluate(picture: Picture) -> list[Verdict]:
    """Run the records in order; each sees only the failing targets the earlier ones left unexplained."""
    verdicts: list[Verdict] = []
    explained: set[str] = set()
    held: set[str] = set()  # candidates of a rule still waiting for its evidence: no later rule takes them
    for rule in RULES:
        for group in GROUPS[rule.per](picture, frozenset(explained | held)):
            scope = Scope(picture, frozenset(explained | held), rule.looks_at, group)
            if rule.holds(scope):
                verdict = rule.verdict(scope)
                verdicts.append(verdict)
                explained |= set(verdict.targets)
            elif rule.waits(scope):
                held |= {key(x.target) for x in scope.candidates}
    unexplained = [s for s in picture.failing if key(s.target) not in explained]
    # A silent ClusterIP target with no direct probe of its backends (the `kubernetes` Service: its endpoints are
    # the API servers' node addresses, not pods) is no candidate of the Service-path rules. When the NAT is named
    # missing, or the firewall named as dropping DNATed traffic, and the walk of this target's own packet shows
    # exactly that, the same verdict explains it, with its own walk as the evidence.
    for verdict in [v for v in verdicts if v.cause in WALK_SHOWS and v.targets]:
        shown = [(s, walk) for s in unexplained if s.no_answer and (walk := own_walk_shows(picture, s, verdict.cause))]
        if shown:
            evidence = [
                *(f"and this ClusterIP fails the same way: {describe(s)}" for s, _ in shown),
                *dict.fromkeys(line for _, walk in shown for line in walk),
            ]
            verdicts[verdicts.index(verdict)] = _extended(verdict, evidence, [key(s.target) for s, _ in shown])
            unexplained = [s for s in unexplained if all(s is not x for x, _ in shown)]
    # an ingress that dials this node's paths (on this node, or where it runs is not known) and got silence from
    # its upstream (a 502/503 is an answer, not a drop) fails because of the dropped path already named
    network = [v for v in verdicts if v.targets and v.cause in DROP_CAUSES]
    ingress = [
        s
        for s in unexplained
        if s.target.path is PathClass.INGRESS
        and s.target.target_node in ("", picture.source_node)
        and upstream_silent(s)
    ]
    if network and ingress:
        first = network[0]
        verdicts[verdicts.index(first)] = _extended(
            first, [f"and so the ingress fails: {describe(s)}" for s in ingress], [key(s.target) for s in ingress]
        )
        unexplained = [s for s in unexplained if s not in ingress]
    if unexplained:
        evidence = [describe(s) for s in unexplained]
        answered = [s for s in unexplained if s.answered]
        if answered:
            evidence.append(
                "answered (refused, an HTTP or DNS error): a packet got there and back, so no dropped-path cause: "
                + ", ".join(s.target.name for s in answered)
            )
        evidence += ruled_out(picture, onset(unexplained))
        verdicts.append(Verdict.of(Cause.UNKNOWN, evidence, unexplained))
    return verdicts


# --- the documentation of the table --------------------------------------------------------------------------


def _names(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def table_markdown() -> str:
    """The rule table and the condition table of docs/diagnosis.md, rendered from the records."""
    lines = [
        "| # | cause | looks at | needs (all) | fresh facts | explains | evidence | per |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in RULES:
        lines.append(
            f"| {r.number} | `{r.cause.value}` | {r.looks_at} | {_names(r.needs)} | "
            f"{'yes' if r.fresh_facts else ''} | {r.explains} | {', '.join(r.evidence)} | {r.per} |"
        )
    lines += ["", "| condition | holds when |", "|---|---|"]
    used = dict.fromkeys(c for r in RULES for c in r.needs)
    for name in used:
        doc = " ".join((CONDITIONS[name].__doc__ or "").split())
        lines.append(f"| `{name}` | {doc} |")
    return "\n".join(lines) + "\n"
