"""HTTP(S) probe: the ingress path (ingress controller -> backend Service), or a Service spoken to over HTTP.

Each probe opens a fresh connection (a new client, no pooling), because a reused keep-alive connection
would hide exactly the failures we look for: dropped SYNs, a NAT rule that no longer matches new flows.
The body is read to the end (or to a cap) so that a response whose large packets vanish on the way back
(an MTU blackhole: headers arrive, the body never does) is told apart from a backend that is merely slow.

Phase times are measured from the start of the probe, like curl's ``time_connect``/``time_starttransfer``:
``connect`` when the TCP handshake completed, ``first_byte`` when the response headers were in,
``total`` when the body was read.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from ..fields import (
    ConfigError,
    read_bool,
    read_host_header,
    read_int,
    read_ip,
    read_list,
    read_optional,
    read_str,
    shown,
)
from ..model import ProbeResult, Reason, Target, TCPInfo
from .kind import Destination, ProbeKind
from .tcp import describe, read_tcp_info, reason_for_os_error


@dataclass(frozen=True, kw_only=True)
class HTTPTarget(Target):
    """An HTTP(S) request, optionally with a Host header: the ingress path, or a Service over HTTP."""

    url: str  # scheme://ip[:port]/path — the address actually dialled
    host_header: str = ""  # sent as Host (and as TLS SNI) when set
    expect_status: frozenset[int] = frozenset({200})
    min_body_bytes: int = 0  # a large response that stalls (MTU) is caught only when this is set
    tls_verify: bool = False  # ingress certificates rarely match a probe's view; verification is opt-in

    kind = "http"

    @property
    def address(self) -> str:
        return self.url


# A URL is dialled as written and is the `address` label of every series: printable ASCII, bounded.
_URL_TEXT = re.compile(r"[!-~]+")


def read_probe_url(value: Any, where: str) -> str:
    """http(s)://IP[:port][/path]: an IP literal (the probe measures a path, not name resolution), port 1-65535."""
    url = read_str(value, where, max_len=2048)
    expected = "expected http://IP[:port]/path or https://…"
    if not _URL_TEXT.fullmatch(url):
        raise ConfigError(where, f"{expected} (printable ASCII, no spaces), got {shown(url)}")
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": a bracket without its pair
        raise ConfigError(where, f"{expected}, got {shown(url)}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(where, f"{expected}, got {shown(url)}")
    if "@" in parts.netloc:
        raise ConfigError(where, f"user info in a URL is not sent, and it would be a label: {shown(url)}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(where, f"the port is not a number from 1 to 65535: {shown(url)}") from None
    if port == 0:
        raise ConfigError(where, f"port 0 is not a port to connect to: {shown(url)}")
    read_ip(parts.hostname, where)
    return url


def parse(entry: Mapping[str, Any], where: str, common: dict[str, Any]) -> list[Target]:
    url = read_probe_url(entry.get("url"), f"{where}.url")
    statuses = read_list(entry.get("expect_status", [200]), f"{where}.expect_status", "status codes", empty=False)
    expect = frozenset(read_int(s, f"{where}.expect_status[{i}]", 100, 599) for i, s in enumerate(statuses))
    return [
        HTTPTarget(
            url=url,
            host_header=read_optional(read_host_header, entry.get("host"), f"{where}.host", ""),
            expect_status=expect,
            min_body_bytes=read_int(entry.get("min_body_bytes", 0), f"{where}.min_body_bytes", 0, 1 << 30),
            tls_verify=read_bool(entry.get("tls_verify", False), f"{where}.tls_verify"),
            **common,
        )
    ]


def destination(target: HTTPTarget) -> Destination | None:
    url = urlsplit(target.url)
    if not url.hostname:
        return None
    return (url.hostname, url.port or (443 if url.scheme == "https" else 80), "tcp")


# Read at most this much beyond min_body_bytes: enough to push many full-size packets through the path,
# without a probe pointed at a large download turning into a benchmark that ends in body_timeout.
BODY_READ_CAP = 1 << 20

Stage = Literal["connect", "tls", "response", "body"]

_TIMEOUT_REASON: Mapping[Stage, Reason] = {
    "connect": Reason.CONNECT_TIMEOUT,
    # Connected, but the TLS handshake did not finish: the server's certificate flight is the first large
    # packet of the connection, so this is how an MTU problem looks on HTTPS.
    "tls": Reason.RESPONSE_TIMEOUT,
    "response": Reason.RESPONSE_TIMEOUT,
    "body": Reason.BODY_TIMEOUT,
}


@functools.cache
def _ssl_context(verify: bool) -> ssl.SSLContext:
    """One context per verification mode: loading the CA bundle per probe would cost milliseconds."""
    return httpx.create_ssl_context(verify=verify, trust_env=False)


def prepare() -> None:
    """Do the first probe's one-time work before probing starts: the TLS contexts (the CA bundle) and the
    modules httpx imports on its first request (httpcore, h11, anyio's asyncio backend) — together ~150 ms
    of blocking work that, done inside the first probe, stalls the event loop and inflates the latency of
    every probe in flight at that moment."""
    import anyio._backends._asyncio  # noqa: F401
    import h11  # noqa: F401
    import httpcore  # noqa: F401

    _ssl_context(False)
    _ssl_context(True)


class _Progress:
    """How far one probe got; the trace callback moves it along, the outcome is read from it."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.stage: Stage = "connect"
        self.phases: dict[str, float] = {}
        self.tcp_info: TCPInfo | None = None
        self.status: int | None = None
        self.body_bytes: int | None = None
        self.header_bytes = 0  # response bytes read while the headers were not complete yet

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    async def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's "trace" extension: called as each step of the request starts and completes."""
        if event == "connection.connect_tcp.complete":
            self.phases["connect"] = self.elapsed()
            stream = info.get("return_value")
            # Right after the handshake, before any data, total retransmits are retransmitted SYNs.
            if stream is not None:
                self.tcp_info = read_tcp_info(stream.get_extra_info("socket"))
                self._count_header_bytes(stream)
            self.stage = "response"
        elif event == "connection.start_tls.started":
            self.stage = "tls"
        elif event == "connection.start_tls.complete":
            self._count_header_bytes(info.get("return_value"))  # the TLS stream: plaintext from here on
            self.stage = "response"
        elif event == "http11.receive_response_headers.complete":
            self.phases["first_byte"] = self.elapsed()
            self.stage = "body"

    def _count_header_bytes(self, stream: Any) -> None:
        """Count what the connection reads before the headers are complete, so a response that started and
        never finished its headers (no blank line) is told from one that never started. httpcore reads through
        ``stream.read``; wrapping it on this one stream object is the only hook it offers for that."""
        read = getattr(stream, "read", None)
        if read is None:
            return

        async def counting_read(max_bytes: int, timeout: float | None = None) -> bytes:
            data: bytes = await read(max_bytes, timeout)
            if self.stage == "response":
                self.header_bytes += len(data)
            return data

        stream.read = counting_read

    def result(self, reason: Reason, detail: str) -> ProbeResult:
        duration = self.elapsed()
        if reason is Reason.OK:
            self.phases["total"] = duration
        return ProbeResult(
            ok=reason is Reason.OK,
            reason=reason,
            duration=duration,
            detail=detail,
            phases=MappingProxyType(dict(self.phases)),
            tcp_info=self.tcp_info,
            http_status=self.status,
            body_bytes=self.body_bytes,
        )


# One client per event loop and verification mode, shared by every probe: building an httpx client (transport,
# pool, defaults) per probe was a third of an HTTP probe's CPU (docs/benchmarks.md). The pool keeps no connection
# (max_keepalive_connections=0), so every probe still opens, and times, a fresh one; it has no connection limit,
# so no probe waits in it behind others (the scheduler bounds concurrency). Per loop because httpcore's pool
# locks belong to the loop that first used them.
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _client(tls_verify: bool) -> httpx.AsyncClient:
    clients = _CLIENTS.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(tls_verify)
    if client is None:
        client = clients[tls_verify] = httpx.AsyncClient(
            verify=_ssl_context(tls_verify),
            follow_redirects=False,
            trust_env=False,  # a probe dials the address it was given, never an environment proxy
            limits=httpx.Limits(max_keepalive_connections=0, max_connections=None),
        )
    return client


async def probe(target: HTTPTarget, timeout: float) -> ProbeResult:
    """GET target.url within ``timeout`` seconds and judge status and body."""
    progress = _Progress(time.monotonic())
    try:
        async with asyncio.timeout(timeout):
            reason, detail = await _request(target, timeout, progress)
    except TimeoutError:
        reason = _TIMEOUT_REASON[progress.stage]
        detail = f"{progress.stage} did not complete within {timeout:g}s"
        if progress.stage == "body":
            detail += f" ({progress.body_bytes or 0} bytes received)"
    except Exception as exc:  # a probe never raises: map what we know, label the rest "error"
        reason, detail = _classify(exc, progress.stage), describe(exc)
    if reason is Reason.RESPONSE_TIMEOUT and progress.stage == "response" and progress.header_bytes:
        # The server answered, but its headers never ended (no blank line): a broken response, not a slow one.
        reason = Reason.PROTOCOL_ERROR
        detail = (
            f"response headers incomplete: {progress.header_bytes} bytes received, "
            f"no end of headers within {timeout:g}s"
        )
    return progress.result(reason, detail)


async def _request(target: HTTPTarget, timeout: float, progress: _Progress) -> tuple[Reason, str]:
    headers = {"Accept-Encoding": "identity", "User-Agent": "netpath-exporter"}
    extensions: dict[str, Any] = {"trace": progress.trace}
    if target.host_header:
        headers["Host"] = target.host_header
        extensions["sni_hostname"] = target.host_header
    async with _client(target.tls_verify).stream(
        "GET", target.url, headers=headers, extensions=extensions, timeout=httpx.Timeout(timeout)
    ) as response:
        progress.status = response.status_code
        progress.stage = "body"
        progress.phases.setdefault("first_byte", progress.elapsed())
        if response.status_code not in target.expect_status:
            return Reason.BAD_STATUS, f"status {response.status_code}, expected {_statuses(target)}"
        progress.body_bytes = 0
        cap = max(target.min_body_bytes, BODY_READ_CAP)
        async for chunk in response.aiter_raw():
            progress.body_bytes += len(chunk)
            if progress.body_bytes >= cap:
                break
    if progress.body_bytes < target.min_body_bytes:
        return (
            Reason.SHORT_BODY,
            f"body {progress.body_bytes} bytes, expected at least {target.min_body_bytes}",
        )
    return Reason.OK, f"status {progress.status}, {progress.body_bytes} bytes"


def _statuses(target: HTTPTarget) -> str:
    return ",".join(str(s) for s in sorted(target.expect_status))


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from (httpx wraps httpcore wraps the socket error)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _classify(exc: Exception, stage: Stage) -> Reason:
    chain = _causes(exc)
    if any(isinstance(e, ssl.SSLError) for e in chain):  # before OSError: SSLError is one
        return Reason.TLS_ERROR
    if any(isinstance(e, httpx.TimeoutException) for e in chain):
        return _TIMEOUT_REASON[stage]
    for e in chain:
        if isinstance(e, OSError) and (e.errno is not None or isinstance(e, ConnectionError)):
            return reason_for_os_error(e)
    if isinstance(exc, httpx.ProtocolError | httpx.DecodingError):
        return Reason.PROTOCOL_ERROR
    return Reason.ERROR


KIND = ProbeKind(
    "http",
    HTTPTarget,
    frozenset({"url", "host", "expect_status", "min_body_bytes", "tls_verify"}),
    parse,
    probe,
    destination,
    prepare,
)
