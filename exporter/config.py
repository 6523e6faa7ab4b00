"""Configuration: a YAML file, parsed and validated once, at the edge, into frozen objects.

Every error names the field it is about (``targets[2].address``) and what is wrong with it, so that a
broken ConfigMap is fixed from the pod's log line alone.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from .fields import ConfigError as ConfigError  # re-exported: callers catch config.ConfigError
from .fields import (
    check_keys,
    read_bool,
    read_duration,
    read_enum,
    read_hostport,
    read_int,
    read_mapping,
    read_str,
)
from .model import (
    AnyTarget,
    DNSQueryType,
    DNSTarget,
    HTTPTarget,
    PathClass,
    Perspective,
    TargetKey,
    TCPTarget,
    Transport,
    Via,
)

if TYPE_CHECKING:  # imported lazily at runtime: exporter.discovery.config imports this module
    from .discovery.config import DiscoveryConfig

# Free in the Prometheus default port allocations as far as we could read them: 9100-9999 is exhausted and
# new exporters take ports above 10000. 10047 avoids the Kubernetes node ports (10248-10259).
DEFAULT_PORT = 10047
DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"

DEFAULT_PATH_VIA = {
    PathClass.POD_IP: Via.POD,
    PathClass.CLUSTER_IP: Via.SERVICE,
    PathClass.DNS: Via.SERVICE,
    PathClass.INGRESS: Via.INGRESS,
}

# Buckets from 100 µs (same-node pod) to beyond the SYN-retransmit steps of 1 s and 3 s (1 + 2), so a
# connect that needed a retransmitted SYN lands in its own bucket instead of smearing the tail.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    1.5,
    3.5,
    7.5,
)


@dataclass(frozen=True)
class SchedulerConfig:
    # Probes in flight at once; large enough that 100 blackholed targets don't starve the healthy ones.
    max_concurrency: int = 128
    jitter: float = 0.1  # fraction of the interval each wait is randomly spread by


@dataclass(frozen=True)
class NodeFactsConfig:
    """Reading the node's kernel state (exporter.node): on by default, since it is what names causes."""

    enabled: bool = True
    interval: float = 30.0  # facts change slowly; iptables-save on a big node costs tens of milliseconds
    netns: str = ""  # network namespace to read: "" this one; a name or path (e.g. /proc/1/ns/net) otherwise


@dataclass(frozen=True)
class NodePerspectiveConfig:
    """Probing every target a second time from the node's network namespace (see exporter/perspective.py)."""

    enabled: bool = False  # needs CAP_SYS_ADMIN and the namespace file: opt-in
    netns: str = "/proc/1/ns/net"  # the host's namespace as seen with hostPID; a name under /var/run/netns too


@dataclass(frozen=True)
class Config:
    source_node: str
    listen_host: str = "0.0.0.0"
    listen_port: int = DEFAULT_PORT
    perspective: Perspective = Perspective.POD
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    targets: tuple[AnyTarget, ...] = ()
    discovery: DiscoveryConfig | None = None  # Kubernetes discovery; None: static targets only
    node_facts: NodeFactsConfig = field(default_factory=NodeFactsConfig)
    node_perspective: NodePerspectiveConfig = field(default_factory=NodePerspectiveConfig)


# --- targets ---

_COMMON_KEYS = {"name", "kind", "path", "via", "target_node", "service", "interval", "timeout"}
_KIND_KEYS = {
    "tcp": {"address"},
    "http": {"url", "host", "expect_status", "min_body_bytes", "tls_verify"},
    "dns": {"address", "transports", "query", "type", "expect"},
}


def parse_target(raw: Any, where: str, default_interval: float, default_timeout: float) -> list[AnyTarget]:
    """One config entry → one target (two for a DNS entry asking over both UDP and TCP)."""
    entry = read_mapping(raw, where)
    kind = entry.get("kind")
    if kind not in _KIND_KEYS:
        raise ConfigError(f"{where}.kind", f"expected one of {', '.join(_KIND_KEYS)}, got {kind!r}")
    check_keys(entry, _COMMON_KEYS | _KIND_KEYS[kind], where)
    path = read_enum(PathClass, entry.get("path"), f"{where}.path", [p.value for p in PathClass])
    common: dict[str, Any] = {
        "name": read_str(entry.get("name"), f"{where}.name"),
        "path": path,
        "via": read_enum(Via, entry["via"], f"{where}.via", [v.value for v in Via])
        if "via" in entry
        else DEFAULT_PATH_VIA[path],
        "target_node": str(entry.get("target_node") or ""),
        "service": str(entry.get("service") or ""),
        "interval": read_duration(entry.get("interval", default_interval), f"{where}.interval"),
        "timeout": read_duration(entry.get("timeout", default_timeout), f"{where}.timeout"),
    }
    if common["timeout"] > common["interval"]:
        raise ConfigError(
            f"{where}.timeout",
            f"{common['timeout']}s is longer than the interval {common['interval']}s",
        )
    if kind == "tcp":
        host, port = read_hostport(entry.get("address"), f"{where}.address", None)
        return [TCPTarget(host=host, port=port, **common)]
    if kind == "http":
        return [_parse_http(entry, where, common)]
    return _parse_dns(entry, where, common)


def _parse_http(entry: Mapping[str, Any], where: str, common: dict[str, Any]) -> HTTPTarget:
    url = read_str(entry.get("url"), f"{where}.url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.url", f"expected http://ip[:port]/path or https://…, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ConfigError(f"{where}.url", str(exc)) from None
    statuses = entry.get("expect_status", [200])
    if not isinstance(statuses, list) or not statuses:
        raise ConfigError(f"{where}.expect_status", f"expected a list of status codes, got {statuses!r}")
    expect = frozenset(read_int(s, f"{where}.expect_status[{i}]", 100, 599) for i, s in enumerate(statuses))
    tls_verify = entry.get("tls_verify", False)
    if not isinstance(tls_verify, bool):
        raise ConfigError(f"{where}.tls_verify", f"expected true or false, got {tls_verify!r}")
    return HTTPTarget(
        url=url,
        host_header=str(entry.get("host") or ""),
        expect_status=expect,
        min_body_bytes=read_int(entry.get("min_body_bytes", 0), f"{where}.min_body_bytes", 0, 1 << 30),
        tls_verify=tls_verify,
        **common,
    )


def _parse_dns(entry: Mapping[str, Any], where: str, common: dict[str, Any]) -> list[AnyTarget]:
    server, port = read_hostport(entry.get("address"), f"{where}.address", 53)
    transports = entry.get("transports", ["udp"])
    if not isinstance(transports, list) or not transports:
        raise ConfigError(f"{where}.transports", f"expected a list such as [udp, tcp], got {transports!r}")
    protocols = [
        read_enum(Transport, t, f"{where}.transports[{i}]", ["udp", "tcp"]) for i, t in enumerate(transports)
    ]
    if len(set(protocols)) != len(protocols):
        raise ConfigError(f"{where}.transports", "lists a transport twice")
    expect = entry.get("expect", [])
    if not isinstance(expect, list) or not all(isinstance(e, str) for e in expect):
        raise ConfigError(f"{where}.expect", f"expected a list of strings, got {expect!r}")
    query_name = read_str(entry.get("query"), f"{where}.query")
    query_type = read_enum(DNSQueryType, entry.get("type", "A"), f"{where}.type", [t.value for t in DNSQueryType])
    return [
        DNSTarget(
            server=server,
            port=port,
            protocol=proto,
            query_name=query_name,
            query_type=query_type,
            expect=frozenset(expect),
            **common,
        )
        for proto in protocols
    ]


# --- the whole file ---

_TOP_KEYS = {
    "source_node", "listen", "perspective", "defaults", "scheduler", "latency_buckets", "targets", "discovery",
    "node_facts", "node_perspective",
}


def default_source_node() -> str:
    """The downward API's node name when set (the DaemonSet sets NODE_NAME), else this host's name."""
    return os.environ.get("NODE_NAME") or socket.gethostname()


def parse_config(raw: Any) -> Config:
    """Validate a decoded YAML document into a Config, or raise ConfigError naming the field."""
    if raw is None:
        raw = {}
    doc = read_mapping(raw, "(top level)")
    check_keys(doc, _TOP_KEYS, "")

    source_node = read_str(doc["source_node"], "source_node") if "source_node" in doc else default_source_node()
    # Port 0 (any free port) is allowed for listening: tests and the lab use it.
    listen_host, listen_port = read_hostport(doc.get("listen", DEFAULT_LISTEN), "listen", None, lowest_port=0)
    perspective = read_enum(Perspective, doc.get("perspective", "pod"), "perspective", ["pod", "node"])

    defaults = read_mapping(doc.get("defaults", {}), "defaults")
    check_keys(defaults, {"interval", "timeout"}, "defaults")
    interval = read_duration(defaults.get("interval", 10.0), "defaults.interval")
    timeout = read_duration(defaults.get("timeout", 3.0), "defaults.timeout")

    sched_raw = read_mapping(doc.get("scheduler", {}), "scheduler")
    check_keys(sched_raw, {"max_concurrency", "jitter"}, "scheduler")
    jitter = sched_raw.get("jitter", 0.1)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 0.5:
        raise ConfigError("scheduler.jitter", f"expected a fraction from 0 to 0.5, got {jitter!r}")
    scheduler = SchedulerConfig(
        max_concurrency=read_int(sched_raw.get("max_concurrency", 128), "scheduler.max_concurrency", 1, 10000),
        jitter=float(jitter),
    )

    buckets_raw = doc.get("latency_buckets", list(DEFAULT_LATENCY_BUCKETS))
    if not isinstance(buckets_raw, list) or not buckets_raw:
        raise ConfigError("latency_buckets", f"expected a list of seconds, got {buckets_raw!r}")
    buckets = tuple(read_duration(b, f"latency_buckets[{i}]") for i, b in enumerate(buckets_raw))
    if list(buckets) != sorted(set(buckets)):
        raise ConfigError("latency_buckets", "must be strictly increasing")

    targets_raw = doc.get("targets", [])
    if not isinstance(targets_raw, list):
        raise ConfigError("targets", f"expected a list, got {type(targets_raw).__name__}")
    targets: list[AnyTarget] = []
    seen: dict[TargetKey, str] = {}
    for i, entry in enumerate(targets_raw):
        for target in parse_target(entry, f"targets[{i}]", interval, timeout):
            if target.key in seen:
                raise ConfigError(
                    f"targets[{i}].name", f"{target.name!r} is already used by {seen[target.key]}"
                )
            seen[target.key] = f"targets[{i}]"
            targets.append(target)

    discovery = None
    if doc.get("discovery") not in (None, False):
        from .discovery.config import parse_discovery

        discovery = parse_discovery(doc["discovery"], default_interval=interval, default_timeout=timeout)

    facts_raw = read_mapping(doc.get("node_facts", {}), "node_facts")
    check_keys(facts_raw, {"enabled", "interval", "netns"}, "node_facts")
    node_facts = NodeFactsConfig(
        enabled=read_bool(facts_raw.get("enabled", True), "node_facts.enabled"),
        interval=read_duration(facts_raw.get("interval", 30.0), "node_facts.interval"),
        netns=str(facts_raw.get("netns") or ""),
    )

    persp_raw = read_mapping(doc.get("node_perspective", {}), "node_perspective")
    check_keys(persp_raw, {"enabled", "netns"}, "node_perspective")
    node_perspective = NodePerspectiveConfig(
        enabled=read_bool(persp_raw.get("enabled", False), "node_perspective.enabled"),
        netns=read_str(persp_raw.get("netns", NodePerspectiveConfig.netns), "node_perspective.netns"),
    )
    if node_perspective.enabled and perspective is Perspective.NODE:
        raise ConfigError(
            "node_perspective.enabled",
            "the exporter already runs in the node's namespace (perspective: node); there is no second view",
        )

    return Config(
        source_node=source_node,
        listen_host=listen_host,
        listen_port=listen_port,
        perspective=perspective,
        scheduler=scheduler,
        latency_buckets=buckets,
        targets=tuple(targets),
        discovery=discovery,
        node_facts=node_facts,
        node_perspective=node_perspective,
    )


def parse_listen(config: Config, listen: str) -> Config:
    """The config with its listen address replaced (the --listen flag), validated like the file's."""
    host, port = read_hostport(listen, "--listen", None, lowest_port=0)
    return dataclasses.replace(config, listen_host=host, listen_port=port)


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; every failure is a ConfigError naming the file or field."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(str(p), "no such file") from None
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(where, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_config(raw)
