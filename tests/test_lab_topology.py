"""The lab's layouts: the two named ones, and the ones drawn from a seed, which the diagnosis matrix runs on."""

from __future__ import annotations

import pytest

from lab.topology import (
    API,
    COREDNS,
    FRONT,
    INGRESS,
    INGRESS_EVERY_NODE,
    INGRESS_ONE_NODE,
    Topology,
    build,
    parse_layout,
    seeded_layout,
)

SEEDS = range(200)


def test_the_reported_layout_is_one_controller_on_node1_with_coredns_and_the_first_replica() -> None:
    topo = build(layout=INGRESS_ONE_NODE)
    assert [p.node for p in topo.pods_of(INGRESS)] == ["node1"]
    assert [p.node for p in topo.pods_of(COREDNS)] == ["node1"]
    assert [p.node for p in topo.pods_of(FRONT)] == ["node1", "node2"]
    assert topo.ingress_layout == INGRESS_ONE_NODE


def test_the_every_node_layout_keeps_its_nodes_count() -> None:
    topo = build(5, layout=INGRESS_EVERY_NODE)
    assert [p.node for p in topo.pods_of(INGRESS)] == [f"node{i}" for i in range(1, 6)]


@pytest.mark.parametrize("seed", SEEDS)
def test_a_seeded_layout_stays_in_its_bounds(seed: int) -> None:
    place = seeded_layout(seed)
    every = set(range(1, place.nodes + 1))
    assert 3 <= place.nodes <= 5
    assert set(place.ingress) == every or len(place.ingress) == 1
    assert 1 <= len(place.coredns) <= 2 and set(place.coredns) <= every
    assert 2 <= len(place.front) < place.nodes, "the app's replicas run on some nodes only"
    assert len(set(place.front)) == len(place.front)


def test_seeds_draw_every_kind_of_layout() -> None:
    places = [seeded_layout(seed) for seed in SEEDS]
    assert {p.nodes for p in places} == {3, 4, 5}
    assert {p.ingress_layout for p in places} == {INGRESS_EVERY_NODE, INGRESS_ONE_NODE}
    assert {len(p.coredns) for p in places} == {1, 2}
    assert {p.ingress for p in places if len(p.ingress) == 1} - {(1,)}, "the one controller on other nodes than node1"


def test_the_same_seed_gives_the_same_lab_and_survives_the_topology_file() -> None:
    topo = build(layout="seed:7")
    assert topo == build(layout="seed:7")
    assert Topology.from_json(topo.to_json()).placement == seeded_layout(7)


def test_two_services_select_the_same_pods() -> None:
    topo = build(layout="seed:3")
    front, api = topo.service(FRONT), topo.service(API)
    assert front.endpoints == api.endpoints
    assert front.cluster_ip != api.cluster_ip


def test_every_workload_has_its_own_namespace_and_address() -> None:
    for seed in SEEDS:
        topo = build(layout=f"seed:{seed}")
        assert len({p.netns for p in topo.pods}) == len(topo.pods)
        assert len({p.ip for p in topo.pods}) == len(topo.pods)


@pytest.mark.parametrize("spec", ["seed:", "seed:x", "seed:-1", "two-nodes"])
def test_a_bad_layout_is_refused_naming_the_option(spec: str) -> None:
    with pytest.raises(ValueError, match="--layout"):
        parse_layout(spec)
