"""The exporter's HTTP endpoints: /metrics, /healthz, /readyz and any extra JSON routes.

Served from a thread, not the probe event loop: a scrape must be answered even when the loop is busy with
hundreds of probes, and a wedged loop must show up as a failing /healthz rather than as a hanging scrape.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes


Check = Callable[[], tuple[bool, str]]
Route = Callable[[], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own address with getfqdn(); in a pod or lab namespace whose
        # resolver is unreachable that stalls start-up for seconds. The name is only used for CGI, skip it.
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()[:2]
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        healthy: Check,
        ready: Check,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._routes = dict(routes or {})
        handler = self._handler_class()
        server_class = _Server6 if ":" in host else _Server
        self._httpd = server_class((host, port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _respond(self, path: str, accept: str) -> Response:
        if path == "/metrics":
            encoder, content_type = choose_encoder(accept)
            return Response(200, content_type, encoder(self._registry))
        if path in ("/healthz", "/readyz"):
            ok, why = (self._healthy if path == "/healthz" else self._ready)()
            return Response(200 if ok else 503, "text/plain; charset=utf-8", (why + "\n").encode())
        if path in self._routes:
            return self._routes[path]()
        if path == "/":
            paths = ["/metrics", "/healthz", "/readyz", *self._routes]
            links = "".join(f'<li><a href="{p}">{p}</a></li>' for p in paths)
            page = f"<html><title>netpath-exporter</title><h1>netpath-exporter</h1><ul>{links}</ul></html>"
            return Response(200, "text/html; charset=utf-8", page.encode())
        return Response(404, "text/plain; charset=utf-8", b"not found\n")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    response = server._respond(urlsplit(self.path).path, self.headers.get("Accept", ""))
                except Exception as exc:  # a collector bug must answer 500, not kill the thread
                    response = Response(500, "text/plain; charset=utf-8", f"error: {exc}\n".encode())
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the log

        return Handler
