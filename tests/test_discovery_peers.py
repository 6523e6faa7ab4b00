"""Peer selection at scale: balanced in-degree and stability as nodes join and leave."""

from __future__ import annotations

from collections import Counter

from exporter.discovery.peers import rendezvous_top_k, select_peers

NODES = [f"k3s-agent-{i:03d}" for i in range(200)]
K = 10


def choices(nodes: list[str], k: int) -> dict[str, set[str]]:
    return {n: set(select_peers(n, nodes, k)) for n in nodes}


def in_degree(chosen: dict[str, set[str]]) -> Counter[str]:
    return Counter(peer for peers in chosen.values() for peer in peers)


def test_every_node_probes_k_others_never_itself() -> None:
    for node, peers in choices(NODES, K).items():
        assert len(peers) == K and node not in peers


def test_every_node_is_probed_by_ten_plus_or_minus_three_others() -> None:
    degree = in_degree(choices(NODES, K))
    assert all(7 <= degree[n] <= 13 for n in NODES), (min(degree.values()), max(degree.values()))


def test_plain_rendezvous_top_k_would_not_bound_the_in_degree() -> None:
    """Why the ring: top-K highest-random-weight leaves some nodes nearly unwatched at N=200."""
    degree = Counter(p for n in NODES for p in rendezvous_top_k(n, NODES, K))
    assert min(degree[n] for n in NODES) < 7 or max(degree.values()) > 13


def test_a_node_joining_moves_few_choices() -> None:
    before = choices(NODES, K)
    after = choices([*NODES, "k3s-agent-new"], K)
    moved = sum(len(before[n] - after[n]) for n in NODES)
    assert moved <= K  # only the newcomer's K predecessors each swap one peer for it
    assert in_degree(after)["k3s-agent-new"] == K


def test_a_node_leaving_moves_only_the_choices_that_pointed_at_it() -> None:
    before = choices(NODES, K)
    gone = NODES[57]
    after = choices([n for n in NODES if n != gone], K)
    moved = sum(len(before[n] - after[n]) for n in NODES if n != gone)
    assert moved == sum(1 for n in NODES if gone in before[n]) == K


def test_the_choice_does_not_depend_on_list_order_or_on_knowing_oneself() -> None:
    source = NODES[3]
    expected = select_peers(source, NODES, K)
    assert select_peers(source, list(reversed(NODES)), K) == expected
    assert select_peers(source, [n for n in NODES if n != source], K) == expected


def test_small_clusters_and_k_all_probe_everyone() -> None:
    small = NODES[:16]
    assert select_peers(small[0], small, K) == sorted(small[1:])
    assert select_peers(NODES[0], NODES, None) == sorted(NODES[1:])
    assert select_peers("alone", [], K) == []
