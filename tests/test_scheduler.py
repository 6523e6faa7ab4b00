"""The scheduler: targets come and go at runtime, each on its own clock, results go to the sink."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator

import pytest

from exporter.model import AnyTarget, PathClass, ProbeResult, Reason, Via
from exporter.probes.tcp import TCPTarget
from exporter.scheduler import Scheduler


class RecordingSink:
    """Keeps what the scheduler reports, as the metrics store would."""

    def __init__(self) -> None:
        self.results: list[tuple[AnyTarget, ProbeResult]] = []
        self.forgotten: list[AnyTarget] = []
        self.lags: list[float] = []

    def record(self, target: AnyTarget, result: ProbeResult) -> None:
        self.results.append((target, result))

    def forget(self, target: AnyTarget) -> None:
        self.forgotten.append(target)

    def observe_lag(self, seconds: float) -> None:
        self.lags.append(seconds)

    def count(self, name: str) -> int:
        return sum(1 for t, _ in self.results if t.name == name)


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    """A real TCP listener on loopback that accepts and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def tcp(name: str, port: int, interval: float = 0.2) -> TCPTarget:
    return TCPTarget(
        name=name, path=PathClass.POD_IP, via=Via.POD, host="127.0.0.1", port=port, interval=interval, timeout=0.2
    )


async def test_each_target_is_probed_on_its_own_interval(listener: int) -> None:
    sink = RecordingSink()
    scheduler = Scheduler(sink, jitter=0.0)
    scheduler.set_targets([tcp("fast", listener, 0.1), tcp("slow", listener, 0.5)])
    await asyncio.sleep(1.05)
    await scheduler.close()
    assert 7 <= sink.count("fast") <= 12
    assert 2 <= sink.count("slow") <= 3
    assert all(r.ok for _, r in sink.results)
    assert sink.lags and max(sink.lags) < 0.5


async def test_removed_targets_stop_and_are_forgotten(listener: int) -> None:
    sink = RecordingSink()
    scheduler = Scheduler(sink, jitter=0.0)
    keep, drop = tcp("keep", listener), tcp("drop", listener)
    scheduler.set_targets([keep, drop])
    await asyncio.sleep(0.5)
    scheduler.set_targets([keep])
    assert sink.forgotten == [drop]
    dropped_so_far = sink.count("drop")
    await asyncio.sleep(0.5)
    assert [t.name for t in scheduler.targets()] == ["keep"]
    await scheduler.close()
    assert sink.count("drop") == dropped_so_far


async def test_a_changed_target_is_restarted_not_forgotten(listener: int) -> None:
    sink = RecordingSink()
    scheduler = Scheduler(sink, jitter=0.0)
    before = tcp("web", listener, interval=10.0)
    scheduler.set_targets([before])
    after = dataclasses.replace(before, interval=0.1)
    scheduler.set_targets([after])
    await asyncio.sleep(0.55)
    await scheduler.close()
    assert sink.forgotten == []  # same key, same series: the counters carry on
    assert scheduler.targets() == [] and sink.count("web") >= 4
    assert all(t == after for t, _ in sink.results)


async def test_a_probe_that_overruns_its_timeout_is_cut_off() -> None:
    sink = RecordingSink()

    async def hangs(target: AnyTarget, timeout: float) -> ProbeResult:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    scheduler = Scheduler(sink, jitter=0.0, probe=hangs)
    scheduler.set_targets([tcp("stuck", 9, interval=1.0)])
    await asyncio.sleep(1.0)
    await scheduler.close()
    assert [r.reason for _, r in sink.results] == [Reason.TIMEOUT]


async def test_a_probe_that_raises_becomes_an_error_result() -> None:
    sink = RecordingSink()

    async def broken(target: AnyTarget, timeout: float) -> ProbeResult:
        raise RuntimeError("bug in a probe")

    scheduler = Scheduler(sink, jitter=0.0, probe=broken)
    scheduler.set_targets([tcp("buggy", 9, interval=0.2)])
    await asyncio.sleep(0.5)
    await scheduler.close()
    assert sink.results and all(r.reason is Reason.ERROR for _, r in sink.results)
    assert "bug in a probe" in sink.results[0][1].detail


async def test_jitter_spreads_probes() -> None:
    sink = RecordingSink()
    times: list[float] = []

    async def stamp(target: AnyTarget, timeout: float) -> ProbeResult:
        times.append(asyncio.get_running_loop().time())
        return ProbeResult.success(0.0)

    scheduler = Scheduler(sink, jitter=0.3, probe=stamp)
    scheduler.set_targets([tcp("jittery", 9, interval=0.1)])
    await asyncio.sleep(1.5)
    await scheduler.close()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 8
    assert min(gaps) >= 0.065 and max(gaps) <= 0.14  # within ±30 % (plus loop slack), and not all equal
    assert max(gaps) - min(gaps) > 0.01


# --- closing: cancellation is total, the wait is bounded -----------------------------------------------------


async def test_a_probe_that_swallows_its_cancellation_still_ends_its_loop() -> None:
    # What dnspython under Python 3.11's wait_for did: the cancellation arrives as the answer does, and the
    # probe returns the answer instead of raising.
    async def swallowing(target: AnyTarget, timeout: float) -> ProbeResult:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(timeout)
        return ProbeResult.failure(Reason.REFUSED, 0.0)

    sink = RecordingSink()
    scheduler = Scheduler(sink, probe=swallowing, jitter=0.0)
    scheduler.set_targets([tcp(f"t{i}", 1, interval=0.05) for i in range(20)])
    await asyncio.sleep(0.2)

    assert await scheduler.close(deadline=5.0) == []
    assert all(task.done() for task in asyncio.all_tasks() if task.get_name().startswith("probe "))


async def test_close_gives_up_at_its_deadline_and_names_what_it_left() -> None:
    release = asyncio.Event()

    async def stubborn(target: AnyTarget, timeout: float) -> ProbeResult:
        while not release.is_set():  # refuses every cancellation: the worst a library could do
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)
        return ProbeResult.success(0.0)

    scheduler = Scheduler(RecordingSink(), probe=stubborn, jitter=0.0)
    scheduler.set_targets([tcp("stubborn", 1, interval=0.05), tcp("other", 2, interval=0.05)])
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()

    left = await scheduler.close(deadline=0.3)

    waited = loop.time() - started
    release.set()
    assert left == ["probe tcp other", "probe tcp stubborn"]
    assert 0.3 <= waited < 5.0  # bounded: the hang guard, not a performance bound
    await asyncio.sleep(0.1)  # released: they end now, cancelled by the close
