"""A healthy 3-node lab: every path works from every exporter pod, and the lab describes itself.

Placement (lab/topology.py): node1 runs CoreDNS and keybuzz-front-0, node2 keybuzz-front-1, node3 neither;
every node runs an ingress controller and an exporter.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from exporter.config import parse_config
from lab import exporters, netns
from lab.probe import probe_nodes
from lab.state import topology_path
from lab.topology import EXPORTER, Topology

pytestmark = pytest.mark.lab


def test_from_every_exporter_pod_every_path_works(lab: Topology) -> None:
    results = probe_nodes(lab)
    assert set(results) == {"node1", "node2", "node3"}
    for node, outcomes in results.items():
        failing = {k: (o.reason, o.record.get("detail")) for k, o in outcomes.items() if not o.ok}
        assert failing == {}, f"from {node}"
        paths = {(o.path, o.via, o.transport) for o in outcomes.values()}
        assert {
            ("pod_ip", "pod", "tcp"),
            ("cluster_ip", "service", "tcp"),
            ("dns", "service", "udp"),
            ("dns", "service", "tcp"),
            ("dns", "pod", "udp"),
            ("dns", "pod", "tcp"),
            ("ingress", "ingress", "tcp"),
        } <= paths
        # cross-node pod IPs and a complete /big from both replicas
        cross_node = {o.target_node for o in outcomes.values() if o.path == "pod_ip"} - {node}
        assert cross_node == {"node1", "node2", "node3"} - {node}
        for big in ("keybuzz-front-0-big/tcp", "keybuzz-front-1-big/tcp"):
            assert outcomes[big].record["body_bytes"] >= 64 * 1024
        ingress = outcomes[f"ingress-{node}/tcp"].record
        assert ingress["http_status"] == 200


def test_the_topology_json_names_everything(lab: Topology) -> None:
    raw = json.loads(topology_path().read_text())
    assert len(raw["nodes"]) == 3
    assert {s["name"]: s["cluster_ip"] for s in raw["services"]}["kube-dns"] == "10.43.0.10"
    front = next(s for s in raw["services"] if s["name"] == "keybuzz-front")
    assert front["dns_name"] == "keybuzz-front.keybuzz.svc.cluster.local"
    assert {e["node"] for e in front["endpoints"]} == {"node1", "node2"}
    assert raw["ingress_host"] == "platform.keybuzz.io"
    assert set(raw["exporters"]) == {"node1", "node2", "node3"}
    assert all(p["netns"].startswith("nplab-") and p["ip"].startswith("10.42.") for p in raw["pods"])
    assert set(netns.lab_namespaces()) == set(lab.namespaces)


def test_the_exporter_configs_are_valid(lab: Topology) -> None:
    for node in lab.nodes:
        config = parse_config(yaml.safe_load(exporters.config_path(node.name).read_text()))
        assert config.source_node == node.name
        assert config.listen_host == lab.pod_on(EXPORTER, node.name).ip
        names = {t.name for t in config.targets}
        assert "kube-dns" in names and f"ingress-{node.name}" in names
        assert {f"exporter-{n.name}" for n in lab.nodes if n.name != node.name} <= names


def test_every_exporter_serves_metrics_on_its_pod_ip(lab: Topology) -> None:
    client = lab.pod_on(EXPORTER, "node1").netns
    for node, info in lab.exporters.items():
        fetch = (
            "import sys, urllib.request;"
            f"sys.stdout.write(urllib.request.urlopen({info['metrics']!r}, timeout=3).read().decode())"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", client, sys.executable, "-c", fetch],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        assert "netpath_" in out, f"exporter on {node}"
