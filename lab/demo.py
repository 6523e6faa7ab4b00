"""`make demo`: build the lab, show what every exporter sees while healthy, break the ClusterIP NAT hook on
node2 (the reported pattern: pod IPs fine, ClusterIPs and DNS failing, 504 at the ingress from that node),
show it again, heal, tear down. Always tears down, also on Ctrl-C or an error.

The exporters run from the container image (`make image`'s build, done first), started as the chart's DaemonSet
runs them (lab/image.py); ``--no-image`` runs them as venv processes instead, the quick developer path.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

from . import cluster, monitoring, netns, probe, scenarios
from .netns import LabError
from .topology import Topology

BROKEN_NODE = "node2"
ALERT_WAIT = 120.0  # seconds: the differential needs 10 probes in its window and `for: 1m`


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def tables(topo: Topology) -> None:
    for node in topo.nodes:
        print(probe.table(topo, node.name), flush=True)


def discovery(topo: Topology) -> None:
    for node in topo.nodes:
        print(probe.discovery_summary(topo, node.name), flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--no-image", action="store_true", help="exporters as venv processes, not the image")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("lab demo: needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    with cluster.exclusive():
        return _demo(started, from_image=not args.no_image)


def _demo(started: float, *, from_image: bool) -> int:
    named, report = False, ""
    try:
        cluster.down()  # leftovers of an interrupted run
        if from_image:
            from . import image

            banner("make image: the container image from the Dockerfile (seconds when nothing changed)")
            image.build()
        how = "from the image, as the chart's DaemonSet runs it" if from_image else "as venv processes (--no-image)"
        banner(
            "lab up: 3 nodes (flannel-like VXLAN, kube-proxy-like NAT, UFW-like firewall), CoreDNS "
            f"(dnsmasq), keybuzz-front x2, nginx ingress per node, one netpath-exporter per node {how}"
        )
        topo = cluster.up(3, 1500, from_image=from_image)
        monitoring.start(topo)  # Prometheus + Alertmanager in nplab-node1, scraping as the operator would
        print(cluster.status(), flush=True)
        if from_image:
            banner(
                "discovery: each exporter reads the lab's API in-cluster (service-account token and CA, TLS) at the "
                "`kubernetes` ClusterIP 10.43.0.1 — through the node's kube-proxy NAT, like every pod"
            )
            discovery(topo)
        banner("healthy: what every exporter pod sees")
        tables(topo)
        took = probe.clear(topo)
        print(
            f"every exporter's own diagnosis clear after {took:.0f} s"
            if took is not None
            else "(not every exporter's diagnosis was clear within 60 s: startup noise; see the reports)",
            flush=True,
        )
        banner(f"break clusterip-nat on {BROKEN_NODE}: PREROUTING/OUTPUT no longer jump to KUBE-SERVICES")
        scenarios.break_(topo, "clusterip-nat", BROKEN_NODE)
        tables(topo)
        print(
            f"\nexpected on {BROKEN_NODE}: pod IPs and CoreDNS-by-pod-IP fine; the ClusterIP, DNS via "
            "10.43.0.10 and the ingress (504) failing. Other nodes: all fine.",
            flush=True,
        )
        # shown last, as the demo's conclusion
        named, report = probe.diagnosis(topo, BROKEN_NODE, cause="clusterip_nat_broken", within=60)
        banner(
            f"alerts in Prometheus and Alertmanager ({topo.nodes[0].netns}): the chart's ServiceMonitor scrape and "
            "PrometheusRule, the example routes"
        )
        fired = monitoring.wait_firing(topo, "NetpathClusterIPPathFailing", ALERT_WAIT, source_node=BROKEN_NODE)
        if not fired:
            print(f"(NetpathClusterIPPathFailing for {BROKEN_NODE} not firing within {ALERT_WAIT:.0f} s)", flush=True)
        print(monitoring.report(topo, pending=False), flush=True)
        if from_image:
            banner(f"discovery with clusterip-nat broken: {BROKEN_NODE} cannot reach the API either, keeps its targets")
            discovery(topo)
        banner("heal")
        print("healed:", ", ".join(scenarios.heal(topo)) or "nothing", flush=True)
        tables(topo)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"lab demo: {exc}", file=sys.stderr)
        return 1
    finally:
        removed = cluster.down()
        left = netns.lab_namespaces()
        print(
            f"\nlab down: removed {len(removed)} namespaces, {len(left)} left; "
            f"demo took {time.monotonic() - started:.0f}s",
            flush=True,
        )
    if report:
        banner(f"what `netpath-exporter diagnose` said on {BROKEN_NODE} while clusterip-nat was broken")
        print(report if named else f"(clusterip_nat_broken not named within 60 s)\n{report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
