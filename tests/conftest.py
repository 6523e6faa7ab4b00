"""Shared fixtures: real servers on loopback (see lab/loopback.py and lab/apps/httpapp.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab import loopback
from lab.apps import httpapp

# Names the dnsmasq fixture serves; tests read them from here rather than repeating literals.
DNS_ZONE = "lab.test"
DNS_HOSTS = {
    "web.lab.test": "10.43.0.20",
    "dual.lab.test": ("10.43.0.21", "fd00:43::21"),
}
DNS_SRV = (loopback.SRVRecord("_http._tcp.web.lab.test", "web.lab.test", 8080),)


@pytest.fixture
def tcp_listener() -> Iterator[loopback.Listener]:
    with loopback.tcp_listener() as listener:
        yield listener


@pytest.fixture
def closed_port() -> Iterator[loopback.Listener]:
    with loopback.closed_port() as port:
        yield port


@pytest.fixture
def blackhole_listener() -> Iterator[loopback.BlackholeListener]:
    with loopback.blackhole_listener() as listener:
        yield listener


@pytest.fixture(scope="session")
def dnsmasq() -> Iterator[loopback.Dnsmasq]:
    if not os.access(loopback.DNSMASQ, os.X_OK):
        pytest.skip(f"{loopback.DNSMASQ} is not installed")
    # Session-wide: it only answers queries, and starting it is the slowest part of a DNS test.
    with loopback.dnsmasq(DNS_HOSTS, DNS_SRV, local_zones=(DNS_ZONE,)) as server:
        yield server


@pytest.fixture
def silent_dns() -> Iterator[loopback.DNSServer]:
    with loopback.silent_dns() as server:
        yield server


@pytest.fixture
def truncating_dns() -> Iterator[loopback.DNSServer]:
    with loopback.truncating_dns() as server:
        yield server


@pytest.fixture
def httpapp_server() -> Iterator[httpapp.RunningApp]:
    with httpapp.serve_in_thread(name="replica-a", slow_delay=5.0) as app:
        yield app
