"""From the watched objects to targets, per source. Pure functions of plain JSON objects: no I/O.

Target names are stable across rounds (they are the series identity) and documented in docs/discovery.md:
``peer/<node>``, ``svc/<ns>/<name>:<port>``, ``ep/<ns>/<svc>/<pod>:<port>``, ``dns/kube-dns/<query>``,
``dns/resolv/<ip>/<query>``, ``dns/coredns/<pod>/<query>``, ``ingress/<ns>/<name>/<host>`` and
``ingress/<ns>/<name>/<host>@node/<node>``.

No open prober: only literal IP addresses inside the configured CIDRs (pods, Services, nodes) become targets,
never loopback, link-local (169.254.169.254, the cloud metadata address), multicast or unspecified ones;
opted-in Services and Ingresses count only in allowed namespaces; annotations parse strictly or the object
is not probed. What was skipped is reported in :class:`Notes`, recounted every round.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import AnyTarget, PathClass, Transport, Via, format_hostport
from ..probes.dns import DNSTarget
from ..probes.http import HTTPTarget
from ..probes.tcp import TCPTarget
from .config import DiscoveryConfig, IPNetwork
from .decode import valid_path
from .peers import select_peers

Obj = dict[str, Any]
Store = Mapping[tuple[str, str], Obj]

# Opt-in annotations, on Services and Ingresses.
ANNOTATION_PROBE = "netpath.io/probe"  # "true" opts the object in
ANNOTATION_PORTS = "netpath.io/ports"  # Services: port names or numbers, comma-separated; default all TCP ports
ANNOTATION_PATH = "netpath.io/path"  # HTTP path: Services are then probed with GET instead of a TCP connect
ANNOTATION_STATUS = "netpath.io/expect-status"  # accepted HTTP codes, comma-separated; default 200

SOURCES = ("peers", "services", "endpoints", "dns", "ingress")

# Why a discovered address is not probed; the `reason` label of netpath_discovery_skipped_addresses.
ADDRESS_REASONS = (
    "not_ip",  # not a literal IP address: `localhost`, a hostname, garbage
    "special",  # loopback, link-local (169.254.169.254), multicast, unspecified, reserved
    "outside_cidrs",  # an IP outside the configured pod / Service / node CIDRs
)
# Annotations checked strictly; the `annotation` label of netpath_discovery_annotation_errors.
ANNOTATIONS = (ANNOTATION_PROBE, ANNOTATION_PORTS, ANNOTATION_PATH, ANNOTATION_STATUS)


@dataclass(frozen=True)
class ClusterState:
    nodes: Store = field(default_factory=dict)
    pods: Store = field(default_factory=dict)  # the exporter's own pods (label-selected)
    services: Store = field(default_factory=dict)
    endpointslices: Store = field(default_factory=dict)
    ingresses: Store = field(default_factory=dict)


@dataclass
class Notes:
    """What one derivation left out and why, for the self-metrics. Recounted from scratch every round, so
    the numbers describe the objects as they are now, not how often they changed."""

    skipped_addresses: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, reason)
    # (resource, namespace, name) → [(annotation, problem)]: opted-in objects not probed for it
    annotation_errors: dict[tuple[str, str, str], list[tuple[str, str]]] = field(default_factory=dict)
    excluded: Counter[str] = field(default_factory=Counter)  # resource → opted-in objects in excluded namespaces


@dataclass(frozen=True)
class Derivation:
    targets: dict[str, list[AnyTarget]]
    notes: Notes


def check_address(raw: str, cidrs: Iterable[IPNetwork]) -> tuple[str, str | None]:
    """(normalized IP, None) when ``raw`` may be probed, else ("", reason)."""
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        return "", "not_ip"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "", "special"
    if not any(ip in net for net in cidrs):
        return "", "outside_cidrs"
    return str(ip), None


# --- annotations, strictly ----------------------------------------------------------------------------------

_OPT_IN = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "": False}
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")  # IANA_SVC_NAME, as the Service API checks
_STATUS_CODE = re.compile(r"[0-9]{3}")  # ASCII digits only: "²".isdigit() is True, int("²") raises
_MAX_ITEMS = 32


@dataclass(frozen=True)
class ProbeAnnotations:
    """The parsed opt-in annotations of one object."""

    ports: frozenset[str] = frozenset()  # port names or numbers; empty: all TCP ports
    path: str = ""  # "" : TCP connect (Services) / the rule's path (Ingresses)
    expect: frozenset[int] = frozenset({200})


def _shown(value: str) -> str:
    return repr(value[:40]) + ("…" if len(value) > 40 else "")


def _items(raw: str) -> list[str]:
    return [item.strip(" ") for item in raw.split(",")]


def read_annotations(annotations: Mapping[str, str]) -> tuple[ProbeAnnotations | None, list[tuple[str, str]]]:
    """(parsed, []) for an opted-in object whose annotations all parse; (None, []) when not opted in;
    (None, problems) otherwise — one (annotation, problem) per bad value, never an exception."""
    problems: list[tuple[str, str]] = []
    opt = annotations.get(ANNOTATION_PROBE, "")
    opted_in = _OPT_IN.get(opt.strip().lower())
    if opted_in is None:
        return None, [(ANNOTATION_PROBE, f"{_shown(opt)} is not true or false")]
    if not opted_in:
        return None, []
    ports: set[str] = set()
    if raw := annotations.get(ANNOTATION_PORTS, "").strip(" "):
        items = _items(raw)
        for item in items:
            number = item.isascii() and item.isdigit() and item[0] != "0" and int(item) <= 65535
            if number or (_PORT_NAME.fullmatch(item) and not item.isdigit()):
                ports.add(item)
            else:
                problems.append((ANNOTATION_PORTS, f"{_shown(item)} is not a port name or number 1-65535"))
                break
        if len(items) > _MAX_ITEMS:
            problems.append((ANNOTATION_PORTS, f"more than {_MAX_ITEMS} ports"))
    path = annotations.get(ANNOTATION_PATH, "")
    if path and not valid_path(path):
        problems.append((ANNOTATION_PATH, f"{_shown(path)} is not an absolute path of printable ASCII, ≤ 1024 bytes"))
    codes: set[int] = set()
    if raw := annotations.get(ANNOTATION_STATUS, "").strip(" "):
        items = _items(raw)
        for item in items:
            if _STATUS_CODE.fullmatch(item) and 100 <= int(item) <= 599:
                codes.add(int(item))
            else:
                problems.append((ANNOTATION_STATUS, f"{_shown(item)} is not an HTTP status code 100-599"))
                break
        if len(items) > _MAX_ITEMS:
            problems.append((ANNOTATION_STATUS, f"more than {_MAX_ITEMS} codes"))
    if problems:
        return None, problems
    return ProbeAnnotations(frozenset(ports), path, frozenset(codes or {200})), []


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


def _cluster_ip(svc: Obj | None) -> str:
    """The literal ClusterIP, normalized; "" for headless ("None"), ExternalName ("") or anything else."""
    ip = str(_dict(svc, "spec").get("clusterIP") or "")
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ""


def _url(host: str, port: int, path: str, scheme: str = "http") -> str:
    return f"{scheme}://{format_hostport(host, port)}{path if path.startswith('/') else '/' + path}"


# --- the derivation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deriver:
    cfg: DiscoveryConfig
    source_node: str
    resolv_nameservers: tuple[str, ...] = ()

    def all(self, state: ClusterState) -> Derivation:
        notes = Notes()
        out: dict[str, list[AnyTarget]] = {s: [] for s in SOURCES}
        usable_nodes = {n for (_, n), obj in state.nodes.items() if node_is_usable(obj)}
        if self.cfg.peers.enabled:
            out["peers"] = self.peers(state, usable_nodes, notes)
        if self.cfg.services.enabled:
            out["services"], out["endpoints"] = self.services(state, usable_nodes, notes)
        else:
            out["services"] = self._own_service(state, notes)
        if self.cfg.dns.enabled:
            out["dns"] = self.dns(state, usable_nodes, notes)
        if self.cfg.ingress.enabled:
            out["ingress"] = self.ingress(state, usable_nodes, notes)
        return Derivation(out, notes)

    def _common(self) -> dict[str, Any]:
        return {"interval": self.cfg.interval, "timeout": self.cfg.timeout}

    def _address(self, raw: str, kind: str, source: str, notes: Notes) -> str:
        """The address if it may be probed, else "" with the reason counted under ``source``."""
        cidrs = {"pod": self.cfg.pod_cidrs, "service": self.cfg.service_cidrs, "node": self.cfg.node_cidrs}[kind]
        ip, reason = check_address(raw, cidrs)
        if reason is not None:
            notes.skipped_addresses[(source, reason)] += 1
        return ip

    def _service_ip(self, svc: Obj | None, source: str, notes: Notes) -> str:
        raw = str(_dict(svc, "spec").get("clusterIP") or "")
        if raw in ("", "None"):  # ExternalName, headless: no ClusterIP, nothing skipped
            return ""
        return self._address(raw, "service", source, notes)

    def _namespace_allowed(self, ns: str) -> bool:
        allow, deny = self.cfg.namespaces_allow, self.cfg.namespaces_deny
        return (not allow or ns in allow) and ns not in deny

    def _opted_in(self, resource: str, key: tuple[str, str], obj: Obj, notes: Notes) -> ProbeAnnotations | None:
        """The object's parsed annotations when it is opted in, parses and lives in an allowed namespace."""
        parsed, problems = read_annotations(_annotations(obj))
        if parsed is None and not problems:
            return None
        if not self._namespace_allowed(key[0]):
            notes.excluded[resource] += 1
            return None
        if problems:
            notes.annotation_errors[(resource, *key)] = problems
        return parsed

    # peers ---------------------------------------------------------------------------------------------

    def peer_nodes(self, state: ClusterState, usable_nodes: set[str], notes: Notes | None = None) -> dict[str, str]:
        """node → exporter pod IP for every usable node with a usable exporter pod at an allowed address."""
        notes = notes if notes is not None else Notes()
        by_node: dict[str, str] = {}
        for _, pod in sorted(state.pods.items()):
            node = str(_dict(pod, "spec").get("nodeName") or "")
            if (
                node in usable_nodes
                and pod_is_usable(pod)
                and node not in by_node
                and (ip := self._address(str(_dict(pod, "status")["podIP"]), "pod", "peers", notes))
            ):
                by_node[node] = ip
        return by_node

    def chosen_peers(self, state: ClusterState, usable_nodes: set[str]) -> list[str]:
        candidates = self.peer_nodes(state, usable_nodes)
        return select_peers(self.source_node, candidates, self.cfg.peers.k, self.cfg.peers.all_up_to)

    def peers(self, state: ClusterState, usable_nodes: set[str], notes: Notes | None = None) -> list[AnyTarget]:
        candidates = self.peer_nodes(state, usable_nodes, notes)
        chosen = select_peers(self.source_node, candidates, self.cfg.peers.k, self.cfg.peers.all_up_to)
        return [
            TCPTarget(
                name=f"peer/{node}",
                path=PathClass.POD_IP,
                via=Via.POD,
                target_node=node,
                host=candidates[node],
                port=self.cfg.peers.port,
                service=f"{self.cfg.namespace}/{self.cfg.service}",
                **self._common(),
            )
            for node in chosen
        ]

    # services and their endpoints ----------------------------------------------------------------------

    def _own_service(self, state: ClusterState, notes: Notes) -> list[AnyTarget]:
        svc = state.services.get((self.cfg.namespace, self.cfg.service))
        if svc is None or not (ip := self._service_ip(svc, "services", notes)):
            return []
        port = self.cfg.service_port
        return [
            TCPTarget(
                name=f"svc/{self.cfg.namespace}/{self.cfg.service}:{port}",
                path=PathClass.CLUSTER_IP,
                via=Via.SERVICE,
                service=f"{self.cfg.namespace}/{self.cfg.service}",
                host=ip,
                port=port,
                **self._common(),
            )
        ]

    def services(
        self, state: ClusterState, usable_nodes: set[str], notes: Notes | None = None
    ) -> tuple[list[AnyTarget], list[AnyTarget]]:
        notes = notes if notes is not None else Notes()
        services = self._own_service(state, notes)
        endpoints: list[AnyTarget] = []
        api = state.services.get(("default", "kubernetes"))
        if api is not None and (ip := self._service_ip(api, "services", notes)):
            for p in _list(_dict(api, "spec"), "ports"):
                if isinstance(p, dict) and isinstance(p.get("port"), int):
                    services.append(
                        TCPTarget(
                            name=f"svc/default/kubernetes:{p['port']}",
                            path=PathClass.CLUSTER_IP,
                            via=Via.SERVICE,
                            service="default/kubernetes",
                            host=ip,
                            port=p["port"],
                            **self._common(),
                        )
                    )
        slices = _slices_by_service(state)
        for (ns, name), svc in sorted(state.services.items()):
            if (ns, name) in ((self.cfg.namespace, self.cfg.service), ("default", "kubernetes")):
                continue
            ann = self._opted_in("services", (ns, name), svc, notes)
            if ann is None:
                continue
            ports = _selected_ports(svc, ann.ports)
            if missing := ann.ports - {str(p.get("name", "")) for p in ports} - {str(p["port"]) for p in ports}:
                notes.annotation_errors[("services", ns, name)] = [
                    (ANNOTATION_PORTS, f"names no TCP port of the Service: {_shown(','.join(sorted(missing)))}")
                ]
                continue
            ip = self._service_ip(svc, "services", notes)
            for p in ports:
                number = p["port"]
                if ip:
                    services.append(
                        self._svc_or_ep(
                            f"svc/{ns}/{name}:{number}",
                            PathClass.CLUSTER_IP,
                            Via.SERVICE,
                            "",
                            f"{ns}/{name}",
                            ip,
                            number,
                            ann.path,
                            ann.expect,
                        )
                    )
                for pod, raw_ip, node, target_port in _endpoints(slices.get((ns, name), []), p, usable_nodes):
                    if pod_ip := self._address(raw_ip, "pod", "endpoints", notes):
                        endpoints.append(
                            self._svc_or_ep(
                                f"ep/{ns}/{name}/{pod}:{target_port}",
                                PathClass.POD_IP,
                                Via.POD,
                                node,
                                f"{ns}/{name}",
                                pod_ip,
                                target_port,
                                ann.path,
                                ann.expect,
                            )
                        )
        return services, _unique(endpoints)

    def _svc_or_ep(
        self,
        name: str,
        path_class: PathClass,
        via: Via,
        node: str,
        service: str,
        host: str,
        port: int,
        http_path: str,
        expect: frozenset[int],
    ) -> AnyTarget:
        common: dict[str, Any] = {
            "name": name,
            "path": path_class,
            "via": via,
            "target_node": node,
            "service": service,
            **self._common(),
        }
        if http_path:
            return HTTPTarget(url=_url(host, port, http_path), expect_status=expect, **common)
        return TCPTarget(host=host, port=port, **common)

    # DNS -----------------------------------------------------------------------------------------------

    def dns(self, state: ClusterState, usable_nodes: set[str], notes: Notes | None = None) -> list[AnyTarget]:
        notes = notes if notes is not None else Notes()
        ns, name = self.cfg.dns.service.split("/")
        domain = self.cfg.cluster_domain
        questions: dict[str, frozenset[str]] = {}
        # Expected answers, not probed addresses: a literal IP is all they need to be.
        own_ip = _cluster_ip(state.services.get((self.cfg.namespace, self.cfg.service)))
        questions[f"{self.cfg.service}.{self.cfg.namespace}.svc.{domain}"] = frozenset({own_ip} if own_ip else ())
        api_ip = _cluster_ip(state.services.get(("default", "kubernetes")))
        questions[f"kubernetes.default.svc.{domain}"] = frozenset({api_ip} if api_ip else ())
        for extra in self.cfg.dns.names:
            questions.setdefault(extra, frozenset())

        servers: list[tuple[str, str, Via, str, int, int]] = []  # (name prefix, ip, via, node, udp port, tcp port)
        dns_ip = self._service_ip(state.services.get((ns, name)), "dns", notes)
        if dns_ip:
            servers.append(("dns/kube-dns", dns_ip, Via.SERVICE, "", 53, 53))
        # The pod's own resolv.conf is the operator's, not the API's: taken as it is (a node-local cache
        # listens on a link-local address such as 169.254.20.10).
        for server in self.resolv_nameservers:
            if server != dns_ip:  # usually the same address; a node-local cache is not
                servers.append((f"dns/resolv/{server}", server, Via.NODE, self.source_node, 53, 53))
        slices = _slices_by_service(state).get((ns, name), [])
        seen: set[str] = set()
        for sl in slices:
            udp = _slice_port(sl, "UDP", 53)
            tcp = _slice_port(sl, "TCP", 53)
            for pod, raw_ip, node in _ready_endpoints(sl, usable_nodes):
                if pod not in seen and (ip := self._address(raw_ip, "pod", "dns", notes)):
                    seen.add(pod)
                    servers.append((f"dns/coredns/{pod}", ip, Via.POD, node, udp, tcp))

        out: list[AnyTarget] = []
        for prefix, ip, via, node, udp, tcp in servers:
            for qname, expect in questions.items():
                for proto in self.cfg.dns.transports:
                    out.append(
                        DNSTarget(
                            name=f"{prefix}/{qname}",
                            path=PathClass.DNS,
                            via=via,
                            target_node=node,
                            service=f"{ns}/{name}",
                            server=ip,
                            port=udp if proto is Transport.UDP else tcp,
                            protocol=proto,
                            query_name=qname,
                            expect=expect,
                            **self._common(),
                        )
                    )
        return out

    # ingress -------------------------------------------------------------------------------------------

    def ingress(self, state: ClusterState, usable_nodes: set[str], notes: Notes | None = None) -> list[AnyTarget]:
        notes = notes if notes is not None else Notes()
        cns, cname = self.cfg.ingress.controller_service.split("/")
        controller = state.services.get((cns, cname))
        if controller is None:
            return []
        ip = self._service_ip(controller, "ingress", notes)
        # Where the controller runs, when that is one node (K3s' single Traefik replica): requests through its
        # ClusterIP land there, so a failure seen through it is attributed by that node (docs/diagnosis.md,
        # principle 3). Replicas on several nodes (or none ready): no one node, "".
        controller_nodes = {
            node
            for sl in _slices_by_service(state).get((cns, cname), [])
            for _, _, node in _ready_endpoints(sl, usable_nodes)
        }
        controller_node = next(iter(controller_nodes)) if len(controller_nodes) == 1 else ""
        ports = [p for p in _list(_dict(controller, "spec"), "ports") if isinstance(p, dict)]
        http_port = _pick_port(ports, ("web", "http"), 80)
        https_port = _pick_port(ports, ("websecure", "https"), 443)
        # Node addresses the controller listens on: K3s ServiceLB (and other host-port load balancers)
        # publish the nodes' IPs as the LoadBalancer ingress; probe the nodes this exporter also probes
        # as peers, plus its own, to keep the count per exporter at K+1 instead of N.
        host_nodes: list[tuple[str, str]] = []
        if self.cfg.ingress.host_ports:
            lb_ips = {
                str(i.get("ip"))
                for i in _list(_dict(_dict(controller, "status"), "loadBalancer"), "ingress")
                if isinstance(i, dict) and i.get("ip")
            }
            wanted = set(self.chosen_peers(state, usable_nodes)) | {self.source_node}
            for (_, node), obj in sorted(state.nodes.items()):
                addr = node_internal_ip(obj)
                if (
                    node in wanted
                    and node in usable_nodes
                    and addr in lb_ips
                    and (checked := self._address(addr, "node", "ingress", notes))
                ):
                    host_nodes.append((node, checked))

        out: list[AnyTarget] = []
        for (ns, name), ing in sorted(state.ingresses.items()):
            ann = self._opted_in("ingresses", (ns, name), ing, notes)
            if ann is None:
                continue
            spec = _dict(ing, "spec")
            tls_hosts = {str(h) for t in _list(spec, "tls") if isinstance(t, dict) for h in _list(t, "hosts")}
            for rule in _list(spec, "rules"):
                host = str(rule.get("host") or "") if isinstance(rule, dict) else ""
                if not host or "*" in host:
                    continue  # a probe needs one concrete Host
                path, backend = _first_path(rule)
                path = ann.path or path
                scheme, port = ("https", https_port) if host in tls_hosts else ("http", http_port)
                if port is None:
                    continue
                common: dict[str, Any] = {
                    "path": PathClass.INGRESS,
                    "host_header": host,
                    "expect_status": ann.expect,
                    "service": f"{ns}/{backend}" if backend else "",
                    **self._common(),
                }
                if ip:
                    out.append(
                        HTTPTarget(
                            name=f"ingress/{ns}/{name}/{host}",
                            via=Via.INGRESS,
                            target_node=controller_node,
                            url=_url(ip, port, path, scheme),
                            **common,
                        )
                    )
                for node, addr in host_nodes:
                    out.append(
                        HTTPTarget(
                            name=f"ingress/{ns}/{name}/{host}@node/{node}",
                            via=Via.NODE,
                            target_node=node,
                            url=_url(addr, port, path, scheme),
                            **common,
                        )
                    )
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


def _selected_ports(svc: Obj, wanted: frozenset[str]) -> list[Obj]:
    """TCP ports of the Service named (by name or number) in ``wanted``; all TCP ports if it is empty."""
    ports = [
        p
        for p in _list(_dict(svc, "spec"), "ports")
        if isinstance(p, dict) and isinstance(p.get("port"), int) and p.get("protocol", "TCP") == "TCP"
    ]
    if not wanted:
        return ports
    return [p for p in ports if str(p.get("name", "")) in wanted or str(p["port"]) in wanted]


def _endpoints(slices: list[Obj], svc_port: Obj, usable_nodes: set[str]) -> Iterable[tuple[str, str, str, int]]:
    """(pod, IP, node, target port) for one Service port: EndpointSlice ports carry the Service port's name
    and the resolved target port number."""
    name = str(svc_port.get("name") or "")
    for sl in slices:
        numbers = [
            int(p["port"])
            for p in _list(sl, "ports")
            if isinstance(p, dict)
            and str(p.get("name") or "") == name
            and isinstance(p.get("port"), int)
            and p.get("protocol", "TCP") == "TCP"
        ]
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
