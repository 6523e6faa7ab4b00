"""The lab's workloads, each a real program started inside its pod namespace with `ip netns exec`.

CoreDNS stand-in: dnsmasq answering ``<svc>.<ns>.svc.cluster.local`` for every lab Service (UDP and TCP).
keybuzz-front: lab/apps/httpapp.py, two replicas. Ingress controller: nginx, one per node (a DaemonSet, so a
node whose ClusterIP path is broken shows a 504 at its own ingress), routing Host platform.keybuzz.io to the
keybuzz-front ClusterIP with short upstream timeouts. Exporters: see lab/exporters.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from . import netns
from .netns import LabError
from .state import LabState, Proc, state_dir
from .topology import COREDNS, FRONT, INGRESS, Pod, Topology

NGINX = "/usr/sbin/nginx"
DNSMASQ = "/usr/sbin/dnsmasq"
INGRESS_CONNECT_TIMEOUT = 1.0  # seconds: an unreachable upstream gives 504 after this
INGRESS_READ_TIMEOUT = 2.0  # seconds: a slower backend gives 504 after this
SLOW_DELAY_HEALTHY = 0.05  # /slow's delay while the app is healthy
SLOW_DELAY_BROKEN = 4.0  # backend-slow: longer than INGRESS_READ_TIMEOUT
READY_TIMEOUT = 10.0


def start(state: LabState, name: str, pod: Pod, argv: list[str], port: int | None, proto: str = "t") -> Proc:
    """Start ``argv`` in the pod's namespace, wait until it listens on ``port`` (if given), record it."""
    logs = state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / (name.replace("/", "_") + ".log")
    with log.open("ab") as out:
        child = subprocess.Popen(
            ["ip", "netns", "exec", netns.check_name(pod.netns), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not killed with the terminal that ran `lab up`
        )
    proc = Proc(name=name, netns=pod.netns, pid=child.pid, argv=argv, log=str(log))
    state.processes[name] = proc
    state.save()
    if port is not None:
        wait_listening(proc, pod, port, proto)
    return proc


def wait_listening(proc: Proc, pod: Pod, port: int, proto: str = "t") -> None:
    """Poll `ss` inside the pod namespace (never connect from the root namespace) until the port is bound."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        out = netns.ns_exec(pod.netns, ["ss", "-Hln" + proto], check=False)
        if any(line.split()[3].endswith(f":{port}") for line in out.splitlines() if len(line.split()) > 3):
            return
        if not _running(proc.pid):
            raise LabError(f"{proc.name} exited at start; see {proc.log}:\n{_tail(proc.log)}")
        time.sleep(0.05)
    raise LabError(f"{proc.name} not listening on {pod.ip}:{port} after {READY_TIMEOUT}s; see {proc.log}")


def stop(state: LabState, name: str) -> None:
    proc = state.processes.pop(name, None)
    if proc is not None:
        netns.kill_pids([proc.pid])
        state.save()


def _running(pid: int) -> bool:
    return netns._alive(pid)


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- CoreDNS stand-in ------------------------------------------------------------------------------------


# dns-wrong-answer: CoreDNS answers the app's name with an address nothing serves (a stale record)
WRONG_FRONT_IP = "10.43.99.99"


def dnsmasq_conf(topo: Topology, pod: Pod, wrong: bool = False) -> str:
    lines = [
        "no-resolv",  # no upstream: cluster names only, like CoreDNS with its forwarder unreachable
        "no-hosts",
        "bind-interfaces",
        f"listen-address={pod.ip}",
        "port=53",
        f"local=/{topo.cluster_domain}/",  # unknown cluster names: NXDOMAIN, never forwarded
        f"pid-file={state_dir() / 'dnsmasq.pid'}",
        "user=root",
    ]
    lines += [
        f"host-record={s.dns_name},{WRONG_FRONT_IP if wrong and s.name == FRONT else s.cluster_ip}"
        for s in topo.services
    ]
    return "\n".join(lines) + "\n"


def start_coredns(topo: Topology, state: LabState, wrong: bool = False) -> None:
    for pod in topo.pods_of(COREDNS):
        conf = state_dir() / f"dnsmasq-{pod.name}.conf"
        conf.write_text(dnsmasq_conf(topo, pod, wrong))
        argv = [DNSMASQ, "--keep-in-foreground", f"--conf-file={conf}"]
        proc = start(state, f"dnsmasq/{pod.name}", pod, argv, None)
        wait_listening(proc, pod, 53, "u")
        wait_listening(proc, pod, 53, "t")


def stop_coredns(topo: Topology, state: LabState) -> None:
    for pod in topo.pods_of(COREDNS):
        stop(state, f"dnsmasq/{pod.name}")


# --- keybuzz-front -----------------------------------------------------------------------------------------


def slow_delay_file() -> Path:
    """While this file exists, every keybuzz-front replica's /slow sleeps the seconds it holds."""
    return state_dir() / "front-slow-delay"


def start_front(topo: Topology, state: LabState, slow_delay: float = SLOW_DELAY_HEALTHY) -> None:
    for pod in topo.pods_of(FRONT):
        port = pod.ports["http"]
        argv = [
            sys.executable,
            "-m",
            "lab.apps.httpapp",
            "--listen",
            f"{pod.ip}:{port}",
            "--name",
            pod.name,
            "--slow-delay",
            str(slow_delay),
            "--slow-delay-file",
            str(slow_delay_file()),
        ]
        start(state, f"httpapp/{pod.name}", pod, argv, port)


def stop_front(topo: Topology, state: LabState) -> None:
    for pod in topo.pods_of(FRONT):
        stop(state, f"httpapp/{pod.name}")


# --- ingress controller ------------------------------------------------------------------------------------


def nginx_conf(topo: Topology, pod: Pod, prefix: Path) -> str:
    backend = topo.service(FRONT)
    upstream = f"{backend.cluster_ip}:{backend.ports[0].port}"
    return f"""\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen {pod.ip}:80 default_server;
        location / {{ return 404 "no ingress rule for this host\\n"; }}
    }}
    server {{
        listen {pod.ip}:80;
        server_name {topo.ingress_host};
        location / {{
            # The backend Service by its ClusterIP: this request takes the node's kube-proxy NAT path.
            proxy_pass http://{upstream};
            proxy_set_header Host $host;
            proxy_connect_timeout {INGRESS_CONNECT_TIMEOUT:g}s;
            proxy_read_timeout {INGRESS_READ_TIMEOUT:g}s;
            proxy_send_timeout {INGRESS_READ_TIMEOUT:g}s;
            proxy_next_upstream off;
        }}
    }}
}}
"""


def start_ingress(topo: Topology, state: LabState) -> None:
    for pod in topo.pods_of(INGRESS):
        prefix = state_dir() / f"nginx-{pod.node}"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(topo, pod, prefix))
        argv = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        start(state, f"nginx/{pod.name}", pod, argv, pod.ports["http"])


def start_all(topo: Topology, state: LabState) -> None:
    start_coredns(topo, state)
    start_front(topo, state)
    start_ingress(topo, state)
