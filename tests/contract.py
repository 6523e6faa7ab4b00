"""Reading the Prometheus contract (docs/metrics.md) and an exposition, for the tests that hold them together."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def doc_sections() -> dict[str, str]:
    """docs/metrics.md by second-level heading."""
    parts = re.split(r"^## (.+)$", DOCS.read_text(), flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def documented(*sections: str) -> dict[str, set[str]]:
    """Metric name → label names from the tables of the named sections (all sections when none named)."""
    by_title = doc_sections()
    unknown = set(sections) - set(by_title)
    assert not unknown, f"docs/metrics.md has no section {unknown}"
    target_labels = set(re.findall(r"^\| `(\w+)` \|", by_title["Target labels"], re.M))
    out: dict[str, set[str]] = {}
    for title in sections or tuple(by_title):
        for name, labels in re.findall(r"^\| `(\w+)` \| \w+ \|([^|]*)\|", by_title[title], re.M):
            if not name.startswith(("netpath_", "process_")):
                continue
            names = set(re.findall(r"`(\w+)`", labels))
            if "*target labels*" in labels:
                names |= target_labels
            out[name] = names
    return out


def exposed(text: str) -> dict[str, set[str]]:
    """Metric name (counters with _total, histograms by base name) → label names seen on its samples."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = out.setdefault(name, set())
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
    return out
