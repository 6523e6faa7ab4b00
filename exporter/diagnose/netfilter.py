"""Follow a failing probe's packet through this node's iptables rules (from `iptables-save -c`) and say which
rules it meets: the DNAT it gets (to which endpoints), or that no NAT rule catches it; then, in the filter
table, the rule that drops it, or the policy that does. A rule's packet counter rising between two readings
while the probe fails is the positive evidence a "dropped here" verdict rests on.

The walk is a model, not the kernel: matches it cannot decide from here (input/output interface, marks, a
random `statistic` choice, the exact source address of a pod) make a rule *undecided*. An undecided rule
that would drop is reported as "may drop" (with its counter), and the walk goes on as if it did not match;
an undecided jump is not followed. Only a decided match makes a decided verdict. The idea — walk the real
rule set along the packet's path and name the rule that drops it — is the one alibaba/kubeskoop's
connectivity diagnosis is built on; this is the project's own, much smaller, iptables-only version.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..model import Perspective
from ..node.facts import IptablesFacts, IptablesRule

MAX_DEPTH = 8  # jumps followed; kube-proxy needs 3 (KUBE-SERVICES → KUBE-SVC → KUBE-SEP)
TERMINAL = frozenset({"ACCEPT", "DROP", "REJECT", "DNAT", "RETURN"})
DROPS = frozenset({"DROP", "REJECT"})
UNDECIDABLE = ("-i", "-o", "--mark", "--probability", "--dst-type", "--src-type", "--every")
IGNORED = frozenset({"-m", "-j", "-g", "--comment", "--to-destination", "--set-xmark", "--random-fully", "-c"})


@dataclass(frozen=True)
class Packet:
    protocol: str  # tcp / udp
    destination: str  # the probe's address (a ClusterIP)
    port: int
    perspective: Perspective  # pod: PREROUTING then FORWARD; node: OUTPUT then filter OUTPUT
    pod_cidr: str = ""  # the source is somewhere in it (a pod), when known


@dataclass(frozen=True)
class Met:
    """A rule the packet met: where, the rule as saved, and whether the match was decided."""

    table: str
    chain: str
    number: int  # 1-based, as `iptables -L --line-numbers` shows
    rule: IptablesRule
    decided: bool

    def quote(self) -> str:
        return f"{self.table} {self.chain} #{self.number} `{self.rule.text.removeprefix('-A ' + self.chain + ' ')}`"


@dataclass
class Walk:
    dnat: list[str] = field(
        default_factory=list
    )  # --to-destination of every DNAT reachable (kube-proxy: one per endpoint)
    nat_path: list[Met] = field(default_factory=list)
    drop: Met | None = None  # the decided drop
    may_drop: list[Met] = field(default_factory=list)  # undecided rules that would drop
    policy_drop: str = ""  # "filter/FORWARD": the packet fell through to a DROP policy
    accepted_by: Met | None = None


def _tri(values: list[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _in(address: str, network: str) -> bool | None:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return None


def _address_match(rule: IptablesRule, option: str, address: str | None, pod_cidr: str) -> bool | None:
    network = rule.options.get(option)
    if network is None:
        return True
    # a pod's source address is known only as "in the pod CIDR": decided if the rule's network holds all or none
    hit = _in(address, network) if address is not None else _cidr_relation(pod_cidr, network)
    if hit is None:
        return None
    return (not hit) if option in rule.negated else hit


def _cidr_relation(inner: str, outer: str) -> bool | None:
    try:
        a, b = ipaddress.ip_network(inner, strict=False), ipaddress.ip_network(outer, strict=False)
    except ValueError:
        return None
    if a.version == b.version and a.subnet_of(b):  # type: ignore[arg-type]
        return True
    return False if not a.overlaps(b) else None


def matches(rule: IptablesRule, packet: Packet, destination: str, port: int, ctstates: frozenset[str]) -> bool | None:
    """Whether the rule matches the packet: True, False, or None (not decidable from here)."""
    checks: list[bool | None] = [
        _address_match(rule, "-d", destination, packet.pod_cidr),
        _address_match(rule, "-s", None, packet.pod_cidr),
    ]
    protocol = rule.options.get("-p")
    checks.append(protocol is None or protocol == packet.protocol)
    if "--dport" in rule.options:
        checks.append(rule.options["--dport"] == str(port))
    if "--ctstate" in rule.options:
        hit = bool(set(rule.options["--ctstate"].split(",")) & ctstates)
        checks.append((not hit) if "--ctstate" in rule.negated else hit)
    if "--ctorigdst" in rule.options:
        checks.append(_in(packet.destination, rule.options["--ctorigdst"]))
    checks += [None for option in UNDECIDABLE if option in rule.options or option in rule.negated]
    return _tri(checks)


def _walk_chain(
    rules: Mapping[str, tuple[IptablesRule, ...]],
    table: str,
    chain: str,
    packet: Packet,
    destination: str,
    port: int,
    ctstates: frozenset[str],
    walk: Walk,
    depth: int = 0,
) -> str:
    """Walk one chain; returns the decided terminal target ("" when the chain ran out or returned)."""
    if depth > MAX_DEPTH:
        return ""
    for number, rule in enumerate(rules.get(chain, ()), 1):
        hit = matches(rule, packet, destination, port, ctstates)
        if hit is False:
            continue
        met = Met(table, chain, number, rule, decided=hit is True)
        target = rule.target
        if table == "nat" and target == "DNAT":
            walk.nat_path.append(met)
            walk.dnat.append(rule.options.get("--to-destination", "?"))
            if hit:
                return "DNAT"
            continue
        if target in DROPS:
            if hit:
                walk.drop = met
                return target
            walk.may_drop.append(met)
            continue
        if target == "ACCEPT" and hit:
            walk.accepted_by = met
            return target
        if target == "RETURN" and hit:
            return ""
        if target in rules and (hit or (table == "nat" and "--probability" in rule.options)):
            # an undecided jump is followed only for kube-proxy's random endpoint choice: every endpoint's DNAT
            if table == "nat":
                walk.nat_path.append(met)
            decided = _walk_chain(rules, table, target, packet, destination, port, ctstates, walk, depth + 1)
            if decided and hit:
                return decided
    return ""


def to_destination(value: str) -> tuple[str, int]:
    """A DNAT's `--to-destination` (`10.42.1.5:8080`, `[fd00::5]:8080`) as (host, port); port 0 when it names none."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return value.strip("[]"), 0
    return host.strip("[]"), int(port)


def walk(facts: IptablesFacts, packet: Packet) -> Walk:
    """Follow the packet: nat (PREROUTING from a pod, OUTPUT from the node), then filter (FORWARD / OUTPUT)."""
    out = Walk()
    nat = facts.tables.get("nat", {})
    hook = "OUTPUT" if packet.perspective is Perspective.NODE else "PREROUTING"
    _walk_chain(nat, "nat", hook, packet, packet.destination, packet.port, frozenset({"NEW"}), out)
    destination, port, states = packet.destination, packet.port, frozenset({"NEW"})
    if out.dnat:
        host, to_port = to_destination(out.dnat[0])
        destination, port, states = host, to_port or port, states | {"DNAT"}
    filt = facts.tables.get("filter", {})
    chain = "OUTPUT" if packet.perspective is Perspective.NODE else "FORWARD"
    decided = _walk_chain(filt, "filter", chain, packet, destination, port, states, out)
    if not decided and facts.policies.get(f"filter/{chain}") == "DROP" and out.accepted_by is None and not out.may_drop:
        out.policy_drop = f"filter/{chain}"
    return out


def counter_delta(met: Met, previous: IptablesFacts | None) -> int | None:
    """How much the rule's packet counter rose since the previous reading (same rule at the same place)."""
    if previous is None or met.rule.packets is None:
        return None
    rules = previous.tables.get(met.table, {}).get(met.chain, ())
    if len(rules) < met.number or rules[met.number - 1].text != met.rule.text:
        return None
    before = rules[met.number - 1].packets
    return None if before is None else met.rule.packets - before


def describe_walk(backend: str, packet: Packet, result: Walk, previous: IptablesFacts | None) -> list[str]:
    """The walk as evidence lines."""
    where = f"node facts (iptables-{backend}): a {packet.protocol} packet to {packet.destination}:{packet.port}"
    out = []
    if result.dnat:
        targets = ", ".join(dict.fromkeys(result.dnat))
        out.append(f"{where} is DNATed to {targets} (nat {result.nat_path[0].chain} → … → DNAT)")
    else:
        hook = "OUTPUT" if packet.perspective is Perspective.NODE else "PREROUTING"
        out.append(
            f"{where} meets no DNAT in nat {hook}: it keeps its ClusterIP destination and leaves by the default "
            "route, where nothing answers"
        )
    for met, label in [(result.drop, "is dropped by")] if result.drop else []:
        out.append(f"{where} {label} {met.quote()}{_counter_text(met, previous)}")
    for met in result.may_drop:
        out.append(
            f"{where} may be dropped by {met.quote()} (a match not decidable from here){_counter_text(met, previous)}"
        )
    if result.policy_drop:
        out.append(f"{where} matches no ACCEPT in {result.policy_drop}: the chain's policy DROP drops it")
    return out


def _counter_text(met: Met, previous: IptablesFacts | None) -> str:
    delta = counter_delta(met, previous)
    if delta is None:
        return ""
    if delta > 0:
        return f"; its packet counter rose by {delta} since the previous reading, while the probes failed"
    return "; its packet counter did not rise since the previous reading"


def rising_drop(result: Walk, previous: IptablesFacts | None) -> Met | None:
    """The rule that drops the packet (decided, or a may-drop) with its counter rising: positive evidence."""
    for met in ([result.drop] if result.drop else []) + result.may_drop:
        delta = counter_delta(met, previous)
        if delta is not None and delta > 0:
            return met
    return None
