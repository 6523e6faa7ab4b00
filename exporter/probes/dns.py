"""DNS probe: one query to one server over one transport.

UDP and TCP are probed separately and a truncated UDP answer is reported, not retried over TCP: "DNS over
UDP to the kube-dns ClusterIP times out while TCP works" is a diagnosis (a conntrack or checksum problem
with UDP), and a resolver-style fallback would hide it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from types import MappingProxyType

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from ..model import DNSQueryType, DNSTarget, ProbeResult, Reason, Transport
from .tcp import describe, reason_for_os_error

_RCODE_REASON = {
    dns.rcode.NXDOMAIN: Reason.NXDOMAIN,
    dns.rcode.SERVFAIL: Reason.SERVFAIL,
    dns.rcode.REFUSED: Reason.DNS_REFUSED,
}


async def probe(target: DNSTarget, timeout: float) -> ProbeResult:
    """Ask target.server for target.query_name/query_type within ``timeout`` seconds and judge the answer."""
    start = time.monotonic()

    def failure(reason: Reason, detail: str) -> ProbeResult:
        return ProbeResult.failure(reason, time.monotonic() - start, detail)

    try:
        query = dns.message.make_query(target.query_name, target.query_type.value)
        async with asyncio.timeout(timeout):
            if target.protocol is Transport.UDP:
                response = await dns.asyncquery.udp(
                    query, target.server, timeout=timeout, port=target.port, ignore_unexpected=True
                )
            else:
                response = await dns.asyncquery.tcp(query, target.server, timeout=timeout, port=target.port)
    except (TimeoutError, dns.exception.Timeout):
        return failure(
            Reason.TIMEOUT, f"no answer from {target.address} over {target.protocol} within {timeout:g}s"
        )
    except dns.exception.FormError as exc:  # also BadEDNS, TrailingJunk, ...: an answer we could not parse
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



def prepare() -> None:
    """Load dnspython's asyncio backend now rather than inside the first query (see probes.prepare)."""
    dns.asyncbackend.get_backend("asyncio")

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
