"""The whole exporter under load: CPU, memory, scrape cost, scheduler lag and latency fidelity, vs blackbox_exporter.

`netpath-exporter run --config FILE` (as ``python -m exporter run``, this checkout's code) runs as a child process
with a generated config: N loopback targets, 5 s interval, node facts on (this process's own namespace, read only)
and the localizer on (it always is). It is driven and read only through its command line and its HTTP endpoints
(/readyz, /metrics, /diagnose), so this benchmark survives refactors of the package.

Each exporter run has phases of ``--duration`` seconds, each with its own plain ``connect()`` floor measured by a
child process in the same seconds:
- ``quiet``: no requests during the phase (one /metrics read at each end gives the counter deltas);
- ``scrape 15 s``: a Prometheus-like scrape of /metrics every 15 s (Prometheus' Accept and Accept-Encoding
  headers), and a /diagnose read every 15 s;
- ``scrape 1 s``: the stress mode, a scrape every second (and /diagnose every 15 s).

What is read, per phase: CPU of the exporter's process tree from /proc/<pid>/stat (all threads, live children and
reaped ones); probes from the deltas of its own ``netpath_probe_attempts_total``; RSS from /proc/<pid>/status;
scheduler lag quantiles from ``netpath_scheduler_lag_seconds`` bucket deltas; the reported connect latency both
as the histogram ``netpath_probe_duration_seconds`` (bucket deltas, quantiles interpolated inside the bucket as
Prometheus' histogram_quantile() does, and the bucket bound) and exactly, from the ``connect`` values of
``netpath_probe_phase_seconds`` (the last probe of each target, collected at every scrape, each distinct value
counted once).

Peer in the same run: prometheus-blackbox-exporter probing the same targets at the same rate (N / interval requests
a second on /probe, a bounded driver with limited concurrency and keep-alive connections, as Prometheus drives
it); its CPU from /proc, its probe_duration_seconds against the floor of the same seconds. Also for HTTP and DNS.

Servers (TCP acceptors, the lab's HTTP app, a real dnsmasq, the floor) are child processes; everything is on
127.0.0.1; every loop is bounded in count and time; every child is killed on the way out. Run:
``.venv/bin/python bench/exporter_load.py`` (``--quick`` for a smoke run). Prints a Markdown report for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from harness import (  # noqa: E402
    ACCEPTOR,
    TCP_CONNECT_MODULE,
    blackbox,
    child,
    free_port,
    probe_values,
    quantiles,
    tree_cpu_seconds,
    tree_memory_mib,
    wait_http_ok,
)

from lab.loopback import dnsmasq  # noqa: E402  (a real dnsmasq; lab/ is test infrastructure, not the exporter)

# What Prometheus 2.42 (the Debian package here) sends when it scrapes.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
DNS_NAME = "web.default.svc.cluster.local"
KINDS = ("tcp", "http", "dnsudp", "dnstcp")
KIND_TITLE = {"tcp": "tcp", "http": "http", "dnsudp": "dns (udp)", "dnstcp": "dns (tcp)"}
# Target names say their kind, so series are classified by a label *value*: no label name is assumed.
TARGET_NAME = re.compile(r"^bench-(tcp|http|dnsudp|dnstcp)-\d+$")
PHASE_LINE = re.compile(rb"^netpath_probe_phase_seconds\{([^}\n]*)\} (\S+)", re.M)
MODES = {"quiet": (None, None), "scrape 15 s": (15.0, 15.0), "scrape 1 s": (1.0, 15.0)}  # /metrics, /diagnose

_DNS_MODULE = {"query_name": DNS_NAME, "query_type": "A", "preferred_ip_protocol": "ip4"}
BLACKBOX_MODULES = TCP_CONNECT_MODULE + textwrap.indent(
    yaml.safe_dump(
        {
            "http_2xx": {"prober": "http", "timeout": "2s", "http": {"preferred_ip_protocol": "ip4"}},
            "dns_udp": {"prober": "dns", "timeout": "2s", "dns": {**_DNS_MODULE, "transport_protocol": "udp"}},
            "dns_tcp": {"prober": "dns", "timeout": "2s", "dns": {**_DNS_MODULE, "transport_protocol": "tcp"}},
        }
    ),
    "  ",
)
BLACKBOX_MODULE_OF = {"tcp": "tcp_connect", "http": "http_2xx", "dnsudp": "dns_udp", "dnstcp": "dns_tcp"}

# A child that times plain blocking connect()s round-robin over ports for a while, then prints them (seconds).
FLOOR = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {bench!r})
    from harness import floor_connect
    ports, seconds, every = [int(p) for p in sys.argv[1].split(",")], float(sys.argv[2]), float(sys.argv[3])
    samples, end = [], time.monotonic() + seconds
    for i in range(int(seconds / every) + 1):
        if time.monotonic() >= end:
            break
        try:
            samples.append(floor_connect(ports[i % len(ports)]))
        except OSError:
            pass
        time.sleep(every)
    print(" ".join(f"{{s:.9f}}" for s in samples), flush=True)
    """
).format(bench=str(BENCH))


# A tiny HTTP/1.1 server: 200 and a short body, then close. asyncio with a 4096-deep accept queue, because the
# exporter starts a round of probes within a fraction of the interval and a small backlog (socketserver's is 5,
# lab/apps/httpapp.py's) drops SYNs under that burst: the probes would then measure the server's queue.
HTTP_SERVER = textwrap.dedent(
    """
    import asyncio
    BODY = b"bench ok\\n"
    HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nConnection: close\\r\\n"
    RESPONSE = HEAD + b"Content-Length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY)
    async def handle(reader, writer):
        try:
            await asyncio.wait_for(reader.readuntil(b"\\r\\n\\r\\n"), 5)
            writer.write(RESPONSE)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()
    asyncio.run(main())
    """
)


# --- loopback servers --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    tcp_ports: tuple[int, ...]
    http_url: str
    dns_host: str
    dns_port: int

    def address(self, kind: str, i: int) -> str:
        """What blackbox is asked to probe for the i-th target of a kind (the exporter's config says the same)."""
        if kind == "tcp":
            return f"127.0.0.1:{self.tcp_ports[i % len(self.tcp_ports)]}"
        if kind == "http":
            return self.http_url
        return f"{self.dns_host}:{self.dns_port}"


@contextmanager
def servers(acceptors: int = 2, ports_each: int = 8) -> Iterator[Servers]:
    """TCP acceptors (several ports each: hundreds of connects a second spread over many 4-tuples), an HTTP
    server and a real dnsmasq, all child processes."""
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(acceptors):
            _, line = stack.enter_context(child([sys.executable, "-c", ACCEPTOR, str(ports_each)]))
            ports += [int(p) for p in line.split()]
        _, http_port = stack.enter_context(child([sys.executable, "-c", HTTP_SERVER]))
        dns = stack.enter_context(dnsmasq({DNS_NAME: "10.43.0.20"}, local_zones=["cluster.local"]))
        yield Servers(tuple(ports), f"http://127.0.0.1:{int(http_port)}/", dns.host, dns.port)


def floor_start(ports: Sequence[int], seconds: float, every: float = 0.05) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", FLOOR, ",".join(map(str, ports)), str(seconds), str(every)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def floor_collect(proc: subprocess.Popen[str], seconds: float) -> list[float]:
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return []
    return [float(s) for s in out.split()]


# --- HTTP, the way Prometheus asks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    seconds: float  # request sent to last byte read
    wire_bytes: int  # as sent (compressed when the server gzipped)
    body: bytes  # decoded
    gzipped: bool
    content_type: str

    @property
    def gzip_bytes(self) -> int:
        """The gzip size: as sent when the server compressed, else what gzip (level 9, prometheus_client's) gives."""
        return self.wire_bytes if self.gzipped else len(gzip.compress(self.body))


def get(port: int, path: str, timeout: float = 60.0) -> Fetch:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        start = time.perf_counter()
        conn.request("GET", path, headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        response = conn.getresponse()
        wire = response.read()
        seconds = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}: {wire[:200]!r}")
        gzipped = (response.getheader("Content-Encoding") or "").lower() == "gzip"
        body = gzip.decompress(wire) if gzipped else wire
        return Fetch(seconds, len(wire), body, gzipped, response.getheader("Content-Type") or "")
    finally:
        conn.close()


def connect_values(body: bytes) -> set[tuple[bytes, bytes]]:
    """(series, value) of every TCP target's last `connect` phase in an exposition (a cheap C-speed scan)."""
    return {
        (labels, value)
        for labels, value in PHASE_LINE.findall(body)
        if b'phase="connect"' in labels and b'"bench-tcp-' in labels
    }


class Poller(threading.Thread):
    """Scrapes /metrics and reads /diagnose on a schedule until stopped; bounded in count and time."""

    def __init__(self, port: int, metrics_every: float | None, diagnose_every: float | None, seconds: float):
        super().__init__(name="poller", daemon=True)
        self.port, self.metrics_every, self.diagnose_every, self.seconds = port, metrics_every, diagnose_every, seconds
        self.stop = threading.Event()
        self.metrics: list[Fetch] = []  # bodies dropped, sizes kept
        self.diagnose: list[Fetch] = []
        self.connect: set[tuple[bytes, bytes]] = set()
        self.errors: list[str] = []

    def run(self) -> None:
        start = time.monotonic()
        deadline = start + self.seconds
        due = {
            "/metrics": start + self.metrics_every if self.metrics_every else math.inf,
            "/diagnose": start + self.diagnose_every / 2 if self.diagnose_every else math.inf,  # between scrapes
        }
        every = {"/metrics": self.metrics_every or math.inf, "/diagnose": self.diagnose_every or math.inf}
        for _ in range(100_000):
            path = min(due, key=lambda p: due[p])
            if due[path] >= deadline or self.stop.wait(max(0.0, due[path] - time.monotonic())):
                return
            try:
                fetched = get(self.port, path)
            except (OSError, RuntimeError) as exc:
                self.errors.append(f"{path}: {exc}")
            else:
                if path == "/metrics":
                    self.connect |= connect_values(fetched.body)
                    self.metrics.append(Fetch(fetched.seconds, fetched.wire_bytes, b"", fetched.gzipped, ""))
                else:
                    self.diagnose.append(fetched)
            due[path] = max(due[path] + every[path], time.monotonic())  # a slow answer skips, never bunches


# --- reading the exposition ----------------------------------------------------------------------------------------


Buckets = dict[float, float]  # le -> cumulative count


@dataclass
class Exposition:
    attempts: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # per kind
    failures: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    syn_retransmits: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    duration: dict[str, Buckets] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    lag: Buckets = field(default_factory=lambda: defaultdict(float))
    series: int = 0


def target_kind(labels: dict[str, str]) -> str | None:
    for value in labels.values():
        match = TARGET_NAME.match(value)
        if match:
            return match.group(1)
    return None


def read_exposition(fetched: Fetch) -> Exposition:
    text = fetched.body.decode()
    parse = parse_openmetrics if "openmetrics" in fetched.content_type else parse_text
    out = Exposition(series=sum(1 for line in text.splitlines() if line and not line.startswith("#")))
    for family in parse(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "netpath_scheduler_lag_seconds_bucket":
                out.lag[float(labels["le"])] += value
                continue
            kind = target_kind(labels)
            if kind is None:
                continue
            if name == "netpath_probe_attempts_total":
                out.attempts[kind] += value
            elif name == "netpath_tcp_syn_retransmits_total":
                out.syn_retransmits[kind] += value
            elif name == "netpath_probe_failures_total":
                out.failures[kind] += value
            elif name == "netpath_probe_duration_seconds_bucket":
                out.duration[kind][float(labels["le"])] += value
    return out


def delta(after: Buckets, before: Buckets) -> list[tuple[float, float]]:
    return sorted((le, after[le] - before.get(le, 0.0)) for le in after)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> tuple[float, float]:
    """(estimate, bucket bound): Prometheus' histogram_quantile() — linear inside the bucket holding the rank,
    from 0 in the first bucket, the highest finite bound when the rank is in +Inf — and that bucket's upper bound."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan, math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower, le
            if count == below:
                return le, le
            return lower + (le - lower) * (rank - below) / (count - below), le
        lower, below = le, count
    return math.nan, math.nan


# --- one exporter, its phases --------------------------------------------------------------------------------------


def exporter_config(srv: Servers, counts: dict[str, int], port: int, interval: float) -> dict[str, Any]:
    targets: list[dict[str, Any]] = []
    for kind, n in counts.items():
        for i in range(n):
            name = f"bench-{kind}-{i:04d}"
            if kind == "tcp":
                targets.append({"name": name, "kind": "tcp", "path": "pod_ip", "address": srv.address(kind, i)})
            elif kind == "http":
                targets.append({"name": name, "kind": "http", "path": "ingress", "url": srv.http_url})
            else:
                dns = {"address": srv.address(kind, i), "query": DNS_NAME, "transports": [kind[3:]]}
                targets.append({"name": name, "kind": "dns", "path": "dns", **dns})
    return {
        "source_node": "bench",
        "listen": f"127.0.0.1:{port}",
        "defaults": {"interval": f"{interval:g}s", "timeout": f"{min(2.0, interval):g}s"},
        "node_facts": {"enabled": True},  # this namespace, read only (netlink dumps, /proc, iptables-save)
        "targets": targets,
    }


@contextmanager
def exporter(config: dict[str, Any], start_timeout: float = 120.0) -> Iterator[tuple[int, int]]:
    """`netpath-exporter run --config FILE` from this checkout; yields (pid, port) once /readyz answers 200."""
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "exporter.log", "w+b") as log:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        args = [sys.executable, "-m", "exporter", "run", "--config", str(path)]
        with child(args, False, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)}) as (proc, _):
            port = int(config["listen"].rsplit(":", 1)[1])
            deadline = time.monotonic() + start_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                if wait_http_ok(f"http://127.0.0.1:{port}/readyz", attempts=1):
                    break
                time.sleep(0.2)
            else:
                log.seek(0)
                raise RuntimeError(f"exporter not ready (exit {proc.poll()}): {log.read()[-2000:].decode()}")
            yield proc.pid, port


@dataclass
class Phase:
    run: str  # what the exporter probes, e.g. "1000 tcp"
    mode: str
    seconds: float
    cpu: float
    probes: dict[str, float]
    failures: dict[str, float]
    syn_retransmits: dict[str, float]
    memory: dict[str, float]
    first: Fetch  # /metrics at the phase's start (as a lone read: after warm-up or after a gap)
    last: Fetch  # /metrics at its end
    series: int
    lag: list[tuple[float, float]]
    duration: dict[str, list[tuple[float, float]]]
    connect: list[float]  # exact reported connect latencies (distinct probes), seconds
    floor: list[float]
    scrapes: list[Fetch]
    diagnose: list[Fetch]
    errors: list[str]
    loadavg: str

    @property
    def total_probes(self) -> float:
        return sum(self.probes.values())


def run_phase(pid: int, port: int, srv: Servers, run: str, mode: str, seconds: float) -> Phase:
    metrics_every, diagnose_every = MODES[mode]
    if diagnose_every is not None:
        diagnose_every = min(diagnose_every, seconds / 2)  # short (--quick) phases still read /diagnose
    first = get(port, "/metrics")
    cpu0, t0 = tree_cpu_seconds(pid), time.monotonic()
    floor = floor_start(srv.tcp_ports, seconds)
    poller = Poller(port, metrics_every, diagnose_every, seconds)
    poller.start()
    try:
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    finally:
        poller.stop.set()
        poller.join(timeout=90)
    cpu1, t1 = tree_cpu_seconds(pid), time.monotonic()
    memory = tree_memory_mib(pid)
    last = get(port, "/metrics")
    floor_samples = floor_collect(floor, seconds)
    before, after = read_exposition(first), read_exposition(last)
    seen_before = connect_values(first.body)
    reported = {pair for pair in poller.connect | connect_values(last.body) if pair not in seen_before}
    return Phase(
        run=run,
        mode=mode,
        seconds=t1 - t0,
        cpu=cpu1 - cpu0,
        probes={k: after.attempts[k] - before.attempts.get(k, 0.0) for k in after.attempts},
        failures={k: after.failures[k] - before.failures.get(k, 0.0) for k in after.failures},
        syn_retransmits={k: v - before.syn_retransmits.get(k, 0.0) for k, v in after.syn_retransmits.items()},
        memory=memory,
        first=first,
        last=last,
        series=after.series,
        lag=delta(after.lag, before.lag),
        duration={k: delta(b, before.duration.get(k, {})) for k, b in after.duration.items()},
        connect=sorted(float(v) for _, v in reported),
        floor=floor_samples,
        scrapes=poller.metrics,
        diagnose=poller.diagnose,
        errors=poller.errors,
        loadavg=Path("/proc/loadavg").read_text().split(" ", 3)[0],
    )


def exporter_run(
    srv: Servers, counts: dict[str, int], modes: Sequence[str], seconds: float, interval: float
) -> list[Phase]:
    run = " + ".join(f"{n} {KIND_TITLE[k]}" for k, n in counts.items() if n)
    print(f"exporter_load: {run}: {', '.join(modes)}, {seconds:.0f} s each", file=sys.stderr, flush=True)
    with exporter(exporter_config(srv, counts, free_port(), interval)) as (pid, port):
        time.sleep(interval + 2)  # every target scheduled and probed once before anything is counted
        return [run_phase(pid, port, srv, run, mode, seconds) for mode in modes]


# --- the peer --------------------------------------------------------------------------------------------------------


@dataclass
class PeerPhase:
    kind: str
    targets: int
    rate: float
    seconds: float
    cpu: float
    sent: int
    failed: int
    durations: list[float]
    floor: list[float]
    memory: dict[str, float]


def drive_blackbox(
    bb_port: int, module: str, targets: Sequence[str], rate: float, seconds: float, concurrency: int = 16
) -> tuple[int, int, list[float]]:
    """/probe requests at `rate` a second, round-robin over the targets, `concurrency` at a time on keep-alive
    connections (as Prometheus does): bounded to rate × seconds requests and seconds + 30 of wall time."""
    total, start = int(rate * seconds), time.monotonic()
    lock, next_index = threading.Lock(), [0]
    durations: list[float] = []
    failed = [0]
    paths = [f"/probe?module={module}&target={quote(t, safe='')}" for t in targets]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", bb_port, timeout=10)
        try:
            while time.monotonic() < start + seconds + 30:
                with lock:
                    i = next_index[0]
                    next_index[0] += 1
                if i >= total:
                    return
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                try:
                    conn.request("GET", paths[i % len(paths)])
                    values = probe_values(conn.getresponse().read().decode())
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", bb_port, timeout=10)
                    values = {}
                with lock:
                    if values.get("probe_success") == 1.0:
                        durations.append(values["probe_duration_seconds"])
                    else:
                        failed[0] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    return min(next_index[0], total), failed[0], durations


def blackbox_runs(srv: Servers, plan: dict[str, int], seconds: float, interval: float) -> list[PeerPhase]:
    out = []
    with blackbox(BLACKBOX_MODULES) as (bb_port, bb_pid):
        for kind, n in plan.items():
            print(f"exporter_load: blackbox {n} {KIND_TITLE[kind]}, {seconds:.0f} s", file=sys.stderr, flush=True)
            targets, rate = [srv.address(kind, i) for i in range(n)], n / interval
            drive_blackbox(bb_port, BLACKBOX_MODULE_OF[kind], targets, rate, min(3.0, seconds))  # warm up
            floor = floor_start(srv.tcp_ports, seconds)
            cpu0, t0 = tree_cpu_seconds(bb_pid), time.monotonic()
            sent, failed, durations = drive_blackbox(bb_port, BLACKBOX_MODULE_OF[kind], targets, rate, seconds)
            cpu1, t1 = tree_cpu_seconds(bb_pid), time.monotonic()
            memory, floor_samples = tree_memory_mib(bb_pid), floor_collect(floor, seconds)
            out.append(PeerPhase(kind, n, rate, t1 - t0, cpu1 - cpu0, sent, failed, durations, floor_samples, memory))
    return out


# --- the report ------------------------------------------------------------------------------------------------------


def fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if math.isinf(seconds):
        return "+Inf"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def ratio(a: float, b: float) -> str:
    return "n/a" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}"


def hq(q: float, buckets: list[tuple[float, float]]) -> str:
    estimate, bound = histogram_quantile(q, buckets)
    return f"{fmt_s(estimate)} (≤ {fmt_s(bound)})"


def median(values: Sequence[float]) -> float:
    return quantiles(list(values))[0]


def above_idle(p: Phase, idle: float) -> float:
    """CPU per probe once the idle exporter's cost (node facts, localizer, heartbeat: CPU a second) is taken off."""
    return (p.cpu - idle * p.seconds) / max(1.0, p.total_probes)


def exporter_table(phases: Sequence[Phase], idle: float) -> list[str]:
    rows = [
        "| targets | mode | exporter CPU | CPU per probe (above idle) | probes/s | RSS (peak), tree | "
        "GET /metrics: latency (median, max) · size · gzip · series | GET /diagnose: latency (median) · size · gzip | "
        "scheduler lag p50 / p99 (≤ bucket) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        scrapes = [p.last, *p.scrapes] if p.scrapes else [p.last]
        metrics = (
            f"{fmt_s(median([s.seconds for s in scrapes]))}, {fmt_s(max(s.seconds for s in scrapes))} · "
            f"{fmt_bytes(len(p.last.body))} · {fmt_bytes(p.last.gzip_bytes)}"
            f"{'' if p.last.gzipped else '*'} · {p.series / 1000:.1f} k"
        )
        diagnose = (
            f"{fmt_s(median([d.seconds for d in p.diagnose]))} · {fmt_bytes(len(p.diagnose[-1].body))} · "
            f"{fmt_bytes(p.diagnose[-1].gzip_bytes)}{'' if p.diagnose[-1].gzipped else '*'}"
            if p.diagnose
            else "–"
        )
        rows.append(
            f"| {p.run} | {p.mode} | {100 * p.cpu / p.seconds:.1f} % | {fmt_s(p.cpu / max(1.0, p.total_probes))} "
            f"({fmt_s(above_idle(p, idle))}) | {p.total_probes / p.seconds:.0f} | "
            f"{p.memory.get('VmRSS', math.nan):.1f} MiB "
            f"({p.memory.get('VmHWM', math.nan):.1f}) | {metrics} | {diagnose} | "
            f"{hq(0.5, p.lag)} / {hq(0.99, p.lag)} |"
        )
    return rows


def fidelity_table(phases: Sequence[Phase]) -> list[str]:
    rows = [
        "| targets | mode | floor connect() p50 / p90 / p99 | reported connect, exact (n) p50 / p90 / p99 | "
        "median × floor | p99 × quiet p99 | reported histogram p50 / p90 / p99 (≤ bucket) |",
        "|---|---|---|---|---|---|---|",
    ]
    quiet_p99: dict[str, float] = {}
    for p in phases:
        floor, exact = quantiles(p.floor), quantiles(p.connect)
        if p.mode == "quiet":
            quiet_p99[p.run] = exact[2]
        buckets = p.duration.get("tcp", [])
        rows.append(
            f"| {p.run} | {p.mode} | {' / '.join(map(fmt_s, floor))} | "
            f"{' / '.join(map(fmt_s, exact))} ({len(p.connect)}) | {ratio(exact[0], floor[0])} | "
            f"{ratio(exact[2], quiet_p99.get(p.run, math.nan))} | "
            f"{' / '.join(hq(q, buckets) for q in (0.5, 0.9, 0.99))} |"
        )
    return rows


def kinds_table(
    phases: Sequence[Phase], peers: Sequence[PeerPhase], tcp_reference: Phase | None, idle: float
) -> list[str]:
    rows = [
        "| probe kind | netpath-exporter (whole process, 15 s scrapes): CPU per probe (above idle) · duration "
        "p50 / p99 (histogram) | blackbox_exporter: CPU per /probe · probe_duration p50 / p99 · floor p50 | "
        "CPU × blackbox (above idle) | p50: ours × blackbox | p50 × floor: ours (hist.) / blackbox |",
        "|---|---|---|---|---|---|",
    ]
    ours: dict[str, Phase] = {}
    if tcp_reference is not None:
        ours["tcp"] = tcp_reference
    for p in phases:
        if len([k for k, n in p.probes.items() if n]) == 1:
            ours[next(k for k, n in p.probes.items() if n)] = p
    for peer in peers:
        mine = ours.get(peer.kind)
        theirs_cpu = peer.cpu / max(1, peer.sent)
        theirs_q, floor_q = quantiles(peer.durations), quantiles(peer.floor)
        if mine is not None:
            my_cpu = mine.cpu / max(1.0, mine.total_probes)
            my_p50 = histogram_quantile(0.5, mine.duration.get(peer.kind, []))[0]
            my_p99 = histogram_quantile(0.99, mine.duration.get(peer.kind, []))[0]
            my_marginal = above_idle(mine, idle)
            mine_cell = f"{fmt_s(my_cpu)} ({fmt_s(my_marginal)}; {mine.run}) · {fmt_s(my_p50)} / {fmt_s(my_p99)}"
        else:
            my_cpu = my_p50 = my_marginal = math.nan
            mine_cell = "–"
        rows.append(
            f"| {KIND_TITLE[peer.kind]} | {mine_cell} | {fmt_s(theirs_cpu)} ({peer.targets} targets, "
            f"{peer.rate:.0f}/s, {peer.failed} failed) · {fmt_s(theirs_q[0])} / {fmt_s(theirs_q[2])} · "
            f"{fmt_s(floor_q[0])} | {ratio(my_cpu, theirs_cpu)} ({ratio(my_marginal, theirs_cpu)}) | "
            f"{ratio(my_p50, theirs_q[0])} | {ratio(my_p50, floor_q[0])} / "
            f"{ratio(theirs_q[0], floor_q[0])} |"
        )
    return rows


def peer_table(peers: Sequence[PeerPhase]) -> list[str]:
    rows = [
        "| blackbox module | targets, rate | CPU | CPU per /probe | RSS | probe_duration p50 / p90 / p99 | "
        "floor p50 / p90 / p99 | median × floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in peers:
        q, f = quantiles(p.durations), quantiles(p.floor)
        rows.append(
            f"| {BLACKBOX_MODULE_OF[p.kind]} | {p.targets}, {p.rate:.0f}/s ({p.sent} sent, {p.failed} failed) | "
            f"{100 * p.cpu / p.seconds:.1f} % | {fmt_s(p.cpu / max(1, p.sent))} | "
            f"{p.memory.get('VmRSS', math.nan):.1f} MiB | {' / '.join(map(fmt_s, q))} | "
            f"{' / '.join(map(fmt_s, f))} | {ratio(q[0], f[0])} |"
        )
    return rows


# --- the run ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N and short phases: a smoke run (~2 minutes)")
    parser.add_argument("--targets", default=None, help="TCP target counts, comma-separated (default 100,1000,1600)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase (default 12 intervals)")
    parser.add_argument("--interval", type=float, default=5.0, help="probe interval, seconds (default 5)")
    parser.add_argument("--kind-targets", type=int, default=None, help="targets in the HTTP/DNS runs (default 200)")
    parser.add_argument("--mix-targets", type=int, default=None, help="targets in the mixed run (default 1000)")
    parser.add_argument("--peer-targets", type=int, default=None, help="TCP targets for blackbox (default 1000)")
    parser.add_argument("--no-peer", action="store_true", help="skip prometheus-blackbox-exporter")
    parser.add_argument("--tcp-only", action="store_true", help="only the TCP runs (no mixed, HTTP or DNS runs)")
    args = parser.parse_args(argv)
    quick = args.quick
    counts = [int(n) for n in (args.targets or ("20,100" if quick else "100,1000,1600")).split(",")]
    seconds = args.duration or (2 * args.interval if quick else 12 * args.interval)  # whole intervals
    interval = args.interval
    kind_n = args.kind_targets or (10 if quick else 200)
    mix_n = args.mix_targets or (40 if quick else 1000)
    peer_n = args.peer_targets or (100 if quick else 1000)
    if not (1 <= seconds <= 600 and 0.5 <= interval <= 60 and all(1 <= n <= 10_000 for n in counts)):
        parser.error("--duration 1..600, --interval 0.5..60, --targets 1..10000 each")

    load_before = Path("/proc/loadavg").read_text().strip()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    phases: list[Phase] = []
    kind_phases: list[Phase] = []
    peers: list[PeerPhase] = []
    with servers() as srv:
        idle_phase = exporter_run(srv, {"tcp": 1}, ["quiet"], seconds, interval)[0]
        for n in counts:
            phases += exporter_run(srv, {"tcp": n}, list(MODES), seconds, interval)
        if not args.tcp_only:
            mix = {"tcp": mix_n * 8 // 10, "http": mix_n // 10, "dnsudp": mix_n // 20, "dnstcp": mix_n // 20}
            kind_phases += exporter_run(srv, mix, ["scrape 15 s"], seconds, interval)
            for kind in ("http", "dnsudp", "dnstcp"):
                kind_phases += exporter_run(srv, {kind: kind_n}, ["scrape 15 s"], seconds, interval)
        if not args.no_peer:
            plan = (
                {"tcp": peer_n}
                if args.tcp_only
                else {"tcp": peer_n, "http": kind_n, "dnsudp": kind_n, "dnstcp": kind_n}
            )
            peers = blackbox_runs(srv, plan, seconds, interval)
    load_after = Path("/proc/loadavg").read_text().strip()

    command = " ".join([".venv/bin/python", "bench/exporter_load.py", *(argv if argv is not None else sys.argv[1:])])
    loads = sorted((p.loadavg for p in [idle_phase, *phases, *kind_phases]), key=float)
    idle = idle_phase.cpu / idle_phase.seconds
    tcp_reference = next(
        (p for p in phases if p.mode == "scrape 15 s" and p.run == f"{peer_n} tcp"),
        next((p for p in phases if p.mode == "scrape 15 s"), None),
    )
    report = [
        f"Run: `{command}` on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"started {started}; interval {interval:g} s, {seconds:.0f} s per phase. Load average (1/5/15 min) before: "
        f"{' '.join(load_before.split()[:3])}, 1-min at the end of each phase: {loads[0]}–{loads[-1]}, after: "
        f"{' '.join(load_after.split()[:3])}.",
        "",
        f"Idle exporter (1 TCP target, quiet, node facts and localizer on): {100 * idle:.2f} % of a core, "
        f'RSS {idle_phase.memory.get("VmRSS", math.nan):.1f} MiB; "above idle" below takes that off.',
        "",
        "### Whole exporter, TCP targets",
        "",
        *exporter_table(phases, idle),
        "",
        "`*`: the server answered uncompressed although asked for gzip; the gzip size is what gzip -9 gives.",
        "",
        "### Latency fidelity: reported TCP connect vs a plain connect() in the same seconds",
        "",
        *fidelity_table(phases),
        "",
        "### Mixed and HTTP/DNS-only targets (15 s scrapes)",
        "",
        *exporter_table(kind_phases, idle),
        "",
    ]
    if peers:
        report += [
            "### Peer: prometheus-blackbox-exporter driven at the same rate (N / interval /probe requests a second)",
            "",
            *peer_table(peers),
            "",
            "### Per probe kind: netpath-exporter vs blackbox_exporter, same run",
            "",
            *kinds_table(kind_phases, peers, tcp_reference, idle),
            "",
        ]
    problems = (
        [
            f"{p.run} / {p.mode}: {kind} {n:.0f} failed probes"
            for p in [*phases, *kind_phases]
            for kind, n in p.failures.items()
            if n
        ]
        + [
            f"{p.run} / {p.mode}: {kind} {n:.0f} SYN retransmits (a SYN was dropped: the probe took 1 s more)"
            for p in [*phases, *kind_phases]
            for kind, n in p.syn_retransmits.items()
            if n
        ]
        + [f"{p.run} / {p.mode}: {e}" for p in [*phases, *kind_phases] for e in p.errors[:3]]
    )
    if problems:
        report += ["Problems seen (the targets are meant to be healthy):", "", *(f"- {x}" for x in problems), ""]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
