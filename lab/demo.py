"""`make demo`: build the lab in the reported cluster's layout (one ingress controller, on node1, reached from
every node; CoreDNS on node1), show what every exporter sees while healthy, break the ClusterIP NAT hook on
node1 (the reported picture: pod IPs fine, ClusterIPs and DNS failing there, and 504 through node1's ingress
from every node), show it again, heal, tear down, and end with the cluster report of the broken phase (`diagnose
--cluster`: node1 named, node2 and node3 seeing node1's fault). Always tears down, also on Ctrl-C or an error.

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
from .topology import INGRESS_ONE_NODE, Topology

BROKEN_NODE = "node1"  # runs the only ingress controller and CoreDNS: the reported picture
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
    named, report, whole, cluster_text = False, "", False, ""
    try:
        cluster.down()  # leftovers of an interrupted run
        if from_image:
            from . import image

            banner("make image: the container image from the Dockerfile (seconds when nothing changed)")
            image.build()
        how = "from the image, as the chart's DaemonSet runs it" if from_image else "as venv processes (--no-image)"
        banner(
            "lab up: 3 nodes (flannel-like VXLAN, kube-proxy-like NAT, UFW-like firewall), CoreDNS "
            f"(dnsmasq) on node1, keybuzz-front x2, one nginx ingress controller on node1 reached from every node "
            f"(K3s' Traefik behind ServiceLB), one netpath-exporter per node {how}"
        )
        topo = cluster.up(3, 1500, from_image=from_image, ingress=INGRESS_ONE_NODE)
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
            "10.43.0.10 and the ingress (504) failing. node2, node3: their own paths fine, but requests through "
            f"the ingress on {BROKEN_NODE} get 504.",
            flush=True,
        )
        # shown last, as the demo's conclusion
        named, report = probe.diagnosis(topo, BROKEN_NODE, cause="clusterip_nat_broken", within=60)
        whole, cluster_text = probe.cluster_report(
            topo, from_node="node2", headline=f"clusterip_nat_broken on {BROKEN_NODE}", within=60
        )
        banner("what node2's own exporter says: no cause of its own, node1's fault seen through node1's ingress")
        print(probe.diagnosis(topo, "node2", within=0)[1], flush=True)
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
    if cluster_text:
        banner(
            "the cluster report while clusterip-nat was broken on node1: `netpath-exporter diagnose --cluster` "
            "from node2's exporter pod, every node's /diagnose combined"
        )
        print(cluster_text if whole else f"(not every node's view settled within 60 s)\n{cluster_text}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
