"""The cluster view: every node's /diagnose document, as the real Localizer writes it from real ProbeResults,
combined into one report; and `diagnose --cluster` asking real exporter HTTP servers on loopback.

The pictures are test_diagnose.py's (the lab's targets, seen from node1, node2, node3, with the single ingress
controller on node1); each node's document goes through JSON as it would over HTTP.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from test_diagnose import (
    NODE_FACTS,
    Node,
    breaking,
    gateway_timeout,
    gateway_timeout_or_silence,
    ingress_504,
    is_service,
    kube_iptables,
)

from exporter.cli import _json_response, fetch_diagnoses, main, parse_service
from exporter.diagnose.cluster import ClusterView, ExporterAnswer, combine, exit_status, render_cluster
from exporter.model import AnyTarget, ProbeResult, Reason
from exporter.server import MetricsServer


def doc_of(node: Node) -> dict[str, Any]:
    return dict(json.loads(json.dumps(node.diagnosis().as_dict())))


def answered(node: Node) -> ExporterAnswer:
    return ExporterAnswer(f"http://{node.localizer.diagnose().source_node}:10047", doc=doc_of(node))


def nat_broken_ingress_node() -> Node:
    """node1: no ClusterIP NAT, and it runs the only ingress controller (its own legs fail)."""
    node = Node("node1", ingress_on="node1").rounds(6).rounds(2, breaking(is_service, gateway_timeout_or_silence))
    return node.facts(replace(NODE_FACTS, iptables_nft=kube_iptables(hook=False)))


def bystander(me: str) -> Node:
    """node2/node3: every path works; only requests through the ingress on node1 get 504s."""
    return Node(me, ingress_on="node1").rounds(6).rounds(3, breaking(ingress_504, gateway_timeout)).facts(NODE_FACTS)


def healthy(me: str) -> Node:
    return Node(me, ingress_on="node1").rounds(12).facts(NODE_FACTS)


def reported_picture() -> list[ExporterAnswer]:
    return [answered(nat_broken_ingress_node()), answered(bystander("node2")), answered(bystander("node3"))]


# --- the reported picture: one cause, on node1; the bystanders see it through node1's ingress ------------------


def test_the_reported_picture_is_one_cause_on_node1_seen_by_the_others_through_its_ingress() -> None:
    view = combine(reported_picture())
    assert [(c.node, c.cause) for c in view.named] == [("node1", "clusterip_nat_broken")]
    assert view.headline() == "clusterip_nat_broken on node1"
    by_node = {n.node: n for n in view.nodes}
    assert by_node["node1"].sees == ()
    for me in ("node2", "node3"):
        (seen,) = by_node[me].sees
        assert seen.owner == "node1" and seen.components == ("ingress-node1",)
        assert seen.causes == ("clusterip_nat_broken",)
        assert by_node[me].named == ()  # their own `unknown` is not a second cause
    assert exit_status(view) == 1


def test_the_reported_picture_report_names_where_each_leg_fails() -> None:
    report = render_cluster(combine(reported_picture()))
    assert "Cluster view: 3 of 3 exporters answered" in report
    assert "Headline: clusterip_nat_broken on node1" in report
    assert "node2 sees node node1's fault through ingress-node1 (clusterip_nat_broken)" in report
    assert "node3 sees node node1's fault through ingress-node1" in report
    assert "ClusterIP NAT path broken on this node [clusterip_nat_broken]" in report
    assert "❌ node1 → node1 ingress" in report and "❌ node2 → node1 ingress" in report
    assert "❌ node1 → a Service ClusterIP" in report  # a Service runs on no one node
    assert "PREROUTING does not jump to KUBE-SERVICES" in report  # node1's own evidence
    steps = report.split("Next steps:")[1]
    assert "clusterip_nat_broken on node1:" in steps and "iptables-save -t nat" in steps
    assert "unknown on" not in steps  # the bystanders' unknown adds no steps of its own
    assert "Unreachable exporters" not in report


def test_the_combined_json_has_the_attribution_and_every_document() -> None:
    doc = json.loads(json.dumps(combine(reported_picture()).as_dict()))
    assert doc["headline"] == "clusterip_nat_broken on node1"
    assert doc["named"] == [
        {"node": "node1", "cause": "clusterip_nat_broken", "summary": "ClusterIP NAT path broken on this node"}
    ]
    assert {(s["node"], s["owner"]) for s in doc["sees"]} == {("node2", "node1"), ("node3", "node1")}
    legs = {(f["source_node"], f["target_node"], f["path"], f["name"]) for f in doc["failing"]}
    assert ("node2", "node1", "ingress", "ingress-node1") in legs
    assert ("node1", "", "cluster_ip", "svc-keybuzz-front") in legs
    assert set(doc["nodes"]) == {"node1", "node2", "node3"}
    assert doc["nodes"]["node1"]["diagnosis"]["verdicts"][0]["cause"] == "clusterip_nat_broken"


# --- attribution needs the owner's own cause for that component -----------------------------------------------


def test_without_the_ingress_nodes_answer_the_bystanders_stay_unknown_with_what_fails_where() -> None:
    view = combine(
        [
            ExporterAnswer("http://10.42.1.2:10047", error="ConnectTimeout: timed out"),
            answered(bystander("node2")),
            answered(bystander("node3")),
        ]
    )
    assert view.named == () and all(n.sees == () for n in view.nodes)
    assert view.headline() == (
        "unknown: node2 → node1 ingress fails (ingress-node1); node3 → node1 ingress fails (ingress-node1)"
    )
    report = render_cluster(view)
    assert "node http://10.42.1.2:10047: no answer: ConnectTimeout: timed out" in report
    assert "unknown on node2, node3:" in report.split("Next steps:")[1]
    assert exit_status(view) == 1


def bad_gateway(target: AnyTarget) -> ProbeResult:
    return ProbeResult.failure(Reason.BAD_STATUS, 0.01, "status 502, expected 200", http_status=502)


def test_an_owner_that_names_no_cause_for_its_component_takes_no_blame() -> None:
    on_node1 = breaking(lambda t: t.name == "ingress-node1", bad_gateway)
    owner = Node("node1", ingress_on="node1").rounds(6).rounds(2, on_node1).facts(NODE_FACTS)
    seer = Node("node2", ingress_on="node1").rounds(6).rounds(2, on_node1).facts(NODE_FACTS)
    view = combine([answered(owner), answered(seer)])
    assert [v["cause"] for n in view.nodes for v in n.verdicts] == ["unknown", "unknown"]
    assert all(n.sees == () for n in view.nodes)
    assert view.headline().startswith("unknown: node1 → node1 ingress fails (ingress-node1)")


def test_a_silent_leg_to_the_ingress_node_is_not_the_ingress_nodes_fault() -> None:
    # node1's NAT is broken (its ingress says 504); node2's requests to that ingress get no answer at all, so
    # node2's own leg to node1 fails: not something node1's NAT explains
    def silent_ingress(target: AnyTarget) -> ProbeResult:
        return ProbeResult.failure(Reason.CONNECT_TIMEOUT, target.timeout, "connect timed out")

    node2 = Node("node2", ingress_on="node1").rounds(6).rounds(3, breaking(ingress_504, silent_ingress))
    view = combine([answered(nat_broken_ingress_node()), answered(node2.facts(NODE_FACTS))])
    assert all(n.sees == () for n in view.nodes) and all(not leg.seen_on for leg in view.failing)
    assert view.headline() == "clusterip_nat_broken on node1; also unknown: node2 → node1 ingress fails (ingress-node1)"


def test_a_node_with_its_own_cause_is_listed_with_it_even_when_it_also_sees_the_ingress_fail() -> None:
    own_and_remote = breaking(is_service, gateway_timeout_or_silence)
    node2 = Node("node2", ingress_on="node1").rounds(6).rounds(3, own_and_remote).facts(NODE_FACTS)
    view = combine([answered(nat_broken_ingress_node()), answered(node2)])
    assert [(c.node, c.cause) for c in view.named] == [("node1", "clusterip_nat_broken"), ("node2", "forward_drop")]
    assert all(n.sees == () for n in view.nodes)
    assert view.headline() == "clusterip_nat_broken on node1; forward_drop on node2"
    # its leg through node1's ingress got 504s: node1's fault, not left unexplained and not node2's forward_drop
    remote = [leg for leg in view.failing if leg.source_node == "node2" and leg.target_node == "node1"]
    assert {leg.name for leg in remote} == {"ingress-node1", "ingress-node1-slow"}
    assert all(leg.seen_on == "node1" and leg.seen_causes == ("clusterip_nat_broken",) for leg in remote)
    report = render_cluster(view)
    assert "node node1's fault (clusterip_nat_broken there)" in report
    steps = report.split("Next steps:")[1]
    assert "forward_drop on node2:" in steps and "unknown on" not in steps


# --- unreachable exporters and the all-clear ------------------------------------------------------------------


def test_an_unreachable_exporter_is_a_line_and_the_rest_is_still_combined() -> None:
    answers = [*reported_picture()[:2], ExporterAnswer("http://10.42.3.2:10047", error="ConnectError: refused")]
    view = combine(answers)
    assert view.headline() == "clusterip_nat_broken on node1"
    assert [u.exporter for u in view.unreachable] == ["http://10.42.3.2:10047"]
    report = render_cluster(view)
    assert "Cluster view: 2 of 3 exporters answered" in report
    assert "Unreachable exporters (1):\n  node http://10.42.3.2:10047: no answer: ConnectError: refused" in report


def test_every_path_works_only_when_every_window_is_clean_and_every_exporter_answered() -> None:
    clean = combine([answered(healthy(n)) for n in ("node1", "node2", "node3")])
    assert clean.headline() == "every path works" and exit_status(clean) == 0
    assert "node node2 (http://node2:10047): every probed path works" in render_cluster(clean)
    one_silent = combine([answered(healthy("node1")), ExporterAnswer("http://10.42.2.2:10047", error="timed out")])
    assert one_silent.headline() == "nothing fails on the 1 nodes that answered; 1 did not"
    assert exit_status(one_silent) == 1


def test_a_window_with_a_recent_failure_is_not_every_path_works() -> None:
    just_failed = Node("node1").rounds(6).rounds(1, breaking(lambda t: t.name == "svc-keybuzz-front"))
    view = combine([answered(just_failed.facts(NODE_FACTS)), answered(healthy("node2"))])
    assert view.headline() != "every path works" and view.headline().startswith("nothing fails now")
    assert exit_status(view) == 0  # as `diagnose`: no verdict, nothing failing by the window's rule


def test_no_exporter_answering_is_exit_2() -> None:
    view = combine([ExporterAnswer("http://a:1", error="refused"), ExporterAnswer("http://b:1", error="refused")])
    assert view.headline() == "no exporter answered" and exit_status(view) == 2
    assert ClusterView((), ()).headline() == "no exporter answered"


# --- the CLI, against real exporter HTTP servers on loopback ---------------------------------------------------


@contextmanager
def serving(node: Node) -> Iterator[str]:
    """The exporter's HTTP server (MetricsServer with its /diagnose route, as `run` wires it) over this node's
    localizer."""
    server = MetricsServer(
        "127.0.0.1",
        0,
        CollectorRegistry(),
        healthy=lambda: (True, "ok"),
        ready=lambda: (True, "ok"),
        routes={"/diagnose": lambda: _json_response(node.diagnosis().as_dict())},
    )
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()


async def test_an_exporter_that_does_not_answer_in_time_is_an_answer_saying_so(blackhole_listener: Any) -> None:
    silent = f"http://{blackhole_listener.host}:{blackhole_listener.port}"
    (per_exporter,) = await fetch_diagnoses([silent], timeout=0.3, total=5.0)
    assert per_exporter.doc is None and per_exporter.error.startswith("ConnectTimeout")
    (bounded,) = await fetch_diagnoses([silent], timeout=5.0, total=0.3)
    assert bounded.doc is None and bounded.error == "no answer within the 0.3 s bound for all exporters"


async def test_an_http_server_without_diagnose_is_no_answer() -> None:
    with serving(healthy("node1")) as url:
        answers = await fetch_diagnoses([url + "/nothing-here", url])
    assert answers[0].doc is None and "404" in answers[0].error
    assert answers[1].doc is not None and answers[1].doc["source_node"] == "node1"


def test_cli_cluster_with_one_exporter_answering_and_one_dead(closed_port: Any, capsys: Any) -> None:
    dead = f"http://{closed_port.host}:{closed_port.port}"
    with serving(nat_broken_ingress_node()) as url:
        code = main(["diagnose", "--cluster", url, dead])
    out = capsys.readouterr().out
    assert code == 1
    assert "Cluster view: 1 of 2 exporters answered" in out
    assert "Headline: clusterip_nat_broken on node1" in out
    assert f"node {dead}: no answer: ConnectError" in out


def test_cli_cluster_json_is_the_combined_document(closed_port: Any, capsys: Any) -> None:
    dead = f"http://{closed_port.host}:{closed_port.port}"
    with serving(healthy("node2")) as url:
        code = main(["diagnose", "--cluster", url, dead, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1  # node2 is clean, but an exporter did not answer: not "every path works"
    assert list(doc["nodes"]) == ["node2"] and doc["unreachable"][0]["exporter"] == dead


def test_cli_cluster_all_clean_exits_0(capsys: Any) -> None:
    with serving(healthy("node1")) as one, serving(healthy("node2")) as two:
        code = main(["diagnose", "--cluster", one, two])
    assert code == 0 and "Headline: every path works" in capsys.readouterr().out


def test_cli_cluster_nobody_answering_exits_2(closed_port: Any, capsys: Any) -> None:
    assert main(["diagnose", "--cluster", f"http://{closed_port.host}:{closed_port.port}"]) == 2
    assert "no exporter answered" in capsys.readouterr().err


def test_cli_cluster_service_asks_every_address_the_name_resolves_to(capsys: Any) -> None:
    with serving(healthy("node1")) as url:
        port = int(url.rsplit(":", 1)[1])
        code = main(["diagnose", "--cluster-service", f"localhost:{port}"])
    out = capsys.readouterr().out
    addresses = {info[4][0] for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)}
    assert "node node1 (http://127.0.0.1:" in out
    # only 127.0.0.1 listens: a ::1 the name may also resolve to is an exporter that does not answer
    assert code == (0 if addresses == {"127.0.0.1"} else 1)


def test_cli_cluster_service_that_does_not_resolve_exits_2(capsys: Any) -> None:
    assert main(["diagnose", "--cluster-service", "no-such-name.invalid"]) == 2
    assert "cannot resolve 'no-such-name.invalid'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "netpath-exporter-peers.monitoring.svc.cluster.local",
            ("netpath-exporter-peers.monitoring.svc.cluster.local", 10047),
        ),
        ("peers:9000", ("peers", 9000)),
        ("[fd00::1]:9000", ("fd00::1", 9000)),
        ("[fd00::1]", ("fd00::1", 10047)),
    ],
)
def test_cluster_service_is_host_and_optional_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_service(value) == expected


@pytest.mark.parametrize("value", ["peers:0", "peers:http", ":10047", "[fd00::1"])
def test_a_bad_cluster_service_is_a_usage_error_naming_it(value: str, capsys: Any) -> None:
    assert main(["diagnose", "--cluster-service", value]) == 2
    assert "--cluster-service" in capsys.readouterr().err


def test_the_documented_cluster_service_is_the_charts_headless_service(capsys: Any) -> None:
    """docs/diagnosis.md and the --cluster-service help name netpath-exporter-peers.monitoring…:10047; that is what
    `helm install netpath-exporter charts/netpath-exporter -n monitoring` (README) renders."""
    from pathlib import Path

    import helm_python as helm
    import yaml

    repo = Path(__file__).resolve().parent.parent
    with helm.Chart.load(repo / "charts" / "netpath-exporter") as chart:
        manifests = chart.render({}, name="netpath-exporter", namespace="monitoring")
    services = [
        obj
        for path, text in manifests.items()
        if path.endswith(".yaml")
        for obj in yaml.safe_load_all(text)
        if obj and obj["kind"] == "Service" and obj["spec"].get("clusterIP") == "None"
    ]
    (headless,) = services
    name = f"{headless['metadata']['name']}.{headless['metadata']['namespace']}.svc.cluster.local"
    assert name == "netpath-exporter-peers.monitoring.svc.cluster.local"
    assert [p["port"] for p in headless["spec"]["ports"]] == [10047]
    assert name in (repo / "docs" / "diagnosis.md").read_text() and name in (repo / "README.md").read_text()
    with pytest.raises(SystemExit):
        main(["diagnose", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
    assert name in help_text and "default10047" in help_text
