"""Config validation: good files become typed targets, bad ones name the field and exit 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.config import DEFAULT_PORT, ConfigError, load_config, parse_config
from exporter.model import PathClass, Transport, Via
from exporter.probes.dns import DNSTarget
from exporter.probes.http import HTTPTarget
from exporter.probes.tcp import TCPTarget

GOOD = textwrap.dedent(
    """
    source_node: node-a
    listen: 127.0.0.1:0
    defaults: {interval: 5s, timeout: 1500ms}
    targets:
      - {name: web-b, kind: tcp, path: pod_ip, address: "10.42.1.5:8080", target_node: node-b}
      - {name: web-svc, kind: tcp, path: cluster_ip, address: "10.43.12.7:80", service: default/web, interval: 1m}
      - name: kube-dns
        kind: dns
        path: dns
        address: 10.43.0.10
        transports: [udp, tcp]
        query: kubernetes.default.svc.cluster.local
        expect: [10.43.0.1]
      - name: ingress
        kind: http
        path: ingress
        url: http://10.42.0.9/big
        host: platform.keybuzz.io
        min_body_bytes: 65536
    """
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_becomes_typed_targets(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.source_node == "node-a"
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 0)
    tcp, svc, dns_udp, dns_tcp, http = config.targets
    assert tcp == TCPTarget(
        name="web-b",
        path=PathClass.POD_IP,
        via=Via.POD,
        target_node="node-b",
        host="10.42.1.5",
        port=8080,
        interval=5.0,
        timeout=1.5,
    )
    assert svc.via is Via.SERVICE and svc.interval == 60.0 and svc.service == "default/web"
    assert isinstance(dns_udp, DNSTarget) and isinstance(dns_tcp, DNSTarget)
    assert (dns_udp.transport, dns_tcp.transport) == (Transport.UDP, Transport.TCP)
    assert dns_udp.port == 53 and dns_udp.expect == frozenset({"10.43.0.1"})
    assert isinstance(http, HTTPTarget)
    assert http.host_header == "platform.keybuzz.io" and http.min_body_bytes == 65536
    assert http.expect_status == frozenset({200})


def test_defaults_apply_when_the_file_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "from-downward-api")
    config = parse_config({})
    assert config.source_node == "from-downward-api"
    assert config.listen_port == DEFAULT_PORT
    assert config.targets == ()


def tcp(**fields: object) -> dict[str, object]:
    """A config with one TCP target: these fields over a valid one."""
    return {"targets": [{"name": "x", "kind": "tcp", "path": "pod_ip", "address": "10.0.0.1:80", **fields}]}


def http(**fields: object) -> dict[str, object]:
    return {"targets": [{"name": "x", "kind": "http", "path": "ingress", "url": "http://10.0.0.1/", **fields}]}


def dns(**fields: object) -> dict[str, object]:
    return {"targets": [{"name": "x", "kind": "dns", "path": "dns", "address": "10.43.0.10", "query": "a.b", **fields}]}


@pytest.mark.parametrize(
    ("snippet", "where", "problem"),
    [
        ({"tragets": []}, "tragets", "unknown key"),
        (tcp(colour=1), "targets[0].colour", "unknown key"),
        (tcp(address="10.0.0.300:80"), "targets[0].address", "not an IP address"),
        (tcp(address="10.0.0.1"), "targets[0].address", "expected ip:port"),
        (tcp(address="10.0.0.1:70000"), "targets[0].address", "outside 1-65535"),
        (tcp(address="10.0.0.1:0"), "targets[0].address", "outside 1-65535"),
        (tcp(address="localhost:80"), "targets[0].address", "not an IP address"),
        (tcp(interval=-1), "targets[0].interval", "must be positive"),
        (tcp(interval=float("nan")), "targets[0].interval", "got NaN"),
        (tcp(interval=10**400), "targets[0].interval", "to 1h"),
        (tcp(interval="50ms", timeout="10ms"), "targets[0].interval", "from 100ms to 1h"),
        (tcp(timeout="1ms"), "targets[0].timeout", "from 10ms"),
        (tcp(interval="1s", timeout="2s"), "targets[0].timeout", "longer than the interval"),
        (tcp(kind=["tcp"]), "targets[0].kind", "got ['tcp']"),
        (tcp(kind="icmp"), "targets[0].kind", "expected one of"),
        (tcp(path=["pod_ip"]), "targets[0].path", "expected one of"),
        (tcp(path="nodeport"), "targets[0].path", "expected one of"),
        (tcp(target_node=7), "targets[0].target_node", "non-empty string"),
        (tcp(target_node=["node-b"]), "targets[0].target_node", "non-empty string"),
        (tcp(service={"ns": "default"}), "targets[0].service", "non-empty string"),
        (tcp(name="a b"), "targets[0].name", "spaces"),
        (http(host="a\r\nb"), "targets[0].host", "control character U+000D"),
        (http(host="a:0"), "targets[0].host", "host name or IP"),
        (http(url="ftp://10.0.0.1/"), "targets[0].url", "expected http"),
        (http(url="http://web.default/"), "targets[0].url", "not an IP address"),
        (http(url="http://10.0.0.1:0/"), "targets[0].url", "port 0"),
        (http(url="http://10.0.0.1/ x"), "targets[0].url", "no spaces"),
        (dns(query="a..b"), "targets[0].query", "valid DNS name"),
        (dns(expect=[["10.0.0.1"]]), "targets[0].expect[0]", "non-empty string"),
        (dns(transports=["quic"]), "targets[0].transports[0]", "expected one of"),
        (
            {"targets": [{"name": "x", "kind": "tcp", "path": "pod_ip", "address": f"10.0.0.{i}:80"} for i in (1, 2)]},
            "targets[1].name",
            "already used",
        ),
        ({"defaults": {"interval": "soon"}}, "defaults.interval", "expected a duration"),
        ({"defaults": {"interval": "1s"}}, "defaults.timeout", "3s is longer than the interval 1s"),
        ({"source_node": "Node_A"}, "source_node", "node name"),
        ({"listen": "0.0.0.0"}, "listen", "expected ip:port"),
        ({"scheduler": {"max_concurrency": 0}}, "scheduler.max_concurrency", "from 1 to"),
        ({"scheduler": {"jitter": float("inf")}}, "scheduler.jitter", "from 0 to 0.5"),
        ({"latency_buckets": [0.1, 0.01]}, "latency_buckets", "strictly increasing"),
        ({"latency_buckets": [float("nan")]}, "latency_buckets[0]", "NaN"),
        ({"targets": "all of them"}, "targets", "expected a list"),
        ({"node_facts": {"interval": "0s"}}, "node_facts.interval", "must be positive"),
        ({"node_facts": {"interval": "100ms"}}, "node_facts.interval", "from 1s to 1h"),
        ({"node_facts": {"enabled": "yes"}}, "node_facts.enabled", "expected true or false"),
        ({"node_facts": {"every": "1m"}}, "node_facts.every", "unknown key"),
        ({"node_facts": {"netns": ["x"]}}, "node_facts.netns", "non-empty string"),
        ({"node_perspective": {"netns": "-x"}}, "node_perspective.netns", "namespace name"),
        ({1: "one"}, "(top level)", "keys are names"),
    ],
)
def test_bad_config_names_the_field(snippet: dict[str, object], where: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(snippet)
    assert info.value.where == where
    assert problem in info.value.problem


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert info.value.where.endswith("absent.yaml") and "no such file" in info.value.problem


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "targets:\n  - name: [unclosed\n"))
    assert "config.yaml:" in info.value.where and "not valid YAML" in info.value.problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour: blue\n", "colour: unknown key"),
        ("listen: 999.1.1.1:80\n", "listen: not an IP address"),
        ("defaults: {interval: -5}\n", "defaults.interval: must be positive"),
    ],
)
def test_check_config_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    assert main(["check-config", str(write(tmp_path, text))]) == 2
    assert expected in capsys.readouterr().err


def test_check_config_exits_2_for_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_check_config_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(write(tmp_path, GOOD))]) == 0
    assert "5 targets" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "check"),
    [
        (
            {"kind": "http", "path": "ingress", "url": "http://[fd00::1]:8080/x", "host": "platform.example.io:8443"},
            lambda t: t.url == "http://[fd00::1]:8080/x" and t.host_header == "platform.example.io:8443",
        ),
        (
            {"kind": "http", "path": "ingress", "url": "https://10.0.0.1/", "host": "10.0.0.1"},
            lambda t: t.host_header == "10.0.0.1",
        ),
        (
            {
                "kind": "dns",
                "path": "dns",
                "address": "10.43.0.10",
                "type": "SRV",
                "query": "_http._tcp.web.default.svc.cluster.local.",
            },
            lambda t: t.query_name == "_http._tcp.web.default.svc.cluster.local.",
        ),
        (
            {
                "kind": "tcp",
                "path": "pod_ip",
                "address": "10.0.0.1:80",
                "target_node": "ip-10-0-0-1.ec2.internal",
                "service": "kube-system/kube-dns",
                "interval": "1h",
                "timeout": "100ms",
            },
            lambda t: t.target_node == "ip-10-0-0-1.ec2.internal" and (t.interval, t.timeout) == (3600.0, 0.1),
        ),
    ],
)
def test_the_limits_still_admit_real_values(target: dict[str, object], check: object) -> None:
    config = parse_config({"targets": [{"name": "dns/coredns/coredns-7b9f:53", **target}]})
    assert callable(check) and check(config.targets[0])


def test_anchors_and_merge_keys_within_the_budget_work(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
        targets:
          - &a {kind: tcp, path: pod_ip, interval: 2s, timeout: 1s, name: a, address: "10.0.0.1:80"}
          - {<<: *a, name: b, address: "10.0.0.2:80", timeout: 2s}
        """,
        )
    )
    assert [(t.name, t.timeout) for t in config.targets] == [("a", 1.0), ("b", 2.0)]  # explicit beats merged


def test_a_value_is_shown_in_bounded_size_however_it_nests() -> None:
    from exporter.fields import shown

    value: list[object] = ["x" * 10_000]
    for _ in range(40):  # 10**40 leaves if printed in full
        value = [value] * 10
    assert len(shown(value)) <= 100
    error = ConfigError("a" * 10_000, "b\n" * 10_000)
    assert len(str(error)) < 700 and "\n" not in str(error)
