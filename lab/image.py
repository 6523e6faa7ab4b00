"""The exporter as a user runs it: the container image, started with podman inside a lab pod namespace exactly
as the chart's DaemonSet runs it on a node.

:func:`render_chart` renders charts/netpath-exporter with real Helm (helm-python-sdk) and returns the pieces a
kubelet would act on: the DaemonSet's pod spec and the ConfigMap. :func:`start` turns that pod spec into a
``podman run`` — user and group, read-only root filesystem, capabilities dropped and added, no privilege
escalation, the ConfigMap mounted where the chart mounts it, the emptyDir as a sized tmpfs, the env with the
downward-API fields filled in, the container's args, the grace period as the stop timeout — and runs it in the
given lab namespace (``--network ns:/run/netns/<ns>``).

``hostPID: true`` (node facts of the host / node perspective): on a node, PID 1 of the host's PID namespace sits
in the host's network namespace, and the chart's config reads ``/proc/1/ns/net``. The lab's "host" of a node
is its network namespace, so a small stand-in for the node's init (root, the runtime's default capabilities,
as a real init has more than the exporter) runs in the node's namespace and the exporter joins its PID
namespace: ``/proc/1/ns/net`` inside the exporter is then the lab node's namespace, never the machine's.

What the kubelet adds to every pod is added too: the service-account files (token, ca.crt, namespace) of the
lab's API server (lab/apiserver.py) read-only at /var/run/secrets/kubernetes.io/serviceaccount unless the pod
spec sets ``automountServiceAccountToken: false``, and ``KUBERNETES_SERVICE_HOST/PORT`` naming the `kubernetes`
Service's ClusterIP — so the exporter's discovery reaches the lab's API in-cluster, through the node's NAT.

Not translated, on purpose: `resources` (cgroup limits; the budgets are benchmarks, docs/benchmarks.md) and the
liveness/readiness probes (kubelet-side; :func:`wait_ready` polls /readyz the same way).

podman reads deploy/containers.conf (CONTAINERS_CONF); the image is built by scripts/build-image.sh
(`make image`), which skips whatever did not change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.discovery.config import SERVICE_ACCOUNT_DIR

from . import apiserver, exporters, monitoring, netns
from .netns import LabError
from .operator_scrape import NAMESPACE, RELEASE
from .topology import EXPORTER, INGRESS, KUBERNETES_IP, Topology

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "netpath-exporter"
CONTAINERS_CONF = REPO / "deploy" / "containers.conf"
BUILD_SCRIPT = REPO / "scripts" / "build-image.sh"
CONTAINER_PREFIX = "nplab-"  # every container the lab starts; `remove_all` removes exactly these
PODMAN_TIMEOUT = 60.0  # seconds for one podman command (a run, a stop)
BUILD_TIMEOUT = 900.0  # a first build: mmdebstrap, wheels, podman build


@dataclass(frozen=True)
class Rendered:
    """What the chart renders for one set of values, as the kubelet sees it."""

    pod_spec: dict[str, Any]  # the DaemonSet's spec.template.spec
    config_maps: dict[str, dict[str, str]]  # ConfigMap name -> data

    @property
    def container(self) -> dict[str, Any]:
        c: dict[str, Any] = self.pod_spec["containers"][0]
        return c

    @property
    def config(self) -> dict[str, Any]:
        """The exporter's config file as the chart renders it (the ConfigMap's config.yaml)."""
        for data in self.config_maps.values():
            if "config.yaml" in data:
                doc: dict[str, Any] = yaml.safe_load(data["config.yaml"])
                return doc
        raise LabError("the chart rendered no ConfigMap with config.yaml")


@dataclass(frozen=True)
class Downward:
    """The downward-API values the kubelet fills into fieldRef env vars for one pod."""

    node_name: str
    namespace: str
    pod_ip: str
    pod_name: str

    def field(self, path: str) -> str:
        values = {
            "spec.nodeName": self.node_name,
            "metadata.namespace": self.namespace,
            "status.podIP": self.pod_ip,
            "metadata.name": self.pod_name,
        }
        if path not in values:
            raise LabError(f"env fieldRef {path!r}: not one the lab fills in ({', '.join(values)})")
        return values[path]


@dataclass(frozen=True)
class Container:
    name: str
    netns: str
    init: str | None  # the node-init stand-in whose PID namespace the exporter shares (hostPID), if any


# --- podman ---------------------------------------------------------------------------------------------------


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, check: bool = True, timeout: float = PODMAN_TIMEOUT) -> str:
    """Run one podman command with the project's containers.conf; a failure raises LabError with its stderr."""
    cmd = ["podman", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=podman_env())
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(cmd)}: no answer in {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def podman_unavailable() -> str | None:
    """Why containers cannot run here, or None. Only a missing podman or a failing `podman info` count."""
    if shutil.which("podman") is None:
        return "podman is not installed (make image installs it: apt-get install podman buildah runc mmdebstrap)"
    try:
        podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=30)
    except LabError as exc:
        return f"podman cannot run here: {exc}"
    return None


def build() -> None:
    """`make image`'s build (scripts/build-image.sh): seconds when nothing changed."""
    env = {**podman_env(), "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    proc = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False, env=env
    )
    if proc.returncode != 0:
        raise LabError(f"{BUILD_SCRIPT} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


# --- the chart ------------------------------------------------------------------------------------------------


def render_objects(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders as `helm install` would (release netpath-exporter in namespace monitoring),
    the values checked against values.schema.json first."""
    import helm_python as helm  # the dev extra: only the lab's image and monitoring paths and the chart tests need it

    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(dict(values)))
        manifests = chart.render(dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def render_chart(values: Mapping[str, Any]) -> Rendered:
    """The chart rendered for ``values``, as the kubelet sees it (:func:`render_objects`)."""
    docs = render_objects(values)
    daemonsets = [d for d in docs if d["kind"] == "DaemonSet"]
    if len(daemonsets) != 1:
        raise LabError(f"the chart rendered {len(daemonsets)} DaemonSets, expected 1")
    config_maps = {d["metadata"]["name"]: dict(d.get("data") or {}) for d in docs if d["kind"] == "ConfigMap"}
    return Rendered(pod_spec=daemonsets[0]["spec"]["template"]["spec"], config_maps=config_maps)


def lab_values(topo: Topology, node: str, **overrides: Any) -> dict[str, Any]:
    """Chart values for the lab: its cluster (the `kubernetes` and kube-dns ClusterIPs, the ingress controller's
    Service, no host ports: the lab's controller listens on its pod IP only) and, as probes.extraTargets, the
    lab's checks of ``node`` that discovery does not make (lab/exporters.py ``with_discovery``). ``overrides``
    are merged on top, one level deep (e.g. nodeFacts={"hostNetworkNamespace": True})."""
    controller = topo.service(f"{INGRESS}-controller")
    values: dict[str, Any] = {
        "cluster": {
            "kubernetesServiceIP": KUBERNETES_IP,
            "dnsServiceIP": topo.kube_dns_ip,
            "ingressControllerService": controller.key,
        },
        "probes": {
            "extraTargets": exporters.config_for(topo, node, with_discovery=True)["targets"],
            "ingressHostPorts": False,
        },
    }
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return values


# What the lab's own exporters (lab/exporters.py) do, as chart values: the lab's cadence (5 s probes, 1 s timeout,
# node facts every 5 s, so scenarios are named within seconds), node facts of the host and the node perspective
# (hostPID, root, the capabilities the chart adds for them).
LAB_EXPORTER_VALUES: dict[str, Any] = {
    "probes": {"interval": f"{exporters.PROBE_INTERVAL:g}s", "timeout": f"{exporters.PROBE_TIMEOUT:g}s"},
    "nodeFacts": {"hostNetworkNamespace": True, "interval": f"{exporters.FACTS_INTERVAL:g}s"},
    "nodePerspective": {"enabled": True},
}


def start_lab_exporters(
    topo: Topology,
    volumes_dir: Path,
    within: float = 60.0,
    values_for: Callable[[str], Mapping[str, Any]] | None = None,
) -> list[Container]:
    """One exporter container per node, from the chart rendered with the lab's values (discovery from the lab's
    API, the lab's other checks as ``probes.extraTargets``, LAB_EXPORTER_VALUES), each in its node's exporter pod
    namespace; returns when every one answers /readyz. The lab must be up without exporters of its own
    (``with_exporters=False``). ``values_for(node)``: other chart values instead (the diagnosis matrix's cadence)."""
    started: list[Container] = []
    try:
        for node in topo.nodes:
            values = values_for(node.name) if values_for else lab_values(topo, node.name, **LAB_EXPORTER_VALUES)
            rendered = render_chart(values)
            started.append(start_exporter(topo, node.name, rendered, volumes_dir))
        for node, container in zip(topo.nodes, started, strict=True):
            wait_ready(topo, node.name, container, within)
    except BaseException:
        for container in started:
            remove(container)
        raise
    return started


def downward_for(topo: Topology, node: str) -> Downward:
    pod = topo.pod_on(EXPORTER, node)
    return Downward(node_name=node, namespace=NAMESPACE, pod_ip=pod.ip, pod_name=pod.name)


def start_exporter(topo: Topology, node: str, rendered: Rendered, volumes_dir: Path) -> Container:
    """The chart's exporter container in ``node``'s exporter pod namespace (its node-init stand-in, for hostPID,
    in the node's namespace). Nothing else may listen on the exporter port there: bring the lab up with
    ``with_exporters=False``."""
    pod = topo.pod_on(EXPORTER, node)
    return start(
        rendered,
        name=pod.name,
        ns=pod.netns,
        downward=downward_for(topo, node),
        volumes_dir=volumes_dir / node,
        node_ns=topo.node(node).netns,
        service_account=apiserver.service_account_files(apiserver.api_dir()),
        pod_env=apiserver.pod_env(),
    )


def metrics_url(topo: Topology, node: str, path: str = "/metrics") -> str:
    pod = topo.pod_on(EXPORTER, node)
    return f"http://{pod.ip}:{pod.ports['metrics']}{path}"


def wait_ready(topo: Topology, node: str, container: Container, within: float = 30.0) -> float:
    """Poll /readyz from inside the lab until 200; seconds it took. Raises with the container's log if not."""
    begin = time.monotonic()
    last = ""
    while time.monotonic() - begin < within:
        try:
            monitoring.http_get(topo, metrics_url(topo, node, "/readyz"))
            return time.monotonic() - begin
        except LabError as exc:
            last = str(exc)
        state = podman("inspect", "--format", "{{.State.Status}}", container.name, check=False).strip()
        if state not in ("running", "created", "configured", ""):
            break
        time.sleep(0.1)
    raise LabError(f"{container.name} not ready ({last}); its log:\n{logs(container)[-3000:]}")


# --- pod spec -> podman run -----------------------------------------------------------------------------------


def run_args(
    rendered: Rendered,
    *,
    name: str,
    ns: str,
    downward: Downward,
    volumes_dir: Path,
    pid_of: str | None = None,
    service_account: Mapping[str, str] | None = None,
    pod_env: Mapping[str, str] | None = None,
) -> list[str]:
    """``podman run`` arguments for the chart's container; the ConfigMap volumes are written under volumes_dir,
    and so are the ``service_account`` files (name -> content), mounted as the kubelet mounts them. ``pod_env``:
    what the kubelet sets in every container before the pod spec's env (KUBERNETES_SERVICE_HOST/PORT).

    Everything the pod spec sets that changes how the process runs is translated, and anything the lab cannot
    translate is refused (LabError) rather than silently dropped."""
    spec, c = rendered.pod_spec, rendered.container
    pod_sc: dict[str, Any] = spec.get("securityContext") or {}
    sc: dict[str, Any] = {**pod_sc, **(c.get("securityContext") or {})}
    user, group = sc.get("runAsUser"), sc.get("runAsGroup")
    if user is None:
        raise LabError("the chart sets no runAsUser: the image's USER would apply, say which one is meant")
    if sc.get("runAsNonRoot") and int(user) == 0:
        raise LabError("runAsNonRoot with runAsUser 0: the kubelet would refuse to start the container")
    if sc.get("privileged"):
        raise LabError("privileged containers are not translated (the chart adds capabilities instead)")
    if spec.get("hostNetwork"):
        raise LabError("hostNetwork is not translated: in the lab the host would be the machine")
    args = [
        "run",
        "--detach",
        "--pull=never",
        f"--name={name}",
        f"--hostname={downward.pod_name[:63]}",
        f"--network=ns:{netns.NETNS_DIR / netns.check_name(ns)}",
        f"--user={user}:{group if group is not None else user}",
        f"--stop-timeout={int(spec.get('terminationGracePeriodSeconds', 30))}",
    ]
    if sc.get("readOnlyRootFilesystem"):
        # and no tmpfs of podman's own on /tmp, /run, /var/tmp: the kubelet adds none
        args += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        args.append("--security-opt=no-new-privileges")
    seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp != "RuntimeDefault":
        raise LabError(f"seccompProfile {seccomp!r}: only RuntimeDefault (podman's default profile) is translated")
    caps = sc.get("capabilities") or {}
    args += [f"--cap-drop={cap.lower()}" for cap in caps.get("drop", [])]
    args += [f"--cap-add={cap.lower()}" for cap in caps.get("add", [])]
    if spec.get("hostPID"):
        if pid_of is None:
            raise LabError("the pod spec sets hostPID: pass the node-init container whose PID namespace to join")
        args.append(f"--pid=container:{pid_of}")
    args += [f"--env={name}={value}" for name, value in (pod_env or {}).items()]
    for env in c.get("env", []):
        if "value" in env:
            value = str(env["value"])
        elif "fieldRef" in (env.get("valueFrom") or {}):
            value = downward.field(env["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            raise LabError(f"env {env['name']}: only value and fieldRef are translated")
        args.append(f"--env={env['name']}={value}")
    args += _mounts(spec, c, volumes_dir, rendered.config_maps)
    if service_account is not None and spec.get("automountServiceAccountToken", True) is not False:
        source = _volume_files(volumes_dir / "serviceaccount", service_account)
        args.append(f"--volume={source}:{SERVICE_ACCOUNT_DIR}:ro")
    if c.get("command"):
        args.append(f"--entrypoint={c['command'][0]}")
        image_and_args = [c["image"], *c["command"][1:], *c.get("args", [])]
    else:
        image_and_args = [c["image"], *c.get("args", [])]
    return [*args, *image_and_args]


def _volume_files(source: Path, files: Mapping[str, str]) -> Path:
    """A ConfigMap's or the service account's files as the kubelet writes them (defaultMode 0644)."""
    source.mkdir(parents=True, exist_ok=True)
    source.chmod(0o755)
    for key, text in files.items():
        (source / key).write_text(text)
        (source / key).chmod(0o644)
    return source


def _mounts(spec: dict[str, Any], c: dict[str, Any], root: Path, config_maps: dict[str, dict[str, str]]) -> list[str]:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    args = []
    for mount in c.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        if "configMap" in volume:
            data = config_maps.get(volume["configMap"]["name"])
            if data is None:
                raise LabError(f"volume {mount['name']}: ConfigMap {volume['configMap']['name']} was not rendered")
            source = _volume_files(root / mount["name"], data)
            args.append(f"--volume={source}:{target}:{'ro' if mount.get('readOnly') else 'rw'}")
        elif "emptyDir" in volume:
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            options = "rw,mode=1777" + (f",size={_bytes(size)}" if size else "")
            args.append(f"--tmpfs={target}:{options}")
        else:
            raise LabError(f"volume {mount['name']}: only configMap and emptyDir are translated")
    return args


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


# --- start, stop, remove --------------------------------------------------------------------------------------


def start(
    rendered: Rendered,
    *,
    name: str,
    ns: str,
    downward: Downward,
    volumes_dir: Path,
    node_ns: str | None = None,
    service_account: Mapping[str, str] | None = None,
    pod_env: Mapping[str, str] | None = None,
) -> Container:
    """Start the chart's container in lab namespace ``ns``; with hostPID, first the node-init stand-in in
    ``node_ns`` (the lab node whose "host" namespaces the pod shares). The caller removes it (:func:`remove`)."""
    name = CONTAINER_PREFIX + name
    init = None
    if rendered.pod_spec.get("hostPID"):
        if node_ns is None:
            raise LabError("the pod spec sets hostPID: pass the lab node's namespace (node_ns)")
        init = f"{name}-node-init"
        podman(
            "run", "--detach", "--pull=never", f"--name={init}",
            f"--network=ns:{netns.NETNS_DIR / netns.check_name(node_ns)}",
            "--user=0:0", "--cap-add=all", "--read-only", "--entrypoint=sleep", rendered.container["image"], "infinity",
        )  # fmt: skip
    try:
        podman(
            *run_args(
                rendered,
                name=name,
                ns=ns,
                downward=downward,
                volumes_dir=volumes_dir,
                pid_of=init,
                service_account=service_account,
                pod_env=pod_env,
            )
        )
    except BaseException:
        if init is not None:
            podman("rm", "--force", "--time=0", init, check=False)
        raise
    return Container(name=name, netns=ns, init=init)


def inspect(container: Container) -> dict[str, Any]:
    import json

    docs: list[dict[str, Any]] = json.loads(podman("inspect", container.name))
    return docs[0]


def logs(container: Container) -> str:
    """The container's output (stdout and stderr interleaved as podman recorded them)."""
    proc = subprocess.run(
        ["podman", "logs", container.name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=PODMAN_TIMEOUT, check=False,
        env=podman_env(),
    )  # fmt: skip
    return proc.stdout


def processes(container: Container) -> list[tuple[int, str]]:
    """(PID inside the container's PID namespace, command line) of every process the container sees."""
    out = podman("top", container.name, "pid", "args")
    rows = [line.split(None, 1) for line in out.splitlines()[1:] if line.strip()]
    return [(int(row[0]), row[1].strip() if len(row) > 1 else "") for row in rows]


def stop(container: Container, timeout: int) -> tuple[float, int]:
    """``podman stop -t timeout`` (SIGTERM to the container's process, SIGKILL after timeout), as the kubelet
    stops a pod: (seconds until it had exited, its exit code)."""
    begin = time.monotonic()
    podman("stop", f"--time={timeout}", container.name, timeout=timeout + PODMAN_TIMEOUT)
    elapsed = time.monotonic() - begin
    code = int(podman("inspect", "--format", "{{.State.ExitCode}}", container.name).strip())
    return elapsed, code


def remove(container: Container) -> None:
    """Remove the container and its node-init stand-in, whatever state they are in."""
    for name in (container.name, container.init):
        if name is not None:
            podman("rm", "--force", "--time=0", name, check=False)


def lab_containers() -> list[str]:
    out = podman("ps", "--all", "--format", "{{.Names}}", check=False)
    return [n for n in out.split() if n.startswith(CONTAINER_PREFIX)]


def remove_all() -> list[str]:
    """Remove every container the lab started (names nplab-…), e.g. after an interrupted run."""
    names = lab_containers()
    # the exporters first: a node-init stand-in cannot be removed while a container shares its PID namespace
    for name in sorted(names, key=lambda n: n.endswith("-node-init")):
        podman("rm", "--force", "--time=0", name, check=False)
    return names
