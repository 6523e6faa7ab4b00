"""lab/operator_scrape.py: the prometheus-operator-style scrape jobs for the chart's monitors are valid
Prometheus config (`promtool check config`) and have the operator's shape. What they do to real series is
tests/lab/test_operator_scrape_live.py's part (a real Prometheus relabeling the lab's exporters)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import operator_scrape
from lab.operator_scrape import PodMeta, ServiceMeta

POD = PodMeta("np-abc", "monitoring", "node1", "10.42.0.5", "exporter", "metrics", 10047, {"app": "np", "team": "net"})
SERVICE = ServiceMeta("np-peers", "monitoring", {"app": "np", "app.kubernetes.io/component": "peers"})


def monitor(kind: str, **spec: Any) -> dict[str, Any]:
    endpoints = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
    endpoint = {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    endpoint["relabelings"] = [{"action": "replace", "targetLabel": "job", "replacement": "netpath-exporter"}]
    endpoint["metricRelabelings"] = [{"action": "labeldrop", "regex": "unused"}]
    return {
        "kind": kind,
        "metadata": {"name": "np", "namespace": "monitoring"},
        "spec": {"selector": {"matchLabels": {"app": "np"}}, endpoints: [endpoint], **spec},
    }


def test_service_monitor_job_has_the_operators_shape() -> None:
    job = operator_scrape.service_monitor_scrape_config(
        monitor("ServiceMonitor", jobLabel="app"), operator_scrape.endpoint_targets(SERVICE, [POD])
    )
    assert job["job_name"] == "serviceMonitor/monitoring/np/0" and job["honor_labels"] is False
    assert (job["scrape_interval"], job["scrape_timeout"], job["metrics_path"]) == ("30s", "10s", "/metrics")
    rules = job["relabel_configs"]
    assert rules[1] == {
        "action": "keep",
        "source_labels": ["__meta_kubernetes_service_label_app", "__meta_kubernetes_service_labelpresent_app"],
        "regex": "(np);true",
    }
    targets = [r["target_label"] for r in rules if "target_label" in r]
    # Order matters: the monitor's own relabelings come after the operator's target labels and job.
    assert targets.index("service") < targets.index("job") < len(targets) - 1 - targets[::-1].index("job")
    assert rules[-3] == {"action": "replace", "target_label": "job", "replacement": "netpath-exporter"}
    assert {"namespace", "service", "pod", "container", "endpoint", "node"} <= set(targets)
    assert job["metric_relabel_configs"] == [{"action": "labeldrop", "regex": "unused"}]
    labels = job["static_configs"][0]["labels"]
    assert labels["__meta_kubernetes_service_label_app_kubernetes_io_component"] == "peers"
    assert labels["__meta_kubernetes_endpoint_address_target_kind"] == "Pod"


def test_pod_monitor_job_reads_pod_labels_and_names_the_job_namespace_slash_name() -> None:
    job = operator_scrape.pod_monitor_scrape_config(monitor("PodMonitor"), operator_scrape.pod_targets([POD]))
    rules = job["relabel_configs"]
    assert rules[1]["source_labels"] == ["__meta_kubernetes_pod_label_app", "__meta_kubernetes_pod_labelpresent_app"]
    assert {"target_label": "job", "replacement": "monitoring/np"} in rules
    assert not [r for r in rules if r.get("target_label") == "service"], "pods have no Service"


def test_unsupported_relabel_fields_are_an_error_not_silently_dropped() -> None:
    with pytest.raises(ValueError, match="sourceLabel"):
        operator_scrape.relabel_from_crd([{"sourceLabel": ["x"]}])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
@pytest.mark.parametrize("kind", ["ServiceMonitor", "PodMonitor"])
def test_promtool_accepts_the_generated_jobs(kind: str, tmp_path: Path) -> None:
    if kind == "ServiceMonitor":
        job = operator_scrape.service_monitor_scrape_config(
            monitor(kind), operator_scrape.endpoint_targets(SERVICE, [POD]), interval="1s"
        )
    else:
        job = operator_scrape.pod_monitor_scrape_config(monitor(kind), operator_scrape.pod_targets([POD]))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    done = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


LAB_EXPORTERS = {
    f"node{i}": {"pod": f"netpath-exporter-n{i}", "ip": f"10.42.{i}.2", "metrics": f"http://10.42.{i}.2:10047/metrics"}
    for i in (1, 2, 3)
}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_the_lab_prometheus_config_is_the_chart_servicemonitor_job_and_rendered_rules(tmp_path: Path) -> None:
    # What every lab Prometheus runs (lab/monitoring.py): the operator's job for the chart's ServiceMonitor over
    # the exporter pods, and the rendered PrometheusRule's groups as the only rule file.
    from lab import monitoring
    from lab.topology import build

    topo = build(3, 1500, str(tmp_path / "state"), "every-node")
    topo = dataclasses.replace(topo, exporters=LAB_EXPORTERS)
    config = monitoring.prometheus_config(topo, rules_dir=tmp_path / "rules")
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "serviceMonitor/monitoring/netpath-exporter/0"
    # both chart Services' endpoints are offered, as discovery lists them; the relabeling keeps one per pod
    assert len(job["static_configs"]) == 2 * len(LAB_EXPORTERS)
    (rules_file,) = config["rule_files"]
    rendered = operator_scrape.chart_objects("ServiceMonitor")
    (rule,) = [o for o in rendered.values() if o["kind"] == "PrometheusRule"]
    assert yaml.safe_load(Path(rules_file).read_text()) == {"groups": rule["spec"]["groups"]}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    done = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
