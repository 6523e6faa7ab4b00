"""What a probe kind is: the one record per kind that the rest of the exporter dispatches through.

Each kind's module (tcp, http, dns) owns its target class, its config parsing, its probe, its address and
destination, and declares them in one :class:`ProbeKind`; ``exporter.probes.KINDS`` maps config
names to those records and is the only place that lists every kind, as blackbox_exporter's ``Probers`` map is.
Config parsing, the node-perspective worker's wire format, node facts and the CLI know kinds only through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model import ProbeResult, Target

# A config entry (already checked to hold only the common keys and `config_keys`), where it is ("targets[3]"),
# and the common fields read from it (name, path, via, …) → the targets it declares (DNS: one per transport).
Parse = Callable[[Mapping[str, Any], str, dict[str, Any]], list[Target]]
# (ip, port, protocol) the probe dials: for a target probed `via: service`, the Service's ClusterIP.
Destination = tuple[str, int, str]


@dataclass(frozen=True)
class ProbeKind:
    name: str  # the config's `kind:` and every target's `kind`
    target_class: type[Target]
    config_keys: frozenset[str]  # the entry's keys beyond the common ones
    parse: Parse
    probe: Callable[[Any, float], Awaitable[ProbeResult]]  # (a target_class instance, timeout) → never raises
    destination: Callable[[Any], Destination | None]
    prepare: Callable[[], None] = lambda: None  # one-time set-up before probing starts, off the event loop's hot path
