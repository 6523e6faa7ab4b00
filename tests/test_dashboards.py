"""The Grafana dashboards (grafana/dashboards/*.json): generated from grafana/generate.py, structurally sound for
Grafana's current schema, every panel on the datasource variable, and every query valid PromQL over the metrics
contract (docs/metrics.md) and the recording rules (alerts/*.rules.yml)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import promql_parser
import pytest
import yaml
from contract import documented

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # grafana/ is not an installed package: the generator is a dev tool

from grafana_foundation_sdk.models import dashboard as dm  # noqa: E402

from grafana import generate, queries  # noqa: E402

DASHBOARDS = queries.dashboards()
ALL_QUERIES = [q for d in DASHBOARDS.values() for q in queries.panel_queries(d)]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Panel types Grafana ships (the SDK has a schema for each); a typo would render as "panel plugin not found".
PANEL_TYPES = {"timeseries", "stat", "table", "heatmap", "state-timeline", "bargauge", "barchart", "text"}
# Prometheus's own series a dashboard may use besides the contract: firing and pending alerts.
PROMETHEUS_BUILTIN = {"ALERTS"}
RATE_SENTINEL = "7777s"  # stands for $__rate_interval: every range in a panel query must be it


def recording_rules() -> dict[str, str]:
    """Recording rule name → expression, from alerts/*.rules.yml."""
    out = {}
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    out[rule["record"]] = rule["expr"]
    return out


CONTRACT = documented()
RULES = recording_rules()


def contract_metric(name: str) -> str | None:
    """The docs/metrics.md name a series name belongs to (histograms by base name), or None."""
    if name in CONTRACT:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in CONTRACT:
            return name.removesuffix(suffix)
    return None


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def ranges(expr: str) -> list[str]:
    """The range of every range selector, in seconds (\"300s\")."""
    found: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.MatrixSelector):
            found.append(f"{node.range.total_seconds():.0f}s")

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def parsed(expr: str) -> str:
    return queries.substitute(expr, {"__rate_interval": RATE_SENTINEL})


def query_id(q: queries.PanelQuery) -> str:
    return f"{q.dashboard}/{q.panel}/{q.ref_id}"


# ------------------------------------------------------------------------------------ generated artifact


@pytest.mark.parametrize("name", sorted(generate.DASHBOARDS))
def test_committed_json_is_what_the_generator_builds(name: str) -> None:
    committed = (queries.DASHBOARD_DIR / name).read_text()
    assert committed == generate.render(generate.DASHBOARDS[name]), f"{name} is stale: run `make dashboards`"


def test_every_committed_dashboard_has_a_generator() -> None:
    assert set(DASHBOARDS) == set(generate.DASHBOARDS)


def test_generate_check_reports_a_stale_dashboard(tmp_path: Path) -> None:
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "netpath-node.json").write_text("{}")
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1


# ------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_reads_back_unchanged_through_the_schema_models(name: str) -> None:
    """Every field is one Grafana's dashboard and panel schemas know, with the plugin defaults filled in."""
    data = DASHBOARDS[name]
    assert generate.canonical(data) == data


def test_uids_are_stable_and_unique() -> None:
    uids = [d["uid"] for d in DASHBOARDS.values()]
    assert sorted(uids) == sorted([generate.OVERVIEW_UID, generate.NODE_UID])
    assert len(set(uids)) == len(uids)
    for uid in uids:
        assert re.fullmatch(r"[a-z0-9-]{1,40}", uid), uid


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_current_schema_version_and_conventions(name: str) -> None:
    data = DASHBOARDS[name]
    assert data["schemaVersion"] == dm.Dashboard().schema_version >= 39, "the current Grafana dashboard schema"
    assert generate.TAG in data["tags"]
    assert data["title"] and data["description"]
    assert "id" not in data or data["id"] is None, "an id is the database row of one Grafana; uids travel"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables_datasource_cluster_node(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    cluster, node = variables["cluster"], variables["node"]
    assert cluster["type"] == node["type"] == "query"
    # the cluster label exists only with external labels/relabeling: All must match series without it
    assert cluster["includeAll"] and cluster["allValue"] == ".*"
    assert cluster["query"]["query"] == "label_values(netpath_targets, cluster)"
    assert node["query"]["query"] == 'label_values(netpath_targets{cluster=~"$cluster"}, source_node)'
    for variable in (cluster, node):
        assert variable["datasource"] == DATASOURCE
    assert variables["runbook_base"]["type"] == "constant"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_and_query_uses_the_datasource_variable(name: str) -> None:
    for panel in queries.panels(DASHBOARDS[name]):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, f"{panel['title']}/{target['refId']}"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_are_well_formed_and_laid_out_without_overlap(name: str) -> None:
    data = DASHBOARDS[name]
    all_panels = data["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    occupied: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] >= 1 and pos["x"] + pos["w"] <= 24, panel["title"]
        assert pos["h"] >= 1 and pos["y"] >= 0
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in occupied, f"{panel['title']} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["title"] and panel["description"], f"panel {panel['id']} needs a title and a description"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), f"{panel['title']}: duplicate refIds"


def test_runbook_links_share_the_alerts_runbook_base() -> None:
    alerts = yaml.safe_load((ROOT / "alerts" / "alerts.rules.yml").read_text())
    urls = [r["annotations"]["runbook_url"] for g in alerts["groups"] for r in g["rules"] if "alert" in r]
    assert urls and all(u.startswith(generate.RUNBOOK_BASE + "/") for u in urls)
    overview = DASHBOARDS["netpath-overview.json"]
    text = json.dumps(overview)
    assert "${runbook_base}/${__data.fields.alertname}.md" in text
    assert any(link.get("url") == "${runbook_base}" for link in overview["links"])


def test_overview_shows_what_the_issue_asks_for() -> None:
    titles = [p["title"] for p in queries.panels(DASHBOARDS["netpath-overview.json"])]
    text = "\n".join(titles)
    for wanted in (
        "Success by path class",
        "p50 latency",
        "p99 latency",
        "source node → target node",
        "Pod IP success by source node",
        "ClusterIP success by source node",
        "via the kube-dns Service",
        "status code",
        "Localizer verdicts",
        "Alerts",
        "SYN retransmits",
    ):
        assert wanted in text, wanted


def test_pod_ip_matrix_pivots_source_by_target() -> None:
    (panel,) = [p for p in queries.panels(DASHBOARDS["netpath-overview.json"]) if "target node" in p["title"]]
    assert panel["type"] == "table"
    pivot = panel["transformations"][0]
    assert pivot["id"] == "groupingToMatrix"
    assert (pivot["options"]["rowField"], pivot["options"]["columnField"]) == ("source_node", "target_node")
    assert 'path="pod_ip"' in panel["targets"][0]["expr"]


# ------------------------------------------------------------------------------------------------- PromQL


@pytest.mark.parametrize("q", ALL_QUERIES, ids=query_id)
def test_query_parses_as_promql(q: queries.PanelQuery) -> None:
    promql_parser.parse(parsed(q.expr))


@pytest.mark.parametrize("q", ALL_QUERIES, ids=query_id)
def test_query_uses_only_contract_metrics_and_recording_rules(q: queries.PanelQuery) -> None:
    for selector in selectors(parsed(q.expr)):
        name = selector.name
        assert name, f"selector without a metric name: {selector}"
        assert contract_metric(name) or name in RULES or name in PROMETHEUS_BUILTIN, (
            f"{name} is neither in docs/metrics.md nor a recording rule in alerts/"
        )


@pytest.mark.parametrize("q", ALL_QUERIES, ids=query_id)
def test_query_matches_only_labels_the_metric_has(q: queries.PanelQuery) -> None:
    """A typo in a label name matches nothing and shows an empty panel; `cluster` is the external label."""
    for selector in selectors(parsed(q.expr)):
        metric = contract_metric(selector.name or "")
        if metric is None:
            continue
        labels = CONTRACT[metric] | {"cluster", "le"}
        for matcher in selector.matchers.matchers:
            assert matcher.name in labels, f"{selector.name} has no label {matcher.name}"


@pytest.mark.parametrize("q", ALL_QUERIES, ids=query_id)
def test_per_target_queries_follow_the_perspective_variable(q: queries.PanelQuery) -> None:
    for selector in selectors(parsed(q.expr)):
        metric = contract_metric(selector.name or "")
        if metric is not None and "from" in CONTRACT[metric]:
            assert any(m.name == "from" for m in selector.matchers.matchers), f"{selector.name}: no from=~$from"
        names = {m.name for m in selector.matchers.matchers}
        assert "cluster" in names, f"{selector.name}: no cluster=~$cluster"


@pytest.mark.parametrize("q", ALL_QUERIES, ids=query_id)
def test_query_ranges_are_the_rate_interval(q: queries.PanelQuery) -> None:
    assert "$__rate_interval" in q.expr or not ranges(parsed(q.expr))
    assert set(ranges(parsed(q.expr))) <= {RATE_SENTINEL}, "use $__rate_interval, not a fixed window"


def test_variable_queries_use_contract_metrics() -> None:
    for data in DASHBOARDS.values():
        for text in queries.variable_queries(data):
            selector, label = queries.label_values_selector(text)
            (vs,) = selectors(queries.substitute(selector))
            assert vs.name in CONTRACT
            assert label in CONTRACT[vs.name] | {"cluster"}


def test_unknown_variable_is_an_error_naming_it() -> None:
    with pytest.raises(KeyError, match=r"\$nosuch"):
        queries.substitute('up{a="$nosuch"}')
