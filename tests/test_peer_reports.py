"""Peer reports: each exporter reads its peers' own /diagnose and attributes failures through a component on a
peer to that peer's named cause (docs/diagnosis.md, "Peer reports").

Attribution is checked on the documents the real Localizer writes for the reported picture (test_diagnose.py's
lab targets; the single ingress controller on node1); fetching against real HTTP servers on loopback: the
exporter's own MetricsServer with its /diagnose route, a port that refuses, a listener that never answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from contract import documented, exposed
from prometheus_client import CollectorRegistry, generate_latest
from test_diagnose import NODE_FACTS, Node, breaking
from test_diagnose_cluster import bystander, doc_of, healthy, nat_broken_ingress_node

from exporter.cli import _json_response
from exporter.config import ConfigError, parse_config
from exporter.diagnose import DiagnosisMetrics, render_report
from exporter.diagnose.attribution import with_peer_reports
from exporter.diagnose.causes import Cause
from exporter.model import AnyTarget, PathClass, ProbeResult, Reason, Via
from exporter.peer_reports import FRESH_INTERVALS, PeerReports, check_document, peer_urls
from exporter.probes.tcp import TCPTarget
from exporter.server import MetricsServer, Route

# --- attribution: the reported picture ------------------------------------------------------------------------


def test_a_bystander_with_the_ingress_nodes_report_drops_its_unknown_and_names_the_peers_fault() -> None:
    node2 = bystander("node2")
    assert [v.cause for v in node2.diagnosis().verdicts] == [Cause.UNKNOWN]  # alone: unknown naming node1

    seen = with_peer_reports(node2.diagnosis(), {"node1": doc_of(nat_broken_ingress_node())})

    assert seen.verdicts == ()  # not a cause of its own, and not unknown any more
    (fault,) = seen.peer_faults
    assert fault.owner == "node1" and fault.causes == ("clusterip_nat_broken",)
    assert "ingress-node1" in fault.components
    doc = seen.as_dict()
    assert doc["peer_faults"][0]["node"] == "node1"
    failing = [t for t in doc["targets"] if t["health"] in ("down", "flaky")]
    assert failing and all(t["seen_on"] == "node1" and t["explained_by"] == "" for t in failing)


def test_the_bystanders_metrics_say_unknown_0_and_which_peers_cause_it_sees() -> None:
    node2 = bystander("node2")
    owner = doc_of(nat_broken_ingress_node())
    registry = CollectorRegistry()
    DiagnosisMetrics(registry, lambda: with_peer_reports(node2.diagnosis(), {"node1": owner}), source_node="node2")
    text = generate_latest(registry).decode()
    assert 'netpath_diagnosis{cause="unknown",source_node="node2"} 0.0' in text
    assert 'netpath_peer_fault{cause="clusterip_nat_broken",peer_node="node1",source_node="node2"} 1.0' in text


def test_the_bystanders_report_says_where_the_fault_is_instead_of_no_cause() -> None:
    seen = with_peer_reports(bystander("node3").diagnosis(), {"node1": doc_of(nat_broken_ingress_node())})
    report = render_report(json.loads(json.dumps(seen.as_dict())))
    assert "Seen through node node1: " in report and "where its own exporter names clusterip_nat_broken" in report
    assert "No cause named." not in report and "every probed path works" not in report
    assert "What doesn't (" in report and "ingress-node1" in report.split("What doesn't")[1]


def test_without_the_owners_report_the_bystander_stays_unknown() -> None:
    own = bystander("node2").diagnosis()
    assert with_peer_reports(own, {}) is own
    assert with_peer_reports(own, {"node3": doc_of(healthy("node3"))}).verdicts == own.verdicts


def test_an_owner_that_names_no_cause_for_the_component_takes_no_blame() -> None:
    def bad_gateway(target: AnyTarget) -> ProbeResult:
        return ProbeResult.failure(Reason.BAD_STATUS, 0.01, "status 502, expected 200", http_status=502)

    on_node1 = breaking(lambda t: t.name == "ingress-node1", bad_gateway)
    owner = Node("node1", ingress_on="node1").rounds(6).rounds(2, on_node1).facts(NODE_FACTS)
    seer = Node("node2", ingress_on="node1").rounds(6).rounds(2, on_node1).facts(NODE_FACTS)
    seen = with_peer_reports(seer.diagnosis(), {"node1": doc_of(owner)})
    assert [v.cause for v in seen.verdicts] == [Cause.UNKNOWN] and seen.peer_faults == ()


def test_a_silent_leg_to_the_ingress_node_stays_this_nodes_unknown() -> None:
    def silent(target: AnyTarget) -> ProbeResult:
        return ProbeResult.failure(Reason.CONNECT_TIMEOUT, target.timeout, "connect timed out")

    node2 = (
        Node("node2", ingress_on="node1").rounds(6).rounds(3, breaking(lambda t: t.path is PathClass.INGRESS, silent))
    )
    seen = with_peer_reports(node2.facts(NODE_FACTS).diagnosis(), {"node1": doc_of(nat_broken_ingress_node())})
    assert Cause.UNKNOWN in seen.causes and seen.peer_faults == ()


def test_an_ingress_that_accepts_and_does_not_answer_in_time_is_reached_and_its_nodes_fault() -> None:
    # the controller on node1 accepted the connection and waited on its broken upstream longer than our timeout
    def accepted_then_nothing(target: AnyTarget) -> ProbeResult:
        return ProbeResult.failure(Reason.RESPONSE_TIMEOUT, target.timeout, "no response")

    node2 = Node("node2", ingress_on="node1").rounds(6)
    node2.rounds(3, breaking(lambda t: t.path is PathClass.INGRESS, accepted_then_nothing)).facts(NODE_FACTS)
    seen = with_peer_reports(node2.diagnosis(), {"node1": doc_of(nat_broken_ingress_node())})
    assert seen.verdicts == () and [f.owner for f in seen.peer_faults] == ["node1"]


def test_only_the_peers_own_explanations_count_never_what_it_attributed_itself() -> None:
    # node1's document as a bystander would write it: its failures carry seen_on, not explained_by
    echo = doc_of(nat_broken_ingress_node())
    for record in echo["targets"]:
        record["seen_on"], record["explained_by"] = "node9", ""
    echo["verdicts"] = []
    seen = with_peer_reports(bystander("node2").diagnosis(), {"node1": echo})
    assert [v.cause for v in seen.verdicts] == [Cause.UNKNOWN] and seen.peer_faults == ()


def test_a_node_with_its_own_named_cause_keeps_it() -> None:
    own = nat_broken_ingress_node().diagnosis()
    seen = with_peer_reports(own, {"node2": doc_of(bystander("node2"))})
    assert [v.cause for v in seen.verdicts] == [Cause.CLUSTERIP_NAT_BROKEN] and seen.peer_faults == ()


# --- which peers are asked -------------------------------------------------------------------------------------


def peer(node: str, host: str, name: str | None = None, source: str = "peers") -> TCPTarget:
    return TCPTarget(
        name=name or f"peer/{node}", path=PathClass.POD_IP, via=Via.POD, target_node=node, host=host, port=10047,
        source=source,
    )  # fmt: skip


def test_the_peers_asked_are_the_peer_exporters_being_probed() -> None:
    targets = [
        peer("node2", "10.42.2.5"),
        peer("node3", "fd00::3", name="peer/node3", source="static"),
        peer("node4", "10.42.4.5", name="app-on-node4", source="static"),  # a pod, not an exporter
        TCPTarget(name="svc", path=PathClass.CLUSTER_IP, via=Via.SERVICE, host="10.43.0.10", port=80),
    ]
    assert peer_urls(targets) == {"node2": "http://10.42.2.5:10047", "node3": "http://[fd00::3]:10047"}


# --- fetching: real servers on loopback -----------------------------------------------------------------------


@contextmanager
def serving(route: Route) -> Iterator[str]:
    server = MetricsServer(
        "127.0.0.1", 0, CollectorRegistry(), healthy=lambda: (True, "ok"), ready=lambda: (True, "ok"),
        routes={"/diagnose": route},
    )  # fmt: skip
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def reports_of(peers: dict[str, str], clock: Clock, registry: CollectorRegistry | None = None) -> PeerReports:
    return PeerReports(
        registry or CollectorRegistry(), source_node="node2", peers=lambda: peers, interval=10.0, timeout=0.5,
        clock=clock,
    )  # fmt: skip


async def refresh(reports: PeerReports) -> None:
    async with httpx.AsyncClient(timeout=reports.timeout, trust_env=False) as client:
        await reports.refresh(client)


async def test_a_round_reads_every_peer_and_a_dead_or_silent_one_is_an_error_not_a_crash(
    closed_port: Any, blackhole_listener: Any
) -> None:
    owner = nat_broken_ingress_node()
    clock, registry = Clock(), CollectorRegistry()
    with serving(lambda: _json_response(owner.diagnosis().as_dict())) as url:
        peers = {
            "node1": url,
            "node3": f"http://{closed_port.host}:{closed_port.port}",
            "node4": f"http://{blackhole_listener.host}:{blackhole_listener.port}",
            "node2": "http://127.0.0.1:1",  # ourselves: never asked
        }
        reports = reports_of(peers, clock, registry)
        await refresh(reports)
    assert set(reports.fresh()) == {"node1"} and reports.fresh()["node1"]["source_node"] == "node1"
    errors = {r.node: r.error for r in reports.reports()}
    assert errors["node1"] == "" and errors["node3"].startswith("ConnectError") and errors["node4"] == "timeout"
    assert "node2" not in errors
    text = generate_latest(registry).decode()
    assert 'netpath_peer_report_up{peer_node="node1",source_node="node2"} 1.0' in text
    assert 'netpath_peer_report_up{peer_node="node3",source_node="node2"} 0.0' in text


async def test_a_report_is_used_only_while_fresh_and_survives_one_failed_round(closed_port: Any) -> None:
    owner = nat_broken_ingress_node()
    clock = Clock()
    peers: dict[str, str] = {}
    reports = reports_of(peers, clock)
    with serving(lambda: _json_response(owner.diagnosis().as_dict())) as url:
        peers["node1"] = url
        await refresh(reports)
    peers["node1"] = url  # the server is gone now: the next rounds fail
    clock.now += 10
    await refresh(reports)
    assert set(reports.fresh()) == {"node1"}  # the last good one, still young
    clock.now += FRESH_INTERVALS * 10
    assert reports.fresh() == {}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>hello</html>", "Expecting value"),
        (b'{"source_node": "node1"}', "not a /diagnose document"),
        (b'{"source_node": "node7", "verdicts": [], "targets": []}', "node 'node7''s, not 'node1''s"),
        (b'{"source_node": "node1", "verdicts": [], "targets": [1]}', "must be objects"),
    ],
)
def test_anything_but_the_asked_nodes_document_is_refused_saying_why(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        check_document(body, "node1")


async def test_a_peer_answering_with_another_nodes_document_is_an_error() -> None:
    wrong = healthy("node3")
    with serving(lambda: _json_response(wrong.diagnosis().as_dict())) as url:
        reports = reports_of({"node1": url}, Clock())
        await refresh(reports)
    (report,) = reports.reports()
    assert report.doc is None and "node 'node3''s, not 'node1''s" in report.error


# --- config ----------------------------------------------------------------------------------------------------


def test_peer_reports_are_on_by_default_and_their_bad_values_name_the_field() -> None:
    config = parse_config({"source_node": "node1"})
    assert config.peer_reports.enabled and config.peer_reports.interval == 10.0
    assert config.peer_reports.timeout == 2.0
    assert parse_config({"peer_reports": {"interval": "1s"}}).peer_reports.timeout == 0.5  # half, when shorter
    with pytest.raises(ConfigError, match=re.escape("peer_reports.timeout")):
        parse_config({"peer_reports": {"interval": "2s", "timeout": "3s"}})
    with pytest.raises(ConfigError, match=re.escape("peer_reports.interval")):
        parse_config({"peer_reports": {"interval": "0.1s"}})
    with pytest.raises(ConfigError, match=re.escape("peer_reports.peers")):
        parse_config({"peer_reports": {"peers": []}})


async def test_docs_metrics_peer_reports_section_matches_the_exposition() -> None:
    registry = CollectorRegistry()
    reports = reports_of({"node1": "http://127.0.0.1:1"}, Clock(), registry)
    await refresh(reports)  # one peer, refusing: its series is there, at 0
    assert exposed(generate_latest(registry).decode()) == documented("Peer reports")
