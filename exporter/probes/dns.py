"""DNS probe: one query to one server over one transport.

UDP and TCP are probed separately and a truncated UDP answer is reported, not retried over TCP: "DNS over
UDP to the kube-dns ClusterIP times out while TCP works" is a diagnosis (a conntrack or checksum problem
with UDP), and a resolver-style fallback would hide it.

dnspython builds and parses the messages; the socket I/O is our own (``loop.sock_*`` under one
``asyncio.timeout``). dnspython's asyncio query functions wrap every read in ``asyncio.wait_for``, which on
Python 3.11 swallows a cancellation that arrives while the read has just completed (CPython gh-86296): the
probe then returns a result instead of stopping, and the scheduler waited for it forever at shutdown.
``loop.sock_recv``/``sock_connect`` are plain futures, so a cancellation always ends this probe.

Like a resolver, a UDP probe ignores a datagram that is not the answer to its query (another ID, another
question, unparseable and not carrying our ID) and keeps waiting for the right one until its timeout. Over
TCP the connection is ours alone, so an answer that does not match, or a connection closed before the
answer is complete, is a ``protocol_error``. Reads are bounded by the protocol: one datagram, or the 2-byte
length prefix of DNS over TCP (at most 65,535 bytes).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..fields import ConfigError, read_dns_name, read_enum, read_hostport, read_list, read_str
from ..model import ProbeResult, Reason, Target, Transport, format_hostport
from .kind import Destination, ProbeKind
from .tcp import describe, reason_for_os_error


class DNSQueryType(StrEnum):
    A = "A"
    AAAA = "AAAA"
    SRV = "SRV"


@dataclass(frozen=True, kw_only=True)
class DNSTarget(Target):
    """A DNS query to one server over one transport (UDP and TCP are separate targets)."""

    server: str
    port: int = 53
    protocol: Transport = Transport.UDP
    query_name: str
    query_type: DNSQueryType = DNSQueryType.A
    expect: frozenset[str] = frozenset()  # any of these in the answer is a pass; empty: any answer

    kind = "dns"

    @property
    def transport(self) -> Transport:
        return self.protocol

    @property
    def address(self) -> str:
        return format_hostport(self.server, self.port)


def parse(entry: Mapping[str, Any], where: str, common: dict[str, Any]) -> list[Target]:
    server, port = read_hostport(entry.get("address"), f"{where}.address", 53)
    transports = read_list(entry.get("transports", ["udp"]), f"{where}.transports", "udp/tcp", empty=False)
    protocols = [read_enum(Transport, t, f"{where}.transports[{i}]", ["udp", "tcp"]) for i, t in enumerate(transports)]
    if len(set(protocols)) != len(protocols):
        raise ConfigError(f"{where}.transports", "lists a transport twice")
    # An expected answer is an address or an SRV "target[:port]"/record text: one DNS name's worth of text.
    expect = [
        read_str(e, f"{where}.expect[{i}]", max_len=300)
        for i, e in enumerate(read_list(entry.get("expect", []), f"{where}.expect", "expected answers"))
    ]
    query_name = read_dns_name(entry.get("query"), f"{where}.query")
    query_type = read_enum(DNSQueryType, entry.get("type", "A"), f"{where}.type", [t.value for t in DNSQueryType])
    return [
        DNSTarget(
            server=server,
            port=port,
            protocol=proto,
            query_name=query_name,
            query_type=query_type,
            expect=frozenset(expect),
            **common,
        )
        for proto in protocols
    ]


def destination(target: DNSTarget) -> Destination:
    return (target.server, target.port, target.transport.value)


_RCODE_REASON = {
    dns.rcode.NXDOMAIN: Reason.NXDOMAIN,
    dns.rcode.SERVFAIL: Reason.SERVFAIL,
    dns.rcode.REFUSED: Reason.DNS_REFUSED,
}

# The largest DNS message either transport can carry: a UDP datagram's payload, or what a 2-byte TCP length
# prefix can announce. Nothing larger is ever read.
MAX_MESSAGE_BYTES = 65535
_TCP_LENGTH = struct.Struct("!H")


class _BadAnswer(Exception):
    """The server answered, but not with a DNS answer to our query (becomes ``protocol_error``)."""


@dataclass
class _Exchange:
    """What one query saw on the wire; the count of ignored datagrams goes into a timeout's detail."""

    ignored: int = 0
    last_ignored: str = ""


async def probe(target: DNSTarget, timeout: float) -> ProbeResult:
    """Ask target.server for target.query_name/query_type within ``timeout`` seconds and judge the answer."""
    start = time.monotonic()
    seen = _Exchange()

    def failure(reason: Reason, detail: str) -> ProbeResult:
        return ProbeResult.failure(reason, time.monotonic() - start, detail)

    try:
        query = dns.message.make_query(target.query_name, target.query_type.value)
    except Exception as exc:  # a name config or discovery should have refused: ours, not the server's fault
        return failure(Reason.ERROR, f"cannot build the query: {describe(exc)}")
    try:
        async with asyncio.timeout(timeout):
            if target.protocol is Transport.UDP:
                response = await _query_udp(query, target, seen)
            else:
                response = await _query_tcp(query, target)
    except TimeoutError:
        detail = f"no answer from {target.address} over {target.protocol} within {timeout:g}s"
        if seen.ignored:
            detail += f"; ignored {seen.ignored} reply(s) not answering the query (last: {seen.last_ignored})"
        return failure(Reason.TIMEOUT, detail)
    except (_BadAnswer, dns.exception.DNSException) as exc:  # an answer we could not parse: FormError, BadEDNS, ...
        return failure(Reason.PROTOCOL_ERROR, describe(exc))
    except OSError as exc:
        return failure(reason_for_os_error(exc), describe(exc))
    except Exception as exc:  # a probe never raises
        return failure(Reason.ERROR, describe(exc))

    duration = time.monotonic() - start
    phases = MappingProxyType({"query": duration})
    answers = _answers(response, target)

    def result(reason: Reason, detail: str) -> ProbeResult:
        return ProbeResult(
            ok=reason is Reason.OK,
            reason=reason,
            duration=duration,
            detail=detail,
            phases=phases,
            answers=answers,
        )

    if response.flags & dns.flags.TC:
        return result(Reason.TRUNCATED, "UDP answer truncated (TC set); the full answer needs TCP")
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        return result(_RCODE_REASON.get(rcode, Reason.DNS_ERROR), f"rcode {dns.rcode.to_text(rcode)}")
    if not answers:
        return result(Reason.NO_ANSWER, f"NOERROR but no {target.query_type} records")
    if target.expect and not any(_matches(answer, target) for answer in answers):
        return result(
            Reason.WRONG_ANSWER,
            f"got {', '.join(answers)}; expected one of {', '.join(sorted(target.expect))}",
        )
    return result(Reason.OK, ", ".join(answers))


def _socket(target: DNSTarget, kind: socket.SocketKind) -> socket.socket:
    # Servers are IP literals (validated in config and discovery): no resolution, as in the TCP probe.
    sock = socket.socket(socket.AF_INET6 if ":" in target.server else socket.AF_INET, kind)
    sock.setblocking(False)
    return sock


async def _query_udp(query: dns.message.Message, target: DNSTarget, seen: _Exchange) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    wire = query.to_wire()
    with _socket(target, socket.SOCK_DGRAM) as sock:
        # A connected socket: the kernel drops datagrams from any other address, and an ICMP port
        # unreachable (nothing listening, or a REJECT rule) comes back as ECONNREFUSED -> "refused".
        sock.connect((target.server, target.port))
        await loop.sock_sendall(sock, wire)
        while True:
            reply = await loop.sock_recv(sock, MAX_MESSAGE_BYTES)
            if reply[:2] != wire[:2]:
                seen.ignored += 1
                seen.last_ignored = "another message ID" if len(reply) >= 2 else f"{len(reply)}-byte datagram"
                continue
            try:
                response = dns.message.from_wire(reply)
            except dns.message.ShortHeader:
                seen.ignored += 1
                seen.last_ignored = f"{len(reply)}-byte datagram"
                continue
            # Our ID but unparseable is reported at once: it is the answer, and it is broken.
            if not query.is_response(response):
                seen.ignored += 1
                seen.last_ignored = "another question"
                continue
            return response


async def _query_tcp(query: dns.message.Message, target: DNSTarget) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    wire = query.to_wire()
    with _socket(target, socket.SOCK_STREAM) as sock:
        await loop.sock_connect(sock, (target.server, target.port))
        await loop.sock_sendall(sock, _TCP_LENGTH.pack(len(wire)) + wire)
        (length,) = _TCP_LENGTH.unpack(await _read_exactly(loop, sock, _TCP_LENGTH.size, "length prefix"))
        response = dns.message.from_wire(await _read_exactly(loop, sock, length, "answer"))
    if not query.is_response(response):
        raise _BadAnswer("the answer over TCP does not match the query (message ID or question differ)")
    return response


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int, what: str) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise _BadAnswer(f"connection closed by the server after {len(data)} of {size} bytes of the {what}")
        data += chunk
    return bytes(data)


def prepare() -> None:
    """One-time set-up before probing starts (see probes.prepare): build and parse one message, so dnspython's
    lazily imported rdata modules are not loaded on the event loop during the first probe."""
    query = dns.message.make_query("prepare.invalid", "A")
    dns.message.from_wire(dns.message.make_response(query).to_wire())
    for rdtype, text in _PREPARE_RDATA.items():
        dns.rdata.from_text(dns.rdataclass.IN, rdtype.value, text)


_PREPARE_RDATA = {DNSQueryType.A: "192.0.2.1", DNSQueryType.AAAA: "2001:db8::1", DNSQueryType.SRV: "0 0 1 a.invalid."}


def _answers(response: dns.message.Message, target: DNSTarget) -> tuple[str, ...]:
    """The records of the asked type in the answer section (a CNAME chain's own records are left out)."""
    wanted = dns.rdatatype.from_text(target.query_type.value)
    rrsets: list[dns.rrset.RRset] = response.answer
    return tuple(rdata.to_text() for rrset in rrsets if rrset.rdtype == wanted for rdata in rrset)


def _matches(answer: str, target: DNSTarget) -> bool:
    """Whether one answer record equals any expected value.

    A/AAAA compare as addresses (so "fd00::1" matches "fd00:0::1"). SRV records ("prio weight port target.")
    match an expectation written "target:port", "target" (any port), or the record text itself; names
    compare without case and trailing dot.
    """
    if target.query_type in (DNSQueryType.A, DNSQueryType.AAAA):
        got = ipaddress.ip_address(answer)
        for expected in target.expect:
            try:
                if ipaddress.ip_address(expected.strip()) == got:
                    return True
            except ValueError:
                continue
        return False
    fields = answer.split()
    if len(fields) != 4:
        return False
    _priority, _weight, port, srv_target = fields
    name = _name(srv_target)
    accepted = {name, f"{name}:{port}", " ".join([*fields[:3], name])}
    for expected in target.expect:
        text = expected.strip()
        parts = text.split()
        if len(parts) == 4:
            text = " ".join([*parts[:3], _name(parts[3])])
        elif ":" in text:
            host, _, want_port = text.rpartition(":")
            text = f"{_name(host)}:{want_port}"
        else:
            text = _name(text)
        if text in accepted:
            return True
    return False


def _name(text: str) -> str:
    return text.strip().rstrip(".").lower()


KIND = ProbeKind(
    "dns",
    DNSTarget,
    frozenset({"address", "transports", "query", "type", "expect"}),
    parse,
    probe,
    destination,
    prepare,
)
