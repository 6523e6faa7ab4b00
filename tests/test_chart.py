"""The Helm chart (charts/netpath-exporter), rendered and linted by real Helm (helm-python-sdk: Helm's Go SDK,
no helm binary), for the defaults and a matrix of values.

Every rendered object validates against the Kubernetes OpenAPI schemas (kubernetes-validate, strict) and the
monitoring objects against the prometheus-operator CRDs' own schemas (read from ../shared/crds/); the rules and
dashboards the chart ships equal alerts/ and grafana/; the rendered config passes `netpath-exporter
check-config`; the RBAC is exactly docs/discovery.md's. Rendering only: no cluster, a few seconds in all.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "netpath-exporter"
# ../shared/crds beside the repository, or beside the folder of worktrees a checkout may sit in (../../).
CRDS = next(
    (p for p in (REPO.parent / "shared" / "crds", REPO.parent.parent / "shared" / "crds") if p.is_dir()),
    REPO.parent / "shared" / "crds",
)
# K3s's stable channel and the newest minor kubernetes-validate bundles at the time of writing are 1.34+.
KUBE_VERSION = "1.34"
RELEASE, NAMESPACE = "netpath-exporter", "monitoring"

OPERATOR_ON = {"prometheus": {"monitor": {"enabled": True}, "rules": {"enabled": True}}}
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "servicemonitor-and-rules": OPERATOR_ON,
    "podmonitor": {"prometheus": {"monitor": {"enabled": True, "kind": "PodMonitor"}}},
    "monitors-off": {
        "prometheus": {"monitor": {"enabled": False}, "rules": {"enabled": False}, "scrapeAnnotations": False}
    },
    "node-perspective": {**OPERATOR_ON, "nodePerspective": {"enabled": True}},
    "node-facts-of-host": {"nodeFacts": {"hostNetworkNamespace": True}},
    "node-everything": {"nodePerspective": {"enabled": True}, "nodeFacts": {"hostNetworkNamespace": True}},
    "dashboards-off": {**OPERATOR_ON, "grafana": {"dashboards": {"enabled": False}}},
    "restricted": {
        "networkPolicy": {"enabled": True, "nodeCIDRs": ["192.168.1.0/24"]},
        "nodeFacts": {"enabled": False},
        "cluster": {"dnsServiceIP": "", "kubernetesServiceIP": "", "ingressControllerService": ""},
        "probes": {"peers": {"k": "all"}, "services": False, "dns": {"transports": ["udp"], "names": ["example.com"]}},
        "priorityClassName": "system-node-critical",
        "image": {"digest": "sha256:" + "0" * 64},
    },
    "other-release-name": {**OPERATOR_ON, "fullnameOverride": "np", "serviceAccount": {"name": "np-sa"}},
    "kube-prometheus-stack": {"prometheus": {"stack": "kube-prometheus-stack"}},
    "knobs": {
        "prometheus": {
            "stack": "kube-prometheus-stack",
            "monitor": {
                "jobLabel": "app.kubernetes.io/instance",
                "honorLabels": True,
                "additionalLabels": {"team": "network"},
                "relabelings": [{"action": "replace", "targetLabel": "cluster", "replacement": "lab"}],
                "metricRelabelings": [
                    {"action": "drop", "sourceLabels": ["__name__"], "regex": "netpath_tcp_rtt_seconds"}
                ],
            },
            "rules": {
                "disabled": {"NetpathLatencyDegraded": True, "NetpathSynRetransmitsRising": True},
                "additionalLabels": {"team": "network", "severity": "ignored"},
                "runbookUrl": "https://runbooks.example.com/netpath",
                "keepFiringFor": "15m",
            },
        }
    },
    "narrow-discovery": {
        "cluster": {"podCIDRs": ["10.52.0.0/16"], "serviceCIDRs": ["10.53.0.0/16", "fd00:43::/108"]},
        "probes": {"namespaces": {"allow": ["shop", "platform"], "deny": ["kube-system"]}},
        "log": {"level": "debug", "format": "json"},
    },
    "podmonitor-knobs": {
        "podLabels": {"team": "network"},
        "prometheus": {
            "stack": "kube-prometheus-stack",
            "monitor": {
                "kind": "PodMonitor",
                "jobLabel": "team",
                "metricRelabelings": [{"action": "labeldrop", "regex": "x"}],
            },
            "rules": {"keepFiringFor": "0s"},
        },
    },
}


# --- rendering ---------------------------------------------------------------------------------------------


@cache
def _render(case: str, release: str = RELEASE) -> tuple[dict[str, Any], ...]:
    values = MATRIX[case]
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(values))
        manifests = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    yaml_files = [text for path, text in sorted(manifests.items()) if path.endswith(".yaml")]  # not NOTES.txt
    return tuple(doc for text in yaml_files for doc in yaml.safe_load_all(text) if doc)


@cache
def notes(case: str) -> str:
    values = MATRIX[case]
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def render(case: str) -> list[dict[str, Any]]:
    return list(_render(case))


def objects(case: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(case) if o["kind"] == kind]


def one(case: str, kind: str) -> dict[str, Any]:
    found = objects(case, kind)
    assert len(found) == 1, f"{case}: expected one {kind}, got {len(found)}"
    return found[0]


def rendered_config(case: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for cm in objects(case, "ConfigMap"):
        if "config.yaml" in cm["data"]:
            config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config, f"{case}: no ConfigMap with config.yaml"
    return config


def pod_spec(case: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(case, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(case: str) -> dict[str, Any]:
    c: dict[str, Any] = pod_spec(case)["containers"][0]
    return c


# --- Helm: lint, schema --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MATRIX)
def test_chart_lints_clean(case: str) -> None:
    report = helm.lint(CHART, MATRIX[case], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "values, field",
    [
        ({"port": "10047x"}, "/port"),
        ({"prometheus": {"monitor": {"enabled": "yes"}}}, "/prometheus/monitor/enabled"),
        ({"prometheus": {"monitor": {"kind": "Probe"}}}, "/prometheus/monitor/kind"),
        ({"cluster": {"dnsServiceIP": "10.43.0"}}, "/cluster/dnsServiceIP"),
        ({"probes": {"interval": "10 seconds"}}, "/probes/interval"),
        ({"nodePerspektive": {"enabled": True}}, "nodePerspektive"),
        ({"prometheus": {"stack": "kube-prometheus"}}, "/prometheus/stack"),
        ({"prometheus": {"rules": {"keepFiringFor": "5 minutes"}}}, "/prometheus/rules/keepFiringFor"),
        ({"prometheus": {"rules": {"disabled": {"NetpathX": "yes"}}}}, "/prometheus/rules/disabled/NetpathX"),
        ({"prometheus": {"monitor": {"honorLabels": "no"}}}, "/prometheus/monitor/honorLabels"),
        ({"cluster": {"domain": "..."}}, "/cluster/domain"),
        ({"cluster": {"podCIDRs": ["localhost"]}}, "/cluster/podCIDRs/0"),
        ({"cluster": {"serviceCIDRs": []}}, "/cluster/serviceCIDRs"),
        ({"probes": {"namespaces": {"allow": ["Kube_System"]}}}, "/probes/namespaces/allow/0"),
        ({"log": {"level": "verbose"}}, "/log/level"),
    ],
)
def test_values_schema_names_the_bad_field(values: dict[str, Any], field: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=re.escape(field)):
        chart.validate_schema(chart.merge_values(values))


# --- every object valid --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MATRIX)
def test_every_object_validates_against_the_kubernetes_schemas(case: str) -> None:
    for obj in render(case):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: validated against their own schemas below
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    if not CRDS.is_dir():
        pytest.skip(f"prometheus-operator CRDs not found at {CRDS} (../shared/crds relative to the repository)")
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd.get("kind") == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
            schema: dict[str, Any] = _python_patterns(version["schema"]["openAPIV3Schema"])
            return schema
    pytest.skip(f"no CRD for {kind} in {CRDS}")


def _python_patterns(node: Any) -> Any:
    """The CRDs' patterns are Go regexps; the one construct Python's re rejects is a flag group after `^`
    (`^(?i)(abort|warn)?$`): move it to the front, where both read it the same."""
    if isinstance(node, dict):
        fixed = {k: _python_patterns(v) for k, v in node.items()}
        if isinstance(fixed.get("pattern"), str) and fixed["pattern"].startswith("^(?i)"):
            fixed["pattern"] = "(?i)^" + fixed["pattern"][len("^(?i)") :]
        return fixed
    if isinstance(node, list):
        return [_python_patterns(v) for v in node]
    return node


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """OpenAPI v3 structural schema, checked as JSON Schema draft 7 (the x-kubernetes-* keys are ignored)."""
    schema = crd_schema(obj["kind"])
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER).validate(obj)


@pytest.mark.parametrize("case", MATRIX)
def test_monitoring_objects_validate_against_their_crds(case: str) -> None:
    for obj in render(case):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            validate_custom_resource(obj)


def test_crd_validation_catches_a_bad_monitor() -> None:
    monitor = json.loads(json.dumps(one("servicemonitor-and-rules", "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["interval"] = "thirty seconds"
    with pytest.raises(jsonschema.ValidationError, match="thirty seconds"):
        validate_custom_resource(monitor)


# --- monitoring toggles --------------------------------------------------------------------------------------


def test_operator_objects_follow_their_toggles_and_auto_detection() -> None:
    kinds = lambda case: {o["kind"] for o in render(case)}  # noqa: E731
    # auto: `helm template` offline serves no monitoring.coreos.com API, so nothing that would fail to install.
    assert not kinds("defaults") & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds("servicemonitor-and-rules")
    assert "PodMonitor" in kinds("podmonitor") and "ServiceMonitor" not in kinds("podmonitor")
    assert not kinds("monitors-off") & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    # auto with prometheus.stack=kube-prometheus-stack: on, also offline (helm template, GitOps).
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds("kube-prometheus-stack")


@pytest.mark.parametrize(
    "case, rendered, not_rendered",
    [
        ("defaults", [], ["ServiceMonitor", "PrometheusRule"]),
        ("kube-prometheus-stack", ["ServiceMonitor", "PrometheusRule"], []),
        ("monitors-off", [], ["ServiceMonitor", "PrometheusRule"]),
        ("podmonitor", ["PodMonitor"], ["PrometheusRule"]),
    ],
)
def test_notes_say_what_was_and_was_not_rendered_and_why(
    case: str, rendered: list[str], not_rendered: list[str]
) -> None:
    text = notes(case)
    for kind in rendered:
        assert re.search(rf"^  rendered: +{kind} ", text, re.M), text
    for kind in not_rendered:
        line = re.search(rf"^  not rendered: {kind} \((.*)\)", text, re.M)
        assert line, text
        if case == "defaults":
            assert "prometheus.stack=kube-prometheus-stack" in line[1], "the way to turn it on"


@pytest.mark.parametrize("case", ["servicemonitor-and-rules", "podmonitor"])
def test_monitor_scrapes_each_exporter_once_as_job_netpath_exporter_with_a_node_label(case: str) -> None:
    monitor = next(o for o in render(case) if o["kind"] in ("ServiceMonitor", "PodMonitor"))
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == ["metrics"]
    relabel = {r["targetLabel"]: r for r in endpoints[0]["relabelings"]}
    assert relabel["job"]["replacement"] == "netpath-exporter"  # what the alerts select: up{job="netpath-exporter"}
    assert relabel["node"]["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    if monitor["kind"] == "ServiceMonitor":
        matching = [s for s in objects(case, "Service") if selector.items() <= s["metadata"]["labels"].items()]
        assert [s["spec"].get("clusterIP") for s in matching] == ["None"], "exactly the headless Service"
    else:
        assert selector.items() <= one(case, "DaemonSet")["spec"]["template"]["metadata"]["labels"].items()


def test_scrape_annotations_for_prometheus_without_the_operator() -> None:
    annotations = one("defaults", "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "10047"
    assert "prometheus.io/scrape" not in one("monitors-off", "DaemonSet")["spec"]["template"]["metadata"]["annotations"]


# --- rules and dashboards equal their sources ----------------------------------------------------------------


def test_chart_copies_of_alerts_and_dashboards_are_in_sync() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sync-chart.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun: make chart-sync"


def source_rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted((REPO / "alerts").glob("*.rules.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def test_prometheusrule_groups_equal_alerts() -> None:
    rule = one("servicemonitor-and-rules", "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    expected = source_rule_groups()
    assert expected, "alerts/*.rules.yml has no groups"
    # The one change at default values: an absent() alert has no series to take a namespace from.
    for r in (r for g in expected for r in g["rules"] if r.get("alert") == "NetpathExportersAbsent"):
        r["labels"]["namespace"] = NAMESPACE
    assert rule["spec"]["groups"] == expected


def rendered_alerts(case: str) -> dict[str, dict[str, Any]]:
    groups = one(case, "PrometheusRule")["spec"]["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_rules_knobs_disable_label_relink_and_hold_alerts() -> None:
    source = {r["alert"]: r for g in source_rule_groups() for r in g["rules"] if "alert" in r}
    alerts = rendered_alerts("knobs")
    assert set(source) - set(alerts) == {"NetpathLatencyDegraded", "NetpathSynRetransmitsRising"}
    for name, alert in alerts.items():
        assert alert["labels"]["team"] == "network"
        assert alert["labels"]["severity"] == source[name]["labels"]["severity"], "additionalLabels never reroute"
        assert alert["annotations"]["runbook_url"] == f"https://runbooks.example.com/netpath/{name}.md"
        assert alert.get("keep_firing_for") == ("15m" if "keep_firing_for" in source[name] else None)
        if 'job="' in alert["expr"]:
            assert 'job="netpath-exporter"' in alert["expr"]  # release name == chart name: the instance label
    assert alerts["NetpathExportersAbsent"]["labels"]["namespace"] == NAMESPACE
    held = rendered_alerts("podmonitor-knobs")
    assert not [name for name, alert in held.items() if "keep_firing_for" in alert], "0s removes it"
    assert 'up{job="network"}' in held["NetpathExportersAbsent"]["expr"], "the job jobLabel gives"

    # Recording rules are never dropped: the dashboards read them.
    def recorded(case: str) -> list[str]:
        return [r["record"] for g in one(case, "PrometheusRule")["spec"]["groups"] for r in g["rules"] if "record" in r]

    assert recorded("knobs") == recorded("servicemonitor-and-rules")


def test_monitor_knobs_reach_the_monitor() -> None:
    monitor = one("knobs", "ServiceMonitor")
    assert monitor["metadata"]["labels"]["team"] == "network"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/instance"
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["honorLabels"] is True
    targets = [r["targetLabel"] for r in endpoint["relabelings"]]
    assert targets == ["node", "cluster"], "jobLabel replaces the forced job; the user's come last"
    assert endpoint["metricRelabelings"][0]["regex"] == "netpath_tcp_rtt_seconds"
    pod_monitor = one("podmonitor-knobs", "PodMonitor")
    assert pod_monitor["spec"]["jobLabel"] == "team"
    pod_endpoint = pod_monitor["spec"]["podMetricsEndpoints"][0]
    assert pod_endpoint["metricRelabelings"] == [{"action": "labeldrop", "regex": "x"}]
    assert one("servicemonitor-and-rules", "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"] is False


def test_job_label_that_the_target_does_not_carry_fails_naming_the_value() -> None:
    values = {"prometheus": {"stack": "kube-prometheus-stack", "monitor": {"jobLabel": "app"}}}
    with helm.Chart.load(CHART) as chart, pytest.raises(Exception, match=r"prometheus.monitor.jobLabel: \"app\""):
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_rules_extracted_from_the_rendered_chart(tmp_path: Path) -> None:
    rules_file = tmp_path / "netpath.rules.yml"
    groups = one("servicemonitor-and-rules", "PrometheusRule")["spec"]["groups"]
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def source_dashboards() -> dict[str, Any]:
    found = {}
    for path in sorted((REPO / "grafana").rglob("*.json")) if (REPO / "grafana").is_dir() else []:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "panels" in doc:
            found[path.name] = doc
    return found


@pytest.mark.parametrize("case", ["defaults", "dashboards-off"])
def test_dashboard_configmaps_equal_grafana_json(case: str) -> None:
    dashboards = [cm for cm in objects(case, "ConfigMap") if cm["metadata"]["labels"].get("grafana_dashboard") == "1"]
    if case == "dashboards-off":
        assert dashboards == []
        return
    shipped = {}
    for cm in dashboards:
        assert len(cm["data"]) == 1, "one dashboard per ConfigMap (the 1 MiB object limit)"
        ((name, text),) = cm["data"].items()
        shipped[name] = json.loads(text)
    assert shipped == source_dashboards()


# --- the config ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", MATRIX)
def test_rendered_config_passes_check_config(case: str, tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(rendered_config(case)))
    env = {"NODE_NAME": "k3s-node1", "POD_NAMESPACE": NAMESPACE, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(config_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_config_is_the_k3s_profile_with_discovery_wired_to_the_chart_objects() -> None:
    config = rendered_config("defaults")
    discovery = config["discovery"]
    assert discovery["dns"]["service"] == "kube-system/kube-dns"
    assert discovery["ingress"]["controller_service"] == "kube-system/traefik"
    assert discovery["cluster_domain"] == "cluster.local"
    static = {t["name"]: t for t in config["targets"]}
    assert static["dns/kube-dns/kubernetes.default.svc.cluster.local"]["address"] == "10.43.0.10"
    assert static["svc/default/kubernetes:443"]["address"] == "10.43.0.1:443"
    # The own Service discovery probes is the chart's ClusterIP Service, on the exporter port.
    cluster_ip_services = [s for s in objects("defaults", "Service") if s["spec"].get("clusterIP") != "None"]
    assert [s["metadata"]["name"] for s in cluster_ip_services] == [discovery["service"]]
    assert cluster_ip_services[0]["spec"]["ports"][0]["port"] == discovery["service_port"] == 10047
    # Peers: the selector matches the DaemonSet's pods, and nothing else's (this release only).
    pod_labels = one("defaults", "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    selector = dict(term.split("=") for term in discovery["peers"]["label_selector"].split(","))
    assert selector.items() <= pod_labels.items() and "app.kubernetes.io/instance" in selector
    # source_node and the namespace come from the downward API, not the file.
    assert "source_node" not in config and "namespace" not in discovery


def test_discovery_probes_only_the_cluster_s_ranges_and_allowed_namespaces() -> None:
    defaults = rendered_config("defaults")["discovery"]
    assert (defaults["pod_cidrs"], defaults["service_cidrs"]) == (["10.42.0.0/16"], ["10.43.0.0/16"])  # K3s
    assert defaults["namespaces"] == {"allow": [], "deny": []}
    narrow = rendered_config("narrow-discovery")["discovery"]
    assert narrow["pod_cidrs"] == ["10.52.0.0/16"] and narrow["service_cidrs"] == ["10.53.0.0/16", "fd00:43::/108"]
    assert narrow["namespaces"] == {"allow": ["shop", "platform"], "deny": ["kube-system"]}


def test_log_level_and_format_reach_the_exporter() -> None:
    assert container("defaults")["args"][-4:] == ["--log-level", "info", "--log-format", "text"]
    assert container("narrow-discovery")["args"][-4:] == ["--log-level", "debug", "--log-format", "json"]


def test_config_with_another_release_name_probes_that_release_s_service() -> None:
    config = rendered_config("other-release-name")
    assert config["discovery"]["service"] == "np"
    assert one("other-release-name", "DaemonSet")["spec"]["template"]["spec"]["serviceAccountName"] == "np-sa"


def test_profile_targets_can_be_left_to_discovery() -> None:
    config = rendered_config("restricted")
    assert "targets" not in config
    assert config["discovery"]["ingress"] is False
    assert config["node_facts"]["enabled"] is False


# --- RBAC equals docs/discovery.md ---------------------------------------------------------------------------


def documented_rbac() -> dict[str, list[dict[str, Any]]]:
    doc = (REPO / "docs" / "discovery.md").read_text()
    section = doc.split("## RBAC", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block, "docs/discovery.md: no yaml block in the RBAC section"
    return {o["kind"]: o["rules"] for o in yaml.safe_load_all(block.group(1)) if o}


@pytest.mark.parametrize("case", ["defaults", "node-everything"])
def test_rbac_grants_exactly_the_documented_rules(case: str) -> None:
    documented = documented_rbac()
    assert set(documented) == {"ClusterRole", "Role"}
    assert one(case, "ClusterRole")["rules"] == documented["ClusterRole"]
    assert one(case, "Role")["rules"] == documented["Role"]
    assert one(case, "Role")["metadata"]["namespace"] == NAMESPACE
    for binding_kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(case, binding_kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": one(case, role_kind)["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": pod_spec(case)["serviceAccountName"], "namespace": NAMESPACE}
        ]


# --- the DaemonSet -------------------------------------------------------------------------------------------


def test_daemonset_runs_on_every_node_with_the_downward_api() -> None:
    spec = pod_spec("defaults")
    assert {"operator": "Exists"} in spec["tolerations"]  # control-plane and tainted nodes too
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container("defaults")["env"]}
    assert env["NODE_NAME"] == "spec.nodeName"
    assert env["POD_NAMESPACE"] == "metadata.namespace"
    assert env["POD_IP"] == "status.podIP"
    daemonset = one("defaults", "DaemonSet")["spec"]
    assert daemonset["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert pod_spec("restricted")["priorityClassName"] == "system-node-critical"
    assert container("restricted")["image"].endswith("@sha256:" + "0" * 64)


def test_resources_follow_the_benchmarks_and_leave_cpu_unlimited() -> None:
    resources = container("defaults")["resources"]
    assert resources["requests"] == {"cpu": "20m", "memory": "64Mi"}
    assert "cpu" not in resources["limits"]  # throttling would show up as path latency
    assert container("node-perspective")["resources"]["requests"]["memory"] == "112Mi"  # a second process


def test_default_install_is_non_root_without_capabilities() -> None:
    spec, ctx = pod_spec("defaults"), container("defaults")["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 65534
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert "hostPID" not in spec and "hostNetwork" not in spec
    assert "netns" not in rendered_config("defaults")["node_facts"]
    assert rendered_config("defaults")["node_perspective"]["enabled"] is False


@pytest.mark.parametrize(
    "case, capabilities, facts_netns, perspective",
    [
        ("node-perspective", ["SYS_ADMIN", "SYS_PTRACE"], None, True),
        ("node-facts-of-host", ["SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN"], "/proc/1/ns/net", False),
        ("node-everything", ["SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN"], "/proc/1/ns/net", True),
    ],
)
def test_node_side_features_add_only_what_they_need(
    case: str, capabilities: list[str], facts_netns: str | None, perspective: bool
) -> None:
    spec, ctx = pod_spec(case), container(case)["securityContext"]
    assert spec["hostPID"] is True
    assert spec["securityContext"]["runAsUser"] == 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": capabilities}
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    config = rendered_config(case)
    assert config["node_facts"].get("netns") == facts_netns
    assert config["node_perspective"] == {"enabled": perspective, "netns": "/proc/1/ns/net"}


def test_network_policy_admits_peers_prometheus_and_nodes_on_the_exporter_port_only() -> None:
    assert objects("defaults", "NetworkPolicy") == []
    policy = one("restricted", "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]  # egress open: a prober reaches what it probes
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert {"ipBlock": {"cidr": "192.168.1.0/24"}} in rule["from"]
    assert any("podSelector" in peer and "namespaceSelector" not in peer for peer in rule["from"])


# --- the documented install works ----------------------------------------------------------------------------


def test_readme_and_install_doc_commands_render() -> None:
    """The helm commands in README.md's install section and docs/install.md name this chart and values that
    exist: every --set renders and validates."""
    readme = (REPO / "README.md").read_text()
    install = readme.split("## Install on Kubernetes", 1)[1].split("\n## ", 1)[0]
    text = install + (REPO / "docs" / "install.md").read_text()
    commands = [c for c in re.findall(r"^\s*(helm (?:install|upgrade)[^\n]*(?:\\\n[^\n]*)*)", text, re.M)]
    assert any("helm install netpath-exporter charts/netpath-exporter -n monitoring" in c for c in commands)
    for command in commands:
        sets = re.findall(r"--set(?:-string)? ([^\s\\]+)", command)
        values: dict[str, Any] = {}
        for assignment in sets:
            values = _merge(values, helm.parse_set_string(assignment))
        with helm.Chart.load(CHART) as chart:
            chart.validate_schema(chart.merge_values(values))
            manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
        for path, text_ in manifests.items():
            for obj in yaml.safe_load_all(text_) if path.endswith(".yaml") else []:
                if obj and not obj["apiVersion"].startswith("monitoring.coreos.com/"):
                    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        both_maps = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_maps else value
    return merged


def test_values_table_in_the_chart_readme_lists_every_value() -> None:
    documented_whole = (
        "labels",
        "Labels",
        "Selector",
        "annotations",
        "Annotations",
        "resources",
        "affinity",
        "updateStrategy",
    )  # Kubernetes-shaped maps: one row each, not one per key

    def leaves(node: Any, prefix: str = "") -> set[str]:
        if isinstance(node, dict) and node and not prefix.endswith(documented_whole):
            return set().union(*(leaves(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()))
        return {prefix}

    documented = set(re.findall(r"^\| `([^`]+)` \|", (CHART / "README.md").read_text(), re.M))
    missing = leaves(yaml.safe_load((CHART / "values.yaml").read_text())) - documented
    assert not missing, f"values missing from charts/netpath-exporter/README.md: {sorted(missing)}"


# --- the image the chart runs (built by `make image` and .github/workflows/image.yml; run: tests/lab/test_image.py)


def test_image_workflow_publishes_the_image_and_tags_the_chart_pulls() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "image.yml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = workflow["env"]["IMAGE"].replace("${{ github.repository_owner }}", "netpath-exporter")
    assert image == values["image"]["repository"]
    steps = workflow["jobs"]["build"]["steps"]
    tags = next(s for s in steps if s.get("uses", "").startswith("docker/metadata-action"))["with"]["tags"]
    assert "type=semver,pattern={{version}}" in tags  # tag v0.1.0 -> :0.1.0, the chart's appVersion
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["appVersion"])


def test_dockerfile_is_non_root_on_a_supported_python_with_the_node_facts_tools() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    # Debian's own python3: bookworm's is 3.11 (the project's minimum), trixie's 3.13
    base = re.search(r"^ARG BASE_IMAGE=debian:(\w+)-slim$", dockerfile, re.M)
    assert base and base[1] in ("bookworm", "trixie")
    assert re.search(r"^USER 65534:65534$", dockerfile, re.M)
    assert re.search(r"^RUN apt-install-missing .*\bpython3\b.*\biptables\b.*\bnftables\b", dockerfile, re.M)
    assert 'ENTRYPOINT ["netpath-exporter"]' in dockerfile
