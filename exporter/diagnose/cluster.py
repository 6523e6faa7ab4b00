"""The cluster view: every node's /diagnose window combined into one report (`diagnose --cluster`).

Pure functions over the per-node /diagnose documents (the shape of :meth:`Diagnosis.as_dict`); fetching them is
the CLI's business. The combination adds no rule of its own beyond docs/diagnosis.md principle 3 applied across
nodes: a node whose every failing leg runs through a component on another node X, while X itself names a cause
that explains that component failing on X, sees X's fault; it is listed as such, not as a second cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..model import Reason
from .report import target_line
from .window import ANSWERS

_ANSWER_REASONS = frozenset(r.value for r in ANSWERS)
# What shows this node reached the component: an answer, or an HTTP connection it accepted and then did not
# answer on in time (the handshake crossed the overlay both ways; the wait is the component's, e.g. an ingress
# controller waiting on an upstream behind its own broken Service path, longer than our timeout).
_REACHED_REASONS = _ANSWER_REASONS | {Reason.RESPONSE_TIMEOUT.value}

UNKNOWN = "unknown"
FAILING = ("down", "flaky")


@dataclass(frozen=True)
class ExporterAnswer:
    """What one exporter said: its /diagnose document, or why there is none."""

    exporter: str  # the base URL asked
    doc: dict[str, Any] | None = None
    error: str = ""  # set when doc is None


@dataclass(frozen=True)
class FailingLeg:
    """One failing target: from `source_node` to the component on `target_node` ("" when not known)."""

    source_node: str
    target_node: str
    path: str
    name: str
    explained_by: str  # the cause of the source node's verdict that explains it ("" none)
    record: dict[str, Any]  # the target's record in the source node's document
    seen_on: str = ""  # the node whose own named cause explains this component failing ("": none)
    seen_causes: tuple[str, ...] = ()  # those causes, as that node names them

    @property
    def unexplained(self) -> bool:
        """Neither the source node's own named cause nor the component's node explains it."""
        return not self.seen_on and self.explained_by in ("", UNKNOWN)


@dataclass(frozen=True)
class NamedCause:
    node: str
    cause: str
    summary: str


@dataclass(frozen=True)
class SeenThrough:
    """A node's failures are all another node's fault: `owner` names `causes`; seen through `components`."""

    owner: str
    components: tuple[str, ...]  # target names on `owner` the failing legs go through
    causes: tuple[str, ...]


@dataclass(frozen=True)
class NodeView:
    node: str
    exporter: str
    doc: dict[str, Any]
    failing: tuple[FailingLeg, ...]
    named: tuple[NamedCause, ...]  # this node's own named causes (never `unknown`)
    sees: tuple[SeenThrough, ...]  # non-empty: every failing leg is another node's fault

    @property
    def verdicts(self) -> list[dict[str, Any]]:
        return list(self.doc["verdicts"])

    @property
    def clean(self) -> bool:
        """No verdict, no failing target, nothing failed recently, nothing pending: every path worked."""
        return not self.verdicts and all(t["health"] == "ok" and t["failures"] == 0 for t in self.doc["targets"])


@dataclass(frozen=True)
class Unreachable:
    exporter: str
    error: str


@dataclass(frozen=True)
class ClusterView:
    nodes: tuple[NodeView, ...]
    unreachable: tuple[Unreachable, ...]

    @property
    def named(self) -> tuple[NamedCause, ...]:
        return tuple(c for n in self.nodes for c in n.named)

    @property
    def failing(self) -> tuple[FailingLeg, ...]:
        return tuple(leg for n in self.nodes for leg in n.failing)

    @property
    def unexplained(self) -> tuple[FailingLeg, ...]:
        return tuple(leg for leg in self.failing if leg.unexplained)

    @property
    def all_clean(self) -> bool:
        return bool(self.nodes) and not self.unreachable and all(n.clean for n in self.nodes)

    @property
    def something_wrong(self) -> bool:
        return bool(self.unreachable) or any(n.verdicts or n.failing for n in self.nodes)

    def headline(self) -> str:
        if not self.nodes:
            return "no exporter answered"
        if self.named:
            by_cause: dict[str, list[str]] = {}
            for c in self.named:
                by_cause.setdefault(c.cause, []).append(c.node)
            named = "; ".join(f"{cause} on {', '.join(dict.fromkeys(nodes))}" for cause, nodes in by_cause.items())
            if self.unexplained:  # a named cause elsewhere does not make these go away
                named += f"; also {UNKNOWN}: " + "; ".join(_where(legs) for legs in _by_route(self.unexplained))
            return named
        if self.failing:
            return f"{UNKNOWN}: " + "; ".join(_where(legs) for legs in _by_route(self.failing))
        if any(n.verdicts for n in self.nodes):
            return f"{UNKNOWN}: verdicts without a failing target (see below)"
        if self.unreachable:
            return f"nothing fails on the {len(self.nodes)} nodes that answered; {len(self.unreachable)} did not"
        if self.all_clean:
            return "every path works"
        return "nothing fails now (some paths failed recently or are not probed enough yet)"

    def as_dict(self) -> dict[str, Any]:
        """The combined JSON document (`diagnose --cluster --json`)."""
        return {
            "headline": self.headline(),
            "named": [{"node": c.node, "cause": c.cause, "summary": c.summary} for c in self.named],
            "failing": [
                {
                    "source_node": leg.source_node,
                    "target_node": leg.target_node,
                    "path": leg.path,
                    "name": leg.name,
                    "explained_by": leg.explained_by,
                    "seen_on": leg.seen_on,
                }
                for leg in self.failing
            ],
            "sees": [
                {"node": n.node, "owner": s.owner, "components": list(s.components), "causes": list(s.causes)}
                for n in self.nodes
                for s in n.sees
            ],
            "unreachable": [{"exporter": u.exporter, "error": u.error} for u in self.unreachable],
            "nodes": {n.node: {"exporter": n.exporter, "diagnosis": n.doc} for n in self.nodes},
        }


def combine(answers: Iterable[ExporterAnswer]) -> ClusterView:
    """Every node's window side by side, with failures through another node's faulty component attributed."""
    docs: list[tuple[str, dict[str, Any]]] = []
    unreachable: list[Unreachable] = []
    for answer in answers:
        if answer.doc is None:
            unreachable.append(Unreachable(answer.exporter, answer.error or "no document"))
        else:
            docs.append((answer.exporter, answer.doc))
    by_node = {doc["source_node"]: doc for _, doc in docs}
    nodes = []
    for exporter, doc in docs:
        failing = attribute_legs(doc, by_node)
        named = tuple(
            NamedCause(doc["source_node"], v["cause"], v["summary"]) for v in doc["verdicts"] if v["cause"] != UNKNOWN
        )
        sees = () if named or not failing or not all(leg.seen_on for leg in failing) else _seen_through(failing)
        nodes.append(NodeView(doc["source_node"], exporter, doc, failing, named, sees))
    return ClusterView(tuple(nodes), tuple(unreachable))


def attribute_legs(doc: dict[str, Any], by_node: dict[str, dict[str, Any]]) -> tuple[FailingLeg, ...]:
    """Every failing leg of one node's document, with `seen_on` set on those that are another node's fault
    according to that node's own document in `by_node` (node name → /diagnose document)."""
    return tuple(_attributed(leg, by_node) for leg in _failing_legs(doc))


def _failing_legs(doc: dict[str, Any]) -> Iterable[FailingLeg]:
    for t in doc["targets"]:
        if t["health"] in FAILING:
            yield FailingLeg(
                doc["source_node"], t.get("target_node", ""), t["path"], t["name"], t.get("explained_by", ""), t
            )


def _attributed(leg: FailingLeg, by_node: dict[str, dict[str, Any]]) -> FailingLeg:
    """The leg with `seen_on` set when it is another node's fault: it goes to a component on another node X,
    got answers from it (so this node's leg to X works), is not explained by a named cause of this node, and
    X's own exporter names a cause explaining that same component failing on X."""
    owner_doc = by_node.get(leg.target_node)
    if (
        owner_doc is None
        or leg.target_node == leg.source_node
        or leg.explained_by not in ("", UNKNOWN)
        or not _answered(leg)
    ):
        return leg
    causes = _owner_causes(owner_doc, leg)
    return replace(leg, seen_on=leg.target_node, seen_causes=causes) if causes else leg


def _seen_through(failing: Sequence[FailingLeg]) -> tuple[SeenThrough, ...]:
    owners: dict[str, list[FailingLeg]] = {}
    for leg in failing:
        owners.setdefault(leg.seen_on, []).append(leg)
    return tuple(
        SeenThrough(
            owner,
            tuple(dict.fromkeys(leg.name for leg in legs)),
            tuple(sorted({c for leg in legs for c in leg.seen_causes})),
        )
        for owner, legs in owners.items()
    )


def _answered(leg: FailingLeg) -> bool:
    """Every failure of the leg shows the component was reached (an HTTP error, refused, or a connection it
    accepted and did not answer on in time), so this node's leg to it works. A silent leg (no connection: SYNs
    unanswered, unreachable) is this node's own (principle 3: the overlay towards the owner), never the owner's
    fault."""
    reasons = leg.record.get("reasons") or {}
    return bool(reasons) and all(reason in _REACHED_REASONS for reason in reasons)


def _same_component(record: dict[str, Any], leg: FailingLeg, owner: str) -> bool:
    """The same component as the leg reaches: on `owner`, the same path, via and transport, and the same
    target (name or address: another pod on that node is another component)."""
    return bool(
        record.get("target_node") == owner
        and record["path"] == leg.path
        and record.get("via") == leg.record.get("via")
        and record.get("transport") == leg.record.get("transport")
        and (record["name"] == leg.name or record.get("address") == leg.record.get("address"))
    )


def _owner_causes(owner_doc: dict[str, Any], leg: FailingLeg) -> tuple[str, ...]:
    """The named causes the owner's document gives for the same component failing there."""
    owner = owner_doc["source_node"]
    return tuple(
        sorted(
            {
                t.get("explained_by", "")
                for t in owner_doc["targets"]
                if _same_component(t, leg, owner)
                and t["health"] in FAILING
                and t.get("explained_by", "") not in ("", UNKNOWN)
            }
        )
    )


def _by_route(legs: Iterable[FailingLeg]) -> list[list[FailingLeg]]:
    routes: dict[tuple[str, str, str], list[FailingLeg]] = {}
    for leg in legs:
        routes.setdefault((leg.source_node, leg.target_node, leg.path), []).append(leg)
    return list(routes.values())


def _where(legs: Sequence[FailingLeg]) -> str:
    first = legs[0]
    return f"{first.source_node} → {_destination(first)} {first.path} fails ({', '.join(leg.name for leg in legs)})"


# --- the text report ---------------------------------------------------------------------------------------------


def render_cluster(view: ClusterView) -> str:
    asked = len(view.nodes) + len(view.unreachable)
    lines = [f"Cluster view: {len(view.nodes)} of {asked} exporters answered", "", f"Headline: {view.headline()}"]
    for node in view.nodes:
        for s in node.sees:
            lines.append(
                f"  {node.node} sees node {s.owner}'s fault through {', '.join(s.components)} ({', '.join(s.causes)})"
            )
    for node in view.nodes:
        lines.append("")
        lines += _render_node(node)
    if view.unreachable:
        lines.append("")
        lines.append(f"Unreachable exporters ({len(view.unreachable)}):")
        lines += [f"  node {u.exporter}: no answer: {u.error}" for u in view.unreachable]
    steps = _next_steps(view)
    if steps:
        lines.append("")
        lines.append("Next steps:")
        lines += steps
    return "\n".join(lines).rstrip() + "\n"


def _render_node(node: NodeView) -> list[str]:
    lines = [f"node {node.node} ({node.exporter}): {_node_verdict(node)}"]
    if node.failing:
        lines.append(f"  Failing legs ({len(node.failing)}):")
        for leg in node.failing:
            mark = "❌" if leg.record["health"] == "down" else "⚠️"
            seen = f" — node {leg.seen_on}'s fault ({', '.join(leg.seen_causes)} there)" if leg.seen_on else ""
            lines.append(f"  {target_line(leg.record, mark, _route(leg))}{seen}")
    for verdict in node.verdicts:
        lines.append(f"  Evidence for {verdict['cause']}:")
        lines += [f"    - {e}" for e in verdict["evidence"]]
    return lines


def _route(leg: FailingLeg) -> str:
    return f"{leg.source_node} → {_destination(leg)}"


def _destination(leg: FailingLeg) -> str:
    """The node the component runs on; a Service (ClusterIP, DNS via kube-dns) runs on no one node."""
    if leg.target_node:
        return leg.target_node
    return "a Service" if leg.record.get("via") == "service" else "?"


def _node_verdict(node: NodeView) -> str:
    if node.sees:
        return "; ".join(f"sees node {s.owner}'s fault through {', '.join(s.components)}" for s in node.sees)
    if node.named:
        return "; ".join(f"{c.summary} [{c.cause}]" for c in node.named)
    if node.verdicts:
        return "; ".join(f"{v['summary']} [{v['cause']}]" for v in node.verdicts)
    if node.clean:
        return "every probed path works"
    return "nothing failing now"


def _next_steps(view: ClusterView) -> list[str]:
    """The verdicts' next steps, once per cause, naming the nodes; a node seeing another's fault adds none."""
    by_cause: dict[str, tuple[list[str], list[str]]] = {}
    for node in view.nodes:
        if node.sees:
            continue
        seen = {f"{leg.name}/{leg.record.get('transport')}" for leg in node.failing if leg.seen_on}
        for verdict in node.verdicts:
            if verdict["cause"] == UNKNOWN and verdict["targets"] and set(verdict["targets"]) <= seen:
                continue  # what it leaves unexplained is another node's fault, with that node's steps
            nodes, steps = by_cause.setdefault(verdict["cause"], ([], list(verdict["next_steps"])))
            nodes.append(node.node)
    lines = []
    for cause, (nodes, steps) in by_cause.items():
        lines.append(f"  {cause} on {', '.join(dict.fromkeys(nodes))}:")
        lines += [f"    {i}. {step}" for i, step in enumerate(steps, 1)]
    if view.unreachable:
        lines.append(
            "  unreachable exporters: `kubectl get pods -o wide -l app.kubernetes.io/name=netpath-exporter` "
            "(running? ready?), then `diagnose --url` each one from a place that reaches it."
        )
    return lines


def exit_status(view: ClusterView) -> int:
    """As `diagnose`: 0 nothing wrong; 1 a cause named, a leg failing or an exporter not answering; 2 no
    exporter answered at all."""
    if not view.nodes:
        return 2
    return 1 if view.something_wrong else 0
