"""The metrics server as the bot runs it: the process's name, the gauges read from the store at
each scrape, /healthz from the engine's heartbeat, and a port that can't be had."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import KlingBot
from bot.config import Settings, load_settings
from bot.metrics import Metrics, NullMetrics
from bot.monitoring import (
    process_name,
    recorder_for,
    refresh_task_gauges,
    start_metrics_server,
)
from bot.ops import HEARTBEAT_KEY
from bot.store import TaskStore
from bot.tasks import TaskState
from tests.bot.store.helpers import UNLIMITED, new_task
from tests.helpers import advance


def settings(**overrides: object) -> Settings:
    return load_settings(discord_token="t", cometapi_key="k", _env_file=None, **overrides)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def samples(body: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[TaskStore]:
    opened = await TaskStore.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()


def test_the_process_is_named_after_its_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "bot-host.example")
    assert process_name(settings()) == "bot-host.example"
    monkeypatch.setattr(socket, "gethostname", lambda: "my host (2)")
    assert process_name(settings()) == "my-host-2", "only characters a label takes"
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert process_name(settings()) == "bot"
    monkeypatch.setattr(socket, "gethostname", lambda: "x" * 300)
    assert Metrics(process_name(settings())).process == "x" * 64, "never folded into `other`"


def test_metrics_are_recorded_only_with_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "host-a")
    assert isinstance(recorder_for(settings()), NullMetrics)
    on = recorder_for(settings(metrics_port=9100))
    assert isinstance(on, Metrics) and on.process == "host-a"
    assert isinstance(KlingBot(settings()).metrics, NullMetrics)
    bot = KlingBot(settings(metrics_port=9100))
    assert isinstance(bot.metrics, Metrics) and bot.metrics_server is None  # until setup_hook


async def test_the_gauges_are_the_store_s_tasks_by_state(store: TaskStore) -> None:
    ids = [(await store.reserve(new_task(user_id=u), UNLIMITED)).id for u in (1, 2, 3)]
    await advance(store, ids[0], TaskState.DELIVERED)
    metrics = Metrics("p", system=False)
    await refresh_task_gauges(store, metrics)
    assert metrics.registry.get_sample_value("kling_bot_queue_length", {"process": "p"}) == 2
    tasks = {
        state.value: metrics.registry.get_sample_value(
            "kling_bot_tasks", {"process": "p", "state": state.value}
        )
        for state in TaskState
    }
    assert tasks == {**{state.value: 0.0 for state in TaskState}, "queued": 2, "delivered": 1}


async def test_the_server_serves_the_store_s_numbers_and_the_engine_s_health(
    store: TaskStore,
) -> None:
    port = free_port()
    metrics = Metrics("p", system=False)
    beat: dict[str, float | None] = {"written": None}
    server = await start_metrics_server(
        settings(metrics_port=port), store, metrics, lambda: beat["written"], host="127.0.0.1"
    )
    assert server is not None
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = await get(base + "/healthz")
        assert status == 503 and "never written a heartbeat" in body
        beat["written"] = time.time()
        status, body = await get(base + "/healthz")
        assert status == 200 and body.startswith("ok: ")
        # Another process's fresh heartbeat in the store doesn't make this one healthy.
        await store.set_meta(HEARTBEAT_KEY, f"{time.time():.3f}")
        beat["written"] = time.time() - 600
        assert (await get(base + "/healthz"))[0] == 503, "a stalled engine is unhealthy"

        await store.reserve(new_task(), UNLIMITED)  # after the server started: read per scrape
        status, body = await get(base + "/metrics")
        assert status == 200
        found = samples(body)
        assert found[("kling_bot_queue_length", frozenset({("process", "p")}))] == 1
        assert found[("kling_bot_tasks", frozenset({("process", "p"), ("state", "queued")}))] == 1
    finally:
        await server.stop()


async def test_metrics_off_starts_no_server(store: TaskStore) -> None:
    assert await start_metrics_server(settings(), store, NullMetrics(), lambda: None) is None


async def test_a_port_in_use_is_one_clear_line_and_the_bot_runs_on(
    store: TaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.INFO):
            server = await start_metrics_server(
                settings(metrics_port=port),
                store,
                Metrics("p", system=False),
                lambda: None,
                host="127.0.0.1",
            )
    assert server is None
    [line] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert line.levelno == logging.ERROR and line.exc_info is None
    message = line.getMessage()
    assert f"port {port}" in message and "in use" in message and "METRICS_PORT" in message
    assert "\n" not in message
