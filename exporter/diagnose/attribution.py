"""A node's own diagnosis combined with what its peers' exporters say about themselves (principle 3 per node).

The cluster view (`diagnose --cluster`, :mod:`.cluster`) applies principle 3 across every node's document for a
human. This applies the same attribution inside each exporter, with the peers' own /diagnose documents fetched by
:mod:`exporter.peer_reports`: a failing leg of this node that goes to a component on peer X, got answers from it
(this node's leg to X works), is not explained by this node's own named cause, and fails on X too where X's own
localizer explains it by a named cause — that leg is X's fault. An `unknown` verdict all of whose targets are such
legs is dropped, so `netpath_diagnosis{cause="unknown"}` on a bystander goes back to 0 and the node says which peer
it sees failing instead (`peer_faults`, `netpath_peer_fault`). Pure: documents in, a Diagnosis out.

Only the peers' *own* explanations are read (a target record's `explained_by`, never its `seen_on`), so no
exporter echoes another's attribution and nothing can go round in a circle. Without X's report, or when X does not
explain the component by a named cause, nothing is attributed: the `unknown` stays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .causes import Cause
from .cluster import attribute_legs
from .localizer import Diagnosis, PeerFault


def with_peer_reports(diagnosis: Diagnosis, reports: Mapping[str, dict[str, Any]]) -> Diagnosis:
    """`diagnosis` with the legs its peers' reports explain attributed to them (unchanged without any)."""
    by_node = {node: doc for node, doc in reports.items() if node != diagnosis.source_node}
    if not by_node or not any(v.cause is Cause.UNKNOWN for v in diagnosis.verdicts):
        return diagnosis  # only an unknown can be another node's fault: a named cause of our own stands
    seen = [leg for leg in attribute_legs(diagnosis.as_dict(), by_node) if leg.seen_on]
    if not seen:
        return diagnosis
    owners: dict[str, list[Any]] = {}
    for leg in seen:
        owners.setdefault(leg.seen_on, []).append(leg)
    faults = tuple(
        PeerFault(
            owner=owner,
            causes=tuple(sorted({c for leg in legs for c in leg.seen_causes})),
            components=tuple(dict.fromkeys(leg.name for leg in legs)),
            targets=tuple(dict.fromkeys(f"{leg.name}/{leg.record['transport']}" for leg in legs)),
        )
        for owner, legs in sorted(owners.items())
    )
    covered = {t for f in faults for t in f.targets}
    verdicts = tuple(
        v for v in diagnosis.verdicts if not (v.cause is Cause.UNKNOWN and v.targets and set(v.targets) <= covered)
    )
    return replace(diagnosis, verdicts=verdicts, peer_faults=faults)
