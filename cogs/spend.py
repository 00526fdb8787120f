"""What a server spent, as `/kling-admin usage` shows it: credits per day, the top members, our
prices beside the provider's charges, the bot's month against its cap, a chart of the daily
spend (PNG) and, when asked, every video of the period as a CSV file for accounting.

Days are UTC days, like the monthly cap and the CSV's times: "the last 7 days" are today and
the six UTC days before it. Amounts count what was spent (refunded videos don't).
"""

from __future__ import annotations

import asyncio
import gzip
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import discord

from bot.charts import spend_chart_png
from bot.credits import CreditKind, resolve_credit_limits
from bot.pricing import PriceTable
from bot.strings import text
from bot.usage import daily_totals, provider_drift, usage_csv, utc_day
from cogs.messages import clip
from cogs.services import ServiceBot

#: The periods the report sums, in UTC days; the chart and the CSV cover the longest.
SHORT_DAYS = 7
LONG_DAYS = 30
TOP_MEMBERS = 5
CHART_NAME = "spend.png"


@dataclass
class SpendReport:
    """The report's text, and the files that go with it (the chart, the CSV when asked)."""

    lines: list[str]
    files: list[discord.File]
    csv_note: str | None = None


def day_start(day: date) -> float:
    """The first moment of a UTC day, as Unix time."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


async def spend_report(
    bot: ServiceBot,
    guild_id: int,
    locale: str,
    *,
    now: float,
    with_csv: bool = False,
    upload_limit: int = 10 * 1024 * 1024,
) -> SpendReport:
    """Build the spend part of `/kling-admin usage` for one server."""
    store = bot.store
    prices = bot.settings.price_table()
    today = utc_day(now)
    first_long = today - timedelta(days=LONG_DAYS - 1)
    first_short = today - timedelta(days=SHORT_DAYS - 1)
    since_long, since_short = day_start(first_long), day_start(first_short)
    spends = await store.spends(since_long, guild_id=guild_id)
    days = daily_totals(spends, last_day=today, days=LONG_DAYS)
    lines: list[str] = []
    for period, since in ((SHORT_DAYS, since_short), (LONG_DAYS, since_long)):
        counted = [cents for at, cents in spends if at >= since]
        lines.append(
            text(
                locale,
                "admin.spend_days",
                days=period,
                spent=prices.amount_text(sum(counted), locale),
                tasks=len(counted),
            )
        )
    lines.append(text(locale, "admin.spend_per_day"))
    for day, cents in reversed(days[-SHORT_DAYS:]):
        lines.append(
            text(
                locale, "admin.spend_day", day=day.isoformat(), spent=_amount(prices, cents, locale)
            )
        )
    for period, since in ((SHORT_DAYS, since_short), (LONG_DAYS, since_long)):
        top = await store.top_spenders(since, guild_id=guild_id, limit=TOP_MEMBERS)
        members = ", ".join(
            text(
                locale,
                "admin.spend_member",
                user=f"<@{user_id}>",
                spent=prices.amount_text(cents, locale),
            )
            for user_id, cents in top
        )
        lines.append(text(locale, "admin.spend_top", days=period, members=members or "—"))
    rows = await store.usage_rows(since_long, guild_id=guild_id)
    drift = provider_drift(rows)
    if drift.tasks:
        lines.append(
            text(
                locale,
                "admin.spend_provider",
                tasks=drift.tasks,
                deducted=f"{drift.deducted.normalize():f}",
                ours=prices.amount_text(drift.ours, locale),
            )
        )
    else:
        lines.append(text(locale, "admin.spend_provider_none"))
    month_cap = resolve_credit_limits(bot.settings).monthly_global
    month = await store.credits_spent(CreditKind.MONTHLY_GLOBAL)
    if month_cap:
        lines.append(
            text(
                locale,
                "admin.spend_month",
                spent=prices.amount_text(month, locale),
                cap=prices.amount_text(month_cap, locale),
            )
        )
    else:
        lines.append(
            text(locale, "admin.spend_month_uncapped", spent=prices.amount_text(month, locale))
        )

    guild_settings = await store.get_guild_settings(guild_id)
    daily_cap = resolve_credit_limits(bot.settings, guild_settings).daily_per_guild
    chart = await asyncio.to_thread(_chart, days, prices, locale, daily_cap)
    files = [discord.File(io.BytesIO(chart), filename=CHART_NAME)]
    note = None
    if with_csv:
        name = f"usage-{guild_id}-{today.isoformat()}.csv"
        data = usage_csv(rows)
        if len(data) > upload_limit:
            data, name = gzip.compress(data, mtime=0), name + ".gz"
        if len(data) <= upload_limit:
            files.append(discord.File(io.BytesIO(data), filename=name))
            note = text(locale, "admin.spend_csv", days=LONG_DAYS)
        else:
            note = text(locale, "admin.spend_csv_too_big", days=LONG_DAYS)
    return SpendReport(lines=lines, files=files, csv_note=note)


def _amount(prices: PriceTable, cents: int, locale: str) -> str:
    """An amount of a day: a dash for nothing spent."""
    return prices.amount_text(cents, locale) if cents else "—"


def _chart(days: list[tuple[date, int]], prices: PriceTable, locale: str, cap: int | None) -> bytes:
    """The chart of the daily spend, with the server's daily credit limit as its cap line."""
    cap_label = (
        None if not cap else text(locale, "chart.cap", limit=prices.amount_text(cap, locale))
    )
    return spend_chart_png(
        days, title=text(locale, "chart.title"), cap=cap, cap_label=cap_label, locale=locale
    )


def report_embed(title: str, head: str, report: SpendReport) -> discord.Embed:
    """The usage embed: the counts, the spend lines, the chart as its picture."""
    body = head + "\n\n" + "\n".join(report.lines)
    embed = discord.Embed(title=title, description=clip(body, 4000))
    embed.set_image(url=f"attachment://{CHART_NAME}")
    return embed
