"""The DNS probe against a real dnsmasq and against servers that misbehave on purpose (lab/loopback.py)."""

from __future__ import annotations

import pytest

from exporter.model import DNSQueryType, DNSTarget, PathClass, Reason, Transport, Via
from exporter.probes import dns
from lab.loopback import Dnsmasq, DNSServer, Listener


def target(server: DNSServer | Listener, name: str, **kwargs: object) -> DNSTarget:
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
    [("web.lab.test:8080", True), ("WEB.lab.test.", True), ("0 0 8080 web.lab.test.", True),
     ("web.lab.test:53", False)],
)
async def test_srv_answers_compare_by_target_and_port(dnsmasq: DNSServer, expected: str, ok: bool) -> None:
    result = await dns.probe(
        target(
            dnsmasq, "_http._tcp.web.lab.test", query_type=DNSQueryType.SRV, expect=frozenset({expected})
        ),
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
