"""Two engines (two processes' worth) on one database: each task is worked by one of them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace

import pytest

from bot.engine import EngineConfig, TaskEngine
from bot.kling.ratelimit import RateLimiter
from bot.metrics import Metrics
from bot.tasks import TaskState
from tests.bot.engine.test_machine import FAST, World

LEASE = 0.6


def config(name: str, **changes: object) -> EngineConfig:
    values: dict[str, object] = {"process_name": name, "lease_seconds": LEASE, **changes}
    return replace(FAST, **values)  # type: ignore[arg-type]


async def kill(world: World, engine: TaskEngine) -> None:
    """Stop an engine the way SIGKILL would: its steps cut off, its leases left as they are."""
    world.engines.remove(engine)
    engine._stopping = True
    for background in engine._background:
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
    await engine.steps.stop(0)
    await engine.callbacks.stop()


def delivered_once(world: World, count: int) -> None:
    ids = [t.id for t in world.notifier.delivered]
    assert len(ids) == len(set(ids)) == count, f"delivered {sorted(ids)}"


async def test_two_engines_share_the_work_each_task_once(world: World) -> None:
    world.api.max_concurrent = 2  # the account's limit, shared by both processes
    a = await world.engine(config("a"))
    b = await world.engine(config("b"))
    tasks = [await world.new_task(a if i % 2 else b) for i in range(8)]
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 8, timeout=20)
    await asyncio.sleep(3 * LEASE)  # time for a second delivery, if one were coming
    delivered_once(world, 8)
    assert len(world.api.submits) == 8, "each task sent once, never refused (1303)"
    assert len(world.api.tasks) == 8
    for task in tasks:
        assert (await world.state(task)).state is TaskState.DELIVERED


async def test_the_provider_limit_holds_across_engines(world: World) -> None:
    world.api.finish_after = 0.4
    a = await world.engine(config("a", max_concurrent=1))
    b = await world.engine(config("b", max_concurrent=1))
    at_provider: list[int] = []

    async def watch() -> None:
        while True:
            at_provider.append(await world.store.at_provider_count())
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    for i in range(4):
        await world.new_task(a if i % 2 else b)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 4, timeout=20)
    watcher.cancel()
    assert max(at_provider) == 1, "one slot in all, whichever engine took it"
    delivered_once(world, 4)


async def test_a_dead_engines_tasks_are_taken_over(world: World) -> None:
    world.api.finish_after = 0.5
    a = await world.engine(config("a"))
    tasks = [await world.new_task(a) for _ in range(4)]
    await world.until_queries(2)  # two at the provider, two waiting for a slot
    await kill(world, a)
    assert world.notifier.delivered == []
    metrics = Metrics("b", system=False)
    b = await world.engine(config("b"), metrics=metrics)
    assert b.leases.taken_over == 0, "a's leases still run: nothing taken over yet"
    # b takes the two at the provider over once a's leases ran out; the two waiting ones it
    # took at its start, or over as well if a's look at its leases had claimed them by then.
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 4, timeout=20)
    taken = b.leases.taken_over
    assert 2 <= taken <= 4
    counted = f'kling_bot_lease_takeovers_total{{process="b"}} {taken}.0'
    assert counted.encode() in metrics.exposition()
    delivered_once(world, 4)
    assert len(world.api.tasks) == 4, "never a second submit of a task a had sent"
    for task in tasks:
        owner, _ = await world.store.lease_of(task.id)
        assert owner == "b"


async def test_a_clean_stop_hands_the_tasks_over_at_once(world: World) -> None:
    world.api.finish_after = 0.5
    a = await world.engine(config("a", lease_seconds=60.0))
    await world.new_task(a)
    await world.until_queries(1)
    await a.stop()
    world.engines.remove(a)
    b = await world.engine(config("b", lease_seconds=60.0))
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1, timeout=10)
    assert b.leases.taken_over == 0, "taken at b's start, not after a lease ran out"
    assert len(world.api.submits) == 1


async def test_an_engine_never_delivers_a_task_another_holds(world: World) -> None:
    world.api.finish_after = 0.3
    a = await world.engine(config("a", lease_seconds=60.0))
    task = await world.new_task(a)
    await world.until_state(task, TaskState.SUBMITTED)
    # b takes the task while a still works it (as if a had stalled past its lease)
    await world.store.release(task.id, "a")
    assert await world.store.hold(task.id, "b", 60.0)
    await asyncio.sleep(1.0)
    assert world.notifier.delivered == [], "a found the lease gone before delivering"
    assert (await world.state(task)).state is TaskState.SUCCEEDED


async def test_each_engine_takes_its_share_of_the_query_rate(world: World) -> None:
    a = await world.engine(config("a"))
    assert a.client.limiter is not None and a.client.limiter.rate == 500
    b = await world.engine(config("b"))
    assert b.client.limiter is not None and b.client.limiter.rate == 250
    async with asyncio.timeout(5):
        while a.client.limiter.rate != 250:
            await asyncio.sleep(0.05)
    await b.stop()
    world.engines.remove(b)
    async with asyncio.timeout(5):
        while a.client.limiter.rate != 500:
            await asyncio.sleep(0.05)


def test_set_rate_changes_the_spacing() -> None:
    limiter = RateLimiter(10)
    limiter.set_rate(4)
    assert limiter.rate == 4
    with pytest.raises(ValueError, match="positive"):
        limiter.set_rate(0)


async def test_an_engine_lets_go_of_a_task_another_took_over(world: World) -> None:
    world.api.finish_after = 30.0
    a = await world.engine(config("a"))
    task = await world.new_task(a)
    await world.until_state(task, TaskState.SUBMITTED)
    assert a._tracks(task.id)
    # a stalled past its lease meanwhile, and b took the task over
    await world.store.release(task.id, "a")
    assert await world.store.hold(task.id, "b", 60.0)
    async with asyncio.timeout(5):
        while a._tracks(task.id) or a.steps.busy(task.id):
            await asyncio.sleep(0.05)
    owner, _ = await world.store.lease_of(task.id)
    assert owner == "b", "a never took it back"


async def test_a_second_process_of_the_same_name_is_warned_about(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await world.engine(config("a"))
    with caplog.at_level(logging.WARNING, logger="bot.engine.leases"):
        await world.engine(config("b"))
        assert "two processes share the name" not in caplog.text
        await world.engine(config("a"))
    assert "Another process named 'a'" in caplog.text
    assert "give each process its own SHARD_IDS" in caplog.text
