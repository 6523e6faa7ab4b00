"""`up`, `down` and `status` for the whole lab, and (re)applying one node's iptables rules."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from . import apiserver, exporters, firewall, kubeproxy, netns, network, workloads
from .netns import LabError
from .state import LabState, state_dir, topology_path
from .topology import EXPORTER, INGRESS_EVERY_NODE, Node, Topology, build


def apply_rules(topo: Topology, node: Node, faults: dict[str, float | None]) -> None:
    """Replace the node's filter and nat tables in one iptables-restore (as kube-proxy does), then forget
    tracked connections so the next packet meets the new rules (kube-proxy flushes stale UDP entries too)."""
    rules = firewall.render_filter(topo, faults) + kubeproxy.render_nat(topo, faults)
    netns.ns_exec(node.netns, ["iptables-restore"], stdin=rules)
    netns.ns_exec(node.netns, ["conntrack", "-F"], check=False)


LOCK_PATH = Path("/run/lock/nplab.lock")  # outside the state dir, which `down` removes


@contextlib.contextmanager
def exclusive(wait: float = 900.0) -> Iterator[None]:
    """Hold the lab lock: test sessions and the demo share one machine-wide lab, one user at a time.

    Whoever holds it may `down` leftovers first: a lab nobody holds the lock for is a crashed run's."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("w") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"another lab session held {LOCK_PATH} for {wait:.0f}s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_topology() -> Topology:
    path = topology_path()
    if not path.exists():
        raise LabError(f"the lab is not up ({path} does not exist); run: python -m lab up")
    return Topology.load(path)


def up(
    nodes: int = 3,
    mtu: int = 1500,
    *,
    with_exporters: bool = True,
    ingress: str = INGRESS_EVERY_NODE,
    from_image: bool = False,
    layout: str | None = None,
) -> Topology:
    """Build the lab. The exporters run as venv processes with the lab's config files, or with ``from_image`` as
    containers of the image with the chart's rendered config and securityContext (lab/image.py; build the image
    first, holding the lab lock: :func:`lab.image.build`)."""
    # bad --nodes/--mtu/--layout are reported before anything else
    topo = build(nodes, mtu, str(state_dir()), ingress, layout)
    leftovers = netns.lab_namespaces()
    if leftovers or topology_path().exists():
        raise LabError(
            f"a lab (or what is left of one) exists: {', '.join(leftovers) or topology_path()}; run: python -m lab down"
        )
    topo = dataclasses.replace(
        topo,
        exporters={
            p.node: {
                "pod": p.name,
                "netns": p.netns,
                "ip": p.ip,
                "metrics": f"http://{p.ip}:{p.ports['metrics']}/metrics",
                "config": str(exporters.config_path(p.node)),
            }
            for p in topo.pods_of(EXPORTER)
        },
    )
    state_dir().mkdir(parents=True, exist_ok=True)
    topology_path().write_text(topo.to_json())  # first, so `down` can always find what to remove
    state = LabState()
    state.save()
    try:
        network.build(topo)
        for node in topo.nodes:
            apply_rules(topo, node, {})
        workloads.start_all(topo, state)
        apiserver.start(topo, state)
        exporters.write_configs(topo)
        if with_exporters and from_image:
            from . import image  # podman and helm-python: only this path needs them

            image.start_lab_exporters(topo, state_dir() / "volumes")
        elif with_exporters:
            exporters.start_exporters(topo, state)
    except BaseException:
        down()
        raise
    return topo


def down() -> list[str]:
    """Remove every lab container, process, namespace, resolv.conf and the state dir. Safe after a crash;
    idempotent."""
    state = LabState.load() if state_dir().exists() else LabState()
    if shutil.which("podman") is not None:  # exporters run from the image (lab/image.py): containers first
        from . import image

        image.remove_all()
    netns.kill_pids(p.pid for p in state.processes.values() if _in_lab(p.pid))
    removed = netns.lab_namespaces()
    for ns in removed:
        netns.delete(ns)
    if netns.NETNS_ETC.is_dir():
        for d in netns.NETNS_ETC.iterdir():
            if d.name.startswith(netns.PREFIX):
                shutil.rmtree(d, ignore_errors=True)
    netns.remove_empty_etc_dir()
    shutil.rmtree(state_dir(), ignore_errors=True)
    return removed


def _in_lab(pid: int) -> bool:
    """Only kill a recorded PID if it still is one of ours (PIDs get reused after a crash or reboot)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    known = (
        b"dnsmasq",
        b"nginx",
        b"lab.apps.httpapp",
        b"lab.apiserver",
        b"netpath-exporter",
        b"prometheus",
    )  # + alertmanager
    return any(k in part for part in cmdline for k in known)


def status() -> str:
    lines: list[str] = []
    spaces = netns.lab_namespaces()
    if not topology_path().exists():
        return "lab is down" + (f" (but namespaces are left: {', '.join(spaces)})" if spaces else "")
    topo = Topology.load(topology_path())
    state = LabState.load()
    lines.append(
        f"lab is up: {len(topo.nodes)} nodes, underlay MTU {topo.underlay_mtu}, overlay MTU {topo.overlay_mtu}, "
        f"{len(spaces)} namespaces, topology {topology_path()}"
    )
    for node in topo.nodes:
        pods = ", ".join(f"{p.name} {p.ip}" for p in topo.pods if p.node == node.name)
        lines.append(f"  {node.name} ({node.netns}, {node.underlay_ip}, {node.pod_cidr}): {pods}")
    for svc in topo.services:
        ports = ",".join(f"{p.port}/{p.protocol}" for p in svc.ports)
        eps = ", ".join(e.ip for e in svc.endpoints)
        lines.append(f"  service {svc.key} {svc.cluster_ip} {ports} -> {eps}")
    for name, proc in sorted(state.processes.items()):
        alive = "running" if workloads._running(proc.pid) else "DEAD"
        lines.append(f"  process {name} pid {proc.pid} in {proc.netns}: {alive}")
    if shutil.which("podman") is not None:
        from . import image

        lines += [f"  container {name}" for name in image.lab_containers()]
    if state.faults:
        for fault, where in state.faults.items():
            lines.append(
                f"  fault {fault}: "
                + ", ".join(f"{n}" + (f" rate {r}" if r is not None else "") for n, r in where.items())
            )
    else:
        lines.append("  no faults")
    return "\n".join(lines)
