"""Running commands in lab network namespaces, and finding and removing them.

Everything the lab creates lives in namespaces named ``nplab-…``. This module is the only place that
spawns `ip`/`iptables`; every helper takes the namespace explicitly so nothing runs in the root namespace
by accident (building a link "from the root" would leave it there on a crash).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

PREFIX = "nplab-"
NETNS_DIR = Path("/run/netns")
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf


class LabError(RuntimeError):
    """A lab operation failed; the message names the command or object and what went wrong."""


def check_name(ns: str) -> str:
    if not ns.startswith(PREFIX) or "/" in ns:
        raise LabError(f"refusing to touch namespace {ns!r}: lab namespaces start with {PREFIX!r}")
    return ns


def run(cmd: Sequence[str], *, stdin: str | None = None, check: bool = True, timeout: float = 30) -> str:
    """Run a command, return its stdout; a failure raises LabError with the command and its stderr."""
    try:
        proc = subprocess.run(list(cmd), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(cmd)}: no answer in {timeout}s") from None
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ns_exec(ns: str, cmd: Sequence[str], **kwargs: object) -> str:
    """Run a command inside lab namespace ``ns``."""
    return run(["ip", "netns", "exec", check_name(ns), *cmd], **kwargs)  # type: ignore[arg-type]


def ip_batch(ns: str, commands: Iterable[str]) -> None:
    """Apply `ip` commands inside ``ns`` in one process (``ip -n NS -batch -``); stops at the first error."""
    text = "\n".join(commands) + "\n"
    run(["ip", "-n", check_name(ns), "-batch", "-"], stdin=text)


def sysctl(ns: str, key: str, value: str | int) -> None:
    ns_exec(ns, ["sysctl", "-q", "-w", f"{key}={value}"])


def read_sysctl(ns: str, key: str) -> str:
    return ns_exec(ns, ["sysctl", "-n", key]).strip()


def create(ns: str) -> None:
    run(["ip", "netns", "add", check_name(ns)])
    ip_batch(ns, ["link set lo up"])


def lab_namespaces() -> list[str]:
    """Every namespace with the lab prefix, whatever created it (also a crashed `up`)."""
    out = run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(PREFIX))


def pids_in(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", check_name(ns)], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_pids(pids: Iterable[int], *, grace: float = 2.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL whatever is left."""
    alive = set(pids)
    for pid in list(alive):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            alive.discard(pid)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {p for p in alive if _alive(p)}
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        # reap our own children so they do not linger as zombies (which count as alive for kill(0))
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def delete(ns: str) -> None:
    """Kill every process in ``ns`` and delete it; a namespace that is already gone is fine."""
    kill_pids(pids_in(ns))
    run(["ip", "netns", "del", check_name(ns)], check=False)
    etc = NETNS_ETC / ns
    if etc.is_dir():
        for f in etc.iterdir():
            f.unlink()
        etc.rmdir()


def write_resolv_conf(ns: str, nameserver: str, search: Sequence[str]) -> None:
    """Give the pod namespace its own resolv.conf (a file, not a network change), like kubelet does."""
    d = NETNS_ETC / check_name(ns)
    d.mkdir(parents=True, exist_ok=True)
    (d / "resolv.conf").write_text(
        f"search {' '.join(search)}\nnameserver {nameserver}\noptions ndots:5 timeout:1 attempts:1\n"
    )


def remove_empty_etc_dir() -> None:
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()  # only if empty: other tools may keep their own files there
