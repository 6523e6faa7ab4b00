"""Generate the netpath-exporter dashboards with grafana-foundation-sdk and write them to grafana/dashboards/.

    python -m grafana.generate           # rewrite the committed JSON
    python -m grafana.generate --check   # exit 1 if the committed JSON differs from what this code builds

The committed JSON is the artifact Grafana imports (or a provisioning sidecar picks up); this file is its source,
and tests/test_dashboards.py fails when the two disagree. Every query uses only the metrics of docs/metrics.md
and the recording rules of alerts/*.rules.yml (plus Prometheus's own `ALERTS`), also checked by the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
OVERVIEW_UID = "netpath-overview"
NODE_UID = "netpath-node"
TAG = "netpath"
# Where the alerts' runbooks live (alerts/alerts.rules.yml uses the same base in runbook_url). A constant
# dashboard variable, so a fork or an internal mirror changes one value, not every link.
RUNBOOK_BASE = "https://github.com/netpath-exporter/netpath-exporter/blob/main/docs/runbooks"

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# `cluster` is not an exporter label: it comes from Prometheus external labels or relabeling in multi-cluster
# setups. With no such label the variable is empty or All (.*), and `cluster=~""`/`=~".*"` match every series.
CLUSTER = 'cluster=~"$cluster"'
NODE = f'{CLUSTER}, source_node=~"$node"'
TARGETS = f'{NODE}, from=~"$from"'  # per-target metrics carry the perspective; node facts and verdicts do not
RI = "$__rate_interval"

PATH_CLASSES = ("pod_ip", "cluster_ip", "dns", "ingress")
OK_RED = [(None, "red"), (0.95, "orange"), (0.995, "green")]  # success ratio: objective 99.5 %
ERR_GREEN = [(None, "green"), (0.005, "orange"), (0.05, "red")]  # error ratio, the same objective


# ---------------------------------------------------------------------------------------------- PromQL


def _rate(metric: str, sel: str) -> str:
    return f"rate({metric}{{{sel}}}[{RI}])"


def error_ratio(by: str, sel: str) -> str:
    """Failed / started probes. A failure series exists only once a reason happened: a clean path gets 0
    from the attempts (`or … * 0`), not "no data"."""
    attempts = f"sum by ({by}) ({_rate('netpath_probe_attempts_total', sel)})"
    failures = f"sum by ({by}) ({_rate('netpath_probe_failures_total', sel)})"
    return f"({failures} or {attempts} * 0) / {attempts}"


def success_ratio(by: str, sel: str) -> str:
    return f"1 - {error_ratio(by, sel)}"


def quantile(q: float, by: str, sel: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) ({_rate('netpath_probe_duration_seconds_bucket', sel)}))"


# --------------------------------------------------------------------------------------- panel helpers


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, fmt: str = "") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    q = q.legend_format(legend or "__auto")
    q = q.instant() if instant else q.range()
    if fmt:
        q = q.format(pm.PromQueryFormat(fmt))
    return q


def thresholds(steps: list[tuple[float | None, str]]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def value_text(mapping: dict[str, tuple[str, str]]) -> list[dm.ValueMapping]:
    """Value → (text, color): "0" → ("off", "red")."""
    return [
        dm.ValueMap(
            options={
                value: dm.ValueMappingResult(text=text, color=color, index=i)
                for i, (value, (text, color)) in enumerate(mapping.items())
            }
        )
    ]


ON_OFF = {"0": ("off", "red"), "1": ("on", "green")}


def ts(
    title: str,
    description: str,
    *queries: prometheus.Dataquery,
    unit: str = "",
    w: int = 12,
    h: int = 8,
    minimum: float | None = None,
    maximum: float | None = None,
    stacked: bool = False,
    steps: list[tuple[float | None, str]] | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .span(w)
        .height(h)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )
    for q in queries:
        panel = panel.with_target(q)
    if unit:
        panel = panel.unit(unit)
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if stacked:
        panel = (
            panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
            .draw_style(common.GraphDrawStyle.BARS)
            .fill_opacity(80)
        )
    if steps:
        panel = panel.thresholds(thresholds(steps)).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE)
        )
    return panel


def stat_panel(
    title: str,
    description: str,
    *queries: prometheus.Dataquery,
    unit: str = "",
    w: int = 6,
    h: int = 4,
    steps: list[tuple[float | None, str]] | None = None,
    mappings: dict[str, tuple[str, str]] | None = None,
    decimals: float | None = None,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .span(w)
        .height(h)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    for q in queries:
        panel = panel.with_target(q)
    if unit:
        panel = panel.unit(unit)
    if decimals is not None:
        panel = panel.decimals(decimals)
    panel = panel.thresholds(thresholds(steps or [(None, "blue")]))
    if mappings:
        panel = panel.mappings(value_text(mappings))
    return panel


def matrix(
    title: str, description: str, expr: str, rows: str, columns: str, *, w: int = 12, h: int = 8, link: str = ""
) -> table.Panel:
    """A Pingmesh-style matrix: one instant query per (row, column) pair, pivoted by Grafana's
    groupingToMatrix transformation, each cell coloured by its error ratio."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .span(w)
        .height(h)
        .with_target(query(expr, ref="A", instant=True, fmt="table"))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"rowField": rows, "columnField": columns, "valueField": "Value", "emptyValue": "null"},
            )
        )
        .unit("percentunit")
        .decimals(1)
        .min(0)
        .max(1)
        .thresholds(thresholds(ERR_GREEN))
        .cell_options(common.TableColoredBackgroundCellOptions(mode=common.TableCellBackgroundDisplayMode.BASIC))
        .no_value("no probes")
    )
    if link:
        # The pivot's first column is named "<rows>\\<columns>": rename it, and link each row header to the
        # node dashboard of that node.
        panel = panel.with_transformation(
            dm.DataTransformerConfig(id_val="organize", options={"renameByName": {f"{rows}\\{columns}": rows}})
        ).override_by_name(
            rows,
            [
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "auto"}),
                dm.DynamicConfigValue(id_val="links", value=[{"title": "Node detail", "url": link}]),
            ],
        )
    return panel


def node_link(field: str) -> str:
    return (
        f"/d/{NODE_UID}/netpath-node?var-node=${{__data.fields.{field}}}"
        "&${datasource:queryparam}&${cluster:queryparam}&${from:queryparam}&${__url_time_range}"
    )


# ------------------------------------------------------------------------------------------- variables


def variables(*, node_multi: bool) -> list[Any]:
    datasource = (
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes netpath-exporter")
    )
    cluster = (
        dash.QueryVariable("cluster")
        .label("Cluster")
        .description(
            "The `cluster` label Prometheus external labels or relabeling add in multi-cluster setups; "
            "netpath-exporter does not export it. With no such label, All (.*) matches every series."
        )
        .datasource(DS)
        .query({"query": "label_values(netpath_targets, cluster)", "refId": "cluster"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .all_value(".*")
        .multi(False)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .current(dm.VariableOption(text="All", value="$__all", selected=True))
    )
    node = (
        dash.QueryVariable("node")
        .label("Node")
        .description("source_node: the node whose exporter probes")
        .datasource(DS)
        .query({"query": 'label_values(netpath_targets{cluster=~"$cluster"}, source_node)', "refId": "node"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.NATURAL_ASC)
    )
    if node_multi:
        node = (
            node.include_all(True)
            .all_value(".*")
            .multi(True)
            .current(dm.VariableOption(text="All", value="$__all", selected=True))
        )
    perspective = (
        dash.CustomVariable("from")
        .label("Perspective")
        .description(
            "from=pod: probes from the exporter's pod; from=node: the same targets from the node's own "
            "network namespace (docs/perspectives.md). Pods failing where the node works is a FORWARD "
            "path problem."
        )
        .values("pod,node")
        .include_all(True)
        .all_value(".*")
        .multi(False)
        .current(dm.VariableOption(text="pod", value="pod", selected=True))
    )
    runbooks = (
        dash.ConstantVariable("runbook_base")
        .label("Runbook base URL")
        .description("Base URL of docs/runbooks/ (one <AlertName>.md per alert); change it for a fork or mirror")
        .value(RUNBOOK_BASE)
    )
    return [datasource, cluster, node, perspective, runbooks]


def base(uid: str, title: str, description: str, *, node_multi: bool) -> dash.Dashboard:
    board = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .link(
            dash.DashboardLink("netpath dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .link(
            dash.DashboardLink("Runbooks")
            .type(dm.DashboardLinkType.LINK)
            .url("${runbook_base}")
            .icon("doc")
            .target_blank(True)
        )
    )
    for variable in variables(node_multi=node_multi):
        board = board.with_variable(variable)
    return board


# -------------------------------------------------------------------------------------------- overview


def overview() -> dash.Dashboard:
    board = base(
        OVERVIEW_UID,
        "netpath: where the 504s come from",
        "Success and latency of every network path a request takes (pod IP, ClusterIP, DNS, ingress), from "
        "which node to which, and the localizer's verdict. docs/dashboards.md explains each panel.",
        node_multi=True,
    )
    board = board.with_row(dash.Row("At a glance"))
    board = board.with_panel(
        stat_panel(
            "Success by path class",
            "Probes that succeeded, per path class, over the rate interval. Pod IP fine with ClusterIP/DNS/ingress "
            "failing is the kube-proxy NAT / FORWARD pattern; everything failing is the overlay.",
            query(success_ratio("path", TARGETS), "{{path}}"),
            unit="percentunit",
            w=12,
            h=5,
            steps=OK_RED,
            decimals=2,
        )
    )
    board = board.with_panel(
        table.Panel()
        .title("Localizer verdicts now")
        .description(
            "Causes the localizer names on each node now (docs/diagnosis.md). Evidence: the exporter's "
            "/diagnose or `netpath-exporter diagnose`. Empty while every path is healthy."
        )
        .datasource(DS)
        .span(6)
        .height(5)
        .with_target(
            query(f"max by (source_node, cause) (netpath_diagnosis{{{NODE}}} == 1)", instant=True, fmt="table")
        )
        .with_transformation(
            dm.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True, "Value": True}})
        )
        .override_by_name(
            "source_node",
            [dm.DynamicConfigValue(id_val="links", value=[{"title": "Node detail", "url": node_link("source_node")}])],
        )
        .override_by_name(
            "cause",
            [
                dm.DynamicConfigValue(
                    id_val="links",
                    value=[
                        {"title": "Runbook", "targetBlank": True, "url": "${runbook_base}/NetpathLocalizerVerdict.md"}
                    ],
                )
            ],
        )
        .no_value("no verdict")
    )
    board = board.with_panel(
        table.Panel()
        .title("Alerts pending and firing")
        .description(
            "netpath alerts (alerts/alerts.rules.yml) from Prometheus's ALERTS series; each alert name "
            "links to its runbook."
        )
        .datasource(DS)
        .span(6)
        .height(5)
        .with_target(
            query(
                f'max by (alertname, alertstate, severity, source_node) (ALERTS{{{CLUSTER}, alertname=~"Netpath.*"}})',
                instant=True,
                fmt="table",
            )
        )
        .with_transformation(
            dm.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True, "Value": True}})
        )
        .override_by_name(
            "alertname",
            [
                dm.DynamicConfigValue(
                    id_val="links",
                    value=[
                        {
                            "title": "Runbook",
                            "targetBlank": True,
                            "url": "${runbook_base}/${__data.fields.alertname}.md",
                        }
                    ],
                )
            ],
        )
        .override_by_name(
            "alertstate",
            [
                dm.DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        {
                            "type": "value",
                            "options": {
                                "firing": {"color": "red", "index": 0},
                                "pending": {"color": "orange", "index": 1},
                            },
                        }
                    ],
                ),
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
            ],
        )
        .no_value("no alert")
    )

    board = board.with_panel(
        statetimeline.Panel()
        .title("Localizer verdicts over time")
        .description("Since when each node's localizer has named a cause (1 while held).")
        .datasource(DS)
        .span(24)
        .height(5)
        .with_target(
            query(f"max by (source_node, cause) (netpath_diagnosis{{{NODE}}} == 1)", "{{source_node}}: {{cause}}")
        )
        .mappings(value_text({"1": ("held", "red")}))
        .thresholds(thresholds([(None, "red")]))
        .show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .no_value("no verdict in this time range")
    )
    board = board.with_row(dash.Row("Who fails to whom"))
    board = board.with_panel(
        matrix(
            "Pod-IP error ratio: source node → target node",
            "Pingmesh-style matrix of probes to pod IPs (rows: the probing node, columns: the node the pod "
            "lives on). A red row is one bad source (its overlay, its firewall); a red column one bad target.",
            error_ratio("source_node, target_node", f'{TARGETS}, path="pod_ip", target_node!=""'),
            "source_node",
            "target_node",
            link=node_link("source_node"),
        )
    )
    board = board.with_panel(
        matrix(
            "Error ratio: source node × path class",
            "Each node's error ratio per path class. The reported 504 pattern: one row red in cluster_ip, dns "
            "and ingress while its pod_ip cell is green.",
            error_ratio("source_node, path", TARGETS),
            "source_node",
            "path",
            link=node_link("source_node"),
        )
    )
    board = board.with_panel(
        ts(
            "Pod IP success by source node",
            "Cross-node and same-node probes to pod IPs, per probing node. Compare with the ClusterIP panel beside.",
            query(success_ratio("source_node", f'{TARGETS}, path="pod_ip"'), "{{source_node}}"),
            unit="percentunit",
            minimum=0,
            maximum=1,
            steps=OK_RED,
        )
    )
    board = board.with_panel(
        ts(
            "ClusterIP success by source node",
            "Probes to Service ClusterIPs (kube-proxy NAT), per probing node. Failing here while pod IPs work: "
            "the node's Service path (NAT hook, FORWARD filter, conntrack).",
            query(success_ratio("source_node", f'{TARGETS}, path="cluster_ip"'), "{{source_node}}"),
            unit="percentunit",
            minimum=0,
            maximum=1,
            steps=OK_RED,
        )
    )

    board = board.with_row(dash.Row("Latency"))
    board = board.with_panel(
        ts(
            "p50 latency by path class",
            "Median duration of successful probes (TCP connect, whole HTTP request, DNS query). Failures are "
            "counted, not timed, so a broken path shows in the success panels, not here.",
            query(quantile(0.5, "path", TARGETS), "p50 {{path}}"),
            unit="s",
        )
    )
    board = board.with_panel(
        ts(
            "p99 latency by path class",
            "99th percentile of successful probes. Steps at 1 s and 3 s are SYN retransmits (see below).",
            query(quantile(0.99, "path", TARGETS), "p99 {{path}}"),
            unit="s",
        )
    )

    board = board.with_row(dash.Row("DNS"))
    dns = f'{TARGETS}, path="dns"'
    board = board.with_panel(
        ts(
            "DNS success: via the kube-dns Service vs straight to CoreDNS, UDP vs TCP",
            "What pods' resolvers see (via the Service ClusterIP) against CoreDNS's pods asked directly. Only "
            "the Service failing: its NAT path; only UDP via the Service: the conntrack insert race.",
            query(
                success_ratio("source_node, transport", f'{dns}, via="service"'),
                "{{source_node}} via Service {{transport}}",
                ref="A",
            ),
            query(
                success_ratio("source_node, transport", f'{dns}, via="pod"'),
                "{{source_node}} to CoreDNS pod {{transport}}",
                ref="B",
            ),
            unit="percentunit",
            minimum=0,
            maximum=1,
            steps=OK_RED,
        )
    )
    board = board.with_panel(
        ts(
            "DNS p99 latency: via Service vs to CoreDNS, UDP vs TCP",
            "A UDP query lost and retried shows as a second-long answer here before it fails outright.",
            query(quantile(0.99, "via, transport", dns), "p99 via={{via}} {{transport}}"),
            unit="s",
        )
    )

    board = board.with_row(dash.Row("Ingress"))
    ingress = f'{TARGETS}, path="ingress"'
    board = board.with_panel(
        ts(
            "Ingress responses by status code",
            "HTTP responses of the ingress controller per probing node and status code; 504 (the ingress gave up "
            "on its upstream Service) in red.",
            query(
                f"sum by (source_node, code) ({_rate('netpath_http_responses_total', ingress)})",
                "{{source_node}} {{code}}",
            ),
            unit="reqps",
            w=16,
            stacked=True,
        )
        .override_by_regexp(
            ".* 504", [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "red"})]
        )
        .override_by_regexp(
            ".* 5(0[0-35-9]|[1-9].)",
            [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "orange"})],
        )
        .override_by_regexp(
            ".* 2..", [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": "green"})]
        )
    )
    ingress_504 = ingress + ', code="504"'
    r504 = f"sum by (source_node) ({_rate('netpath_http_responses_total', ingress_504)})"
    attempts = f"sum by (source_node) ({_rate('netpath_probe_attempts_total', ingress)})"
    board = board.with_panel(
        stat_panel(
            "504 share by source node",
            "Ingress probes answered 504, per node's ingress controller.",
            query(f"({r504} or {attempts} * 0) / {attempts}", "{{source_node}}"),
            unit="percentunit",
            w=8,
            h=8,
            steps=ERR_GREEN,
            decimals=1,
        )
    )

    board = board.with_row(dash.Row("Why: failure reasons and SYN retransmits"))
    board = board.with_panel(
        ts(
            "Failures by reason",
            "connect_timeout: SYNs dropped on the path; response_timeout: connected, no answer; body_timeout: "
            "the response stalled (MTU blackhole); bad_status: 5xx. A flat 0 per node and path: no failures.",
            query(
                f"sum by (source_node, path, reason) ({_rate('netpath_probe_failures_total', TARGETS)}) "
                f"or sum by (source_node, path) ({_rate('netpath_probe_attempts_total', TARGETS)}) * 0",
                "{{source_node}} {{path}} {{reason}}",
            ),
            unit="ops",
            stacked=True,
        )
    )
    board = board.with_panel(
        ts(
            "SYN retransmits per TCP probe",
            "SYNs the kernel retransmitted per TCP-based probe (recording rule, 5m). Anything above 0 is packet "
            "loss on the way to the target; NetpathSynRetransmitsRising fires above 0.05.",
            query(
                f"source_path:netpath_tcp_syn_retransmits:per_attempt_rate5m{{{TARGETS}}}", "{{source_node}} {{path}}"
            ),
            minimum=0,
            steps=[(None, "green"), (0.05, "red")],
        )
    )
    return board


# ----------------------------------------------------------------------------------------- node detail


def node_detail() -> dash.Dashboard:
    board = base(
        NODE_UID,
        "netpath: node detail",
        "One node: what its kernel says about the overlay, forwarding, conntrack and NAT (node facts), and every "
        "target its exporter probes with their latency distributions.",
        node_multi=False,
    )
    board = board.with_row(dash.Row("Node facts: $node"))
    board = board.with_panel(
        stat_panel(
            "Fact sources readable",
            "Each node-fact source (docs/metrics.md, Node facts). 'unavailable' means no values are shown "
            "for it, never healthy-looking zeros.",
            query(f"netpath_node_fact_source_up{{{NODE}}}", "{{source}}"),
            w=24,
            h=3,
            mappings={"0": ("unavailable", "red"), "1": ("ok", "green")},
        )
    )
    board = board.with_panel(
        statetimeline.Panel()
        .title("Localizer verdicts on $node")
        .description("Since when this node's localizer has named a cause.")
        .datasource(DS)
        .span(24)
        .height(4)
        .with_target(query(f"netpath_diagnosis{{{NODE}}} == 1", "{{cause}}"))
        .mappings(value_text({"1": ("held", "red")}))
        .thresholds(thresholds([(None, "red")]))
        .show_value(common.VisibilityMode.NEVER)
        .no_value("no verdict in this time range")
    )

    board = board.with_panel(
        stat_panel(
            "MTUs",
            "The VXLAN link (overlay), the NIC it sends on (underlay) and cni0 (bridge).",
            query(f"netpath_node_link_mtu_bytes{{{NODE}}}", "{{role}} {{device}}"),
            w=8,
            h=4,
        )
    )
    board = board.with_panel(
        stat_panel(
            "Overlay MTU headroom",
            "Underlay MTU − VXLAN MTU; below 50 bytes large packets are lost (C6).",
            query(f"netpath_node_overlay_mtu_gap_bytes{{{NODE}}}", "{{device}}"),
            unit="decbytes",
            w=4,
            h=4,
            steps=[(None, "red"), (50, "green")],
        )
    )
    board = board.with_panel(
        stat_panel(
            "VXLAN tx checksum offload",
            "tx-checksum-ip-generic on the VXLAN link: the checksum-offload kernel bug's precondition (C5).",
            query(f"netpath_node_vxlan_tx_checksum_offload{{{NODE}}}", "{{device}}"),
            w=4,
            h=4,
            mappings={"0": ("off", "green"), "1": ("on", "orange")},
        )
    )
    board = board.with_panel(
        stat_panel(
            "Forwarding and bridge netfilter",
            "Forwarding sysctls and br_netfilter: off means pod traffic is not routed or bridged traffic "
            "skips iptables (C4).",
            query(f"netpath_node_ip_forward{{{NODE}}}", "ip_forward", ref="A"),
            query(f"netpath_node_ipv4_forwarding_all{{{NODE}}}", "conf.all.forwarding", ref="B"),
            query(f"netpath_node_br_netfilter_loaded{{{NODE}}}", "br_netfilter", ref="C"),
            query(f"netpath_node_bridge_nf_call_iptables{{{NODE}}}", "bridge-nf-call-iptables", ref="D"),
            w=8,
            h=4,
            mappings=ON_OFF,
        )
    )
    board = board.with_panel(
        stat_panel(
            "ClusterIP NAT hook",
            "Whether nat PREROUTING (pods' traffic) and OUTPUT (the node's own) jump to KUBE-SERVICES in "
            "either iptables backend. Missing: every ClusterIP from this node times out (C8).",
            query(f"max by (chain) (netpath_node_clusterip_nat_hook{{{NODE}}})", "{{chain}} → KUBE-SERVICES"),
            w=6,
            h=4,
            mappings={"0": ("missing", "red"), "1": ("hooked", "green")},
        )
    )
    board = board.with_panel(
        stat_panel(
            "ClusterIP DNAT rules",
            "A KUBE-SERVICES rule leads to a DNAT for each probed ClusterIP port (either backend).",
            query(
                f"max by (cluster_ip, port, protocol) (netpath_node_clusterip_dnat_rule{{{NODE}}})",
                "{{cluster_ip}}:{{port}}/{{protocol}}",
            ),
            w=6,
            h=4,
            mappings={"0": ("no DNAT", "red"), "1": ("DNAT", "green")},
        )
    )
    board = board.with_panel(
        stat_panel(
            "iptables backends",
            "Rules per backend and chains by owner. Rules in both backends, kube-proxy's chains in one and "
            "ufw's in the other: the legacy/nft split (C2).",
            query(f"netpath_node_iptables_rules{{{NODE}}}", "{{backend}} rules", ref="A"),
            query(f"netpath_node_iptables_chains{{{NODE}}}", "{{backend}} {{owner}} chains", ref="B"),
            w=6,
            h=4,
        )
    )
    board = board.with_panel(
        stat_panel(
            "rp_filter",
            "Effective reverse-path filter per device: strict (1) drops asymmetric overlay replies (C9).",
            query(f"netpath_node_rp_filter{{{NODE}}}", "{{device}}"),
            w=6,
            h=4,
            mappings={"0": ("off", "green"), "1": ("strict", "orange"), "2": ("loose", "green")},
        )
    )
    board = board.with_panel(
        table.Panel()
        .title("Overlay peers")
        .description(
            "Route to each peer's pod CIDR via the VXLAN link with its neighbour and FDB entry; vtep_dst "
            "is the peer node's underlay IP, empty when the FDB entry is missing (C1, C10)."
        )
        .datasource(DS)
        .span(8)
        .height(7)
        .with_target(
            query(f"max by (pod_cidr, vtep_dst) (netpath_node_overlay_peer{{{NODE}}})", instant=True, fmt="table")
        )
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}}))
        .mappings(value_text({"0": ("incomplete", "red"), "1": ("complete", "green")}))
        .cell_options(common.TableColoredBackgroundCellOptions(mode=common.TableCellBackgroundDisplayMode.BASIC))
    )
    board = board.with_panel(
        ts(
            "Conntrack table",
            "Connections tracked against the table size (C7b).",
            query(f"netpath_node_conntrack_entries{{{NODE}}}", "entries", ref="A"),
            query(f"netpath_node_conntrack_entries_limit{{{NODE}}}", "limit", ref="B"),
            w=8,
            h=7,
            minimum=0,
        )
    )
    board = board.with_panel(
        ts(
            "Conntrack and kernel drop counters",
            "insert_failed/clashres rising: the UDP insert race (C7a); drop/early_drop: a full table (C7b); UDP "
            "checksum errors (C5), fragmentation failures (C6).",
            query(f"sum by (stat) ({_rate('netpath_node_conntrack_stat_total', NODE)})", "conntrack {{stat}}", ref="A"),
            query(f"sum({_rate('netpath_node_udp_in_csum_errors_total', NODE)})", "UDP InCsumErrors", ref="B"),
            query(f"sum({_rate('netpath_node_ip_frag_fails_total', NODE)})", "IP FragFails", ref="C"),
            unit="ops",
            w=8,
            h=7,
            minimum=0,
        )
    )

    board = board.with_row(dash.Row("Targets of $node"))
    board = board.with_panel(
        table.Panel()
        .title("Targets now")
        .description("Every target this node's exporter probes, with the last probe's outcome.")
        .datasource(DS)
        .span(24)
        .height(8)
        .with_target(
            query(
                "max by (target, transport, path, via, target_node, target_service) "
                f"(netpath_probe_success{{{TARGETS}}})",
                instant=True,
                fmt="table",
            )
        )
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": {"Time": True}, "renameByName": {"Value": "last probe"}}
            )
        )
        .override_by_name(
            "last probe",
            [
                dm.DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "failed", "color": "red", "index": 0},
                                "1": {"text": "ok", "color": "green", "index": 1},
                            },
                        }
                    ],
                ),
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
            ],
        )
    )
    board = board.with_panel(
        heatmap.Panel()
        .title("Latency distribution, all targets")
        .description("Successful probes per latency bucket over time; a band at 1 s or 3 s is SYN retransmits.")
        .datasource(DS)
        .span(12)
        .height(8)
        .with_target(
            query(f"sum by (le) ({_rate('netpath_probe_duration_seconds_bucket', TARGETS)})", "{{le}}", fmt="heatmap")
        )
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("s"))
        .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges").exponent(0.5).steps(64))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
    )
    board = board.with_panel(
        ts(
            "Error ratio by target",
            "Failed probes per target and transport.",
            query(error_ratio("target, transport", TARGETS), "{{target}} {{transport}}"),
            unit="percentunit",
            minimum=0,
            maximum=1,
            steps=ERR_GREEN,
        )
    )
    board = board.with_panel(
        ts(
            "p50 latency by target",
            "Median of successful probes per target.",
            query(quantile(0.5, "target, transport", TARGETS), "{{target}} {{transport}}"),
            unit="s",
        )
    )
    board = board.with_panel(
        ts(
            "p99 latency by target",
            "99th percentile of successful probes per target.",
            query(quantile(0.99, "target, transport", TARGETS), "{{target}} {{transport}}"),
            unit="s",
        )
    )
    board = board.with_panel(
        ts(
            "Phases of the last probe",
            "connect and first_byte of TCP/HTTP probes, the DNS query time: where a slow request spends it.",
            query(f"netpath_probe_phase_seconds{{{TARGETS}}}", "{{target}} {{phase}}"),
            unit="s",
        )
    )
    board = board.with_panel(
        ts(
            "Failures by reason",
            "Per target; a flat 0 per target: no failures.",
            query(
                f"sum by (target, reason) ({_rate('netpath_probe_failures_total', TARGETS)}) "
                f"or sum by (target) ({_rate('netpath_probe_attempts_total', TARGETS)}) * 0",
                "{{target}} {{reason}}",
            ),
            unit="ops",
            stacked=True,
        )
    )
    board = board.with_panel(
        ts(
            "TCP RTT and SYN retransmits",
            "The kernel's smoothed RTT of the last probe connection, and SYNs retransmitted per second.",
            query(f"netpath_tcp_rtt_seconds{{{TARGETS}}}", "rtt {{target}}", ref="A"),
            query(
                f"sum by (target) ({_rate('netpath_tcp_syn_retransmits_total', TARGETS)})",
                "SYN retransmits/s {{target}}",
                ref="B",
            ),
            unit="s",
        ).override_by_regexp(
            "SYN retransmits.*",
            [
                dm.DynamicConfigValue(id_val="unit", value="ops"),
                dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
            ],
        )
    )
    board = board.with_row(dash.Row("Exporter on $node"))
    board = board.with_panel(
        ts(
            "Scheduler lag p99",
            "How late probes start; seconds mean a starved exporter whose latencies are not to be trusted.",
            query(
                f"histogram_quantile(0.99, sum by (le) ({_rate('netpath_scheduler_lag_seconds_bucket', NODE)}))",
                "p99 lag",
            ),
            unit="s",
            w=8,
            h=6,
        )
    )
    board = board.with_panel(
        ts(
            "Targets and probes in flight",
            "Targets scheduled per path class; probes running now.",
            query(f"netpath_targets{{{NODE}}}", "targets {{path}}", ref="A"),
            query(f"netpath_probes_in_flight{{{NODE}}}", "in flight", ref="B"),
            w=8,
            h=6,
            minimum=0,
        )
    )
    board = board.with_panel(
        stat_panel(
            "Node perspective worker and facts age",
            "The from=node worker (0: its series are stale) and seconds since the node facts were read.",
            query(f"netpath_node_perspective_up{{{NODE}}}", "node perspective worker", ref="A"),
            query(f"time() - netpath_node_facts_last_refresh_timestamp_seconds{{{NODE}}}", "facts age (s)", ref="B"),
            w=8,
            h=6,
            mappings={},
        )
    )
    return board


# -------------------------------------------------------------------------------------------- output

DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "netpath-overview.json": overview,
    "netpath-node.json": node_detail,
}


def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """The dashboard as the SDK's schema models read it back: unknown fields dropped, each panel plugin's
    defaults filled in. The committed JSON is this fixpoint, so tests/test_dashboards.py can tell a
    schema-valid dashboard (reads back unchanged) from one with fields the schema does not know."""
    plugins.register_default_plugins()
    decoded: dict[str, Any] = json.loads(json.dumps(dm.Dashboard.from_json(data), cls=JSONEncoder))
    return decoded


def render(build: Callable[[], dash.Dashboard]) -> str:
    built: dict[str, Any] = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    # Panel ids in layout order: stable, so a `viewPanel=<id>` link or an embedded panel survives regeneration.
    for number, panel in enumerate(built["panels"], start=1):
        panel["id"] = number
    return json.dumps(canonical(built), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON, write nothing")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory to write (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = args.out / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date, run `make dashboards`: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
