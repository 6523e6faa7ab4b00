"""Soak: a healthy lab, exporters with short intervals, /diagnose read on every node for 10 minutes.

Expected result: zero verdicts on every node. Any verdict is printed with its time and evidence, because in a
healthy lab it is a false positive of the localizer (or a lab flake worth knowing about). Not part of
`make test`: run as root, `.venv/bin/python bench/soak.py [--minutes 10] [--interval 1]`. Builds its own lab
(refuses if one exists) and always tears it down. Exit 0 with zero verdicts, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import cluster, exporters, netns, workloads
from lab.state import LabState, state_dir
from lab.topology import EXPORTER, Topology

POLLER = """
import json, sys, time, urllib.request
url, until, every = sys.argv[1], time.time() + float(sys.argv[2]), float(sys.argv[3])
while time.time() < until:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            doc = json.loads(r.read())
        print(json.dumps({"t": time.time(), "verdicts": doc["verdicts"]}), flush=True)
    except Exception as exc:
        print(json.dumps({"t": time.time(), "error": str(exc)}), flush=True)
    time.sleep(every)
"""


def start_exporters(topo: Topology, interval: float, facts_interval: float) -> None:
    state = LabState.load()
    for pod in topo.pods_of(EXPORTER):
        config = exporters.config_for(topo, pod.node)
        config["defaults"] = {"interval": interval, "timeout": exporters.PROBE_TIMEOUT}
        config["node_facts"]["interval"] = facts_interval
        for target in config["targets"]:
            # a target's timeout may not exceed its interval: the ingress waits out nginx's upstream timeout
            timeout = target.get("timeout", exporters.PROBE_TIMEOUT)
            target["interval"] = max(interval, timeout)
        path = state_dir() / "soak" / f"{pod.node}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [exporters.exporter_bin(), "run", "--config", str(path)]
        workloads.start(state, f"exporter/{pod.name}", pod, argv, pod.ports["metrics"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval, seconds (default 1)")
    parser.add_argument("--facts-interval", type=float, default=2.0, help="node facts interval (default 2)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between /diagnose reads (default 1)")
    args = parser.parse_args()
    with cluster.exclusive():  # wait for other lab users (tests, the demo)
        if netns.lab_namespaces():
            # a crashed run's lab: never tear down what this script did not build
            print("soak: a lab exists already; run `python -m lab down` first if it is yours", file=sys.stderr)
            return 2
        return soak(args)


def soak(args: argparse.Namespace) -> int:
    seconds = args.minutes * 60
    try:
        topo = cluster.up(3, 1500, with_exporters=False)
        start_exporters(topo, args.interval, args.facts_interval)
        time.sleep(3 * args.interval + args.facts_interval)  # windows past their minimum before counting
        children = {}
        for pod in topo.pods_of(EXPORTER):
            url = f"http://{pod.ip}:{pod.ports['metrics']}/diagnose"
            argv = [sys.executable, "-c", POLLER, url, str(seconds), str(args.poll)]
            children[pod.node] = subprocess.Popen(
                ["ip", "netns", "exec", netns.check_name(pod.netns), *argv], stdout=subprocess.PIPE, text=True
            )
        started = time.time()
        total_polls = total_verdicts = total_errors = 0
        for node, child in children.items():
            out, _ = child.communicate(timeout=seconds + 30)
            lines = [json.loads(line) for line in out.splitlines() if line.strip()]
            polls = [line for line in lines if "verdicts" in line]
            errors = [line for line in lines if "error" in line]
            held = [line for line in polls if line["verdicts"]]
            total_polls += len(polls)
            total_errors += len(errors)
            total_verdicts += len(held)
            print(f"{node}: {len(polls)} reads of /diagnose, {len(held)} with a verdict, {len(errors)} errors")
            for line in held[:10]:
                for verdict in line["verdicts"]:
                    print(f"  +{line['t'] - started:.0f}s {verdict['cause']}: {verdict['evidence'][:3]}")
        print(
            f"soak: {args.minutes:g} min, probe interval {args.interval:g} s, facts every {args.facts_interval:g} s, "
            f"3 nodes: {total_polls} reads, {total_verdicts} with a verdict, {total_errors} read errors"
        )
        return 0 if total_verdicts == 0 and total_errors == 0 else 1
    finally:
        cluster.down()


if __name__ == "__main__":
    sys.exit(main())
