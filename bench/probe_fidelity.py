"""`netpath-exporter probe` against the running exporter: the same paths, in the same lab, in the same minute.

Builds the lab (3 nodes, the exporters as venv processes with the lab's configs), lets the exporters probe for
a few intervals, then runs `netpath-exporter probe --json` in every exporter pod (as an operator would, with
that exporter's config) `--rounds` times, and reads each running exporter's typical latency per target from its
/diagnose (`typical_seconds`: the median of the successful probes in its window), right after each round.

Per target and round: ratio = the one-shot probe's duration / the running exporter's typical duration. Reported
per path class (the median and the worst ratio over targets and rounds) and per kind, with the absolute medians.
Only targets that succeeded in both are compared. Every request is bounded (lab.probe's timeouts); the lab is
torn down at the end, also on failure. Needs root (network namespaces), like the lab.

Run: `.venv/bin/python bench/probe_fidelity.py [--rounds 5] [--settle 30]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import cluster, netns  # noqa: E402
from lab.exporters import exporter_bin  # noqa: E402
from lab.probe import PROBE_RUN_TIMEOUT, probe_nodes  # noqa: E402
from lab.topology import EXPORTER, Topology  # noqa: E402


def typical(topo: Topology, node: str) -> dict[str, float]:
    """name/transport → the running exporter's typical_seconds, from its /diagnose, read inside its pod."""
    pod = topo.pod_on(EXPORTER, node)
    url = f"http://{pod.ip}:{pod.ports['metrics']}"
    argv = ["ip", "netns", "exec", netns.check_name(pod.netns), exporter_bin(), "diagnose", "--url", url, "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_RUN_TIMEOUT)
    doc = json.loads(done.stdout)
    return {
        f"{t['name']}/{t['transport']}": float(t["typical_seconds"])
        for t in doc["targets"]
        if t["typical_seconds"] is not None and t["from"] == "pod"
    }


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds the exporters probe before round 1")
    args = parser.parse_args()
    ratios: dict[str, list[float]] = defaultdict(list)
    one_shot: dict[str, list[float]] = defaultdict(list)
    running: dict[str, list[float]] = defaultdict(list)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with cluster.exclusive():
        cluster.down()
        try:
            topo = cluster.up(3, 1500)
            time.sleep(args.settle)
            for _ in range(args.rounds):
                results = probe_nodes(topo)
                for node, outcomes in results.items():
                    exporter_view = typical(topo, node)
                    for key, outcome in outcomes.items():
                        if not outcome.ok or key not in exporter_view:
                            continue
                        group = f"{outcome.path} · {outcome.record['kind']}"
                        ratios[group].append(outcome.record["duration"] / exporter_view[key])
                        one_shot[group].append(outcome.record["duration"])
                        running[group].append(exporter_view[key])
                time.sleep(2)
        finally:
            cluster.down()
    print(
        f"Run: `.venv/bin/python bench/probe_fidelity.py {' '.join(sys.argv[1:])}`"
        + f" on {platform.machine()}, Python {platform.python_version()}, started {started}; "
        f"{args.rounds} rounds, 3 nodes.\n"
    )
    print("| path · kind | comparisons | `probe` median | running exporter median | ratio median | ratio max |")
    print("|---|---|---|---|---|---|")
    for group in sorted(ratios):
        r = ratios[group]
        print(
            f"| {group} | {len(r)} | {fmt(statistics.median(one_shot[group]))} | "
            f"{fmt(statistics.median(running[group]))} | {statistics.median(r):.2f} | {max(r):.2f} |"
        )
    every = [x for r in ratios.values() for x in r]
    if every:
        print(f"\nAll: {len(every)} comparisons, ratio median {statistics.median(every):.2f}, max {max(every):.2f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
