"""The scrape configuration prometheus-operator generates for a ServiceMonitor or PodMonitor, for the lab.

prometheus-operator turns each monitor endpoint into one Prometheus scrape job: Kubernetes service discovery
(role endpoints for a ServiceMonitor, pod for a PodMonitor) followed by relabel rules that keep the selected
targets and turn discovery metadata into the target labels every series gets — ``job``, ``namespace``,
``service``, ``pod``, ``container``, ``endpoint``, ``instance`` — then the monitor's own ``relabelings``, with
``honor_labels: false`` unless the monitor says otherwise. The rules below restate, as data, what its config
generator (pkg/prometheus/promcfg.go: generateServiceMonitorConfig, generatePodMonitorConfig) emits for the
fields the chart uses; fields the chart never sets (TLS, auth, targetLabels, sharding beyond one shard, scrape
classes) are left out.

The lab has no Kubernetes API for Prometheus to discover from, so :func:`endpoint_targets` and
:func:`pod_targets` write the ``__meta_kubernetes_*`` labels that discovery would attach as static target
groups; the relabeling itself is done by the real Prometheus. A later change makes the lab's Prometheus use
this for every scrape (lab/monitoring.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .topology import EXPORTER_NAMESPACE

# CRD RelabelConfig field -> Prometheus relabel_config key (the operator's generateRelabelConfig).
_RELABEL_KEYS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


@dataclass(frozen=True)
class PodMeta:
    """What Kubernetes discovery knows about one pod that serves metrics."""

    name: str
    namespace: str
    node: str
    ip: str
    container: str
    port_name: str
    port: int
    labels: Mapping[str, str] = field(default_factory=dict)
    phase: str = "Running"


@dataclass(frozen=True)
class ServiceMeta:
    """A Service selecting those pods (the endpoints role sees each pod through it)."""

    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)


def sanitize(name: str) -> str:
    """A Kubernetes label key as a Prometheus label name suffix (what discovery and the operator both do)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def relabel_from_crd(configs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A monitor's `relabelings`/`metricRelabelings` (CRD field names) as Prometheus relabel_configs."""
    out = []
    for config in configs:
        rule = {_RELABEL_KEYS[k]: v for k, v in config.items() if k in _RELABEL_KEYS}
        if "action" in rule:
            rule["action"] = str(rule["action"]).lower()
        unknown = set(config) - set(_RELABEL_KEYS)
        if unknown:
            raise ValueError(f"relabeling fields not supported here: {sorted(unknown)}")
        out.append(rule)
    return out


def _selector_keep(meta_prefix: str, match_labels: Mapping[str, str]) -> list[dict[str, Any]]:
    # One keep rule per matchLabels key, in key order: label value and "present" together.
    return [
        {
            "action": "keep",
            "source_labels": [f"{meta_prefix}_label_{sanitize(k)}", f"{meta_prefix}_labelpresent_{sanitize(k)}"],
            "regex": f"({match_labels[k]});true",
        }
        for k in sorted(match_labels)
    ]


_JOB_TO_TMP: dict[str, Any] = {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"}
_RUNNING_ONLY: dict[str, Any] = {
    "action": "drop",
    "source_labels": ["__meta_kubernetes_pod_phase"],
    "regex": "(Failed|Succeeded)",
}
_ONE_SHARD: list[dict[str, Any]] = [
    {"source_labels": ["__address__"], "target_label": "__tmp_hash", "modulus": 1, "action": "hashmod"},
    {"source_labels": ["__tmp_hash"], "regex": "0", "action": "keep"},
]


def _from_endpoint_target(kind: str, label: str) -> dict[str, Any]:
    """`label` = the endpoint address's target name when its target is of `kind` (Node or Pod)."""
    return {
        "source_labels": [
            "__meta_kubernetes_endpoint_address_target_kind",
            "__meta_kubernetes_endpoint_address_target_name",
        ],
        "separator": ";",
        "regex": f"{kind};(.*)",
        "replacement": "${1}",
        "target_label": label,
    }


def service_monitor_scrape_config(
    monitor: Mapping[str, Any], targets: list[dict[str, Any]], *, index: int = 0, interval: str | None = None
) -> dict[str, Any]:
    """The scrape job for `monitor`'s endpoint `index`, over `targets` (static groups from endpoint_targets).

    `interval` overrides the monitor's scrape interval and timeout (the lab scrapes every second)."""
    target_labels: list[dict[str, Any]] = [
        _from_endpoint_target("Node", "node"),
        _from_endpoint_target("Pod", "pod"),
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        _RUNNING_ONLY,
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
    ]
    return _monitor_job(
        "serviceMonitor", monitor, "endpoints", "__meta_kubernetes_service", "__meta_kubernetes_endpoint_port_name",
        target_labels, targets, index, interval,
    )  # fmt: skip


def pod_monitor_scrape_config(
    monitor: Mapping[str, Any], targets: list[dict[str, Any]], *, index: int = 0, interval: str | None = None
) -> dict[str, Any]:
    """The scrape job for a PodMonitor's podMetricsEndpoints[index], over `targets` from pod_targets."""
    meta = monitor["metadata"]
    target_labels: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
    ]
    return _monitor_job(
        "podMonitor", monitor, "podMetricsEndpoints", "__meta_kubernetes_pod",
        "__meta_kubernetes_pod_container_port_name", target_labels, targets, index, interval,
    )  # fmt: skip


def _monitor_job(
    kind: str,
    monitor: Mapping[str, Any],
    endpoints_key: str,
    selected_meta: str,
    port_meta: str,
    target_labels: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    index: int,
    interval: str | None,
) -> dict[str, Any]:
    """The order the operator emits: job kept aside, selector, port, target labels, jobLabel, endpoint, the
    monitor's relabelings, the (single) shard."""
    meta, spec = monitor["metadata"], monitor["spec"]
    endpoint = spec[endpoints_key][index]
    relabel: list[dict[str, Any]] = [
        _JOB_TO_TMP,
        *_selector_keep(selected_meta, spec["selector"].get("matchLabels", {})),
    ]
    if endpoint.get("port"):
        relabel.append({"action": "keep", "source_labels": [port_meta], "regex": endpoint["port"]})
    relabel += target_labels
    if spec.get("jobLabel"):
        job_source = f"{selected_meta}_label_{sanitize(spec['jobLabel'])}"
        relabel.append({"source_labels": [job_source], "target_label": "job", "regex": "(.+)", "replacement": "${1}"})
    if endpoint.get("port"):
        relabel.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    relabel += relabel_from_crd(endpoint.get("relabelings", []))
    relabel += _ONE_SHARD
    job: dict[str, Any] = {"job_name": f"{kind}/{meta['namespace']}/{meta['name']}/{index}"}
    job["honor_labels"] = bool(endpoint.get("honorLabels", False))
    if interval or endpoint.get("interval"):
        job["scrape_interval"] = interval or endpoint["interval"]
    if interval or endpoint.get("scrapeTimeout"):
        job["scrape_timeout"] = interval or endpoint["scrapeTimeout"]
    if endpoint.get("path"):
        job["metrics_path"] = endpoint["path"]
    job["static_configs"] = targets  # in a cluster: kubernetes_sd_configs, namespaces of the monitor's selector
    job["relabel_configs"] = relabel
    metric_relabel = relabel_from_crd(endpoint.get("metricRelabelings", []))
    if metric_relabel:
        job["metric_relabel_configs"] = metric_relabel
    return job


def _pod_labels(pod: PodMeta) -> dict[str, str]:
    labels = {
        "__meta_kubernetes_namespace": pod.namespace,
        "__meta_kubernetes_pod_name": pod.name,
        "__meta_kubernetes_pod_ip": pod.ip,
        "__meta_kubernetes_pod_node_name": pod.node,
        "__meta_kubernetes_pod_phase": pod.phase,
        "__meta_kubernetes_pod_container_name": pod.container,
        "__meta_kubernetes_pod_container_port_name": pod.port_name,
        "__meta_kubernetes_pod_container_port_number": str(pod.port),
        "__meta_kubernetes_pod_container_port_protocol": "TCP",
    }
    for key, value in pod.labels.items():
        labels[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
        labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}"] = "true"
    return labels


def pod_targets(pods: Iterable[PodMeta]) -> list[dict[str, Any]]:
    """What role: pod discovery yields: one target per container port, with the pod's metadata."""
    return [{"targets": [f"{p.ip}:{p.port}"], "labels": _pod_labels(p)} for p in pods]


def endpoint_targets(service: ServiceMeta, pods: Iterable[PodMeta]) -> list[dict[str, Any]]:
    """What role: endpoints discovery yields for `service`: one target per ready endpoint address and port,
    with the Service's, the endpoint's and the backing pod's metadata."""
    groups = []
    for pod in pods:
        labels = _pod_labels(pod)
        labels.update(
            {
                "__meta_kubernetes_service_name": service.name,
                "__meta_kubernetes_endpoints_name": service.name,
                "__meta_kubernetes_endpoint_port_name": pod.port_name,
                "__meta_kubernetes_endpoint_port_protocol": "TCP",
                "__meta_kubernetes_endpoint_ready": "true",
                "__meta_kubernetes_endpoint_address_target_kind": "Pod",
                "__meta_kubernetes_endpoint_address_target_name": pod.name,
                "__meta_kubernetes_endpoint_node_name": pod.node,
            }
        )
        for key, value in service.labels.items():
            labels[f"__meta_kubernetes_service_label_{sanitize(key)}"] = value
            labels[f"__meta_kubernetes_service_labelpresent_{sanitize(key)}"] = "true"
        groups.append({"targets": [f"{pod.ip}:{pod.port}"], "labels": labels})
    return groups


# --- the chart, rendered for kube-prometheus-stack, as the lab's Prometheus runs it -----------------------------

RELEASE, NAMESPACE = "netpath-exporter", EXPORTER_NAMESPACE  # the lab installs the chart as this release, there


@dataclass(frozen=True)
class StackMonitoring:
    """What prometheus-operator would load into Prometheus for the chart: the monitor's scrape job and the
    PrometheusRule's groups, both from one `helm template` of the chart."""

    scrape_config: dict[str, Any]
    rule_groups: list[dict[str, Any]]


def chart_objects(kind: str = "ServiceMonitor") -> dict[str, dict[str, Any]]:
    """The chart rendered for kube-prometheus-stack with the monitor of `kind`: {Kind/name: object}."""
    from .image import render_objects  # helm-python, the dev extra: only the lab and the chart tests need it

    values = {"prometheus": {"stack": "kube-prometheus-stack", "monitor": {"kind": kind}}}
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in render_objects(values)}


def stack_monitoring(exporters: Mapping[str, Mapping[str, str]], kind: str, interval: str) -> StackMonitoring:
    """The operator's scrape job for the chart's `kind` monitor over the lab's exporter pods (``exporters``:
    node -> {pod, ip, metrics} as in the topology), and the rendered PrometheusRule's groups."""
    objects = chart_objects(kind)
    (monitor,) = [o for o in objects.values() if o["kind"] == kind]
    (daemonset,) = [o for o in objects.values() if o["kind"] == "DaemonSet"]
    rules = [o for o in objects.values() if o["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        raise ValueError(f"the chart rendered {len(rules)} PrometheusRules for kube-prometheus-stack, expected 1")
    template = daemonset["spec"]["template"]
    container = template["spec"]["containers"][0]
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    pods = [
        PodMeta(
            name=e["pod"], namespace=NAMESPACE, node=node, ip=e["ip"], container=container["name"],
            port_name=port["name"], port=int(e["metrics"].rsplit(":", 1)[1].split("/")[0]),
            labels=template["metadata"]["labels"],
        )
        for node, e in sorted(exporters.items())
    ]  # fmt: skip
    if kind == "PodMonitor":
        job = pod_monitor_scrape_config(monitor, pod_targets(pods), interval=interval)
    else:
        # Both of the chart's Services select the exporter pods: discovery lists both, and the monitor's selector
        # must keep only the headless one (one scrape per exporter).
        services = [
            ServiceMeta(o["metadata"]["name"], NAMESPACE, o["metadata"].get("labels", {}))
            for o in objects.values()
            if o["kind"] == "Service"
        ]
        targets = [group for service in services for group in endpoint_targets(service, pods)]
        job = service_monitor_scrape_config(monitor, targets, interval=interval)
    return StackMonitoring(scrape_config=job, rule_groups=list(rules[0]["spec"]["groups"]))
