"""The lab's state directory: topology, running processes, active faults, logs and generated configs.

Default ``/run/nplab`` (tmpfs: gone after a reboot, like the namespaces); ``NPLAB_STATE_DIR`` overrides it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = "/run/nplab"


def state_dir() -> Path:
    return Path(os.environ.get("NPLAB_STATE_DIR", DEFAULT_STATE_DIR))


def topology_path() -> Path:
    return state_dir() / "topology.json"


@dataclass
class Proc:
    name: str  # e.g. "dnsmasq/coredns-0"
    netns: str
    pid: int
    argv: list[str]
    log: str


@dataclass
class LabState:
    """What `up` started and which faults are active: {fault: {node: rate-or-None}}."""

    processes: dict[str, Proc] = field(default_factory=dict)
    faults: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def node_faults(self, node: str) -> dict[str, float | None]:
        return {f: nodes[node] for f, nodes in self.faults.items() if node in nodes}

    @staticmethod
    def path() -> Path:
        return state_dir() / "state.json"

    @classmethod
    def load(cls) -> LabState:
        try:
            raw: dict[str, Any] = json.loads(cls.path().read_text())
        except FileNotFoundError:
            return cls()
        return cls(
            processes={k: Proc(**v) for k, v in raw.get("processes", {}).items()},
            faults=raw.get("faults", {}),
        )

    def save(self) -> None:
        raw = {
            "processes": {k: vars(v) for k, v in self.processes.items()},
            "faults": self.faults,
        }
        tmp = self.path().with_suffix(".tmp")
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
        tmp.replace(self.path())
