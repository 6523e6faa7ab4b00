"""exporter.probes.KINDS is the one place that lists the kinds: a fourth kind is one module and one registry line.

This file is that module for a `udp_echo` kind (a datagram to ip:port must come back unchanged): its target class,
config parsing, probe and destination, declared in one ProbeKind. The one registry line is the `monkeypatch.setitem`
below; nothing else in the exporter is told about the kind, yet config, the scheduler, the metrics, the
node-perspective wire format and node facts' Service list all handle it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter, service_addresses
from exporter.config import ConfigError, NodeFactsConfig, parse_config
from exporter.exposition import ExpositionRegistry, render
from exporter.fields import read_hostport
from exporter.model import PathClass, ProbeResult, Reason, Target, Transport, Via, format_hostport
from exporter.probes import KINDS, ProbeKind, run_probe, target_from_json, target_to_json
from exporter.probes.kind import Destination

# --- the new kind's module ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class UDPEchoTarget(Target):
    host: str
    port: int

    kind = "udp_echo"

    @property
    def transport(self) -> Transport:
        return Transport.UDP

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)


def parse(entry: Mapping[str, Any], where: str, common: dict[str, Any]) -> list[Target]:
    host, port = read_hostport(entry.get("address"), f"{where}.address", None)
    return [UDPEchoTarget(host=host, port=port, **common)]


async def probe(target: UDPEchoTarget, timeout: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_sendto(sock, b"netpath", (target.host, target.port))
                data, _ = await loop.sock_recvfrom(sock, 64)
        except TimeoutError:
            return ProbeResult.failure(Reason.TIMEOUT, time.perf_counter() - start, "no echo")
        except OSError as exc:
            return ProbeResult.failure(Reason.ERROR, time.perf_counter() - start, str(exc))
    if data != b"netpath":
        return ProbeResult.failure(Reason.PROTOCOL_ERROR, time.perf_counter() - start, f"echoed {data!r}")
    return ProbeResult.success(time.perf_counter() - start)


def destination(target: UDPEchoTarget) -> Destination:
    return (target.host, target.port, "udp")


KIND = ProbeKind("udp_echo", UDPEchoTarget, frozenset({"address"}), parse, probe, destination)

# --- the tests ------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "udp_echo", KIND)  # the one registry line


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(64)
            except TimeoutError:
                continue
            sock.sendto(data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def config_with(address: str, **extra: Any) -> Any:
    entry = {"name": "echo/1", "kind": "udp_echo", "path": "cluster_ip", "address": address, **extra}
    return parse_config({"source_node": "node1", "targets": [entry]})


def test_the_config_parses_the_new_kind_through_its_module() -> None:
    (target,) = config_with("10.43.0.53:7").targets
    assert isinstance(target, UDPEchoTarget) and (target.host, target.port) == ("10.43.0.53", 7)
    assert target.via is Via.SERVICE  # the common fields still come from the config module


def test_a_bad_entry_of_the_new_kind_names_its_field() -> None:
    with pytest.raises(ConfigError, match=r"targets\[0\]\.address"):
        config_with("not-an-address")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.url: unknown key"):
        config_with("10.43.0.53:7", url="http://x/")
    with pytest.raises(ConfigError, match=r"targets\[0\]\.kind: expected one of tcp, http, dns, udp_echo"):
        parse_config({"source_node": "n", "targets": [{"name": "x", "kind": "icmp", "path": "pod_ip"}]})


async def test_run_probe_dispatches_to_the_new_kinds_probe(echo_server: tuple[str, int]) -> None:
    host, port = echo_server
    target = UDPEchoTarget(name="echo", path=PathClass.POD_IP, via=Via.POD, host=host, port=port)
    result = await run_probe(target, 2.0)
    assert result.ok, result


def test_the_worker_wire_format_round_trips_the_new_kind() -> None:
    (target,) = config_with("10.43.0.53:7").targets
    assert target_from_json(target_to_json(target)) == target


def test_node_facts_see_the_new_kinds_service_address() -> None:
    (target,) = config_with("10.43.0.53:7").targets
    assert [(a.ip, a.port, a.protocol) for a in service_addresses([target])] == [("10.43.0.53", 7, "udp")]


async def test_the_exporter_schedules_and_exposes_the_new_kind(echo_server: tuple[str, int]) -> None:
    host, port = echo_server
    config = dataclasses.replace(
        config_with(f"{host}:{port}", interval="0.5s", timeout="0.4s"), node_facts=NodeFactsConfig(enabled=False)
    )
    registry = ExpositionRegistry()
    async with Exporter(config, registry):
        for _ in range(50):  # bounded: at most ~5 s for the first probes
            await asyncio.sleep(0.1)
            text = render(registry, "", "").body.decode()
            if 'target="echo/1"' in text:
                break
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (success,) = [s for s in families["netpath_probe_success"].samples if s.labels["target"] == "echo/1"]
    assert success.value == 1 and success.labels["transport"] == "udp"
