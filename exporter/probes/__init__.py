"""One module per probe kind, each declaring one :class:`~exporter.probes.kind.ProbeKind`; :data:`KINDS` maps them.

Each kind's module owns its target class, config parsing, probe (``async def probe(target, timeout) ->
ProbeResult``), address and destination; everything else goes through :data:`KINDS` (the config's `kind:`, the
worker's wire format, node facts' list of Service addresses) and never lists the kinds itself. Adding a fourth
kind is one new module and one line here (docs/design.md, "Probe kinds"; tests/test_probes_registry.py does it).

Probes never raise and never outlive their timeout: every failure comes back as a ProbeResult with a reason, so
a broken path becomes a labelled metric instead of a crashed exporter.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from enum import Enum
from types import MappingProxyType
from typing import Any

from ..model import AnyTarget, ProbeResult, Reason, TCPInfo
from . import dns, http, tcp
from .kind import Destination, ProbeKind

# The only list of every kind.
KINDS: dict[str, ProbeKind] = {kind.name: kind for kind in (tcp.KIND, http.KIND, dns.KIND)}


def prepare() -> None:
    """One-time set-up the probes would otherwise do on the event loop during the first probe."""
    for kind in KINDS.values():
        kind.prepare()


async def run_probe(target: AnyTarget, timeout: float | None = None) -> ProbeResult:
    """Probe one target with the probe of its kind, within ``timeout`` (default: the target's own)."""
    kind = KINDS.get(target.kind)
    if kind is None or not isinstance(target, kind.target_class):
        return ProbeResult.failure(Reason.ERROR, 0.0, f"no probe for {type(target).__name__}")
    return await kind.probe(target, target.timeout if timeout is None else timeout)


def destination(target: AnyTarget) -> Destination | None:
    """(ip, port, protocol) the target's probe dials, from its kind; None when it has none (a URL without host)."""
    kind = KINDS.get(target.kind)
    return None if kind is None else kind.destination(target)


# --- targets and results as JSON: the node-perspective worker's wire format -----------------------------------
# Generic over each kind's dataclass fields: an enum travels as its value, a frozenset as a sorted list, and the
# field's type says how to read it back. So a new kind's target class needs nothing here.


def target_to_json(target: AnyTarget) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": target.kind}
    for f in fields(target):
        value = getattr(target, f.name)
        if isinstance(value, Enum):
            value = value.value
        elif isinstance(value, frozenset):
            value = sorted(value)
        out[f.name] = value
    return out


def target_from_json(raw: dict[str, Any]) -> AnyTarget:
    cls = KINDS[raw["kind"]].target_class
    readers = _field_readers(cls)
    return cls(**{name: readers[name](raw[name]) for name in readers if name in raw})


_READERS: dict[type[AnyTarget], dict[str, Any]] = {}


def _field_readers(cls: type[AnyTarget]) -> dict[str, Any]:
    """How to read each dataclass field of a target class back from JSON, by its type; worked out once per class."""
    if cls not in _READERS:
        hints = typing.get_type_hints(cls)
        _READERS[cls] = {f.name: _reader(hints[f.name]) for f in fields(cls)}
    return _READERS[cls]


def _reader(hint: Any) -> Any:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint
    if typing.get_origin(hint) is frozenset:
        return frozenset
    return _same


def _same(value: Any) -> Any:
    return value


def result_to_json(result: ProbeResult) -> dict[str, Any]:
    info = result.tcp_info
    return {
        "ok": result.ok,
        "reason": result.reason.value,
        "duration": result.duration,
        "detail": result.detail,
        "phases": dict(result.phases),
        "tcp_info": [info.syn_retransmits, info.rtt_seconds, info.rttvar_seconds] if info else None,
        "http_status": result.http_status,
        "body_bytes": result.body_bytes,
        "answers": list(result.answers),
    }


def result_from_json(raw: dict[str, Any]) -> ProbeResult:
    info = raw.get("tcp_info")
    return ProbeResult(
        ok=bool(raw["ok"]),
        reason=Reason(raw["reason"]),
        duration=float(raw["duration"]),
        detail=str(raw.get("detail", "")),
        phases=MappingProxyType({str(k): float(v) for k, v in raw.get("phases", {}).items()}),
        tcp_info=TCPInfo(int(info[0]), float(info[1]), float(info[2])) if info else None,
        http_status=raw.get("http_status"),
        body_bytes=raw.get("body_bytes"),
        answers=tuple(raw.get("answers", ())),
    )


__all__ = [
    "KINDS",
    "ProbeKind",
    "destination",
    "prepare",
    "result_from_json",
    "result_to_json",
    "run_probe",
    "target_from_json",
    "target_to_json",
]
