"""The member behind an interaction: answering them privately, whether they may manage the
server, and the quota and credit limits that apply to them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import discord

from bot.credits import CreditLimits, resolve_credit_limits
from bot.quota import QuotaLimits, resolve_limits
from bot.tasks import GuildSettings
from cogs.messages import MESSAGE_MAX, clip
from cogs.services import ServiceBot


async def reply_privately(
    interaction: discord.Interaction[Any],
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    files: Sequence[discord.File] = (),
) -> None:
    """Answer only the member: the interaction's response, or a follow-up once it is used."""
    kwargs: dict[str, Any] = {"ephemeral": True}
    if content is not None:
        kwargs["content"] = clip(content, MESSAGE_MAX)
    if embed is not None:
        kwargs["embed"] = embed
    if files:
        kwargs["files"] = list(files)
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


@dataclass(frozen=True, slots=True)
class CallerLimits:
    """What applies to one member: the server's settings (None outside one), the video
    limits and the credit limits."""

    guild_settings: GuildSettings | None
    videos: QuotaLimits
    credits: CreditLimits


async def caller_limits(
    bot: ServiceBot, guild_id: int | None, user_id: int, roles: Iterable[int]
) -> CallerLimits:
    """The server's settings and the video and credit limits of this member there."""
    guild_settings = await bot.store.get_guild_settings(guild_id) if guild_id else None
    roles = list(roles)
    videos = resolve_limits(bot.settings, guild_settings, roles, user_id)
    credits = resolve_credit_limits(
        bot.settings, guild_settings, roles, user_id, exempt=videos.exempt
    )
    return CallerLimits(guild_settings, videos, credits)
