"""A stand-in Kubernetes API server: a real HTTP/1.1 server speaking list + watch (and create/replace/delete).

There is no API server on these machines, so this follows the wire protocol closely. The unit tests run it on
127.0.0.1 in plain HTTP; the lab (lab/apiserver.py) runs it over TLS with a bearer token inside a lab node's
namespace, behind the `kubernetes` Service ClusterIP, plus a Unix socket the lab writes objects through.

* ``GET /api/v1/pods``, ``/api/v1/namespaces/{ns}/pods``, ``/api/v1/nodes``, ``…/services``,
  ``/apis/discovery.k8s.io/v1/…/endpointslices``, ``/apis/networking.k8s.io/v1/…/ingresses`` return a
  ``{Kind}List`` with ``metadata.resourceVersion``; ``labelSelector`` (=, ==, !=, exists, !exists, in, notin),
  ``limit`` + ``continue`` paging.
* ``?watch=true|1&resourceVersion=N`` streams newline-delimited JSON events over chunked encoding: first the
  events after N (or, with no/zero version, a synthetic ADDED per existing object), then live ones.
  A version older than the compacted history gets an ``ERROR`` event holding a ``Status`` with code 410
  (reason Expired), as the real server does. ``timeoutSeconds`` ends the stream cleanly;
  ``allowWatchBookmarks=true`` gets ``BOOKMARK`` events when the test calls :meth:`bookmark`.
* ``POST`` to a collection creates (201), ``PUT`` to ``…/{name}`` replaces (200), ``DELETE`` removes (200); the
  watches see ADDED / MODIFIED / DELETED. With :attr:`token` set, a request without ``Authorization: Bearer
  <token>`` gets 401 Unauthorized.
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
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]
MAX_BODY = 4 * 1024 * 1024  # one written object

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
        self.token: str | None = None  # when set, every request must carry it as a bearer token
        self.host = "127.0.0.1"
        self._ssl: ssl.SSLContext | None = None
        self._unix: asyncio.Server | None = None

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self, host: str = "", port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        """Listen on host:port (default: 127.0.0.1, a free port; after :meth:`go_down`, the same as before),
        over TLS with ``tls``."""
        self.host = host or self.host
        self.port = self.port if port is None else port
        self._ssl = tls or self._ssl
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]

    async def start_unix(self, path: str) -> None:
        """Also answer on a Unix socket (plain HTTP, same token rule): how the lab writes objects."""
        self._unix = await asyncio.start_unix_server(self._handle, path)

    async def stop(self) -> None:
        await self.go_down()
        if self._unix is not None:
            self._unix.close()
            self._unix = None

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl is not None else 'http'}://{self.host}:{self.port}"

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
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if 0 < length <= MAX_BODY else b""
                if length > MAX_BODY:
                    await _send_json(writer, 413, _status(413, "RequestEntityTooLarge", "request body too large"))
                    return
                if not await self._respond(method, target, headers, writer, body):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(
        self, method: str, target: str, headers: dict[str, str], w: asyncio.StreamWriter, body: bytes = b""
    ) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        parts = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            await _send_json(w, 401, _status(401, "Unauthorized", "Unauthorized"))
            return True
        route = _route(parts.path)
        if route is None:
            await _send_json(w, 404, _status(404, "NotFound", f"the server could not find {parts.path}"))
            return True
        resource, namespace, name = route
        request = Request(method, resource, namespace, params, headers)
        self.requests.append(request)
        if self._fail is not None:
            code, reason = self._fail
            await _send_json(w, code, _status(code, reason, "injected failure"))
            return True
        if method != "GET" or name is not None:
            await self._write(method, resource, namespace, name, body, w)
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

    async def _write(
        self, method: str, resource: str, namespace: str | None, name: str | None, body: bytes, w: asyncio.StreamWriter
    ) -> None:
        """POST to a collection creates, PUT replaces, DELETE removes, GET of a name reads one object."""
        allowed = ("POST",) if name is None else ("GET", "PUT", "DELETE")
        if method not in allowed:
            await _send_json(w, 405, _status(405, "MethodNotAllowed", f"{method} is not served here"))
            return
        obj: Any = None
        if method in ("POST", "PUT"):
            try:
                obj = json.loads(body)
            except ValueError:
                obj = None
            if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
                await _send_json(w, 400, _status(400, "BadRequest", "the body is not an object with metadata"))
                return
            if namespace is not None:
                obj["metadata"]["namespace"] = namespace
            if method == "PUT" and obj["metadata"].get("name") != name:
                message = f"the body's name {obj['metadata'].get('name')!r} is not the URL's {name!r}"
                await _send_json(w, 400, _status(400, "BadRequest", message))
                return
            name = name or str(obj["metadata"].get("name") or "")
            if not name:
                await _send_json(w, 400, _status(400, "BadRequest", "metadata.name is required"))
                return
        name = name or ""  # a named request, or a POST's body name
        exists = (namespace or "", name) in self.objects[resource]
        if method == "POST" and exists:
            await _send_json(w, 409, _status(409, "AlreadyExists", f"{resource} {name!r} already exists"))
        elif method != "POST" and not exists:
            await _send_json(w, 404, _status(404, "NotFound", f"{resource} {name!r} not found"))
        elif method == "POST":
            await _send_json(w, 201, self.add(resource, obj))
        elif method == "PUT":
            await _send_json(w, 200, self.modify(resource, obj))
        elif method == "DELETE":
            self.delete(resource, namespace, name)
            await _send_json(w, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        else:
            await _send_json(w, 200, self.get(resource, namespace, name))

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


def _route(path: str) -> tuple[str, str | None, str | None] | None:
    """(resource, namespace, object name) of a request path."""
    for resource, (prefix, _, _, namespaced) in RESOURCES.items():
        if path == f"{prefix}/{resource}":
            return resource, None, None
        name = r"(?:/([a-z0-9.-]+))?"
        if not namespaced and (m := re.fullmatch(rf"{re.escape(prefix)}/{resource}{name}", path)):
            return resource, None, m.group(1)
        m = re.fullmatch(rf"{re.escape(prefix)}/namespaces/([a-z0-9-]+)/{resource}{name}", path)
        if m and namespaced:
            return resource, m.group(1), m.group(2)
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
        201: "Created",
        400: "Bad Request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        409: "Conflict",
        410: "Gone",
        413: "Request Entity Too Large",
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
