"""From the watched objects to targets, per source. Pure functions of plain JSON objects: no I/O.

Target names are stable across rounds (they are the series identity) and documented in docs/discovery.md:
``peer/<node>``, ``svc/<ns>/<name>:<port>``, ``ep/<ns>/<svc>/<pod>:<port>``, ``dns/kube-dns/<query>``,
``dns/resolv/<ip>/<query>``, ``dns/coredns/<pod>/<query>``, ``ingress/<ns>/<name>/<host>`` and
``ingress/<ns>/<name>/<host>@node/<node>``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import AnyTarget, DNSTarget, HTTPTarget, PathClass, TCPTarget, Transport, Via, format_hostport
from .config import DiscoveryConfig
from .peers import select_peers

Obj = dict[str, Any]
Store = Mapping[tuple[str, str], Obj]

# Opt-in annotations, on Services and Ingresses.
ANNOTATION_PROBE = "netpath.io/probe"  # "true" opts the object in
ANNOTATION_PORTS = "netpath.io/ports"  # Services: port names or numbers, comma-separated; default all TCP ports
ANNOTATION_PATH = "netpath.io/path"  # HTTP path: Services are then probed with GET instead of a TCP connect
ANNOTATION_STATUS = "netpath.io/expect-status"  # accepted HTTP codes, comma-separated; default 200

SOURCES = ("peers", "services", "endpoints", "dns", "ingress")


@dataclass(frozen=True)
class ClusterState:
    nodes: Store = field(default_factory=dict)
    pods: Store = field(default_factory=dict)  # the exporter's own pods (label-selected)
    services: Store = field(default_factory=dict)
    endpointslices: Store = field(default_factory=dict)
    ingresses: Store = field(default_factory=dict)


# --- object readers ----------------------------------------------------------------------------------------


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _dict(obj: Any, key: str) -> Obj:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _list(obj: Any, key: str) -> list[Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else []


def _condition(obj: Obj, kind: str) -> str:
    for cond in _list(_dict(obj, "status"), "conditions"):
        if isinstance(cond, dict) and cond.get("type") == kind:
            return str(cond.get("status", ""))
    return ""


def node_is_usable(node: Obj) -> bool:
    """Ready, schedulable and not being deleted: a node being drained, autoscaled away or lost is not a
    network failure and must not look like one."""
    return (
        _condition(node, "Ready") == "True"
        and not _dict(node, "spec").get("unschedulable")
        and not _meta(node).get("deletionTimestamp")
    )


def pod_is_usable(pod: Obj) -> bool:
    """Running, Ready and not terminating, with an IP."""
    status = _dict(pod, "status")
    return (
        status.get("phase") == "Running"
        and _condition(pod, "Ready") == "True"
        and not _meta(pod).get("deletionTimestamp")
        and bool(status.get("podIP"))
    )


def node_internal_ip(node: Obj) -> str:
    for addr in _list(_dict(node, "status"), "addresses"):
        if isinstance(addr, dict) and addr.get("type") == "InternalIP" and addr.get("address"):
            return str(addr["address"])
    return ""


def _annotations(obj: Obj) -> Mapping[str, str]:
    value = _meta(obj).get("annotations")
    return value if isinstance(value, dict) else {}


def opted_in(obj: Obj) -> bool:
    return str(_annotations(obj).get(ANNOTATION_PROBE, "")).strip().lower() in ("true", "yes", "1")


def _cluster_ip(svc: Obj) -> str:
    ip = str(_dict(svc, "spec").get("clusterIP") or "")
    try:
        ipaddress.ip_address(ip)
    except ValueError:  # "None" (headless), "" (ExternalName)
        return ""
    return ip


def _url(host: str, port: int, path: str, scheme: str = "http") -> str:
    return f"{scheme}://{format_hostport(host, port)}{path if path.startswith('/') else '/' + path}"


def _expect_status(obj: Obj) -> frozenset[int]:
    raw = str(_annotations(obj).get(ANNOTATION_STATUS, "") or "")
    codes = {int(c) for c in raw.replace(" ", "").split(",") if c.isdigit() and 100 <= int(c) <= 599}
    return frozenset(codes or {200})


# --- the derivation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deriver:
    cfg: DiscoveryConfig
    source_node: str
    resolv_nameservers: tuple[str, ...] = ()

    def all(self, state: ClusterState) -> dict[str, list[AnyTarget]]:
        out: dict[str, list[AnyTarget]] = {s: [] for s in SOURCES}
        usable_nodes = {n for (_, n), obj in state.nodes.items() if node_is_usable(obj)}
        if self.cfg.peers.enabled:
            out["peers"] = self.peers(state, usable_nodes)
        if self.cfg.services.enabled:
            out["services"], out["endpoints"] = self.services(state, usable_nodes)
        else:
            out["services"] = self._own_service(state)
        if self.cfg.dns.enabled:
            out["dns"] = self.dns(state, usable_nodes)
        if self.cfg.ingress.enabled:
            out["ingress"] = self.ingress(state, usable_nodes)
        return out

    def _common(self) -> dict[str, Any]:
        return {"interval": self.cfg.interval, "timeout": self.cfg.timeout}

    # peers ---------------------------------------------------------------------------------------------

    def peer_nodes(self, state: ClusterState, usable_nodes: set[str]) -> dict[str, str]:
        """node → exporter pod IP for every usable node with a usable exporter pod (the candidates)."""
        by_node: dict[str, str] = {}
        for _, pod in sorted(state.pods.items()):
            node = str(_dict(pod, "spec").get("nodeName") or "")
            if node in usable_nodes and pod_is_usable(pod) and node not in by_node:
                by_node[node] = str(_dict(pod, "status")["podIP"])
        return by_node

    def chosen_peers(self, state: ClusterState, usable_nodes: set[str]) -> list[str]:
        candidates = self.peer_nodes(state, usable_nodes)
        return select_peers(self.source_node, candidates, self.cfg.peers.k, self.cfg.peers.all_up_to)

    def peers(self, state: ClusterState, usable_nodes: set[str]) -> list[AnyTarget]:
        candidates = self.peer_nodes(state, usable_nodes)
        chosen = select_peers(self.source_node, candidates, self.cfg.peers.k, self.cfg.peers.all_up_to)
        return [
            TCPTarget(
                name=f"peer/{node}", path=PathClass.POD_IP, via=Via.POD, target_node=node,
                host=candidates[node], port=self.cfg.peers.port,
                service=f"{self.cfg.namespace}/{self.cfg.service}", **self._common(),
            )
            for node in chosen
        ]

    # services and their endpoints ----------------------------------------------------------------------

    def _own_service(self, state: ClusterState) -> list[AnyTarget]:
        svc = state.services.get((self.cfg.namespace, self.cfg.service))
        if svc is None or not (ip := _cluster_ip(svc)):
            return []
        port = self.cfg.service_port
        return [
            TCPTarget(
                name=f"svc/{self.cfg.namespace}/{self.cfg.service}:{port}", path=PathClass.CLUSTER_IP,
                via=Via.SERVICE, service=f"{self.cfg.namespace}/{self.cfg.service}", host=ip, port=port,
                **self._common(),
            )
        ]

    def services(self, state: ClusterState, usable_nodes: set[str]) -> tuple[list[AnyTarget], list[AnyTarget]]:
        services = self._own_service(state)
        endpoints: list[AnyTarget] = []
        api = state.services.get(("default", "kubernetes"))
        if api is not None and (ip := _cluster_ip(api)):
            for p in _list(_dict(api, "spec"), "ports"):
                if isinstance(p, dict) and isinstance(p.get("port"), int):
                    services.append(TCPTarget(
                        name=f"svc/default/kubernetes:{p['port']}", path=PathClass.CLUSTER_IP, via=Via.SERVICE,
                        service="default/kubernetes", host=ip, port=p["port"], **self._common(),
                    ))
        slices = _slices_by_service(state)
        for (ns, name), svc in sorted(state.services.items()):
            if not opted_in(svc) or (ns, name) in ((self.cfg.namespace, self.cfg.service), ("default", "kubernetes")):
                continue
            path = str(_annotations(svc).get(ANNOTATION_PATH, "") or "")
            expect = _expect_status(svc)
            ports = _selected_ports(svc)
            ip = _cluster_ip(svc)
            for p in ports:
                number = p["port"]
                if ip:
                    services.append(self._svc_or_ep(
                        f"svc/{ns}/{name}:{number}", PathClass.CLUSTER_IP, Via.SERVICE, "", f"{ns}/{name}",
                        ip, number, path, expect,
                    ))
                for pod, pod_ip, node, target_port in _endpoints(slices.get((ns, name), []), p, usable_nodes):
                    endpoints.append(self._svc_or_ep(
                        f"ep/{ns}/{name}/{pod}:{target_port}", PathClass.POD_IP, Via.POD, node, f"{ns}/{name}",
                        pod_ip, target_port, path, expect,
                    ))
        return services, _unique(endpoints)

    def _svc_or_ep(self, name: str, path_class: PathClass, via: Via, node: str, service: str, host: str,
                   port: int, http_path: str, expect: frozenset[int]) -> AnyTarget:
        common: dict[str, Any] = {"name": name, "path": path_class, "via": via, "target_node": node,
                                  "service": service, **self._common()}
        if http_path:
            return HTTPTarget(url=_url(host, port, http_path), expect_status=expect, **common)
        return TCPTarget(host=host, port=port, **common)

    # DNS -----------------------------------------------------------------------------------------------

    def dns(self, state: ClusterState, usable_nodes: set[str]) -> list[AnyTarget]:
        ns, name = self.cfg.dns.service.split("/")
        domain = self.cfg.cluster_domain
        questions: dict[str, frozenset[str]] = {}
        own = state.services.get((self.cfg.namespace, self.cfg.service))
        own_ip = _cluster_ip(own) if own else ""
        questions[f"{self.cfg.service}.{self.cfg.namespace}.svc.{domain}"] = frozenset({own_ip} if own_ip else ())
        api = state.services.get(("default", "kubernetes"))
        api_ip = _cluster_ip(api) if api else ""
        questions[f"kubernetes.default.svc.{domain}"] = frozenset({api_ip} if api_ip else ())
        for extra in self.cfg.dns.names:
            questions.setdefault(extra, frozenset())

        servers: list[tuple[str, str, Via, str, int, int]] = []  # (name prefix, ip, via, node, udp port, tcp port)
        svc = state.services.get((ns, name))
        dns_ip = _cluster_ip(svc) if svc else ""
        if dns_ip:
            servers.append(("dns/kube-dns", dns_ip, Via.SERVICE, "", 53, 53))
        for server in self.resolv_nameservers:
            if server != dns_ip:  # usually the same address; a node-local cache is not
                servers.append((f"dns/resolv/{server}", server, Via.NODE, self.source_node, 53, 53))
        slices = _slices_by_service(state).get((ns, name), [])
        seen: set[str] = set()
        for sl in slices:
            udp = _slice_port(sl, "UDP", 53)
            tcp = _slice_port(sl, "TCP", 53)
            for pod, ip, node in _ready_endpoints(sl, usable_nodes):
                if pod not in seen:
                    seen.add(pod)
                    servers.append((f"dns/coredns/{pod}", ip, Via.POD, node, udp, tcp))

        out: list[AnyTarget] = []
        for prefix, ip, via, node, udp, tcp in servers:
            for qname, expect in questions.items():
                for proto in self.cfg.dns.transports:
                    out.append(DNSTarget(
                        name=f"{prefix}/{qname}", path=PathClass.DNS, via=via, target_node=node,
                        service=f"{ns}/{name}", server=ip, port=udp if proto is Transport.UDP else tcp,
                        protocol=proto, query_name=qname, expect=expect, **self._common(),
                    ))
        return out

    # ingress -------------------------------------------------------------------------------------------

    def ingress(self, state: ClusterState, usable_nodes: set[str]) -> list[AnyTarget]:
        cns, cname = self.cfg.ingress.controller_service.split("/")
        controller = state.services.get((cns, cname))
        if controller is None:
            return []
        ip = _cluster_ip(controller)
        ports = [p for p in _list(_dict(controller, "spec"), "ports") if isinstance(p, dict)]
        http_port = _pick_port(ports, ("web", "http"), 80)
        https_port = _pick_port(ports, ("websecure", "https"), 443)
        # Node addresses the controller listens on: K3s ServiceLB (and other host-port load balancers)
        # publish the nodes' IPs as the LoadBalancer ingress; probe the nodes this exporter also probes
        # as peers, plus its own, to keep the count per exporter at K+1 instead of N.
        host_nodes: list[tuple[str, str]] = []
        if self.cfg.ingress.host_ports:
            lb_ips = {str(i.get("ip")) for i in _list(_dict(_dict(controller, "status"), "loadBalancer"), "ingress")
                      if isinstance(i, dict) and i.get("ip")}
            wanted = set(self.chosen_peers(state, usable_nodes)) | {self.source_node}
            for (_, node), obj in sorted(state.nodes.items()):
                addr = node_internal_ip(obj)
                if node in wanted and node in usable_nodes and addr in lb_ips:
                    host_nodes.append((node, addr))

        out: list[AnyTarget] = []
        for (ns, name), ing in sorted(state.ingresses.items()):
            if not opted_in(ing):
                continue
            spec = _dict(ing, "spec")
            tls_hosts = {str(h) for t in _list(spec, "tls") if isinstance(t, dict) for h in _list(t, "hosts")}
            expect = _expect_status(ing)
            for rule in _list(spec, "rules"):
                host = str(rule.get("host") or "") if isinstance(rule, dict) else ""
                if not host or "*" in host:
                    continue  # a probe needs one concrete Host
                path, backend = _first_path(rule)
                path = str(_annotations(ing).get(ANNOTATION_PATH) or path)
                scheme, port = ("https", https_port) if host in tls_hosts else ("http", http_port)
                if port is None:
                    continue
                common: dict[str, Any] = {
                    "path": PathClass.INGRESS, "host_header": host, "expect_status": expect,
                    "service": f"{ns}/{backend}" if backend else "", **self._common(),
                }
                if ip:
                    out.append(HTTPTarget(
                        name=f"ingress/{ns}/{name}/{host}", via=Via.INGRESS, url=_url(ip, port, path, scheme),
                        **common,
                    ))
                for node, addr in host_nodes:
                    out.append(HTTPTarget(
                        name=f"ingress/{ns}/{name}/{host}@node/{node}", via=Via.NODE, target_node=node,
                        url=_url(addr, port, path, scheme), **common,
                    ))
        return _unique(out)


# --- helpers --------------------------------------------------------------------------------------------


def _slices_by_service(state: ClusterState) -> dict[tuple[str, str], list[Obj]]:
    out: dict[tuple[str, str], list[Obj]] = {}
    for (ns, _), sl in sorted(state.endpointslices.items()):
        labels = _meta(sl).get("labels")
        svc = labels.get("kubernetes.io/service-name") if isinstance(labels, dict) else None
        if svc:
            out.setdefault((ns, str(svc)), []).append(sl)
    return out


def _ready_endpoints(sl: Obj, usable_nodes: set[str]) -> Iterable[tuple[str, str, str]]:
    """(pod name, IP, node) of endpoints that are ready, not terminating, on a usable node."""
    for ep in _list(sl, "endpoints"):
        if not isinstance(ep, dict):
            continue
        cond = _dict(ep, "conditions")
        # Per the EndpointSlice API an unset `ready` means ready.
        if cond.get("ready") is False or cond.get("terminating") is True:
            continue
        node = str(ep.get("nodeName") or "")
        if node and node not in usable_nodes:
            continue
        addresses = _list(ep, "addresses")
        ref = _dict(ep, "targetRef")
        if addresses:
            yield str(ref.get("name") or addresses[0]), str(addresses[0]), node


def _slice_port(sl: Obj, protocol: str, default: int) -> int:
    for p in _list(sl, "ports"):
        if isinstance(p, dict) and p.get("protocol", "TCP") == protocol and isinstance(p.get("port"), int):
            return int(p["port"])
    return default


def _selected_ports(svc: Obj) -> list[Obj]:
    """TCP ports of the Service named (by name or number) in the ports annotation; all TCP ports if unset."""
    ports = [p for p in _list(_dict(svc, "spec"), "ports")
             if isinstance(p, dict) and isinstance(p.get("port"), int) and p.get("protocol", "TCP") == "TCP"]
    raw = str(_annotations(svc).get(ANNOTATION_PORTS, "") or "").strip()
    if not raw:
        return ports
    wanted = {w.strip() for w in raw.split(",") if w.strip()}
    return [p for p in ports if str(p.get("name", "")) in wanted or str(p["port"]) in wanted]


def _endpoints(slices: list[Obj], svc_port: Obj, usable_nodes: set[str]) -> Iterable[tuple[str, str, str, int]]:
    """(pod, IP, node, target port) for one Service port: EndpointSlice ports carry the Service port's name
    and the resolved target port number."""
    name = str(svc_port.get("name") or "")
    for sl in slices:
        numbers = [int(p["port"]) for p in _list(sl, "ports")
                   if isinstance(p, dict) and str(p.get("name") or "") == name and isinstance(p.get("port"), int)
                   and p.get("protocol", "TCP") == "TCP"]
        for number in numbers:
            for pod, ip, node in _ready_endpoints(sl, usable_nodes):
                yield pod, ip, node, number


def _pick_port(ports: list[Obj], names: tuple[str, ...], number: int) -> int | None:
    for p in ports:
        if p.get("name") in names and isinstance(p.get("port"), int):
            return int(p["port"])
    for p in ports:
        if p.get("port") == number:
            return number
    return None


def _first_path(rule: Obj) -> tuple[str, str]:
    """The first plain path of a rule and its backend Service name; "/" when the path is a pattern."""
    for p in _list(_dict(rule, "http"), "paths"):
        if not isinstance(p, dict):
            continue
        backend = str(_dict(_dict(p, "backend"), "service").get("name") or "")
        path = str(p.get("path") or "/")
        if p.get("pathType") == "ImplementationSpecific" and any(c in path for c in "*()[]^$"):
            path = "/"
        return path, backend
    return "/", ""


def _unique(targets: list[AnyTarget]) -> list[AnyTarget]:
    seen: dict[tuple[str, ...], AnyTarget] = {}
    for t in targets:
        seen.setdefault(t.key, t)
    return list(seen.values())


def parse_resolv_conf(text: str) -> tuple[str, ...]:
    """The ``nameserver`` addresses of a resolv.conf, in order."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
            except ValueError:
                continue
    return tuple(out)
