"""End to end: two bot processes share one bot (shards 0 and 1 of 2, one PostgreSQL database);
one is SIGKILLed with every video at the provider, and the survivor delivers them all, once."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from PIL import Image

from tests.e2e.helpers import World, png
from tests.fakes.discord import FakeInteraction

VIDEOS_PER_SHARD = 10
LEASE_SECONDS = "3"


async def video(world: World, channel: dict[str, Any], number: int) -> FakeInteraction:
    """/video with two images in a channel (its guild's shard gets the interaction)."""
    values: dict[str, Any] = {"prompt": f"video {number} turns"}
    for position in (1, 2):
        data = png(400, 400, (number * 10 % 256, 40, 40))
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        values[f"image{position}"] = world.discord.add_attachment(
            f"picture{position}.png", data, "image/png", width, height
        )
    return await world.discord.slash_command("video", values, channel_id=channel["id"])


def results(world: World, task_id: int) -> list[dict[str, Any]]:
    """The bot's result messages for a task (each carries its Details button)."""
    marker = f'"kling:details:{task_id}"'
    return [
        message
        for channel in list(world.discord.channels)
        for message in world.discord.messages_in(channel)
        if marker in json.dumps(message.get("components") or [])
    ]


@pytest.mark.parametrize("world", ["postgresql"], indirect=True)
async def test_a_killed_process_s_videos_are_delivered_once_by_the_survivor(
    world: World,
) -> None:
    world.api.finish_after = 5.0  # every video is still at the provider when one process dies
    guilds = [world.discord.add_guild(f"shard {k}", shard=(k, 2)) for k in (0, 1)]
    channels = [guild["channels"][0] for guild in guilds]
    both = {
        "SHARD_COUNT": "2",
        "LEASE_SECONDS": LEASE_SECONDS,
        "DISCORD_GUILD_IDS": ",".join(g["id"] for g in guilds),
        "KLING_MAX_CONCURRENT_TASKS": "100",
        "QUOTA_DAILY_PER_USER": "0",
        "QUOTA_CONCURRENT_PER_USER": "0",
    }
    async with (
        world.bot(**both, SHARD_IDS="0") as survivor,
        world.bot(**both, SHARD_IDS="1") as doomed,
    ):
        interactions = [
            await video(world, channels[k], k * VIDEOS_PER_SHARD + i)
            for i in range(VIDEOS_PER_SHARD)
            for k in (0, 1)
        ]
        for interaction in interactions:
            assert "on its way" in await world.answer(interaction, 30)
        for k in (0, 1):
            assert all(
                {session.shard for session in i.sessions} == {(k, 2)} for i in interactions[k::2]
            ), "each interaction went to its guild's shard only"
        await world.until(
            lambda: (
                len(world.rows("SELECT id FROM tasks WHERE kling_task_id IS NOT NULL"))
                == 2 * VIDEOS_PER_SHARD
            ),
            30,
        )
        held = world.rows("SELECT id FROM tasks WHERE lease_owner = 'shards 1 of 2'")
        assert held, "the doomed process works some of the videos"
        assert world.uploads() == [], "killed before any video was ready"
        doomed.kill()
        await doomed.wait()
        await world.until(lambda: all(t["state"] == "delivered" for t in world.tasks()), 60)
        await asyncio.sleep(1.0)  # a second delivery, if one were coming
        assert survivor.returncode is None
    tasks = world.tasks()
    assert len(tasks) == 2 * VIDEOS_PER_SHARD
    assert len(world.uploads()) == 2 * VIDEOS_PER_SHARD, "every video uploaded exactly once"
    for task in tasks:
        [result] = results(world, task["id"])
        assert str(task["result_message_id"]) == result["id"]
        assert task["lease_owner"] == "shards 0 of 2", "delivered by the survivor"
        assert task["quota_refunded"] == 0 and task["price_cents"] > 0
    assert len(world.api.submits) == 2 * VIDEOS_PER_SHARD, "never a second submit"
    for guild in guilds:  # each server's quota counts its own ten videos
        assert sum(t["guild_id"] == int(guild["id"]) for t in tasks) == VIDEOS_PER_SHARD
    assert "taken over" in survivor.output()
    assert "Slash commands are synced by the process holding shard 0" in doomed.output()
