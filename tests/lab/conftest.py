"""Fixtures for the network-lab tests: one lab per test module, always torn down, also on failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator

import pytest

from lab import cluster, netns
from lab.topology import Topology

REQUIRED_TOOLS = (
    "ip",
    "bridge",
    "iptables-restore",
    "conntrack",
    "ethtool",
    "ss",
    "/usr/sbin/dnsmasq",
    "/usr/sbin/nginx",
    "openssl",  # the lab API server's CA and certificate (lab/apiserver.py)
)


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = lab_unavailable()
    for item in items:
        if reason and item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def lab() -> Iterator[Topology]:
    """A 3-node lab with exporters, built once for the module; broken faults are healed between tests.

    The exporters are what users run: the image, started as the chart's DaemonSet runs it, with the chart's
    rendered config, discovering the lab from its API (lab/image.py, lab/apiserver.py)."""
    from lab import image

    reason = image.podman_unavailable()
    if reason:
        pytest.skip(reason)
    image.build()  # seconds when nothing changed
    with cluster.exclusive():  # another session (a colleague's tests, the demo) may be using the lab
        cluster.down()  # leftovers of an interrupted run would make `up` refuse
        try:
            yield cluster.up(3, 1500, from_image=True)
        finally:
            cluster.down()
            assert netns.lab_namespaces() == []
            assert image.lab_containers() == []


@pytest.fixture
def lab_lock() -> Iterator[None]:
    """For tests that build their own lab: wait for other lab sessions, then own the lab."""
    with cluster.exclusive():
        yield


@pytest.fixture
def root_snapshot() -> Callable[[], dict[str, str]]:
    return root_namespace_snapshot


def root_namespace_snapshot() -> dict[str, str]:
    """What the lab must never change in the root namespace: links, addresses, routes, rules, firewall."""
    commands = {
        "links": ["ip", "-d", "link", "show"],
        "addresses": ["ip", "addr", "show"],
        "routes4": ["ip", "-4", "route", "show", "table", "all"],
        "routes6": ["ip", "-6", "route", "show", "table", "all"],
        "rules4": ["ip", "-4", "rule", "show"],
        "rules6": ["ip", "-6", "rule", "show"],
        "iptables": ["iptables-save"],
        "ip6tables": ["ip6tables-save"],
        "iptables-legacy": ["iptables-legacy-save"],
        "nft": ["nft", "list", "ruleset"],
    }
    snapshot = {}
    for name, cmd in commands.items():
        if shutil.which(cmd[0]) is None:
            continue
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        # iptables-save prints a timestamp comment and packet counters that root traffic keeps changing
        lines = [_strip_counters(line) for line in out.splitlines() if not line.startswith("#")]
        snapshot[name] = "\n".join(lines)
    for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        try:
            with open(f"/proc/sys/{key}") as f:
                snapshot[key] = f.read().strip()
        except OSError:
            pass
    return snapshot


def _strip_counters(line: str) -> str:
    if line.startswith(":") and line.endswith("]"):
        return line.rsplit(" [", 1)[0]
    return line
