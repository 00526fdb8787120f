"""METRICS_PORT on the real bot process: /metrics after one video, /healthz while the engine
runs, and a port another program holds."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import load_settings
from bot.monitoring import process_name
from tests.e2e.helpers import World, png
from tests.yaml_subset import load

REPO = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def scrape(base: str) -> Samples:
    status, body = await get(base + "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


async def compose_health_probe(port: int) -> int:
    """Run the health check of `compose.sharded.yaml` against `port`; its exit status."""
    bot = load((REPO / "compose.sharded.yaml").read_text())["services"]["bot-0"]
    program, *args = bot["healthcheck"]["test"][1:]
    inside = bot["environment"]["METRICS_PORT"]
    assert program == "python"
    args = [arg.replace(f":{inside}/", f":{port}/") for arg in args]
    probe = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await probe.wait()


async def test_metrics_and_health_of_a_running_bot(world: World) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    me = process_name(load_settings(discord_token="t", cometapi_key="k", _env_file=None))

    def value(samples: Samples, name: str, **labels: str) -> float:
        return samples.get((name, frozenset({"process": me, **labels}.items())), 0.0)

    async with world.bot(METRICS_PORT=str(port)):
        async with asyncio.timeout(10):  # the engine's first heartbeat comes with its first turn
            while (health := await get(base + "/healthz"))[0] != 200:
                await asyncio.sleep(0.1)
        assert health[1].startswith("ok: the engine's heartbeat is")
        interaction = await world.video([png(), png(420, 400)])
        await interaction.wait_callback(3)
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.until(lambda: [t["state"] for t in world.tasks()] == ["delivered"])
        s = await scrape(base)
        assert value(s, "kling_bot_deliveries_total", how="thread_upload") == 1
        assert value(s, "kling_bot_polls_total") >= 1
        assert value(s, "kling_bot_provider_answer_seconds_count", route="submit") == 1
        queries = len(world.api.queries)
        assert value(s, "kling_bot_provider_answer_seconds_count", route="query") == queries
        assert value(s, "kling_bot_tasks", state="delivered") == 1
        assert value(s, "kling_bot_tasks", state="queued") == 0
        assert value(s, "kling_bot_queue_length") == 0
        assert s[("process_resident_memory_bytes", frozenset())] > 0
        assert (await get(base + "/healthz"))[0] == 200
        assert await compose_health_probe(port) == 0, "Docker's check passes"
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(base + "/metrics")  # stopped with the bot
    assert await compose_health_probe(port) != 0


async def test_a_taken_metrics_port_is_one_clear_line_and_the_bot_runs_on(world: World) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with world.bot(METRICS_PORT=str(port)) as process:
            interaction = await world.video([png(), png(420, 400)])
            await interaction.wait_callback(3)
            await world.discord.wait_for(lambda: world.uploads(), 20)
    lines = [line for line in process.output().splitlines() if "metrics" in line.lower()]
    [line] = lines
    assert f"Can't serve metrics on port {port}: the port is in use" in line
    assert "METRICS_PORT" in line and " ERROR " in line
    assert "Traceback" not in process.output()
