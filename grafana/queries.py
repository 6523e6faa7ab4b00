"""The dashboards' PromQL: every panel query of a dashboard JSON, and the query as Prometheus would receive it.

Shared by tests/test_dashboards.py (does every query parse, and use only contract metrics?), the live lab test
(does every query return data?) and grafana/preview.py (render the panels from a real Prometheus).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

# What Grafana substitutes before a query reaches Prometheus. $__rate_interval is max(4 × scrape interval,
# step + scrape interval); the tests and the preview pass the lab's own value.
DEFAULT_VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "cluster": ".*",
    "node": ".*",
    "from": "pod",
}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel_id: int
    panel: str  # title
    panel_type: str
    ref_id: str
    expr: str
    legend: str
    instant: bool
    format: str  # time_series, table, heatmap


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON, for every committed dashboard."""
    return {p.name: load(p) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    out = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            out.append(
                PanelQuery(
                    dashboard=dashboard["uid"],
                    panel_id=panel.get("id", -1),
                    panel=panel.get("title", ""),
                    panel_type=panel["type"],
                    ref_id=target.get("refId", ""),
                    expr=target.get("expr", ""),
                    legend=target.get("legendFormat", ""),
                    instant=bool(target.get("instant")),
                    format=target.get("format", "time_series"),
                )
            )
    return out


def variable_queries(dashboard: Mapping[str, Any]) -> list[str]:
    """The label_values(...) queries of the dashboard's query variables."""
    out = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            q = variable.get("query")
            out.append(q["query"] if isinstance(q, dict) else str(q))
    return out


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """The query with Grafana's variables replaced; an unknown variable is an error naming it."""
    known = {**DEFAULT_VALUES, **(values or {})}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in known:
            raise KeyError(f"query uses ${name}, which has no value: {expr}")
        return known[name]

    return _VARIABLE.sub(one, expr)


LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


def label_values_selector(query: str) -> tuple[str, str]:
    """label_values(selector, label) → (selector, label); the selector may be empty."""
    match = LABEL_VALUES.match(query.strip())
    if not match:
        raise ValueError(f"not a label_values(...) query: {query}")
    return match.group(1) or "", match.group(2)
