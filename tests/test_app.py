"""The exporter end to end on loopback: schedule, probe, render, serve — with blackholed targets in the mix."""

from __future__ import annotations

import asyncio
import re
import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import Config
from exporter.model import AnyTarget, PathClass, Via
from exporter.probes.tcp import TCPTarget
from exporter.server import MetricsServer
from lab.loopback import blackhole_listener, tcp_listener


def tcp(name: str, host: str, port: int) -> TCPTarget:
    return TCPTarget(name=name, path=PathClass.POD_IP, via=Via.POD, host=host, port=port, interval=1.0, timeout=0.9)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return str(response.read().decode())


def attempts_by_target(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "netpath_probe_attempts":
            for sample in family.samples:
                out[sample.labels["target"]] = sample.value
    return out


async def test_fifty_blackholed_targets_do_not_delay_five_healthy_ones() -> None:
    with tcp_listener() as healthy, blackhole_listener() as hole:
        targets: list[AnyTarget] = [tcp(f"healthy-{i}", healthy.host, healthy.port) for i in range(5)]
        targets += [tcp(f"blackholed-{i}", hole.host, hole.port) for i in range(50)]
        config = Config(source_node="test-node", listen_host="127.0.0.1", listen_port=0, targets=tuple(targets))
        registry = CollectorRegistry()
        async with Exporter(config, registry) as exporter:
            server = MetricsServer("127.0.0.1", 0, registry, healthy=exporter.healthy, ready=exporter.ready)
            server.start()
            try:
                # A bounded window of 5.5 s; the exporter must answer a scrape every half second meanwhile.
                scrapes = []
                for _ in range(11):
                    await asyncio.sleep(0.5)
                    scrapes.append(await asyncio.to_thread(scrape, server.port))
            finally:
                server.close()
    counts = attempts_by_target(scrapes[-1])
    for i in range(5):
        # ~once a second over 5.5 s (the first probe lands within the first 0.1 s of spread)
        assert 4 <= counts[f"healthy-{i}"] <= 7, counts
    failures = re.findall(r'netpath_probe_failures_total\{[^}]*reason="(\w+)"[^}]*target="blackholed-', scrapes[-1])
    assert len(failures) == 50 and set(failures) == {"connect_timeout"}


async def test_health_and_readiness_endpoints() -> None:
    registry = CollectorRegistry()
    config = Config(source_node="test-node", listen_host="127.0.0.1", listen_port=0)
    exporter = Exporter(config, registry)
    server = MetricsServer("127.0.0.1", 0, registry, healthy=exporter.healthy, ready=exporter.ready)
    server.start()
    try:

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=2) as r:
                    return int(r.status)
            except urllib.error.HTTPError as err:
                return err.code

        assert await asyncio.to_thread(status, "/readyz") == 503  # not started yet
        async with exporter:
            assert await asyncio.to_thread(status, "/readyz") == 200
            assert await asyncio.to_thread(status, "/healthz") == 200
            assert await asyncio.to_thread(status, "/nope") == 404
    finally:
        server.close()


def test_service_addresses_are_those_probed_via_a_service() -> None:
    from exporter.app import service_addresses
    from exporter.model import Transport
    from exporter.node.facts import ClusterIPPort
    from exporter.probes.dns import DNSTarget
    from exporter.probes.http import HTTPTarget

    targets: list[AnyTarget] = [
        TCPTarget(name="svc", path=PathClass.CLUSTER_IP, via=Via.SERVICE, host="10.43.0.20", port=80),
        TCPTarget(name="pod", path=PathClass.POD_IP, via=Via.POD, host="10.42.1.5", port=8080),
        DNSTarget(
            name="dns",
            path=PathClass.DNS,
            via=Via.SERVICE,
            server="10.43.0.10",
            protocol=Transport.UDP,
            query_name="a.b",
        ),
        HTTPTarget(name="web", path=PathClass.CLUSTER_IP, via=Via.SERVICE, url="http://10.43.0.30/healthz"),
    ]
    assert service_addresses(targets) == [
        ClusterIPPort("10.43.0.20", 80, "tcp"),
        ClusterIPPort("10.43.0.10", 53, "udp"),
        ClusterIPPort("10.43.0.30", 80, "tcp"),
    ]


async def test_a_failed_background_task_shows_in_readiness_and_metrics_until_it_is_back() -> None:
    registry = CollectorRegistry()
    config = Config(source_node="test-node", listen_host="127.0.0.1", listen_port=0)
    back = asyncio.Event()
    failures = 0

    async def flaky() -> None:
        nonlocal failures
        while not back.is_set():
            failures += 1
            await asyncio.sleep(0)
            raise RuntimeError("watch stream cut")
        await asyncio.Event().wait()

    async with Exporter(config, registry) as exporter:
        exporter.background.spawn("discovery", flaky)
        for _ in range(100):  # bounded: until it has failed once and waits for its restart
            await asyncio.sleep(0.01)
            if failures:
                break
        ok, why = exporter.ready()
        assert not ok and why == "background task down: discovery (RuntimeError: watch stream cut)"
        up = {"source_node": "test-node", "task": "discovery"}
        assert registry.get_sample_value("netpath_background_task_up", up) == 0
        assert exporter.healthy() == (True, "ok")  # one failure is not a crash loop: no pod restart yet

        back.set()
        for _ in range(300):  # bounded: the first backoff is about a second
            await asyncio.sleep(0.01)
            if exporter.ready()[0]:
                break
        assert exporter.ready()[0]
        assert registry.get_sample_value("netpath_background_task_up", up) == 1
        assert registry.get_sample_value("netpath_background_task_restarts_total", up) == 1
        heartbeat = {"source_node": "test-node", "task": "heartbeat"}
        assert registry.get_sample_value("netpath_background_task_up", heartbeat) == 1

    assert await exporter.close() == []  # closed already: nothing left running
