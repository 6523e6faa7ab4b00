"""The alert rules (alerts/), their promtool unit tests, the Alertmanager example and the runbooks.

Runs the real tools: `promtool check rules`, `promtool test rules` on every alerts/tests/*.yml and
`amtool check-config` on the example. Every alert carries the routing label and the annotations a pager
needs, and every name an expression reads is in the metrics contract (docs/metrics.md), a recording rule
defined in alerts/, or one of Prometheus's own series that docs/alerts.md lists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from contract import documented

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks"
OVERVIEW = ROOT / "docs" / "alerts.md"
SEVERITIES = {"critical", "warning", "info"}  # kubernetes-mixin's and kube-prometheus-stack's values
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself; listed in docs/alerts.md
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian: prometheus / prometheus-alertmanager; `make test` installs them)")
    return path


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)


def rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def selectors(node: Any) -> Iterator[Any]:
    """Every VectorSelector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    for child in children(node):
        yield from selectors(child)


def children(node: Any) -> list[Any]:
    """The sub-expressions of a parsed PromQL node."""
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] if node.param is None else [node.expr, node.param]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.UnaryExpr | promql_parser.ParenExpr | promql_parser.SubqueryExpr):
        return [node.expr]
    return []


def names_in(expr: str) -> set[str]:
    names = set()
    for sel in selectors(promql_parser.parse(expr)):
        name = sel.name or next((m.value for m in sel.matchers.matchers if m.name == "__name__"), None)
        assert name, f"selector without a metric name in {expr!r}"
        names.add(name)
    return names


def known_name(name: str, contract: set[str], records: set[str]) -> bool:
    if name in contract or name in records or name in PROMETHEUS_OWN:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in contract for s in HISTOGRAM_SUFFIXES)


def test_promtool_check_rules_passes() -> None:
    done = run([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    # All files at once: each replays hours of 1-minute evaluations, and they are independent.
    promtool = tool("promtool")
    assert UNIT_TESTS, "no alerts/tests/*.yml"
    running = {
        path.name: subprocess.Popen(
            [promtool, "test", "rules", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for path in UNIT_TESTS
    }
    failed = {}
    for name, child in running.items():
        out, _ = child.communicate(timeout=600)
        if child.returncode != 0:
            failed[name] = out
    assert failed == {}


def test_every_aggregation_and_match_keeps_the_namespace() -> None:
    # The exporter's namespace (a scrape target label) must reach every alert: kube-prometheus-stack's inhibit
    # rules match on [namespace, alertname] and an AlertmanagerConfig selects alerts by namespace (docs/alerts.md).
    dropped = {}
    for rule in rules():
        for kind, labels in groupings(promql_parser.parse(rule["expr"])):
            if "namespace" not in labels:
                dropped.setdefault(rule.get("alert") or rule.get("record"), []).append(f"{kind} ({', '.join(labels)})")
    assert dropped == {}


def groupings(node: Any) -> Iterator[tuple[str, list[str]]]:
    """Every `by (...)` of an aggregation and `on (...)` of a binary operation in a parsed expression."""
    if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
        if str(node.modifier).startswith("by"):
            yield "by", list(node.modifier.labels)
    elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
        matching = node.modifier.matching
        if matching is not None and str(matching).startswith("on"):
            yield "on", list(matching.labels)
    for child in children(node):
        yield from groupings(child)


def test_the_namespace_check_sees_a_dropped_namespace() -> None:
    expr = "sum by (namespace, a) (x) / on (a) count by (a) (y)"
    assert list(groupings(promql_parser.parse(expr))) == [("on", ["a"]), ("by", ["namespace", "a"]), ("by", ["a"])]


def test_amtool_accepts_the_alertmanager_example() -> None:
    done = run([tool("amtool"), "check-config", str(ALERTS / "alertmanager.example.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_severity_annotations_and_a_runbook() -> None:
    problems = []
    for alert in alerts():
        name = alert["alert"]
        if alert.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")
        annotations = alert.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not annotations.get(key):
                problems.append(f"{name}: no {key}")
        if not annotations.get("runbook_url", "").endswith(f"docs/runbooks/{name}.md"):
            problems.append(f"{name}: runbook_url must point at docs/runbooks/{name}.md")
        if not (RUNBOOKS / f"{name}.md").is_file():
            problems.append(f"{name}: docs/runbooks/{name}.md is missing")
    assert problems == []


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    fired = set()
    for path in UNIT_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for check in group.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    assert {a["alert"] for a in alerts()} - fired == set()


def test_every_alert_is_in_the_overview() -> None:
    text = OVERVIEW.read_text()
    assert [a["alert"] for a in alerts() if f"`{a['alert']}`" not in text] == []


def test_expressions_use_only_documented_metrics_and_recording_rules() -> None:
    contract, records = set(documented()), recorded()
    unknown = {}
    for rule in rules():
        for name in names_in(rule["expr"]):
            if not known_name(name, contract, records):
                unknown[name] = rule.get("alert") or rule.get("record")
    assert unknown == {}, "not in docs/metrics.md nor recorded in alerts/"


def test_template_queries_use_only_documented_metrics_and_recording_rules() -> None:
    contract, records = set(documented()), recorded()
    unknown = set()
    for alert in alerts():
        for text in alert.get("annotations", {}).values():
            for name in re.findall(r"\b((?:netpath|source_\w+|process)[a-z0-9_:]*)\{", text):
                if not known_name(name, contract, records):
                    unknown.add(name)
    assert unknown == set()


def test_prometheus_own_series_are_listed_in_the_overview() -> None:
    text = OVERVIEW.read_text()
    assert [name for name in PROMETHEUS_OWN if f"`{name}`" not in text] == []


def test_the_parser_sees_every_name_in_an_expression() -> None:
    expr = 'sum by (a) (rate(x_total{a="1"}[5m])) / on (a) group_left y or absent({__name__="z"}) unless -(w)'
    assert names_in(expr) == {"x_total", "y", "z", "w"}


# kube-prometheus-stack's default `alertmanager.config` (its values.yaml), in the shape a new install has it.
KUBE_PROMETHEUS_STACK_DEFAULT: dict[str, Any] = {
    "global": {"resolve_timeout": "5m"},
    "inhibit_rules": [
        {
            "source_matchers": ["severity = critical"],
            "target_matchers": ["severity =~ warning|info"],
            "equal": ["namespace", "alertname"],
        },
        {
            "source_matchers": ["severity = warning"],
            "target_matchers": ["severity = info"],
            "equal": ["namespace", "alertname"],
        },
        {
            "source_matchers": ["alertname = InfoInhibitor"],
            "target_matchers": ["severity = info"],
            "equal": ["namespace"],
        },
        {"target_matchers": ["alertname = InfoInhibitor"]},
    ],
    "route": {
        "group_by": ["namespace"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "12h",
        "receiver": "null",
        "routes": [{"receiver": "null", "matchers": ['alertname = "Watchdog"']}],
    },
    "receivers": [{"name": "null"}],
}
RECEIVER_BY_SEVERITY = {"critical": "netpath-pager", "warning": "netpath-tickets", "info": "null"}


def merged_into_kube_prometheus_stack(example: dict[str, Any]) -> dict[str, Any]:
    """The default config with the example's additions, merged as the example's header says: receivers and
    routes and inhibit rules appended after the defaults."""
    merged = yaml.safe_load(yaml.safe_dump(KUBE_PROMETHEUS_STACK_DEFAULT))
    for key in ("receivers", "inhibit_rules"):
        merged[key] += [item for item in example[key] if item not in merged[key]]
    merged["route"]["routes"] += [r for r in example["route"]["routes"] if r not in merged["route"]["routes"]]
    return merged


def test_alertmanager_example_is_kube_prometheus_stacks_default_plus_netpath_additions() -> None:
    example = yaml.safe_load((ALERTS / "alertmanager.example.yml").read_text())
    assert merged_into_kube_prometheus_stack(example) == example
    assert {k: v for k, v in example["route"].items() if k != "routes"} == {
        k: v for k, v in KUBE_PROMETHEUS_STACK_DEFAULT["route"].items() if k != "routes"
    }


def test_every_alert_routes_where_its_severity_says_in_kube_prometheus_stack(tmp_path: Path) -> None:
    amtool = tool("amtool")
    config = tmp_path / "alertmanager.yml"
    example = yaml.safe_load((ALERTS / "alertmanager.example.yml").read_text())
    config.write_text(yaml.safe_dump(merged_into_kube_prometheus_stack(example)))
    checked = run([amtool, "check-config", str(config)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    wrong = {}
    for alert in alerts():
        severity = alert["labels"]["severity"]
        labels = [f"alertname={alert['alert']}", f"severity={severity}", "namespace=monitoring", "source_node=node1"]
        done = run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={config}",
                f"--verify.receivers={RECEIVER_BY_SEVERITY[severity]}",
                *labels,
            ]
        )
        if done.returncode != 0:
            wrong[alert["alert"]] = done.stdout.strip() + done.stderr.strip()
    assert wrong == {}
    # And the test can fail: a critical alert does not land on the ticket receiver.
    done = run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={config}",
            "--verify.receivers=netpath-tickets",
            "alertname=NetpathCoreDNSDown",
            "severity=critical",
            "namespace=monitoring",
        ]
    )
    assert done.returncode != 0, done.stdout


def test_no_dns_answer_rules_count_the_localizers_silence_reasons_plus_nothing_listening() -> None:
    # One definition of "no DNS answer": the localizer's NO_ANSWER (silence) plus refused/reset (nothing listens on
    # 53), so NetpathCoreDNSDown and the coredns_down verdict cannot drift apart.
    from exporter.diagnose.window import NO_ANSWER
    from exporter.model import Reason

    expected = {r.value for r in NO_ANSWER} | {Reason.REFUSED.value, Reason.RESET.value}
    groups = yaml.safe_load((ALERTS / "recording.rules.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"] if r.get("record", "").startswith("netpath:probe_failures_no_dns")]
    assert len(rules) == 4  # 5m, 30m, 1h, 6h
    for rule in rules:
        (regex,) = re.findall(r'reason=~"([^"]+)"', rule["expr"])
        assert set(regex.split("|")) == expected, rule["record"]
