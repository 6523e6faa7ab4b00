"""Loopback servers that misbehave on a script: the wrong DNS answer first, a connection cut mid-answer, headers
that never end. Real sockets on 127.0.0.1, served from a thread, each reply decided by a function of the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import dns.message
import dns.rcode
import dns.rrset

_POLL = 0.05


@dataclass
class Server:
    host: str
    port: int


def answer(wire: bytes, *addresses: str, rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    """The proper answer to the query in ``wire``: A records for ``addresses``, or just ``rcode``."""
    query = dns.message.from_wire(wire)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if addresses:
        response.answer.append(dns.rrset.from_text(query.question[0].name, 30, "IN", "A", *addresses))
    return response


def with_id(message: dns.message.Message, new_id: int) -> bytes:
    message.id = new_id
    return message.to_wire()


@contextlib.contextmanager
def udp_dns(replies: Callable[[bytes], list[bytes]]) -> Iterator[Server]:
    """Answers each UDP query with the datagrams ``replies(query)`` returns, in order."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(_POLL)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for datagram in replies(wire):
                sock.sendto(datagram, peer)

    with _serving(serve, stop, sock):
        yield Server("127.0.0.1", sock.getsockname()[1])


@contextlib.contextmanager
def tcp_script(script: Callable[[socket.socket], None]) -> Iterator[Server]:
    """Accepts connections and hands each to ``script`` (in the server thread); closes it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(_POLL)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2.0)
                with contextlib.suppress(OSError):
                    script(conn)

    with _serving(serve, stop, sock):
        yield Server("127.0.0.1", sock.getsockname()[1])


def read_tcp_query(conn: socket.socket) -> bytes:
    """One length-prefixed DNS query from a TCP connection."""
    head = _recv_exactly(conn, 2)
    return _recv_exactly(conn, struct.unpack("!H", head)[0])


def tcp_frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def reset(conn: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def hold(conn: socket.socket, seconds: float) -> None:
    """Keep the connection open, saying nothing more, for ``seconds`` (or until the client closes)."""
    conn.settimeout(seconds)
    with contextlib.suppress(TimeoutError):
        while conn.recv(4096):
            pass


async def cancellations_lost(
    query: Callable[[], Awaitable[object]], attempts: int, *, stop_at_first: bool = False
) -> int:
    """Start a scheduler-like loop of ``query`` (the next one as soon as one ends), cancel it after a varying
    number of event-loop turns, and count the loops still running 0.2 s after their cancellation.

    A probe whose library swallows a cancellation (returns a result instead of raising) shows up here as a loop
    that goes on: the bug behind exporters that never exited on SIGTERM."""

    async def loop_forever() -> None:
        while True:
            with contextlib.suppress(Exception):
                await query()
            await asyncio.sleep(0)

    lost = 0
    for attempt in range(attempts):
        task = asyncio.create_task(loop_forever())
        for _ in range(attempt % 60):
            await asyncio.sleep(0)
        time.sleep(0.002)  # noqa: ASYNC251 - on purpose: the server's answer arrives while the loop is not looking
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.2)
        if not done:
            lost += 1
            while not task.done():  # it swallowed one cancellation; it does not swallow every one
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
            if stop_at_first:
                break
    return lost


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


@contextlib.contextmanager
def _serving(serve: Callable[[], None], stop: threading.Event, sock: socket.socket) -> Iterator[None]:
    thread = threading.Thread(target=serve, name="misbehaving-server", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()
