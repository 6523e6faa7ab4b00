"""The node perspective: the same targets probed from another network namespace by a worker process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from contract import documented, exposed
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import Config, ConfigError, NodePerspectiveConfig, parse_config
from exporter.model import PathClass, Perspective, ProbeResult, Reason, TCPInfo, Transport, Via
from exporter.probes import result_from_json, result_to_json, target_from_json, target_to_json
from exporter.probes.dns import DNSQueryType, DNSTarget
from exporter.probes.http import HTTPTarget
from exporter.probes.tcp import TCPTarget
from lab.loopback import closed_port

TARGETS = [
    TCPTarget(
        name="peer/node2",
        path=PathClass.POD_IP,
        via=Via.POD,
        target_node="node2",
        host="10.42.2.3",
        port=10047,
        interval=2.0,
        timeout=1.0,
    ),
    HTTPTarget(
        name="ingress/web",
        path=PathClass.INGRESS,
        via=Via.INGRESS,
        url="http://10.42.1.9/big",
        host_header="platform.keybuzz.io",
        expect_status=frozenset({200, 204}),
        min_body_bytes=65536,
        service="kube-system/traefik",
        perspective=Perspective.NODE,
    ),
    DNSTarget(
        name="dns/kube-dns",
        path=PathClass.DNS,
        via=Via.SERVICE,
        server="10.43.0.10",
        port=53,
        protocol=Transport.TCP,
        query_name="kubernetes.default.svc.cluster.local",
        query_type=DNSQueryType.SRV,
        expect=frozenset({"10.43.0.1"}),
        source="dns",
    ),
]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.kind)
def test_targets_cross_the_pipe_unchanged(target: TCPTarget | HTTPTarget | DNSTarget) -> None:
    assert target_from_json(target_to_json(target)) == target


def test_results_cross_the_pipe_unchanged() -> None:
    result = ProbeResult.failure(
        Reason.BAD_STATUS,
        2.01,
        "HTTP 504",
        http_status=504,
        body_bytes=120,
        tcp_info=TCPInfo(syn_retransmits=1, rtt_seconds=0.001, rttvar_seconds=0.0005),
    )
    assert result_from_json(result_to_json(result)) == result


def test_the_node_perspective_is_opt_in_and_validated() -> None:
    assert parse_config({}).node_perspective == NodePerspectiveConfig(enabled=False)
    with pytest.raises(ConfigError) as info:
        parse_config({"perspective": "node", "node_perspective": {"enabled": True}})
    assert info.value.where == "node_perspective.enabled"
    with pytest.raises(ConfigError) as info:
        parse_config({"node_perspective": {"enabled": "yes"}})
    assert info.value.where == "node_perspective.enabled"


def test_a_worker_that_cannot_enter_its_namespace_says_so() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "worker", "--netns", "/nonexistent/netns"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "cannot enter network namespace /nonexistent/netns" in done.stderr


# --- with a real second namespace -------------------------------------------------------------------------


@pytest.fixture
def other_namespace() -> Iterator[tuple[str, int]]:
    """A network namespace of our own (prefix npperspective-) with a TCP listener on its loopback, on a port
    that nothing listens on in this namespace: reachable from there, refused from here."""
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("creating a network namespace needs root")
    name = f"npperspective-{uuid.uuid4().hex[:8]}"
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    subprocess.run(["ip", "netns", "add", name], check=True)
    listener = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        code = (
            f"import socket\ns=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(64)\n"
            "print('ready', flush=True)\nwhile True: s.accept()[0].close()\n"
        )
        listener = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield name, port
    finally:
        if listener is not None:
            listener.kill()
            listener.wait()
        subprocess.run(["ip", "netns", "del", name], check=True)


def series(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """(target, from) → last success, from the exposition."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.name == "netpath_probe_success":
            for s in family.samples:
                out[(s.labels["target"], s.labels["from"])] = s.value
    return out


async def test_each_target_is_probed_from_both_namespaces_and_forgotten_in_both(
    other_namespace: tuple[str, int],
) -> None:
    netns, port = other_namespace
    target = TCPTarget(
        name="only-there", path=PathClass.POD_IP, via=Via.POD, host="127.0.0.1", port=port, interval=0.3, timeout=0.3
    )
    config = Config(source_node="node1", node_perspective=NodePerspectiveConfig(enabled=True, netns=netns))
    registry = CollectorRegistry()
    async with Exporter(config, registry) as exporter:
        exporter.sources.update("test", [target])
        for _ in range(100):  # bounded: 10 s for the worker to start and report
            await asyncio.sleep(0.1)
            if len(series(registry)) == 2:
                break
        assert series(registry) == {("only-there", "pod"): 0.0, ("only-there", "node"): 1.0}
        text = generate_latest(registry).decode()
        assert 'netpath_node_perspective_up{source_node="node1"} 1.0' in text
        assert 'reason="refused"' in text  # from here nothing listens on that port
        diagnosis = exporter.localizer.diagnose()
        assert {s.target.perspective for s in diagnosis.statuses} == {Perspective.POD, Perspective.NODE}

        exporter.sources.update("test", [])
        assert series(registry) == {}


def test_docs_node_perspective_section_matches_the_exposition() -> None:
    registry = CollectorRegistry()
    Exporter(Config(source_node="n", node_perspective=NodePerspectiveConfig(enabled=True)), registry)
    text = generate_latest(registry).decode()
    ours = {n: labels for n, labels in exposed(text).items() if n.startswith("netpath_node_perspective")}
    assert ours == documented("Node perspective")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_stops_quietly_on_a_signal_while_probing(sig: signal.Signals) -> None:
    # In a container the runtime signals PID 1 only, but a terminal (or `kill -- -PGID`) signals the whole
    # group: the worker then stops by itself, within the exporter's shutdown deadline, without a traceback.
    if os.geteuid() != 0:
        pytest.skip("setns needs CAP_SYS_ADMIN")
    with closed_port() as closed:
        dns_target = DNSTarget(
            name="dns",
            path=PathClass.DNS,
            via=Via.POD,
            server=closed.host,
            port=closed.port,
            query_name="a.lab.test",
            interval=0.05,
            timeout=0.05,
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "exporter", "worker", "--netns", f"/proc/{os.getpid()}/ns/net"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write((json.dumps({"targets": [target_to_json(dns_target)]}) + "\n").encode())
            worker.stdin.flush()
            assert b'"reason": "refused"' in worker.stdout.readline()  # probing now
            worker.send_signal(sig)
            code = worker.wait(timeout=2.0)  # the acceptance deadline; raises if it is still running
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert code == 0
        assert worker.stderr is not None and b"Traceback" not in worker.stderr.read()
