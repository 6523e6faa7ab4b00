"""The localizer: a result sink that keeps each target's window, takes node-facts snapshots, and on demand
runs the rule table over both.

Results arrive on the event loop, diagnoses are asked for from the HTTP thread (scrapes, /diagnose): one lock
guards the windows; a diagnosis is computed from a copy and is cheap (a few dozen targets, a dozen samples).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..model import AnyTarget, Perspective, ProbeResult, TargetKey
from ..node.facts import NodeFacts
from .causes import Cause
from .picture import FactsView, Picture, Verdict, key
from .rules import evaluate
from .window import Sample, TargetStatus, TargetWindow


@dataclass(frozen=True)
class PeerFault:
    """This node's failing legs that run through a component on peer node `owner`, which `owner`'s own
    exporter explains by `causes` (docs/diagnosis.md, "Peer reports")."""

    owner: str
    causes: tuple[str, ...]
    components: tuple[str, ...]  # the names of those components, as this node probes them
    targets: tuple[str, ...]  # this node's targets (name/transport) that fail through them


@dataclass(frozen=True)
class Diagnosis:
    source_node: str
    perspective: Perspective
    at: float  # Unix time of the evaluation
    statuses: tuple[TargetStatus, ...]
    verdicts: tuple[Verdict, ...]
    facts_read_at: float | None  # None: no node-facts reading yet (or facts disabled)
    facts_node_view: bool  # the facts describe a node's namespace (VXLAN link present)
    # Failures explained by a peer's own verdict; the `unknown` verdicts they fully cover are dropped.
    peer_faults: tuple[PeerFault, ...] = ()

    @property
    def causes(self) -> set[Cause]:
        return {v.cause for v in self.verdicts}

    def as_dict(self) -> dict[str, Any]:
        """The /diagnose document (and `diagnose --json`); the human report is rendered from this."""
        explained_by = {t: v.cause.value for v in self.verdicts for t in v.targets}
        seen_on = {t: f.owner for f in self.peer_faults for t in f.targets}
        return {
            "source_node": self.source_node,
            "perspective": self.perspective.value,
            "at": round(self.at, 3),
            "facts": {"read_at": self.facts_read_at, "node_view": self.facts_node_view},
            "verdicts": [
                {
                    "cause": v.cause.value,
                    "summary": v.summary,
                    "evidence": list(v.evidence),
                    "next_steps": list(v.next_steps),
                    "targets": list(v.targets),
                    "peer_nodes": list(v.peer_nodes),
                }
                for v in self.verdicts
            ],
            "peer_faults": [
                {
                    "node": f.owner,
                    "causes": list(f.causes),
                    "components": list(f.components),
                    "targets": list(f.targets),
                }
                for f in self.peer_faults
            ],
            "targets": [
                _status_record(s, explained_by.get(key(s.target), ""), seen_on.get(key(s.target), ""))
                for s in self.statuses
            ],
        }


def _status_record(status: TargetStatus, explained_by: str, seen_on: str = "") -> dict[str, Any]:
    t = status.target
    last = status.last
    typical = status.typical_ok_seconds
    return {
        "name": t.name,
        "from": t.perspective.value,
        "kind": t.kind,
        "path": t.path.value,
        "via": t.via.value,
        "transport": t.transport.value,
        "address": t.address,
        "target_node": t.target_node,
        "service": t.service,
        "health": status.health.value,
        "probes": len(status.samples),
        "failures": status.failures,
        "reasons": {r.value: n for r, n in status.failure_reasons.most_common()},
        "last_reason": last.reason.value if last else None,
        "last_detail": last.detail if last else "",
        "last_http_status": last.http_status if last else None,
        "typical_seconds": round(typical, 6) if typical is not None else None,
        "syn_retransmits": status.syn_retransmits,
        "explained_by": explained_by,  # this node's own verdict only: peers read it (never seen_on) to attribute
        "seen_on": seen_on,
    }


class Localizer:
    """A scheduler ResultSink (record/forget/observe_lag) plus :meth:`update_facts` and :meth:`diagnose`."""

    def __init__(
        self,
        *,
        source_node: str,
        perspective: Perspective = Perspective.POD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source_node = source_node
        self._perspective = perspective
        self._clock = clock  # wall clock: samples are compared with the facts' read_at (Unix time)
        self._lock = threading.Lock()
        self._windows: dict[TargetKey, TargetWindow] = {}
        self._facts: NodeFacts | None = None
        self._previous_facts: NodeFacts | None = None

    # --- ResultSink ----------------------------------------------------------------------------------------

    def record(self, target: AnyTarget, result: ProbeResult) -> None:
        sample = Sample.of(result, self._clock())
        with self._lock:
            window = self._windows.get(target.key)
            if window is None or window.target != target:
                window = self._windows[target.key] = TargetWindow(target)  # a changed target starts afresh
            window.add(sample)

    def forget(self, target: AnyTarget) -> None:
        with self._lock:
            self._windows.pop(target.key, None)

    def observe_lag(self, seconds: float) -> None:
        pass  # scheduler lag is the metrics' business

    # --- node facts ----------------------------------------------------------------------------------------

    def update_facts(self, snapshot: NodeFacts) -> None:
        with self._lock:
            self._previous_facts, self._facts = self._facts, snapshot

    # --- the diagnosis -------------------------------------------------------------------------------------

    def diagnose(self, now: float | None = None) -> Diagnosis:
        at = self._clock() if now is None else now
        with self._lock:
            statuses = tuple(w.status(at) for w in self._windows.values())
            facts, previous = self._facts, self._previous_facts
        view = FactsView(facts, previous) if facts is not None else None
        # The rules read the exporter's own perspective; the node perspective (when on) is the contrast
        # they quote: "from the node itself the same Service answers".
        own = tuple(s for s in statuses if s.target.perspective is self._perspective)
        other = tuple(s for s in statuses if s.target.perspective is not self._perspective)
        picture = Picture(self._source_node, self._perspective, own, view, other_view=other)
        return Diagnosis(
            source_node=self._source_node,
            perspective=self._perspective,
            at=at,
            statuses=statuses,
            verdicts=tuple(evaluate(picture)),
            facts_read_at=facts.read_at if facts is not None else None,
            facts_node_view=view.node_view if view is not None else False,
        )
