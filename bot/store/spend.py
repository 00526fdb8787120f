"""What was spent, in credits: what is left of a limit, the reports an admin reads, the
pricing of rows from before prices existed, and the monthly cap's alerts.

Every amount is whole cents of a credit (`bot.pricing`), summed from each task's own
`price_cents`, so a price change never changes what a task cost. Reports count what was spent
(`SPENT`: not refunded); an admin's reset frees a member's quota but the money stays spent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.credits import CreditAlert, CreditKind, month_key
from bot.quota import DAY_SECONDS
from bot.store.reservations import credit_scope
from bot.store.rows import SPENT, Rows
from bot.tasks import TaskOptions
from bot.usage import Counted, UsageRow

_ALERT_COLUMNS = (
    "month, percent, channel_id, guild_id, spent_cents, cap_cents, started_at, message_id"
)


class SpendRows(Rows):
    """Credits spent, the usage reports and the monthly cap's alerts."""

    async def credits_spent(
        self,
        kind: CreditKind,
        *,
        user_id: int = 0,
        guild_id: int | None = None,
        window: float = DAY_SECONDS,
    ) -> int:
        """What counts now against one credit limit (the reservation's own sum)."""
        where, params = credit_scope(kind, user_id, guild_id, self._now(), window)
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT COALESCE(SUM(price_cents), 0) FROM tasks WHERE {where}", params
            )
        return int(rows[0][0])

    async def month_spent(self) -> int:
        """What the whole bot spent this calendar month (UTC), in cents of a credit."""
        return await self.credits_spent(CreditKind.MONTHLY_GLOBAL)

    async def price_unpriced(self, price_of: Callable[[TaskOptions], int]) -> int:
        """Give every task from before prices existed its price, once; returns how many.

        `price_of` prices a task's options (the operator's table at start-up). A task that has
        a price keeps it: only NULL prices are written.
        """
        async with self._db.transaction() as conn:
            rows = await conn.fetch("SELECT id, options FROM tasks WHERE price_cents IS NULL")
            for task_id, options in rows:
                price = price_of(TaskOptions.from_json(json.loads(options)))
                await conn.execute(
                    "UPDATE tasks SET price_cents = ? WHERE id = ? AND price_cents IS NULL",
                    (price, task_id),
                )
        return len(rows)

    # --- reports -------------------------------------------------------------------------------

    async def spends(self, since: float, *, guild_id: int | None = None) -> list[tuple[float, int]]:
        """(created_at, cents) of every priced task spent since `since` (a guild's, or all)."""
        where, params = _since(since, guild_id)
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT created_at, price_cents FROM tasks WHERE {where} AND {SPENT} "
                "AND price_cents > 0 ORDER BY created_at, id",
                params,
            )
        return [(float(at), int(cents)) for at, cents in rows]

    async def top_spenders(
        self, since: float, *, guild_id: int | None = None, limit: int = 5
    ) -> list[tuple[int, int]]:
        """The members who spent most since `since`, as (user id, cents), most first."""
        where, params = _since(since, guild_id)
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT user_id, SUM(price_cents) AS spent FROM tasks "
                f"WHERE {where} AND {SPENT} AND price_cents > 0 "
                "GROUP BY user_id ORDER BY spent DESC, user_id LIMIT ?",
                [*params, limit],
            )
        return [(int(user_id), int(cents)) for user_id, cents in rows]

    async def usage_rows(self, since: float, *, guild_id: int | None = None) -> list[UsageRow]:
        """Every task created since `since` (a guild's, or all), oldest first, for accounting."""
        where, params = _since(since, guild_id)
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT created_at, id, guild_id, user_id, options, price_cents, "
                "provider_deduction, state, quota_refunded, quota_reset_at "
                f"FROM tasks WHERE {where} ORDER BY created_at, id",
                params,
            )
        return [_usage_row(row) for row in rows]

    # --- the monthly cap's alerts --------------------------------------------------------------

    async def log_channels(self) -> list[tuple[int, int]]:
        """(guild id, channel id) of every server's log channel."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT guild_id, log_channel_id FROM guild_settings "
                "WHERE log_channel_id IS NOT NULL ORDER BY guild_id"
            )
        return [(int(guild_id), int(channel_id)) for guild_id, channel_id in rows]

    async def credit_alerts(self, now: float | None = None) -> list[CreditAlert]:
        """The monthly cap's alerts claimed for the month of `now` (default: the store's now)."""
        month = month_key(self._now() if now is None else now)
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_ALERT_COLUMNS} FROM credit_alerts WHERE month = ? "
                "ORDER BY percent, channel_id",
                (month,),
            )
        return [_alert(row) for row in rows]

    async def claim_credit_alert(self, alert: CreditAlert) -> bool:
        """Claim one alert before it is posted; False when it was claimed already."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"INSERT INTO credit_alerts ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING RETURNING percent",
                (
                    alert.month,
                    alert.percent,
                    alert.channel_id,
                    alert.guild_id,
                    alert.spent,
                    alert.cap,
                    alert.started_at,
                    alert.message_id,
                ),
            )
        return bool(rows)

    async def complete_credit_alert(self, alert: CreditAlert, message_id: int) -> None:
        """Record that a claimed alert is out (`message_id`), or given up or left out (0)."""
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE credit_alerts SET message_id = ? "
                "WHERE month = ? AND percent = ? AND channel_id = ? AND message_id IS NULL",
                (message_id, alert.month, alert.percent, alert.channel_id),
            )


def _since(since: float, guild_id: int | None) -> tuple[str, list[Any]]:
    """The WHERE clause of the tasks created since `since`, in one guild or anywhere."""
    if guild_id is None:
        return "created_at >= ?", [since]
    return "guild_id = ? AND created_at >= ?", [guild_id, since]


def _usage_row(row: Any) -> UsageRow:
    created_at, task_id, guild_id, user_id, options, price, deduction, state = row[:8]
    refunded, reset_at = row[8], row[9]
    stored = TaskOptions.from_json(json.loads(options))
    if refunded:
        counted = Counted.REFUNDED
    elif reset_at is not None:
        counted = Counted.RESET
    else:
        counted = Counted.COUNTED
    return UsageRow(
        created_at=float(created_at),
        task_id=int(task_id),
        guild_id=None if guild_id is None else int(guild_id),
        user_id=int(user_id),
        mode=stored.mode,
        duration=stored.duration,
        price=None if price is None else int(price),
        provider_deduction=deduction,
        state=str(state),
        counted=counted,
    )


def _alert(row: Any) -> CreditAlert:
    month, percent, channel_id, guild_id, spent, cap, started_at, message_id = row
    return CreditAlert(
        month=str(month),
        percent=int(percent),
        channel_id=int(channel_id),
        guild_id=None if guild_id is None else int(guild_id),
        spent=int(spent),
        cap=int(cap),
        started_at=float(started_at),
        message_id=None if message_id is None else int(message_id),
    )
