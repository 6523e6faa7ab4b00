"""The TCP connect probe against real loopback listeners."""

from __future__ import annotations

import asyncio

from misbehaving import cancellations_lost

from exporter.model import PathClass, Reason, Via
from exporter.probes import tcp
from exporter.probes.tcp import TCPTarget
from lab.loopback import BlackholeListener, Listener


def target(port: int, host: str = "127.0.0.1") -> TCPTarget:
    return TCPTarget(name="t", path=PathClass.POD_IP, via=Via.POD, host=host, port=port)


async def test_connect_to_a_listener_is_ok_with_kernel_tcp_info(tcp_listener: Listener) -> None:
    result = await tcp.probe(target(tcp_listener.port), timeout=1.0)

    assert result.ok, result
    assert result.reason is Reason.OK
    assert 0 < result.phases["connect"] <= result.duration
    assert result.tcp_info is not None
    assert result.tcp_info.syn_retransmits == 0
    assert result.tcp_info.rtt_seconds > 0


async def test_a_port_nobody_listens_on_is_refused(closed_port: Listener) -> None:
    result = await tcp.probe(target(closed_port.port), timeout=1.0)

    assert not result.ok
    assert result.reason is Reason.REFUSED
    assert result.tcp_info is None


async def test_dropped_syns_end_in_connect_timeout_within_the_timeout(
    blackhole_listener: BlackholeListener,
) -> None:
    result = await tcp.probe(target(blackhole_listener.port), timeout=0.4)

    assert result.reason is Reason.CONNECT_TIMEOUT
    assert 0.4 <= result.duration < 0.4 + 0.3
    assert "0.4s" in result.detail


async def test_a_syn_dropped_once_then_accepted_counts_one_retransmit(
    blackhole_listener: BlackholeListener,
) -> None:
    # The first SYN hits the full queue and is dropped; the kernel retransmits it after ~1 s (its initial
    # RTO), by which time the queue has room again.
    blackhole_listener.release_after(0.3)

    result = await tcp.probe(target(blackhole_listener.port), timeout=1.5)

    assert result.ok, result
    assert result.tcp_info is not None
    assert result.tcp_info.syn_retransmits == 1
    assert result.phases["connect"] >= 0.9  # it took the retransmission to get in


async def test_probes_run_concurrently_and_never_raise(
    tcp_listener: Listener, closed_port: Listener, blackhole_listener: BlackholeListener
) -> None:
    results = await asyncio.gather(
        tcp.probe(target(tcp_listener.port), timeout=0.3),
        tcp.probe(target(closed_port.port), timeout=0.3),
        tcp.probe(target(blackhole_listener.port), timeout=0.3),
    )

    assert [r.reason for r in results] == [Reason.OK, Reason.REFUSED, Reason.CONNECT_TIMEOUT]


def test_a_blackhole_route_is_unreachable_not_an_error() -> None:
    """A node with no NAT for a ClusterIP sends it to its default route; in a namespace whose default route is
    a blackhole the kernel refuses at once (EINVAL). Run inside a namespace of our own, never from here."""
    import subprocess
    import sys
    import uuid

    name = f"npprobe-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "route", "add", "blackhole", "default"], check=True)
        code = (
            "import asyncio\n"
            "from exporter.model import PathClass, Via\n"
            "from exporter.probes.tcp import TCPTarget\n"
            "from exporter.probes import run_probe\n"
            "t = TCPTarget(name='x', path=PathClass.CLUSTER_IP, via=Via.SERVICE, host='10.43.0.1', port=443)\n"
            "print(asyncio.run(run_probe(t, 1.0)).reason.value)\n"
        )
        out = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
    assert out.strip() == "unreachable"


async def test_the_tcp_probe_ends_whenever_it_is_cancelled(tcp_listener: Listener, closed_port: Listener) -> None:
    accepted, refused = target(tcp_listener.port), target(closed_port.port)

    assert await cancellations_lost(lambda: tcp.probe(accepted, timeout=1.0), attempts=200) == 0
    assert await cancellations_lost(lambda: tcp.probe(refused, timeout=1.0), attempts=200) == 0
