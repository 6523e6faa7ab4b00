"""Draw a dashboard's panels to a PNG from a real Prometheus, laid out on Grafana's 24-column grid.

Grafana cannot be installed here, so this is how a reviewer sees the dashboards: each panel's queries are sent
to Prometheus's HTTP API as Grafana would send them (variables substituted), and drawn with matplotlib the way
the panel type shows them — lines for time series, coloured cells for the matrices and tables, coloured
boxes for stats, bands for state timelines, a bucket heatmap. An approximation of Grafana's look, not a copy:
enough to see the layout and which node is red.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write files only

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from . import queries

# GET /api/v1/<endpoint> with these parameters → the decoded JSON answer's "data"
PrometheusApi = Callable[[str, Mapping[str, str]], dict[str, Any]]

COLORS = {
    "green": "#56a64b",
    "red": "#e02f44",
    "orange": "#ff9830",
    "yellow": "#f2cc0c",
    "blue": "#3274d9",
    "purple": "#a352cc",
    "text": "#d8d9da",
    "panel": "#181b1f",
    "background": "#111217",
    "grid": "#2c3235",
}
PALETTE = [
    "#7eb26d",
    "#eab839",
    "#6ed0e0",
    "#ef843c",
    "#e24d42",
    "#1f78c1",
    "#ba43a9",
    "#705da0",
    "#508642",
    "#cca300",
    "#447ebc",
    "#c15c17",
    "#890f02",
    "#0a437c",
    "#6d1f62",
    "#584477",
]
COL_INCH, ROW_INCH = 0.85, 0.42  # one grid column / one grid row (Grafana: 30 px rows)


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    times: list[float]
    values: list[float]

    def last(self) -> float | None:
        for v in reversed(self.values):
            if not math.isnan(v):
                return v
        return None


@dataclass
class Window:
    start: float
    end: float
    step: float
    variables: dict[str, str] = field(default_factory=dict)


def color_of(name: str) -> str:
    return COLORS.get(name, name)


# ---------------------------------------------------------------------------------------------- queries


def run_range(api: PrometheusApi, expr: str, window: Window) -> list[Series]:
    data = api(
        "query_range",
        {
            "query": queries.substitute(expr, window.variables),
            "start": f"{window.start:.3f}",
            "end": f"{window.end:.3f}",
            "step": f"{window.step:g}",
        },
    )
    out = []
    for item in data["result"]:
        times = [float(t) for t, _ in item["values"]]
        values = [float(v) for _, v in item["values"]]
        out.append(Series(dict(item["metric"]), times, values))
    return out


def run_instant(api: PrometheusApi, expr: str, window: Window) -> list[Series]:
    data = api("query", {"query": queries.substitute(expr, window.variables), "time": f"{window.end:.3f}"})
    if data["resultType"] == "scalar":
        t, v = data["result"]
        return [Series({}, [float(t)], [float(v)])]
    return [
        Series(dict(item["metric"]), [float(item["value"][0])], [float(item["value"][1])]) for item in data["result"]
    ]


def run_target(api: PrometheusApi, target: Mapping[str, Any], window: Window) -> list[Series]:
    if target.get("instant"):
        return run_instant(api, target["expr"], window)
    return run_range(api, target["expr"], window)


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    if not fmt or fmt == "__auto":
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


# ----------------------------------------------------------------------------------------- field config


def fmt_value(value: float | None, unit: str, decimals: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "–"
    d = 1 if decimals is None else int(decimals)
    if unit == "percentunit":
        return f"{value * 100:.{d}f}%"
    if unit == "s":
        if value == 0:
            return "0 s"
        if abs(value) < 1e-3:
            return f"{value * 1e6:.0f} µs"
        if abs(value) < 1:
            return f"{value * 1e3:.1f} ms"
        return f"{value:.2f} s"
    if unit in ("ops", "reqps"):
        return f"{value:.2f}/s"
    if unit == "decbytes":
        return f"{value:.0f} B"
    return f"{value:.{d}f}" if value != int(value) else f"{int(value)}"


def threshold_color(value: float | None, defaults: Mapping[str, Any]) -> str:
    steps = defaults.get("thresholds", {}).get("steps") or [{"value": None, "color": "blue"}]
    color = steps[0]["color"]
    if value is None or math.isnan(value):
        return COLORS["grid"]
    for step in steps[1:]:
        if step["value"] is not None and value >= step["value"]:
            color = step["color"]
    return color_of(color)


def mapped(value: float | None, mappings: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """A value mapping's (text, colour) for this value, if one applies."""
    if value is None:
        return None
    for mapping in mappings:
        if mapping.get("type") != "value":
            continue
        key = f"{value:g}"
        result = mapping.get("options", {}).get(key)
        if result:
            return result.get("text", key), color_of(result.get("color", "blue"))
    return None


def override_color(name: str, panel: Mapping[str, Any]) -> str | None:
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = override["matcher"]
        hit = (matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name)) or (
            matcher["id"] == "byName" and matcher["options"] == name
        )
        if not hit:
            continue
        for prop in override["properties"]:
            if prop["id"] == "color" and prop["value"].get("mode") == "fixed":
                return color_of(prop["value"]["fixedColor"])
    return None


# ---------------------------------------------------------------------------------------------- drawing


def style(ax: Axes, title: str) -> None:
    ax.set_facecolor(COLORS["panel"])
    for spine in ax.spines.values():
        spine.set_color(COLORS["grid"])
    ax.tick_params(colors=COLORS["text"], labelsize=7)
    ax.set_title(title, color=COLORS["text"], fontsize=9, loc="left")


def message(ax: Axes, text: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, color="#8e8e8e", ha="center", va="center", fontsize=9, transform=ax.transAxes)


def draw_timeseries(
    ax: Axes, panel: Mapping[str, Any], results: list[tuple[Mapping[str, Any], list[Series]]], window: Window
) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "")
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    lines = [(legend(t.get("legendFormat", ""), s.labels), s) for t, series in results for s in series]
    if not lines:
        message(ax, defaults.get("noValue", "No data"))
        return
    lines.sort(key=lambda pair: pair[0])
    base: dict[float, float] = {}
    for i, (name, s) in enumerate(lines):
        color = override_color(name, panel) or PALETTE[i % len(PALETTE)]
        xs = [t - window.end for t in s.times]
        if stacked:
            bottoms = [base.get(t, 0.0) for t in s.times]
            ax.bar(xs, s.values, width=window.step * 0.9, bottom=bottoms, color=color, label=name)
            for t, v, b in zip(s.times, s.values, bottoms, strict=True):
                base[t] = b + (0.0 if math.isnan(v) else v)
        else:
            ax.plot(xs, s.values, color=color, linewidth=1.2, label=name)
    for step in defaults.get("thresholds", {}).get("steps", [])[1:]:
        if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") == "line":
            ax.axhline(step["value"], color=color_of(step["color"]), linestyle="--", linewidth=0.7)
    if "min" in defaults:
        ax.set_ylim(bottom=defaults["min"])
    if "max" in defaults:
        ax.set_ylim(top=defaults["max"] * 1.02)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_value(v, unit)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}s"))
    ax.grid(color=COLORS["grid"], linewidth=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6, frameon=False, labelcolor=COLORS["text"])


def draw_stat(ax: Axes, panel: Mapping[str, Any], results: list[tuple[Mapping[str, Any], list[Series]]]) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    values = sorted(
        ((legend(t.get("legendFormat", ""), s.labels), s.last()) for t, series in results for s in series),
        key=lambda pair: pair[0],
    )
    ax.set_xticks([])
    ax.set_yticks([])
    if not values:
        message(ax, defaults.get("noValue", "No data"))
        return
    columns = min(len(values), 6)
    rows = math.ceil(len(values) / columns)
    for i, (name, value) in enumerate(values):
        r, c = divmod(i, columns)
        hit = mapped(value, defaults.get("mappings", []))
        text = hit[0] if hit else fmt_value(value, defaults.get("unit", ""), defaults.get("decimals"))
        color = hit[1] if hit else threshold_color(value, defaults)
        x0, y0 = c / columns, 1 - (r + 1) / rows
        ax.add_patch(
            Rectangle((x0 + 0.005, y0 + 0.02), 1 / columns - 0.01, 1 / rows - 0.04, color=color, transform=ax.transAxes)
        )
        ax.text(
            x0 + 0.5 / columns,
            y0 + 0.68 / rows,
            name,
            ha="center",
            va="center",
            fontsize=6.5,
            color="white",
            transform=ax.transAxes,
        )
        ax.text(
            x0 + 0.5 / columns,
            y0 + 0.32 / rows,
            text,
            ha="center",
            va="center",
            fontsize=11,
            color="white",
            weight="bold",
            transform=ax.transAxes,
        )


def draw_table(ax: Axes, panel: Mapping[str, Any], results: list[tuple[Mapping[str, Any], list[Series]]]) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    series = [s for _, ss in results for s in ss]
    ax.set_xticks([])
    ax.set_yticks([])
    if not series:
        message(ax, defaults.get("noValue", "No data"))
        return
    pivot = next((t["options"] for t in panel.get("transformations", []) if t["id"] == "groupingToMatrix"), None)
    if pivot:
        rows = sorted({s.labels.get(pivot["rowField"], "") for s in series})
        cols = sorted({s.labels.get(pivot["columnField"], "") for s in series})
        cells = {
            (s.labels.get(pivot["rowField"], ""), s.labels.get(pivot["columnField"], "")): s.last() for s in series
        }
        header = [pivot["rowField"], *cols]
        body = [
            [r, *[fmt_value(cells.get((r, c)), defaults.get("unit", ""), defaults.get("decimals")) for c in cols]]
            for r in rows
        ]
        colors = [[COLORS["panel"], *[threshold_color(cells.get((r, c)), defaults) for c in cols]] for r in rows]
    else:
        hidden, value_name = {"Time", "__name__"}, "value"
        for t in panel.get("transformations", []):
            if t["id"] == "organize":
                hidden |= {k for k, v in t["options"].get("excludeByName", {}).items() if v}
                value_name = t["options"].get("renameByName", {}).get("Value", value_name)
        names = sorted({k for s in series for k in s.labels} - hidden)
        show_value = "Value" not in hidden
        header = [*names, *([value_name] if show_value else [])]
        body, colors = [], []
        for s in sorted(series, key=lambda s: [s.labels.get(n, "") for n in names]):
            value = s.last()
            hit = mapped(value, defaults.get("mappings", [])) or mapped(value, _override_mappings(panel))
            row = [s.labels.get(n, "") for n in names]
            row_colors = [COLORS["panel"]] * len(names)
            state = s.labels.get("alertstate")
            if state:
                row_colors[names.index("alertstate")] = COLORS["red" if state == "firing" else "orange"]
            if show_value:
                row.append(hit[0] if hit else fmt_value(value, defaults.get("unit", "")))
                row_colors.append(hit[1] if hit else COLORS["panel"])
            body.append(row)
            colors.append(row_colors)
    shown = body[:14]
    tbl = ax.table(
        cellText=shown,
        cellColours=colors[: len(shown)],
        colLabels=header,
        loc="upper center",
        cellLoc="center",
        colColours=[COLORS["grid"]] * len(header),
    )
    tbl.auto_set_font_size(False)
    tbl.set_fontsize(7)
    for cell in tbl.get_celld().values():
        cell.get_text().set_color("white")
        cell.set_edgecolor(COLORS["background"])
    if len(body) > len(shown):
        ax.text(
            0.99,
            0.01,
            f"+{len(body) - len(shown)} rows",
            color="#8e8e8e",
            fontsize=6,
            ha="right",
            transform=ax.transAxes,
        )


def _override_mappings(panel: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        out += [m for p in override["properties"] if p["id"] == "mappings" for m in p["value"]]
    return out


def draw_state_timeline(
    ax: Axes, panel: Mapping[str, Any], results: list[tuple[Mapping[str, Any], list[Series]]], window: Window
) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    rows = sorted((legend(t.get("legendFormat", ""), s.labels), s) for t, ss in results for s in ss)
    if not rows:
        ax.set_yticks([])
        message(ax, defaults.get("noValue", "No data"))
        return
    for i, (_, s) in enumerate(rows):
        for t, v in zip(s.times, s.values, strict=True):
            if math.isnan(v):
                continue
            hit = mapped(v, defaults.get("mappings", []))
            ax.barh(
                i,
                window.step,
                left=t - window.end - window.step / 2,
                height=0.7,
                color=hit[1] if hit else threshold_color(v, defaults),
            )
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
    ax.set_xlim(window.start - window.end, 0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}s"))


def draw_heatmap(
    ax: Axes, panel: Mapping[str, Any], results: list[tuple[Mapping[str, Any], list[Series]]], window: Window
) -> None:
    """Cumulative `le` buckets → per-bucket rates over time, as Grafana's heatmap format does."""
    series = [s for _, ss in results for s in ss if "le" in s.labels]
    if not series:
        message(ax, "No data")
        return
    series.sort(key=lambda s: float(s.labels["le"]))
    times = series[0].times
    grid = []
    previous = [0.0] * len(times)
    for s in series:
        values = [0.0 if math.isnan(v) else v for v in s.values[: len(times)]]
        values += [0.0] * (len(times) - len(values))
        grid.append([max(v - p, 0.0) for v, p in zip(values, previous, strict=True)])
        previous = values
    ax.imshow(
        grid,
        aspect="auto",
        origin="lower",
        cmap="Oranges",
        interpolation="nearest",
        extent=(times[0] - window.end, times[-1] - window.end, 0, len(series)),
    )
    labels = [s.labels["le"] for s in series]
    ax.set_yticks(
        [i + 0.5 for i in range(len(labels))],
        [fmt_value(float(le), "s") if le != "+Inf" else "+Inf" for le in labels],
        fontsize=5,
    )
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}s"))


# --------------------------------------------------------------------------------------------- dashboard


def render(dashboard: Mapping[str, Any], api: PrometheusApi, window: Window, out: Path, subtitle: str = "") -> Path:
    """Query every panel of the dashboard and draw it at its grid position; returns the PNG written."""
    all_panels = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in all_panels) + 2
    fig: Figure = plt.figure(figsize=(24 * COL_INCH, height * ROW_INCH), facecolor=COLORS["background"])
    fig.text(
        0.005,
        1 - 0.6 / height,
        f"{dashboard['title']}   {subtitle}",
        color="white",
        fontsize=14,
        weight="bold",
        va="center",
    )
    for panel in all_panels:
        pos = panel["gridPos"]
        top = (pos["y"] + 1.5) / height
        if panel["type"] == "row":
            fig.text(
                0.005,
                1 - top - 0.5 / height,
                panel["title"].replace("$node", window.variables.get("node", "")),
                color="white",
                fontsize=11,
                weight="bold",
                va="center",
            )
            continue
        has_legend = panel["type"] == "timeseries"
        left = pos["x"] / 24 + 0.035 / (24 / 24)
        width = pos["w"] / 24 - 0.045 - (0.09 * pos["w"] / 24 if has_legend else 0)
        bottom = 1 - (pos["y"] + 1.5 + pos["h"]) / height + 0.5 / height
        ax = fig.add_axes((left, bottom, max(width, 0.02), pos["h"] / height - 1.1 / height))
        title = panel["title"].replace("$node", window.variables.get("node", ""))
        style(ax, title)
        try:
            results = [(t, run_target(api, t, window)) for t in panel.get("targets", [])]
        except Exception as exc:  # a failing query is drawn, not fatal: the picture shows which one
            message(ax, f"query failed: {exc}"[:120])
            continue
        kind = panel["type"]
        if kind == "timeseries":
            draw_timeseries(ax, panel, results, window)
        elif kind == "stat":
            draw_stat(ax, panel, results)
        elif kind == "table":
            draw_table(ax, panel, results)
        elif kind == "state-timeline":
            draw_state_timeline(ax, panel, results, window)
        elif kind == "heatmap":
            draw_heatmap(ax, panel, results, window)
        else:
            message(ax, f"({kind} panel)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70, facecolor=COLORS["background"])
    plt.close(fig)
    return out
