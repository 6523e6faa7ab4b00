"""TCP connect probe: the pod-IP and ClusterIP paths.

A connect is the smallest thing that crosses the whole path (overlay, kube-proxy NAT, the pod's own stack),
and the kernel tells us afterwards how many SYNs it had to send. A path that drops one packet in ten looks
"slow" in a latency histogram; here it shows as ``syn_retransmits > 0``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..fields import read_hostport
from ..model import ProbeResult, Reason, Target, TCPInfo, format_hostport
from .kind import Destination, ProbeKind


@dataclass(frozen=True, kw_only=True)
class TCPTarget(Target):
    """A TCP connect to ip:port: the pod-IP and ClusterIP paths."""

    host: str
    port: int

    kind = "tcp"

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)


def parse(entry: Mapping[str, Any], where: str, common: dict[str, Any]) -> list[Target]:
    host, port = read_hostport(entry.get("address"), f"{where}.address", None)
    return [TCPTarget(host=host, port=port, **common)]


def destination(target: TCPTarget) -> Destination:
    return (target.host, target.port, "tcp")


# The head of Linux's struct tcp_info (include/uapi/linux/tcp.h) up to tcpi_total_retrans, the last field
# we need. Every kernel since 2.6.x has at least this much; newer ones append fields after it. Native byte
# order, standard sizes: 8 x u8, then 24 x u32 starting at tcpi_rto.
_TCP_INFO_HEAD = struct.Struct("=8B24I")
_RTT_INDEX = 8 + 15  # tcpi_rtt, microseconds (smoothed)
_RTTVAR_INDEX = 8 + 16  # tcpi_rttvar, microseconds
_TOTAL_RETRANS_INDEX = 8 + 23  # tcpi_total_retrans: segments retransmitted over the connection's life

# EINVAL is what a locally sent packet gets from a `blackhole` route (and the probe's addresses are validated
# IP literals, so it cannot mean a malformed address); EACCES from a `prohibit` route or a REJECT rule.
_UNREACHABLE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EINVAL, errno.EACCES}
)


def read_tcp_info(sock: socket.socket | None) -> TCPInfo | None:
    """The kernel's TCP_INFO for a connected socket, or None where it is not available.

    Read it right after the handshake, before any data: then ``tcpi_total_retrans`` counts only
    retransmitted SYNs. It is incremented for every retransmitted segment, SYNs included (checked on 6.18:
    one dropped SYN gives 1), and unlike ``tcpi_retransmits`` it is not reset when the SYN-ACK arrives.
    ``tcpi_total_rto`` would also count it but exists only since Linux 6.7, and cluster nodes run older
    kernels.
    """
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < _TCP_INFO_HEAD.size:
        return None
    fields = _TCP_INFO_HEAD.unpack_from(raw)
    return TCPInfo(
        syn_retransmits=fields[_TOTAL_RETRANS_INDEX],
        rtt_seconds=fields[_RTT_INDEX] / 1e6,
        rttvar_seconds=fields[_RTTVAR_INDEX] / 1e6,
    )


def reason_for_os_error(exc: OSError) -> Reason:
    """Map a socket error from connecting or talking to a peer onto the probe's reason."""
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return Reason.REFUSED
    if exc.errno in _UNREACHABLE_ERRNOS:
        return Reason.UNREACHABLE
    if isinstance(exc, ConnectionResetError | BrokenPipeError) or exc.errno == errno.ECONNRESET:
        return Reason.RESET
    return Reason.ERROR


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def probe(target: TCPTarget, timeout: float) -> ProbeResult:
    """Connect to target.host:target.port within ``timeout`` seconds, then close."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            return await _connect(target, start)
    except TimeoutError:
        # Our deadline, or the kernel giving up on its SYN retries (ETIMEDOUT, also a TimeoutError).
        return ProbeResult.failure(
            Reason.CONNECT_TIMEOUT,
            time.monotonic() - start,
            f"no answer to SYN from {target.address} within {timeout:g}s",
        )
    except OSError as exc:
        return ProbeResult.failure(reason_for_os_error(exc), time.monotonic() - start, describe(exc))
    except Exception as exc:  # a probe never raises: anything unforeseen is a labelled "error"
        return ProbeResult.failure(Reason.ERROR, time.monotonic() - start, describe(exc))


async def timed_connect(loop: asyncio.AbstractEventLoop, sock: socket.socket, address: tuple[str, int]) -> float:
    """Connect a non-blocking socket; seconds from the connect() call to the kernel saying the handshake is done.

    What loop.sock_connect does, except for when the clock stops: in the loop's writable callback, in the same loop
    iteration as the readiness event, rather than when the awaiting coroutine resumes, which is an iteration later,
    behind every other callback that was ready (other probes, result bookkeeping). The socket's own creation is
    not timed either: a plain connect() is the floor this is compared with (docs/benchmarks.md).
    """
    began = time.monotonic()
    try:
        sock.connect(address)
        return time.monotonic() - began
    except (BlockingIOError, InterruptedError):
        pass
    fd = sock.fileno()
    done: asyncio.Future[float] = loop.create_future()

    def writable() -> None:
        if done.done():
            return
        elapsed = time.monotonic() - began
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            done.set_exception(OSError(error, os.strerror(error)))  # OSError(ECONNREFUSED) is ConnectionRefusedError
        else:
            done.set_result(elapsed)

    loop.add_writer(fd, writable)
    try:
        return await done
    finally:
        loop.remove_writer(fd)


async def _connect(target: TCPTarget, start: float) -> ProbeResult:
    loop = asyncio.get_running_loop()
    # Target hosts are IP literals (validated in config and discovery), so no resolution is needed: even a
    # numeric loop.getaddrinfo() goes through a thread-pool hop, which would be timed as "connect".
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    address = (target.host, target.port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        connected = await timed_connect(loop, sock, address)
        tcp_info = read_tcp_info(sock)
    finally:
        sock.close()
    return ProbeResult.success(
        connected,
        phases=MappingProxyType({"connect": connected}),
        tcp_info=tcp_info,
        detail=f"connected to {target.address}",
    )


KIND = ProbeKind("tcp", TCPTarget, frozenset({"address"}), parse, probe, destination)
