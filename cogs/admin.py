"""/kling-admin: a server's own limits, overrides, blocks, blocked words, log channel, usage.

Visible to members with Manage Server by default, and checked again on every use (a server
can change who sees a command).
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any, Literal

import discord
from discord import app_commands
from discord.app_commands import locale_str as _
from discord.ext import commands

from bot.pricing import format_credits, to_cents
from bot.quota import DAY_SECONDS
from bot.strings import text
from bot.tasks import TaskState
from cogs.caller import is_manager, reply_privately
from cogs.messages import clip, state_text
from cogs.services import ServiceBot
from cogs.spend import report_embed, spend_report

WEEK_SECONDS = 7 * DAY_SECONDS
Limit = app_commands.Range[int, 0, 10_000]
#: A credit limit as an admin types it (at most two decimals; checked by `_cents`).
CreditLimit = app_commands.Range[float, 0, 1_000_000]


class CreditsOption(ValueError):
    """A credit limit with more than two decimals."""


def _cents(value: float | None) -> int | None:
    """A credit limit typed by an admin as cents of a credit (None stays None)."""
    if value is None:
        return None
    try:
        return to_cents(Decimal(str(value)))
    except ValueError:
        raise CreditsOption(str(value)) from None


def _limits_text(locale: str, **limits: int | str | bool | None) -> str:
    """`name=value, ...` as the admin set them: empty = the default, 0 = no limit."""
    default = text(locale, "admin.default")
    unlimited = text(locale, "quota.unlimited")
    parts = []
    for name, value in limits.items():
        if isinstance(value, bool):
            if value:
                parts.append(name)
        else:
            shown = default if value is None else unlimited if value == 0 else value
            parts.append(f"{name}={shown}")
    return ", ".join(parts) or default


def _credits(cents: int | None, locale: str) -> int | str | None:
    """A credit limit for `_limits_text`: None (default), 0 (no limit), or credits as read."""
    return format_credits(cents, locale) if cents else cents


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class AdminCog(
    commands.GroupCog,
    group_name=_("kling-admin"),
    group_description=_("Manage the video bot on this server"),
):
    """Server admins' controls over the bot."""

    def __init__(self, bot: ServiceBot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: discord.Interaction[Any]) -> bool:
        """Only in a server, only for members who may manage it."""
        locale = str(interaction.locale)
        if interaction.guild_id is None:
            await reply_privately(interaction, text(locale, "admin.guild_only"))
            return False
        if not is_manager(interaction):
            await reply_privately(interaction, text(locale, "admin.not_allowed"))
            return False
        return True

    @app_commands.command(
        name=_("limits"), description=_("Set this server's limits (empty = the bot's default)")
    )
    @app_commands.rename(
        daily_per_user=_("daily_per_user"),
        concurrent_per_user=_("concurrent_per_user"),
        daily_per_guild=_("daily_per_guild"),
        credits_per_user=_("credits_per_user"),
        credits_per_guild=_("credits_per_guild"),
    )
    @app_commands.describe(
        daily_per_user=_("Videos per user per 24 hours (0 = no limit)"),
        concurrent_per_user=_("Videos one user may have running at once (0 = no limit)"),
        daily_per_guild=_("Videos the whole server may make per 24 hours (0 = no limit)"),
        credits_per_user=_("Credits one user may spend per 24 hours (0 = no limit)"),
        credits_per_guild=_("Credits the whole server may spend per 24 hours (0 = no limit)"),
    )
    async def limits(
        self,
        interaction: discord.Interaction[Any],
        daily_per_user: Limit | None = None,
        concurrent_per_user: Limit | None = None,
        daily_per_guild: Limit | None = None,
        credits_per_user: CreditLimit | None = None,
        credits_per_guild: CreditLimit | None = None,
    ) -> None:
        """Set the guild's limits; an option left out goes back to the bot's default."""
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        try:
            user_credits, guild_credits = _cents(credits_per_user), _cents(credits_per_guild)
        except CreditsOption as error:
            await reply_privately(interaction, text(locale, "admin.credits_bad", value=error))
            return
        await self.bot.store.set_guild_limits(
            interaction.guild_id,
            daily_per_user=daily_per_user,
            concurrent_per_user=concurrent_per_user,
            daily_per_guild=daily_per_guild,
            credits_daily_per_user=user_credits,
            credits_daily_per_guild=guild_credits,
        )
        summary = _limits_text(
            locale,
            daily_per_user=daily_per_user,
            concurrent_per_user=concurrent_per_user,
            daily_per_guild=daily_per_guild,
            credits_per_user=_credits(user_credits, locale),
            credits_per_guild=_credits(guild_credits, locale),
        )
        await reply_privately(interaction, text(locale, "admin.limits_set", limits=summary))

    async def _override(
        self,
        interaction: discord.Interaction[Any],
        kind: Literal["role", "user"],
        target: discord.abc.Snowflake,
        mention: str,
        daily: int | None,
        concurrent: int | None,
        exempt: bool,
        clear: bool,
        credits: float | None,
    ) -> None:
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        try:
            credits_daily = _cents(credits)
        except CreditsOption as error:
            await reply_privately(interaction, text(locale, "admin.credits_bad", value=error))
            return
        if clear:
            await self.bot.store.remove_override(interaction.guild_id, kind, target.id)
            await reply_privately(
                interaction, text(locale, "admin.override_removed", target=mention)
            )
            return
        await self.bot.store.set_override(
            interaction.guild_id,
            kind,
            target.id,
            daily=daily,
            concurrent=concurrent,
            exempt=exempt,
            credits_daily=credits_daily,
        )
        summary = _limits_text(
            locale,
            daily=daily,
            concurrent=concurrent,
            credits=_credits(credits_daily, locale),
            exempt=exempt,
        )
        await reply_privately(
            interaction, text(locale, "admin.override_set", target=mention, limits=summary)
        )

    @app_commands.command(
        name=_("role-limit"), description=_("Give a role its own limits or exempt it")
    )
    @app_commands.rename(
        role=_("role"),
        daily=_("daily"),
        concurrent=_("concurrent"),
        credits=_("credits"),
        exempt=_("exempt"),
        clear=_("clear"),
    )
    @app_commands.describe(
        role=_("The role"),
        daily=_("Videos per 24 hours (0 = no limit)"),
        concurrent=_("Videos at once (0 = no limit)"),
        credits=_("Credits per 24 hours (0 = no limit)"),
        exempt=_("No limits at all"),
        clear=_("Remove the override instead"),
    )
    async def role_limit(
        self,
        interaction: discord.Interaction[Any],
        role: discord.Role,
        daily: Limit | None = None,
        concurrent: Limit | None = None,
        credits: CreditLimit | None = None,
        exempt: bool = False,
        clear: bool = False,
    ) -> None:
        """Limits for everyone with a role (the most generous role wins)."""
        await self._override(
            interaction, "role", role, role.mention, daily, concurrent, exempt, clear, credits
        )

    @app_commands.command(
        name=_("user-limit"), description=_("Give a member their own limits or exempt them")
    )
    @app_commands.rename(
        user=_("user"),
        daily=_("daily"),
        concurrent=_("concurrent"),
        credits=_("credits"),
        exempt=_("exempt"),
        clear=_("clear"),
    )
    @app_commands.describe(
        user=_("The member"),
        daily=_("Videos per 24 hours (0 = no limit)"),
        concurrent=_("Videos at once (0 = no limit)"),
        credits=_("Credits per 24 hours (0 = no limit)"),
        exempt=_("No limits at all"),
        clear=_("Remove the override instead"),
    )
    async def user_limit(
        self,
        interaction: discord.Interaction[Any],
        user: discord.User,
        daily: Limit | None = None,
        concurrent: Limit | None = None,
        credits: CreditLimit | None = None,
        exempt: bool = False,
        clear: bool = False,
    ) -> None:
        """Limits for one member (wins over their roles)."""
        await self._override(
            interaction, "user", user, user.mention, daily, concurrent, exempt, clear, credits
        )

    @app_commands.command(name=_("block"), description=_("Stop a member from making videos"))
    @app_commands.rename(user=_("user"))
    @app_commands.describe(user=_("The member"))
    async def block(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        """Block a member."""
        assert interaction.guild_id is not None
        await self.bot.store.block_user(
            interaction.guild_id, user.id, reason=f"by {interaction.user.id}"
        )
        await reply_privately(
            interaction, text(str(interaction.locale), "admin.blocked", user=user.mention)
        )

    @app_commands.command(
        name=_("unblock"), description=_("Let a blocked member make videos again")
    )
    @app_commands.rename(user=_("user"))
    @app_commands.describe(user=_("The member"))
    async def unblock(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        """Unblock a member."""
        assert interaction.guild_id is not None
        await self.bot.store.unblock_user(interaction.guild_id, user.id)
        await reply_privately(
            interaction, text(str(interaction.locale), "admin.unblocked", user=user.mention)
        )

    @app_commands.command(
        name=_("reset-usage"),
        description=_("Forget a member's videos of the last 24 hours for the quota"),
    )
    @app_commands.rename(user=_("user"))
    @app_commands.describe(user=_("The member"))
    async def reset_usage(self, interaction: discord.Interaction[Any], user: discord.User) -> None:
        """Reset a member's daily usage."""
        assert interaction.guild_id is not None
        count = await self.bot.store.reset_usage(interaction.guild_id, user.id)
        await reply_privately(
            interaction,
            text(str(interaction.locale), "admin.usage_reset", user=user.mention, count=count),
        )

    @app_commands.command(
        name=_("blocked-word"), description=_("Add or remove a word that prompts may not contain")
    )
    @app_commands.rename(word=_("word"), remove=_("remove"))
    @app_commands.describe(
        word=_("The word (leave empty to list them)"),
        remove=_("Remove the word instead of adding it"),
    )
    async def blocked_word(
        self,
        interaction: discord.Interaction[Any],
        word: app_commands.Range[str, 1, 100] | None = None,
        remove: bool = False,
    ) -> None:
        """Manage the blocked words; without a word, list them."""
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        store = self.bot.store
        if word is None:
            words = (await store.get_guild_settings(interaction.guild_id)).blocked_words
            body = (
                text(locale, "admin.words", words=", ".join(f"`{w}`" for w in words))
                if words
                else text(locale, "admin.words_none")
            )
            await reply_privately(interaction, body)
        elif remove:
            removed = await store.remove_blocked_word(interaction.guild_id, word)
            await reply_privately(
                interaction,
                text(locale, "admin.word_removed" if removed else "admin.word_unknown", word=word),
            )
        else:
            await store.add_blocked_word(interaction.guild_id, word)
            await reply_privately(interaction, text(locale, "admin.word_added", word=word))

    @app_commands.command(
        name=_("log-channel"), description=_("Post one line per video in a channel (empty = off)")
    )
    @app_commands.rename(channel=_("channel"))
    @app_commands.describe(channel=_("The channel"))
    async def log_channel(
        self, interaction: discord.Interaction[Any], channel: discord.TextChannel | None = None
    ) -> None:
        """Set or clear the task log channel."""
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        await self.bot.store.set_log_channel(interaction.guild_id, channel.id if channel else None)
        if channel is None:
            await reply_privately(interaction, text(locale, "admin.log_cleared"))
        else:
            await reply_privately(
                interaction, text(locale, "admin.log_set", channel=channel.mention)
            )

    @app_commands.command(name=_("active"), description=_("List running and queued videos"))
    async def active(self, interaction: discord.Interaction[Any]) -> None:
        """Every unfinished task of this server, with queue positions."""
        locale = str(interaction.locale)
        tasks = [t for t in await self.bot.store.unfinished() if t.guild_id == interaction.guild_id]
        if not tasks:
            await reply_privately(interaction, text(locale, "admin.active_empty"))
            return
        lines = []
        for task in tasks[:25]:
            position = (
                self.bot.engine.queue.position(task.id) if task.state is TaskState.QUEUED else None
            )
            lines.append(
                f"#{task.id} · <@{task.user_id}> · {state_text(task, position)} · {clip(task.prompt, 40)}"
            )
        if len(tasks) > 25:
            lines.append(f"… +{len(tasks) - 25}")
        embed = discord.Embed(
            title=text(locale, "admin.active_title"), description=clip("\n".join(lines), 4000)
        )
        await reply_privately(interaction, embed=embed)

    @app_commands.command(
        name=_("usage"), description=_("Usage and spend: last day, week and 30 days, with a chart")
    )
    @app_commands.rename(csv=_("csv"))
    @app_commands.describe(csv=_("Also attach every video of the last 30 days as a CSV file"))
    async def usage(self, interaction: discord.Interaction[Any], csv: bool = False) -> None:
        """Usage of the last day and week, the spend in credits (per day, top members, the
        provider's charges, the month), a chart of the daily spend and, with `csv`, the CSV."""
        assert interaction.guild_id is not None
        locale = str(interaction.locale)
        await interaction.response.defer(ephemeral=True, thinking=True)
        now = time.time()
        day = await self.bot.store.usage_summary(interaction.guild_id, now - DAY_SECONDS)
        week = await self.bot.store.usage_summary(interaction.guild_id, now - WEEK_SECONDS)
        head = text(
            locale,
            "admin.usage_body",
            day_tasks=day.tasks,
            day_users=day.distinct_users,
            day_failed=day.by_state.get(TaskState.FAILED, 0),
            week_tasks=week.tasks,
            week_users=week.distinct_users,
            week_failed=week.by_state.get(TaskState.FAILED, 0),
        )
        report = await spend_report(
            self.bot,
            interaction.guild_id,
            locale,
            now=now,
            with_csv=csv,
            upload_limit=interaction.filesize_limit,
        )
        embed = report_embed(text(locale, "admin.usage_title"), head, report)
        await reply_privately(interaction, report.csv_note, embed=embed, files=report.files)


async def setup(bot: ServiceBot) -> None:
    """Load the cog (`bot.app` loads this extension)."""
    await bot.add_cog(AdminCog(bot))
