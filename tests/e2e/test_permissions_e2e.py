"""The bot works with exactly the permissions its invite link asks for (`check` prints it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import BOT_PERMISSIONS
from tests.e2e.helpers import API_KEY, World, png
from tests.fakes.cometapi import MP4_BYTES, FakeCometAPI
from tests.fakes.discord import FakeDiscord


@pytest.fixture
async def invited(tmp_path: Path) -> AsyncIterator[World]:
    """A world whose bot role has exactly the invite link's permissions."""
    async with (
        FakeDiscord(bot_permissions=BOT_PERMISSIONS.value) as discord,
        FakeCometAPI(api_key=API_KEY, finish_after=0.3) as api,
    ):
        yield World(discord, api, tmp_path)


async def test_a_video_goes_all_the_way_with_the_invite_links_permissions(
    invited: World,
) -> None:
    async with invited.bot():
        interaction = await invited.video([png(), png(420, 400)])
        await interaction.wait_callback(3)
        await invited.discord.wait_for(lambda: invited.uploads(), 20)
        await asyncio.sleep(0.3)
    [thread] = invited.discord.threads
    [upload] = invited.uploads()
    assert upload.path == f"/channels/{thread['id']}/messages"
    assert [f.data for f in upload.files] == [MP4_BYTES]
    history = invited.discord.find_requests("GET", rf"/channels/{thread['id']}/messages$")
    assert history and all(r.status == 200 for r in history), "exactly-once reads history"
    invited.check_clean()


async def test_the_fake_refuses_what_the_role_does_not_allow(tmp_path: Path) -> None:
    """Without Read Message History the delivery's look-up is refused (and still delivers)."""
    permissions = BOT_PERMISSIONS.value & ~(1 << 16)
    async with (
        FakeDiscord(bot_permissions=permissions) as discord,
        FakeCometAPI(api_key=API_KEY, finish_after=0.3) as api,
    ):
        world = World(discord, api, tmp_path)
        async with world.bot():
            interaction = await world.video([png(), png(420, 400)])
            await interaction.wait_callback(3)
            await discord.wait_for(lambda: world.uploads(), 20)
        refused = {(v.kind, v.method) for v in discord.violations}
        assert refused == {("forbidden", "GET")}
        assert [t["state"] for t in world.tasks()] == ["delivered"]
