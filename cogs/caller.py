"""The member behind an interaction: answering them privately, whether they may manage the
server, and the quota limits that apply to them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import discord

from bot.quota import QuotaLimits, resolve_limits
from bot.tasks import GuildSettings
from cogs.messages import MESSAGE_MAX, clip
from cogs.services import ServiceBot


async def reply_privately(
    interaction: discord.Interaction[Any],
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
) -> None:
    """Answer only the member: the interaction's response, or a follow-up once it is used."""
    kwargs: dict[str, Any] = {"ephemeral": True}
    if content is not None:
        kwargs["content"] = clip(content, MESSAGE_MAX)
    if embed is not None:
        kwargs["embed"] = embed
    if interaction.response.is_done():
        await interaction.followup.send(**kwargs)
    else:
        await interaction.response.send_message(**kwargs)


def is_manager(interaction: discord.Interaction[Any]) -> bool:
    """Whether the member may manage the server (Manage Server, or Administrator)."""
    permissions = interaction.permissions
    return permissions.manage_guild or permissions.administrator


def role_ids(user: discord.abc.User) -> list[int]:
    """The ids of the member's roles (none outside a server)."""
    return [role.id for role in getattr(user, "roles", [])]


async def caller_limits(
    bot: ServiceBot, guild_id: int | None, user_id: int, roles: Iterable[int]
) -> tuple[GuildSettings | None, QuotaLimits]:
    """The server's settings (None outside one) and the quota limits of this member there."""
    guild_settings = await bot.store.get_guild_settings(guild_id) if guild_id else None
    return guild_settings, resolve_limits(bot.settings, guild_settings, roles, user_id)
