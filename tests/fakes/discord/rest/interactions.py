"""REST: answering interactions (callback) and their webhook (followups, ``@original``).

These routes take the interaction token instead of the bot token, so any process of the bot
can answer any interaction, whichever gateway session received it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from tests.fakes.discord.cdn import Cdn
from tests.fakes.discord.constants import (
    CB_DEFERRED_MESSAGE,
    CB_DEFERRED_UPDATE,
    CB_MESSAGE,
    CB_MODAL,
    CB_UPDATE_MESSAGE,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    IT_MESSAGE_COMPONENT,
    IT_MODAL_SUBMIT,
)
from tests.fakes.discord.contract import Contract, json_response
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.openapi import FormError
from tests.fakes.discord.records import FakeInteraction, InteractionCallback, RecordedRequest
from tests.fakes.discord.rest import Route
from tests.fakes.discord.state import DiscordState

_INVALID_CALLBACK: FormError = (
    ["type"],
    "INTERACTION_CALLBACK_TYPE_INVALID",
    "Invalid callback type for this interaction",
)


class InteractionRoutes:
    """``POST /interactions/{id}/{token}/callback`` and ``/webhooks/{app}/{token}/...``."""

    def __init__(self, state: DiscordState, contract: Contract, cdn: Cdn, gateway: Gateway) -> None:
        self.state = state
        self.contract = contract
        self.cdn = cdn
        self.gateway = gateway

    def routes(self) -> list[Route]:
        """The routes this module answers."""
        return [
            ("POST", "/interactions/{iid}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app}/{token}", self._webhook_execute),
            *(
                (method, "/webhooks/{app}/{token}/messages/{mid}", self._webhook_message)
                for method in ("GET", "PATCH", "DELETE")
            ),
        ]

    async def _callback(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        state, contract = self.state, self.contract
        now = time.monotonic()
        inter = state.interactions.get(p["iid"])
        if inter is None or inter.token != p["token"]:
            contract.refuse(rec, "unknown_interaction", 404, 10062, "Unknown interaction")
        latency = now - inter.dispatched_at
        if inter.callback is not None:
            contract.refuse(
                rec, "double_ack", 400, 40060, "Interaction has already been acknowledged."
            )
        if latency > inter.ack_deadline:
            state.ack_latencies.setdefault(inter.id, latency)
            contract.refuse(rec, "late_ack", 404, 10062, "Unknown interaction")
        body = rec.json or {}
        cb_type = body.get("type")
        data = body.get("data")
        itype = inter.payload["type"]
        if cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE) and itype not in (
            IT_MESSAGE_COMPONENT,
            IT_MODAL_SUBMIT,
        ):
            contract.refuse_form(rec, [_INVALID_CALLBACK])
        if cb_type == CB_MODAL and itype == IT_MODAL_SUBMIT:
            contract.refuse_form(rec, [_INVALID_CALLBACK])
        msg_body: dict[str, Any] = data if isinstance(data, dict) else {}
        if cb_type in (CB_MESSAGE, CB_UPDATE_MESSAGE):
            contract.check_message_body(rec, msg_body, creating=cb_type == CB_MESSAGE)
            contract.check_files(rec, int(inter.payload["attachment_size_limit"]))
        elif rec.files:
            contract.refuse_form(
                rec,
                [(["files"], "BASE_TYPE_INVALID", "Files are not allowed for this callback type")],
            )

        cid = inter.channel_id
        message: dict[str, Any] | None = None
        flags = int(msg_body.get("flags") or 0) & FLAG_EPHEMERAL
        if cb_type == CB_MESSAGE:
            atts = self.cdn.store_uploads(rec, cid, msg_body)
            message = state.new_message(
                cid, msg_body, atts, msg_type=20, interaction=inter, flags=flags
            )
            inter.original_message_id = message["id"]
        elif cb_type == CB_DEFERRED_MESSAGE:
            message = state.new_message(
                cid, {}, [], msg_type=20, interaction=inter, flags=flags | FLAG_LOADING
            )
            inter.original_message_id = message["id"]
        elif cb_type == CB_UPDATE_MESSAGE and "message" in inter.payload:
            message = state.message_index.get(inter.payload["message"]["id"])
            if message is not None:
                uploads = self.cdn.store_uploads(rec, message["channel_id"], msg_body)
                state.edit_message(message, msg_body, uploads)
            inter.original_message_id = inter.payload["message"]["id"]
        elif cb_type == CB_DEFERRED_UPDATE and "message" in inter.payload:
            inter.original_message_id = inter.payload["message"]["id"]

        callback = InteractionCallback(inter.id, int(cb_type or 0), data, rec.files, latency, now)
        inter.callback = callback
        state.interaction_callbacks.append(callback)
        state.ack_latencies[inter.id] = latency
        if message is not None and cb_type in (CB_MESSAGE, CB_DEFERRED_MESSAGE) and not flags:
            await self.gateway.dispatch_message_create(message)

        if rec.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        response: dict[str, Any] = {
            "interaction": {
                "id": inter.id,
                "type": itype,
                "response_message_loading": cb_type == CB_DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(flags),
            }
        }
        if message is not None:
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"] = {"type": cb_type, "message": message}
        else:
            response["resource"] = {"type": cb_type}
        return json_response(response)

    def _interaction_by_token(self, rec: RecordedRequest, app: str, token: str) -> FakeInteraction:
        inter = next((i for i in self.state.interactions.values() if i.token == token), None)
        if inter is None or app != self.state.application_id:
            self.contract.refuse(rec, "unknown_webhook", 404, 10015, "Unknown Webhook")
        if inter.expired:
            self.contract.refuse(rec, "token_expired", 401, 50027, "Invalid Webhook Token")
        return inter

    async def _webhook_execute(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        inter = self._interaction_by_token(rec, p["app"], p["token"])
        body = rec.json or {}
        self.contract.check_message_body(rec, body, creating=True)
        self.contract.check_files(rec, int(inter.payload["attachment_size_limit"]))
        cid = inter.channel_id
        if "thread_id" in rec.query:
            cid = rec.query["thread_id"]
            self.contract.channel(rec, cid)
        flags = int(body.get("flags") or 0) & FLAG_EPHEMERAL
        atts = self.cdn.store_uploads(rec, cid, body)
        message = self.state.new_message(
            cid, body, atts, msg_type=0, interaction=inter, flags=flags
        )
        inter.followup_ids.append(message["id"])
        if not flags:
            await self.gateway.dispatch_message_create(message)
        if rec.query.get("wait") in ("1", "true", "True"):
            return json_response(message)
        return web.Response(status=204)

    async def _webhook_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        inter = self._interaction_by_token(rec, p["app"], p["token"])
        mid = inter.original_message_id if p["mid"] == "@original" else p["mid"]
        if mid is None or mid not in self.state.message_index:
            self.contract.refuse(rec, "unknown_message", 404, 10008, "Unknown Message")
        message = self.state.message_index[mid]
        if req.method == "GET":
            return json_response(message)
        if req.method == "DELETE":
            self.state.remove_message(message)
            return web.Response(status=204)
        body = rec.json or {}
        self.contract.check_message_body(rec, body, creating=False)
        self.contract.check_files(rec, int(inter.payload["attachment_size_limit"]))
        uploads = self.cdn.store_uploads(rec, message["channel_id"], body)
        self.state.edit_message(message, body, uploads)
        return json_response(message)
