"""What a hostile config file costs `check-config`: CPU time and peak RSS of the real CLI, against a peer.

Peer, measured in the same run: the same CLI on a small good config (README's example size) — the cost of
starting Python and importing the exporter, which every case pays. Cases: the largest documents the limits let
through or stop (128 KiB of static targets; 128 KiB flat list stopped by the value budget; a billion-laughs
alias bomb; 50 000 nested brackets), and the files of issue 15 rows 7-9 that used to hang, trace back or eat
memory (/dev/zero, a FIFO, UTF-16, NaN). Also the loader alone, in-process (no interpreter start): the time
`load_config` takes for each document.

Every child runs under RLIMIT_AS 256 MiB. Bounded: REPEAT runs per case. Run: ``.venv/bin/python
bench/config_load.py`` (``--quick``: one run each). Prints a Markdown table for docs/reliability.md ## Config.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from exporter.config import MAX_FILE_BYTES, ConfigError, load_config  # noqa: E402

MEMORY_LIMIT = 256 << 20

GOOD = """\
source_node: node1
targets:
  - {name: peer/node2, kind: tcp, path: pod_ip, address: "10.42.2.3:10047", target_node: node2}
  - {name: svc/default/web, kind: tcp, path: cluster_ip, address: "10.43.0.20:80", service: default/web}
  - {name: dns/kube-dns, kind: dns, path: dns, address: 10.43.0.10, transports: [udp, tcp],
     query: kubernetes.default.svc.cluster.local, expect: [10.43.0.1]}
"""


def _fill(unit: str, head: str = "", tail: str = "") -> str:
    return head + unit * ((MAX_FILE_BYTES - len(head) - len(tail)) // len(unit)) + tail


def _largest_valid() -> str:
    lines, size, i = ["targets:\n"], 9, 0
    while True:
        line = f"  - {{name: t{i}, kind: tcp, path: pod_ip, address: '10.42.{i // 250 % 250}.{i % 250}:80'}}\n"
        if size + len(line) > MAX_FILE_BYTES:
            return "".join(lines)
        lines.append(line)
        size, i = size + len(line), i + 1


def _bomb() -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\nsource_node: *l9\n"


def _text(content: str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        (tmp / "config.yaml").write_text(content)
        return str(tmp / "config.yaml")

    return make


def _bytes(content: bytes) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        (tmp / "config.yaml").write_bytes(content)
        return str(tmp / "config.yaml")

    return make


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "config.yaml")
    return str(tmp / "config.yaml")


CASES: list[tuple[str, Callable[[Path], str]]] = [
    ("peer: small good config", _text(GOOD)),
    ("largest valid: 128 KiB of static targets", _text(_largest_valid())),
    ("128 KiB flat list (value budget)", _text(_fill("a,", "x: [", "]\n"))),
    ("alias bomb (10^9 values)", _text(_bomb())),
    ("50 000 nested [", _text("[" * 50_000)),
    ("/dev/zero", lambda tmp: "/dev/zero"),
    ("FIFO without a writer", _fifo),
    ("UTF-16", _bytes(GOOD.encode("utf-16"))),
    ("interval: .nan", _text(GOOD + "defaults: {interval: .nan}\n")),
]


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(path: str) -> tuple[float, int, float]:
    """(CPU seconds, exit status, peak RSS MiB) of one `check-config` child. CPU, not wall time: the machine
    is shared, and a waiting child (the FIFO case, were it to block) would show as a hang, not as a cost."""
    child = subprocess.Popen(
        [sys.executable, "-m", "exporter", "check-config", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_limit,
        cwd=REPO,
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, child.returncode, usage.ru_maxrss / 1024


def load_in_process(path: str) -> float:
    start = time.perf_counter()
    with contextlib.suppress(ConfigError):
        load_config(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one run per case")
    repeat = 1 if parser.parse_args().quick else 7
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        peer = None
        for name, make in CASES:
            case_dir = Path(tmpdir) / str(len(rows))
            case_dir.mkdir()
            path = make(case_dir)
            runs = [run_cli(path) for _ in range(repeat)]
            cpu = statistics.median(r[0] for r in runs)
            peer = peer or cpu
            loader = statistics.median(load_in_process(path) for _ in range(repeat))
            rows.append((name, runs[0][1], cpu, cpu / peer, max(r[2] for r in runs), loader))
    print(f"`python bench/config_load.py`, median of {repeat}, Python {sys.version.split()[0]}, RLIMIT_AS 256 MiB\n")
    print(f"load average before: {os.getloadavg()[0]:.1f}\n")
    print("| file | exit | check-config CPU | × peer | peak RSS | load_config alone (wall) |")
    print("|---|---|---|---|---|---|")
    for name, code, cpu, ratio, rss, loader in rows:
        print(f"| {name} | {code} | {cpu:.2f} s | {ratio:.2f} | {rss:.0f} MiB | {loader * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
