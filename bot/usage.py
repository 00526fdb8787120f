"""Usage for accounting: one row per task, spend per day, and the CSV an admin downloads.

The CSV follows RFC 4180 (the `csv` module: commas, CRLF line ends, quotes doubled) and holds
no free text at all: no prompt, no name, only ids, fixed words and numbers. Should a cell ever
start with a character a spreadsheet reads as a formula (= + - @, a tab or a carriage return),
it is neutralised with a leading apostrophe, so an export opened in a spreadsheet never runs
anything.

Times are UTC, ISO-8601 (`2026-11-05T14:03:22Z`); days are UTC days, like the monthly cap.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from bot.pricing import DEFAULT_DURATION, DEFAULT_MODE, to_credits

#: The CSV's columns, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "created_at_utc",
    "task_id",
    "guild_id",
    "user_id",
    "mode",
    "duration_s",
    "price_credits",
    "provider_deduction",
    "state",
    "quota",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class Counted(StrEnum):
    """Whether a task's price counts against the limits."""

    COUNTED = "counted"  # it counts
    REFUNDED = "refunded"  # given back by the refund policy
    RESET = "reset"  # an admin's /kling-admin reset-usage


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One task as accounting sees it (the store builds these from its rows).

    `price` is our price in cents of a credit, None for a task reserved before prices
    existed; `provider_deduction` is what the provider said it deducted, as it said it
    (normalised by `bot.pricing.provider_deduction`), or None.
    """

    created_at: float
    task_id: int
    guild_id: int | None
    user_id: int
    mode: str | None
    duration: str | None
    price: int | None
    provider_deduction: str | None
    state: str
    counted: Counted


def iso_utc(unix: float) -> str:
    """A moment as ISO-8601 in UTC to the second: `2026-11-05T14:03:22Z`."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_day(unix: float) -> date:
    """The UTC day a moment falls on."""
    return datetime.fromtimestamp(unix, UTC).date()


def neutralise(cell: str) -> str:
    """A cell a spreadsheet can't take for a formula (a leading apostrophe where needed)."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _cells(row: UsageRow) -> list[str]:
    return [
        iso_utc(row.created_at),
        str(row.task_id),
        "" if row.guild_id is None else str(row.guild_id),
        str(row.user_id),
        row.mode or DEFAULT_MODE,
        str(row.duration or DEFAULT_DURATION),
        "" if row.price is None else f"{to_credits(row.price):f}",
        row.provider_deduction or "",
        str(row.state),
        str(row.counted),
    ]


def usage_csv(rows: Iterable[UsageRow]) -> bytes:
    """The rows as an RFC 4180 CSV file in UTF-8, a header line first."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([neutralise(cell) for cell in _cells(row)])
    return out.getvalue().encode("utf-8")


def daily_totals(
    spends: Iterable[tuple[float, int]], *, last_day: date, days: int
) -> list[tuple[date, int]]:
    """Spend per UTC day for the `days` days ending with `last_day`, zero days included.

    `spends` are (created_at, cents); those outside the range are left out. Oldest first,
    ready for `bot.charts.spend_chart_png`.
    """
    if days < 1:
        raise ValueError("at least one day")
    first_day = last_day - timedelta(days=days - 1)
    totals = {first_day + timedelta(days=i): 0 for i in range(days)}
    for created_at, cents in spends:
        day = utc_day(created_at)
        if day in totals:
            totals[day] += cents
    return list(totals.items())


@dataclass(frozen=True, slots=True)
class ProviderDrift:
    """Our prices beside what the provider said it deducted, over the tasks where it said."""

    tasks: int  # tasks with a provider deduction
    deducted: Decimal  # the provider's own units, summed exactly
    ours: int  # our price for those same tasks, cents of a credit


def provider_drift(rows: Iterable[UsageRow]) -> ProviderDrift:
    """Sum the provider's deductions and our prices over the rows where both are known."""
    tasks, deducted, ours = 0, Decimal(0), 0
    for row in rows:
        if row.provider_deduction is None or row.price is None:
            continue
        try:
            amount = Decimal(row.provider_deduction)
        except InvalidOperation:
            continue
        if not amount.is_finite():
            continue
        tasks += 1
        deducted += amount
        ours += row.price
    return ProviderDrift(tasks=tasks, deducted=deducted, ours=ours)
