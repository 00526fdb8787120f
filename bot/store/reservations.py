"""Quota accounting on the task rows: the reservation (every limit checked and the task
inserted in one transaction), the usage counts, refunds and an admin's reset.

A task counts against the daily limits while `quota_refunded` is 0 and `quota_reset_at` is
NULL. `refund` sets the first (the engine's policy refunds); `reset_usage` sets the second (an
admin's reset), so the two stay distinguishable. The rules themselves are `bot.quota`'s, and
for credits `bot.credits`': the price a task reserved is its `price_cents`, so a refund gives
back exactly that, in credits too. A member's and a server's credits count like their videos
(`COUNTED`); the bot-wide credit limits count what was spent (`SPENT`: an admin's reset frees
a member's quota, never the key owner's money).
"""

from __future__ import annotations

from typing import Any

from bot.credits import (
    CreditKind,
    CreditLimits,
    CreditsExceeded,
    check_credits,
    explain,
    window_start,
)
from bot.quota import DAY_SECONDS, QuotaExceeded, QuotaKind, QuotaLimits
from bot.store.database import Connection, StoreError
from bot.store.interactions import IntakeStage
from bot.store.rows import (
    ACTIVE_SQL,
    COUNTED,
    RETURNING_TASK,
    SPENT,
    Rows,
    TaskNotFound,
    options_json,
    task_from_row,
)
from bot.tasks import NewTask, Task, TaskState


class ReservationRows(Rows):
    """Reservations, usage and refunds (see the module docstring)."""

    async def reserve(
        self,
        new_task: NewTask,
        limits: QuotaLimits,
        *,
        credits: CreditLimits | None = None,
        window: float = DAY_SECONDS,
        interaction: int | None = None,
    ) -> Task:
        """Check every quota and insert the `queued` task in one transaction, or raise.

        Raises `QuotaExceeded` (kind `blocked` first, then the limit that bites in the order
        concurrent, user daily, guild daily, global daily), then `CreditsExceeded` when the
        task's price (`new_task.price_cents`) doesn't fit a credit limit in `credits` (member,
        server, bot per day, bot per month; with when enough frees), and leaves the database
        unchanged. With `interaction` (an open interaction's id, stage `received`), the same
        transaction links the task to it and moves it to `reserved`, so a crash can never leave
        a task that its request doesn't know of (nor reserve twice for one request).
        """
        if new_task.price_cents < 0:
            raise ValueError("a price is never negative")
        options = options_json(new_task.options, new_task.notes)
        now = self._now()
        since = now - window
        user_id, guild_id = new_task.user_id, new_task.guild_id
        checks = limits.checks(in_guild=guild_id is not None)
        credit_checks = [] if credits is None else credits.checks(in_guild=guild_id is not None)

        selects = [
            "EXISTS (SELECT 1 FROM blocked_users WHERE guild_id = ? AND user_id = ?)"
            if guild_id is not None
            else "0"
        ]
        params: list[Any] = [guild_id, user_id] if guild_id is not None else []
        for kind, _limit in checks:
            sql, scope_params = _usage_sql(kind, user_id, guild_id, since)
            selects.append(f"({sql})")
            params.extend(scope_params)
        for credit_kind, _limit in credit_checks:
            where, scope_params = credit_scope(credit_kind, user_id, guild_id, now, window)
            selects.append(f"(SELECT COALESCE(SUM(price_cents), 0) FROM tasks WHERE {where})")
            params.extend(scope_params)

        async with self._db.transaction(exclusive=True) as conn:
            counts = (await conn.fetch(f"SELECT {', '.join(selects)}", params))[0]
            if counts[0]:
                raise QuotaExceeded(QuotaKind.BLOCKED, 0, 0, None)
            for (kind, limit), used in zip(checks, counts[1 : 1 + len(checks)], strict=True):
                if used >= limit:
                    next_free = await _next_free(conn, kind, user_id, guild_id, since, used, limit)
                    raise QuotaExceeded(
                        kind, used, limit, None if next_free is None else next_free + window
                    )
            spent = {
                kind: int(value)
                for (kind, _limit), value in zip(
                    credit_checks, counts[1 + len(checks) :], strict=True
                )
            }
            refusal = check_credits(
                new_task.price_cents, credit_checks, spent, options=new_task.options.to_json()
            )
            if refusal is not None:
                where, scope_params = credit_scope(refusal.kind, user_id, guild_id, now, window)
                spends = await conn.fetch(
                    f"SELECT created_at, price_cents FROM tasks WHERE {where} "
                    "AND price_cents > 0 ORDER BY created_at, id",
                    scope_params,
                )
                raise CreditsExceeded(
                    explain(
                        refusal,
                        ((float(at), int(cents)) for at, cents in spends),
                        now=now,
                        window=window,
                    )
                )
            inserted = await conn.fetch(
                f"""INSERT INTO tasks (external_task_id, user_id, guild_id, channel_id,
                        status_message_id, thread_id, locale, prompt, options, image_count,
                        input_dir, state, callback_token, upload_limit, created_at, updated_at,
                        price_cents)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {RETURNING_TASK}""",
                (
                    new_task.external_task_id,
                    user_id,
                    guild_id,
                    new_task.channel_id,
                    new_task.status_message_id,
                    new_task.thread_id,
                    new_task.locale,
                    new_task.prompt,
                    options,
                    new_task.image_count,
                    new_task.input_dir,
                    TaskState.QUEUED.value,
                    new_task.callback_token,
                    new_task.upload_limit,
                    now,
                    now,
                    new_task.price_cents,
                ),
            )
            row = inserted[0]
            if interaction is not None:
                linked = await conn.fetch(
                    "UPDATE open_interactions SET stage = ?, task_id = ?, updated_at = ? "
                    "WHERE id = ? AND stage = ? RETURNING id",
                    (
                        IntakeStage.RESERVED.value,
                        row[0],
                        now,
                        interaction,
                        IntakeStage.RECEIVED.value,
                    ),
                )
                if not linked:
                    raise StoreError(f"interaction {interaction} is not waiting for a reservation")
        return task_from_row(row)

    async def refund(self, task_id: int) -> bool:
        """Give a task's quota back (idempotent); True when this call changed it."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "UPDATE tasks SET quota_refunded = 1, updated_at = ? "
                "WHERE id = ? AND quota_refunded = 0 RETURNING id",
                (self._now(), task_id),
            )
            if rows:
                return True
            exists = await conn.fetch("SELECT 1 FROM tasks WHERE id = ?", (task_id,))
        if not exists:
            raise TaskNotFound(task_id)
        return False

    async def usage(
        self, *, user_id: int | None = None, guild_id: int | None = None, since: float
    ) -> int:
        """How many tasks created after `since` count against quota (not refunded or reset).

        With `user_id` the user's (everywhere), with `guild_id` the guild's, with both the
        user's in that guild, with neither every task.
        """
        where = [f"created_at > ? AND {COUNTED}"]
        params: list[Any] = [since]
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if guild_id is not None:
            where.append("guild_id = ?")
            params.append(guild_id)
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT COUNT(*) FROM tasks WHERE {' AND '.join(where)}", params
            )
        return int(rows[0][0])

    async def next_slot_frees_at(
        self, user_id: int, window: float = DAY_SECONDS, *, limit: int | None = None
    ) -> float | None:
        """When the user's daily usage next drops (below `limit`, if given), or None if never."""
        since = self._now() - window
        async with self._db.connection() as conn:
            if limit is None:
                used, offset = 1, 0
            else:
                sql, params = _usage_sql(QuotaKind.DAILY_USER, user_id, None, since)
                used = int((await conn.fetch(sql, params))[0][0])
                offset = max(used - limit, 0)
            if used == 0:
                return None
            oldest = await _nth_counted(conn, QuotaKind.DAILY_USER, user_id, None, since, offset)
        return None if oldest is None else oldest + window

    async def reset_usage(
        self, guild_id: int | None, user_id: int, *, window: float = DAY_SECONDS
    ) -> int:
        """Stop the user's tasks in this guild from the last `window` counting; returns how many.

        Sets `quota_reset_at` on them (not `quota_refunded`, which stays the engine's policy
        refund). Tasks still running keep their concurrent slot: that limit counts real work.
        """
        now = self._now()
        in_guild = "guild_id IS NULL" if guild_id is None else "guild_id = ?"
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"UPDATE tasks SET quota_reset_at = ?, updated_at = ? "
                f"WHERE user_id = ? AND {in_guild} AND created_at > ? AND {COUNTED} "
                "RETURNING id",
                [now, now, user_id, *([] if guild_id is None else [guild_id]), now - window],
            )
        return len(rows)


def credit_scope(
    kind: CreditKind, user_id: int, guild_id: int | None, now: float, window: float
) -> tuple[str, list[Any]]:
    """The WHERE clause of the tasks whose prices count for one credit limit."""
    since = window_start(kind, now, window)
    if kind is CreditKind.DAILY_USER:
        return f"user_id = ? AND created_at > ? AND {COUNTED}", [user_id, since]
    if kind is CreditKind.DAILY_GUILD:
        return f"guild_id = ? AND created_at > ? AND {COUNTED}", [guild_id, since]
    if kind is CreditKind.DAILY_GLOBAL:
        return f"created_at > ? AND {SPENT}", [since]
    return f"created_at >= ? AND {SPENT}", [since]  # the calendar month


def _usage_sql(
    kind: QuotaKind, user_id: int, guild_id: int | None, since: float
) -> tuple[str, list[Any]]:
    """The COUNT query for one quota kind and its parameters."""
    if kind is QuotaKind.CONCURRENT_USER:
        return (
            f"SELECT COUNT(*) FROM tasks WHERE user_id = ? AND state IN ({ACTIVE_SQL})",
            [user_id],
        )
    where, params = _daily_scope(kind, user_id, guild_id, since)
    return f"SELECT COUNT(*) FROM tasks WHERE {where}", params


def _daily_scope(
    kind: QuotaKind, user_id: int, guild_id: int | None, since: float
) -> tuple[str, list[Any]]:
    """The WHERE clause of the tasks that count for one daily quota kind."""
    if kind is QuotaKind.DAILY_USER:
        return f"user_id = ? AND created_at > ? AND {COUNTED}", [user_id, since]
    if kind is QuotaKind.DAILY_GUILD:
        return f"guild_id = ? AND created_at > ? AND {COUNTED}", [guild_id, since]
    if kind is QuotaKind.DAILY_GLOBAL:
        return f"created_at > ? AND {COUNTED}", [since]
    raise ValueError(f"{kind} is not a daily quota")


async def _nth_counted(
    conn: Connection,
    kind: QuotaKind,
    user_id: int,
    guild_id: int | None,
    since: float,
    offset: int,
) -> float | None:
    """created_at of the (offset+1)-th oldest counted task in a daily scope, or None."""
    where, params = _daily_scope(kind, user_id, guild_id, since)
    rows = await conn.fetch(
        f"SELECT created_at FROM tasks WHERE {where} ORDER BY created_at LIMIT 1 OFFSET ?",
        [*params, offset],
    )
    return float(rows[0][0]) if rows else None


async def _next_free(
    conn: Connection,
    kind: QuotaKind,
    user_id: int,
    guild_id: int | None,
    since: float,
    used: int,
    limit: int,
) -> float | None:
    """created_at of the task whose ageing out brings usage below `limit` (None if unknown)."""
    if kind is QuotaKind.CONCURRENT_USER:
        return None  # frees when a task finishes, which has no known time
    return await _nth_counted(conn, kind, user_id, guild_id, since, used - limit)
