"""Total decoding of API objects: what fits is cut down to what discovery reads, what does not is a reason."""

from __future__ import annotations

import pytest
from kubeapi import endpoint_slice, exporter_pod, port, service

from exporter.discovery.decode import decode, object_problem


@pytest.mark.parametrize(
    ("resource", "obj", "reason"),
    [
        ("pods", exporter_pod("node-1", "10.42.1.10"), None),
        ("pods", "a string", "not_object"),
        ("pods", {"metadata": "a string"}, "bad_metadata"),
        ("pods", {"metadata": {"namespace": "x"}}, "bad_metadata"),
        ("pods", {"metadata": {"name": "x", "labels": {"a": 1}}}, "bad_metadata"),
        ("pods", {"metadata": {"name": "x", "annotations": ["a"]}}, "bad_metadata"),
        ("pods", {"metadata": {"name": "x\nInjected"}}, "bad_metadata"),
        ("pods", {"metadata": {"name": "x"}, "status": {"podIP": ["10.42.1.1"]}}, "bad_field"),
        ("pods", {"metadata": {"name": "x"}, "status": {"conditions": {"type": "Ready"}}}, "bad_field"),
        ("pods", {"metadata": {"name": "x"}, "status": "Running"}, "bad_field"),
        ("services", {"metadata": {"name": "x"}, "spec": {"ports": [{"port": True}]}}, "bad_field"),
        ("services", {"metadata": {"name": "x"}, "spec": {"ports": [{"port": 70000}]}}, "bad_field"),
        ("services", {"metadata": {"name": "x"}, "spec": {"clusterIP": None, "ports": None}}, None),
        ("endpointslices", {"metadata": {"name": "x"}, "endpoints": [{"targetRef": {"name": "a" * 300}}]}, "bad_field"),
        ("ingresses", {"metadata": {"name": "x"}, "spec": {"rules": [{"host": "a.example\r\nX: y"}]}}, "bad_field"),
        ("ingresses", {"metadata": {"name": "x"}, "spec": {"rules": [{"host": "*.example.com"}]}}, None),
        (
            "ingresses",
            {"metadata": {"name": "x"}, "spec": {"rules": [{"http": {"paths": [{"path": "/a b"}]}}]}},
            "bad_field",
        ),
        ("nodes", {"metadata": {"name": "n"}, "spec": {"unschedulable": "yes"}}, "bad_field"),
    ],
)
def test_object_problems(resource: str, obj: object, reason: str | None) -> None:
    assert object_problem(resource, obj) == reason


def test_decoding_keeps_only_what_discovery_reads() -> None:
    pod = exporter_pod("node-1", "10.42.1.10")
    pod["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
    pod["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}" * 1000}
    decoded, reason = decode("pods", pod)
    assert reason is None and decoded is not None
    assert decoded["metadata"] == {
        "name": "netpath-exporter-node-1",
        "namespace": "netpath",
        "labels": pod["metadata"]["labels"],
        "annotations": {},
    }
    assert set(decoded) == {"metadata", "spec", "status"} and decoded["spec"] == {"nodeName": "node-1"}
    assert decoded["status"]["podIP"] == "10.42.1.10" and "podIPs" not in decoded["status"]

    svc = service(
        "web",
        "shop",
        "10.43.0.99",
        [port("http", 80, 8080)],
        annotations={"netpath.io/probe": "true", "other.io/x": "y"},
    )
    decoded, _ = decode("services", svc)
    assert decoded is not None and decoded["metadata"]["annotations"] == {"netpath.io/probe": "true"}
    assert decoded["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}]  # no targetPort

    sl = endpoint_slice("web", "shop", [("web-1", "10.42.2.20", "node-2")], [port("http", 8080)])
    decoded, _ = decode("endpointslices", sl)
    assert decoded is not None and decoded["endpoints"][0]["targetRef"] == {"name": "web-1"}
    assert decode("pods", {"metadata": "x"}) == (None, "bad_metadata")
