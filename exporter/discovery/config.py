"""The ``discovery`` section of the config file, validated once into frozen objects.

Errors are :class:`exporter.config.ConfigError` naming the field (``discovery.peers.k``), like the rest of
the config.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..fields import (
    BACKOFF,
    DEFAULT_PORT,
    WATCH_TIMEOUT,
    ConfigError,
    check_keys,
    read_bool,
    read_dns_name,
    read_duration,
    read_host_header,
    read_int,
    read_mapping,
    read_optional,
    read_schedule,
    read_str,
    shown,
)
from ..model import Transport

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# K3s defaults (--cluster-cidr, --service-cidr): discovered pod and Service addresses outside them are not probed.
DEFAULT_POD_CIDRS: tuple[IPNetwork, ...] = (ipaddress.ip_network("10.42.0.0/16"),)
DEFAULT_SERVICE_CIDRS: tuple[IPNetwork, ...] = (ipaddress.ip_network("10.43.0.0/16"),)
DEFAULT_NODE_CIDRS: tuple[IPNetwork, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
MiB = 1024 * 1024


@dataclass(frozen=True)
class PeersConfig:
    enabled: bool = True
    # Pods of this DaemonSet in the exporter's namespace; the chart sets exactly these labels.
    label_selector: str = "app.kubernetes.io/name=netpath-exporter"
    port: int = DEFAULT_PORT
    k: int | None = 10  # peers each exporter probes; None means all
    all_up_to: int = 16  # clusters with at most this many nodes: everyone probes everyone


@dataclass(frozen=True)
class ServicesConfig:
    enabled: bool = True  # annotated Services (and their endpoints) and the `kubernetes` API Service


@dataclass(frozen=True)
class DNSConfig:
    enabled: bool = True
    service: str = "kube-system/kube-dns"  # namespace/name of the cluster DNS Service
    names: tuple[str, ...] = ()  # asked in addition to the own Service FQDN and kubernetes.default.svc
    transports: tuple[Transport, ...] = (Transport.UDP, Transport.TCP)
    resolv_conf: str = "/etc/resolv.conf"  # "" to skip the pod's own nameserver


@dataclass(frozen=True)
class IngressConfig:
    enabled: bool = True
    controller_service: str = "kube-system/traefik"  # namespace/name of the ingress controller's Service
    host_ports: bool = True  # also probe the controller on node addresses (K3s ServiceLB, hostPort)


@dataclass(frozen=True)
class DiscoveryConfig:
    namespace: str = "netpath"  # the exporter's own namespace
    service: str = "netpath-exporter"  # the exporter's own ClusterIP Service (always probed)
    service_port: int = DEFAULT_PORT
    cluster_domain: str = "cluster.local"
    api_url: str = ""  # explicit API address (kubectl proxy, tests); "" = in-cluster, else kubeconfig
    kubeconfig: str = ""  # "" = $KUBECONFIG or ~/.kube/config, used only outside a cluster
    interval: float = 10.0  # probe interval of discovered targets
    timeout: float = 3.0  # probe timeout of discovered targets
    watch_timeout: float = 300.0  # server-side end of each watch (timeoutSeconds); the client then resumes
    backoff_initial: float = 0.5  # first wait after an API error, doubled per consecutive error
    backoff_max: float = 30.0
    peers: PeersConfig = field(default_factory=PeersConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    dns: DNSConfig = field(default_factory=DNSConfig)
    ingress: IngressConfig = field(default_factory=IngressConfig)
    # Which discovered addresses may be probed (docs/discovery.md, "No open prober").
    pod_cidrs: tuple[IPNetwork, ...] = DEFAULT_POD_CIDRS  # peers, endpoints, CoreDNS pods
    service_cidrs: tuple[IPNetwork, ...] = DEFAULT_SERVICE_CIDRS  # ClusterIPs
    node_cidrs: tuple[IPNetwork, ...] = DEFAULT_NODE_CIDRS  # node addresses (ingress host ports)
    namespaces_allow: tuple[str, ...] = ()  # opted-in Services/Ingresses: only these namespaces (empty: all)
    namespaces_deny: tuple[str, ...] = ()  # …and never these
    max_watch_line_bytes: int = 4 * MiB  # one watch event; a longer line drops the stream (then relist)
    max_list_bytes: int = 64 * MiB  # one list page


# --- readers ---------------------------------------------------------------------------------------------


def _dns_label(value: Any, where: str) -> str:
    text = read_str(value, where)
    if not _DNS_LABEL.match(text):
        raise ConfigError(where, f"not a Kubernetes object name (lowercase DNS label): {shown(text)}")
    return text


def _ns_name(value: Any, where: str) -> str:
    text = read_str(value, where)
    parts = text.split("/")
    if len(parts) != 2 or not all(_DNS_LABEL.match(p) for p in parts):
        raise ConfigError(where, f"expected namespace/name, got {shown(text)}")
    return text


def _label_selector(value: Any, where: str) -> str:
    """An equality-based selector (``a=b,c=d``): what the chart's DaemonSet labels need, and checkable."""
    text = read_str(value, where)
    for term in text.split(","):
        key, eq, val = term.partition("=")
        key, val = key.strip(), val.strip().lstrip("=")
        if not eq or not key or not _LABEL_VALUE.match(key.split("/")[-1]) or not _LABEL_VALUE.match(val):
            raise ConfigError(where, f"expected label=value[,label=value…], got {shown(text)}")
    return text


def _cidrs(value: Any, where: str) -> tuple[IPNetwork, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, "expected a non-empty list of CIDRs such as [10.42.0.0/16]")
    out: list[IPNetwork] = []
    for i, item in enumerate(value):
        try:
            out.append(ipaddress.ip_network(read_str(item, f"{where}[{i}]")))
        except ValueError:
            raise ConfigError(f"{where}[{i}]", f"not a CIDR with its host bits zero: {str(item)[:60]!r}") from None
    return tuple(out)


def _namespace_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(where, "expected a list of namespace names")
    return tuple(_dns_label(item, f"{where}[{i}]") for i, item in enumerate(value))


def _section(doc: Mapping[str, Any], key: str, allowed: set[str]) -> Mapping[str, Any]:
    raw = doc.get(key, {})
    if isinstance(raw, bool):  # `peers: false` switches a source off
        return {"enabled": raw}
    section = read_mapping(raw, f"discovery.{key}")
    check_keys(section, allowed, f"discovery.{key}")
    return section


def default_namespace() -> str:
    """The downward API's POD_NAMESPACE, else the service account's namespace file, else "netpath"."""
    if ns := os.environ.get("POD_NAMESPACE"):
        return ns
    try:
        with open(os.path.join(SERVICE_ACCOUNT_DIR, "namespace")) as f:
            return f.read().strip() or "netpath"
    except OSError:
        return "netpath"


def _api_url(value: Any, where: str) -> str:
    """http(s)://host[:port] of the API server (kubectl proxy, tests): a host name is fine here, port 0 is not."""
    text = read_str(value, where, max_len=300)
    m = re.fullmatch(r"https?://([^/@?#\s]+?)/?", text)
    try:
        read_host_header(m.group(1) if m else None, where)
    except ConfigError:
        raise ConfigError(where, f"expected http(s)://host[:port] (port 1-65535), got {shown(text)}") from None
    return text.rstrip("/")


# --- the section ----------------------------------------------------------------------------------------

_TOP_KEYS = {
    "namespace",
    "service",
    "service_port",
    "cluster_domain",
    "api_url",
    "kubeconfig",
    "interval",
    "timeout",
    "watch_timeout",
    "backoff",
    "peers",
    "services",
    "dns",
    "ingress",
    "pod_cidrs",
    "service_cidrs",
    "node_cidrs",
    "namespaces",
    "max_watch_line_bytes",
    "max_list_bytes",
}


def parse_discovery(
    raw: Any, *, default_interval: float | None = None, default_timeout: float | None = None
) -> DiscoveryConfig:
    """Validate the ``discovery`` mapping (``{}`` or ``true`` means all defaults). Discovered targets take
    the file's ``defaults`` interval and timeout unless the section sets its own."""
    if raw is True:
        raw = {}
    doc = read_mapping(raw, "discovery")
    check_keys(doc, _TOP_KEYS, "discovery")
    d = DiscoveryConfig()
    if default_interval is not None and default_timeout is not None:
        d = DiscoveryConfig(interval=default_interval, timeout=default_timeout)

    api_url = read_optional(_api_url, doc.get("api_url"), "discovery.api_url", "")
    interval, timeout = read_schedule(doc, "discovery", d.interval, d.timeout)

    backoff = read_mapping(doc.get("backoff"), "discovery.backoff")
    check_keys(backoff, {"initial", "max"}, "discovery.backoff")
    backoff_initial = read_duration(backoff.get("initial", d.backoff_initial), "discovery.backoff.initial", *BACKOFF)
    backoff_max = read_duration(backoff.get("max", d.backoff_max), "discovery.backoff.max", *BACKOFF)
    if backoff_max < backoff_initial:
        raise ConfigError("discovery.backoff.max", f"{backoff_max}s is shorter than initial {backoff_initial}s")

    p = _section(doc, "peers", {"enabled", "label_selector", "port", "k", "all_up_to"})
    k_raw = p.get("k", d.peers.k)
    k = None if k_raw == "all" else read_int(k_raw, "discovery.peers.k", 1, 1000) if k_raw is not None else None
    if isinstance(k_raw, str) and k_raw != "all":
        raise ConfigError("discovery.peers.k", f'expected a whole number from 1 to 1000 or "all", got {shown(k_raw)}')
    peers = PeersConfig(
        enabled=read_bool(p.get("enabled", True), "discovery.peers.enabled"),
        label_selector=_label_selector(
            p.get("label_selector", d.peers.label_selector), "discovery.peers.label_selector"
        ),
        port=read_int(p.get("port", d.peers.port), "discovery.peers.port", 1, 65535),
        k=k,
        all_up_to=read_int(p.get("all_up_to", d.peers.all_up_to), "discovery.peers.all_up_to", 0, 100000),
    )

    s = _section(doc, "services", {"enabled"})
    services = ServicesConfig(enabled=read_bool(s.get("enabled", True), "discovery.services.enabled"))

    n = _section(doc, "dns", {"enabled", "service", "names", "transports", "resolv_conf"})
    names_raw = n.get("names", [])
    if not isinstance(names_raw, list):
        raise ConfigError("discovery.dns.names", f"expected a list of names, got {shown(names_raw)}")
    names = tuple(read_dns_name(x, f"discovery.dns.names[{i}]") for i, x in enumerate(names_raw))
    transports_raw = n.get("transports", ["udp", "tcp"])
    if not isinstance(transports_raw, list) or not transports_raw:
        raise ConfigError("discovery.dns.transports", f"expected a list like [udp, tcp], got {shown(transports_raw)}")
    transports: list[Transport] = []
    for i, t in enumerate(transports_raw):
        if t not in ("udp", "tcp"):
            raise ConfigError(f"discovery.dns.transports[{i}]", f"expected udp or tcp, got {shown(t)}")
        if Transport(t) in transports:
            raise ConfigError("discovery.dns.transports", f"lists {t} twice")
        transports.append(Transport(t))
    resolv_conf = n.get("resolv_conf", d.dns.resolv_conf)
    if not isinstance(resolv_conf, str):
        raise ConfigError("discovery.dns.resolv_conf", f'expected a file path or "", got {shown(resolv_conf)}')
    resolv_conf = read_optional(read_str, resolv_conf, "discovery.dns.resolv_conf", "")
    dns = DNSConfig(
        enabled=read_bool(n.get("enabled", True), "discovery.dns.enabled"),
        service=_ns_name(n.get("service", d.dns.service), "discovery.dns.service"),
        names=names,
        transports=tuple(transports),
        resolv_conf=resolv_conf,
    )

    g = _section(doc, "ingress", {"enabled", "controller_service", "host_ports"})
    ingress = IngressConfig(
        enabled=read_bool(g.get("enabled", True), "discovery.ingress.enabled"),
        controller_service=_ns_name(
            g.get("controller_service", d.ingress.controller_service), "discovery.ingress.controller_service"
        ),
        host_ports=read_bool(g.get("host_ports", True), "discovery.ingress.host_ports"),
    )

    namespaces = read_mapping(doc.get("namespaces"), "discovery.namespaces")
    check_keys(namespaces, {"allow", "deny"}, "discovery.namespaces")

    return DiscoveryConfig(
        namespace=_dns_label(doc["namespace"], "discovery.namespace") if "namespace" in doc else default_namespace(),
        service=_dns_label(doc.get("service", d.service), "discovery.service"),
        service_port=read_int(doc.get("service_port", d.service_port), "discovery.service_port", 1, 65535),
        cluster_domain=read_dns_name(
            doc.get("cluster_domain", d.cluster_domain), "discovery.cluster_domain", underscore=False, lowercase=True
        ).rstrip("."),
        api_url=api_url.rstrip("/"),
        kubeconfig=read_optional(read_str, doc.get("kubeconfig"), "discovery.kubeconfig", ""),
        interval=interval,
        timeout=timeout,
        watch_timeout=read_duration(
            doc.get("watch_timeout", d.watch_timeout), "discovery.watch_timeout", *WATCH_TIMEOUT
        ),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        peers=peers,
        services=services,
        dns=dns,
        ingress=ingress,
        pod_cidrs=_cidrs(doc["pod_cidrs"], "discovery.pod_cidrs") if "pod_cidrs" in doc else d.pod_cidrs,
        service_cidrs=(
            _cidrs(doc["service_cidrs"], "discovery.service_cidrs") if "service_cidrs" in doc else d.service_cidrs
        ),
        node_cidrs=_cidrs(doc["node_cidrs"], "discovery.node_cidrs") if "node_cidrs" in doc else d.node_cidrs,
        namespaces_allow=_namespace_list(namespaces.get("allow", []), "discovery.namespaces.allow"),
        namespaces_deny=_namespace_list(namespaces.get("deny", []), "discovery.namespaces.deny"),
        max_watch_line_bytes=read_int(
            doc.get("max_watch_line_bytes", d.max_watch_line_bytes),
            "discovery.max_watch_line_bytes",
            64 * 1024,
            256 * MiB,
        ),
        max_list_bytes=read_int(
            doc.get("max_list_bytes", d.max_list_bytes), "discovery.max_list_bytes", 64 * 1024, 1024 * MiB
        ),
    )
