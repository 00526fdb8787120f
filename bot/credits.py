"""Credit limits: which apply, whether a price fits, and the refusal a member reads when not.

Beside the video counts (`bot/quota.py`, unchanged) an operator may cap spend in credits
(`bot/pricing.py`): per member and per server in any 24 hours, for the whole bot in any 24 hours
and per calendar month (UTC). Every limit means what every other limit means: a number of
credits, and 0 for no limit. An exempt member skips the per-member and per-server limits; the
bot-wide ones (the key owner's spending ceiling) still apply.

The rules live here and are pure; the store applies them inside the reservation transaction:

1. it sums what already counts in each window (`window_start`), as it counts videos today;
2. `check_credits(price, limits.checks(...), spent)` says OK (None) or which limit refuses;
3. on a refusal it lists that window's counted spends and `explain` works out when enough
   frees for this price (the oldest spends leave the 24-hour window one by one; the month frees
   all at once when the next month starts), then raises `CreditsExceeded`.

A daily spend counts while `created_at > now - 24 h` (it frees at `created_at + 24 h`, like the
video counts); a monthly one while `created_at >= month_start(now)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from bot.pricing import PriceTable, format_credits, option_text, price_list_text, to_cents
from bot.quota import DAY_SECONDS
from bot.strings import text
from bot.tasks import GuildSettings

#: The share of the monthly cap at which the log channel is told (percent).
MONTHLY_ALERT_PERCENTS: tuple[int, ...] = (80, 100)


class CreditKind(StrEnum):
    """Which credit limit refused a request (compares equal to its plain string)."""

    DAILY_USER = "daily_user"
    DAILY_GUILD = "daily_guild"
    DAILY_GLOBAL = "daily_global"
    MONTHLY_GLOBAL = "monthly_global"

    @property
    def is_monthly(self) -> bool:
        """Whether the limit is per calendar month (else per rolling 24 hours)."""
        return self is CreditKind.MONTHLY_GLOBAL


class CreditDefaults(Protocol):
    """The credit limit settings (`bot.config.Settings` satisfies this); 0 = no limit."""

    @property
    def credits_daily_per_user(self) -> Decimal:
        """Credits one member may spend in any 24 hours."""
        ...

    @property
    def credits_daily_per_guild(self) -> Decimal:
        """Credits one server may spend in any 24 hours."""
        ...

    @property
    def credits_daily_global(self) -> Decimal:
        """Credits the whole bot may spend in any 24 hours."""
        ...

    @property
    def credits_monthly_global(self) -> Decimal:
        """Credits the whole bot may spend in a calendar month (UTC)."""
        ...


@dataclass(frozen=True, slots=True)
class CreditLimits:
    """The credit limits that apply to one request, in cents of a credit; None = no limit."""

    daily_per_user: int | None = None
    daily_per_guild: int | None = None
    daily_global: int | None = None
    monthly_global: int | None = None
    exempt: bool = False

    def checks(self, *, in_guild: bool) -> list[tuple[CreditKind, int]]:
        """The limits to check, in the order they are reported: member, server, bot, month."""
        out: list[tuple[CreditKind, int]] = []
        if not self.exempt:
            if self.daily_per_user:
                out.append((CreditKind.DAILY_USER, self.daily_per_user))
            if in_guild and self.daily_per_guild:
                out.append((CreditKind.DAILY_GUILD, self.daily_per_guild))
        if self.daily_global:
            out.append((CreditKind.DAILY_GLOBAL, self.daily_global))
        if self.monthly_global:
            out.append((CreditKind.MONTHLY_GLOBAL, self.monthly_global))
        return out


def _limit(value: Decimal | int | None) -> int | None:
    """A limit in credits (a setting) as cents, 0 (and None) as no limit."""
    if value is None:
        return None
    return to_cents(value) or None


def _most_generous(values: Iterable[int | None]) -> int | None:
    """The most generous of the limits that are set (0, no limit, beats any number)."""
    set_values = [v for v in values if v is not None]
    if not set_values:
        return None
    return 0 if 0 in set_values else max(set_values)


def resolve_credit_limits(
    defaults: CreditDefaults,
    guild_settings: GuildSettings | None = None,
    role_ids: Iterable[int] = (),
    user_id: int | None = None,
    *,
    exempt: bool = False,
) -> CreditLimits:
    """The credit limits for one member, most general first, each step replacing the last.

    1. The settings (CREDITS_*), in credits.
    2. The server's own per-member and per-server limits, where it set them (cents).
    3. The most generous of the member's roles that sets a per-member credit limit.
    4. The member's own override, where it sets one.
    `exempt` is the member's exemption as `bot.quota.resolve_limits` worked it out (an exempt
    role or member skips the per-member and per-server limits). The bot-wide limits come only
    from the settings; a server can't change them. 0 means no limit at every step.
    """
    per_user = _limit(defaults.credits_daily_per_user)
    per_guild = _limit(defaults.credits_daily_per_guild)
    if guild_settings is not None:
        if guild_settings.credits_daily_per_user is not None:
            per_user = guild_settings.credits_daily_per_user
        if guild_settings.credits_daily_per_guild is not None:
            per_guild = guild_settings.credits_daily_per_guild
        roles = [
            guild_settings.role_overrides[r]
            for r in set(role_ids)
            if r in guild_settings.role_overrides
        ]
        role_credits = _most_generous(o.credits_daily for o in roles)
        if role_credits is not None:
            per_user = role_credits
        user = None if user_id is None else guild_settings.user_overrides.get(user_id)
        if user is not None and user.credits_daily is not None:
            per_user = user.credits_daily
    return CreditLimits(
        daily_per_user=per_user or None,
        daily_per_guild=per_guild or None,
        daily_global=_limit(defaults.credits_daily_global),
        monthly_global=_limit(defaults.credits_monthly_global),
        exempt=exempt,
    )


# --- windows ---------------------------------------------------------------------------------


def month_start(now: float) -> float:
    """The start of the calendar month (UTC) that `now` is in, as Unix time."""
    moment = datetime.fromtimestamp(now, UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def next_month_start(now: float) -> float:
    """The start of the next calendar month (UTC), when the monthly cap frees."""
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


def month_key(now: float) -> str:
    """The calendar month (UTC) as `YYYY-MM`, e.g. to remember which alerts went out."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


def window_start(kind: CreditKind, now: float, window: float = DAY_SECONDS) -> float:
    """Where a limit's window starts: spends after it count (daily: strictly after)."""
    return month_start(now) if kind.is_monthly else now - window


# --- the check -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditRefusal:
    """Why a price doesn't fit: the limit, what counts already, and when enough frees.

    Amounts are cents of a credit. `frees_at` is when enough has left the window for this
    price, with `freed` the amount gone by then; None when it never will (the price is more
    than the limit itself) or the spends given didn't say. `mode` and `duration` are the
    request's options as asked (None = the API's default), for the message.
    """

    kind: CreditKind
    price: int
    limit: int
    spent: int
    frees_at: float | None = None
    freed: int = 0
    mode: str | None = None
    duration: str | None = None

    @property
    def left(self) -> int:
        """What can still be spent in the window (never negative)."""
        return max(self.limit - self.spent, 0)

    @property
    def never_fits(self) -> bool:
        """Whether the price is more than the limit itself (no wait makes it fit)."""
        return self.price > self.limit


class CreditsExceeded(Exception):
    """Raised by the store's reservation when a price doesn't fit a credit limit."""

    def __init__(self, refusal: CreditRefusal) -> None:
        self.refusal = refusal
        super().__init__(
            f"credits {refusal.kind.value}: a price of {refusal.price} cents with "
            f"{refusal.spent} of {refusal.limit} spent"
        )


def check_credits(
    price: int,
    checks: Iterable[tuple[CreditKind, int]],
    spent: Mapping[CreditKind, int],
    *,
    options: Mapping[str, Any] | None = None,
) -> CreditRefusal | None:
    """The first limit this price would cross (spent + price > limit), or None when it fits.

    `checks` comes from `CreditLimits.checks`, `spent` holds what counts in each of their
    windows (a missing kind counts as nothing spent). Landing exactly on a limit fits.
    `options` (the task's, with `mode` and `duration`) only name the video in the refusal.
    """
    if price < 0:
        raise ValueError("a price is never negative")
    options = options or {}
    for kind, limit in checks:
        used = spent.get(kind, 0)
        if used + price > limit:
            mode, duration = options.get("mode"), options.get("duration")
            return CreditRefusal(
                kind=kind,
                price=price,
                limit=limit,
                spent=used,
                mode=str(mode) if mode else None,
                duration=str(duration) if duration else None,
            )
    return None


def explain(
    refusal: CreditRefusal,
    spends: Iterable[tuple[float, int]],
    *,
    now: float,
    window: float = DAY_SECONDS,
) -> CreditRefusal:
    """Fill in when enough frees for the refused price, from the window's counted spends.

    `spends` are (created_at, cents) of what counts in the refusing window (any order). For a
    daily limit the oldest leave first, each at created_at + `window`; the month frees at once
    when the next one starts. Unchanged when the price never fits.
    """
    if refusal.never_fits:
        return refusal
    if refusal.kind.is_monthly:
        return replace(refusal, frees_at=next_month_start(now), freed=refusal.spent)
    needed = refusal.spent + refusal.price - refusal.limit
    ordered = sorted(spends)
    freed = 0
    for index, (created_at, cents) in enumerate(ordered):
        freed += cents
        if freed >= needed:
            # spends made at the same moment leave the window together
            freed += sum(c for t, c in ordered[index + 1 :] if t == created_at)
            return replace(refusal, frees_at=created_at + window, freed=freed)
    return refusal  # the spends given don't add up to the sum: say nothing rather than guess


def refusal_text(
    locale: str | None,
    refusal: CreditRefusal,
    table: PriceTable,
    *,
    when: Callable[[float, str], str],
) -> str:
    """The refusal a member reads, e.g. "A 10 s pro video costs 7 credits; you have 4 left
    today, 3 more free up at 18:40."

    `when(unix, style)` renders a moment for the reader (the Discord side passes its timestamp
    markup; style `t` is a time of day, `D` a date).
    """
    option = option_text(locale, refusal.mode, refusal.duration)
    price = table.amount_text(refusal.price, locale)
    if refusal.never_fits:
        return text(
            locale,
            f"credits.too_dear.{refusal.kind.value}",
            option=option,
            price=price,
            limit=table.amount_text(refusal.limit, locale),
        )
    frees = ""
    if refusal.frees_at is not None:
        if refusal.kind.is_monthly:
            frees = text(locale, "credits.frees_monthly", when=when(refusal.frees_at, "D"))
        else:
            frees = text(
                locale,
                "credits.frees_daily",
                freed=format_credits(refusal.freed, locale),
                when=when(refusal.frees_at, "t"),
            )
    return text(
        locale,
        f"credits.refused.{refusal.kind.value}",
        option=option,
        price=price,
        left=format_credits(refusal.left, locale),
        frees=frees,
    )


def quota_text(locale: str | None, table: PriceTable, limit: int | None, spent: int) -> str:
    """A member's credits for /quota: "Credits today (last 24 h): 4 of 20 left", and what
    each option costs on the next line."""
    if limit is None:
        first = text(locale, "quota.credits_unlimited")
    else:
        first = text(
            locale,
            "quota.credits_left",
            left=format_credits(max(limit - spent, 0), locale),
            limit=table.amount_text(limit, locale),
        )
    return first + "\n" + text(locale, "quota.prices", prices=price_list_text(table, locale))


# --- the monthly cap in the log channel ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreditAlert:
    """One alert of the monthly cap for one place, as claimed in the store before it is posted.

    `channel_id` 0 is the process log (no Discord channel); `message_id` is None while the post
    may or may not be out (claimed, then a crash), the message's id once it is, 0 when it was
    given up (the channel refused it) or left out (a higher threshold was announced instead).
    """

    month: str  # YYYY-MM, UTC
    percent: int
    channel_id: int
    guild_id: int | None
    spent: int  # cents of a credit, the month's spend when it was claimed
    cap: int
    started_at: float
    message_id: int | None = None

    @property
    def marker(self) -> str:
        """How the post begins, in every language: found again by it after a crash."""
        return alert_marker(self.percent, self.month)


def alert_marker(percent: int, month: str) -> str:
    """The start of an alert's post: its sign and its month (`⚠️ 2026-11 ·`)."""
    icon = "🛑" if percent >= 100 else "⚠️"
    return f"{icon} {month} ·"


def monthly_alerts_due(
    spent: int, cap: int | None, cheapest: int, already: Collection[int] = ()
) -> tuple[int, ...]:
    """The alert thresholds (percent of the monthly cap) reached and not yet announced.

    80 % is reached when the month's spend is at least 80 % of the cap; 100 % when not even the
    cheapest video fits any more (spend + cheapest > cap), since the cap is never crossed and
    spend may stop just short of it. Works from the month's total, not from one reservation,
    so it is the same question after a restart; `already` holds the thresholds announced.
    When several are due at once (a jump past 80 % straight to the end), announce the highest
    and record them all.
    """
    if not cap:
        return ()
    due: list[int] = []
    for percent in MONTHLY_ALERT_PERCENTS:
        if percent in already:
            continue
        if percent >= 100:
            reached = spent + cheapest > cap
        else:
            reached = spent * 100 >= cap * percent
        if reached:
            due.append(percent)
    return tuple(due)


def spent_percent(spent: int, cap: int) -> int:
    """The share of the cap spent, in whole percent rounded down (never shows 100 early)."""
    return math.floor(spent * 100 / cap) if cap else 0


def monthly_alert_text(
    locale: str | None,
    percent: int,
    *,
    spent: int,
    cap: int,
    now: float,
    table: PriceTable,
    when: Callable[[float, str], str],
) -> str:
    """The log-channel line for one threshold of the monthly cap, its marker first."""
    if percent >= 100:
        body = text(
            locale,
            "log.credits_month_100",
            cap=table.amount_text(cap, locale),
            spent=table.amount_text(spent, locale),
            when=when(next_month_start(now), "D"),
        )
    else:
        body = text(
            locale,
            "log.credits_month_80",
            cap=table.amount_text(cap, locale),
            spent=table.amount_text(spent, locale),
            percent=spent_percent(spent, cap),
        )
    return f"{alert_marker(percent, month_key(now))} {body}"
