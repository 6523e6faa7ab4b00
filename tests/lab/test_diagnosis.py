"""The localizer in the lab: every fault scenario, the exporters' own /diagnose, timed from `break` and `heal`.

The lab is built without its own exporters; this module starts one per node from the image, as the chart's DaemonSet
runs it (lab/image.py), with short intervals (probes every 3 s, node facts every 1 s), node facts of the host and
the node perspective, discovery from the lab's API, and the lab's static targets as extraTargets. A poller inside
each exporter pod's namespace (never from the root namespace) reads /diagnose every 0.25 s. The matrix runs on two
layouts (a lab each): the ingress controller on every node, and one controller on node1 reached from every node (the
reported cluster). Per scenario, every node's expected verdict is stated: the expected causes must appear within 3
probe intervals of `break` and be what is held at the end, no node may ever report a named cause its case does not
allow (an affected node may say `unknown` while the fault sets in; a node expected to stay clear may not), and every
node must be clear within 3 intervals of `heal`. The measured matrix is written to out/diagnosis-matrix-<layout>.md
(removed by `make clean`) for docs/diagnosis.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab import cluster, exporters, image, netns, scenarios
from lab.state import state_dir
from lab.topology import EXPORTER, INGRESS_EVERY_NODE, INGRESS_ONE_NODE, Layout, Topology, parse_layout

pytestmark = pytest.mark.lab

# One probe interval for every target: the ingress targets wait up to 3 s for the ingress's own 504, and a
# verdict that explains them clears at their pace, so a shorter interval elsewhere would not clear sooner.
INTERVAL = 3.0
INGRESS_INTERVAL = INTERVAL
FACTS_INTERVAL = 1.0
PEER_REPORTS_INTERVAL = 1.0  # peers' /diagnose read every second: an attribution lags the owner's verdict ≤ 1 s
LOSS_RATE = 0.9
JITTER = 0.1  # the scheduler's default spread of each interval


def deadline(interval: float) -> float:
    # 3 intervals (with jitter), plus 1 s: a probe in flight at break/heal, one poll, one facts reading
    return 3 * interval * (1 + JITTER) + 1.0


DEADLINE = deadline(INTERVAL)
OBSERVE = (
    deadline(INGRESS_INTERVAL) + 3.0
)  # each phase is watched this long, so "stays clear" / "nothing else" is checked too
POLL_EVERY = 0.25

POLLER = """
import json, sys, time, urllib.request
url, until = sys.argv[1], time.time() + float(sys.argv[2])
while time.time() < until:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            doc = json.loads(r.read())
        unknown = sorted(t for v in doc["verdicts"] if v["cause"] == "unknown" for t in v["targets"])
        # a node seeing a peer's named fault (peer reports) is "seen:<peer>": principle 3, not a cause of its own
        causes = sorted(v["cause"] for v in doc["verdicts"]) + ["seen:" + f["node"] for f in doc.get("peer_faults", [])]
        # the unknown targets' own records (target node, Service, health, reasons): what a failure message shows
        fields = ("name", "from", "via", "target_node", "service", "health", "failures", "reasons", "last_http_status")
        unknown_keys = set(unknown)
        records = doc.get("targets", [])
        detail = [{k: r.get(k) for k in fields} for r in records if r["name"] + "/" + r["transport"] in unknown_keys]
        failing = sorted(r["name"] for r in records if r["health"] in ("flaky", "down"))
        line = {"t": time.time(), "causes": causes, "unknown": unknown, "detail": detail, "failing": failing}
        print(json.dumps(line), flush=True)
    except Exception as exc:
        print(json.dumps({"t": time.time(), "error": str(exc)}), flush=True)
    time.sleep(float(sys.argv[3]))
"""


def diagnosing_config(topo: Topology, node: str) -> dict[str, Any]:
    config = exporters.config_for(topo, node)
    config["defaults"] = {"interval": INTERVAL, "timeout": exporters.PROBE_TIMEOUT}
    config["node_facts"]["interval"] = FACTS_INTERVAL
    for target in config["targets"]:
        if target["path"] == "ingress":
            target["interval"] = INGRESS_INTERVAL
    return config


def diagnosing_values(topo: Topology, node: str) -> dict[str, Any]:
    """The chart's values for the matrix: the lab's image values (node facts of the host, node perspective,
    discovery from the lab's API) at the matrix's cadence, the lab's static targets as extraTargets, and no
    discovered ingress: reached through the controllers' ClusterIP it lands on other nodes' controllers, which the
    per-node expectations below do not model yet (issue 13)."""
    values = image.lab_values(topo, node, **image.LAB_EXPORTER_VALUES)
    static = diagnosing_config(topo, node)["targets"]
    values["probes"] = {**values["probes"], "interval": f"{INTERVAL:g}s", "extraTargets": static}
    values["nodeFacts"] = {**values["nodeFacts"], "interval": f"{FACTS_INTERVAL:g}s"}
    values["cluster"] = {**values["cluster"], "ingressControllerService": ""}
    values["peerReports"] = {"enabled": True, "interval": f"{PEER_REPORTS_INTERVAL:g}s"}
    return values


def start_diagnosing_exporters(topo: Topology) -> None:
    image.start_lab_exporters(topo, state_dir() / "volumes", values_for=lambda node: diagnosing_values(topo, node))


FAILING_TARGETS: dict[str, list[str]] = {}  # node → its targets failing now (flaky or down), at the last poll
# node → the records of its last unknown verdict's targets (for failure messages)
UNKNOWN_TARGETS: dict[str, list[Any]] = {}


def watch(topo: Topology, seconds: float) -> dict[str, list[tuple[float, frozenset[str]]]]:
    """Every node's verdicts over `seconds`, polled from inside its exporter pod: (Unix time, causes)."""
    # Each poller writes to a file of its own, not a pipe: the parent waits for the pollers one by one, and a
    # pipe's 64 KiB fill in seconds with the failure details, blocking the others' polls mid-phase.
    out: dict[str, list[tuple[float, frozenset[str]]]] = {}
    with contextlib.ExitStack() as files:
        children = {}
        for pod in topo.pods_of(EXPORTER):
            url = f"http://{pod.ip}:{pod.ports['metrics']}/diagnose"
            argv = [sys.executable, "-c", POLLER, url, str(seconds), str(POLL_EVERY)]
            sink = files.enter_context(tempfile.TemporaryFile("w+"))
            argv = ["ip", "netns", "exec", netns.check_name(pod.netns), *argv]
            children[pod.node] = (subprocess.Popen(argv, stdout=sink, text=True), sink)
        for node, (child, sink) in children.items():
            try:
                child.wait(timeout=seconds + 10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            sink.seek(0)
            lines = [json.loads(line) for line in sink.read().splitlines() if line.strip()]
            out[node] = [(line["t"], frozenset(line["causes"])) for line in lines if "causes" in line]
            FAILING_TARGETS[node] = next((ln["failing"] for ln in reversed(lines) if "failing" in ln), ["no answer"])
            UNKNOWN_TARGETS[node] = next((ln["detail"] for ln in reversed(lines) if ln.get("unknown")), [])
    return out


@dataclass(frozen=True)
class Case:
    scenario: str
    node: str | None  # None: the scenario's default nodes
    # node → the causes it must report, for EVERY node (an empty set: none); a bystander that only sees the
    # fault through another node's component says `seen:<that node>` (its peer report explains the failures),
    # `unknown` or nothing while that sets in, never another named cause
    expect: dict[str, set[str]]
    rate: float | None = None
    interval: float = INTERVAL  # the interval of the targets that carry the evidence
    # node → causes it may report at times without having to (a bystander seeing an intermittent fault through
    # the ingress on the broken node: `unknown` while its window shows the failures)
    tolerate: dict[str, set[str]] = field(default_factory=dict)


NONE: set[str] = set()

# The layouts the matrix runs on in `make test`, a lab each: a controller on every node, and the reported cluster's
# (one controller, on node1, with CoreDNS and the first app replica). NETPATH_LAYOUTS="seed:12 seed:0 …" runs
# layouts drawn from seeds instead (`make test-layouts`); every case below is derived from the layout, so any seed
# states its expectations on every node.
CI_LAYOUTS = (INGRESS_EVERY_NODE, INGRESS_ONE_NODE)
LAYOUTS = tuple(os.environ.get("NETPATH_LAYOUTS", "").split()) or CI_LAYOUTS
# How long the healthy lab is watched for a verdict: 2 intervals in CI's budget; `make test-soak` watches the
# acceptance's 10 minutes (NETPATH_HEALTHY_SOAK=600) on the reported layout.
HEALTHY_WATCH = float(os.environ.get("NETPATH_HEALTHY_SOAK", 2 * INTERVAL))

# Where the named layouts break the per-node scenarios (the nodes their rules were first checked on)
NAMED_FAULT_NODES = {
    INGRESS_EVERY_NODE: {
        "clusterip-nat": "node2",
        "bridge-nf-off": "node1",
        "overlay-down": "node3",
        "vxlan-blocked": "node3",
    },
    # the reported picture: the broken node is the ingress controller's own
    INGRESS_ONE_NODE: {
        "clusterip-nat": "node1",
        "bridge-nf-off": "node1",
        "overlay-down": "node3",
        "vxlan-blocked": "node3",
    },
}


def fault_node(place: Layout, scenario: str) -> str:
    """The node a per-node scenario breaks: fixed for the named layouts (node2 unless listed), drawn from the seed
    for the others — any node, except bridge-nf-off, which needs an app replica on the node to show at all."""
    if place.name in NAMED_FAULT_NODES:
        return NAMED_FAULT_NODES[place.name].get(scenario, "node2")
    rng = random.Random(f"{place.name}/{scenario}")
    return f"node{rng.choice(place.front if scenario == 'bridge-nf-off' else range(1, place.nodes + 1))}"


def node_names(place: Layout) -> list[str]:
    return [f"node{i}" for i in range(1, place.nodes + 1)]


def cases(place: Layout) -> list[Case]:
    """The matrix for one layout, every node's verdict derived from where things run. With a controller on every
    node, each node probes its own; with one controller, every node probes that one, so a fault of the
    controller's node's Service path shows on the others through it only: they say `seen:<that node>` (its peer
    report explains their failures), never a cause of their own."""
    nodes = node_names(place)
    one_ingress = f"node{place.ingress[0]}" if len(place.ingress) == 1 < place.nodes else None

    def on(causes: dict[str, set[str]]) -> dict[str, set[str]]:
        return {n: causes.get(n, NONE) for n in nodes}

    def everywhere(cause: str) -> dict[str, set[str]]:
        return {n: {cause} for n in nodes}

    def through_ingress(broken: str) -> dict[str, set[str]]:
        """The bystanders' `seen:<broken>` when the only ingress controller runs on the broken node."""
        return {n: {f"seen:{broken}"} for n in nodes if n != broken} if broken == one_ingress else {}

    def only(scenario: str, cause: str) -> Case:
        broken = fault_node(place, scenario)
        return Case(scenario, broken, on({**through_ingress(broken), broken: {cause}}))

    def flaky(scenario: str, cause: str, **kw: Any) -> Case:
        # a bystander seeing an intermittent fault through the ingress on the broken node: `unknown` while its
        # window shows the failures, `seen:` when the broken node's report explains them; neither is required
        broken = fault_node(place, scenario)
        bystanders = {n: {"unknown", f"seen:{broken}"} for n in through_ingress(broken)}
        return Case(scenario, broken, on({broken: {cause}}), tolerate=bystanders, **kw)

    def overlay(scenario: str) -> Case:
        # With one controller, on a node the overlay still reaches, another node's requests through it fail only
        # when it picks a replica behind the broken overlay: legs of the controller's node, not theirs. Beside
        # their own overlay_down the others may say `seen:<controller's node>` (its report explains them) or,
        # when its own probes happened to pass, `unknown` for those requests (found on seed:0)
        broken = fault_node(place, scenario)
        through: dict[str, set[str]] = {}
        if one_ingress not in (None, broken):
            through = {n: {"unknown", f"seen:{one_ingress}"} for n in nodes if n not in (one_ingress, broken)}
        return Case(scenario, broken, everywhere("overlay_down"), tolerate=through)

    # each node with a controller of its own has observed every leg of the request; with one controller, only
    # its node has, and the others see that node's verdict through it
    slow = everywhere("backend_slow")
    if one_ingress:
        slow = on({**{n: {f"seen:{one_ingress}"} for n in nodes}, one_ingress: {"backend_slow"}})
    return [
        only("clusterip-nat", "clusterip_nat_broken"),
        only("forward-drop-dnat", "forward_drop"),
        # only the kube-dns ClusterIP rules: the ingress reaches the app by ClusterIP, not by name
        Case(
            "dns-clusterip",
            fault_node(place, "dns-clusterip"),
            on({fault_node(place, "dns-clusterip"): {"dns_service_path"}}),
        ),
        Case("dns-down", None, everywhere("coredns_down")),
        # the other nodes lose the broken node's pods: their verdict names that node, which is what broke for them
        overlay("overlay-down"),
        overlay("vxlan-blocked"),
        # The localizer must name a cause within 3 probes, so these run at 90 % loss: at 50 % a 3-probe window
        # misses the pattern about a third of the time. Low rates are the alerts' job, over longer windows.
        flaky("intermittent-loss", "forward_drop", rate=LOSS_RATE),
        Case("mtu-blackhole", None, everywhere("mtu_blackhole")),
        Case("udp-dns-loss", None, everywhere("conntrack_race"), rate=LOSS_RATE),
        # the broken node's Service paths fail only when kube-proxy picks a replica on that node
        flaky("bridge-nf-off", "bridge_nf_off"),
        Case("backend-slow", None, slow, interval=INGRESS_INTERVAL),
        Case("backend-down", None, everywhere("backend_down")),
        Case("dns-wrong-answer", None, everywhere("dns_bad_answer")),
    ]


MATRIX = [(layout, case) for layout in LAYOUTS for case in cases(parse_layout(layout))]


@dataclass
class Matrix:
    layout: str
    rows: list[str] = field(default_factory=list)

    def write(self) -> Path:
        path = Path(__file__).resolve().parents[2] / "out" / f"diagnosis-matrix-{self.layout.replace(':', '-')}.md"
        path.parent.mkdir(exist_ok=True)
        header = (
            "| scenario | broken on | verdicts at the end of the break phase | seconds to verdict | seconds to clear |"
        )
        path.write_text("\n".join([header, "|---|---|---|---|---|", *self.rows]) + "\n")
        return path


@pytest.fixture(scope="module", params=LAYOUTS)
def diag_lab(request: pytest.FixtureRequest) -> Iterator[tuple[Topology, Matrix]]:
    layout: str = request.param
    reason = image.podman_unavailable()
    if reason:
        pytest.skip(reason)
    image.build()  # seconds when nothing changed
    with cluster.exclusive():  # another session (the lab tests, the demo) may be using the lab
        cluster.down()  # under the lock, a lab that exists is a crashed run's
        matrix = Matrix(layout)
        try:
            topo = cluster.up(with_exporters=False, layout=layout)
            print(f"\nlayout {topo.placement.summary()}")
            start_diagnosing_exporters(topo)
            yield topo, matrix
        finally:
            cluster.down()
            if matrix.rows:
                print(f"\nlocalizer matrix: {matrix.write()}")
            assert netns.lab_namespaces() == []


def settle(topo: Topology) -> None:
    """Wait until no node has a target failing now (flaky or down), so a case's failures start a bout of their
    own: the first case of a run would otherwise see start-up's failures in it (a peer exporter not yet
    listening answers refused, which rules out a silent overlay); later cases find that already true."""
    until = time.time() + 3 * DEADLINE
    while time.time() < until:
        watch(topo, 0.5)
        if not any(FAILING_TARGETS.values()):
            return
    pytest.fail(f"the lab's windows did not clear before the break: {FAILING_TARGETS}")


def first_time(samples: list[tuple[float, frozenset[str]]], holds: Any) -> float | None:
    return next((t for t, causes in samples if holds(causes)), None)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_scenario_has_a_case_stating_every_node(layout: str) -> None:
    place = parse_layout(layout)
    assert {c.scenario for c in cases(place)} == set(scenarios.SCENARIOS)
    assert all(set(c.expect) == set(node_names(place)) for c in cases(place))


def test_a_healthy_lab_has_no_verdict(diag_lab: tuple[Topology, Matrix]) -> None:
    topo, _ = diag_lab
    time.sleep(3 * INTERVAL)  # let every window fill past the minimum
    seen = watch(topo, HEALTHY_WATCH)
    for node, samples in seen.items():
        assert samples, f"{node}: /diagnose never answered"
        assert all(not causes for _, causes in samples), f"{node}: {samples}"


@pytest.mark.parametrize("scenario", list(scenarios.SCENARIOS))
def test_scenario_is_named_on_the_affected_nodes_and_cleared_after_heal(
    diag_lab: tuple[Topology, Matrix], scenario: str
) -> None:
    topo, matrix = diag_lab
    case = next(c for c in cases(topo.placement) if c.scenario == scenario)
    every_node = node_names(topo.placement)
    scenarios.heal(topo)
    settle(topo)
    broke_at = time.time()
    nodes = scenarios.break_(topo, case.scenario, case.node, case.rate)
    try:
        during = watch(topo, OBSERVE)
    finally:
        healed_at = time.time()
        scenarios.heal(topo, case.scenario)
    unknown_during = dict(UNKNOWN_TARGETS)  # the next watch overwrites it
    after = watch(topo, OBSERVE)

    to_verdict: dict[str, float | None] = {}
    problems = []
    for node in every_node:
        expected = case.expect[node]
        # while a fault sets in, an affected node may say `unknown` (what fails, nothing named yet): never a
        # named cause its case does not state; a node expected to stay clear may not even say `unknown`
        # `seen:<peer>` refines that `unknown`: allowed where it is, for a peer the case expects to name a cause
        seeing = {
            f"seen:{n}"
            for n in every_node
            if n != node and case.expect[n] - {"unknown"} and not any(c.startswith("seen:") for c in case.expect[n])
        }
        allowed = expected | case.tolerate.get(node, NONE) | ({"unknown", *seeing} if expected else NONE)
        samples = during[node]
        never_allowed = [(round(t - broke_at, 1), sorted(c - allowed)) for t, c in samples if c - allowed]
        if never_allowed:
            problems.append(f"{node}: reported causes the case does not allow: {never_allowed[:3]}")
        if expected:
            t = first_time(samples, lambda causes, e=expected: e <= causes)
            to_verdict[node] = None if t is None else t - broke_at
            if t is None or t - broke_at > deadline(case.interval):
                problems.append(f"{node}: {sorted(expected)} not within {deadline(case.interval):.1f}s: {samples[-3:]}")
            end = samples[-1][1] if samples else frozenset()
            # what the case tolerates may be held at the end too, beside the expected causes
            if not expected <= set(end) or set(end) - expected - case.tolerate.get(node, NONE):
                problems.append(
                    f"{node}: at the end of the break phase {sorted(end)}, expected {sorted(expected)}"
                    + (f" (unknown: {unknown_during[node]})" if "unknown" in end else "")
                )
    to_clear: dict[str, float | None] = {}
    for node in every_node:
        samples = after[node]
        clear_from = None
        for t, causes in samples:  # the start of the final all-clear stretch
            if causes:
                clear_from = None
            elif clear_from is None:
                clear_from = t
        to_clear[node] = None if clear_from is None else max(0.0, clear_from - healed_at)
        if clear_from is None or clear_from - healed_at > deadline(case.interval):
            problems.append(
                f"{node}: not clear within {deadline(case.interval):.1f}s of heal: {samples[-3:]}"
                + (f" (unknown: {UNKNOWN_TARGETS[node]})" if UNKNOWN_TARGETS.get(node) else "")
            )

    def fmt(values: dict[str, float | None]) -> str:
        return ", ".join(f"{n} {'—' if v is None else f'{v:.1f}'}" for n, v in sorted(values.items()))

    end_state = "; ".join(
        f"{n}: {', '.join(sorted(during[n][-1][1])) or 'none'}" if during[n] else f"{n}: no answer" for n in every_node
    )
    matrix.rows.append(
        f"| `{case.scenario}` | {', '.join(nodes)} | {end_state} | {fmt(to_verdict)} | {fmt(to_clear)} |"
    )
    assert not problems, "\n".join(problems)
