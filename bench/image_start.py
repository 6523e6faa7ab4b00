"""The container image's budgets: its size, and the time from starting the container to /readyz 200.

Peers measured in the same run:
- size: the local debian:bookworm-slim base it is built on (`make image`'s mmdebstrap stand-in);
- start: the same exporter, same config, started from the venv with ``ip netns exec`` — what the lab did so
  far — so the ratio is what the container (podman, runc, the read-only root, the image's Python) adds.

Both run in one private namespace, ``nplab-bench-image`` (loopback only; the lab lock is held, so no lab run
removes it underneath), with the chart's container settings (non-root, read-only root, no capabilities) and a
config of one TCP target on 127.0.0.1. A poller inside the namespace GETs /readyz every 10 ms; the clock is
CLOCK_MONOTONIC, the same in every network namespace. Bounded: ``--rounds`` starts each, 30 s per start.

Run: ``.venv/bin/python bench/image_start.py`` (``--rounds 3`` for a smoke run). Prints Markdown for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import cluster, image, netns  # noqa: E402

NS = "nplab-bench-image"
PORT = 10047
START_TIMEOUT = 30.0
BASE = "docker.io/library/debian:bookworm-slim"


def config(port: int) -> dict[str, object]:
    return {
        "source_node": "bench",
        "listen": f"127.0.0.1:{port}",
        "node_facts": {"enabled": True},
        "targets": [{"name": "self", "kind": "tcp", "path": "pod_ip", "address": f"127.0.0.1:{port}"}],
    }


# Inside NS: for each line read (port, deadline), poll /readyz until 200; answer the monotonic time it came.
POLLER = (
    "import sys, time, urllib.request\n"
    "for line in sys.stdin:\n"
    "    port, deadline = line.split()\n"
    "    deadline = float(deadline)\n"
    "    seen = 0.0\n"
    "    while time.monotonic() < deadline:\n"
    "        try:\n"
    "            with urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=1) as r:\n"
    "                if r.status == 200:\n"
    "                    seen = time.monotonic(); break\n"
    "        except Exception:\n"
    "            pass\n"
    "        time.sleep(0.01)\n"
    "    print(seen, flush=True)\n"
)


def image_size(ref: str) -> int:
    return int(image.podman("image", "inspect", "--format", "{{.Size}}", ref).strip())


def time_to_ready(poller: subprocess.Popen[str], port: int, start: float) -> float:
    assert poller.stdin is not None and poller.stdout is not None
    poller.stdin.write(f"{port} {start + START_TIMEOUT}\n")
    poller.stdin.flush()
    seen = float(poller.stdout.readline())
    if not seen:
        raise RuntimeError(f"/readyz not 200 within {START_TIMEOUT:.0f}s")
    return seen - start


def write_config(config_dir: Path, port: int) -> None:
    config_dir.chmod(0o755)
    (config_dir / "config.yaml").write_text(json.dumps(config(port)))  # JSON is YAML
    (config_dir / "config.yaml").chmod(0o644)


def container_round(poller: subprocess.Popen[str], ref: str, config_dir: Path, port: int) -> float:
    name = "nplab-bench-image-exporter"
    argv = [
        "run", "--detach", "--pull=never", f"--name={name}", f"--network=ns:/run/netns/{NS}",
        "--user=65534:65534", "--read-only", "--read-only-tmpfs=false", "--cap-drop=all",
        "--security-opt=no-new-privileges", "--tmpfs=/tmp:rw,mode=1777,size=16m",
        f"--volume={config_dir}:/etc/netpath:ro", ref, "run", "--config", "/etc/netpath/config.yaml",
    ]  # fmt: skip
    try:
        start = time.monotonic()
        # the clock starts before podman does; the poller compares against it (CLOCK_MONOTONIC in every netns)
        result = subprocess.Popen(["podman", *argv], env=image.podman_env(), stdout=subprocess.DEVNULL)
        elapsed = time_to_ready(poller, port, start)
        result.wait(timeout=START_TIMEOUT)
        return elapsed
    finally:
        image.podman("rm", "--force", "--time=0", name, check=False)


def venv_round(poller: subprocess.Popen[str], config_dir: Path, port: int) -> float:
    exe = str(Path(sys.executable).with_name("netpath-exporter"))
    start = time.monotonic()
    proc = subprocess.Popen(
        ["ip", "netns", "exec", NS, exe, "run", "--config", str(config_dir / "config.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return time_to_ready(poller, port, start)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50:
        parser.error(f"--rounds: expected 1 to 50, got {args.rounds}")
    image.build()
    ref = image.render_chart({}).container["image"]
    with cluster.exclusive(), tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp)
        netns.delete(NS)
        netns.create(NS)
        poller = subprocess.Popen(
            ["ip", "netns", "exec", NS, sys.executable, "-c", POLLER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            container, venv = [], []
            # Interleaved, so drift hits both alike. A fresh port for every start: the exporter does not set
            # SO_REUSEADDR (exporter/server.py), so its predecessor's TIME_WAIT connections block the same port.
            for i in range(args.rounds):
                port = PORT + 2 * i
                write_config(config_dir, port)
                container.append(container_round(poller, ref, config_dir, port))
                write_config(config_dir, port + 1)
                venv.append(venv_round(poller, config_dir, port + 1))
        finally:
            assert poller.stdin is not None
            poller.stdin.close()
            poller.wait(timeout=10)
            netns.delete(NS)
    size, base = image_size(ref), image_size(BASE)
    c_med, v_med = statistics.median(container), statistics.median(venv)
    print(f"Run: `.venv/bin/python bench/image_start.py --rounds {args.rounds}` on {platform.machine()}, ", end="")
    print(f"{platform.python_version()} (host), {time.strftime('%Y-%m-%d')}.\n")
    print("| measure | image | peer | × peer |\n|---|---|---|---|")
    peer = f"{base / 1e6:.0f} MB (its base, the local debian:bookworm-slim)"
    print(f"| size | {size / 1e6:.0f} MB | {peer} | {size / base:.2f} |")
    print(
        f"| start → /readyz 200, median of {args.rounds} | {c_med:.2f} s (max {max(container):.2f}) "
        f"| {v_med:.2f} s (max {max(venv):.2f}; venv process, ip netns exec) | {c_med / v_med:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
