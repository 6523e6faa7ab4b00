"""A small HTTP backend for the tests, ``make demo`` and the lab (where it plays ``keybuzz-front``).

    python -m lab.apps.httpapp --listen IP:PORT [--name NAME] [--slow-delay SECONDS] [--slow-delay-file PATH]

Routes:
    /             a few lines of text: NAME, the listen address, the Host header received (tells replicas apart)
    /big          256 KiB, so the answer needs many full-size packets (what an MTU blackhole eats)
    /slow         sleeps --slow-delay seconds (or ?delay=S), then 200
    /status/NNN   answers status NNN
    /stall        headers with a large Content-Length and a first chunk, then nothing for a long time:
                  on loopback, this is what an MTU blackhole looks like from the client
    /healthz      "ok"

Prints ``listening on IP:PORT`` once bound, so a launcher can wait for that line.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import sys
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

BIG_BODY = bytes(range(256)) * 1024  # 256 KiB
STALL_DECLARED_BYTES = 4 << 20  # the Content-Length /stall promises
STALL_FIRST_CHUNK = b"s" * 4096  # what it actually sends before going quiet
STALL_SECONDS = 600.0
MAX_SLOW_DELAY = 3600.0


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AppServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows its name and can wake its sleeping handlers on close."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # /stall handlers would otherwise hold close() for minutes

    def __init__(
        self,
        host: str,
        port: int,
        *,
        name: str,
        slow_delay: float,
        quiet: bool,
        slow_delay_file: Path | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app_name = name
        self._slow_delay = slow_delay
        self.slow_delay_file = slow_delay_file
        self.quiet = quiet
        self.closing = threading.Event()  # set on close: /slow and /stall stop waiting
        # (path, Host header) of recent requests, newest last: lets tests see what a client really sent.
        self.recent_requests: deque[tuple[str, str]] = deque(maxlen=100)
        super().__init__((host, port), AppHandler)

    @property
    def slow_delay(self) -> float:
        """/slow's delay: the number in --slow-delay-file while that file exists, else --slow-delay. Lets the
        lab make the backend slow without restarting it (a restart would also break pod-IP probes)."""
        if self.slow_delay_file is not None:
            try:
                return min(MAX_SLOW_DELAY, max(0.0, float(self.slow_delay_file.read_text())))
            except (OSError, ValueError):
                pass
        return self._slow_delay

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the bind address up with socket.getfqdn(): a reverse DNS query that
        # hangs start-up for seconds in a namespace whose resolver is unreachable. We never need the name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def listen(self) -> str:
        return format_hostport(self.server_name, self.server_port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer (probes that time out on /stall) are expected, not errors.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class AppHandler(BaseHTTPRequestHandler):
    server: AppServer
    protocol_version = "HTTP/1.1"
    server_version = "netpath-httpapp"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        self.server.recent_requests.append((self.path, self.headers.get("Host", "")))
        if path == "/":
            host = self.headers.get("Host", "")
            self._text(200, f"{self.server.app_name} on {self.server.listen}\nhost: {host}\npath: {path}\n")
        elif path == "/healthz":
            self._text(200, "ok\n")
        elif path == "/big":
            self._send(200, BIG_BODY, "application/octet-stream")
        elif path == "/slow":
            self._slow(parse_qs(parts.query).get("delay", []))
        elif path.startswith("/status/"):
            self._status(path.removeprefix("/status/"))
        elif path == "/stall":
            self._stall()
        else:
            self._text(404, f"no route {path}\n")

    def _slow(self, delay_args: list[str]) -> None:
        delay = self.server.slow_delay
        if delay_args:
            try:
                delay = float(delay_args[-1])
            except ValueError:
                delay = -1.0
            if not 0 <= delay <= MAX_SLOW_DELAY:
                self._text(400, f"delay: expected seconds from 0 to {MAX_SLOW_DELAY:g}, got {delay_args[-1]!r}\n")
                return
        self.server.closing.wait(delay)
        self._text(200, f"slept {delay:g}s\n")

    def _status(self, code_text: str) -> None:
        if not code_text.isdigit() or not 200 <= int(code_text) <= 599:
            self._text(400, f"status: expected a code from 200 to 599, got {code_text!r}\n")
            return
        code = int(code_text)
        self._text(code, f"{self.server.app_name}: status {code}\n")

    def _stall(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(STALL_DECLARED_BYTES))
        self.end_headers()
        self.wfile.write(STALL_FIRST_CHUNK)
        self.wfile.flush()
        self.server.closing.wait(STALL_SECONDS)
        self.close_connection = True  # the promised body never comes; drop the connection

    def _text(self, code: int, text: str) -> None:
        self._send(code, text.encode(), "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", self.server.app_name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


class RunningApp:
    """An AppServer serving from a background thread; close() stops it and wakes stalled handlers."""

    def __init__(self, server: AppServer) -> None:
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="httpapp", daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return self.server.server_name

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.server.listen}"

    def close(self) -> None:
        self.server.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningApp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve_in_thread(
    host: str = "127.0.0.1", port: int = 0, *, name: str = "httpapp", slow_delay: float = 2.0
) -> RunningApp:
    """Start the app in this process (port 0: a free one); read ``.port``/``.url``, call ``.close()``."""
    return RunningApp(AppServer(host, port, name=name, slow_delay=slow_delay, quiet=True))


def _listen_arg(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected IP:PORT (or [IPv6]:PORT), got {text!r}")
    return host, int(port_text)


def _delay_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_SLOW_DELAY:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to {MAX_SLOW_DELAY:g}, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.apps.httpapp", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, type=_listen_arg, metavar="IP:PORT")
    parser.add_argument("--name", default="httpapp", help="shown in answers, to tell replicas apart")
    parser.add_argument("--slow-delay", type=_delay_arg, default=2.0, metavar="SECONDS", help="/slow's delay")
    parser.add_argument(
        "--slow-delay-file", type=Path, metavar="PATH", help="while this file exists, /slow sleeps the seconds it holds"
    )
    args = parser.parse_args(argv)
    host, port = args.listen
    try:
        server = AppServer(
            host, port, name=args.name, slow_delay=args.slow_delay, quiet=False, slow_delay_file=args.slow_delay_file
        )
    except OSError as exc:
        print(f"httpapp: --listen {format_hostport(host, port)}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"listening on {server.listen}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.closing.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
