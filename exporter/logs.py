"""Logging: what a person reads in ``kubectl logs``, and the target state changes worth their attention.

At the default level (info) the exporter writes a line when it starts, for its config, for discovery errors
and when a target flips between working and failing — not one per probe. Probe-level detail (httpx's "HTTP
Request" line per request) only at debug. ``--log-format json`` writes one JSON object per line for log
pipelines; the standard library's formatter machinery is enough for that (a dependency would add nothing).

A flapping target is summarised instead of logged on every flip: after a logged change, further changes of
that target are counted for :data:`HOLD_PROBES` of its probes (5 minutes at the default 10 s interval) and then
reported in one line, with its state now. Counted in probes, not seconds, so the bound holds at any interval.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .model import AnyTarget, ProbeResult, TargetKey

if TYPE_CHECKING:
    from .config import Config

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
HOLD_PROBES = 30
# Libraries that log per request at INFO: probe-level detail, shown only at debug.
CHATTY_LIBRARIES = ("httpx", "httpcore")

log = logging.getLogger("netpath_exporter.targets")
start_log = logging.getLogger("netpath_exporter")

# LogRecord attributes every record has; anything else was passed in `extra=` and goes into the JSON object.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the record's `extra` fields, and a traceback."""

    converter = staticmethod(time.gmtime)  # UTC, as the trailing Z says

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRIBUTES})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing to `stream` (stderr) at `level` in `fmt`."""
    if level not in LEVELS:
        raise ValueError(f"log level: expected one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="default info: state changes only")
    parser.add_argument("--log-format", choices=FORMATS, default="text", help="text (default) or json lines")


def started(config: Config, port: int) -> None:
    """The start and config lines: what this exporter is and what it will do."""
    discovery = config.discovery
    start_log.info(
        "netpath-exporter %s on node %s serving on %s:%d",
        __version__,
        config.source_node,
        config.listen_host,
        port,
        extra={"version": __version__, "source_node": config.source_node, "port": port},
    )
    start_log.info(
        "config: %d static targets, discovery %s, node facts %s, node perspective %s, probing from the %s network",
        len(config.targets),
        f"on (Service {discovery.namespace}/{discovery.service})" if discovery is not None else "off",
        "on" if config.node_facts.enabled else "off",
        "on" if config.node_perspective.enabled else "off",
        config.perspective.value,
        extra={"static_targets": len(config.targets), "discovery": discovery is not None},
    )


@dataclass
class _Track:
    ok: bool  # the state as last logged (or first seen)
    now: bool  # the state of the last probe
    changes: int = 0  # changes since the last line, while held
    held_for: int = 0  # probes left before a held target may log again


class TargetStateLog:
    """A scheduler ResultSink (record/forget/observe_lag) that logs targets flipping between working and failing.

    Cheap on the hot path: a dict lookup and two comparisons per result; a line only on a change."""

    def __init__(self, logger: logging.Logger = log, hold_probes: int = HOLD_PROBES) -> None:
        self._log = logger
        self._hold = hold_probes
        self._tracks: dict[TargetKey, _Track] = {}

    def record(self, target: AnyTarget, result: ProbeResult) -> None:
        track = self._tracks.get(target.key)
        if track is None:
            self._tracks[target.key] = _Track(ok=result.ok, now=result.ok)
            if not result.ok:  # working from the start is the expected case: no line per target at startup
                self._changed(target, result, track=None)
            return
        if track.held_for:
            track.held_for -= 1
            track.changes += result.ok != track.now
            track.now = result.ok
            if track.held_for == 0 and track.changes:
                self._summary(target, result, track)
            return
        track.now = result.ok
        if result.ok != track.ok:
            self._changed(target, result, track)

    def forget(self, target: AnyTarget) -> None:
        self._tracks.pop(target.key, None)

    def observe_lag(self, seconds: float) -> None:
        pass

    def _changed(self, target: AnyTarget, result: ProbeResult, track: _Track | None) -> None:
        fields = _fields(target, result)
        if result.ok:
            self._log.info("target %s works again", target.name, extra=fields)
        else:
            self._log.warning("target %s failing: %s", target.name, _why(result), extra=fields)
        if track is None:
            track = self._tracks[target.key]
        track.ok = track.now = result.ok
        track.changes, track.held_for = 0, self._hold

    def _summary(self, target: AnyTarget, result: ProbeResult, track: _Track) -> None:
        state = "working" if result.ok else f"failing: {_why(result)}"
        level = logging.INFO if result.ok else logging.WARNING
        self._log.log(
            level,
            "target %s flapping: %d changes in its last %d probes, now %s",
            target.name,
            track.changes,
            self._hold,
            state,
            extra={**_fields(target, result), "changes": track.changes},
        )
        # Held again: a target that keeps flapping writes one line per hold, one that settles goes back to a
        # line per change once a hold passes without one.
        track.ok = result.ok
        track.changes, track.held_for = 0, self._hold


def _why(result: ProbeResult) -> str:
    return f"{result.reason.value} ({result.detail})" if result.detail else result.reason.value


def _fields(target: AnyTarget, result: ProbeResult) -> dict[str, Any]:
    return {
        "target": target.name,
        "path": target.path.value,
        "via": target.via.value,
        "from": target.perspective.value,
        "transport": target.transport.value,
        "address": target.address,
        "ok": result.ok,
        "reason": result.reason.value,
    }
