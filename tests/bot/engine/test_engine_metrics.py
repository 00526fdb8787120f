"""What the engine and the client record: polls, provider answer times, errors by kind and
deliveries, each matched against what the fake CometAPI actually received."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bot.engine import TaskEngine
from bot.kling.client import KlingClient
from bot.kling.errors import ApiTimeoutError, ConcurrencyLimitError, ServiceUnavailableError
from bot.metrics import Metrics
from bot.ops import HEARTBEAT_KEY
from bot.tasks import TaskState
from tests.bot.engine.test_machine import FAST, World

P = "engine-test"


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, {"process": P, **labels})
    return 0.0 if found is None else found


async def metered_engine(world: World, metrics: Metrics) -> TaskEngine:
    client = world.client()
    client.metrics = metrics
    engine = TaskEngine(
        world.store, client, world.notifier, world.session, world.media, FAST, metrics=metrics
    )
    world.engines.append(engine)
    await engine.start()
    return engine


async def test_polls_answers_errors_and_the_delivery_are_counted(world: World) -> None:
    metrics = Metrics(P, system=False)
    world.api.add_fault("concurrency", on="submit")  # refused once: back to the queue
    world.api.add_fault("server_error", on="query")  # the client asks once more
    engine = await metered_engine(world, metrics)
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    await world.until_state(task, TaskState.DELIVERED)

    submits, queries = len(world.api.submits), len(world.api.queries)
    assert submits == 2 and queries >= 2
    answers = "kling_bot_provider_answer_seconds_count"
    assert value(metrics, answers, route="submit") == submits, "every answer is timed"
    assert value(metrics, answers, route="query") == queries
    assert value(metrics, "kling_bot_provider_answer_seconds_sum", route="query") > 0
    # A poll is the engine's: the client's own retry of the 500 is no poll of its own.
    assert value(metrics, "kling_bot_polls_total") == queries - 1
    errors = "kling_bot_errors_total"
    assert value(metrics, errors, kind=ConcurrencyLimitError.__name__) == 1
    assert value(metrics, errors, kind=ServiceUnavailableError.__name__) == 1
    assert value(metrics, "kling_bot_deliveries_total", how="upload") == 1  # the notifier's word


async def test_a_delivery_that_fails_is_counted_once_it_goes_out(world: World) -> None:
    metrics = Metrics(P, system=False)
    world.notifier.fail_deliveries = 2
    engine = await metered_engine(world, metrics)
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    await world.until_state(task, TaskState.DELIVERED)
    assert value(metrics, "kling_bot_deliveries_total", how="upload") == 1


async def test_the_engine_knows_when_it_last_wrote_its_heartbeat(world: World) -> None:
    engine = await metered_engine(world, Metrics(P, system=False))
    async with asyncio.timeout(10):  # written on the loop's first turn
        while engine.chores.beat_written is None:
            await asyncio.sleep(0.01)
    stored = await world.store.get_meta(HEARTBEAT_KEY)
    assert stored is not None and float(stored) == pytest.approx(engine.chores.beat_written)


async def test_an_unanswered_request_is_an_error_but_no_answer_time() -> None:
    metrics = Metrics(P, system=False)
    async with aiohttp.ClientSession() as session:
        # Nothing listens on port 9: the connection is refused, nothing was answered.
        client = KlingClient(
            session, base_url="http://127.0.0.1:9", api_key="k", max_retries=0, metrics=metrics
        )
        with pytest.raises(ApiTimeoutError, match="connect"):
            await client.get_task("123")
    assert value(metrics, "kling_bot_errors_total", kind=ApiTimeoutError.__name__) == 1
    assert value(metrics, "kling_bot_provider_answer_seconds_count", route="query") == 0
