"""Soak with discovery churn: RSS and open fds of a real exporter while targets come and go (issue 15).

The real `netpath-exporter run` with discovery (against the stand-in API server, lab/kubeapi.py) and node facts
on. Every churn round deletes some annotated Services (with their EndpointSlices) and adds new ones, moves an
endpoint of other Services to a new pod IP, and replaces an exporter peer (a node and its exporter pod), all
through the stand-in's add/modify/delete, so the exporter's watches see ADDED/MODIFIED/DELETED events and
targets are added and removed every round while their number stays steady (about 80).

Peer, in the same run: a second exporter with the same config against a second stand-in that serves the same
starting cluster and never changes. Its growth is what the exporter grows anyway (allocator, histograms filling,
caches); the churned exporter's growth beyond it is what churn costs.

Discovery probes only literal IPs inside the pod and Service CIDRs (10.42.0.0/16, 10.43.0.0/16), which must not
be dialled from the root namespace: the whole soak runs in the lab namespace `nplab-soak`, with 10.42.0.1/16 and
10.43.0.1/16 on its loopback (every address of both /16s is then local there, and nowhere else). TCP acceptors
on 0.0.0.0 inside it answer some ports (80, 8080 and the peers' 10047, with a minimal HTTP reply); others are
closed (refused). The outer process holds the lab lock, builds the namespace, runs itself with --inner inside
it, and always kills its children and deletes the namespace, also on Ctrl-C and SIGTERM.

Every sample (a minute; 20 s with --quick): VmRSS and open fds (/proc/PID/fd) of each exporter, the targets it
schedules (netpath_targets), the target names in /metrics and how many appeared/vanished since the last sample.
Verdict: RSS growth = median of the last 10 min − median of the first 10 min after a 5 min warm-up, < 5 MiB;
fds: the last window's median not above the first window's (a probe socket open at a sampling instant is noise;
a leaked fd lifts every sample after it).

Not part of `make test`: run as root,
    .venv/bin/python bench/churn_soak.py                 # 1 h (--duration 3600)
    .venv/bin/python bench/churn_soak.py --quick         # 3 min, churn and samples every 20 s
Exit 0 when the verdict holds, 1 when it does not, 2 when the soak could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from kubeapi import EXPORTER_NS, FakeKubeAPI, endpoint_slice, exporter_pod, node, port, service  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from lab import cluster  # noqa: E402
from lab.netns import LabError  # noqa: E402

NETNS = "nplab-soak"
LAB_ADDRESSES = ("10.42.0.1/16", "10.43.0.1/16")  # on the namespace's lo only
OPEN_PORTS = (80, 8080, 10047)  # answered inside the namespace; 81, 8081, 443, 53 stay closed
SERVICES = 20  # annotated Services, each a ClusterIP target + 2 endpoint targets
NODES = 6  # node-1 (the exporter's own) + 5 peers
MiB = 1024 * 1024
EXPORTER_BIN = str(ROOT / ".venv" / "bin" / "netpath-exporter")


# --- the outer process: lock, namespace, cleanup -------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def _namespace_exists() -> bool:
    return NETNS in _ip("netns", "list").stdout.split()


def _kill_namespace_pids() -> None:
    """Whatever still runs in our own namespace is ours (the inner driver and the exporters it started)."""
    for _ in range(3):
        pids = [int(p) for p in _ip("netns", "pids", NETNS, check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


@contextlib.contextmanager
def lab_namespace() -> Iterator[None]:
    if _namespace_exists():
        raise SystemExit(f"churn_soak: {NETNS} exists (a crashed run?); remove it: ip netns del {NETNS}")
    _ip("netns", "add", NETNS)
    try:
        _ip("-n", NETNS, "link", "set", "lo", "up")
        for address in LAB_ADDRESSES:
            _ip("-n", NETNS, "addr", "add", address, "dev", "lo")
        yield
    finally:
        _kill_namespace_pids()
        _ip("netns", "del", NETNS, check=False)


class Stop(Exception):
    pass


def _on_signal(signum: int, _frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def outer(args: argparse.Namespace, argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("churn_soak: run as root (it creates the lab namespace nplab-soak)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    child: subprocess.Popen[bytes] | None = None
    try:
        with cluster.exclusive(wait=args.lock_wait), lab_namespace():
            cmd = ["ip", "netns", "exec", NETNS, sys.executable, str(Path(__file__).resolve()), "--inner", *argv]
            child = subprocess.Popen(cmd, start_new_session=True)
            try:
                return child.wait(timeout=args.duration + 600)
            finally:
                if child.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGTERM)
                    try:
                        child.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(child.pid, signal.SIGKILL)
                        child.wait(timeout=10)
    except (Stop, KeyboardInterrupt) as exc:
        print(f"churn_soak: stopped ({exc or 'SIGINT'}); namespace removed", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired:
        print("churn_soak: the inner run overran its bound; killed", file=sys.stderr)
        return 2
    except LabError as exc:
        print(f"churn_soak: {exc}", file=sys.stderr)
        return 2


# --- the inner process: stand-ins, acceptors, exporters, churn, samples -------------------------------------


def _ip_of(prefix: str, n: int) -> str:
    """A unique address in 10.42/16 or 10.43/16 for counter ``n`` (never .0, .1 or .255)."""
    return f"{prefix}.{(n // 250) % 250 + 2}.{n % 250 + 2}"


class Cluster:
    """The objects discovery watches, and the churn applied to them (one counter: names and IPs never repeat)."""

    def __init__(self, api: FakeKubeAPI) -> None:
        self.api = api
        self.serial = 0
        self.services: list[str] = []  # names, oldest first
        self.nodes: list[str] = []  # peers (never node-1), oldest first
        self.added = 0
        self.deleted = 0
        self.modified = 0

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def populate(self) -> None:
        self.api.add("nodes", node("node-1", "192.168.77.1"))
        self.api.add("pods", exporter_pod("node-1", "10.42.1.10"))
        self.api.add("services", service("kubernetes", "default", "10.43.0.2", [port("https", 443, 6443)]))
        self.api.add("services", service("netpath-exporter", EXPORTER_NS, "10.43.0.47", [port("metrics", 10047)]))
        dns_ports = [port("dns", 53, 53, "UDP"), port("dns-tcp", 53, 53, "TCP")]
        self.api.add("services", service("kube-dns", "kube-system", "10.43.0.10", dns_ports))
        coredns = [("coredns-a", "10.42.1.3", "node-1")]
        self.api.add("endpointslices", endpoint_slice("kube-dns", "kube-system", coredns, dns_ports))
        for _ in range(NODES - 1):
            self.add_node()
        for _ in range(SERVICES):
            self.add_service()
        self.added = self.deleted = self.modified = 0

    def add_node(self) -> None:
        n = self._next()
        name = f"node-s{n}"
        self.api.add("nodes", node(name, f"192.168.77.{n % 250 + 2}"))
        self.api.add("pods", exporter_pod(name, _ip_of("10.42", n)))
        self.nodes.append(name)
        self.added += 2

    def delete_node(self) -> None:
        name = self.nodes.pop(0)
        self.api.delete("pods", EXPORTER_NS, f"netpath-exporter-{name}")
        self.api.delete("nodes", None, name)
        self.deleted += 2

    def _endpoints(self, name: str) -> list[tuple[str, str, str]]:
        return [(f"{name}-{self._next()}", _ip_of("10.42", self.serial), "node-1") for _ in range(2)]

    @staticmethod
    def _ports(name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(Service ports, EndpointSlice ports): even app-N 80 → pods' 8080 (answered), odd 81 → 8081 (refused)."""
        if int(name.rsplit("-", 1)[1]) % 2 == 0:
            return [port("http", 80, 8080)], [port("http", 8080)]
        return [port("http", 81, 8081)], [port("http", 8081)]

    def add_service(self) -> None:
        n = self._next()
        name = f"app-{n}"
        annotations = {"netpath.io/probe": "true"}
        if n % 3 == 0:
            annotations["netpath.io/path"] = "/healthz"  # HTTP GET instead of a TCP connect
        svc_ports, slice_ports = self._ports(name)
        self.api.add("services", service(name, "soak", _ip_of("10.43", n), svc_ports, annotations=annotations))
        self.api.add("endpointslices", endpoint_slice(name, "soak", self._endpoints(name), slice_ports))
        self.services.append(name)
        self.added += 2

    def delete_service(self) -> None:
        name = self.services.pop(0)
        self.api.delete("endpointslices", "soak", f"{name}-abcde")
        self.api.delete("services", "soak", name)
        self.deleted += 2

    def move_endpoints(self, name: str) -> None:
        """The Service's pods are replaced (a rollout): its endpoint targets go, new ones come."""
        _, slice_ports = self._ports(name)
        self.api.modify("endpointslices", endpoint_slice(name, "soak", self._endpoints(name), slice_ports))
        self.modified += 1

    def churn(self, services: int) -> None:
        for _ in range(services):
            self.delete_service()
            self.add_service()
        middle = len(self.services) // 2
        for name in self.services[middle : middle + 2]:  # neither just added nor about to go
            self.move_endpoints(name)
        self.delete_node()
        self.add_node()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept; to anything that looks like HTTP, a minimal 200. TCP connect probes just close."""
    try:
        async with asyncio.timeout(3):
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def config_yaml(api_url: str, listen_port: int) -> str:
    return "\n".join(
        [
            "source_node: node-1",
            f"listen: 127.0.0.1:{listen_port}",
            "defaults: {interval: 2s, timeout: 1s}",
            "node_facts: {enabled: true, interval: 5s}",
            "discovery:",
            f"  api_url: {api_url}",
            f"  namespace: {EXPORTER_NS}",
            "  interval: 2s",
            "  timeout: 1s",
            "  backoff: {initial: 100ms, max: 1s}",
            "  dns: {resolv_conf: ''}",
            "",
        ]
    )


def read_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def read_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _ready(port_: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port_}/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class Scrape:
    targets: int = -1  # sum of netpath_targets
    names: set[str] = field(default_factory=set)  # target names with series in /metrics
    succeeding: int = 0  # netpath_probe_success == 1
    series: int = 0


def scrape(port_: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port_}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = Scrape(targets=0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.series += 1
            if sample.name == "netpath_targets":
                out.targets += int(sample.value)
            elif sample.name == "netpath_probe_success":
                out.succeeding += int(sample.value == 1)
            elif sample.name == "netpath_probe_attempts_total":
                out.names.add(f"{sample.labels['target']}/{sample.labels['transport']}")
    return out


@dataclass
class Exporter:
    label: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path
    names: set[str] = field(default_factory=set)


@dataclass
class Row:
    t: float
    label: str
    rss: int
    fds: int
    targets: int
    succeeding: int
    names: int
    series: int
    appeared: int
    vanished: int
    objects: str


async def start_exporter(label: str, api: FakeKubeAPI, port_: int, workdir: Path) -> Exporter:
    config = workdir / f"{label}.yaml"
    config.write_text(config_yaml(api.url, port_))
    log = workdir / f"{label}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            EXPORTER_BIN, "run", "--config", str(config), stdout=out, stderr=subprocess.STDOUT
        )
    exporter = Exporter(label, port_, proc, log)
    for _ in range(150):  # ready: serving and discovery listed once (bounded: 30 s)
        if proc.returncode is not None:
            raise RuntimeError(f"{label} exited at start-up ({proc.returncode}):\n{log.read_text()[-2000:]}")
        if await asyncio.to_thread(_ready, port_):  # in a thread: this loop serves the API the exporter lists
            return exporter
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{label} not ready in 30 s:\n{log.read_text()[-2000:]}")


async def sample(exporter: Exporter, t: float, objects: str) -> Row:
    pid = exporter.proc.pid
    if exporter.proc.returncode is not None:
        raise RuntimeError(f"{exporter.label} exited ({exporter.proc.returncode}):\n{exporter.log.read_text()[-2000:]}")
    got = await asyncio.to_thread(scrape, exporter.port)
    appeared = len(got.names - exporter.names) if exporter.names else 0
    vanished = len(exporter.names - got.names)
    exporter.names = got.names
    return Row(t, exporter.label, read_rss(pid), read_fds(pid), got.targets, got.succeeding, len(got.names), got.series,
               appeared, vanished, objects)  # fmt: skip


async def inner(args: argparse.Namespace) -> int:
    # SIGTERM (from the outer process) cancels this task: its finally kills the exporters and closes the servers
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)
    churned_api, peer_api = FakeKubeAPI(), FakeKubeAPI()
    churned, steady = Cluster(churned_api), Cluster(peer_api)
    churned.populate()
    steady.populate()
    await churned_api.start()
    await peer_api.start()
    acceptors = [await asyncio.start_server(_answer, "0.0.0.0", p, backlog=256) for p in OPEN_PORTS]
    exporters: list[Exporter] = []
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="churn-soak-") as tmp:
            exporters.append(await start_exporter("churned", churned_api, 19100, Path(tmp)))
            if not args.no_peer:
                exporters.append(await start_exporter("steady", peer_api, 19101, Path(tmp)))
            started = time.monotonic()
            rounds = 0
            next_churn = started + args.churn_every
            next_sample = started
            while (now := time.monotonic()) < started + args.duration + 1:
                if now >= next_sample:
                    objects = f"+{churned.added}/-{churned.deleted}/~{churned.modified}"
                    for exporter in exporters:
                        row = await sample(exporter, now - started, objects if exporter.label == "churned" else "")
                        rows.append(row)
                        print(json.dumps(row.__dict__), flush=True)
                    churned.added = churned.deleted = churned.modified = 0
                    next_sample += args.sample_every
                if now >= next_churn:
                    churned.churn(args.services_per_round)
                    rounds += 1
                    next_churn += args.churn_every
                await asyncio.sleep(max(0.05, min(next_sample, next_churn) - time.monotonic()))
            for exporter in exporters:
                exporter.proc.terminate()
                async with asyncio.timeout(10):
                    code = await exporter.proc.wait()
                print(f"{exporter.label}: exit {code} after SIGTERM", flush=True)
            return report(args, rows, rounds, [e.label for e in exporters])
    finally:
        for exporter in exporters:
            if exporter.proc.returncode is None:
                exporter.proc.kill()
                await exporter.proc.wait()
        for acceptor in acceptors:
            acceptor.close()
        await churned_api.stop()
        await peer_api.stop()


def _median_mib(rows: list[Row]) -> float:
    return statistics.median(r.rss for r in rows) / MiB


def report(args: argparse.Namespace, rows: list[Row], rounds: int, labels: list[str]) -> int:
    every = max(1, round(args.table_every / args.sample_every))
    times = sorted({round(r.t) for r in rows})
    shown = set(times[::every]) | {times[-1]}
    print()
    columns = ["t (min)", *(f"{x} {c}" for x in labels for c in ("RSS (MiB)", "fds", "targets"))]
    columns += ["churned: succeeding", "names in /metrics", "series", "names +/− since last row"]
    columns += ["objects +/−/~ in the last round"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * (1 + 3 * len(labels) + 5) + "|")
    by_time: dict[int, dict[str, Row]] = {}
    for r in rows:
        by_time.setdefault(round(r.t), {})[r.label] = r
    pending_appeared = pending_vanished = 0
    for t in times:
        group = by_time[t]
        c = group["churned"]
        pending_appeared += c.appeared
        pending_vanished += c.vanished
        if t not in shown:
            continue
        cells = [f"{t / 60:.1f}"]
        for x in labels:
            r = group[x]
            cells += [f"{r.rss / MiB:.1f}", str(r.fds), str(r.targets)]
        cells += [str(c.succeeding), str(c.names), str(c.series), f"+{pending_appeared}/−{pending_vanished}", c.objects]
        pending_appeared = pending_vanished = 0
        print("| " + " | ".join(cells) + " |")
    print()
    ok = True
    lo, hi = args.warmup, args.warmup + args.window
    end = rows[-1].t
    summary: list[str] = []
    for x in labels:
        mine = [r for r in rows if r.label == x]
        first = [r for r in mine if lo <= r.t < hi]
        last = [r for r in mine if r.t > end - args.window]
        if not first or not last:
            print(f"{x}: too short for the windows (warm-up {lo:.0f} s, window {args.window:.0f} s)")
            return 2
        growth = _median_mib(last) - _median_mib(first)
        # medians: a probe socket open at the sampling instant is not a leak; a leaked fd lifts every sample
        fds_first, fds_last = statistics.median(r.fds for r in first), statistics.median(r.fds for r in last)
        fd_growth = fds_last - fds_first
        verdict = growth < 5.0 and fd_growth <= 0
        if x == "churned":
            ok = verdict
        summary.append(f"{x}: RSS growth {growth:+.2f} MiB, fd growth {fd_growth:+g}")
        print(
            f"{x}: RSS median {_median_mib(first):.1f} MiB (t {lo / 60:.1f}–{hi / 60:.1f} min) → "
            f"{_median_mib(last):.1f} MiB (last {args.window / 60:.1f} min): growth {growth:+.2f} MiB; "
            f"fds median {fds_first:g} → {fds_last:g} ({fd_growth:+g}), "
            f"range {min(r.fds for r in mine)}–{max(r.fds for r in mine)} over the run; "
            f"targets {min(r.targets for r in mine)}–{max(r.targets for r in mine)}"
            + ("" if x != "churned" else f" — {'PASS' if verdict else 'FAIL'} (< 5 MiB, no fd growth)")
        )
    churned_rows = [r for r in rows if r.label == "churned"]
    print(
        f"churn: {rounds} rounds every {args.churn_every:g} s, {sum(r.appeared for r in churned_rows)} target "
        f"names appeared and {sum(r.vanished for r in churned_rows)} vanished in /metrics over "
        f"{end / 60:.1f} min; " + "; ".join(summary)
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of soak (default 3600)")
    parser.add_argument("--quick", action="store_true", help="3 min, churn and samples every 20 s (smoke run)")
    parser.add_argument("--churn-every", type=float, default=60.0, help="seconds between churn rounds")
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--table-every", type=float, default=300.0, help="seconds between printed table rows")
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds before the first window")
    parser.add_argument("--window", type=float, default=600.0, help="length of the first and last windows")
    parser.add_argument("--services-per-round", type=int, default=4, help="Services replaced per round")
    parser.add_argument("--no-peer", action="store_true", help="skip the steady peer exporter")
    parser.add_argument("--lock-wait", type=float, default=1800.0, help="seconds to wait for the lab lock")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.churn_every, args.sample_every = 180.0, 20.0, 20.0
        args.table_every, args.warmup, args.window = 20.0, 40.0, 60.0
    if not 0 < args.duration <= 6 * 3600 or args.churn_every < 5 or args.sample_every < 5:
        parser.error("--duration must be in (0, 21600] s, --churn-every and --sample-every at least 5 s")
    if args.inner:
        try:
            return asyncio.run(inner(args))
        except asyncio.CancelledError:
            print("churn_soak: inner run cancelled (SIGTERM); exporters stopped", file=sys.stderr)
            return 2
    return outer(args, [a for a in argv if a != "--inner"])


if __name__ == "__main__":
    sys.exit(main())
