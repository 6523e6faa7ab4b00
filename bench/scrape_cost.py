"""What a scrape costs: GET /metrics latency and size of the real exporter process at N loopback TCP targets.

Runs `netpath-exporter run` (node facts off) against N TCP targets spread over a few loopback acceptors in a child
process, waits until every target has been probed, then times sequential GET /metrics requests the way Prometheus
makes them (one keep-alive connection, `Accept: application/openmetrics-text` or plain text, with and without
`Accept-Encoding: gzip`). Two figures per row:

- **fresh**: requests spaced further apart than the server's exposition cache, so every one renders;
- **back-to-back**: requests in a tight loop, which is what many concurrent scrapers look like to the server.

Peers in the same run: `generate_latest()` on an in-process registry of the same size (what prometheus_client's
text rendering alone costs for that many lines), and with `--compare DIR` the same exporter from another source
tree (e.g. `git worktree add /tmp/before <rev>`), measured right after this one at each target count so both see
the same machine load. Everything talks to 127.0.0.1; every loop is bounded by a count.
Run: `.venv/bin/python bench/scrape_cost.py [--targets 100 1000] [--requests 12] [--compare DIR]`.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ACCEPTORS = 8

ACCEPTOR = textwrap.dedent(
    """
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    ports = []
    for _ in range(int(sys.argv[1])):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0)); s.listen(4096); s.setblocking(False)
        sel.register(s, selectors.EVENT_READ); ports.append(str(s.getsockname()[1]))
    print(" ".join(ports), flush=True)
    while True:
        for key, _ in sel.select():
            try:
                c, _ = key.fileobj.accept(); c.close()
            except BlockingIOError:
                pass
    """
)

FORMATS = {
    "text": "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "openmetrics": "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def acceptors() -> Iterator[list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", ACCEPTOR, str(ACCEPTORS)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield [int(p) for p in proc.stdout.readline().split()]
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def exporter(n: int, ports: list[int], interval: float, source: Path) -> Iterator[int]:
    listen = free_port()
    doc = {
        "listen": f"127.0.0.1:{listen}",
        "defaults": {"interval": f"{interval}s", "timeout": "1s"},
        "scheduler": {"max_concurrency": 128},
        "node_facts": {"enabled": False},
        "targets": [
            {"name": f"t{i}", "kind": "tcp", "path": "pod_ip", "address": f"127.0.0.1:{ports[i % len(ports)]}"}
            for i in range(n)
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(doc, f)
    bin_ = Path(sys.executable).parent / "netpath-exporter"
    env = {**os.environ, "PYTHONPATH": str(source)}
    proc = subprocess.Popen([str(bin_), "run", "--config", f.name], stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:  # until every target has a result: the exposition has its full size
            try:
                body = get(listen, "/metrics", FORMATS["text"], gzip_=False)[1]
                if body.count(b"netpath_probe_success{") >= n:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"exporter with {n} targets not ready in 30 s")
            time.sleep(0.5)
        yield listen
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.unlink(f.name)


def get(
    port: int, path: str, accept: str, *, gzip_: bool, conn: http.client.HTTPConnection | None = None
) -> tuple[float, bytes, int]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Accept": accept, **({"Accept-Encoding": "gzip"} if gzip_ else {})}
    start = time.perf_counter()
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    raw = r.read()
    took = time.perf_counter() - start
    if own:
        c.close()
    body = gzip.decompress(raw) if r.getheader("Content-Encoding") == "gzip" else raw
    return took, body, len(raw)


def series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def measure(port: int, fmt: str, gzip_: bool, count: int, spacing: float) -> tuple[list[float], int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times, size, n = [], 0, 0
    for _ in range(count):
        took, body, size = get(port, "/metrics", FORMATS[fmt], gzip_=gzip_, conn=conn)
        times.append(took)
        n = series(body)
        if spacing:
            time.sleep(spacing)
    conn.close()
    return times, size, n


def peer_render(lines: int, count: int) -> list[float]:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    gauge = Gauge("bench_series", "one line per series", ["target", "k"], registry=registry)
    for i in range(lines):
        gauge.labels(f"t{i // 24}", str(i % 24)).set(i)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        generate_latest(registry)
        times.append(time.perf_counter() - start)
    return times


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms (p90 {statistics.quantiles(values, n=10)[-1] * 1000:.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--interval", type=float, default=5.0, help="probe interval, seconds (default 5)")
    parser.add_argument("--spacing", type=float, default=1.2, help="seconds between 'fresh' requests (default 1.2)")
    parser.add_argument("--compare", type=Path, help="another source tree of the exporter, measured alongside")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally blocks: no exporter left behind
    sources = [("this tree", ROOT)] + ([(f"{args.compare}", args.compare.resolve())] if args.compare else [])
    print(
        f"Run: `{' '.join(sys.argv)}` on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, load average "
        f"{os.getloadavg()[0]:.1f} at start.\n"
    )
    print(
        "| targets | exporter | format | gzip | series | body | fresh GET /metrics | back-to-back | "
        "peer: generate_latest alone |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with acceptors() as ports:
        for n in args.targets:
            for label, source in sources:
                with exporter(n, ports, args.interval, source) as port:
                    for fmt in args.formats:
                        for gz in (False, True):
                            fresh, size, count = measure(port, fmt, gz, args.requests, args.spacing)
                            tight, _, _ = measure(port, fmt, gz, args.requests, 0.0)
                            peer = peer_render(count, max(3, args.requests // 4))
                            print(
                                f"| {n} | {label} | {fmt} | {'yes' if gz else 'no'} | {count} | "
                                f"{size / 1024:.1f} KiB | {ms(fresh)} | {ms(tight)} | {ms(peer)} |",
                                flush=True,
                            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
