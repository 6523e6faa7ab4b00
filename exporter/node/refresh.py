"""Node facts refreshed on their own interval, independent of the probe schedule.

Reads are blocking (netlink, ioctls, /proc, iptables-save subprocesses), so each runs in a worker thread;
the event loop only waits. Facts change slowly and iptables-save is not free, so the interval is long
(tens of seconds) compared with probes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from .facts import ClusterIPPort, NodeFacts
from .readers import read_node_facts


async def refresh_forever(
    interval: float,
    on_snapshot: Callable[[NodeFacts], None],
    *,
    cluster_ips: Callable[[], Iterable[ClusterIPPort]] = tuple,
    netns: str | None = None,
    command_timeout: float = 5.0,
) -> None:
    """Read node facts now and every `interval` seconds after each reading, handing each snapshot to
    `on_snapshot`; runs until cancelled. `cluster_ips` is asked each round: discovery changes the set."""
    if not interval > 0:
        raise ValueError(f"interval: must be > 0 seconds, got {interval!r}")
    if not command_timeout > 0:
        raise ValueError(f"command_timeout: must be > 0 seconds, got {command_timeout!r}")
    while True:
        wanted = tuple(cluster_ips())
        snapshot = await asyncio.to_thread(read_node_facts, wanted, netns=netns, command_timeout=command_timeout)
        on_snapshot(snapshot)
        await asyncio.sleep(interval)
