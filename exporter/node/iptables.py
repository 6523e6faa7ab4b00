"""iptables state from `iptables-{legacy,nft}-save -c` output: rule counts, the ClusterIP NAT hook, DNAT paths,
and the rules themselves with their packet counters (for following a probe's packet through them).

The save format is the stable, documented interface of both backends (the same text whichever kernel API is
behind it), so both are read the same way; running the binaries needs CAP_NET_ADMIN, and a backend that cannot
be read is reported unavailable by the caller.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .facts import ClusterIPPort, IptablesFacts, IptablesRule

NAT_HOOK_CHAINS = ("PREROUTING", "OUTPUT")
SERVICES_CHAIN = "KUBE-SERVICES"
_MAX_JUMP_DEPTH = 8  # KUBE-SERVICES → KUBE-SVC/KUBE-EXT → KUBE-SEP → DNAT is 3; more is a loop or not ours


Rule = IptablesRule
_COUNTERS = re.compile(r"^\[(\d+):(\d+)\]\s+")  # `iptables-save -c` puts [packets:bytes] before each rule


@dataclass
class Table:
    chains: dict[str, list[Rule]] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)  # built-in chain → ACCEPT/DROP


def parse_save(text: str) -> dict[str, Table]:
    """`iptables-save` text → table name → chains and their rules, in order."""
    tables: dict[str, Table] = {}
    table: Table | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line == "COMMIT":
            continue
        if line.startswith("*"):
            table = tables.setdefault(line[1:], Table())
        elif table is None:
            continue  # rules outside a table: not save format, ignore rather than guess
        elif line.startswith(":"):
            name, *rest = line[1:].split()
            table.chains.setdefault(name, [])
            if rest and rest[0] != "-":
                table.policies[name] = rest[0]
        else:
            counters = _COUNTERS.match(line)
            packets = int(counters.group(1)) if counters else None
            line = line[counters.end() :] if counters else line
            if line.startswith("-A "):
                rule = _parse_rule(line, packets)
                if rule is not None:
                    table.chains.setdefault(rule.chain, []).append(rule)
    return tables


def _parse_rule(line: str, packets: int | None = None) -> Rule | None:
    try:
        tokens = shlex.split(line)
    except ValueError:  # unbalanced quotes in a comment: count the rule, match nothing in it
        tokens = line.split()[:2]
    if len(tokens) < 2:
        return None
    options: dict[str, str] = {}
    negated: set[str] = set()
    negate = False
    i = 2
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
        elif token.startswith("-"):
            value = tokens[i + 1] if i + 1 < len(tokens) and not tokens[i + 1].startswith("-") else ""
            if negate:
                negated.add(token)
            else:
                options.setdefault(token, value)
            negate = False
            i += 1 if value else 0
        i += 1
    return Rule(chain=tokens[1], options=options, negated=frozenset(negated), text=line, packets=packets)


def iptables_facts(text: str, cluster_ips: Iterable[ClusterIPPort]) -> IptablesFacts:
    tables = parse_save(text)
    chains = {name for table in tables.values() for name in table.chains}
    nat = tables.get("nat", Table()).chains
    return IptablesFacts(
        rules=sum(len(rules) for table in tables.values() for rules in table.chains.values()),
        kube_chains=sum(1 for name in chains if name.startswith("KUBE-")),
        ufw_chains=sum(1 for name in chains if name.startswith(("ufw-", "ufw6-"))),
        nat_hook={hook: any(r.target == SERVICES_CHAIN for r in nat.get(hook, [])) for hook in NAT_HOOK_CHAINS},
        dnat={cip: has_dnat_path(nat, cip) for cip in sorted(set(cluster_ips))},
        tables=MappingProxyType(
            {
                name: MappingProxyType({chain: tuple(rules) for chain, rules in table.chains.items()})
                for name, table in tables.items()
            }
        ),
        policies=MappingProxyType(
            {f"{name}/{chain}": policy for name, table in tables.items() for chain, policy in table.policies.items()}
        ),
    )


def has_dnat_path(nat: Mapping[str, list[Rule]], cip: ClusterIPPort) -> bool:
    """Whether a KUBE-SERVICES rule for this ClusterIP:port leads, through jumps, to a DNAT target."""
    return any(_matches(rule, cip) and _reaches_dnat(nat, rule.target, depth=1) for rule in nat.get(SERVICES_CHAIN, []))


def _matches(rule: Rule, cip: ClusterIPPort) -> bool:
    destination = rule.options.get("-d")
    if destination is None or "-d" in rule.negated:
        return False
    try:
        if ipaddress.ip_address(cip.ip) not in ipaddress.ip_network(destination, strict=False):
            return False
    except ValueError:
        return False
    if rule.options.get("--dport") != str(cip.port):
        return False
    protocol = rule.options.get("-p")
    return protocol is None or protocol == cip.protocol


def _reaches_dnat(nat: Mapping[str, list[Rule]], target: str, depth: int) -> bool:
    if target == "DNAT":
        return True
    if depth > _MAX_JUMP_DEPTH or target not in nat:
        return False
    return any(_reaches_dnat(nat, rule.target, depth + 1) for rule in nat[target])
