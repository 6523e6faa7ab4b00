"""Runs the exporter's own probes from inside the exporter pods: ``netpath-exporter probe`` per node.

A Python process cannot move one coroutine into another network namespace, so the faithful way to see
what an exporter pod sees is to run the exporter's CLI in that pod's namespace.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from . import netns
from .exporters import config_path, exporter_bin
from .netns import LabError
from .topology import EXPORTER, Topology

PROBE_RUN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Outcome:
    """One target's result, as the exporter's `probe --json` reported it."""

    node: str  # the probing node
    name: str
    transport: str
    path: str
    via: str
    target_node: str
    ok: bool
    reason: str
    record: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.name}/{self.transport}"


def _argv(topo: Topology, node: str, as_json: bool) -> list[str]:
    pod = topo.pod_on(EXPORTER, node)
    cmd = [exporter_bin(), "probe", "--config", str(config_path(node))]
    return ["ip", "netns", "exec", netns.check_name(pod.netns), *cmd, *(["--json"] if as_json else [])]


def probe_nodes(topo: Topology, nodes: list[str] | None = None) -> dict[str, dict[str, Outcome]]:
    """Every target of every (given) node's exporter once, all nodes at the same time."""
    names = nodes or [n.name for n in topo.nodes]
    running = {
        n: subprocess.Popen(_argv(topo, n, True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in names
    }
    results: dict[str, dict[str, Outcome]] = {}
    for node, child in running.items():
        try:
            out, err = child.communicate(timeout=PROBE_RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise LabError(f"netpath-exporter probe on {node}: no result in {PROBE_RUN_TIMEOUT}s") from None
        if child.returncode not in (0, 1):
            raise LabError(f"netpath-exporter probe on {node}: exit {child.returncode}: {err.strip()}")
        records: list[dict[str, Any]] = json.loads(out)
        results[node] = {}
        for r in records:
            o = Outcome(node, r["name"], r["transport"], r["path"], r["via"], r["target_node"], r["ok"], r["reason"], r)
            results[node][o.key] = o
    return results


def table(topo: Topology, node: str) -> str:
    """The exporter's own human-readable table, probed from ``node``'s exporter pod."""
    return netns.run(_argv(topo, node, False), check=False, timeout=PROBE_RUN_TIMEOUT)


def _diagnose_argv(topo: Topology, node: str) -> list[str]:
    """`netpath-exporter diagnose --url` of ``node``'s running exporter, run inside its pod's namespace."""
    pod = topo.pod_on(EXPORTER, node)
    url = f"http://{pod.ip}:{pod.ports['metrics']}"
    return ["ip", "netns", "exec", netns.check_name(pod.netns), exporter_bin(), "diagnose", "--url", url]


def diagnosis(
    topo: Topology, node: str, *, cause: str | None = None, within: float = 30.0, every: float = 2.0
) -> tuple[bool, str]:
    """The running exporter's ``diagnose`` report on ``node``, read from inside its pod.

    Polls (bounded by ``within`` seconds) until the report names ``cause`` — or, with no ``cause``, until the
    exporter reports anything wrong (the command exits 1) — since a verdict needs a couple of probe intervals
    after a fault; returns (named, the last report)."""
    argv = _diagnose_argv(topo, node)
    deadline = time.monotonic() + within
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_RUN_TIMEOUT)
        report = done.stdout + done.stderr
        named = f"[{cause}]" in report if cause is not None else done.returncode == 1
        if named or time.monotonic() + every > deadline:
            return named, report
        time.sleep(every)


def cluster_report(
    topo: Topology, *, from_node: str, headline: str, within: float = 60.0, every: float = 2.0
) -> tuple[bool, str]:
    """`netpath-exporter diagnose --cluster` over every node's running exporter, run inside ``from_node``'s
    exporter pod (as an operator would `kubectl exec` into one). Polls (bounded by ``within``) until the
    report's headline is ``headline`` and no node says `unknown` any more: every bystander's peer reports have
    come in. Returns (reached, the last report)."""
    pod = topo.pod_on(EXPORTER, from_node)
    urls = [f"http://{p.ip}:{p.ports['metrics']}" for p in topo.pods_of(EXPORTER)]
    argv = ["ip", "netns", "exec", netns.check_name(pod.netns), exporter_bin(), "diagnose", "--cluster", *urls]
    deadline = time.monotonic() + within
    while True:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_RUN_TIMEOUT)
        report = done.stdout + done.stderr
        reached = f"Headline: {headline}\n" in report and "[unknown]" not in report
        if reached or time.monotonic() + every > deadline:
            return reached, report
        time.sleep(every)


def clear(topo: Topology, *, within: float = 60.0, every: float = 2.0) -> float | None:
    """Seconds until every node's running exporter reports nothing wrong (``diagnose`` exits 0), or None."""
    begin = time.monotonic()
    pending = {n.name for n in topo.nodes}
    while pending:
        for node in sorted(pending):
            if (
                subprocess.run(_diagnose_argv(topo, node), capture_output=True, timeout=PROBE_RUN_TIMEOUT).returncode
                == 0
            ):
                pending.discard(node)
        if pending and time.monotonic() + every > begin + within:
            return None
        if pending:
            time.sleep(every)
    return time.monotonic() - begin


def discovery_summary(topo: Topology, node: str) -> str:
    """One line: what ``node``'s running exporter discovered from the lab's API, read from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    from . import monitoring

    pod = topo.pod_on(EXPORTER, node)
    text = monitoring.http_get(topo, f"http://{pod.ip}:{pod.ports['metrics']}/metrics")
    up: dict[str, float] = {}
    targets: dict[str, float] = {}
    errors = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "netpath_discovery_up":
                up[s.labels["resource"]] = s.value
            elif s.name == "netpath_discovery_targets":
                targets[s.labels["source"]] = s.value
            elif s.name == "netpath_discovery_errors_total":
                errors += s.value
    if not up:
        return f"{node}: no discovery metrics (discovery not configured)"
    down = sorted(r for r, v in up.items() if v != 1)
    api = f"API up for {len(up) - len(down)}/{len(up)} resources" + (f" (down: {', '.join(down)})" if down else "")
    found = ", ".join(f"{source} {value:g}" for source, value in targets.items())
    return f"{node}: {api}, {errors:g} failed requests; targets discovered: {found}"
