"""``FakeDiscord``: the shared state, the server and its parts wired together; the test's API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakes.discord.cdn import Cdn
from tests.fakes.discord.constants import (
    API_PREFIX,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    DEFAULT_SPEC_PATH,
    IT_APPLICATION_COMMAND,
    MAX_GUILDS_PER_SHARD,
    MIB,
)
from tests.fakes.discord.contract import Contract
from tests.fakes.discord.faults import Faults, Hold
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.interactions import Interactions
from tests.fakes.discord.openapi import load_openapi
from tests.fakes.discord.records import FakeInteraction, RecordedRequest
from tests.fakes.discord.rest.application import ApplicationRoutes
from tests.fakes.discord.rest.channels import ChannelRoutes
from tests.fakes.discord.rest.interactions import InteractionRoutes
from tests.fakes.discord.server import Server
from tests.fakes.discord.session import GatewaySession
from tests.fakes.discord.snowflakes import shard_for
from tests.fakes.discord.state import DiscordState


class FakeDiscord(DiscordState):
    """A strict fake of Discord's REST API v10, gateway and CDN on 127.0.0.1.

    Use ``async with FakeDiscord() as fake:`` (or ``await fake.start()`` / ``await fake.stop()``).
    Point the bot at :attr:`url` with ``tests/e2e/launcher.py``.

    Configuration (all keyword-only):

    * ``token`` – the bot token the bot must present (``Authorization: Bot <token>``, IDENTIFY).
    * ``ack_deadline`` – seconds between INTERACTION_CREATE and a callback Discord still accepts
      (3.0); later → 404 ``10062 Unknown interaction``.
    * ``token_ttl`` – lifetime of interaction tokens (15 min); later → 401 ``50027``.
    * ``upload_limit`` – max bytes per uploaded file (10 MiB, an unboosted guild); over → 413.
    * ``bot_permissions`` – the bot role's permission bits (all but ADMINISTRATOR). Posting,
      uploading, opening a thread and reading history need theirs (and View Channel);
      without, Discord's 403 (50013 Missing Permissions, 50001 Missing Access).
    * ``privileged_intents_enabled`` – privileged intent bits the application is allowed (0:
      none, as for a fresh bot); identifying with others closes the gateway with 4014.
    * ``heartbeat_interval_ms`` – sent in HELLO (41250, Discord's value).
    * ``resume_supported`` – keep sessions of dropped connections for RESUME (True); False
      answers every RESUME with INVALID_SESSION (discord.py then waits 5 s and IDENTIFYs).
    * ``recommended_shards`` – the ``shards`` of ``GET /gateway/bot`` (1), what
      ``discord.AutoShardedClient`` starts when not told a shard count.
    * ``max_guilds_per_shard`` – identifying a shard that would carry more guilds is closed
      with 4011 Sharding required (2500, Discord's limit).
    * ``spec_path`` – the OpenAPI description (defaults to ``tests/fakes/discord-api-spec``).

    Sharding: any number of gateway sessions may be connected at once, from one process or
    several. Each gets only its shard's guilds (see ``tests/fakes/discord/gateway.py``);
    :meth:`add_guild` places a guild on a chosen shard; :attr:`sessions` records what each
    session received, and ``FakeInteraction.sessions`` where an interaction went.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        bot_name: str = "Kling Video Bot",
        guild_name: str = "Test Guild",
        channel_name: str = "general",
        ack_deadline: float = 3.0,
        token_ttl: float = 15 * 60,
        upload_limit: int = 10 * MIB,
        privileged_intents_enabled: int = 0,
        heartbeat_interval_ms: int = 41_250,
        resume_supported: bool = True,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        recommended_shards: int = 1,
        max_guilds_per_shard: int = MAX_GUILDS_PER_SHARD,
        spec_path: Path | None = None,
    ) -> None:
        super().__init__(
            token=token,
            bot_name=bot_name,
            guild_name=guild_name,
            channel_name=channel_name,
            ack_deadline=ack_deadline,
            token_ttl=token_ttl,
            upload_limit=upload_limit,
            privileged_intents_enabled=privileged_intents_enabled,
            heartbeat_interval_ms=heartbeat_interval_ms,
            resume_supported=resume_supported,
            bot_permissions=bot_permissions,
            recommended_shards=recommended_shards,
            max_guilds_per_shard=max_guilds_per_shard,
        )
        contract = Contract(self, load_openapi(spec_path or DEFAULT_SPEC_PATH))
        self._faults = Faults(self)
        self._gateway = Gateway(self)
        self._cdn = Cdn(self, self._faults)
        self._interactions = Interactions(self, self._gateway)
        routes = [
            *ApplicationRoutes(self, contract).routes(),
            *InteractionRoutes(self, contract, self._cdn, self._gateway).routes(),
            *ChannelRoutes(self, contract, self._cdn, self._gateway).routes(),
        ]
        self._server = Server(self, contract, self._faults, self._gateway, self._cdn, routes)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        """Start listening on 127.0.0.1 on a free port."""
        self.port = await self._server.start()
        return self

    async def stop(self) -> None:
        """Close gateway connections, drop what is still held, and stop the server."""
        self.stopping.set()
        await self._gateway.close_all()
        await self._server.stop()

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_base(self) -> str:
        """REST base, ``{url}/api/v10``."""
        return f"{self.url}{API_PREFIX}"

    # ------------------------------------------------------------------ scripted faults

    @property
    def holds(self) -> list[Hold]:
        """Every hold made by :meth:`hold_next`."""
        return self._faults.holds

    def inject_error(
        self,
        method: str,
        path_pattern: str,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        r"""Answer the next ``times`` matching requests with ``status``/``body`` (a scripted fault).

        ``path_pattern`` is a regex searched in the path without ``/api/v10`` (e.g.
        ``r"/channels/\d+/messages$"``). Injected answers are not violations.
        """
        self._faults.inject(method, path_pattern, status, body, times, headers or {})

    def rate_limit_next(
        self, method: str, path_pattern: str, retry_after: float = 0.05, *, times: int = 1
    ) -> None:
        """Answer the next matching requests with Discord's 429 (which discord.py retries)."""
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after),
            "X-RateLimit-Bucket": "fake-bucket",
            "X-RateLimit-Scope": "user",
        }
        self.inject_error(method, path_pattern, 429, body, times=times, headers=headers)

    def delay_next(
        self,
        method: str,
        path_pattern: str,
        seconds: float,
        *,
        times: int = 1,
        with_files: bool = False,
        match: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        r"""Answer the next ``times`` matching requests only after ``seconds``.

        The request takes effect first (a POSTed message is stored and dispatched), then the
        answer waits: like Discord having done it while the answer is lost or late. With
        ``with_files`` only multipart requests carrying files match, with ``match`` only
        those it accepts. Delayed requests are listed in :attr:`delayed` as soon as their
        effect is stored.
        """
        self._faults.delay(method, path_pattern, seconds, times, with_files, match)

    def hold_next(
        self,
        method: str,
        path_pattern: str,
        *,
        times: int = 1,
        effect_first: bool = False,
        match: Callable[[RecordedRequest], bool] | None = None,
    ) -> Hold:
        r"""Hold the next ``times`` matching requests until the test releases or drops them.

        For killing the bot at a chosen moment: the request has arrived and waits, the test
        SIGKILLs the bot, then ``hold.drop()`` (Discord never acted on it: no effect, no answer)
        or ``hold.release()``. With ``effect_first`` the request takes effect at once (a POSTed
        message is stored) and only its answer is held — Discord did it, the bot never heard.
        ``path_pattern`` is a regex searched in the path without ``/api/v10``; CDN downloads
        (``GET /attachments/...``) can be held too. ``match`` narrows it by the recorded
        request (its ``json``, ``files``...). Stopping the fake drops what is still held.
        """
        return self._faults.hold(method, path_pattern, times, effect_first, match)

    # ------------------------------------------------------------------ CDN

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str = "image/png",
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Serve ``data`` from the fake CDN; return the attachment payload for an interaction."""
        return self._cdn.add_attachment(filename, data, content_type, width, height)

    # ------------------------------------------------------------------ gateway

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        intent: int | None = None,
        *,
        guild_id: str | None = None,
    ) -> int:
        """Send a DISPATCH to every identified session of the event's shard (and ``intent``).

        The event's guild is ``guild_id``, else ``data["guild_id"]``; without one it goes to
        shard 0 only (as DMs do). Sessions that are disconnected but resumable only buffer it
        (replayed on RESUME, as Discord does). Returns how many open connections it was sent
        over.
        """
        sent, _ = await self._gateway.dispatch(event, data, intent, guild_id=guild_id)
        return sent

    async def drop_gateway(self, code: int = 4000, *, shard_id: int | None = None) -> None:
        """Close every gateway connection (of shard ``shard_id`` only, if given) with ``code``.

        With 4000 ("unknown error") discord.py reconnects and RESUMEs; events dispatched
        meanwhile are buffered and replayed.
        """
        await self._gateway.drop(code, shard_id)

    def invalidate_sessions(self) -> None:
        """Forget every session: the next RESUME gets INVALID_SESSION, forcing an IDENTIFY."""
        self._gateway.invalidate()

    @property
    def connected(self) -> bool:
        """Whether at least one identified gateway session is open."""
        return self._gateway.connected

    @staticmethod
    def shard_of(guild_id: str | int, shard_count: int) -> int:
        """The shard Discord routes a guild's events to, among ``shard_count``."""
        return shard_for(guild_id, shard_count)

    def sessions_on_shard(self, shard_id: int, *, open_only: bool = True) -> list[GatewaySession]:
        """Identified sessions carrying ``shard_id`` (by default only those connected now)."""
        return [
            s
            for s in self.sessions
            if s.shard_id == shard_id and (not open_only or (s.ready and s.open))
        ]

    # ------------------------------------------------------------------ interactions

    async def send_interaction(
        self,
        interaction_type: int,
        data: dict[str, Any] | None,
        *,
        channel_id: str | None = None,
        user: dict[str, Any] | None = None,
        message: dict[str, Any] | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
        require_gateway: bool = True,
        member_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        member_roles: list[str] | None = None,
    ) -> FakeInteraction:
        """Build a realistic INTERACTION_CREATE, dispatch it over the gateway, return a handle.

        It goes to the session(s) of its guild's shard (``FakeInteraction.sessions``); with
        ``require_gateway`` (the default) it is an error when none is connected.
        """
        return await self._interactions.send(
            interaction_type,
            data,
            channel_id=channel_id,
            user=user,
            message=message,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
            require_gateway=require_gateway,
            member_permissions=member_permissions,
            member_roles=member_roles,
        )

    def slash_command_data(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        guild_id: str | None = None,
        subcommand: str | None = None,
    ) -> dict[str, Any]:
        """``data`` of a CHAT_INPUT interaction; attachment options take ``add_attachment`` dicts.

        Option types come from the synced command when known, else from the Python value.
        ``subcommand`` ("sub" or "group sub") nests the options as Discord does
        (``[{"type": 1, "name": sub, "options": [...]}]``, inside a type 2 group). USER,
        CHANNEL and ROLE options take the user / channel / role payload and fill
        ``resolved`` (users + members in a guild, channels with permissions, roles).
        """
        return self._interactions.slash_command_data(
            name, options, guild_id=guild_id, subcommand=subcommand
        )

    async def slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        **kwargs: Any,
    ) -> FakeInteraction:
        """Dispatch ``/name [subcommand]`` with ``options`` (see :meth:`slash_command_data`).

        The command is looked up among those synced for the guild of ``channel_id``.
        """
        guild_id = self.channels[str(kwargs.get("channel_id") or self.channel_id)].get("guild_id")
        data = self.slash_command_data(name, options, guild_id=guild_id, subcommand=subcommand)
        return await self.send_interaction(IT_APPLICATION_COMMAND, data, **kwargs)

    async def message_command(
        self, name: str, message: dict[str, Any], **kwargs: Any
    ) -> FakeInteraction:
        """Dispatch the message context-menu command ``name`` on a stored ``message``.

        ``data`` is a MESSAGE command (type 3) with ``target_id`` and
        ``resolved.messages`` carrying the message, as Discord sends it.
        """
        return await self._interactions.message_command(name, message, **kwargs)

    async def press_button(
        self, message: dict[str, Any], custom_id: str, **kwargs: Any
    ) -> FakeInteraction:
        """Dispatch a MESSAGE_COMPONENT interaction for a button on a stored message.

        Raises ``ValueError`` if the message has no such button (a user could not press it).
        """
        return await self._interactions.press_button(message, custom_id, **kwargs)

    async def submit_modal(
        self, custom_id: str, values: dict[str, str], **kwargs: Any
    ) -> FakeInteraction:
        """Dispatch a MODAL_SUBMIT with text inputs ``{custom_id: value}``."""
        return await self._interactions.submit_modal(custom_id, values, **kwargs)
