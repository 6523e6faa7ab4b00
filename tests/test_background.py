"""Background tasks: a failure is logged and restarted with backoff, and the state is told, never silent."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest
from contract import documented, exposed
from prometheus_client import CollectorRegistry, generate_latest

from exporter.background import CRASH_LOOP_FAILURES, BackgroundTasks


def tasks(registry: CollectorRegistry) -> BackgroundTasks:
    return BackgroundTasks(registry, source_node="node-1", backoff_initial=0.05, backoff_max=0.2, rng=random.Random(1))


def sample(registry: CollectorRegistry, name: str, task: str) -> float | None:
    value = registry.get_sample_value(name, {"source_node": "node-1", "task": task})
    return value


async def eventually(check: object, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_failing_task_is_restarted_with_backoff_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    background = tasks(registry)
    runs: list[int] = []
    healed = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs) + 1)
        if len(runs) <= 3:
            raise ValueError(f"bad object {len(runs)}")
        healed.set()
        await asyncio.Event().wait()  # then runs until cancelled, as a task should

    with caplog.at_level(logging.ERROR, logger="netpath_exporter.background"):
        background.spawn("discovery", flaky)
        async with asyncio.timeout(10):
            await healed.wait()
    try:
        assert sample(registry, "netpath_background_task_up", "discovery") == 1
        assert sample(registry, "netpath_background_task_restarts_total", "discovery") == 3
        messages = [r.getMessage() for r in caplog.records]
        assert "'discovery' stopped: ValueError: bad object 1; restarting in" in messages[0]
        delays = [float(m.split("restarting in ")[1].split("s")[0]) for m in messages]
        assert len(delays) == 3 and delays[0] < delays[1] < delays[2]  # 0.05, 0.1, 0.2 (±20 % jitter)
        assert background.down() == [] and background.crash_looping() == []
    finally:
        assert await background.close() == []


async def test_while_down_it_is_reported_down_and_after_repeated_failures_crash_looping() -> None:
    registry = CollectorRegistry()
    background = BackgroundTasks(registry, source_node="node-1", backoff_initial=0.01, backoff_max=0.01)

    async def broken() -> None:
        raise RuntimeError("no credentials")

    background.spawn("node_facts", broken)
    try:
        await eventually(lambda: bool(background.crash_looping()))
        assert background.down() == ["node_facts (RuntimeError: no credentials)"]
        assert background.crash_looping()[0].startswith("node_facts failed ")
        assert int(background.crash_looping()[0].split()[2]) >= CRASH_LOOP_FAILURES
        assert sample(registry, "netpath_background_task_up", "node_facts") == 0
    finally:
        await background.close()


async def test_a_task_that_returns_is_restarted_too() -> None:
    registry = CollectorRegistry()
    background = tasks(registry)
    calls = 0

    async def returns() -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            await asyncio.Event().wait()

    background.spawn("heartbeat", returns)
    try:
        await eventually(lambda: calls == 2)
        assert sample(registry, "netpath_background_task_restarts_total", "heartbeat") == 1
    finally:
        await background.close()


async def test_close_is_bounded_even_for_a_task_that_refuses_to_stop() -> None:
    registry = CollectorRegistry()
    background = tasks(registry)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    background.spawn("node_perspective", stubborn)
    await asyncio.sleep(0.05)
    assert await background.close(deadline=0.2) == ["node_perspective"]
    release.set()
    await asyncio.sleep(0.05)


async def test_the_metrics_are_the_documented_ones() -> None:
    registry = CollectorRegistry()
    background = tasks(registry)
    background.spawn("heartbeat", lambda: asyncio.Event().wait())  # type: ignore[arg-type,return-value]
    await asyncio.sleep(0.01)
    try:
        text = generate_latest(registry).decode()
    finally:
        await background.close()
    assert exposed(text) == documented("Background tasks")
