"""The human report: what works ✅, what doesn't ❌, the likely cause with its evidence, and the next steps.

Rendered from the /diagnose JSON document, so a report of a running exporter (`diagnose --url`) and of a
standalone run (`diagnose --config`) are the same text.
"""

from __future__ import annotations

import time
from typing import Any

_PATH_NAMES = {"pod_ip": "pod IP", "cluster_ip": "ClusterIP", "ingress": "ingress"}


def _path_name(record: dict[str, Any]) -> str:
    if record["path"] == "dns":
        return "DNS via Service" if record["via"] == "service" else "DNS to pod"
    path: str = record["path"]
    return _PATH_NAMES.get(path, path)


def target_line(record: dict[str, Any], mark: str, route: str = "") -> str:
    """One target's line; ``route`` ("node2 → node1") goes after the mark (the cluster view's legs)."""
    node = f" → {record['target_node']}" if record["target_node"] else ""
    where = f"{record['transport']} {record['address']}{node}"
    if record["failures"] == 0:
        typical = record["typical_seconds"]
        speed = f"{typical * 1000:.1f} ms, " if typical is not None else ""
        outcome = f"{speed}{record['probes']}/{record['probes']} ok"
    else:
        reasons = ", ".join(f"{reason} ×{n}" for reason, n in record["reasons"].items())
        status = f" (HTTP {record['last_http_status']})" if record.get("last_http_status") else ""
        outcome = f"{reasons}{status} in {record['probes']} probes"
        if record["health"] == "ok":
            outcome += f", the last one {record['last_reason']}" if record["last_reason"] != "ok" else ", passing now"
    if record["syn_retransmits"]:
        outcome += f", {record['syn_retransmits']} SYN retransmits"
    seen_from = " [from node]" if record.get("from") == "node" else ""
    lead = f"{mark} {route}" if route else mark
    return f"  {lead} {_path_name(record):<15} {record['name']}{seen_from} ({where}): {outcome}"


def render_report(doc: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["at"]))
    lines = [f"From node {doc['source_node']} ({doc['perspective']} network), {when}:"]
    facts = doc["facts"]
    if facts["read_at"] is None:
        lines.append("  node facts: not read (disabled or not yet)")
    else:
        age = max(0.0, doc["at"] - facts["read_at"])
        scope = "the node's namespace" if facts["node_view"] else "a namespace without the overlay (a pod's?)"
        lines.append(f"  node facts: read {age:.0f} s ago from {scope}")
    targets = doc["targets"]
    # "works" means no failure in the window at all: a path that failed a moment ago is never listed as
    # working (docs/diagnosis.md, principle 4); one passing again after failures is listed on its own
    working = [t for t in targets if t["health"] == "ok" and t["failures"] == 0]
    passing_again = [t for t in targets if t["health"] == "ok" and t["failures"] > 0]
    failing = [t for t in targets if t["health"] in ("down", "flaky")]
    pending = [t for t in targets if t["health"] == "pending"]
    lines.append("")
    lines.append(f"What works ({len(working)}):")
    lines += [target_line(t, "✅") for t in working] or ["  (nothing)"]
    lines.append("")
    lines.append(f"What doesn't ({len(failing)}):")
    lines += [target_line(t, "❌" if t["health"] == "down" else "⚠️") for t in failing] or ["  (nothing)"]
    if passing_again:
        lines.append("")
        lines.append(
            f"Failed recently, not failing by the window's rule (one failure, or passing again) ({len(passing_again)}):"
        )
        lines += [target_line(t, "⚠️") for t in passing_again]
    if pending:
        lines.append("")
        lines.append(f"Not enough probes yet ({len(pending)}): " + ", ".join(t["name"] for t in pending))
    verdicts = doc["verdicts"]
    peer_faults = doc.get("peer_faults") or []
    lines.append("")
    for fault in peer_faults:
        lines.append(
            f"Seen through node {fault['node']}: {', '.join(fault['components'])} fail on node {fault['node']} "
            f"too, where its own exporter names {', '.join(fault['causes'])} — node {fault['node']}'s fault; this "
            f"node reached it (answers, or connections it accepted). Look at node {fault['node']}'s report."
        )
    if peer_faults:
        lines.append("")
    if not verdicts:
        if not failing:
            lines.append("No cause found: every probed path works.")
        elif not peer_faults:
            lines.append("No cause named.")
    for verdict in verdicts:
        label = "Likely cause" if verdict["cause"] != "unknown" else "Unknown cause"
        lines.append(f"{label}: {verdict['summary']} [{verdict['cause']}]")
        lines.append("  Evidence:")
        lines += [f"    - {e}" for e in verdict["evidence"]]
        lines.append("  Next steps:")
        lines += [f"    {i}. {step}" for i, step in enumerate(verdict["next_steps"], 1)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
