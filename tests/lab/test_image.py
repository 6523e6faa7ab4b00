"""The container image, run exactly as the chart's DaemonSet runs it, inside the lab.

`make image`'s build (scripts/build-image.sh) makes the image; the chart is rendered with real Helm; lab/image.py
turns the rendered pod spec into `podman run` (user, read-only root, capabilities, no privilege escalation, the
ConfigMap at the chart's mount path, the sized emptyDir, the env with downward-API values) in the node1
exporter pod's namespace of a lab brought up without its own exporters.

The chart's config is used as rendered, discovery included: the container gets the service-account files and
KUBERNETES_SERVICE_HOST/PORT the kubelet gives a pod, and discovers the lab from the lab's API server
(lab/apiserver.py) through the `kubernetes` ClusterIP; the lab's other checks come through the chart's own
`probes.extraTargets` value.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import cluster, image, monitoring, netns
from lab.topology import Topology

pytestmark = pytest.mark.lab

SHUTDOWN_BUDGET = 2  # seconds from SIGTERM to exit (issue 12): podman stop's SIGKILL deadline
# Linux capability numbers (include/uapi/linux/capability.h), to read CapEff of the container's process.
CAPS = {"NET_ADMIN": 12, "SYS_PTRACE": 19, "SYS_ADMIN": 21}
FRONT_SERVICE = "svc/keybuzz/keybuzz-front:80"  # what discovery names the app's ClusterIP and its endpoints
FRONT_ENDPOINT = "ep/keybuzz/keybuzz-front/keybuzz-front"
PRIVILEGED = {"nodeFacts": {"hostNetworkNamespace": True}, "nodePerspective": {"enabled": True}}


@pytest.fixture(scope="module")
def image_lab() -> Iterator[Topology]:
    reason = image.podman_unavailable()
    if reason:
        pytest.skip(reason)
    image.build()  # seconds when nothing changed
    with cluster.exclusive():
        cluster.down()  # leftovers of an interrupted run (containers included)
        try:
            yield cluster.up(3, 1500, with_exporters=False)
        finally:
            cluster.down()
            assert netns.lab_namespaces() == []
            assert image.lab_containers() == []


Run = Callable[[str, dict[str, Any]], tuple[image.Rendered, image.Container]]


@pytest.fixture
def run_chart(image_lab: Topology, tmp_path: Path) -> Iterator[Run]:
    """Start the chart's container in a node's exporter pod namespace for the given values (merged over the
    lab's); removed afterwards. Each test uses its own node: a fresh pod namespace, as a new pod gets."""
    started: list[image.Container] = []

    def run(node: str, overrides: dict[str, Any]) -> tuple[image.Rendered, image.Container]:
        rendered = image.render_chart(image.lab_values(image_lab, node, **overrides))
        container = image.start_exporter(image_lab, node, rendered, tmp_path)
        started.append(container)
        image.wait_ready(image_lab, node, container)
        return rendered, container

    try:
        yield run
    finally:
        for container in started:
            image.remove(container)


def process_status(container: image.Container) -> dict[str, str]:
    """/proc/<pid>/status of the container's main process, read on the host (what the kernel enforces)."""
    pid = image.inspect(container)["State"]["Pid"]
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def mount_options(container: image.Container, target: str) -> set[str]:
    pid = image.inspect(container)["State"]["Pid"]
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            return set(fields[5].split(","))
    raise AssertionError(f"{target} is not mounted in {container.name}")


def scrape(topo: Topology, node: str) -> str:
    return monitoring.http_get(topo, image.metrics_url(topo, node))


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of the first series ``name`` whose labels include ``labels``."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        series, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', series[len(name) :]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def expect(topo: Topology, node: str, name: str, want: float, within: float = 40.0, **labels: str) -> str:
    """Scrape until ``name{labels}`` equals ``want`` (series appear after their first probe or facts round),
    bounded; assert it did. Returns the last scrape."""
    deadline = time.monotonic() + within
    metrics = scrape(topo, node)
    while sample(metrics, name, **labels) != want and time.monotonic() < deadline:
        time.sleep(1.0)
        metrics = scrape(topo, node)
    assert sample(metrics, name, **labels) == want, f"{name}{labels} after {within:.0f}s"
    return metrics


def stops_on_sigterm(rendered: image.Rendered, container: image.Container) -> None:
    """podman stop: SIGTERM to the container's process, SIGKILL after SHUTDOWN_BUDGET seconds (the kubelet does the
    same with the grace period, which the chart keeps above the budget). Exit code 0: the exporter ended on its own
    before the SIGKILL (which gives 137), having stopped its worker (it kills and waits for it,
    exporter/perspective.py)."""
    assert int(rendered.pod_spec["terminationGracePeriodSeconds"]) > SHUTDOWN_BUDGET
    main = image.inspect(container)["State"]["Pid"]
    _, code = image.stop(container, SHUTDOWN_BUDGET)
    assert code == 0, (
        f"exit {code} (137: still running {SHUTDOWN_BUDGET}s after SIGTERM); log:\n" + image.logs(container)[-3000:]
    )
    assert not Path(f"/proc/{main}").exists()


def test_pod_variant_runs_non_root_read_only_without_capabilities_serves_metrics_and_stops_on_sigterm(
    image_lab: Topology, run_chart: Run
) -> None:
    node = "node1"
    rendered, container = run_chart(node, {})
    status = process_status(container)
    assert status["Uid"].split() == ["65534"] * 4 and status["Gid"].split() == ["65534"] * 4
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert "ro" in mount_options(container, "/")
    assert "ro" in mount_options(container, "/etc/netpath")  # the ConfigMap, where the chart mounts it
    assert "rw" in mount_options(container, "/tmp")  # the emptyDir
    # as the chart renders it: the image's entrypoint, the DaemonSet's args
    assert image.inspect(container)["Config"]["Cmd"] == rendered.container["args"]
    # PID 1 is the exporter itself (exec-form ENTRYPOINT, no shell): it gets the runtime's SIGTERM
    ((pid, cmd),) = image.processes(container)
    assert pid == 1 and "netpath-exporter run" in cmd

    # discovery: in-cluster (the mounted service account, KUBERNETES_SERVICE_HOST) over TLS, through the ClusterIP
    for resource in ("nodes", "services", "pods", "endpointslices", "ingresses"):
        expect(image_lab, node, "netpath_discovery_up", 1.0, resource=resource)
    pod = {"source_node": node, "from": "pod"}
    expect(image_lab, node, "netpath_probe_success", 1.0, target=FRONT_SERVICE, **pod)
    expect(image_lab, node, "netpath_probe_success", 1.0, target=f"{FRONT_ENDPOINT}-1:8080", **pod)  # on node2
    # the other nodes' exporter pods, from the API (this lab runs no exporter there: found, not answering)
    expect(image_lab, node, "netpath_discovery_targets", 2.0, source="peers")
    metrics = expect(image_lab, node, "netpath_probe_success", 1.0, target="kube-dns", transport="udp", **pod)
    # node facts of the pod's own namespace: no VXLAN link there, so the overlay source is unavailable
    assert sample(metrics, "netpath_node_fact_source_up", source="overlay") == 0.0
    assert sample(metrics, "netpath_node_fact_source_up", source="sysctl") == 1.0
    assert "netpath_node_perspective_up" not in metrics

    stops_on_sigterm(rendered, container)


def test_privileged_variant_reads_node_facts_and_probes_from_the_nodes_namespace_and_stops_on_sigterm(
    image_lab: Topology, run_chart: Run
) -> None:
    node = "node2"
    rendered, container = run_chart(node, PRIVILEGED)
    assert rendered.pod_spec["hostPID"] is True
    added = rendered.container["securityContext"]["capabilities"]["add"]
    status = process_status(container)
    assert status["Uid"].split() == ["0"] * 4
    assert int(status["CapEff"], 16) == sum(1 << CAPS[c] for c in added)  # exactly what the chart adds
    assert status["NoNewPrivs"] == "1"
    assert "ro" in mount_options(container, "/")
    # the pod shares the "host" PID namespace: PID 1 is the node's init stand-in, in the node's namespace
    assert image.processes(container)[0] == (1, "sleep infinity")

    expect(image_lab, node, "netpath_node_perspective_up", 1.0)
    metrics = expect(image_lab, node, "netpath_node_fact_source_up", 1.0, source="overlay")
    for source in ("overlay", "routes", "conntrack", "iptables_legacy", "iptables_nft", "sysctl"):
        assert sample(metrics, "netpath_node_fact_source_up", source=source) == 1.0, source
    # the node's VXLAN link, which only the node's namespace has
    vtep = image_lab.node(node).underlay_ip
    assert sample(metrics, "netpath_node_vxlan_info", device="flannel.1", local=vtep) == 1.0
    for perspective in ("node", "pod"):
        expect(image_lab, node, "netpath_probe_success", 1.0, target=FRONT_SERVICE, **{"from": perspective})

    assert any("-m exporter worker" in cmd for _, cmd in image.processes(container))  # the node-perspective worker
    stops_on_sigterm(rendered, container)


def test_a_container_restarted_in_its_pod_listens_again(image_lab: Topology, run_chart: Run) -> None:
    """The kubelet restarts a container (liveness failure, OOM kill) inside the same pod, and so the same network
    namespace, where the previous exporter's served connections are still in TIME_WAIT."""
    node = "node3"
    rendered, first = run_chart(node, {})
    for _ in range(3):  # scrapes the server closes: TIME_WAIT on its side
        scrape(image_lab, node)
    stops_on_sigterm(rendered, first)
    image.remove(first)
    run_chart(node, {})  # raises LabError "cannot listen on 0.0.0.0:10047: Address already in use"
