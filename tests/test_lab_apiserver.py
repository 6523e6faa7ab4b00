"""The lab's API server (lab/apiserver.py): what its objects make discovery find, and that a pod reaches it
in-cluster — TLS with the service account's CA, the bearer token — and the lab changes objects through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from exporter.config import parse_config
from exporter.discovery.access import in_cluster_access
from exporter.discovery.derive import ClusterState, Deriver
from exporter.discovery.informer import object_key
from lab import apiserver, image
from lab.kubeapi import FakeKubeAPI, Obj
from lab.topology import Topology, build


@pytest.fixture
def topo() -> Topology:
    return build(3)


def cluster_state(topo: Topology, selector: dict[str, str]) -> ClusterState:
    """The stores discovery's informers would hold: every object, pods only the label-selected exporters."""
    stores: dict[str, dict[tuple[str, str], Obj]] = {
        r: {} for r in ("nodes", "pods", "services", "endpointslices", "ingresses")
    }
    for resource, obj in apiserver.objects(topo):
        labels = obj["metadata"].get("labels") or {}
        if resource == "pods" and any(labels.get(k) != v for k, v in selector.items()):
            continue
        stores[resource][object_key(obj)] = obj
    return ClusterState(**stores)


def test_the_chart_config_discovers_every_path_of_the_lab_from_its_objects(
    topo: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", apiserver.NAMESPACE)  # the downward API's value in the chart's pod
    values = image.lab_values(topo, "node2")
    config = parse_config(image.render_chart(values).config)
    assert config.discovery is not None
    selector = dict(term.split("=") for term in config.discovery.peers.label_selector.split(","))
    derivation = Deriver(config.discovery, "node2").all(cluster_state(topo, selector))
    names = {t.name for targets in derivation.targets.values() for t in targets}
    assert {"peer/node1", "peer/node3"} <= names and "peer/node2" not in names
    assert {
        "svc/default/kubernetes:443",
        "svc/monitoring/netpath-exporter:10047",
        "svc/keybuzz/keybuzz-front:80",
        "ep/keybuzz/keybuzz-front/keybuzz-front-0:8080",
        "ep/keybuzz/keybuzz-front/keybuzz-front-1:8080",
        "dns/kube-dns/kubernetes.default.svc.cluster.local",
        "dns/coredns/coredns-0/netpath-exporter.monitoring.svc.cluster.local",
        "ingress/keybuzz/keybuzz-front/platform.keybuzz.io",
    } <= names
    assert derivation.notes.annotation_errors == {}
    # and the lab's own checks the chart is given (extraTargets) are not ones discovery already makes
    static = {t["name"] for t in values["probes"]["extraTargets"]}
    assert static and not static & names


def test_a_stopped_replica_is_not_ready_and_leaves_the_discovered_endpoints(topo: Topology) -> None:
    objects = dict(((r, o["metadata"]["name"]), o) for r, o in apiserver.objects(topo, not_ready={"keybuzz-front-1"}))
    ready = {
        ep["targetRef"]["name"]: ep["conditions"]["ready"]
        for ep in objects[("endpointslices", "keybuzz-front-lab")]["endpoints"]
    }
    assert ready == {"keybuzz-front-0": True, "keybuzz-front-1": False}
    api = objects[("endpointslices", "kubernetes-lab")]["endpoints"]
    assert api == [
        {"addresses": ["192.168.100.1"], "conditions": {"ready": True, "serving": True, "terminating": False}}
    ]


@pytest.fixture
async def served(topo: Topology, tmp_path: Path) -> AsyncIterator[FakeKubeAPI]:
    """The lab's API as lab/apiserver.py serves it, on 127.0.0.1 (the lab's address needs the lab)."""
    creds = tmp_path / "apiserver"
    apiserver.make_credentials(topo, creds, extra_ips=["127.0.0.1"])
    api = await apiserver.start_server(topo, creds, "127.0.0.1", 0)
    try:
        yield api
    finally:
        await api.stop()


async def test_a_pod_lists_the_lab_in_cluster_over_tls_with_the_service_account(
    served: FakeKubeAPI, tmp_path: Path
) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    for name, text in apiserver.service_account_files(tmp_path / "apiserver").items():
        (sa / name).write_text(text)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(served.port)}
    access = in_cluster_access(env, str(sa))
    async with access.client(httpx.Timeout(5.0)) as client:
        pods = await client.get("/api/v1/namespaces/monitoring/pods", headers=access.headers())
        assert pods.status_code == 200
        assert {p["metadata"]["name"] for p in pods.json()["items"]} == {
            "netpath-exporter-node1",
            "netpath-exporter-node2",
            "netpath-exporter-node3",
        }
        stranger = await client.get("/api/v1/nodes", headers={"Authorization": "Bearer not-the-token"})
        assert stranger.status_code == 401 and stranger.json()["reason"] == "Unauthorized"
    assert (sa / "namespace").read_text() == "monitoring"


async def test_the_lab_marks_replicas_not_ready_through_the_control_socket(
    served: FakeKubeAPI, topo: Topology, tmp_path: Path
) -> None:
    control = apiserver.Control(tmp_path / "apiserver" / "control.sock")
    before = served.rv
    await asyncio.to_thread(control.set_ready, topo, ["keybuzz-front-0"], False)
    pod = served.get("pods", "keybuzz", "keybuzz-front-0")
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
    endpoints = served.get("endpointslices", "keybuzz", "keybuzz-front-lab")["endpoints"]
    assert [e["conditions"]["ready"] for e in endpoints] == [False, True]
    modified = [(r, o["metadata"]["name"]) for v, r, t, o in served.history if v > before and t == "MODIFIED"]
    assert modified == [("pods", "keybuzz-front-0"), ("endpointslices", "keybuzz-front-lab")]
    await asyncio.to_thread(control.set_ready, topo, ["keybuzz-front-0"], True)
    assert [
        e["conditions"]["ready"] for e in served.get("endpointslices", "keybuzz", "keybuzz-front-lab")["endpoints"]
    ] == [True, True]


async def test_writes_answer_as_the_api_server_does(served: FakeKubeAPI, tmp_path: Path) -> None:
    """Create, conflict, replace, delete, not found, bad bodies: the codes and Status reasons the real API gives."""
    token = (tmp_path / "apiserver" / "token").read_text()
    transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "apiserver" / "control.sock"))
    headers = {"Authorization": f"Bearer {token}"}
    pods = "/api/v1/namespaces/keybuzz/pods"
    new = {"metadata": {"name": "extra"}, "spec": {"nodeName": "node1"}, "status": {}}
    async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as client:
        created = await client.post(pods, json=new)
        assert created.status_code == 201 and created.json()["metadata"]["namespace"] == "keybuzz"
        again = await client.post(pods, json=new)
        assert (again.status_code, again.json()["reason"]) == (409, "AlreadyExists")
        renamed = await client.put(f"{pods}/extra", json={"metadata": {"name": "other"}})
        assert renamed.status_code == 400
        nameless = await client.post(pods, json={"metadata": {}})
        assert nameless.status_code == 400
        assert (await client.delete(f"{pods}/extra")).status_code == 200
        gone = await client.delete(f"{pods}/extra")
        assert (gone.status_code, gone.json()["reason"]) == (404, "NotFound")
        assert (await client.post(f"{pods}/extra", json=new)).status_code == 405
    events = [t for _, r, t, o in served.history if r == "pods" and o["metadata"]["name"] == "extra"]
    assert events == ["ADDED", "DELETED"]
