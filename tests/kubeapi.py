"""A stand-in Kubernetes API server: a real HTTP/1.1 server on 127.0.0.1 speaking list + watch.

There is no API server on these machines, so this follows the wire protocol closely:

* ``GET /api/v1/pods``, ``/api/v1/namespaces/{ns}/pods``, ``/api/v1/nodes``, ``…/services``,
  ``/apis/discovery.k8s.io/v1/…/endpointslices``, ``/apis/networking.k8s.io/v1/…/ingresses`` return a
  ``{Kind}List`` with ``metadata.resourceVersion``; ``labelSelector`` (=, ==, !=, exists, !exists, in, notin),
  ``limit`` + ``continue`` paging.
* ``?watch=true|1&resourceVersion=N`` streams newline-delimited JSON events over chunked encoding: first the
  events after N (or, with no/zero version, a synthetic ADDED per existing object), then live ones.
  A version older than the compacted history gets an ``ERROR`` event holding a ``Status`` with code 410
  (reason Expired), as the real server does. ``timeoutSeconds`` ends the stream cleanly;
  ``allowWatchBookmarks=true`` gets ``BOOKMARK`` events when the test calls :meth:`bookmark`.
* Faults: :meth:`fail_with` answers every request with an error Status; :meth:`go_down` stops listening
  (connections are refused) and cuts open watches; :meth:`come_up` listens again on the same port;
  :meth:`end_watches` closes open watches cleanly.
* Hostile input: :meth:`add_raw_item` puts anything (a string, an object whose ``metadata`` is a string) into
  every list answer; :meth:`send_event` sends any JSON value as a watch event and :meth:`send_raw` any bytes
  (no newline, not JSON, megabytes of it) down open watches; ``list_padding`` makes list answers that many
  bytes larger, ``list_chunked`` sends them chunked, without a Content-Length, ``list_gzip`` compressed whatever
  the client asked for (a small answer that inflates to ``list_padding``).

Objects are plain dicts in the real JSON shape; the builders at the bottom make the usual ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]

# resource plural → (API prefix, apiVersion, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, str, bool]] = {
    "pods": ("/api/v1", "v1", "Pod", True),
    "nodes": ("/api/v1", "v1", "Node", False),
    "services": ("/api/v1", "v1", "Service", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "discovery.k8s.io/v1", "EndpointSlice", True),
    "ingresses": ("/apis/networking.k8s.io/v1", "networking.k8s.io/v1", "Ingress", True),
}


@dataclass
class Request:
    method: str
    resource: str
    namespace: str | None
    params: dict[str, str]
    headers: dict[str, str]

    @property
    def watch(self) -> bool:
        return self.params.get("watch") in ("true", "1")


@dataclass(eq=False)
class _Watch:
    resource: str
    namespace: str | None
    selector: str
    # (type, object) events, raw bytes to write as they are, or None: end the stream
    queue: asyncio.Queue[tuple[str, Obj] | bytes | None] = field(default_factory=asyncio.Queue)


class FakeKubeAPI:
    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], Obj]] = {r: {} for r in RESOURCES}
        self.rv = 100
        self.history: list[tuple[int, str, str, Obj]] = []  # (rv, resource, type, object)
        self.compacted_rv = 0  # watches from versions below this get 410 Expired
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._watches: set[_Watch] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._fail: tuple[int, str] | None = None
        self.raw_items: dict[str, list[Any]] = {r: [] for r in RESOURCES}
        self.list_padding = 0
        self.list_chunked = False
        self.list_gzip = False

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.go_down()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def go_down(self) -> None:
        """Stop listening (new connections are refused) and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        for watch in list(self._watches):
            watch.queue.put_nowait(None)
        await asyncio.sleep(0)

    async def come_up(self) -> None:
        await self.start()

    def fail_with(self, code: int | None, reason: str = "InternalError") -> None:
        """Answer every request with this error Status (None: answer normally again)."""
        self._fail = (code, reason) if code is not None else None

    def end_watches(self) -> None:
        """End every open watch cleanly, as the server does when timeoutSeconds runs out."""
        for watch in list(self._watches):
            watch.queue.put_nowait(None)

    def compact(self) -> None:
        """Forget history up to now: watches from any older version get 410 Expired."""
        self.compacted_rv = self.rv
        self.history.clear()

    def bookmark(self) -> None:
        for watch in list(self._watches):
            kind = RESOURCES[watch.resource][2]
            watch.queue.put_nowait(
                (
                    "BOOKMARK",
                    {
                        "kind": kind,
                        "apiVersion": RESOURCES[watch.resource][1],
                        "metadata": {"resourceVersion": str(self.rv)},
                    },
                )
            )

    def add_raw_item(self, resource: str, item: Any) -> None:
        """Serve ``item`` as it is in every list of ``resource`` (never in a watch, never in scope checks)."""
        self.raw_items[resource].append(item)

    def send_event(self, resource: str, event: Any) -> None:
        """Send any JSON value as one event line to every open watch of ``resource`` (not kept in history)."""
        self.send_raw(resource, json.dumps(event).encode() + b"\n")

    def send_raw(self, resource: str, data: bytes, piece: int = 64 * 1024) -> None:
        """Write ``data`` as it is (in chunks of ``piece`` bytes) down every open watch of ``resource``."""
        for watch in list(self._watches):
            if watch.resource == resource:
                for i in range(0, len(data), piece):
                    watch.queue.put_nowait(data[i : i + piece])

    def watch_count(self, resource: str) -> int:
        return sum(1 for w in self._watches if w.resource == resource)

    def requests_for(self, resource: str, *, watch: bool | None = None) -> list[Request]:
        return [r for r in self.requests if r.resource == resource and (watch is None or r.watch == watch)]

    # --- changing objects ----------------------------------------------------------------------------------

    def add(self, resource: str, obj: Obj) -> Obj:
        return self._put(resource, obj, "ADDED")

    def modify(self, resource: str, obj: Obj) -> Obj:
        return self._put(resource, obj, "MODIFIED")

    def delete(self, resource: str, namespace: str | None, name: str) -> None:
        obj = self.objects[resource].pop((namespace or "", name))
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(resource, "DELETED", obj)

    def get(self, resource: str, namespace: str | None, name: str) -> Obj:
        return copy.deepcopy(self.objects[resource][(namespace or "", name)])

    def _put(self, resource: str, obj: Obj, event: str) -> Obj:
        _, api_version, kind, namespaced = RESOURCES[resource]
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", "") if namespaced else "", meta["name"])
        if (key in self.objects[resource]) != (event == "MODIFIED"):
            raise KeyError(f"{resource} {key} {'missing' if event == 'MODIFIED' else 'exists'}")
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{resource}-{key[0]}-{key[1]}")
        self.objects[resource][key] = obj
        self._emit(resource, event, obj)
        return obj

    def _emit(self, resource: str, event: str, obj: Obj) -> None:
        self.history.append((self.rv, resource, event, obj))
        for watch in list(self._watches):
            if watch.resource == resource and _in_scope(obj, watch.namespace, watch.selector):
                watch.queue.put_nowait((event, obj))

    # --- HTTP ----------------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                if not await self._respond(method, target, headers, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(self, method: str, target: str, headers: dict[str, str], w: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        parts = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        route = _route(parts.path)
        if route is None:
            await _send_json(w, 404, _status(404, "NotFound", f"the server could not find {parts.path}"))
            return True
        resource, namespace = route
        request = Request(method, resource, namespace, params, headers)
        self.requests.append(request)
        if self._fail is not None:
            code, reason = self._fail
            await _send_json(w, code, _status(code, reason, "injected failure"))
            return True
        if method != "GET":
            await _send_json(w, 405, _status(405, "MethodNotAllowed", "read-only fake"))
            return True
        selector = params.get("labelSelector", "")
        try:
            _parse_selector(selector)
        except ValueError as exc:
            await _send_json(w, 400, _status(400, "BadRequest", str(exc)))
            return True
        if request.watch:
            await self._watch(request, selector, w)
            return False
        await self._list(request, selector, w)
        return True

    async def _list(self, req: Request, selector: str, w: asyncio.StreamWriter) -> None:
        _, api_version, kind, _ = RESOURCES[req.resource]
        items = sorted(
            (o for o in self.objects[req.resource].values() if _in_scope(o, req.namespace, selector)),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )
        start = int(req.params.get("continue") or 0)
        limit = int(req.params.get("limit") or 0) or len(items) or 1
        page = items[start : start + limit]
        meta: Obj = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        else:
            page = [*page, *self.raw_items[req.resource]]
        body: Obj = {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta, "items": page}
        if self.list_padding:
            body["padding"] = "x" * self.list_padding
        await _send_json(w, 200, body, chunked=self.list_chunked, gzipped=self.list_gzip)

    async def _watch(self, req: Request, selector: str, w: asyncio.StreamWriter) -> None:
        watch = _Watch(req.resource, req.namespace, selector)
        rv_text = req.params.get("resourceVersion", "")
        backlog: list[tuple[str, Obj]] = []
        expired = False
        if rv_text in ("", "0"):
            backlog = [
                ("ADDED", o) for o in self.objects[req.resource].values() if _in_scope(o, req.namespace, selector)
            ]
        else:
            rv = int(rv_text)
            if rv < self.compacted_rv:
                expired = True
            else:
                backlog = [
                    (t, o)
                    for (v, r, t, o) in self.history
                    if v > rv and r == req.resource and _in_scope(o, req.namespace, selector)
                ]
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            b"Cache-Control: no-cache, private\r\nConnection: close\r\n\r\n"
        )
        if expired:
            status = _status(410, "Expired", f"too old resource version: {rv_text} ({self.compacted_rv})")
            await _send_chunk(w, {"type": "ERROR", "object": status})
            await _end_chunks(w)
            return
        self._watches.add(watch)
        bookmarks = req.params.get("allowWatchBookmarks") == "true"
        try:
            for event, obj in backlog:
                await _send_chunk(w, {"type": event, "object": obj})
            timeout = float(req.params["timeoutSeconds"]) if "timeoutSeconds" in req.params else None
            async with asyncio.timeout(timeout):
                while (item := await watch.queue.get()) is not None:
                    if isinstance(item, bytes):
                        w.write(f"{len(item):x}\r\n".encode() + item + b"\r\n")
                        await w.drain()
                        continue
                    event, obj = item
                    if event == "BOOKMARK" and not bookmarks:
                        continue
                    await _send_chunk(w, {"type": event, "object": obj})
        except TimeoutError:
            pass
        finally:
            self._watches.discard(watch)
        if self._server is not None:
            await _end_chunks(w)


# --- wire helpers ------------------------------------------------------------------------------------------


def _route(path: str) -> tuple[str, str | None] | None:
    for resource, (prefix, _, _, namespaced) in RESOURCES.items():
        if path == f"{prefix}/{resource}":
            return resource, None
        m = re.fullmatch(rf"{re.escape(prefix)}/namespaces/([a-z0-9-]+)/{resource}", path)
        if m and namespaced:
            return resource, m.group(1)
    return None


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


async def _send_json(
    w: asyncio.StreamWriter, code: int, body: Obj, *, chunked: bool = False, gzipped: bool = False
) -> None:
    data = json.dumps(body).encode()
    if gzipped:
        data = gzip.compress(data, compresslevel=1)
    reason = {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        410: "Gone",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(code, "Error")
    head = f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n"
    if gzipped:
        head += "Content-Encoding: gzip\r\n"
    if not chunked:
        w.write(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
        await w.drain()
        return
    w.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
    for i in range(0, len(data), 64 * 1024):
        piece = data[i : i + 64 * 1024]
        w.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        await w.drain()
    await _end_chunks(w)


async def _send_chunk(w: asyncio.StreamWriter, event: Obj) -> None:
    data = json.dumps(event).encode() + b"\n"
    w.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await w.drain()


async def _end_chunks(w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        w.write(b"0\r\n\r\n")
        await w.drain()


def _parse_selector(selector: str) -> list[tuple[str, str, set[str]]]:
    """Label selector terms as (key, op, values); op is =, !=, in, notin, exists, !exists."""
    terms: list[tuple[str, str, set[str]]] = []
    for term in re.split(r",(?![^(]*\))", selector.strip()) if selector.strip() else []:
        term = term.strip()
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            terms.append((m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}))
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", term):
            terms.append((m.group(1), "!=" if m.group(2) == "!=" else "=", {m.group(3)}))
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            terms.append((m.group(2), "!exists" if m.group(1) else "exists", set()))
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    return terms


def _in_scope(obj: Obj, namespace: str | None, selector: str) -> bool:
    meta = obj["metadata"]
    if namespace is not None and meta.get("namespace") != namespace:
        return False
    labels = meta.get("labels") or {}
    for key, op, values in _parse_selector(selector):
        has, value = key in labels, labels.get(key)
        ok = {
            "=": has and value in values,
            "!=": not has or value not in values,
            "in": has and value in values,
            "notin": not has or value not in values,
            "exists": has,
            "!exists": not has,
        }[op]
        if not ok:
            return False
    return True


# --- object builders (the real JSON shapes, trimmed to what discovery reads plus some noise) ---------------

_TS = "2024-05-01T10:00:00Z"


def node(name: str, ip: str, *, ready: bool = True, unschedulable: bool = False, deleting: bool = False) -> Obj:
    meta: Obj = {"name": name, "labels": {"kubernetes.io/hostname": name}, "creationTimestamp": _TS}
    if deleting:
        meta["deletionTimestamp"] = _TS
    return {
        "metadata": meta,
        "spec": {"podCIDR": "10.42.0.0/24", **({"unschedulable": True} if unschedulable else {})},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {
                    "type": "Ready",
                    "status": "True" if ready else "Unknown",
                    "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                    "lastTransitionTime": _TS,
                },
            ],
        },
    }


def pod(
    name: str,
    namespace: str,
    node_name: str,
    ip: str,
    *,
    labels: dict[str, str] | None = None,
    ready: bool = True,
    terminating: bool = False,
    phase: str = "Running",
) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels or {}, "creationTimestamp": _TS}
    if terminating:
        meta["deletionTimestamp"] = _TS
        meta["deletionGracePeriodSeconds"] = 30
    return {
        "metadata": meta,
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "x"}]},
        "status": {
            "phase": phase,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
            ],
        },
    }


def service(
    name: str,
    namespace: str,
    cluster_ip: str,
    ports: list[Obj],
    *,
    annotations: dict[str, str] | None = None,
    type_: str = "ClusterIP",
    lb_ips: list[str] | None = None,
) -> Obj:
    obj: Obj = {
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {"type": type_, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports},
        "status": {"loadBalancer": {}},
    }
    if lb_ips:
        obj["status"]["loadBalancer"] = {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in lb_ips]}
    return obj


def port(name: str, number: int, target: int | str | None = None, protocol: str = "TCP") -> Obj:
    return {"name": name, "port": number, "protocol": protocol, "targetPort": target if target is not None else number}


def endpoint_slice(
    service_name: str,
    namespace: str,
    endpoints: list[tuple[str, str, str]],
    ports: list[Obj],
    *,
    suffix: str = "abcde",
    terminating: set[str] | None = None,
) -> Obj:
    """endpoints: (pod name, pod IP, node name)."""
    terminating = terminating or set()
    return {
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service_name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": p not in terminating, "serving": True, "terminating": p in terminating},
                "nodeName": n,
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": p},
            }
            for p, ip, n in endpoints
        ],
        "ports": [{"name": p["name"], "port": p["port"], "protocol": p.get("protocol", "TCP")} for p in ports],
    }


def ingress(
    name: str,
    namespace: str,
    host: str,
    backend: str,
    backend_port: int | str,
    *,
    annotations: dict[str, str] | None = None,
    path: str = "/",
    tls: bool = False,
) -> Obj:
    port_ref = {"number": backend_port} if isinstance(backend_port, int) else {"name": backend_port}
    spec: Obj = {
        "ingressClassName": "traefik",
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": path,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": backend, "port": port_ref}},
                        }
                    ]
                },
            }
        ],
    }
    if tls:
        spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
    return {
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def iter_all(api: FakeKubeAPI) -> Iterator[tuple[str, Obj]]:
    for resource, objs in api.objects.items():
        for obj in objs.values():
            yield resource, obj


# --- a small K3s-like cluster, the starting point of the discovery tests ------------------------------------

EXPORTER_NS = "netpath"
EXPORTER_LABELS = {"app.kubernetes.io/name": "netpath-exporter", "app.kubernetes.io/instance": "netpath"}


def exporter_pod(node_name: str, ip: str, **kw: Any) -> Obj:
    return pod(f"netpath-exporter-{node_name}", EXPORTER_NS, node_name, ip, labels=EXPORTER_LABELS, **kw)


def populate_small_cluster(api: FakeKubeAPI, nodes: int = 3) -> None:
    """node-1..N with an exporter pod each, the API/kube-dns/exporter/traefik Services, two CoreDNS pods."""
    for i in range(1, nodes + 1):
        api.add("nodes", node(f"node-{i}", f"192.168.50.{i}"))
        api.add("pods", exporter_pod(f"node-{i}", f"10.42.{i}.10"))
        # noise: a pod that is not an exporter must never become a peer
        api.add("pods", pod(f"other-{i}", EXPORTER_NS, f"node-{i}", f"10.42.{i}.99", labels={"app": "other"}))
    api.add("services", service("kubernetes", "default", "10.43.0.1", [port("https", 443, 6443)]))
    api.add("services", service("netpath-exporter", EXPORTER_NS, "10.43.0.47", [port("metrics", 10047)]))
    dns_ports = [port("dns", 53, 53, "UDP"), port("dns-tcp", 53, 53, "TCP"), port("metrics", 9153)]
    api.add("services", service("kube-dns", "kube-system", "10.43.0.10", dns_ports))
    api.add(
        "endpointslices",
        endpoint_slice(
            "kube-dns",
            "kube-system",
            [("coredns-a", "10.42.1.3", "node-1"), ("coredns-b", "10.42.2.3", "node-2")],
            dns_ports,
        ),
    )
    api.add(
        "services",
        service(
            "traefik",
            "kube-system",
            "10.43.0.80",
            [port("web", 80, 8000), port("websecure", 443, 8443)],
            type_="LoadBalancer",
            lb_ips=[f"192.168.50.{i}" for i in range(1, nodes + 1)],
        ),
    )
