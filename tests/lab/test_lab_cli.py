"""`python -m lab`: listing scenarios, and clear errors naming the bad value when the lab is down."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lab import cluster, scenarios

pytestmark = pytest.mark.lab


def lab_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=60)


def test_scenarios_lists_every_scenario() -> None:
    out = lab_cli("scenarios").stdout
    for name in scenarios.SCENARIOS:
        assert name in out


def test_break_without_a_lab_says_how_to_start_one(lab_lock: None) -> None:
    cluster.down()
    result = lab_cli("break", "clusterip-nat")
    assert result.returncode == 1
    assert "python -m lab up" in result.stderr
    assert lab_cli("status").stdout.strip() == "lab is down"


def test_bad_node_count_is_named() -> None:
    result = lab_cli("up", "--nodes", "9")
    assert result.returncode == 1
    assert "--nodes" in result.stderr
