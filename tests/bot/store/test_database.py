"""The seam a second backend plugs into (bot/store/database.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.credits import CreditAlert, CreditKind, CreditLimits, CreditsExceeded
from bot.pricing import PriceTable
from bot.quota import QuotaLimits
from bot.store import (
    MIGRATIONS,
    Connection,
    TaskStore,
)
from bot.store.database import Row
from bot.store.sqlite import SqliteDatabase
from bot.tasks import (
    TaskNotes,
    TaskState,
)
from tests.bot.store.helpers import (
    new_interaction,
    new_task,
)
from tests.helpers import advance

# --- the seam a second backend plugs into ------------------------------------------------------


class RecordingDatabase:
    """The SQLite database, recording every statement and transaction the store asks for."""

    def __init__(self, inner: SqliteDatabase) -> None:
        self.inner = inner
        self.statements: list[str] = []
        self.transactions: list[bool] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[RecordingConnection]:
        async with self.inner.connection() as conn:
            yield RecordingConnection(conn, self.statements)

    @asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[RecordingConnection]:
        self.transactions.append(exclusive)
        async with self.inner.transaction(exclusive=exclusive) as conn:
            yield RecordingConnection(conn, self.statements)

    async def close(self) -> None:
        await self.inner.close()


class RecordingConnection:
    def __init__(self, conn: Connection, statements: list[str]) -> None:
        self.conn = conn
        self.statements = statements

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.statements.append(sql)
        return await self.conn.fetch(sql, params)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.statements.append(sql)
        await self.conn.execute(sql, params)


async def test_the_store_speaks_portable_sql_and_only_reservations_are_exclusive() -> None:
    """What a PostgreSQL backend relies on: the store's SQL has nothing SQLite-only in it, and
    the reservation (count, then insert) is the one transaction that must not overlap another.
    """
    db = RecordingDatabase(await SqliteDatabase.open("sqlite:///:memory:", migrations=MIGRATIONS))
    async with TaskStore(db) as store:
        entry = await store.open_interaction(new_interaction())
        task = await store.reserve(
            new_task(price_cents=350),
            QuotaLimits(daily_per_user=5),
            credits=CreditLimits(
                daily_per_user=700, daily_per_guild=700, daily_global=700, monthly_global=700
            ),
            interaction=entry.id,
        )
        assert db.transactions == [True]
        with pytest.raises(CreditsExceeded):  # the refusal's own query is portable too
            await store.reserve(
                new_task(price_cents=700), QuotaLimits(), credits=CreditLimits(daily_per_user=700)
            )
        await store.hand_over(entry.id, task.id, status_message_id=1, notes=TaskNotes())
        await store.close_interaction(entry.id)
        await advance(store, task.id, TaskState.DELIVERED)
        await store.refund(task.id)
        await store.reset_usage(None, 1)
        await store.reset_usage(100, 1)
        await store.set_guild_limits(100, daily_per_user=3, credits_daily_per_user=250)
        await store.set_override(100, "role", 7, daily=2, credits_daily=100)
        await store.set_log_channel(100, 500)
        alert = CreditAlert("2026-11", 80, 500, 100, 560, 700, started_at=1.0)
        await store.claim_credit_alert(alert)
        await store.complete_credit_alert(alert, 9)
        await store.update(task.id, provider_deduction="5")
        await store.add_blocked_word(100, "bad")
        await store.block_user(100, 9)
        await store.set_meta("k", "v")
        for read in (
            store.get_guild_settings(100),
            store.unfinished(),
            store.queue(),
            store.active_for_user(1),
            store.recent_for_user(1, guild_id=100),
            store.usage(user_id=1, guild_id=100, since=0),
            store.next_slot_frees_at(1, limit=1),
            store.usage_summary(100, 0),
            store.expired_inputs(1e12),
            store.delete_older_than(0),
            store.get_meta("k"),
            store.credits_spent(CreditKind.DAILY_GUILD, guild_id=100),
            store.month_spent(),
            store.spends(0, guild_id=100),
            store.top_spenders(0),
            store.usage_rows(0, guild_id=100),
            store.price_unpriced(PriceTable.default().price_of_options),
            store.log_channels(),
            store.credit_alerts(),
        ):
            await read
    assert db.transactions[:2] == [True, True] and not any(db.transactions[2:])
    sqlite_only = re.compile(r"PRAGMA|json_|AUTOINCREMENT|BEGIN|\bIS \?|\bGLOB\b", re.I)
    assert len(db.statements) > 30
    assert [sql for sql in db.statements if sqlite_only.search(sql)] == []
