"""The fake's shared state: configuration, the world (guilds, channels, messages...) and records.

Every part of the fake (gateway, REST routes, CDN, contract checks, faults) is given this one
object and reads and writes its public attributes; no part keeps a copy of the world.
``FakeDiscord`` is this state plus the server and those parts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from tests.fakes.discord import payloads
from tests.fakes.discord.constants import (
    CH_GUILD_TEXT,
    CH_PRIVATE_THREAD,
    CH_PUBLIC_THREAD,
    DEFAULT_EVERYONE_PERMISSIONS,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
)
from tests.fakes.discord.records import (
    FakeInteraction,
    InteractionCallback,
    RecordedRequest,
    Violation,
)
from tests.fakes.discord.session import GatewaySession
from tests.fakes.discord.snowflakes import Snowflakes


class DiscordState:
    """Configuration, world and records of one fake Discord (see ``FakeDiscord`` for the knobs)."""

    def __init__(
        self,
        *,
        token: str,
        bot_name: str,
        guild_name: str,
        channel_name: str,
        ack_deadline: float,
        token_ttl: float,
        upload_limit: int,
        privileged_intents_enabled: int,
        heartbeat_interval_ms: int,
        resume_supported: bool,
        bot_permissions: int,
        recommended_shards: int,
        max_guilds_per_shard: int,
    ) -> None:
        self.token = token
        self.ack_deadline = ack_deadline
        self.token_ttl = token_ttl
        self.upload_limit = upload_limit
        self.privileged_intents_enabled = privileged_intents_enabled
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_supported = resume_supported
        self.bot_permissions = bot_permissions
        self.recommended_shards = recommended_shards
        self.max_guilds_per_shard = max_guilds_per_shard
        self.port = 0  # set once the server listens
        self.ids = Snowflakes()

        self.application_id = self.snowflake()
        self.bot_user: dict[str, Any] = payloads.user_payload(
            self.application_id, "kling-video-bot", bot=True
        )
        self.bot_user["global_name"] = bot_name
        self.user: dict[str, Any] = payloads.user_payload(self.snowflake(), "tester")
        self.users: dict[str, dict[str, Any]] = {
            self.bot_user["id"]: self.bot_user,
            self.user["id"]: self.user,
        }

        # The world.
        self.guilds: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.channel_messages: dict[str, list[dict[str, Any]]] = {}  # oldest first
        self.message_index: dict[str, dict[str, Any]] = {}
        self.threads: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[str, list[dict[str, Any]]] = {}
        self.cdn: dict[str, tuple[bytes, str]] = {}  # "channel/attachment/name" -> (data, type)
        self.interactions: dict[str, FakeInteraction] = {}
        self.denied: dict[str, set[str]] = {}  # channel id -> {"threads", "send", "attach"}
        self.blocked_dm_users: set[str] = set()
        self.guild_id = self.snowflake()
        self.bot_role_id = self.snowflake()
        self._store_guild(self.guild_id, guild_name, self.bot_role_id)
        self.channel_id = self.add_text_channel(channel_name)["id"]

        # Recording.
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.interaction_callbacks: list[InteractionCallback] = []
        self.ack_latencies: dict[str, float] = {}
        self.delayed: list[RecordedRequest] = []  # requests answered late by `delay_next`
        self.command_syncs = 0
        self.identifies: list[dict[str, Any]] = []
        self.sessions: list[GatewaySession] = []  # every identified session, in READY order
        self.resume_attempts = 0
        self.resumes = 0
        self.ready_count = 0
        self.gateway_sent: list[dict[str, Any]] = []
        self.gateway_received: list[dict[str, Any]] = []
        self.gateway_closes: list[int] = []

        self._cond = asyncio.Condition()
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (give it to the launcher)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        """Websocket gateway URL, as returned by ``GET /gateway/bot``."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ waiting

    async def notify(self) -> None:
        """Wake every :meth:`wait_for` (call after recording or changing anything)."""
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked whenever the fake records something).

        Returns the predicate's value; raises ``TimeoutError`` with a summary otherwise.
        """
        assert self.port, "FakeDiscord not started"
        value = predicate()
        if value:
            return value
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"condition not met within {timeout}s; last requests: "
                    + ", ".join(f"{r.method} {r.path} -> {r.status}" for r in self.requests[-8:])
                    + f"; violations: {self.violations}"
                ) from None
        return predicate()

    # ------------------------------------------------------------------ building the world

    def snowflake(self) -> str:
        """A fresh, increasing snowflake (string) with the current timestamp."""
        return self.ids.next()

    def _store_guild(self, guild_id: str, name: str, bot_role_id: str) -> dict[str, Any]:
        guild: dict[str, Any] = {
            "id": guild_id,
            "name": name,
            "icon": None,
            "owner_id": self.user["id"],
            "roles": [
                payloads.role_payload(guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS),
                payloads.role_payload(
                    bot_role_id, self.bot_user["global_name"], self.bot_permissions, managed=True
                ),
            ],
            "premium_tier": 0,
            "channels": [],
            "threads": [],
        }
        self.guilds[guild_id] = guild
        return guild

    def add_guild(
        self,
        name: str,
        *,
        shard: tuple[int, int] | None = None,
        channel_name: str = "general",
    ) -> dict[str, Any]:
        """Add a guild the bot is in, with one text channel (``guild["channels"][0]``).

        ``shard=(k, n)`` picks its id so that Discord routes its events to shard ``k`` of
        ``n``. Add it before the bot connects (its shard's session gets its GUILD_CREATE).
        """
        guild_id = self.ids.on_shard(*shard) if shard else self.snowflake()
        guild = self._store_guild(guild_id, name, self.snowflake())
        self.add_text_channel(channel_name, guild_id)
        return guild

    def bot_role_of(self, guild_id: str) -> str:
        """The id of the bot's (managed) role in a guild."""
        return str(next(r["id"] for r in self.guilds[guild_id]["roles"] if r["managed"]))

    def add_text_channel(self, name: str, guild_id: str | None = None) -> dict[str, Any]:
        """Add a guild text channel (before the bot connects, or it won't know it)."""
        gid = guild_id or self.guild_id
        guild = self.guilds[gid]
        channel: dict[str, Any] = {
            "id": self.snowflake(),
            "type": CH_GUILD_TEXT,
            "guild_id": gid,
            "name": name,
            "position": len(guild["channels"]),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "default_auto_archive_duration": 1440,
            "flags": 0,
        }
        guild["channels"].append(channel)
        self.channels[channel["id"]] = channel
        self.channel_messages[channel["id"]] = []
        return channel

    def add_role(
        self, name: str, permissions: int = 0, guild_id: str | None = None
    ) -> dict[str, Any]:
        """Add a guild role (before the bot connects, or it won't know it); return its payload.

        Give its id to ``send_interaction(member_roles=[...])`` to make a member carry it.
        """
        role = payloads.role_payload(self.snowflake(), name, permissions)
        self.guilds[guild_id or self.guild_id]["roles"].append(role)
        return role

    def add_user(self, username: str) -> dict[str, Any]:
        """Register another (human) user and return its payload."""
        user = payloads.user_payload(self.snowflake(), username)
        self.users[user["id"]] = user
        return user

    def deny_threads(self, channel_id: str) -> None:
        """Make thread creation in ``channel_id`` fail with 403 ``50013 Missing Permissions``."""
        self.denied.setdefault(str(channel_id), set()).add("threads")

    def deny_send_messages(self, channel_id: str) -> None:
        """Make posting in ``channel_id`` fail with 403 ``50013 Missing Permissions``."""
        self.denied.setdefault(str(channel_id), set()).add("send")

    def deny_attach_files(self, channel_id: str) -> None:
        """Make uploads in ``channel_id`` fail with 403 ``50013 Missing Permissions``."""
        self.denied.setdefault(str(channel_id), set()).add("attach")

    def block_dms(self, user_id: str) -> None:
        """Messages to this user's DM fail with 403 ``50007 Cannot send messages to this user``."""
        self.blocked_dm_users.add(str(user_id))

    def add_user_message(
        self,
        channel_id: str,
        content: str,
        attachments: list[dict[str, Any]],
        author: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a message a human posted (e.g. with ``add_attachment`` payloads); return it."""
        cid = str(channel_id)
        atts = [{k: v for k, v in a.items() if k != "ephemeral"} for a in attachments]
        message = self.new_message(cid, {"content": content}, atts)
        message["author"] = author or self.user
        return message

    def member_payload(
        self, user: dict[str, Any], permissions: int | None = None
    ) -> dict[str, Any]:
        """A guild member payload for ``user`` (as in resolved data: without ``user``)."""
        member = {k: v for k, v in payloads.member_payload(user, []).items() if k != "user"}
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    def guild_create_payload(self, guild_id: str) -> dict[str, Any]:
        """The GUILD_CREATE of a stored guild: the bot (with its role) and the tester as members."""
        members = [
            payloads.member_payload(self.bot_user, [self.bot_role_of(guild_id)]),
            payloads.member_payload(self.user, []),
        ]
        return payloads.guild_create_payload(self.guilds[guild_id], members)

    def app_permissions(self, channel_id: str) -> int:
        """The bot's permissions in a channel, as Discord reports them in an interaction."""
        permissions = self.bot_permissions
        denied = self.denied.get(str(channel_id), set())
        if "threads" in denied:
            permissions &= ~((1 << 35) | (1 << 36))  # CREATE_PUBLIC/PRIVATE_THREADS
        if "send" in denied:
            permissions &= ~((1 << 11) | (1 << 38))  # SEND_MESSAGES (+ IN_THREADS)
        if "attach" in denied:
            permissions &= ~(1 << 15)  # ATTACH_FILES
        return permissions

    # ------------------------------------------------------------------ messages

    def new_message(
        self,
        channel_id: str,
        body: dict[str, Any],
        attachments: list[dict[str, Any]],
        *,
        msg_type: int = 0,
        interaction: FakeInteraction | None = None,
        flags: int = 0,
    ) -> dict[str, Any]:
        """Store a message the bot posted (``body`` as sent) and return it."""
        channel = self.channels[channel_id]
        message: dict[str, Any] = {
            "id": self.snowflake(),
            "channel_id": channel_id,
            "author": self.bot_user,
            "content": body.get("content") or "",
            "timestamp": payloads.now_iso(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts") or False),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": [payloads.embed_out(e) for e in body.get("embeds") or []],
            "components": body.get("components") or [],
            "pinned": False,
            "type": msg_type,
            "flags": flags
            | (int(body.get("flags") or 0) & (FLAG_EPHEMERAL | (1 << 2) | (1 << 12))),
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
        if body.get("message_reference"):
            ref = dict(body["message_reference"])
            ref.setdefault("channel_id", channel_id)
            message["message_reference"] = ref
            message["type"] = 19
        if interaction is not None:
            message["webhook_id"] = self.application_id
            message["application_id"] = self.application_id
            user = interaction.payload.get("member", {}).get("user") or interaction.payload.get(
                "user"
            )
            message["interaction_metadata"] = {
                "id": interaction.id,
                "type": interaction.payload["type"],
                "user": user,
                "authorizing_integration_owners": interaction.payload.get(
                    "authorizing_integration_owners", {}
                ),
            }
        self.channel_messages.setdefault(channel_id, []).append(message)
        self.message_index[message["id"]] = message
        channel["last_message_id"] = message["id"]
        if channel.get("type") in (CH_PUBLIC_THREAD, CH_PRIVATE_THREAD):
            channel["message_count"] = channel.get("message_count", 0) + 1
            channel["total_message_sent"] = channel.get("total_message_sent", 0) + 1
        return message

    def edit_message(
        self, message: dict[str, Any], body: dict[str, Any], new_attachments: list[dict[str, Any]]
    ) -> None:
        """Apply an edit (``body`` as sent, uploads already stored as ``new_attachments``)."""
        if "attachments" in body and body["attachments"] is not None:
            keep = {str(a["id"]) for a in body["attachments"] if isinstance(a, dict) and "id" in a}
            message["attachments"] = [a for a in message["attachments"] if a["id"] in keep]
        message["attachments"] = message["attachments"] + new_attachments
        for key in ("content", "components"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key == "components" else "")
                )
        if "embeds" in body:
            message["embeds"] = [payloads.embed_out(e) for e in body["embeds"] or []]
        if "flags" in body and body["flags"] is not None:
            message["flags"] = (message["flags"] & ~(1 << 2)) | (int(body["flags"]) & (1 << 2))
        message["flags"] &= ~FLAG_LOADING
        message["edited_timestamp"] = payloads.now_iso()

    def remove_message(self, message: dict[str, Any]) -> None:
        """Delete a stored message."""
        self.message_index.pop(message["id"], None)
        msgs = self.channel_messages.get(message["channel_id"], [])
        msgs[:] = [m for m in msgs if m["id"] != message["id"]]

    # ------------------------------------------------------------------ read helpers

    def messages_in(self, channel_id: str) -> list[dict[str, Any]]:
        """Messages in a channel, oldest first."""
        return list(self.channel_messages.get(str(channel_id), []))

    def message(self, message_id: str) -> dict[str, Any]:
        """A stored message by id."""
        return self.message_index[str(message_id)]

    def find_requests(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """Recorded requests with ``method`` whose path (without /api/v10) matches the regex."""
        rx = re.compile(path_pattern)
        return [r for r in self.requests if r.method == method.upper() and rx.search(r.path)]

    def attachment_bytes(self, attachment: dict[str, Any]) -> bytes:
        """The bytes behind an attachment payload served by the fake CDN."""
        path = attachment["url"].split("/attachments/", 1)[1].split("?", 1)[0]
        return self.cdn[path][0]

    def command_id(self, name: str, guild_id: str | None = None) -> str:
        """The id of a registered command (guild ones first), or a fresh id if never synced."""
        for cmd in self.guild_commands.get(str(guild_id or self.guild_id), []) + self.commands:
            if cmd["name"] == name:
                return str(cmd["id"])
        return self.snowflake()

    def find_command(self, name: str, guild_id: str | None = None) -> dict[str, Any] | None:
        """A registered command (of the guild, by default the first one, or global) by name."""
        for cmd in self.guild_commands.get(str(guild_id or self.guild_id), []) + self.commands:
            if cmd["name"] == name:
                return cmd
        return None

    @property
    def identified_intents(self) -> list[int]:
        """The ``intents`` of every IDENTIFY received."""
        return [int(d.get("intents", 0)) for d in self.identifies]
