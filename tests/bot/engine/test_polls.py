"""`EnginePolls` within the engine's world: the query rate it plans for, and callbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import aiohttp
import pytest

from bot.engine import EngineConfig
from bot.engine.polls import EnginePolls
from bot.kling.client import KlingClient
from bot.kling.ratelimit import RateLimiter
from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, Task, TaskOptions, TaskState

NOW = 1_800_000_000.0
TASKS = 40
CONFIG = EngineConfig(poll_interval=1.0, poll_max_interval=10.0)


@pytest.fixture
async def store() -> AsyncIterator[TaskStore]:
    store = await TaskStore.open("sqlite:///:memory:")
    try:
        yield store
    finally:
        await store.close()


async def at_the_provider(store: TaskStore) -> Task:
    new = NewTask(
        user_id=1,
        guild_id=10,
        channel_id=100,
        locale="en-US",
        prompt="a cat walks",
        options=TaskOptions(),
        image_count=2,
        input_dir="",
        upload_limit=10 * 1024 * 1024,
    )
    task = await store.reserve(new, QuotaLimits())
    await store.transition(task.id, TaskState.SUBMITTING)
    return await store.transition(
        task.id, TaskState.SUBMITTED, kling_task_id=f"k-{task.id}", submitted_at=NOW - 100
    )


async def gaps(polls: EnginePolls, tasks: list[Task]) -> list[float]:
    return [polls.next(task.id) for task in tasks]


async def test_the_polls_follow_the_share_of_the_query_rate_the_limiter_has_now(
    store: TaskStore,
) -> None:
    """With several processes each gets a share of the rate (the lease keeper sets it on the
    limiter): the plan must fit that share, not the rate the process started with."""
    limiter = RateLimiter(100.0)
    async with aiohttp.ClientSession() as session:
        client = KlingClient(session, base_url="http://127.0.0.1:9", api_key="k", limiter=limiter)
        polls = EnginePolls(CONFIG, client, clock=lambda: NOW, uniform=lambda a, b: (a + b) / 2)
        tasks = [await at_the_provider(store) for _ in range(TASKS)]
        for task in tasks:
            polls.track(task)
        assert max(await gaps(polls, tasks)) <= CONFIG.poll_max_interval, "a rate to spare"
        limiter.set_rate(1.0)  # a share of the rate, now that others run too
        assert min(await gaps(polls, tasks)) >= TASKS / 1.0, "40 tasks in 1 query a second"


async def test_without_callbacks_the_polls_stop_waiting_for_them(store: TaskStore) -> None:
    config = replace(CONFIG, callback_listen_port=0, callback_public_url="https://bot.example")
    async with aiohttp.ClientSession() as session:
        client = KlingClient(session, base_url="http://127.0.0.1:9", api_key="k")
        polls = EnginePolls(config, client, clock=lambda: NOW, uniform=lambda a, b: (a + b) / 2)
        task = await at_the_provider(store)
        polls.track(task)
        assert polls.planner.callbacks_trusted
        polls.without_callbacks()
        assert not polls.planner.callbacks_trusted
        assert polls.next(task.id) <= CONFIG.poll_max_interval
