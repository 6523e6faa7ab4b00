"""One netpath-exporter per node: its config, written from the topology, and its process.

Each exporter probes, from its pod: the other exporters and every app replica by pod IP (connect, and
/big for a complete large response), the app's ClusterIP, DNS through the kube-dns ClusterIP and straight
to each CoreDNS pod (UDP and TCP), and the ingress controller on its own node with the ingress Host
(``/`` and ``/slow``). The config is the exporter's own YAML schema (exporter/config.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from . import workloads
from .state import LabState, state_dir
from .topology import API, COREDNS, EXPORTER, FRONT, INGRESS, Topology

PROBE_TIMEOUT = 1.0  # seconds, most targets: short, so a broken path is found fast
FACTS_INTERVAL = 5.0  # seconds between node-facts reads (iptables-save in the node namespace)
INGRESS_TIMEOUT = 3.0  # longer than the ingress's upstream timeouts, so its 504 is seen, not our timeout
PROBE_INTERVAL = 5.0
BIG_MIN_BYTES = 64 * 1024


def exporter_bin() -> str:
    return str(Path(sys.executable).with_name("netpath-exporter"))


def config_path(node: str) -> Path:
    return state_dir() / "exporters" / f"{node}.yaml"


def config_for(topo: Topology, node: str, with_discovery: bool = False) -> dict[str, Any]:
    """``node``'s exporter config. ``with_discovery``: the exporter also discovers the lab from its API
    (lab/apiserver.py), so the targets discovery makes from the lab's objects are left out — the other exporters
    (``peer/<node>``), the app's replicas by pod IP (``ep/…``) and its ClusterIP (``svc/…``); what stays is what
    discovery does not do: /big, the DNS checks that expect the app's ClusterIP, the ingress on the pod IP."""
    me = topo.pod_on(EXPORTER, node)
    targets: list[dict[str, Any]] = []
    for peer in topo.pods_of(EXPORTER):
        if peer.node != node and not with_discovery:
            targets.append(
                {
                    "name": f"exporter-{peer.node}",
                    "kind": "tcp",
                    "path": "pod_ip",
                    "target_node": peer.node,
                    "address": f"{peer.ip}:{peer.ports['metrics']}",
                }
            )
    front = topo.service(FRONT)
    for pod in topo.pods_of(FRONT):
        port = pod.ports["http"]
        if not with_discovery:
            targets.append(
                {
                    "name": pod.name,
                    "kind": "tcp",
                    "path": "pod_ip",
                    "target_node": pod.node,
                    "service": front.key,
                    "address": f"{pod.ip}:{port}",
                }
            )
        targets += [
            {
                "name": f"{pod.name}-big",
                "kind": "http",
                "path": "pod_ip",
                "target_node": pod.node,
                "service": front.key,
                "url": f"http://{pod.ip}:{port}/big",
                "min_body_bytes": BIG_MIN_BYTES,
            },
        ]
    if not with_discovery:
        for service in [s for s in topo.services if s.name in (FRONT, API)]:  # keybuzz-api: over the same pods
            targets.append(
                {
                    "name": f"svc-{service.name}",
                    "kind": "tcp",
                    "path": "cluster_ip",
                    "service": service.key,
                    "address": f"{service.cluster_ip}:{service.ports[0].port}",
                }
            )
    dns = topo.service(COREDNS)
    query = front.dns_name
    targets.append(
        {
            "name": "kube-dns",
            "kind": "dns",
            "path": "dns",
            "via": "service",
            "service": dns.key,
            "address": dns.cluster_ip,
            "transports": ["udp", "tcp"],
            "query": query,
            "expect": [front.cluster_ip],
        }
    )
    for pod in topo.pods_of(COREDNS):
        targets.append(
            {
                "name": pod.name,
                "kind": "dns",
                "path": "dns",
                "via": "pod",
                "target_node": pod.node,
                "service": dns.key,
                "address": pod.ip,
                "transports": ["udp", "tcp"],
                "query": query,
                "expect": [front.cluster_ip],
            }
        )
    # the controller on this node (every-node layout), else the one every node reaches (one-node layout)
    controllers = [p for p in topo.pods_of(INGRESS) if p.node == node] or topo.pods_of(INGRESS)
    ingress_svc = topo.service("ingress-nginx-controller")
    for ingress in controllers:
        for suffix, url_path in (("", "/"), ("-slow", "/slow")):
            targets.append(
                {
                    "name": f"ingress-{ingress.node}{suffix}",
                    "kind": "http",
                    "path": "ingress",
                    "target_node": ingress.node,
                    "service": ingress_svc.key,
                    "url": f"http://{ingress.ip}{url_path}",
                    "host": topo.ingress_host,
                    "expect_status": [200],
                    "timeout": INGRESS_TIMEOUT,
                }
            )
    return {
        "source_node": node,
        "listen": f"{me.ip}:{me.ports['metrics']}",
        "perspective": "pod",
        "defaults": {"interval": PROBE_INTERVAL, "timeout": PROBE_TIMEOUT},
        # The exporter sits in a pod namespace but reads the node's kernel state (overlay, NAT, conntrack),
        # as the DaemonSet does with the host network namespace: without it, "NAT hook missing" and "FORWARD
        # drops DNAT traffic" look alike from the probes alone.
        "node_facts": {"netns": topo.node(node).netns, "interval": FACTS_INTERVAL},
        # and probes every target a second time from the node's namespace ("from the node it works")
        "node_perspective": {"enabled": True, "netns": topo.node(node).netns},
        "targets": targets,
    }


def write_configs(topo: Topology) -> dict[str, Path]:
    paths = {}
    for node in topo.nodes:
        path = config_path(node.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config_for(topo, node.name), sort_keys=False))
        paths[node.name] = path
    return paths


def start_exporters(topo: Topology, state: LabState) -> None:
    for pod in topo.pods_of(EXPORTER):
        argv = [exporter_bin(), "run", "--config", str(config_path(pod.node))]
        workloads.start(state, f"exporter/{pod.name}", pod, argv, pod.ports["metrics"])
