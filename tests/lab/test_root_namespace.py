"""The lab never touches the root namespace: a full up/break/heal/down cycle — exporters from the image, so podman
is checked too — leaves it as it was."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lab import cluster, netns, scenarios, topology
from lab.state import topology_path

pytestmark = pytest.mark.lab


def test_full_cycle_leaves_the_root_namespace_unchanged(
    lab_lock: None, root_snapshot: Callable[[], dict[str, str]]
) -> None:
    from lab import image

    reason = image.podman_unavailable()
    if reason:
        pytest.skip(reason)
    image.build()  # first: building runs with --network=none, but it is not the lab's to check
    cluster.down()
    before = root_snapshot()
    try:
        # the exporters as users run them: containers from the image, joined to the lab's pod namespaces
        topo = cluster.up(2, 1450, from_image=True)
        for name in scenarios.SCENARIOS:
            scenarios.break_(topo, name, node="node2" if scenarios.SCENARIOS[name].per_node else None)
        assert set(scenarios.heal(topo)) == set(scenarios.SCENARIOS)
    finally:
        cluster.down()
    assert netns.lab_namespaces() == []
    assert not topology_path().exists()
    after = root_snapshot()
    for key in before:
        assert after[key] == before[key], f"root namespace {key} changed"


def test_down_cleans_up_after_a_crashed_up(lab_lock: None) -> None:
    cluster.down()
    # a crashed `up`: namespaces and a half-written state dir, no processes recorded
    topo = topology.build(2, 1500)
    topology_path().parent.mkdir(parents=True, exist_ok=True)
    topology_path().write_text(topo.to_json())
    netns.create(topo.underlay_netns)
    netns.create(topo.nodes[0].netns)
    assert len(netns.lab_namespaces()) == 2
    removed = cluster.down()
    assert set(removed) == {topo.underlay_netns, topo.nodes[0].netns}
    assert netns.lab_namespaces() == []
    assert cluster.down() == []  # idempotent
