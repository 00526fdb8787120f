"""A bot with real services, connected to the fake Discord in this process.

The Discord side is driven directly: the tests call the code a command or the engine would
call, with discord.py's own objects built from the payloads the fake Discord makes (as the
gateway delivers them). The bot is connected as in production (its cache holds the guild the
gateway announced), every request it makes goes to the fake, which checks it against Discord's
API description, and the gateway's copy of each interaction is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
import yarl
from discord import app_commands
from discord.ext import commands

from bot.config import load_settings
from bot.engine import EngineConfig, TaskEngine
from bot.kling.client import KlingClient
from bot.media import MediaStore
from bot.store import TaskStore
from cogs.services import ServiceBot
from cogs.video.delivery import DiscordNotifier
from tests.fakes.discord import FakeDiscord


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord: one guild, one text channel, a member and the bot's application."""
    async with FakeDiscord() as discord_fake:
        yield discord_fake
        assert discord_fake.violations == [], discord_fake.violations
        assert discord_fake.unknown_requests == [], discord_fake.unknown_requests


class HandsOffTree(app_commands.CommandTree[Any]):
    """The tests call the commands' code themselves: the gateway's interactions are left alone."""

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        """Let no command run from the gateway."""
        return False


@pytest.fixture
async def bot(
    fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ServiceBot]:
    """A bot connected to the fake, with a store, a media folder and an idle engine."""
    base = yarl.URL(fake.url)
    monkeypatch.setattr(discord.http.Route, "BASE", f"{base}/api/v10")
    gateway = base.with_scheme("ws").with_path("/gateway/")
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", gateway)
    client = ServiceBot(
        command_prefix=commands.when_mentioned,
        intents=discord.Intents.default(),
        help_command=None,
        allowed_mentions=discord.AllowedMentions.none(),
        tree_cls=HandsOffTree,
    )
    client.settings = load_settings(discord_token=fake.token, cometapi_key="k", _env_file=None)
    client.session = aiohttp.ClientSession()
    client.store = await TaskStore.open("sqlite:///:memory:")
    client.media = MediaStore(tmp_path / "media")
    api = KlingClient(client.session, base_url="http://127.0.0.1:9", api_key="k")  # never asked
    notifier = DiscordNotifier(client)
    client.engine = TaskEngine(
        client.store, api, notifier, client.session, client.media, EngineConfig()
    )
    await client.login(fake.token)
    connection = asyncio.create_task(client.connect(reconnect=False))
    try:
        async with asyncio.timeout(10):
            while client.get_guild(int(fake.guild_id)) is None:
                await asyncio.sleep(0.01)
        yield client
    finally:
        await notifier.flush()
        await client.close()
        with contextlib.suppress(Exception):
            await connection
        await client.session.close()
        await client.store.close()
