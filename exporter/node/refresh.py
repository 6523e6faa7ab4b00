"""Node facts refreshed on their own interval, independent of the probe schedule.

Reads are blocking (netlink, ioctls, /proc, iptables-save subprocesses), so each runs in a thread of its own;
the event loop only waits. A daemon thread, not the default executor: a read cannot be cancelled, and neither
``asyncio.run`` (which joins the default executor) nor the interpreter's exit may wait for one to finish —
a shutdown abandons it. Facts change slowly and iptables-save is not free, so the interval is long
(tens of seconds) compared with probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Iterable
from typing import TypeVar

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
        read = functools.partial(read_node_facts, wanted, netns=netns, command_timeout=command_timeout)
        snapshot = await in_daemon_thread(read, name="node-facts")
        on_snapshot(snapshot)
        await asyncio.sleep(interval)


T = TypeVar("T")


async def in_daemon_thread(work: Callable[[], T], *, name: str) -> T:
    """``work()`` in a new daemon thread; cancelling the await abandons the thread (its result is dropped)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # cancelled meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
