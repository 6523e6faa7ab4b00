"""The HTTP probe against the real test app (lab/apps/httpapp.py) on loopback."""

from __future__ import annotations

import asyncio
import socket

from misbehaving import cancellations_lost, hold, tcp_script

from exporter.model import PathClass, Reason, Via
from exporter.probes import http
from exporter.probes.http import HTTPTarget
from lab.apps.httpapp import BIG_BODY, STALL_FIRST_CHUNK, RunningApp
from lab.loopback import BlackholeListener, Listener


def target(url: str, **kwargs: object) -> HTTPTarget:
    return HTTPTarget(name="h", path=PathClass.INGRESS, via=Via.INGRESS, url=url, **kwargs)  # type: ignore[arg-type]


async def test_a_200_is_ok_with_phases_in_order_and_tcp_info(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/"), timeout=1.0)

    assert result.ok, result
    assert result.http_status == 200
    assert result.body_bytes is not None and result.body_bytes > 0
    assert 0 < result.phases["connect"] <= result.phases["first_byte"] <= result.phases["total"]
    assert result.tcp_info is not None
    assert result.tcp_info.syn_retransmits == 0


async def test_a_504_is_bad_status_and_keeps_the_status_code(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/status/504"), timeout=1.0)

    assert not result.ok
    assert result.reason is Reason.BAD_STATUS
    assert result.http_status == 504


async def test_an_expected_non_200_status_is_ok(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/status/404", expect_status=frozenset({404})), timeout=1.0)

    assert result.ok, result
    assert result.http_status == 404


async def test_a_response_slower_than_the_timeout_is_response_timeout(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/slow?delay=3"), timeout=0.4)

    assert result.reason is Reason.RESPONSE_TIMEOUT
    assert result.http_status is None
    assert "connect" in result.phases and "first_byte" not in result.phases
    assert result.duration < 0.4 + 0.3


async def test_a_large_body_read_completely_meets_min_body_bytes(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/big", min_body_bytes=len(BIG_BODY)), timeout=1.5)

    assert result.ok, result
    assert result.body_bytes == len(BIG_BODY)


async def test_a_body_smaller_than_min_body_bytes_is_short_body(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/healthz", min_body_bytes=1000), timeout=1.0)

    assert result.reason is Reason.SHORT_BODY
    assert result.http_status == 200
    assert result.body_bytes == len(b"ok\n")


async def test_headers_then_a_stalled_body_is_body_timeout(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/stall"), timeout=0.5)

    assert result.reason is Reason.BODY_TIMEOUT
    assert result.http_status == 200
    assert result.body_bytes == len(STALL_FIRST_CHUNK)
    assert "first_byte" in result.phases
    assert result.duration < 0.5 + 0.3


async def test_the_host_header_is_sent(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(httpapp_server.url + "/healthz", host_header="keybuzz.example.test"), timeout=1.0)

    assert result.ok, result
    assert list(httpapp_server.server.recent_requests) == [("/healthz", "keybuzz.example.test")]


async def test_a_closed_port_is_refused(closed_port: Listener) -> None:
    result = await http.probe(target(f"http://{closed_port.address}/"), timeout=1.0)

    assert result.reason is Reason.REFUSED
    assert result.http_status is None


async def test_a_dropped_syn_is_counted_for_http_too(blackhole_listener: BlackholeListener) -> None:
    # The listener accepts and closes once released, so the request itself fails; the SYN count, read
    # right after the handshake, is reported all the same.
    blackhole_listener.release_after(0.3)

    result = await http.probe(target(f"http://{blackhole_listener.address}/"), timeout=1.5)

    assert not result.ok
    assert result.reason in (Reason.PROTOCOL_ERROR, Reason.RESET)
    assert result.tcp_info is not None
    assert result.tcp_info.syn_retransmits == 1


async def test_a_blackholed_backend_is_connect_timeout(blackhole_listener: BlackholeListener) -> None:
    result = await http.probe(target(f"http://{blackhole_listener.address}/"), timeout=0.4)

    assert result.reason is Reason.CONNECT_TIMEOUT
    assert result.duration < 0.4 + 0.3


async def test_https_to_a_plain_http_port_is_tls_error(httpapp_server: RunningApp) -> None:
    result = await http.probe(target(f"https://127.0.0.1:{httpapp_server.port}/"), timeout=1.0)

    assert result.reason is Reason.TLS_ERROR
    assert "connect" in result.phases


# --- servers that break the protocol (tests/misbehaving.py) --------------------------------------------------


def _headers_never_end(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")  # and no blank line, ever
    hold(conn, 3.0)


def _says_nothing(conn: socket.socket) -> None:
    conn.recv(4096)
    hold(conn, 3.0)


def _endless_headers(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for _ in range(10_000):  # 1 MB of headers, bounded; the probe stops reading long before
        conn.sendall(b"X-Filler: " + b"a" * 90 + b"\r\n")


def _endless_body(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(1600):  # 100 MB at most; the probe stops at its cap
        conn.sendall(chunk)


async def test_headers_without_their_terminating_blank_line_are_protocol_error_not_response_timeout() -> None:
    with tcp_script(_headers_never_end) as server:
        result = await http.probe(target(f"http://127.0.0.1:{server.port}/"), timeout=0.5)

    assert result.reason is Reason.PROTOCOL_ERROR, result
    assert "headers incomplete: 36 bytes received" in result.detail


async def test_a_server_that_says_nothing_is_still_response_timeout() -> None:
    with tcp_script(_says_nothing) as server:
        result = await http.probe(target(f"http://127.0.0.1:{server.port}/"), timeout=0.5)

    assert result.reason is Reason.RESPONSE_TIMEOUT, result


async def test_endless_headers_are_cut_off_as_protocol_error() -> None:
    with tcp_script(_endless_headers) as server:
        result = await http.probe(target(f"http://127.0.0.1:{server.port}/"), timeout=2.0)

    assert result.reason is Reason.PROTOCOL_ERROR, result  # h11's 16 KiB bound on an incomplete header block


async def test_an_endless_body_is_read_only_up_to_the_cap() -> None:
    with tcp_script(_endless_body) as server:
        result = await http.probe(target(f"http://127.0.0.1:{server.port}/"), timeout=2.0)

    assert result.ok, result
    assert result.body_bytes is not None and http.BODY_READ_CAP <= result.body_bytes < http.BODY_READ_CAP + 65536


async def test_the_http_probe_ends_whenever_it_is_cancelled(httpapp_server: RunningApp) -> None:
    probe_target = target(httpapp_server.url + "/")

    lost = await cancellations_lost(lambda: http.probe(probe_target, timeout=1.0), attempts=200)

    assert lost == 0


async def test_every_probe_opens_its_own_connection_although_the_client_is_shared() -> None:
    """The probes share one httpx client (its cost), never a connection: each probe times a fresh connect."""
    peers: list[tuple[str, int]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")  # keep-alive offered, never used
        await writer.drain()
        await reader.read()  # until the probe closes its side
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        results = [await http.probe(target(f"http://127.0.0.1:{port}/"), timeout=2.0) for _ in range(3)]
    assert all(r.ok for r in results), results
    assert all("connect" in r.phases for r in results)
    assert len(set(peers)) == 3  # three connections, from three source ports
