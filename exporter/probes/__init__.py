"""One module per probe kind; each exposes ``async def probe(target, timeout) -> ProbeResult``.

Probes never raise and never outlive their timeout: every failure comes back as a ProbeResult with a
reason, so a broken path becomes a labelled metric instead of a crashed exporter.
"""

from __future__ import annotations

from ..model import AnyTarget, DNSTarget, HTTPTarget, ProbeResult, Reason, TCPTarget
from . import dns, http, tcp


def prepare() -> None:
    """One-time set-up the probes would otherwise do on the event loop during the first probe."""
    http.prepare()
    dns.prepare()


async def run_probe(target: AnyTarget, timeout: float | None = None) -> ProbeResult:
    """Probe one target with the probe of its kind, within ``timeout`` (default: the target's own)."""
    budget = target.timeout if timeout is None else timeout
    match target:
        case TCPTarget():
            return await tcp.probe(target, budget)
        case HTTPTarget():
            return await http.probe(target, budget)
        case DNSTarget():
            return await dns.probe(target, budget)
    return ProbeResult.failure(Reason.ERROR, 0.0, f"no probe for {type(target).__name__}")
