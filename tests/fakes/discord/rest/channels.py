"""REST: channels, their messages and threads, and DM channels."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.discord.cdn import Cdn
from tests.fakes.discord.constants import (
    CH_DM,
    CH_GUILD_TEXT,
    CH_PRIVATE_THREAD,
    CH_PUBLIC_THREAD,
    FLAG_EPHEMERAL,
    FLAG_HAS_THREAD,
    INTENT_GUILDS,
)
from tests.fakes.discord.contract import Contract, json_response
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.payloads import now_iso
from tests.fakes.discord.records import RecordedRequest
from tests.fakes.discord.rest import Route
from tests.fakes.discord.state import DiscordState


class ChannelRoutes:
    """``/channels/...`` (messages, threads) and ``POST /users/@me/channels`` (DMs)."""

    def __init__(self, state: DiscordState, contract: Contract, cdn: Cdn, gateway: Gateway) -> None:
        self.state = state
        self.contract = contract
        self.cdn = cdn
        self.gateway = gateway

    def routes(self) -> list[Route]:
        """The routes this module answers."""
        return [
            ("GET", "/channels/{cid}", self._get_channel),
            ("GET", "/channels/{cid}/messages", self._list_messages),
            ("POST", "/channels/{cid}/messages", self._create_message),
            ("GET", "/channels/{cid}/messages/{mid}", self._get_message),
            ("PATCH", "/channels/{cid}/messages/{mid}", self._edit_message),
            ("DELETE", "/channels/{cid}/messages/{mid}", self._delete_message),
            ("POST", "/channels/{cid}/messages/{mid}/threads", self._thread_from_message),
            ("POST", "/channels/{cid}/threads", self._thread_without_message),
            ("POST", "/users/@me/channels", self._create_dm),
        ]

    async def _get_channel(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        return json_response(self.contract.channel(rec, p["cid"]))

    async def _list_messages(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self.contract.channel(rec, p["cid"])
        self.contract.permission(rec, p["cid"], "history")
        try:
            limit = int(rec.query.get("limit", "50"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            self.contract.refuse_form(
                rec, [(["limit"], "NUMBER_TYPE_MAX", "int value should be between 1 and 100")]
            )
        # Newest first, as Discord answers; ephemeral messages are not part of history.
        msgs = [
            m
            for m in reversed(self.state.channel_messages.get(p["cid"], []))
            if not m["flags"] & FLAG_EPHEMERAL
        ]
        if "before" in rec.query:
            msgs = [m for m in msgs if int(m["id"]) < int(rec.query["before"])]
        if "after" in rec.query:
            msgs = [m for m in msgs if int(m["id"]) > int(rec.query["after"])][-limit:]
        return json_response(msgs[:limit])

    async def _create_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        cid = p["cid"]
        contract = self.contract
        contract.channel(rec, cid)
        contract.permission(rec, cid, "send")
        if rec.files:
            contract.permission(rec, cid, "attach")
        body = rec.json or {}
        contract.check_message_body(rec, body, creating=True)
        contract.check_files(rec, self.state.upload_limit)
        if body.get("message_reference"):
            ref_id = str(body["message_reference"].get("message_id"))
            if ref_id not in self.state.message_index and body["message_reference"].get(
                "fail_if_not_exists", True
            ):
                contract.refuse_form(
                    rec, [(["message_reference"], "REPLIES_UNKNOWN_MESSAGE", "Unknown message")]
                )
        atts = self.cdn.store_uploads(rec, cid, body)
        message = self.state.new_message(cid, body, atts)
        await self.gateway.dispatch_message_create(message)
        return json_response(message)

    async def _get_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self.contract.channel(rec, p["cid"])
        return json_response(self.contract.stored_message(rec, p["cid"], p["mid"]))

    async def _edit_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        contract = self.contract
        contract.channel(rec, p["cid"])
        message = contract.stored_message(rec, p["cid"], p["mid"])
        if message["author"]["id"] != self.state.bot_user["id"]:
            contract.refuse(
                rec, "forbidden", 403, 50005, "Cannot edit a message authored by another user"
            )
        body = rec.json or {}
        contract.check_message_body(rec, body, creating=False)
        contract.check_files(rec, self.state.upload_limit)
        self.state.edit_message(message, body, self.cdn.store_uploads(rec, p["cid"], body))
        return json_response(message)

    async def _delete_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self.contract.channel(rec, p["cid"])
        self.state.remove_message(self.contract.stored_message(rec, p["cid"], p["mid"]))
        return web.Response(status=204)

    # ------------------------------------------------------------------ threads

    def _new_thread(
        self, parent: dict[str, Any], thread_id: str, body: dict[str, Any], thread_type: int
    ) -> dict[str, Any]:
        state = self.state
        thread = {
            "id": thread_id,
            "type": thread_type,
            "guild_id": parent.get("guild_id"),
            "parent_id": parent["id"],
            "owner_id": state.bot_user["id"],
            "name": body.get("name"),
            "last_message_id": None,
            "rate_limit_per_user": body.get("rate_limit_per_user") or 0,
            "message_count": 0,
            "total_message_sent": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration")
                or parent.get("default_auto_archive_duration", 1440),
                "archive_timestamp": now_iso(),
                "locked": False,
                "create_timestamp": now_iso(),
            },
            "member": {
                "id": thread_id,
                "user_id": state.bot_user["id"],
                "join_timestamp": now_iso(),
                "flags": 0,
            },
        }
        if thread_type == CH_PRIVATE_THREAD:
            thread["thread_metadata"]["invitable"] = bool(body.get("invitable", True))
        state.channels[thread_id] = thread
        state.channel_messages.setdefault(thread_id, [])
        state.threads.append(thread)
        return thread

    def _thread_parent(self, rec: RecordedRequest, cid: str) -> dict[str, Any]:
        parent = self.contract.channel(rec, cid)
        if parent.get("type") not in (CH_GUILD_TEXT, 5):
            self.contract.refuse(
                rec, "wrong_channel_type", 400, 50024, "Cannot execute action on this channel type"
            )
        self.contract.permission(rec, cid, "threads")
        return parent

    async def _thread_from_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        parent = self._thread_parent(rec, p["cid"])
        message = self.contract.stored_message(rec, p["cid"], p["mid"])
        if p["mid"] in self.state.channels:
            self.contract.refuse(
                rec,
                "thread_exists",
                400,
                160004,
                "A thread has already been created for this message",
            )
        body = rec.json or {}
        thread = self._new_thread(parent, p["mid"], body, CH_PUBLIC_THREAD)
        message["thread"] = thread
        message["flags"] = message.get("flags", 0) | FLAG_HAS_THREAD
        await self.gateway.dispatch(
            "THREAD_CREATE", {**thread, "newly_created": True}, INTENT_GUILDS
        )
        return json_response(thread, status=201)

    async def _thread_without_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        parent = self._thread_parent(rec, p["cid"])
        body = rec.json or {}
        thread = self._new_thread(
            parent, self.state.snowflake(), body, int(body.get("type") or CH_PRIVATE_THREAD)
        )
        await self.gateway.dispatch(
            "THREAD_CREATE", {**thread, "newly_created": True}, INTENT_GUILDS
        )
        return json_response(thread, status=201)

    # ------------------------------------------------------------------ DMs

    async def _create_dm(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        state = self.state
        body = rec.json or {}
        rid = str(body.get("recipient_id"))
        user = state.users.get(rid)
        if user is None:
            self.contract.refuse_form(
                rec, [(["recipient_id"], "INVALID_RECIPIENT", "Invalid Recipient(s)")]
            )
        existing = next(
            (
                c
                for c in state.channels.values()
                if c["type"] == CH_DM and c["recipients"][0]["id"] == rid
            ),
            None,
        )
        if existing is None:
            existing = {
                "id": state.snowflake(),
                "type": CH_DM,
                "last_message_id": None,
                "flags": 0,
                "recipients": [user],
            }
            state.channels[existing["id"]] = existing
            state.channel_messages[existing["id"]] = []
        return json_response(existing)
