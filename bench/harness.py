"""What the benchmarks share: loopback servers in child processes, /proc CPU and memory accounting, quantiles,
the plain ``connect()`` floor and the prometheus-blackbox-exporter peer.

Nothing here imports the exporter: a benchmark that drives the exporter only through its command line and HTTP
endpoints keeps working when the package's internals are refactored.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import textwrap
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# Accepts and closes at once on `argv[1]` ports (default 1); prints the ports, space-separated, when listening.
ACCEPTOR = textwrap.dedent(
    """
    import selectors, socket, sys
    selector = selectors.DefaultSelector()
    ports = []
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0)); s.listen(4096); s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
        ports.append(s.getsockname()[1])
    print(*ports, flush=True)
    while True:
        for key, _ in selector.select():
            while True:  # drain the accept queue: hundreds of connects a second arrive in bursts
                try:
                    c, _ = key.fileobj.accept()
                except BlockingIOError:
                    break
                c.close()
    """
)

TCP_CONNECT_MODULE = "  tcp_connect:\n    prober: tcp\n    timeout: 2s\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def child(
    args: list[str],
    ready_line: bool = True,
    *,
    stderr: int | IO[bytes] = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A child process, terminated (then killed) on exit; yields it and its first stdout line if asked for."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=None if env is None else dict(env)
    )
    try:
        line = proc.stdout.readline().strip() if ready_line and proc.stdout else ""
        yield proc, line
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stat_fields(pid: int) -> list[str]:
    # after the ")" that ends the command name: state, ppid, ... utime is field 14 of stat(5), here index 11
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all its threads."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> dict[int, list[str]]:
    """The stat fields of a process and every live descendant, by pid."""
    children: dict[int, list[int]] = defaultdict(list)
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except (OSError, IndexError):
            continue  # gone since listdir
        children[int(fields[1])].append(int(entry))
        stats[int(entry)] = fields
    tree: dict[int, list[str]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in tree or pid not in stats:
            continue
        tree[pid] = stats[pid]
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and every live descendant (all threads), plus what their reaped children used.

    utime+stime cover a process's threads; cutime+cstime add children it has waited for (short-lived helpers
    such as iptables-save), so a helper's CPU is counted whether it is still running or already gone.
    """
    ticks = sum(sum(int(f) for f in fields[11:15]) for fields in process_tree(root).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) of a process, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def tree_memory_mib(root: int) -> dict[str, float]:
    """VmRSS and VmHWM summed over a process tree (a probe worker process counts too; shared pages twice)."""
    total: dict[str, float] = defaultdict(float)
    for pid in process_tree(root):
        try:
            for key, value in memory_mib(pid).items():
                total[key] += value
        except OSError:
            continue  # exited meanwhile
    return dict(total)


def rss_mib(pid: int | str = "self") -> float:
    return memory_mib(pid).get("VmRSS", float("nan"))


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    """Median, p90, p99 of raw samples (nearest rank)."""
    if not samples:
        return float("nan"), float("nan"), float("nan")
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return statistics.median(ordered), pick(0.9), pick(0.99)


def floor_connect(port: int) -> float:
    """One plain blocking connect() to a loopback port: the floor no prober can beat."""
    s = socket.socket()
    try:
        start = time.perf_counter()
        s.connect(("127.0.0.1", port))
        return time.perf_counter() - start
    finally:
        s.close()


def wait_http_ok(url: str, attempts: int = 100, every: float = 0.05) -> bool:
    """Bounded wait for a URL to answer 2xx."""
    for _ in range(attempts):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return True
        except OSError:
            time.sleep(every)
    return False


@contextmanager
def blackbox(modules: str = TCP_CONNECT_MODULE) -> Iterator[tuple[int, int]]:
    """prometheus-blackbox-exporter with the given modules (YAML under `modules:`); yields (its port, its pid)."""
    binary = shutil.which("prometheus-blackbox-exporter")
    if binary is None:
        raise SystemExit("prometheus-blackbox-exporter is not installed (make deps)")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "blackbox.yml"
        config.write_text("modules:\n" + modules)
        port = free_port()
        with child([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"], False) as (p, _):
            if not wait_http_ok(f"http://127.0.0.1:{port}/-/healthy"):
                raise RuntimeError("prometheus-blackbox-exporter did not start listening")
            yield port, p.pid


def probe_values(body: str) -> dict[str, float]:
    """probe_success and probe_duration_seconds from a blackbox /probe answer."""
    values = {}
    for line in body.splitlines():
        if line.startswith(("probe_success ", "probe_duration_seconds ")):
            name, value = line.split()
            values[name] = float(value)
    return values
