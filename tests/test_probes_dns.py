"""The DNS probe against a real dnsmasq and against servers that misbehave on purpose (lab/loopback.py)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

import dns.message as dns_message
import pytest
from dns import asyncquery as dns_asyncquery
from dns import rcode as dns_rcode
from misbehaving import (
    Server,
    answer,
    cancellations_lost,
    read_tcp_query,
    reset,
    tcp_frame,
    tcp_script,
    udp_dns,
    with_id,
)

from exporter.model import PathClass, Reason, Transport, Via
from exporter.probes import dns
from exporter.probes.dns import DNSQueryType, DNSTarget
from lab.loopback import Dnsmasq, DNSServer, Listener


def target(server: DNSServer | Listener | Server, name: str, **kwargs: object) -> DNSTarget:
    return DNSTarget(
        name="d",
        path=PathClass.DNS,
        via=Via.POD,
        server=server.host,
        port=server.port,
        query_name=name,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("protocol", [Transport.UDP, Transport.TCP])
async def test_an_a_record_is_answered_over_udp_and_tcp(dnsmasq: Dnsmasq, protocol: Transport) -> None:
    result = await dns.probe(target(dnsmasq, "web.lab.test", protocol=protocol), timeout=1.0)

    assert result.ok, result
    assert result.answers == (dnsmasq.hosts["web.lab.test"],)
    assert 0 < result.phases["query"] <= result.duration


async def test_an_expected_address_among_the_answers_is_ok(dnsmasq: DNSServer) -> None:
    result = await dns.probe(
        target(dnsmasq, "web.lab.test", expect=frozenset({"10.43.0.99", "10.43.0.20"})), timeout=1.0
    )

    assert result.ok, result


async def test_an_answer_other_than_expected_is_wrong_answer(dnsmasq: DNSServer) -> None:
    result = await dns.probe(target(dnsmasq, "web.lab.test", expect=frozenset({"10.43.0.99"})), timeout=1.0)

    assert result.reason is Reason.WRONG_ANSWER
    assert result.answers == ("10.43.0.20",)
    assert "10.43.0.99" in result.detail


async def test_aaaa_answers_compare_as_addresses(dnsmasq: DNSServer) -> None:
    result = await dns.probe(
        target(dnsmasq, "dual.lab.test", query_type=DNSQueryType.AAAA, expect=frozenset({"fd00:43:0::21"})),
        timeout=1.0,
    )

    assert result.ok, result
    assert result.answers == ("fd00:43::21",)


@pytest.mark.parametrize(
    ("expected", "ok"),
    [
        ("web.lab.test:8080", True),
        ("WEB.lab.test.", True),
        ("0 0 8080 web.lab.test.", True),
        ("web.lab.test:53", False),
    ],
)
async def test_srv_answers_compare_by_target_and_port(dnsmasq: DNSServer, expected: str, ok: bool) -> None:
    result = await dns.probe(
        target(dnsmasq, "_http._tcp.web.lab.test", query_type=DNSQueryType.SRV, expect=frozenset({expected})),
        timeout=1.0,
    )

    assert result.ok is ok, result
    assert result.answers == ("0 0 8080 web.lab.test.",)


async def test_an_unknown_name_in_the_zone_is_nxdomain(dnsmasq: DNSServer) -> None:
    result = await dns.probe(target(dnsmasq, "missing.lab.test"), timeout=1.0)

    assert result.reason is Reason.NXDOMAIN
    assert result.answers == ()


async def test_a_name_without_records_of_the_type_is_no_answer(dnsmasq: DNSServer) -> None:
    result = await dns.probe(target(dnsmasq, "web.lab.test", query_type=DNSQueryType.AAAA), timeout=1.0)

    assert result.reason is Reason.NO_ANSWER


async def test_a_name_the_server_will_not_resolve_is_dns_refused(dnsmasq: DNSServer) -> None:
    # dnsmasq has no upstream: outside its own zone it answers REFUSED.
    result = await dns.probe(target(dnsmasq, "example.com"), timeout=1.0)

    assert result.reason is Reason.DNS_REFUSED


@pytest.mark.parametrize("protocol", [Transport.UDP, Transport.TCP])
async def test_a_server_that_never_answers_is_timeout_within_the_timeout(
    silent_dns: DNSServer, protocol: Transport
) -> None:
    result = await dns.probe(target(silent_dns, "web.lab.test", protocol=protocol), timeout=0.4)

    assert result.reason is Reason.TIMEOUT
    assert 0.4 <= result.duration < 0.4 + 0.3


async def test_a_udp_answer_with_tc_set_is_truncated_and_not_retried(truncating_dns: DNSServer) -> None:
    result = await dns.probe(target(truncating_dns, "web.lab.test"), timeout=1.0)

    assert result.reason is Reason.TRUNCATED


async def test_tcp_to_a_closed_port_is_refused(closed_port: Listener) -> None:
    result = await dns.probe(target(closed_port, "web.lab.test", protocol=Transport.TCP), timeout=1.0)

    assert result.reason is Reason.REFUSED


async def test_udp_to_a_closed_port_is_refused_at_once(closed_port: Listener) -> None:
    # The socket is connected, so the ICMP port unreachable comes back instead of a silent timeout.
    result = await dns.probe(target(closed_port, "web.lab.test"), timeout=2.0)

    assert result.reason is Reason.REFUSED, result
    assert result.duration < 1.0


# --- servers that answer wrongly (tests/misbehaving.py) ----------------------------------------------------


async def test_udp_replies_with_another_id_or_question_are_ignored_until_the_right_one() -> None:
    def replies(wire: bytes) -> list[bytes]:
        query = dns_message.from_wire(wire)
        other_question = dns_message.make_response(dns_message.make_query("other.lab.test", "A"))
        other_question.id = query.id
        return [
            with_id(answer(wire, "10.9.9.9"), (query.id + 1) % 65536),  # someone else's answer
            other_question.to_wire(),  # our ID, not our question
            b"\x00",  # too short to be a DNS message
            answer(wire, "10.43.0.20").to_wire(),
        ]

    with udp_dns(replies) as server:
        result = await dns.probe(target(server, "web.lab.test"), timeout=2.0)

    assert result.ok, result
    assert result.answers == ("10.43.0.20",)


async def test_only_a_reply_with_another_id_waits_out_the_timeout_and_says_so() -> None:
    def replies(wire: bytes) -> list[bytes]:
        query = dns_message.from_wire(wire)
        return [with_id(answer(wire, "10.9.9.9"), (query.id + 1) % 65536)]

    with udp_dns(replies) as server:
        result = await dns.probe(target(server, "web.lab.test"), timeout=0.4)

    assert result.reason is Reason.TIMEOUT, result
    assert result.duration >= 0.4
    assert "ignored 1 reply" in result.detail and "another message ID" in result.detail


async def test_an_unparseable_udp_answer_with_our_id_is_protocol_error() -> None:
    with udp_dns(lambda wire: [wire[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\xff\xff"]) as server:
        result = await dns.probe(target(server, "web.lab.test"), timeout=2.0)

    assert result.reason is Reason.PROTOCOL_ERROR, result


def _closes_after_reading_the_query(conn: socket.socket) -> None:
    read_tcp_query(conn)


def _closes_mid_answer(conn: socket.socket) -> None:
    frame = tcp_frame(answer(read_tcp_query(conn), "10.43.0.20").to_wire())
    conn.sendall(frame[: len(frame) // 2])


def _resets(conn: socket.socket) -> None:
    read_tcp_query(conn)
    reset(conn)


def _answers_another_id(conn: socket.socket) -> None:
    wire = read_tcp_query(conn)
    conn.sendall(tcp_frame(with_id(answer(wire, "10.43.0.20"), (int.from_bytes(wire[:2]) + 1) % 65536)))


@pytest.mark.parametrize(
    ("script", "reason", "detail"),
    [
        (_closes_after_reading_the_query, Reason.PROTOCOL_ERROR, "closed by the server after 0 of 2 bytes"),
        (_closes_mid_answer, Reason.PROTOCOL_ERROR, "closed by the server after"),
        (_resets, Reason.RESET, "ConnectionResetError"),
        (_answers_another_id, Reason.PROTOCOL_ERROR, "does not match the query"),
    ],
    ids=["closed-before-answer", "closed-mid-answer", "reset", "another-id"],
)
async def test_a_tcp_server_that_breaks_off_gets_a_precise_reason(
    script: Callable[[socket.socket], None], reason: Reason, detail: str
) -> None:
    with tcp_script(script) as server:
        result = await dns.probe(target(server, "web.lab.test", protocol=Transport.TCP), timeout=2.0)

    assert result.reason is reason, result
    assert detail in result.detail
    assert result.duration < 1.0  # told at once, not after the timeout


# --- cancellation is total ---------------------------------------------------------------------------------


def _refuses(wire: bytes) -> list[bytes]:
    return [answer(wire, rcode=dns_rcode.REFUSED).to_wire()]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="gh-86296: asyncio.wait_for was rewritten in 3.12")
async def test_dnspython_asyncquery_swallows_a_cancellation_on_python_3_11() -> None:
    # The root cause of exporters that never exited on SIGTERM: dnspython reads under asyncio.wait_for, which
    # returns the read's result when the cancellation and the answer arrive together.
    query = dns_message.make_query("web.lab.test", "A")
    with udp_dns(_refuses) as server:
        lost = await cancellations_lost(
            lambda: dns_asyncquery.udp(query, server.host, port=server.port, timeout=1.0),
            attempts=600,
            stop_at_first=True,
        )

    assert lost > 0


@pytest.mark.parametrize("protocol", [Transport.UDP, Transport.TCP])
async def test_the_dns_probe_ends_whenever_it_is_cancelled(protocol: Transport) -> None:
    def refuse_over_tcp(conn: socket.socket) -> None:
        conn.sendall(tcp_frame(_refuses(read_tcp_query(conn))[0]))

    with udp_dns(_refuses) as udp_server, tcp_script(refuse_over_tcp) as tcp_server:
        server = udp_server if protocol is Transport.UDP else tcp_server
        probe_target = target(server, "web.lab.test", protocol=protocol)
        lost = await cancellations_lost(lambda: dns.probe(probe_target, timeout=1.0), attempts=300)

    assert lost == 0
