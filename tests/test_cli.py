"""The CLI's probe command: a table per path for people, JSON for machines, exit 1 when something fails."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from lab.loopback import closed_port, tcp_listener


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=30)


def write_config(tmp_path: Path, ok_port: int, closed: int) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        textwrap.dedent(f"""
        source_node: node1
        defaults: {{interval: 2s, timeout: 1s}}
        targets:
          - {{name: peer/node2, kind: tcp, path: pod_ip, address: "127.0.0.1:{ok_port}", target_node: node2}}
          - {{name: svc/default/web, kind: tcp, path: cluster_ip, address: "127.0.0.1:{closed}"}}
    """)
    )
    return path


def test_probe_prints_a_table_per_path_and_exits_1_on_failure(tmp_path: Path) -> None:
    with tcp_listener() as ok, closed_port() as closed:
        result = run_cli("probe", "--config", str(write_config(tmp_path, ok.port, closed.port)))
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "pod_ip  (1/1 ok)" in out and "cluster_ip  (0/1 ok)" in out
    assert "✅ peer/node2" in out and "❌ svc/default/web" in out and "refused" in out
    assert "1 ok, 1 failing" in out


def test_probe_json_is_one_record_per_target(tmp_path: Path) -> None:
    with tcp_listener() as ok, closed_port() as closed:
        result = run_cli("probe", "--json", "--config", str(write_config(tmp_path, ok.port, closed.port)))
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["peer/node2"]["ok"] is True and records["peer/node2"]["target_node"] == "node2"
    assert records["svc/default/web"]["reason"] == "refused" and records["svc/default/web"]["path"] == "cluster_ip"


def test_probe_exits_0_when_everything_works(tmp_path: Path) -> None:
    with tcp_listener() as ok:
        path = tmp_path / "c.yaml"
        path.write_text(f"targets: [{{name: a, kind: tcp, path: pod_ip, address: '127.0.0.1:{ok.port}'}}]\n")
        assert run_cli("probe", "--config", str(path)).returncode == 0


def test_run_exits_2_when_it_cannot_listen(tmp_path: Path) -> None:
    with tcp_listener() as taken:
        path = tmp_path / "c.yaml"
        path.write_text(f"listen: 127.0.0.1:{taken.port}\n")
        result = run_cli("run", "--config", str(path))
    assert result.returncode == 2 and "cannot listen" in result.stderr


def test_run_with_discovery_but_no_credentials_exits_2_saying_why(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("discovery: {}\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": ""}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 2
    assert "discovery: cannot read kubeconfig" in result.stderr and ".kube/config" in result.stderr
