"""Payload builders shaped like discord.py's ``discord/types/`` TypedDicts (pure functions)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    """The current time as Discord writes timestamps."""
    return datetime.now(UTC).isoformat()


def user_payload(user_id: str, username: str, *, bot: bool = False) -> dict[str, Any]:
    """A user object."""
    user: dict[str, Any] = {
        "id": user_id,
        "username": username,
        "discriminator": "0",
        "global_name": username,
        "avatar": None,
        "public_flags": 0,
        "flags": 0,
        "primary_guild": None,
    }
    if bot:
        user["bot"] = True
    return user


def role_payload(
    role_id: str, name: str, permissions: int, *, managed: bool = False
) -> dict[str, Any]:
    """A role object (``managed``: the bot's own role)."""
    return {
        "id": role_id,
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": 1 if managed else 0,
        "permissions": str(permissions),
        "managed": managed,
        "mentionable": False,
        "flags": 0,
    }


def member_payload(user: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    """A guild member object (with its ``user``)."""
    return {
        "user": user,
        "nick": None,
        "avatar": None,
        "roles": roles,
        "joined_at": now_iso(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }


def guild_create_payload(guild: dict[str, Any], members: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``d`` of a GUILD_CREATE for ``guild`` (a stored guild) with ``members``."""
    return {
        **copy.deepcopy(guild),
        "unavailable": False,
        "large": False,
        "member_count": len(members),
        "members": members,
        "voice_states": [],
        "presences": [],
        "emojis": [],
        "stickers": [],
        "features": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "joined_at": now_iso(),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "preferred_locale": "en-US",
        "premium_subscription_count": 0,
        "max_members": 500000,
        "description": None,
        "banner": None,
        "splash": None,
        "discovery_splash": None,
        "vanity_url_code": None,
        "application_id": None,
    }


def embed_out(embed: dict[str, Any]) -> dict[str, Any]:
    """An embed as Discord stores it: nulls dropped, ``type`` defaulting to ``rich``."""
    out = {k: v for k, v in embed.items() if v is not None}
    out.setdefault("type", "rich")
    return out
