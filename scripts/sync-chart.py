#!/usr/bin/env python3
"""Copy the Prometheus rules (alerts/*.rules.yml) and the Grafana dashboards (grafana/**/*.json) into the Helm
chart's files/ folder, or with --check report where the copies differ from their sources.

Helm reads only files inside the chart, so the chart carries copies; alerts/ and grafana/ stay the sources of
truth. tests/test_chart.py runs the check, so a rule or dashboard changed without `make chart-sync` fails the
tests instead of shipping a stale chart.

Usage: scripts/sync-chart.py [--check]      exit 0: in sync (or synced); 1: --check found differences
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHART_FILES = REPO / "charts" / "netpath-exporter" / "files"


@dataclass(frozen=True)
class Copy:
    source: Path
    destination: Path


def _is_dashboard(path: Path) -> bool:
    """A Grafana dashboard is a JSON object with panels; other JSON under grafana/ (none today) is not shipped."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "panels" in doc


def planned_copies(repo: Path = REPO) -> dict[str, list[Copy]]:
    """Every file the chart should carry, by destination folder (alerts, dashboards)."""
    files = repo / "charts" / "netpath-exporter" / "files"
    rules = [Copy(p, files / "alerts" / p.name) for p in sorted((repo / "alerts").glob("*.rules.yml"))]
    dashboards: list[Copy] = []
    seen: dict[str, Path] = {}
    for p in sorted((repo / "grafana").rglob("*.json")):
        if not _is_dashboard(p):
            continue
        if p.name in seen:  # the chart's folder is flat: one ConfigMap per file name
            raise SystemExit(f"sync-chart: {p} and {seen[p.name]} have the same file name")
        seen[p.name] = p
        dashboards.append(Copy(p, files / "dashboards" / p.name))
    return {"alerts": rules, "dashboards": dashboards}


def differences(repo: Path = REPO) -> list[str]:
    """What --check reports: copies missing or different, and chart files whose source is gone."""
    problems: list[str] = []
    files = repo / "charts" / "netpath-exporter" / "files"
    for folder, copies in planned_copies(repo).items():
        wanted = {c.destination for c in copies}
        for c in copies:
            if not c.destination.exists():
                problems.append(f"missing: {c.destination.relative_to(repo)} (from {c.source.relative_to(repo)})")
            elif c.destination.read_bytes() != c.source.read_bytes():
                problems.append(f"differs: {c.destination.relative_to(repo)} from {c.source.relative_to(repo)}")
        present = (files / folder).glob("*") if (files / folder).is_dir() else iter(())
        problems += [f"stale: {p.relative_to(repo)} (no source)" for p in sorted(present) if p not in wanted]
    return problems


def sync(repo: Path = REPO) -> list[str]:
    """Make the chart's copies equal their sources; returns what changed."""
    changed = differences(repo)
    files = repo / "charts" / "netpath-exporter" / "files"
    for folder, copies in planned_copies(repo).items():
        (files / folder).mkdir(parents=True, exist_ok=True)
        wanted = {c.destination for c in copies}
        for stale in (files / folder).glob("*"):
            if stale not in wanted:
                stale.unlink()
        for c in copies:
            data = c.source.read_bytes()
            if not c.destination.exists() or c.destination.read_bytes() != data:
                c.destination.write_bytes(data)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for line in problems:
            print(line)
        if problems:
            print("chart copies are out of date: run `make chart-sync`", file=sys.stderr)
            return 1
        print("chart copies of alerts/ and grafana/ are in sync")
        return 0
    for line in sync():
        print(f"synced ({line})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
