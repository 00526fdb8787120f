"""Interactions a test makes a user perform: slash and message commands, buttons, modals.

Each is built as Discord builds it (discord.py's ``discord/types/interactions.py``) and sent as
INTERACTION_CREATE to the gateway session of its guild's shard; the bot answers over REST
(``tests/fakes/discord/rest/interactions.py``).
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Iterable
from typing import Any

from tests.fakes.discord import payloads
from tests.fakes.discord.constants import (
    CH_GUILD_TEXT,
    DEFAULT_EVERYONE_PERMISSIONS,
    IT_APPLICATION_COMMAND,
    IT_MESSAGE_COMPONENT,
    IT_MODAL_SUBMIT,
)
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.records import FakeInteraction
from tests.fakes.discord.state import DiscordState


class Interactions:
    """Builds interactions and dispatches them (see the matching ``FakeDiscord`` methods)."""

    def __init__(self, state: DiscordState, gateway: Gateway) -> None:
        self.state = state
        self.gateway = gateway

    async def send(
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
        """Build a realistic INTERACTION_CREATE, dispatch it over the gateway, return a handle."""
        state = self.state
        cid = str(channel_id or state.channel_id)
        channel = state.channels[cid]
        user = user or state.user
        guild_id = channel.get("guild_id")
        payload: dict[str, Any] = {
            "id": state.snowflake(),
            "application_id": state.application_id,
            "type": interaction_type,
            "token": "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48),
            "version": 1,
            "channel_id": cid,
            "channel": copy.deepcopy(channel),
            "app_permissions": str(state.app_permissions(cid)),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": attachment_size_limit or state.upload_limit,
        }
        if data is not None:
            payload["data"] = data
        if guild_id:
            payload["guild_id"] = guild_id
            payload["guild"] = {"id": guild_id, "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            member = payloads.member_payload(user, list(member_roles or []))
            member["permissions"] = str(member_permissions)
            payload["member"] = member
            payload["authorizing_integration_owners"] = {"0": guild_id}
            payload["context"] = 0
        else:
            payload["user"] = user
            payload["authorizing_integration_owners"] = {"0": guild_id or state.guild_id}
            payload["context"] = 1
        if message is not None:
            payload["message"] = message
        interaction = FakeInteraction(
            fake=state,
            payload=payload,
            dispatched_at=time.monotonic(),
            ack_deadline=state.ack_deadline,
            token_ttl=state.token_ttl,
        )
        if require_gateway and not self.gateway.has_session_for(guild_id):
            raise RuntimeError(
                "no identified gateway session to dispatch the interaction to"
                + (f" (guild {guild_id})" if guild_id and self.gateway.connected else "")
            )
        state.interactions[interaction.id] = interaction
        interaction.dispatched_at = time.monotonic()
        _, interaction.sessions = await self.gateway.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def slash_command_data(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        guild_id: str | None = None,
        subcommand: str | None = None,
    ) -> dict[str, Any]:
        """``data`` of a CHAT_INPUT interaction (see ``FakeDiscord.slash_command_data``)."""
        cmd = self.state.find_command(name, guild_id)
        declared_list = (cmd or {}).get("options") or []
        path = subcommand.split() if subcommand else []
        for part in path:
            parent: dict[str, Any] = next((o for o in declared_list if o.get("name") == part), {})
            declared_list = parent.get("options") or []
        declared = {o["name"]: o for o in declared_list}
        resolved: dict[str, dict[str, Any]] = {}
        opts: list[dict[str, Any]] = []
        for opt_name, value in (options or {}).items():
            opt_type = declared.get(opt_name, {}).get("type")
            if isinstance(value, dict) and "filename" in value:
                resolved.setdefault("attachments", {})[value["id"]] = value
                opts.append({"name": opt_name, "type": 11, "value": value["id"]})
                continue
            if isinstance(value, dict) and "id" in value:
                opt_type = opt_type or self._entity_option_type(value)
                self._resolve_entity(resolved, opt_type, value)
                opts.append({"name": opt_name, "type": opt_type, "value": str(value["id"])})
                continue
            if opt_type is None:
                if isinstance(value, bool):
                    opt_type = 5
                elif isinstance(value, int):
                    opt_type = 4
                elif isinstance(value, float):
                    opt_type = 10
                else:
                    opt_type = 3
            opts.append({"name": opt_name, "type": opt_type, "value": value})
        for depth, part in enumerate(reversed(path)):
            kind = 1 if depth == 0 else 2  # SUB_COMMAND, then SUB_COMMAND_GROUP
            opts = [{"name": part, "type": kind, "options": opts}]
        data: dict[str, Any] = {
            "id": self.state.command_id(name, guild_id),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return data

    @staticmethod
    def _entity_option_type(value: dict[str, Any]) -> int:
        if "username" in value:
            return 6  # USER
        if "permissions" in value and "type" not in value:
            return 8  # ROLE
        return 7  # CHANNEL

    def _resolve_entity(
        self, resolved: dict[str, dict[str, Any]], opt_type: int, value: dict[str, Any]
    ) -> None:
        vid = str(value["id"])
        if opt_type in (6, 9) and "username" in value:
            resolved.setdefault("users", {})[vid] = value
            resolved.setdefault("members", {})[vid] = self.state.member_payload(
                value, DEFAULT_EVERYONE_PERMISSIONS
            )
        elif opt_type == 7:
            channel = {
                "id": vid,
                "name": value.get("name"),
                "type": value.get("type", CH_GUILD_TEXT),
                "permissions": str(DEFAULT_EVERYONE_PERMISSIONS),
            }
            if value.get("parent_id"):
                channel["parent_id"] = value["parent_id"]
            if value.get("thread_metadata"):
                channel["thread_metadata"] = value["thread_metadata"]
            resolved.setdefault("channels", {})[vid] = channel
        else:
            resolved.setdefault("roles", {})[vid] = value

    async def message_command(
        self, name: str, message: dict[str, Any], **kwargs: Any
    ) -> FakeInteraction:
        """The message context-menu command ``name`` on a stored ``message``."""
        state = self.state
        stored = state.message_index.get(str(message["id"]), message)
        kwargs.setdefault("channel_id", stored["channel_id"])
        guild_id = state.channels[str(kwargs["channel_id"])].get("guild_id") or state.guild_id
        cmd_id = next(
            (
                str(c["id"])
                for c in state.guild_commands.get(guild_id, []) + state.commands
                if c["name"] == name and c.get("type") == 3
            ),
            state.snowflake(),
        )
        data: dict[str, Any] = {
            "id": cmd_id,
            "name": name,
            "type": 3,
            "target_id": stored["id"],
            "resolved": {"messages": {stored["id"]: copy.deepcopy(stored)}},
        }
        cmd = next((c for c in state.guild_commands.get(guild_id, []) if c["id"] == cmd_id), None)
        if cmd is not None:
            data["guild_id"] = cmd["guild_id"]
        return await self.send(IT_APPLICATION_COMMAND, data, **kwargs)

    async def press_button(
        self, message: dict[str, Any], custom_id: str, **kwargs: Any
    ) -> FakeInteraction:
        """A MESSAGE_COMPONENT interaction for a button on a stored message."""
        stored = self.state.message_index.get(str(message["id"]), message)

        def custom_ids(nodes: Iterable[Any]) -> Iterable[str]:
            for node in nodes:
                if isinstance(node, dict):
                    if node.get("type") == 2 and "custom_id" in node:
                        yield node["custom_id"]
                    yield from custom_ids(node.get("components") or [])
                    if node.get("accessory"):
                        yield from custom_ids([node["accessory"]])

        if custom_id not in set(custom_ids(stored.get("components") or [])):
            raise ValueError(f"message {stored['id']} has no button with custom_id {custom_id!r}")
        return await self.send(
            IT_MESSAGE_COMPONENT,
            {"custom_id": custom_id, "component_type": 2},
            channel_id=stored["channel_id"],
            message=copy.deepcopy(stored),
            **kwargs,
        )

    async def submit_modal(
        self, custom_id: str, values: dict[str, str], **kwargs: Any
    ) -> FakeInteraction:
        """A MODAL_SUBMIT with text inputs ``{custom_id: value}``."""
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]}
            for k, v in values.items()
        ]
        return await self.send(
            IT_MODAL_SUBMIT, {"custom_id": custom_id, "components": rows}, **kwargs
        )
