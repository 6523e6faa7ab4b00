"""The lab's Kubernetes API: the stand-in server (lab/kubeapi.py) serving the lab's own topology, reached as a
pod reaches the real one.

It runs as a process in node1's namespace (the K3s server node), over TLS on the node's address, port 6443,
with a bearer token; the `kubernetes` Service (10.43.0.1:443, lab/topology.py) points at it, so kube-proxy's
NAT (lab/kubeproxy.py) sits on the way exactly as in a cluster: where a node's ClusterIP path is broken, so is
that node's discovery. The exporters from the image get what the kubelet mounts into every pod
(:func:`service_account_files`: ``token``, ``ca.crt``, ``namespace``) and ``KUBERNETES_SERVICE_HOST/PORT``.

Objects (:func:`objects`): the Nodes, every Pod, the Services with their EndpointSlices, and the app's Ingress,
labelled the way the chart and K3s label them (the exporter pods as the chart's DaemonSet, CoreDNS as
``k8s-app=kube-dns``). keybuzz-front and its Ingress carry ``netpath.io/probe: "true"``, as a user opts in.
Scenarios that change pods (an app stopped) change the objects through :class:`Control`, which writes over the
server's Unix socket in the same wire format (PUT), so the watches see MODIFIED events as they would.

Credentials are made with the ``openssl`` command (a Debian package the Makefile installs): one CA, one server
certificate for the names and addresses a client may use, one random token.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import httpx

from . import kubeapi, workloads
from .kubeapi import FakeKubeAPI, Obj
from .netns import LabError
from .operator_scrape import NAMESPACE, RELEASE
from .state import LabState, state_dir
from .topology import API, COREDNS, EXPORTER, FRONT, KUBERNETES_IP, Pod, Topology

API_PORT = 6443  # the K3s API server's port on the server node
PROCESS = "apiserver/kube-apiserver"
CONTROL_TIMEOUT = 10.0  # seconds for one write over the control socket


def api_dir() -> Path:
    return state_dir() / "apiserver"


def control_socket() -> Path:
    return api_dir() / "control.sock"


def server_pod(topo: Topology) -> Pod:
    """Where the API server runs: node1's own namespace and address (a K3s server runs in the host network)."""
    node = topo.nodes[0]
    return Pod(
        name="kube-apiserver",
        namespace="kube-system",
        app="kube-apiserver",
        node=node.name,
        netns=node.netns,
        ip=node.underlay_ip,
        host_veth="",
        ports={"https": API_PORT},
    )


# --- credentials ----------------------------------------------------------------------------------------------


def make_credentials(topo: Topology, directory: Path, extra_ips: Iterable[str] = ()) -> None:
    """A CA, a server certificate for the API's names and addresses (and ``extra_ips``), and a bearer token, in
    ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    domain = topo.cluster_domain
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}"]
    sans = [f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in (KUBERNETES_IP, server_pod(topo).ip, *extra_ips)]

    def openssl(*args: str) -> None:
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise LabError(f"openssl {args[0]}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")

    d = str(directory)
    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    openssl("req", "-x509", *ec_key, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-days", "2",
            "-subj", "/CN=nplab-ca", *ca_ext)  # fmt: skip
    openssl("req", *ec_key, "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr", "-subj", "/CN=kube-apiserver")
    (directory / "server.ext").write_text(
        f"subjectAltName={','.join(sans)}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    openssl("x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{d}/server.ext", "-out", f"{d}/server.crt")  # fmt: skip
    (directory / "token").write_text(secrets.token_urlsafe(32))


def service_account_files(directory: Path, namespace: str = NAMESPACE) -> dict[str, str]:
    """What the kubelet mounts at SERVICE_ACCOUNT_DIR in every pod: file name -> content."""
    return {
        "token": (directory / "token").read_text(),
        "ca.crt": (directory / "ca.crt").read_text(),
        "namespace": namespace,
    }


def pod_env() -> dict[str, str]:
    """The env the kubelet gives every container for the `kubernetes` Service."""
    return {"KUBERNETES_SERVICE_HOST": KUBERNETES_IP, "KUBERNETES_SERVICE_PORT": "443"}


# --- the topology as API objects ------------------------------------------------------------------------------

OPT_IN = {"netpath.io/probe": "true"}


def pod_labels(pod: Pod) -> dict[str, str]:
    if pod.app == EXPORTER:  # the chart's selector labels (release netpath-exporter)
        return {"app.kubernetes.io/name": "netpath-exporter", "app.kubernetes.io/instance": RELEASE}
    if pod.app == COREDNS:
        return {"k8s-app": "kube-dns"}
    return {"app": pod.app}


def objects(topo: Topology, not_ready: Iterable[str] = ()) -> list[tuple[str, Obj]]:
    """(resource, object) for the whole lab; pods named in ``not_ready`` are Running but not Ready (their
    endpoints not ready), as after their process stopped and the readiness probe failed."""
    down = set(not_ready)
    out: list[tuple[str, Obj]] = []
    for n in topo.nodes:
        node = kubeapi.node(n.name, n.underlay_ip)
        node["spec"]["podCIDR"] = n.pod_cidr
        out.append(("nodes", node))
    for p in topo.pods:
        out.append(
            ("pods", kubeapi.pod(p.name, p.namespace, p.node, p.ip, labels=pod_labels(p), ready=p.name not in down))
        )
    for svc in topo.services:
        ports = [kubeapi.port(sp.name, sp.port, sp.target_port, sp.protocol) for sp in svc.ports]
        annotations = OPT_IN if svc.name in (FRONT, API) else {}
        out.append(
            ("services", kubeapi.service(svc.name, svc.namespace, svc.cluster_ip, ports, annotations=annotations))
        )
        endpoints: list[Obj] = []
        for ep in svc.endpoints:
            endpoint: Obj = {
                "addresses": [ep.ip],
                "conditions": {"ready": ep.pod not in down, "serving": ep.pod not in down, "terminating": False},
            }
            if ep.pod:  # a pod's endpoint; the `kubernetes` Service's is the server node's address, no pod
                endpoint["nodeName"] = ep.node
                endpoint["targetRef"] = {"kind": "Pod", "namespace": svc.namespace, "name": ep.pod}
            endpoints.append(endpoint)
        out.append(
            (
                "endpointslices",
                {
                    "metadata": {
                        "name": f"{svc.name}-lab",
                        "namespace": svc.namespace,
                        "labels": {
                            "kubernetes.io/service-name": svc.name,
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                        },
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": [{"name": sp.name, "port": sp.target_port, "protocol": sp.protocol} for sp in svc.ports],
                },
            )
        )
    front = topo.service(FRONT)
    ingress = kubeapi.ingress(FRONT, front.namespace, topo.ingress_host, FRONT, front.ports[0].port, annotations=OPT_IN)
    ingress["spec"]["ingressClassName"] = "nginx"
    out.append(("ingresses", ingress))
    return out


def path_of(resource: str, obj: Obj) -> str:
    """The object's URL path on the API (…/namespaces/{ns}/{resource}/{name})."""
    prefix, _, _, namespaced = kubeapi.RESOURCES[resource]
    meta = obj["metadata"]
    where = f"/namespaces/{meta['namespace']}" if namespaced else ""
    return f"{prefix}{where}/{resource}/{meta['name']}"


# --- the server process ---------------------------------------------------------------------------------------


async def start_server(topo: Topology, directory: Path, host: str, port: int) -> FakeKubeAPI:
    """The topology's objects served over TLS on host:port with the credentials in ``directory``
    (:func:`make_credentials`), and in plain HTTP on its root-only control socket."""
    import ssl

    api = FakeKubeAPI()
    api.token = (directory / "token").read_text()
    for resource, obj in objects(topo):
        api.add(resource, obj)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(directory / "server.crt", directory / "server.key")
    await api.start(host, port, tls)
    sock = directory / "control.sock"
    sock.unlink(missing_ok=True)
    await api.start_unix(str(sock))
    sock.chmod(0o600)
    return api


async def serve(topo: Topology, directory: Path) -> None:
    """Serve the topology until SIGTERM on the server node's address (:func:`start_server`)."""
    api = await start_server(topo, directory, server_pod(topo).ip, API_PORT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"serving {sum(len(v) for v in api.objects.values())} objects on {api.url}", flush=True)
    await stop.wait()
    await api.stop()


def start(topo: Topology, state: LabState) -> None:
    """Make credentials and start the API server in node1's namespace; returns once it listens."""
    make_credentials(topo, api_dir())
    argv = [sys.executable, "-m", "lab.apiserver", "--topology", str(state_dir() / "topology.json"), str(api_dir())]
    workloads.start(state, PROCESS, server_pod(topo), argv, API_PORT)


class Control:
    """Writes to the lab's API server over its Unix socket (root only), as a controller would: GET then PUT."""

    def __init__(self, socket: Path | None = None) -> None:
        self._socket = socket or control_socket()
        self._token = (self._socket.parent / "token").read_text()

    def _request(self, method: str, path: str, body: Obj | None = None) -> Obj:
        transport = httpx.HTTPTransport(uds=str(self._socket))
        with httpx.Client(transport=transport, base_url="http://kube-apiserver", timeout=CONTROL_TIMEOUT) as client:
            try:
                resp = client.request(
                    method,
                    path,
                    headers={"Authorization": f"Bearer {self._token}"},
                    content=json.dumps(body) if body else None,
                )
            except httpx.HTTPError as exc:
                raise LabError(f"lab API server ({self._socket}): {method} {path}: {exc}") from None
        if resp.status_code >= 300:
            raise LabError(f"lab API server: {method} {path}: {resp.status_code} {resp.text[:300]}")
        doc: Obj = resp.json()
        return doc

    def get(self, resource: str, obj: Obj) -> Obj:
        return self._request("GET", path_of(resource, obj))

    def replace(self, resource: str, obj: Obj) -> Obj:
        return self._request("PUT", path_of(resource, obj), obj)

    def set_ready(self, topo: Topology, pods: Iterable[str], ready: bool) -> None:
        """Mark pods Ready or not and their endpoints ready or not (what the kubelet and the EndpointSlice
        controller do when a readiness probe starts failing or passes again)."""
        names = set(pods)
        for resource, obj in objects(topo):
            if resource not in ("pods", "endpointslices"):
                continue
            current = self.get(resource, obj)
            changed = copy.deepcopy(current)
            if resource == "pods" and current["metadata"]["name"] in names:
                for cond in changed["status"]["conditions"]:
                    if cond["type"] in ("Ready", "ContainersReady"):
                        cond["status"] = "True" if ready else "False"
            elif resource == "endpointslices":
                for ep in changed.get("endpoints", []):
                    if (ep.get("targetRef") or {}).get("name") in names:
                        ep["conditions"].update(ready=ready, serving=ready)
            if changed != current:
                self.replace(resource, changed)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.apiserver", description=__doc__.splitlines()[0])
    parser.add_argument("--topology", required=True, type=Path, help="the lab's topology.json")
    parser.add_argument("directory", type=Path, help="credentials (make_credentials) and the control socket")
    args = parser.parse_args(argv)
    asyncio.run(serve(Topology.load(args.topology), args.directory))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
