"""The exporter's vocabulary: what a target is and what a probe of it found.

Everything here is a frozen dataclass or an enum, so targets can be used as dictionary keys, compared
between discovery rounds and shared between the scheduler, the metrics and the localizer without copies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar


class PathClass(StrEnum):
    """Which leg of a Kubernetes request a target exercises."""

    POD_IP = "pod_ip"  # straight to a pod IP, across the overlay when the pod is on another node
    CLUSTER_IP = "cluster_ip"  # to a Service ClusterIP: kube-proxy's NAT picks an endpoint
    DNS = "dns"  # a DNS query, to the kube-dns ClusterIP or to a CoreDNS pod directly
    INGRESS = "ingress"  # an HTTP request through the ingress controller to a backend Service


class Via(StrEnum):
    """How the destination address is reached; tells "DNS via the Service" from "DNS to a CoreDNS pod"."""

    SERVICE = "service"  # a Service ClusterIP (kube-proxy NAT on the client's node)
    POD = "pod"  # a pod IP, no NAT
    INGRESS = "ingress"  # an ingress controller address (which then dials the backend)
    NODE = "node"  # a node address or host port


class Perspective(StrEnum):
    """Whose network namespace the probe's socket lives in."""

    POD = "pod"
    NODE = "node"


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class Reason(StrEnum):
    """Why a probe ended the way it did. A closed set, so `reason` labels stay bounded."""

    OK = "ok"
    TIMEOUT = "timeout"  # the whole probe ran out of time (where no finer phase applies)
    CONNECT_TIMEOUT = "connect_timeout"  # no answer to our SYNs: dropped somewhere on the path
    REFUSED = "refused"  # RST to our SYN: reachable host, nothing listening (or a REJECT rule)
    UNREACHABLE = "unreachable"  # ICMP unreachable / no route
    RESET = "reset"  # connection reset after it was established
    RESPONSE_TIMEOUT = "response_timeout"  # connected, but no response (first byte) in time
    BODY_TIMEOUT = "body_timeout"  # headers arrived, the body stalled: the MTU-blackhole signature
    SHORT_BODY = "short_body"  # body smaller than the configured minimum
    BAD_STATUS = "bad_status"  # HTTP status outside the expected set (the code is in http metrics)
    TLS_ERROR = "tls_error"
    PROTOCOL_ERROR = "protocol_error"  # the peer spoke something we could not parse
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    DNS_REFUSED = "dns_refused"  # rcode REFUSED (a DNS answer, not a TCP RST)
    DNS_ERROR = "dns_error"  # any other non-zero rcode
    NO_ANSWER = "no_answer"  # NOERROR with an empty answer section for the asked type
    TRUNCATED = "truncated"  # UDP answer with TC set: the caller must retry over TCP
    WRONG_ANSWER = "wrong_answer"  # answered, but not with any expected record
    ERROR = "error"  # anything else; the detail string says what


TargetKey = tuple[str, str, str]  # (name, transport, perspective)


@dataclass(frozen=True, kw_only=True)
class Target:
    """What every target has: its identity, the labels that localize it, and its schedule."""

    name: str
    path: PathClass
    via: Via
    target_node: str = ""  # node the destination lives on, "" when unknown or not one node (a Service)
    service: str = ""  # "namespace/name" of the Service this target belongs to, "" when none
    interval: float = 10.0  # seconds between probes
    timeout: float = 3.0  # seconds a probe may take
    source: str = "static"  # where the target came from: "static" or a discovery source
    # Whose network namespace probes it: the exporter's own (pod, or node under hostNetwork) or, with the
    # node perspective on, the node's as well — the same target then runs twice, once per perspective.
    perspective: Perspective = Perspective.POD

    kind = "abstract"

    @property
    def transport(self) -> Transport:
        return Transport.TCP

    @property
    def key(self) -> TargetKey:
        """Identity across discovery rounds and in metrics: two targets with the same key are the same
        series. Names are unique except that one DNS entry may ask over both UDP and TCP, and that every
        target may be probed from both perspectives."""
        return (self.name, self.transport.value, self.perspective.value)

    @property
    def address(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


# Any target of any kind. The kinds' classes live in their probe modules (exporter/probes/), known to the rest
# of the exporter only through exporter.probes.KINDS; code that needs a kind's own fields narrows with isinstance.
AnyTarget = Target


@dataclass(frozen=True)
class TCPInfo:
    """The kernel's own view of a connection right after the handshake (Linux TCP_INFO)."""

    syn_retransmits: int  # SYNs sent beyond the first: each one is a lost packet, not just "slow"
    rtt_seconds: float
    rttvar_seconds: float


@dataclass(frozen=True)
class ProbeResult:
    """What one probe found. Probes never raise: every outcome is one of these."""

    ok: bool
    reason: Reason
    duration: float  # seconds, wall clock, whole probe
    detail: str = ""  # human-readable: the error text or a short summary of the answer
    phases: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    tcp_info: TCPInfo | None = None
    http_status: int | None = None
    body_bytes: int | None = None
    answers: tuple[str, ...] = ()  # DNS answer records, as text

    @staticmethod
    def success(duration: float, **kwargs: object) -> ProbeResult:
        return ProbeResult(ok=True, reason=Reason.OK, duration=duration, **kwargs)  # type: ignore[arg-type]

    @staticmethod
    def failure(reason: Reason, duration: float, detail: str = "", **kwargs: object) -> ProbeResult:
        return ProbeResult(ok=False, reason=reason, duration=duration, detail=detail, **kwargs)  # type: ignore[arg-type]


T = TypeVar("T", bound=Target)


def seen_from(target: T, perspective: Perspective) -> T:
    """The same target probed from ``perspective`` (itself when it already is)."""
    return target if target.perspective is perspective else dataclasses.replace(target, perspective=perspective)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
