"""The exporter's HTTP endpoints: /metrics, /healthz, /readyz and any extra routes (e.g. /diagnose).

/metrics is rendered by exporter.exposition: prometheus_client's content negotiation (text 0.0.4 and 1.0.0,
OpenMetrics), encoders and `name[]=` filtering, with the per-target families pre-rendered (issue 14), gzip when the
request accepts it. This module only decides *when* and *how often* rendering runs, and serves it over a bounded,
timed path.

Why not prometheus_client's own server (`start_http_server`, i.e. wsgiref's WSGIServer with ThreadingMixIn): it
is the path issue 15 found failing. One thread per connection with no cap (1000 idle connections were 1002
threads), the socketserver listen backlog of 5 (327 of 500 concurrent scrapes unanswered), no read or idle
timeout (slowloris holds a thread forever), HTTP/1.0 only (wsgiref answers one request per connection, no
keep-alive), a `getfqdn()` at bind that stalls start-up when the resolver is unreachable, and every concurrent
scrape renders on its own thread: 200 pipelining clients were 200 CPU-bound renderers competing for the GIL with
the probe event loop (scheduler lag 13.9 s). `http.server.ThreadingHTTPServer`, which served before, has the
same thread, backlog and timeout shape.

What serves instead (docs/reliability.md, "HTTP endpoints"):
- One serving thread runs its own asyncio loop with h11 (the sans-I/O HTTP/1.1 parser httpx already depends
  on): an idle keep-alive connection costs a file descriptor and a few KiB, not a thread. Listen backlog 1024.
- Per-connection deadlines: a request's head must arrive within `read_timeout` of its first byte (and a new
  connection's first request within `read_timeout` of accept), a keep-alive connection may sit idle
  `idle_timeout` between requests, and a response must be taken by the client within `write_timeout`.
  Request heads are capped at 16 KiB (431), bodies at 64 KiB (413).
- A connection cap (`max_connections`, at most half the RLIMIT_NOFILE soft limit so probes keep descriptors). At
  the cap a new connection first evicts the longest-idle keep-alive connection that has no request waiting; if
  every connection is mid-request it gets an immediate 503 and is closed. Nothing queues without bound.
- Renders are CPU-bound Python that holds the GIL; more than one at a time adds no throughput and only takes the
  GIL from the probe loop. So one render thread, single-flight per (format, gzip, `name[]` set): requests that
  arrive while a rendering is in progress, or within `cache_seconds` (1 s) after it finished, get that same
  rendering. Any number of concurrent scrapers therefore cost at most one render per second per variant; a
  request that waits longer than `render_timeout` for it gets a 503. At most 4 distinct renderings may be
  queued, at most 8 extra-route calls (they run on two route threads); beyond that: 503 at once.
- Health checks (`healthy`, `ready`) run on the serving loop itself, so /healthz answers while /metrics is being
  rendered. They must be cheap (they read a timestamp and a counter).
- Each connection has at most one request in flight (h11 is strictly sequential and a response is fully handed
  to the kernel before the next pipelined request is read), so a pipelining client gets no more work done than
  it reads back.
- The render and route threads are daemons (not ThreadPoolExecutor's, which are joined at exit): a rendering in
  progress never holds up the process's exit after SIGTERM.
- SO_REUSEADDR on the listening socket: a restart binds the same port while connections the old process closed
  are still in TIME_WAIT. A client that disconnects mid-response just ends its connection: no traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import logging
import queue
import resource
import select
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from http import HTTPStatus
from itertools import islice
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import h11
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from . import exposition

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # request line + headers; Prometheus sends < 1 KiB
MAX_BODY_BYTES = 64 * 1024  # no endpoint takes a body; a small one is read and ignored
READ_CHUNK = 64 * 1024
MAX_PENDING_RENDERS = 4  # distinct (format, gzip, filter) renderings queued on the render thread
MAX_PENDING_ROUTES = 8  # extra-route calls queued or running on the route threads
ROUTE_THREADS = 2
EVICTION_SCAN = 64  # idle connections looked at when the cap is reached
TEXT = "text/plain; charset=utf-8"
GZIP_MIN_BYTES = 1024  # extra routes' bodies below this go out as they are: gzip would only add its header
TOO_MANY = b"too many connections\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(TOO_MANY), TOO_MANY)
)


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ServingLimits:
    """Bounds of the serving path; the defaults are what the exporter runs with (seconds, counts)."""

    backlog: int = 1024
    max_connections: int = 2048
    read_timeout: float = 10.0  # first byte of a request (or accept) → complete request
    idle_timeout: float = 90.0  # keep-alive between requests; above the usual 15-60 s scrape intervals
    write_timeout: float = 10.0  # the client must take the whole response within this
    render_timeout: float = 10.0  # a request waits this long for a rendering or a route, then 503
    cache_seconds: float = 1.0  # a finished rendering is reused for requests arriving within this


Check = Callable[[], tuple[bool, str]]
Route = Callable[[], Response]
CacheKey = tuple[str, bool, tuple[str, ...]]
T = TypeVar("T")


class _Connection:
    __slots__ = ("reader", "task", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.task = asyncio.current_task()


@dataclass
class _Rendering:
    future: asyncio.Future[Response]
    finished_at: float | None = None


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
        limits: ServingLimits = ServingLimits(),
    ) -> None:
        self._registry = registry
        self._healthy = healthy
        self._ready = ready
        self._routes = dict(routes or {})
        self._limits = limits
        self._max_connections = _connection_cap(limits.max_connections)
        self._sock = _listen(host, port, limits.backlog)
        self._render_pool = _DaemonPool(1, "metrics-render")
        self._route_pool = _DaemonPool(ROUTE_THREADS, "http-route")
        self._thread = threading.Thread(target=self._run, name="metrics-http", daemon=True)
        self._running = threading.Event()
        # The rest belongs to the serving loop's thread and is touched only from it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._open: set[_Connection] = set()
        self._idle: dict[_Connection, None] = {}  # insertion order = longest idle first
        self._renderings: dict[CacheKey, _Rendering] = {}
        self._pending_renders = 0
        self._pending_routes = 0
        self._in_executor: set[asyncio.Future[Response]] = set()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()
        self._running.wait(timeout=5)

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has just finished on its own
                loop.call_soon_threadsafe(stop.set)
            self._thread.join(timeout=5)
        self._sock.close()
        self._render_pool.shutdown(wait=False, cancel_futures=True)
        self._route_pool.shutdown(wait=False, cancel_futures=True)

    # --- the serving loop ---

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(_log_os_errors)
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock, backlog=self._limits.backlog)
        self._running.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            tasks = [conn.task for conn in self._open if conn.task is not None]
            for conn in list(self._open):
                conn.writer.transport.abort()
            for future in list(self._in_executor):
                future.cancel()  # a rendering finishing after the loop closed must not call into it
            if tasks:  # they end on their own now (EOF, or 503 for a cancelled rendering); asyncio.run cancels none
                await asyncio.wait(tasks, timeout=2)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if len(self._open) >= self._max_connections and not self._evict_idle():
            transport.write(REFUSAL)
            transport.close()
            return
        conn = _Connection(reader, writer)
        self._open.add(conn)
        # drain() returns only once the kernel has every byte, so a response never outlives write_timeout in
        # our buffers and close() below never waits on a client that stopped reading.
        transport.set_write_buffer_limits(high=0)
        try:
            await self._converse(conn)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or was too slow: nothing to tell it, nothing worth logging
        except asyncio.CancelledError:
            # Only at shutdown, and nobody awaits this task: ending it cancelled would make asyncio.streams
            # (3.11) log a CancelledError traceback per open connection from its done-callback.
            pass
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._open.discard(conn)
            self._idle.pop(conn, None)
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    def _evict_idle(self) -> bool:
        """Close the longest-idle connection that has no request waiting in its socket; False if none."""
        candidates = list(islice(self._idle, EVICTION_SCAN))
        poller = select.poll()
        fds = {}
        for conn in candidates:
            fd = conn.writer.get_extra_info("socket").fileno()
            fds[fd] = conn
            poller.register(fd, select.POLLIN)
        readable = {fd for fd, _ in poller.poll(0)}
        for fd, conn in fds.items():
            if fd not in readable:
                self._idle.pop(conn, None)
                self._open.discard(conn)
                conn.writer.transport.close()
                return True
        return False

    async def _converse(self, conn: _Connection) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        first = True
        while True:
            request = await self._read_request(conn, h, first)
            if request is None:
                return
            first = False
            response = await self._dispatch(request)
            await self._send(conn, h, response, head_only=request.method == b"HEAD")
            if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return  # Connection: close, HTTP/1.0 without keep-alive, or an error
            h.start_next_cycle()
            await asyncio.sleep(0)  # a pipelining client takes turns with everyone else

    async def _read_request(self, conn: _Connection, h: h11.Connection, first: bool) -> h11.Request | None:
        assert self._loop is not None
        limits = self._limits
        started: float | None = None  # when the first byte of this request arrived
        request: h11.Request | None = None
        body = 0
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                await self._refuse(conn, h, exc.error_status_hint, f"bad request: {exc}")
                return None
            if event is h11.NEED_DATA:
                if started is None and not h.trailing_data[0]:
                    self._idle[conn] = None
                    deadline = self._loop.time() + (limits.read_timeout if first else limits.idle_timeout)
                else:
                    deadline = (started or self._loop.time()) + limits.read_timeout
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await conn.reader.read(READ_CHUNK)
                except TimeoutError:
                    if started is not None:
                        await self._refuse(conn, h, 408, "request not complete in time")
                    return None
                finally:
                    self._idle.pop(conn, None)
                if started is None:
                    started = self._loop.time()
                h.receive_data(data)
            elif isinstance(event, h11.Request):
                # h11 bounds only a head still incomplete in its buffer; one read can hold a whole larger head
                if len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers) > MAX_HEAD_BYTES:
                    await self._refuse(conn, h, 431, "request header fields too large")
                    return None
                request = event
            elif isinstance(event, h11.Data):
                body += len(event.data)
                if body > MAX_BODY_BYTES:
                    await self._refuse(conn, h, 413, "request body too large")
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return request
            else:  # ConnectionClosed, or anything h11 may add
                return None

    async def _refuse(self, conn: _Connection, h: h11.Connection, status: int, why: str) -> None:
        if h.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            response = Response(status, TEXT, (why + "\n").encode(), (("connection", "close"),))
            await self._send(conn, h, response, head_only=False)

    async def _send(self, conn: _Connection, h: h11.Connection, response: Response, *, head_only: bool) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *response.headers,
        ]
        head = h.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status)))
        body = b"" if head_only or not response.body else h.send(h11.Data(data=response.body))
        # One write, one send(): every syscall releases and retakes the GIL, and a thread that does that often
        # keeps the probe loop's thread waiting for it (the GIL convoy effect).
        conn.writer.write(b"".join((head or b"", body or b"", h.send(h11.EndOfMessage()) or b"")))
        async with asyncio.timeout(self._limits.write_timeout):
            await conn.writer.drain()

    # --- what each path answers ---

    async def _dispatch(self, request: h11.Request) -> Response:
        if request.method not in (b"GET", b"HEAD"):
            return Response(405, TEXT, b"method not allowed\n", (("allow", "GET, HEAD"),))
        target = urlsplit(request.target.decode("ascii", "replace"))
        path = target.path
        if path == "/metrics":
            headers = _header_map(request.headers)
            return await self._metrics(target.query, headers.get("accept", ""), headers.get("accept-encoding", ""))
        if path in ("/healthz", "/readyz"):
            try:
                ok, why = (self._healthy if path == "/healthz" else self._ready)()
            except Exception as exc:
                return Response(500, TEXT, f"error: {exc}\n".encode())
            return Response(200 if ok else 503, TEXT, (why + "\n").encode())
        if path in self._routes:
            gzip_ok = gzip_accepted(_header_map(request.headers).get("accept-encoding", ""))
            return await self._route(self._routes[path], gzip_ok)
        if path == "/":
            paths = ["/metrics", "/healthz", "/readyz", *self._routes]
            links = "".join(f'<li><a href="{p}">{p}</a></li>' for p in paths)
            page = f"<html><title>netpath-exporter</title><h1>netpath-exporter</h1><ul>{links}</ul></html>"
            return Response(200, "text/html; charset=utf-8", page.encode())
        return Response(404, TEXT, b"not found\n")

    async def _metrics(self, query: str, accept: str, accept_encoding: str) -> Response:
        assert self._loop is not None
        key: CacheKey = (
            choose_encoder(accept)[1],
            gzip_accepted(accept_encoding),
            tuple(sorted(set(parse_qs(query).get("name[]", [])))),
        )
        now = self._loop.time()
        rendering = self._renderings.get(key)
        if rendering is None or not _reusable(rendering, now, self._limits.cache_seconds):
            if self._pending_renders >= MAX_PENDING_RENDERS:
                return Response(503, TEXT, b"metrics rendering busy\n")
            rendering = _Rendering(
                self._submit(self._render_pool, lambda: self._render(query, accept, accept_encoding), "render")
            )
            self._remember(key, rendering, now)
        return await self._wait(rendering.future, "metrics rendering")

    def _render(self, query: str, accept: str, accept_encoding: str) -> Response:
        """exporter.exposition's rendering, called on the render thread."""
        try:
            out = exposition.render(self._registry, accept, accept_encoding, query)
        except Exception as exc:  # a collector bug must answer 500, not kill the thread
            return Response(500, TEXT, f"error: {exc}\n".encode())
        headers = (("content-encoding", "gzip"),) if out.gzipped else ()
        return Response(200, out.content_type, out.body, (*headers, ("vary", "Accept-Encoding")))

    def _remember(self, key: CacheKey, rendering: _Rendering, now: float) -> None:
        assert self._loop is not None
        loop = self._loop
        rendering.future.add_done_callback(lambda _: setattr(rendering, "finished_at", loop.time()))
        expired = [k for k, r in self._renderings.items() if not _reusable(r, now, self._limits.cache_seconds)]
        for k in expired:
            del self._renderings[k]
        self._renderings[key] = rendering

    async def _route(self, route: Route, gzip_ok: bool) -> Response:
        if self._pending_routes >= MAX_PENDING_ROUTES:
            return Response(503, TEXT, b"busy\n")
        return await self._wait(self._submit(self._route_pool, lambda: _call_route(route, gzip_ok), "route"), "route")

    def _submit(self, pool: Executor, work: Callable[[], Response], kind: str) -> asyncio.Future[Response]:
        """Run work on pool, counted as pending until it finishes (not until its waiters give up)."""
        assert self._loop is not None
        future = self._loop.run_in_executor(pool, work)
        if kind == "render":
            self._pending_renders += 1
        else:
            self._pending_routes += 1
        self._in_executor.add(future)

        def done(f: asyncio.Future[Response]) -> None:
            self._in_executor.discard(f)
            if kind == "render":
                self._pending_renders -= 1
            else:
                self._pending_routes -= 1

        future.add_done_callback(done)
        return future

    async def _wait(self, future: asyncio.Future[Response], what: str) -> Response:
        try:
            async with asyncio.timeout(self._limits.render_timeout):
                return await asyncio.shield(future)  # other requests may be waiting on the same future
        except TimeoutError:
            return Response(503, TEXT, f"{what} busy\n".encode())
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                return Response(503, TEXT, b"shutting down\n", (("connection", "close"),))
            raise


class _DaemonPool(Executor):
    """Worker threads for renders and routes that never hold up the process's exit.

    ThreadPoolExecutor joins its workers at interpreter exit, so a SIGTERM during a rendering at 1000 targets
    (0.5 s, several seconds on a loaded node) waited for it; these threads are daemons, like the serving thread.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        while True:  # whatever is still queued will not run
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to whoever waits on the future, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)


def _reusable(rendering: _Rendering, now: float, ttl: float) -> bool:
    if not rendering.future.done():
        return not rendering.future.cancelled()
    if rendering.future.cancelled() or rendering.future.result().status != 200:
        return False
    # finished_at is None for the moment between the future completing and its done-callback running
    return rendering.finished_at is None or now - rendering.finished_at <= ttl


def _call_route(route: Route, gzip_ok: bool) -> Response:
    try:
        response = route()
    except Exception as exc:  # a route bug must answer 500, not kill the thread
        return Response(500, TEXT, f"error: {exc}\n".encode())
    if not gzip_ok or len(response.body) < GZIP_MIN_BYTES:
        return response
    body = gzip.compress(response.body, compresslevel=exposition.GZIP_LEVEL)
    headers = (*response.headers, ("content-encoding", "gzip"), ("vary", "Accept-Encoding"))
    return Response(response.status, response.content_type, body, headers)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    # Bound here, not in the serving thread, so a busy port fails the constructor with an OSError (cli.py turns
    # that into exit 2). No getfqdn(): in a pod whose resolver is unreachable it stalls start-up for seconds.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _connection_cap(configured: int) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(16, min(configured, soft // 2))


def _log_os_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # e.g. accept() failing with EMFILE: asyncio retries by itself; one line, not a traceback per attempt.
    exc = context.get("exception")
    if isinstance(exc, OSError):
        log.warning("HTTP server: %s: %s", context.get("message", "error"), exc)
        return
    loop.default_exception_handler(context)


def _header_map(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name (h11 lower-cases them); repeated ones joined as RFC 9110 allows."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out
