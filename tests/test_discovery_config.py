"""The `discovery` config section: defaults, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.config import ConfigError, parse_config
from exporter.discovery.config import parse_discovery
from exporter.model import Transport


def test_absent_means_no_discovery_and_empty_means_defaults() -> None:
    assert parse_config({"source_node": "n"}).discovery is None
    cfg = parse_config({"source_node": "n", "defaults": {"interval": "5s", "timeout": "1s"}, "discovery": {}})
    assert cfg.discovery is not None
    assert cfg.discovery.peers.k == 10 and cfg.discovery.peers.all_up_to == 16
    assert (cfg.discovery.interval, cfg.discovery.timeout) == (5.0, 1.0)  # the file's defaults
    assert cfg.discovery.dns.transports == (Transport.UDP, Transport.TCP)


def test_a_full_section_parses() -> None:
    d = parse_discovery(
        {
            "namespace": "monitoring",
            "service": "np",
            "cluster_domain": "k8s.local.",
            "api_url": "http://127.0.0.1:8001",
            "interval": "30s",
            "timeout": "2s",
            "watch_timeout": "5m",
            "backoff": {"initial": "100ms", "max": "10s"},
            "peers": {"k": "all", "label_selector": "app=np,tier=probe", "port": 9000},
            "services": False,
            "dns": {"names": ["example.com"], "transports": ["tcp"], "resolv_conf": ""},
            "ingress": {"controller_service": "ingress-nginx/ingress-nginx-controller", "host_ports": False},
        }
    )
    assert d.peers.k is None and d.peers.port == 9000
    assert d.services.enabled is False and d.cluster_domain == "k8s.local"
    assert d.watch_timeout == 300 and d.backoff_initial == 0.1
    assert d.dns.names == ("example.com",) and d.dns.transports == (Transport.TCP,)


def test_the_address_policy_defaults_to_k3s_and_parses() -> None:
    d = parse_discovery({})
    assert [str(n) for n in d.pod_cidrs] == ["10.42.0.0/16"] and [str(n) for n in d.service_cidrs] == ["10.43.0.0/16"]
    assert [str(n) for n in d.node_cidrs] == ["0.0.0.0/0", "::/0"]
    assert (d.namespaces_allow, d.namespaces_deny) == ((), ())
    assert (d.max_watch_line_bytes, d.max_list_bytes) == (4 * 1024 * 1024, 64 * 1024 * 1024)
    d = parse_discovery(
        {
            "pod_cidrs": ["10.244.0.0/16", "fd00:10:244::/56"],
            "service_cidrs": ["10.96.0.0/12"],
            "node_cidrs": ["192.168.50.0/24"],
            "namespaces": {"allow": ["shop", "web"], "deny": ["kube-system"]},
            "max_watch_line_bytes": 1048576,
            "max_list_bytes": 16777216,
        }
    )
    assert [str(n) for n in d.pod_cidrs] == ["10.244.0.0/16", "fd00:10:244::/56"]
    assert (d.namespaces_allow, d.namespaces_deny) == (("shop", "web"), ("kube-system",))
    assert (d.max_watch_line_bytes, d.max_list_bytes) == (1048576, 16777216)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"peers": {"k": 0}}, "discovery.peers.k"),
        ({"peers": {"k": "some"}}, "discovery.peers.k"),
        ({"peers": {"k": True}}, "discovery.peers.k"),
        ({"peers": {"port": 70000}}, "discovery.peers.port"),
        ({"peers": {"label_selector": "no equals"}}, "discovery.peers.label_selector"),
        ({"peers": {"colour": "red"}}, "discovery.peers.colour"),
        ({"peers": []}, "discovery.peers"),
        ({"dns": {"service": "kube-dns"}}, "discovery.dns.service"),
        ({"dns": {"transports": ["quic"]}}, "discovery.dns.transports[0]"),
        ({"dns": {"transports": ["udp", "udp"]}}, "discovery.dns.transports"),
        ({"dns": {"names": "a.b"}}, "discovery.dns.names"),
        ({"ingress": {"host_ports": "yes"}}, "discovery.ingress.host_ports"),
        ({"ingress": {"controller_service": "Traefik/x"}}, "discovery.ingress.controller_service"),
        ({"namespace": "Not_A_Label"}, "discovery.namespace"),
        ({"api_url": "127.0.0.1:8001"}, "discovery.api_url"),
        ({"interval": "1s", "timeout": "2s"}, "discovery.timeout"),
        ({"backoff": {"initial": "10s", "max": "1s"}}, "discovery.backoff.max"),
        ({"watch_timeout": "-1s"}, "discovery.watch_timeout"),
        ({"nodes": 3}, "discovery.nodes"),
        ({"pod_cidrs": "10.42.0.0/16"}, "discovery.pod_cidrs"),
        ({"pod_cidrs": []}, "discovery.pod_cidrs"),
        ({"pod_cidrs": ["10.42.0.1/16"]}, "discovery.pod_cidrs[0]"),
        ({"service_cidrs": ["10.43.0.0/16", "localhost"]}, "discovery.service_cidrs[1]"),
        ({"node_cidrs": [7]}, "discovery.node_cidrs[0]"),
        ({"namespaces": {"allow": "shop"}}, "discovery.namespaces.allow"),
        ({"namespaces": {"deny": ["Shop"]}}, "discovery.namespaces.deny[0]"),
        ({"namespaces": {"only": ["shop"]}}, "discovery.namespaces.only"),
        ({"max_watch_line_bytes": 10}, "discovery.max_watch_line_bytes"),
        ({"max_list_bytes": "64MiB"}, "discovery.max_list_bytes"),
        ("yes", "discovery"),
    ],
)
def test_errors_name_the_field(raw: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"source_node": "n", "discovery": raw})
    assert info.value.where == field, str(info.value)


def test_an_api_url_may_name_a_host() -> None:
    d = parse_discovery({"api_url": "https://kubernetes.default.svc:443/", "cluster_domain": "k8s.local."})
    assert d.api_url == "https://kubernetes.default.svc:443" and d.cluster_domain == "k8s.local"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"cluster_domain": "..."}, "discovery.cluster_domain"),
        ({"cluster_domain": "cluster..local"}, "discovery.cluster_domain"),
        ({"cluster_domain": "Cluster.Local"}, "discovery.cluster_domain"),
        ({"cluster_domain": ["cluster.local"]}, "discovery.cluster_domain"),
        ({"dns": {"names": ["a..b"]}}, "discovery.dns.names[0]"),
        ({"dns": {"names": ["ok.example", "-bad.example"]}}, "discovery.dns.names[1]"),
        ({"dns": {"resolv_conf": "/etc/resolv\n.conf"}}, "discovery.dns.resolv_conf"),
        ({"api_url": "http://127.0.0.1:0"}, "discovery.api_url"),
        ({"api_url": "http://127.0.0.1:8001\r\nX: y"}, "discovery.api_url"),
        ({"api_url": "http://user@127.0.0.1:8001"}, "discovery.api_url"),
        ({"interval": float("nan")}, "discovery.interval"),
        ({"interval": "10us"}, "discovery.interval"),
        ({"watch_timeout": float("inf")}, "discovery.watch_timeout"),
        ({"backoff": {"initial": "1us"}}, "discovery.backoff.initial"),
        ({"kubeconfig": ["a"]}, "discovery.kubeconfig"),
        (0, "discovery"),
    ],
)
def test_hostile_values_name_the_field(raw: Any, field: str) -> None:
    """Issue 15 row 9 in this section: names, URLs and durations that were accepted."""
    test_errors_name_the_field(raw, field)


def test_discovery_config_does_not_import_the_main_config_module() -> None:
    # exporter.config parses the discovery section with this module; the reverse import made a circle that
    # only a function-level import kept working (issue 14, point 4).
    import subprocess
    import sys

    code = "import sys, exporter.discovery.config; print('exporter.config' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
