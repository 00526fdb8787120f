"""The bot: every extension loads, and the commands it syncs carry their Dutch names."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from discord.ext import commands

import cogs
from bot.app import EXTENSIONS, KlingBot, ShardedKlingBot, make_bot
from bot.config import load_settings
from cogs.translator import KlingTranslator


@pytest.fixture
def bot() -> KlingBot:
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    return KlingBot(settings)


async def test_every_extension_loads(bot: KlingBot) -> None:
    with_setup = {
        module.name
        for module in pkgutil.walk_packages(cogs.__path__, "cogs.")
        if hasattr(importlib.import_module(module.name), "setup")
    }
    assert set(EXTENSIONS) == with_setup == {"cogs.admin", "cogs.video"}, "none forgotten"
    for name in EXTENSIONS:
        await bot.load_extension(name)
    commands = {c.name for c in bot.tree.get_commands()}
    assert {"video", "quota", "tasks", "kling-admin", "Make a video"} <= commands


async def test_commands_carry_dutch_names_and_descriptions(bot: KlingBot) -> None:
    for name in EXTENSIONS:
        await bot.load_extension(name)
    await bot.tree.set_translator(KlingTranslator())
    payload = {c["name"]: c for c in await bot.command_payload()}
    video = payload["video"]
    assert video["description_localizations"]["nl"].startswith("Maak een korte video")
    options = {o["name"]: o for o in video["options"]}
    assert list(options)[:3] == ["image1", "image2", "prompt"], "required options first"
    assert options["image1"]["type"] == 11 and options["image1"]["required"]
    assert options["image1"]["name_localizations"]["nl"] == "afbeelding1"
    assert options["prompt"]["max_length"] == 500
    assert [c["value"] for c in options["duration"]["choices"]] == ["5", "10"]
    assert options["cfg_scale"]["min_value"] == 0 and options["cfg_scale"]["max_value"] == 1
    admin = payload["kling-admin"]
    assert int(admin["default_member_permissions"]) == 1 << 5, "Manage Server"
    assert admin["name_localizations"]["nl"] == "kling-beheer"
    assert payload["Make a video"]["type"] == 3


@pytest.mark.parametrize(
    ("env", "sharded", "syncs"),
    [
        ({}, None, True),
        ({"shard_count": 2}, (2, [0, 1]), True),
        ({"shard_count": 2, "shard_ids": "0"}, (2, [0]), True),
        ({"shard_count": 4, "shard_ids": "2-3"}, (4, [2, 3]), False),
    ],
)
async def test_shards_and_who_syncs_the_commands(
    env: dict[str, object], sharded: tuple[int, list[int]] | None, syncs: bool
) -> None:
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None, **env)
    made = make_bot(settings)  # never started: nothing to close
    if sharded is None:
        assert not isinstance(made, commands.AutoShardedBot)
    else:
        assert isinstance(made, ShardedKlingBot) and isinstance(made, commands.AutoShardedBot)
        assert (made.shard_count, made.shard_ids) == sharded
    assert made.syncs_commands() is syncs
    assert not isinstance(make_bot(settings, sync_only=True), commands.AutoShardedBot)
