"""What a probe costs: CPU per probe of each kind, RSS by target count, TCP connect latency vs peers.

Peers measured in the same run, on the same loopback targets:
- a plain blocking ``connect()`` — the floor no prober can beat;
- prometheus-blackbox-exporter (Debian package) with a tcp_connect module — the prober people use today.

Servers run in child processes so this process's CPU time is the probing side only. Everything talks to
127.0.0.1; every loop is bounded by a count. Run: ``.venv/bin/python bench/probe_cost.py`` (``--quick`` for a
smoke run). Prints a Markdown report to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.model import PathClass, Transport, Via  # noqa: E402
from exporter.probes import run_probe  # noqa: E402
from exporter.probes.dns import DNSTarget  # noqa: E402
from exporter.probes.http import HTTPTarget  # noqa: E402
from exporter.probes.tcp import TCPTarget  # noqa: E402
from lab.loopback import dnsmasq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ACCEPTOR, blackbox, child, cpu_seconds, floor_connect, probe_values, quantiles  # noqa: E402

# --- CPU per probe -------------------------------------------------------------------------------------------


async def cpu_per_probe(target: TCPTarget | HTTPTarget | DNSTarget, count: int, concurrency: int = 8) -> float:
    slots = asyncio.Semaphore(concurrency)
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with slots:
            if not (await run_probe(target, 2.0)).ok:
                failures += 1

    before = time.process_time()
    await asyncio.gather(*(one() for _ in range(count)))
    spent = time.process_time() - before
    if failures:
        raise RuntimeError(f"{failures} of {count} {target.kind} probes failed; the benchmark needs a healthy target")
    return spent / count


def blackbox_probe(bb_port: int, target_port: int) -> float:
    url = f"http://127.0.0.1:{bb_port}/probe?module=tcp_connect&target=127.0.0.1:{target_port}"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    values = probe_values(body)
    if values.get("probe_success") != 1.0:
        raise RuntimeError(f"blackbox probe failed: {body[:200]}")
    return values["probe_duration_seconds"]


async def latency_samples(
    target: TCPTarget, tcp_port: int, bb_port: int, count: int
) -> tuple[list[float], list[float], list[float]]:
    floor, mine, theirs = [], [], []
    for _ in range(count):
        floor.append(floor_connect(tcp_port))
        result = await run_probe(target, 2.0)
        mine.append(result.phases.get("connect", result.duration))
        theirs.append(blackbox_probe(bb_port, tcp_port))
    return floor, mine, theirs


# --- RSS by target count -------------------------------------------------------------------------------------


RSS_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from prometheus_client import CollectorRegistry
    from exporter.app import Exporter
    from exporter.config import Config
    from exporter.model import PathClass, Via
    from exporter.probes.tcp import TCPTarget
    n, port, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    targets = tuple(TCPTarget(name=f"t{{i}}", path=PathClass.POD_IP, via=Via.POD, host="127.0.0.1", port=port,
                              interval=1.0, timeout=0.9) for i in range(n))
    async def main():
        async with Exporter(Config(source_node="bench", targets=targets), CollectorRegistry()):
            await asyncio.sleep(seconds)
    if n:
        asyncio.run(main())
    else:  # the baseline: the same imports, nothing scheduled
        import time; time.sleep(0.1)
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            print(line.split()[0], int(line.split()[1]) / 1024)
    """
)


def rss_for(targets: int, port: int, seconds: float) -> dict[str, float]:
    code = RSS_CHILD.format(root=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code, str(targets), str(port), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    return {line.split()[0].rstrip(":"): float(line.split()[1]) for line in out.splitlines()}


# --- the run -------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    cpu_n, lat_n, rss_s = (50, 50, 2.0) if args.quick else (1000, 1000, 6.0)

    report = [
        f"Run: `{' '.join(['.venv/bin/python', 'bench/probe_cost.py', *sys.argv[1:]])}` on "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
    ]
    with (
        child([sys.executable, "-c", ACCEPTOR]) as (_, tcp_port_text),
        child([sys.executable, "-m", "lab.apps.httpapp", "--listen", "127.0.0.1:0", "--name", "bench"]) as (_, ready),
        dnsmasq({"web.default.svc.cluster.local": "10.43.0.20"}, local_zones=["cluster.local"]) as dns,
    ):
        tcp_port = int(tcp_port_text)
        http_url = "http://" + ready.rsplit(" ", 1)[-1]
        common = {"interval": 10.0, "timeout": 2.0}
        targets = {
            "tcp": TCPTarget(name="t", path=PathClass.POD_IP, via=Via.POD, host="127.0.0.1", port=tcp_port, **common),
            "http": HTTPTarget(name="h", path=PathClass.INGRESS, via=Via.INGRESS, url=http_url + "/", **common),
            "dns (udp)": DNSTarget(
                name="d",
                path=PathClass.DNS,
                via=Via.SERVICE,
                server=dns.host,
                port=dns.port,
                protocol=Transport.UDP,
                query_name="web.default.svc.cluster.local",
                **common,
            ),
            "dns (tcp)": DNSTarget(
                name="d",
                path=PathClass.DNS,
                via=Via.SERVICE,
                server=dns.host,
                port=dns.port,
                protocol=Transport.TCP,
                query_name="web.default.svc.cluster.local",
                **common,
            ),
        }

        # 1. CPU per probe, ours by kind; blackbox's tcp_connect as the peer (its CPU per /probe request).
        ours = {kind: asyncio.run(cpu_per_probe(t, cpu_n)) for kind, t in targets.items()}
        with blackbox() as (bb_port, bb_pid):
            blackbox_probe(bb_port, tcp_port)  # warm up
            before = cpu_seconds(bb_pid)
            for _ in range(cpu_n):
                blackbox_probe(bb_port, tcp_port)
            bb_cpu = (cpu_seconds(bb_pid) - before) / cpu_n

            # 2. TCP connect latency: floor, ours, blackbox — interleaved so drift hits all three alike, in one
            # event loop as the exporter runs (a fresh loop per sample would measure loop start-up instead).
            floor, mine, theirs = asyncio.run(latency_samples(targets["tcp"], tcp_port, bb_port, lat_n))

        report += [
            f"### CPU time per probe ({cpu_n} probes each, 8 at a time; client side only)",
            "",
            "| probe | CPU per probe | × blackbox tcp_connect |",
            "|---|---|---|",
        ]
        for kind, seconds in ours.items():
            report.append(f"| {kind} | {seconds * 1e6:.0f} µs | {seconds / bb_cpu:.2f} |")
        report += [
            f"| blackbox_exporter tcp_connect (peer, whole /probe request) | {bb_cpu * 1e6:.0f} µs | 1.00 |",
            "",
            f"### TCP connect latency on loopback ({lat_n} interleaved samples each)",
            "",
            "| prober | median | p90 | p99 | median × floor |",
            "|---|---|---|---|---|",
        ]
        floor_q = quantiles(floor)
        for name, samples in [
            ("plain blocking connect() (floor)", floor),
            ("netpath-exporter tcp probe (connect phase)", mine),
            ("blackbox_exporter tcp_connect (probe_duration_seconds)", theirs),
        ]:
            q = quantiles(samples)
            cells = " | ".join(f"{v * 1e6:.0f} µs" for v in q)
            report.append(f"| {name} | {cells} | {q[0] / floor_q[0]:.2f} |")

        # 3. RSS by target count, each in a fresh process, against the same listener.
        report += [
            "",
            f"### Resident memory by target count (fresh process, {rss_s:.0f} s of probing at 1 s intervals)",
            "",
            "| targets | RSS | peak RSS | × baseline (same imports, no targets) |",
            "|---|---|---|---|",
        ]
        baseline = rss_for(0, tcp_port, 0)["VmRSS"]
        report.append(f"| 0 (baseline) | {baseline:.1f} MiB | – | 1.00 |")
        for n in (10, 100, 1000):
            r = rss_for(n, tcp_port, rss_s)
            report.append(f"| {n} | {r['VmRSS']:.1f} MiB | {r['VmHWM']:.1f} MiB | {r['VmRSS'] / baseline:.2f} |")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
