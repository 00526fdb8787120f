"""Metrics: the facade's calls show up on a real /metrics scrape, /healthz follows its check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.kling.errors import ApiTimeoutError, RateLimitedError
from bot.metrics import (
    MAX_LABEL_VALUES,
    OTHER,
    Health,
    Metrics,
    MetricsRecorder,
    MetricsServer,
    NullMetrics,
    heartbeat_check,
    metrics_for,
)
from bot.ops import HEARTBEAT_KEY, HEARTBEAT_MAX_AGE_SECONDS
from bot.store import TaskStore
from bot.tasks import TaskState

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def healthy() -> Health:
    return Health(True, "fine")


ServerFactory = Callable[..., Awaitable[tuple[MetricsServer, str]]]


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    servers: list[MetricsServer] = []

    async def start(
        metrics: Metrics, health: Callable[[], Awaitable[Health]] = healthy, **kw: object
    ):
        server = MetricsServer(metrics, health, host="127.0.0.1", port=0, **kw)  # type: ignore[arg-type]
        port = await server.start()
        servers.append(server)
        return server, f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def scrape(base: str) -> Samples:
    status, content_type, body = await get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_every_call_of_the_facade_shows_on_a_scrape(serve: ServerFactory) -> None:
    metrics = Metrics("shards-0-1")
    _, base = await serve(metrics)
    metrics.observe_answer(0.3, "query")
    metrics.observe_answer(7.0, "submit")
    metrics.observe_answer(0.2, "query")
    for _ in range(3):
        metrics.count_poll()
    metrics.count_error(ApiTimeoutError("no answer"))
    metrics.count_error(ApiTimeoutError("no answer"))
    metrics.count_error("RateLimitedError")
    metrics.count_delivery("upload")
    metrics.count_delivery("link")
    metrics.count_delivery("upload")
    metrics.set_tasks_by_state({TaskState.QUEUED: 2, TaskState.DELIVERED: 5})
    metrics.set_queue_length(2)
    metrics.count_takeover()

    s = await scrape(base)
    p = "shards-0-1"
    assert value(s, "kling_bot_provider_answer_seconds_count", process=p, route="query") == 2
    assert value(s, "kling_bot_provider_answer_seconds_sum", process=p, route="query") == (
        pytest.approx(0.5)
    )
    assert (
        value(s, "kling_bot_provider_answer_seconds_bucket", process=p, route="query", le="0.25")
        == 1
    )
    assert (
        value(s, "kling_bot_provider_answer_seconds_bucket", process=p, route="submit", le="5.0")
        == 0
    )
    assert (
        value(s, "kling_bot_provider_answer_seconds_bucket", process=p, route="submit", le="10.0")
        == 1
    )
    assert value(s, "kling_bot_polls_total", process=p) == 3
    assert value(s, "kling_bot_errors_total", process=p, kind=ApiTimeoutError.__name__) == 2
    assert value(s, "kling_bot_errors_total", process=p, kind=RateLimitedError.__name__) == 1
    assert value(s, "kling_bot_deliveries_total", process=p, how="upload") == 2
    assert value(s, "kling_bot_deliveries_total", process=p, how="link") == 1
    assert value(s, "kling_bot_tasks", process=p, state="queued") == 2
    assert value(s, "kling_bot_tasks", process=p, state="delivered") == 5
    assert value(s, "kling_bot_queue_length", process=p) == 2
    assert value(s, "kling_bot_lease_takeovers_total", process=p) == 1
    assert value(s, "process_resident_memory_bytes") > 0  # the process collector, per process


async def test_counters_read_zero_before_anything_happened(serve: ServerFactory) -> None:
    _, base = await serve(Metrics("bot", system=False))
    s = await scrape(base)
    assert value(s, "kling_bot_polls_total", process="bot") == 0
    assert value(s, "kling_bot_lease_takeovers_total", process="bot") == 0
    assert value(s, "kling_bot_queue_length", process="bot") == 0
    assert not any(name.startswith("process_") for name, _ in s)


async def test_each_instance_has_its_own_registry(serve: ServerFactory) -> None:
    first, second = Metrics("a"), Metrics("b")
    _, first_url = await serve(first)
    _, second_url = await serve(second)
    first.count_poll()
    s1, s2 = await scrape(first_url), await scrape(second_url)
    assert value(s1, "kling_bot_polls_total", process="a") == 1
    assert value(s2, "kling_bot_polls_total", process="b") == 0
    assert ("kling_bot_polls_total", frozenset({("process", "a")})) not in s2


async def test_a_state_that_empties_reads_zero(serve: ServerFactory) -> None:
    metrics = Metrics("bot", system=False)
    _, base = await serve(metrics)
    metrics.set_tasks_by_state({"queued": 3, "processing": 1})
    metrics.set_tasks_by_state({"processing": 2})
    s = await scrape(base)
    assert value(s, "kling_bot_tasks", process="bot", state="queued") == 0
    assert value(s, "kling_bot_tasks", process="bot", state="processing") == 2


async def test_the_store_feeds_the_gauges_just_before_each_scrape(serve: ServerFactory) -> None:
    metrics = Metrics("bot", system=False)
    calls = 0

    async def refresh() -> None:
        nonlocal calls
        calls += 1
        metrics.set_tasks_by_state({"queued": calls})
        metrics.set_queue_length(calls)

    _, base = await serve(metrics, before_scrape=refresh)
    await scrape(base)
    s = await scrape(base)
    assert calls == 2
    assert value(s, "kling_bot_tasks", process="bot", state="queued") == 2
    assert value(s, "kling_bot_queue_length", process="bot") == 2


async def test_a_failing_refresh_still_serves_the_last_values(serve: ServerFactory) -> None:
    metrics = Metrics("bot", system=False)
    metrics.set_queue_length(4)

    async def broken() -> None:
        raise RuntimeError("database is locked")

    _, base = await serve(metrics, before_scrape=broken)
    s = await scrape(base)
    assert value(s, "kling_bot_queue_length", process="bot") == 4


async def test_a_hanging_refresh_still_serves_the_last_values(serve: ServerFactory) -> None:
    metrics = Metrics("bot", system=False)
    metrics.set_queue_length(6)
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    _, base = await serve(metrics, before_scrape=hangs, health_timeout=0.05)
    s = await scrape(base)
    assert value(s, "kling_bot_queue_length", process="bot") == 6


async def test_label_values_stay_few_and_well_formed(serve: ServerFactory) -> None:
    metrics = Metrics("bot", system=False)
    _, base = await serve(metrics)
    for i in range(MAX_LABEL_VALUES + 20):
        metrics.count_error(f"Error{i}")
    metrics.count_delivery('upload"} 1\nfake_metric{x="')
    metrics.count_delivery("")
    s = await scrape(base)
    kinds = {dict(labels)["kind"] for name, labels in s if name == "kling_bot_errors_total"}
    assert len(kinds) == MAX_LABEL_VALUES + 1 and OTHER in kinds
    assert value(s, "kling_bot_errors_total", process="bot", kind=OTHER) == 20
    assert value(s, "kling_bot_deliveries_total", process="bot", how=OTHER) == 2
    assert not any(name.startswith("fake_metric") for name, _ in s)
    assert Metrics("a process name with spaces", system=False).process == OTHER


async def test_healthz_follows_its_check(serve: ServerFactory) -> None:
    state = {"ok": True}

    async def check() -> Health:
        return Health(state["ok"], "heartbeat 3 s old" if state["ok"] else "heartbeat 300 s old")

    _, base = await serve(Metrics("bot", system=False), check)
    assert await get(base + "/healthz") == (
        200,
        "text/plain; charset=utf-8",
        "ok: heartbeat 3 s old\n",
    )
    state["ok"] = False
    status, _, body = await get(base + "/healthz")
    assert status == 503 and body == "unhealthy: heartbeat 300 s old\n"


async def test_a_check_that_raises_or_hangs_is_unhealthy(serve: ServerFactory) -> None:
    async def raises() -> Health:
        raise OSError("disk I/O error")

    never = asyncio.Event()

    async def hangs() -> Health:
        await never.wait()
        return Health(True, "never")

    _, base = await serve(Metrics("bot", system=False), raises)
    status, _, body = await get(base + "/healthz")
    assert status == 503 and "OSError" in body
    _, base = await serve(Metrics("bot", system=False), hangs, health_timeout=0.05)
    status, _, body = await get(base + "/healthz")
    assert status == 503 and "took over" in body


async def test_the_engine_heartbeat_in_the_store_is_the_health(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    store = await TaskStore.open(f"sqlite:///{tmp_path / 'bot.sqlite3'}")
    try:
        check = heartbeat_check(
            lambda: store.get_meta(HEARTBEAT_KEY),
            max_age=HEARTBEAT_MAX_AGE_SECONDS,
            clock=lambda: now,
        )
        assert not (await check()).ok  # never written
        await store.set_meta(HEARTBEAT_KEY, str(now - 30))
        assert await check() == Health(True, "the engine's heartbeat is 30 s old")
        await store.set_meta(HEARTBEAT_KEY, str(now - HEARTBEAT_MAX_AGE_SECONDS - 1))
        result = await check()
        assert not result.ok and "121 s old" in result.detail
        await store.set_meta(HEARTBEAT_KEY, "garbage")
        assert not (await check()).ok
    finally:
        await store.close()


async def test_metrics_off_records_nothing_and_costs_nothing() -> None:
    off: MetricsRecorder = metrics_for(None)
    assert isinstance(off, NullMetrics)
    off.observe_answer(1.0, "query")
    off.count_poll()
    off.count_error(ValueError())
    off.count_delivery("upload")
    off.set_tasks_by_state({"queued": 1})
    off.set_queue_length(1)
    off.count_takeover()
    on: MetricsRecorder = metrics_for(9100, "shards-0-0")
    assert isinstance(on, Metrics) and on.process == "shards-0-0"


async def test_the_server_stops_cleanly_and_frees_its_port(serve: ServerFactory) -> None:
    server, base = await serve(Metrics("bot", system=False))
    await server.stop()
    await server.stop()  # twice is fine
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(base + "/metrics")
