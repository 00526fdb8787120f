"""Quota rules: how many videos a person may start, and when a reservation is given back.

Refund policy: a task the API refused at submit, or that failed at the provider, gives its quota back;
so does one that timed out before it reached the provider. A task that was delivered, or that timed
out at the provider (which may still have done the work), keeps it.
Validation errors never reserve quota: images and prompt are checked before anything is reserved.

The rules live here; `TaskStore.reserve` (bot/store) applies them atomically with the task insert.
Every limit, wherever it is set (QUOTA_* settings, `/kling-admin limits`, a role's or a member's
override), means the same: a positive number is the limit, 0 means no limit. (To stop someone
making videos, block them; to stop a server, take the bot's permissions away there.)

Daily limits are a rolling 24-hour window; the concurrent limit counts a user's tasks that are not
finished yet (queued, submitting, submitted, processing). A user's daily and concurrent usage is
counted across every guild and DM (the bot has one provider account); the guild limit counts the
guild's tasks and the global limit every task.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from bot.tasks import GuildSettings, QuotaOverride, TaskState

#: A day in seconds: the window of every daily limit.
DAY_SECONDS = 86_400.0


class QuotaKind(StrEnum):
    """Which limit refused a reservation (compares equal to its plain string)."""

    DAILY_USER = "daily_user"
    CONCURRENT_USER = "concurrent_user"
    DAILY_GUILD = "daily_guild"
    DAILY_GLOBAL = "daily_global"
    BLOCKED = "blocked"


class QuotaExceeded(Exception):
    """Raised by `TaskStore.reserve` when a limit is reached; carries what the user is told."""

    def __init__(
        self, kind: QuotaKind | str, used: int, limit: int, next_free_at: float | None = None
    ) -> None:
        self.kind = QuotaKind(kind)
        self.used = used
        self.limit = limit
        self.next_free_at = next_free_at
        super().__init__(f"quota {self.kind.value}: used {used} of {limit}")


class QuotaDefaults(Protocol):
    """The global quota settings (`bot.config.Settings` satisfies this)."""

    @property
    def quota_daily_per_user(self) -> int:
        """Videos per user per rolling 24 h; 0 = unlimited."""
        ...

    @property
    def quota_concurrent_per_user(self) -> int:
        """Unfinished tasks per user at once; 0 = unlimited."""
        ...

    @property
    def quota_daily_per_guild(self) -> int:
        """Videos per guild per rolling 24 h; 0 = unlimited."""
        ...

    @property
    def quota_daily_global(self) -> int:
        """Videos for the whole bot per rolling 24 h; 0 = unlimited."""
        ...


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """The limits that apply to one request.

    None means unlimited (`resolve_limits` turns every 0 into None; `checks` also skips a 0).
    An exempt user skips the per-user and per-guild limits; the global cap (the operator's
    spending ceiling) still applies, and a blocked user is refused regardless.
    """

    daily_per_user: int | None = None
    concurrent_per_user: int | None = None
    daily_per_guild: int | None = None
    daily_global: int | None = None
    exempt: bool = False

    def checks(self, *, in_guild: bool) -> list[tuple[QuotaKind, int]]:
        """The limits to check, in the order they are reported: concurrent, user, guild, global."""
        out: list[tuple[QuotaKind, int]] = []
        if not self.exempt:
            if self.concurrent_per_user:
                out.append((QuotaKind.CONCURRENT_USER, self.concurrent_per_user))
            if self.daily_per_user:
                out.append((QuotaKind.DAILY_USER, self.daily_per_user))
            if in_guild and self.daily_per_guild:
                out.append((QuotaKind.DAILY_GUILD, self.daily_per_guild))
        if self.daily_global:
            out.append((QuotaKind.DAILY_GLOBAL, self.daily_global))
        return out


def _most_generous(values: Iterable[int | None]) -> int | None:
    """The most generous of the limits that are set (0, no limit, beats any number), or None
    when none is set."""
    set_values = [v for v in values if v is not None]
    if not set_values:
        return None
    return 0 if 0 in set_values else max(set_values)


def resolve_limits(
    settings_defaults: QuotaDefaults,
    guild_settings: GuildSettings | None,
    role_ids: Iterable[int],
    user_id: int,
) -> QuotaLimits:
    """Work out the limits for one user, most general first, each step replacing the last.

    1. Global defaults from Settings (QUOTA_*).
    2. The guild's own limits, where the guild set them (NULL = keep the default).
    3. Role overrides for the user's roles: an exempt role makes the user exempt; otherwise for
       each of daily/concurrent the most generous role that sets it replaces the value.
    4. A user override wins over everything from roles: it sets daily/concurrent where given,
       and its `exempt` flag decides exemption (so a user override can undo an exempt role).
    The global daily cap comes only from Settings; guilds cannot change it. At every step a
    limit of 0 means no limit; the result says so with None.
    """
    daily: int | None = settings_defaults.quota_daily_per_user
    concurrent: int | None = settings_defaults.quota_concurrent_per_user
    per_guild: int | None = settings_defaults.quota_daily_per_guild
    global_cap: int | None = settings_defaults.quota_daily_global
    exempt = False

    if guild_settings is not None:
        if guild_settings.daily_per_user is not None:
            daily = guild_settings.daily_per_user
        if guild_settings.concurrent_per_user is not None:
            concurrent = guild_settings.concurrent_per_user
        if guild_settings.daily_per_guild is not None:
            per_guild = guild_settings.daily_per_guild

        roles: list[QuotaOverride] = [
            guild_settings.role_overrides[r]
            for r in set(role_ids)
            if r in guild_settings.role_overrides
        ]
        if any(o.exempt for o in roles):
            exempt = True
        role_daily = _most_generous(o.daily for o in roles)
        role_concurrent = _most_generous(o.concurrent for o in roles)
        if role_daily is not None:
            daily = role_daily
        if role_concurrent is not None:
            concurrent = role_concurrent

        user = guild_settings.user_overrides.get(user_id)
        if user is not None:
            exempt = user.exempt
            if user.daily is not None:
                daily = user.daily
            if user.concurrent is not None:
                concurrent = user.concurrent

    return QuotaLimits(
        daily_per_user=daily or None,
        concurrent_per_user=concurrent or None,
        daily_per_guild=per_guild or None,
        daily_global=global_cap or None,
        exempt=exempt,
    )


def refund_due(state: TaskState, *, reached_provider: bool = True) -> bool:
    """Whether a task that ended in `state` gives its quota back (see the refund policy)."""
    if state is TaskState.FAILED:
        return True
    return state is TaskState.TIMED_OUT and not reached_provider


def find_blocked_word(prompt: str, blocked_words: Iterable[str]) -> str | None:
    """The first blocked word/phrase in the prompt (case-insensitive, whole words, any spacing)."""
    text = prompt.casefold()
    for word in blocked_words:
        parts = word.casefold().split()
        if not parts:
            continue
        pattern = r"\s+".join(re.escape(p) for p in parts)
        if re.search(rf"(?<!\w){pattern}(?!\w)", text):
            return word
    return None
