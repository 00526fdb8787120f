"""`KlingBot`: the discord.py bot that wires the services together and runs them.

`setup_hook` creates the one aiohttp session, opens the store, loads the extensions in
`EXTENSIONS`, starts the engine and (with METRICS_PORT) the metrics server, answers the requests
a killed run left open (once the bot is ready) and syncs the slash commands only when they
changed. `close` stops the engine and the metrics server, then closes the session and the store. SIGTERM and SIGINT end the bot cleanly. `discord_identity` is
the Discord half of `python -m bot check`: it asks Discord's REST API who the bot is (no
gateway) and builds the invite link.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import signal
import sqlite3
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from discord.voice_client import VoiceClient

from bot.config import Settings, redact_database_url
from bot.credits import resolve_credit_limits
from bot.engine import CreditCapWatch, EngineConfig, TaskEngine
from bot.kling.client import KlingClient
from bot.kling.ratelimit import RateLimiter
from bot.logs import setup_logging
from bot.media import MediaStore
from bot.metrics import MetricsServer
from bot.monitoring import recorder_for, start_metrics_server
from bot.ops import host_resolves
from bot.store import StoreError, TaskStore
from bot.strings import text
from cogs.caller import reply_privately
from cogs.services import ServiceBot
from cogs.translator import KlingTranslator
from cogs.video.delivery import DiscordNotifier
from cogs.video.recovery import recover

log = logging.getLogger(__name__)

#: The extensions `setup_hook` loads, in order (a module with a `setup(bot)`).
EXTENSIONS = ("cogs.admin", "cogs.video")
COMMAND_HASH_KEY = "command_tree_hash"
#: How long `close` lets commands, button presses and forms already running finish.
INTERACTION_DRAIN_SECONDS = 5.0
#: discord.py's names for the tasks that run app commands, buttons and modals (2.7).
INTERACTION_TASK_PREFIXES = (
    "CommandTree-invoker",
    "discord-ui-view-dispatch-",
    "discord-ui-dynamic-item-",
    "discord-ui-modal-dispatch-",
    "kling-recover",  # the requests a killed run left open, answered at start-up
)
#: Exactly the permissions the bot uses, in the channels where it is used (the README's table):
#: the status message (view, send, embed), the thread with the result (create public threads,
#: send in threads), the video as a file (attach), exactly-once delivery (read history).
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
    create_public_threads=True,
    send_messages_in_threads=True,
)
INVITE_SCOPES = ("bot", "applications.commands")
#: How long `check` waits for Discord's answers.
DISCORD_CHECK_TIMEOUT_SECONDS = 30.0


def quiet_voice_warnings() -> None:
    """The bot never uses voice: don't warn that voice support's packages are missing."""
    VoiceClient.warn_nacl = False
    VoiceClient.warn_dave = False


def invite_link(application_id: int) -> str:
    """The link that adds the bot to a server with its commands and `BOT_PERMISSIONS`."""
    return discord.utils.oauth_url(
        application_id, permissions=BOT_PERMISSIONS, scopes=INVITE_SCOPES
    )


class DiscordCheckError(Exception):
    """Discord refused the token or couldn't be reached; the text is one line for the operator."""


@dataclass(frozen=True)
class DiscordIdentity:
    """Who the bot is, as Discord says."""

    name: str
    user_id: int
    application_id: int

    @property
    def invite(self) -> str:
        """The invite link, built from the application id."""
        return invite_link(self.application_id)


async def discord_identity(token: str) -> DiscordIdentity:
    """Ask Discord's REST API who the bot is (`GET /users/@me`, then the application)."""
    host = urlsplit(discord.http.Route.BASE).hostname or "discord.com"
    if not await host_resolves(host):
        raise DiscordCheckError(
            f"Can't resolve the host {host}: check the network and the DNS settings."
        )
    quiet_voice_warnings()
    client = discord.Client(intents=discord.Intents.none())
    try:
        async with asyncio.timeout(DISCORD_CHECK_TIMEOUT_SECONDS):
            await client.login(token)
            app = await client.application_info()
    except discord.LoginFailure:
        raise DiscordCheckError(
            "Discord refused DISCORD_TOKEN: copy the bot's token again from the developer "
            "portal (your application → Bot → Reset Token) into .env."
        ) from None
    except TimeoutError:
        raise DiscordCheckError(
            f"Discord at {host} didn't answer within {DISCORD_CHECK_TIMEOUT_SECONDS:g} s: check the network."
        ) from None
    except aiohttp.ClientConnectorDNSError:
        raise DiscordCheckError(
            f"Can't resolve the host {host}: check the network and the DNS settings."
        ) from None
    except (aiohttp.ClientError, OSError) as error:
        raise DiscordCheckError(f"Can't reach Discord at {host} ({error}).") from None
    except discord.HTTPException as error:
        raise DiscordCheckError(
            f"Discord answered {error.status} to the bot's token: {error.text or error}."
        ) from None
    finally:
        await client.close()
    user = client.user
    assert user is not None  # set by a successful login
    return DiscordIdentity(name=str(user), user_id=user.id, application_id=app.id)


class KlingBot(ServiceBot):
    """The bot: default intents only, slash commands, services ready after `setup_hook`."""

    kling: KlingClient
    notifier: DiscordNotifier

    def __init__(
        self,
        settings: Settings,
        *,
        force_sync: bool = False,
        sync_only: bool = False,
        **options: Any,
    ) -> None:
        quiet_voice_warnings()
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=discord.Intents.default(),
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            **options,
        )
        self.settings = settings
        self.force_sync = force_sync
        self.sync_only = sync_only
        self.metrics = recorder_for(settings)
        self.metrics_server: MetricsServer | None = None

    async def setup_hook(self) -> None:
        """Create the services, load the cogs, start the engine, sync commands if they changed."""
        settings = self.settings
        self.session = aiohttp.ClientSession()
        self.store = await TaskStore.open(settings.database_url)
        prices = settings.price_table()
        priced = await self.store.price_unpriced(prices.price_of_options)
        if priced:
            log.info("Priced %d task(s) from before prices existed with the current table", priced)
        self.media = MediaStore(settings.media_dir)
        limiter = RateLimiter(settings.api_max_queries_per_second)
        self.kling = KlingClient.from_settings(
            self.session, settings, limiter=limiter, metrics=self.metrics
        )
        self.notifier = DiscordNotifier(self)
        cap_watch = CreditCapWatch(
            self.store,
            cap=resolve_credit_limits(settings).monthly_global,
            prices=prices,
            poster=self.notifier,
        )
        self.engine = TaskEngine(
            self.store,
            self.kling,
            self.notifier,
            self.session,
            self.media,
            EngineConfig.from_settings(settings),
            cap_watch=cap_watch,
            metrics=self.metrics,
        )
        await self.tree.set_translator(KlingTranslator())
        self.tree.error(self.on_app_command_error)
        for name in EXTENSIONS:
            try:
                await self.load_extension(name)
            except commands.ExtensionError:
                log.exception("Extension %s failed to load; the bot runs without it", name)
        if self.sync_only or self.syncs_commands():
            await self.sync_commands(force=self.force_sync)
        else:
            log.info("Slash commands are synced by the process holding shard 0, not this one")
        if self.sync_only:
            return  # `python -m bot sync`: no engine; `_serve` closes after the login
        await self.engine.start()
        self.metrics_server = await start_metrics_server(
            settings, self.store, self.metrics, lambda: self.engine.chores.beat_written
        )
        # Read before the gateway connects: every record now is an earlier run's. discord.py
        # takes interactions at once but says `ready` seconds later, and the records this run
        # makes meanwhile are its own to answer, never the recovery's.
        left_open = await self.store.left_open(settings.process_name)
        self._recovery = asyncio.create_task(recover(self, left_open), name="kling-recover")

    async def on_app_command_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """Any command's unexpected error: a log line for the operator, plain words for the user."""
        if isinstance(error, app_commands.CheckFailure) and interaction.response.is_done():
            return  # a check refused and already told the user why (e.g. /kling-admin)
        log.error("Command %s failed", getattr(interaction.command, "name", "?"), exc_info=error)
        message = text(str(interaction.locale), "reply.unexpected_plain")
        try:
            await reply_privately(interaction, message)
        except discord.HTTPException:
            log.info("Couldn't tell the user about the error")

    async def close(self) -> None:
        """Stop the engine and the metrics, then Discord, then the session and the store."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            await engine.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        notifier = getattr(self, "notifier", None)
        if notifier is not None:
            await notifier.flush()
        await self._finish_interactions()
        await super().close()
        if hasattr(self, "session"):
            await self.session.close()
        if hasattr(self, "store"):
            await self.store.close()

    async def _finish_interactions(self) -> None:
        """Let interaction handlers already running end (bounded) before their HTTP closes."""
        current = asyncio.current_task()
        running = [
            task
            for task in asyncio.all_tasks()
            if task is not current and task.get_name().startswith(INTERACTION_TASK_PREFIXES)
        ]
        if running:
            log.info("Letting %d interaction(s) in flight finish", len(running))
            await asyncio.wait(running, timeout=INTERACTION_DRAIN_SECONDS)

    def syncs_commands(self) -> bool:
        """Whether this process syncs the slash commands: the one holding shard 0 (or the only
        process, not sharded), so that several processes never sync at once."""
        shards = self.settings.my_shard_ids
        return shards is None or 0 in shards

    async def command_payload(self) -> list[dict[str, Any]]:
        """The commands exactly as a sync would send them (translated)."""
        translator = self.tree.translator
        payload: list[dict[str, Any]] = []
        for command in self.tree.get_commands():
            if translator is not None:
                payload.append(await command.get_translated_payload(self.tree, translator))
            else:
                payload.append(command.to_dict(self.tree))
        return payload

    async def sync_commands(self, *, force: bool = False) -> bool:
        """Sync the commands when they changed since the last sync (or when forced)."""
        guild_ids = self.settings.discord_guild_ids
        payload = await self.command_payload()
        digest = hashlib.sha256(
            json.dumps({"guilds": guild_ids, "commands": payload}, sort_keys=True).encode()
        ).hexdigest()
        if not force and await self.store.get_meta(COMMAND_HASH_KEY) == digest:
            log.info("Slash commands unchanged since the last sync; not syncing")
            return False
        if guild_ids:
            for guild_id in guild_ids:
                guild = discord.Object(id=guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            log.info("Slash commands synced to guilds %s", guild_ids)
        else:
            await self.tree.sync()
            log.info("Slash commands synced globally (Discord may take a while to show them)")
        await self.store.set_meta(COMMAND_HASH_KEY, digest)
        return True


class ShardedKlingBot(KlingBot, commands.AutoShardedBot):
    """The bot on the shards SHARD_COUNT and SHARD_IDS give this process (discord.py's
    AutoShardedBot; one gateway connection per shard)."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__(
            settings,
            shard_count=settings.shard_count,
            shard_ids=settings.my_shard_ids,
            **options,
        )


def make_bot(settings: Settings, *, force_sync: bool = False, sync_only: bool = False) -> KlingBot:
    """The bot for these settings: sharded when SHARD_COUNT is set (a sync alone never is)."""
    if settings.shard_count is None or sync_only:
        return KlingBot(settings, force_sync=force_sync, sync_only=sync_only)
    return ShardedKlingBot(settings, force_sync=force_sync)


def run_bot(settings: Settings, *, force_sync: bool = False, sync_only: bool = False) -> int:
    """Run the bot until SIGTERM/SIGINT (or, with `sync_only`, until the commands are synced).

    A problem that stops the bot is one log line (so `LOG_FORMAT=json` stays JSON) and exit 1.
    """
    setup_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(_serve(settings, force_sync=force_sync, sync_only=sync_only))
    except discord.LoginFailure:
        log.critical("Discord refused DISCORD_TOKEN: check the bot token in .env.")
    except aiohttp.ClientConnectorDNSError as error:
        log.critical(
            "Can't resolve the host %s: check the network and the DNS settings.", error.host
        )
    except aiohttp.ClientError as error:
        log.critical("Can't reach Discord (%s). Check the network.", error)
    except (StoreError, sqlite3.Error, OSError) as error:
        log.critical(
            "The database at %s can't be opened: %s. "
            "Check DATABASE_URL and that its folder is writable (or its server is up).",
            redact_database_url(settings.database_url),
            error,
        )
    except discord.PrivilegedIntentsRequired:  # pragma: no cover - the bot asks for none
        log.critical("Discord refused the intents the bot asked for.")
    else:
        return 0
    return 1


async def _serve(settings: Settings, *, force_sync: bool, sync_only: bool) -> None:
    bot = make_bot(settings, force_sync=force_sync, sync_only=sync_only)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with bot:
        if sync_only:
            await bot.login(settings.discord_token.get_secret_value())  # runs setup_hook: syncs
            return
        runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopper in done:
            log.info("Stopping: finishing what is in flight")
            await bot.close()
        else:
            stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
