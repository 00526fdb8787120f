"""The bot as the cogs see it: a `commands.Bot` carrying the services they use.

`bot.app.KlingBot` is one (it sets them in `setup_hook`). The cogs type their bot with this
class instead of importing `bot.app`, which imports them: the Discord side depends on the
services, and the app on both, never the other way round.
"""

from __future__ import annotations

import aiohttp
from discord.ext import commands

from bot.config import Settings
from bot.engine import TaskEngine
from bot.media import MediaStore
from bot.store import TaskStore


class ServiceBot(commands.Bot):
    """A `commands.Bot` with the bot's settings and services."""

    settings: Settings
    session: aiohttp.ClientSession
    store: TaskStore
    media: MediaStore
    engine: TaskEngine
