"""Every fault scenario, asserted with the exporter's own probes run in the exporter pods.

After `break`, exactly the expected paths fail and the others keep working; after `heal`, all healthy.
Placement (lab/topology.py): node1 runs CoreDNS and keybuzz-front-0, node2 keybuzz-front-1, node3 neither;
every node has an ingress controller (proxying to the keybuzz-front ClusterIP) and an exporter. Nodes are
chosen per scenario so the random endpoint choice of kube-proxy cannot make an assertion flaky; where it
still could, the target is listed as "may fail".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from lab import netns, scenarios
from lab.probe import Outcome, probe_nodes
from lab.topology import Topology

pytestmark = pytest.mark.lab

Rule = Callable[[Outcome], bool]


def never(o: Outcome) -> bool:
    return False


def via_nat(o: Outcome) -> bool:
    """Paths that go through the client node's kube-proxy NAT: ClusterIP, DNS via kube-dns, the ingress."""
    return o.path in ("cluster_ip", "ingress") or (o.path == "dns" and o.via == "service")


@dataclass(frozen=True)
class Case:
    scenario: str
    node: str | None
    must_fail: Rule
    may_fail: Rule = never
    rate: float | None = None
    rounds: int = 1  # probe rounds; with a rate, "must fail" means: failed in at least one round
    ingress_status: int | None = None  # the HTTP status the failing ingress targets must show


CASES = [
    Case("clusterip-nat", "node2", lambda o: o.node == "node2" and via_nat(o), ingress_status=504),
    Case("forward-drop-dnat", "node2", lambda o: o.node == "node2" and via_nat(o), ingress_status=504),
    Case("dns-clusterip", "node2", lambda o: o.node == "node2" and o.path == "dns" and o.via == "service"),
    Case("dns-down", None, lambda o: o.path == "dns"),
    # node3 hosts no app replica and no CoreDNS: from it everything is remote, to it only its exporter
    Case("overlay-down", "node3", lambda o: o.node == "node3" or o.target_node == "node3", ingress_status=504),
    Case("vxlan-blocked", "node3", lambda o: o.node == "node3" or o.target_node == "node3", ingress_status=504),
    Case(
        "intermittent-loss",
        "node2",
        lambda o: o.node == "node2" and o.key in ("svc-keybuzz-front/tcp", "kube-dns/udp", "kube-dns/tcp"),
        may_fail=lambda o: o.node == "node2" and via_nat(o),
        rate=0.9,
        rounds=3,
    ),
    Case("mtu-blackhole", None, lambda o: o.name.endswith("-big") and o.target_node != o.node),
    Case("udp-dns-loss", None, lambda o: o.key == "kube-dns/udp", rate=0.9, rounds=4),
    # CoreDNS is on node1 and the only kube-dns endpoint: its replies are bridged past conntrack
    Case(
        "bridge-nf-off",
        "node1",
        lambda o: o.node == "node1" and o.name == "kube-dns",
        may_fail=lambda o: o.node == "node1" and via_nat(o),
    ),
    Case("backend-slow", None, lambda o: o.name.endswith("-slow"), ingress_status=504),
    # the app's port refuses: its pod IPs (connect and /big), its ClusterIP and the ingress (502)
    Case(
        "backend-down",
        None,
        lambda o: o.name.startswith("keybuzz-front") or o.name == "svc-keybuzz-front" or o.path == "ingress",
        ingress_status=502,
    ),
    Case("dns-wrong-answer", None, lambda o: o.path == "dns"),
]


def test_every_scenario_has_a_case() -> None:
    assert {c.scenario for c in CASES} == set(scenarios.SCENARIOS)


def path_mtu_caches(lab: Topology) -> dict[str, str]:
    """What each namespace has cached per destination (a learned path MTU lets big segments through)."""
    caches = {ns: netns.ns_exec(ns, ["ip", "route", "show", "cache"], check=False) for ns in lab.namespaces}
    return {ns: out.strip() for ns, out in caches.items() if out.strip()}


def describe(o: Outcome) -> str:
    return f"{o.node}->{o.key} {o.reason} {o.record.get('http_status', '')} {o.record.get('detail', '')[:80]}"


@pytest.mark.parametrize("case", CASES, ids=[c.scenario for c in CASES])
def test_scenario(lab: Topology, case: Case) -> None:
    try:
        scenarios.break_(lab, case.scenario, case.node, case.rate)
        scenarios.break_(lab, case.scenario, case.node, case.rate)  # idempotent: twice is once
        rounds = [[o for out in probe_nodes(lab).values() for o in out.values()] for _ in range(case.rounds)]
        for outcomes in rounds:
            for o in outcomes:
                if o.ok:
                    continue
                assert case.must_fail(o) or case.may_fail(o), f"unexpected failure: {describe(o)}"
                if case.ingress_status and o.path == "ingress" and case.must_fail(o):
                    assert o.record.get("http_status") == case.ingress_status, describe(o)
        expected = {(o.node, o.key) for o in rounds[0] if case.must_fail(o)}
        assert expected, "the case expects no failure at all"
        failed = [{(o.node, o.key) for o in outcomes if not o.ok} for outcomes in rounds]
        if case.rate is None:  # deterministic: fails every time
            for i, f in enumerate(failed):
                assert expected <= f, (
                    f"round {i}: expected to fail but passed: {sorted(expected - f)}; {path_mtu_caches(lab)}"
                )
        else:  # a fraction of packets: fails at least once
            assert expected <= set().union(*failed), f"never failed: {sorted(expected - set().union(*failed))}"
    finally:
        scenarios.heal(lab, case.scenario)
    healed = probe_nodes(lab)
    failing = sorted(describe(o) for out in healed.values() for o in out.values() if not o.ok)
    assert failing == [], "still failing after heal"
