"""Tests of bot.store: schema, migrations, task rows, atomic quota reservations, crash safety."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.quota import QuotaExceeded, QuotaKind, QuotaLimits
from bot.store import (
    MIGRATIONS,
    Connection,
    IntakeStage,
    InteractionKind,
    MigrationError,
    NewOpenInteraction,
    StaleTransition,
    StoreError,
    TaskNotFound,
    TaskStore,
)
from bot.store.database import Row
from bot.store.sqlite import SqliteDatabase
from bot.tasks import (
    ACTIVE,
    FINISHED,
    TERMINAL,
    TRANSITIONS,
    NewTask,
    ResultWhere,
    Task,
    TaskNotes,
    TaskOptions,
    TaskState,
)
from tests.helpers import advance

DAY = 86_400.0
UNLIMITED = QuotaLimits()


class Clock:
    """A settable clock for the store's `now`."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def new_task(user_id: int = 1, guild_id: int | None = 100, **kw: Any) -> NewTask:
    """A valid NewTask with overridable fields."""
    values: dict[str, Any] = {
        "user_id": user_id,
        "guild_id": guild_id,
        "channel_id": 200,
        "locale": "en-US",
        "prompt": "a cat turns into a dog",
        "options": TaskOptions(duration="5", mode="std", aspect_ratio="16:9", cfg_scale=0.5),
        "image_count": 3,
        "input_dir": "/data/media/in/x",
        "upload_limit": 10 * 1024 * 1024,
    }
    values.update(kw)
    return NewTask(**values)


def sqlite_connection(store: TaskStore) -> aiosqlite.Connection:
    """The SQLite connection under a store (to look at what only SQLite can say)."""
    db = store._db
    assert isinstance(db, SqliteDatabase)
    return db._conn


async def schema_version(store: TaskStore) -> int:
    """The schema version the database is at (SQLite's user_version)."""
    rows = await sqlite_connection(store).execute_fetchall("PRAGMA user_version")
    return int(next(iter(rows))[0])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(clock: Clock) -> AsyncIterator[TaskStore]:
    async with await TaskStore.open("sqlite:///:memory:", now=clock) as s:
        yield s


@pytest.fixture
async def file_store(tmp_path: Path, clock: Clock) -> AsyncIterator[TaskStore]:
    async with await TaskStore.open(f"sqlite:///{tmp_path}/db/bot.sqlite3", now=clock) as s:
        yield s


# --- opening and settings ------------------------------------------------------------------


async def test_open_file_sets_pragmas_and_creates_parent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bot.sqlite3"
    async with await TaskStore.open(f"sqlite:///{path}") as store:
        assert path.exists()
        conn = sqlite_connection(store)
        assert (await conn.execute_fetchall("PRAGMA journal_mode"))[0][0] == "wal"  # type: ignore[index]
        assert (await conn.execute_fetchall("PRAGMA foreign_keys"))[0][0] == 1  # type: ignore[index]
        assert (await conn.execute_fetchall("PRAGMA synchronous"))[0][0] == 1  # type: ignore[index]
        assert (await conn.execute_fetchall("PRAGMA busy_timeout"))[0][0] == 10_000  # type: ignore[index]
        assert await schema_version(store) == len(MIGRATIONS) >= 3


async def test_open_memory_and_plain_path(tmp_path: Path) -> None:
    async with await TaskStore.open("sqlite:///:memory:") as store:
        assert await schema_version(store) == len(MIGRATIONS)
    async with await TaskStore.open(tmp_path / "plain.db", synchronous="FULL") as store:
        assert (await sqlite_connection(store).execute_fetchall("PRAGMA synchronous"))[0][0] == 2  # type: ignore[index]


async def test_open_rejects_other_databases() -> None:
    with pytest.raises(ValueError):
        await TaskStore.open("postgres://localhost/db")


# --- rows and transitions ----------------------------------------------------------------------


async def test_reserve_inserts_queued_row(store: TaskStore, clock: Clock) -> None:
    task = await store.reserve(new_task(callback_token="tok"), UNLIMITED)
    assert task.state is TaskState.QUEUED
    assert task.options == TaskOptions(duration="5", mode="std", aspect_ratio="16:9", cfg_scale=0.5)
    assert task.created_at == task.updated_at == clock.t
    assert task.external_task_id.startswith("kvb-")
    assert task.callback_token == "tok"
    assert task.kling_task_id is None and task.attempts == 0 and not task.quota_refunded
    assert task.quota_reset_at is None and task.state not in FINISHED
    assert await store.get(task.id) == task
    assert await store.get(999) is None


async def test_transition_sets_times_and_guards_state(store: TaskStore, clock: Clock) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    clock.t += 1
    t = await store.transition(task.id, TaskState.SUBMITTING)
    assert t.state is TaskState.SUBMITTING and t.updated_at == clock.t
    clock.t += 1
    t = await store.transition(task.id, TaskState.SUBMITTED, kling_task_id="k-1")
    assert t.submitted_at == clock.t and t.kling_task_id == "k-1"
    assert await store.get(task.id) == t
    with pytest.raises(StaleTransition) as info:
        await store.transition(task.id, TaskState.SUBMITTING)
    assert info.value.actual is TaskState.SUBMITTED
    assert (await store.get(task.id)) == t  # unchanged
    clock.t += 5
    t = await store.transition(task.id, TaskState.SUCCEEDED, video_url="https://v/x.mp4")
    assert t.finished_at == clock.t and t.state in FINISHED and not t.is_terminal
    clock.t += 2
    t = await store.transition(task.id, TaskState.DELIVERED, result_message_id=55)
    assert t.delivered_at == clock.t and t.finished_at == clock.t - 2 and t.is_terminal
    assert t.result_message_id == 55
    with pytest.raises(TaskNotFound):
        await store.transition(12345, TaskState.FAILED)


@pytest.mark.parametrize("start", list(TaskState))
async def test_only_the_moves_the_table_allows_are_made(store: TaskStore, start: TaskState) -> None:
    for to in TaskState:
        task = await store.reserve(new_task(), UNLIMITED)
        if start is not TaskState.QUEUED:
            task = await advance(store, task.id, start)
        if start in TRANSITIONS[to]:
            assert (await store.transition(task.id, to)).state is to
        else:
            with pytest.raises(StaleTransition) as info:
                await store.transition(task.id, to)
            assert info.value.actual is start and info.value.expected == TRANSITIONS[to]
            assert await store.get(task.id) == task


async def test_transition_and_update_validate_fields(store: TaskStore) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    with pytest.raises(ValueError):
        await store.transition(task.id, TaskState.FAILED, no_such_field=1)
    with pytest.raises(ValueError):
        await store.update(task.id, state="failed")
    with pytest.raises(ValueError):
        await store.update(task.id, quota_refunded=True)
    with pytest.raises(ValueError):
        await store.update(task.id, prompt=None)
    t = await store.update(task.id, thread_id=7, status_message_id=8, attempts=2)
    assert (t.thread_id, t.status_message_id, t.attempts) == (7, 8, 2)
    assert t.state is TaskState.QUEUED
    with pytest.raises(TaskNotFound):
        await store.update(999, attempts=1)


async def test_notes_are_written_beside_the_options_which_never_change(store: TaskStore) -> None:
    notes = TaskNotes(result_where=ResultWhere.THREAD, image_names=("a.png", "b.png"))
    task = await store.reserve(new_task(notes=notes), UNLIMITED)
    assert task.notes == notes
    fallback = replace(notes, dm_fallback=True)
    moved = await store.update(task.id, notes=fallback)
    assert (moved.options, moved.notes) == (task.options, fallback)
    assert await store.get(task.id) == moved
    with pytest.raises(ValueError):
        await store.update(task.id, options=TaskOptions(duration="10"))
    with pytest.raises(TaskNotFound):
        await store.update(999, notes=notes)


async def test_unique_ids_are_enforced(store: TaskStore) -> None:
    a = await store.reserve(new_task(), UNLIMITED)
    b = await store.reserve(new_task(), UNLIMITED)
    with pytest.raises(sqlite3.IntegrityError):
        await store.reserve(new_task(external_task_id=a.external_task_id), UNLIMITED)
    await store.update(a.id, kling_task_id="same")
    with pytest.raises(sqlite3.IntegrityError):
        await store.update(b.id, kling_task_id="same")
    # the failed statement left no transaction open
    await store.reserve(new_task(), UNLIMITED)


async def test_refund_is_idempotent(store: TaskStore) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    await store.transition(task.id, TaskState.FAILED, error_code="provider_failed")
    assert await store.refund(task.id) is True
    assert await store.refund(task.id) is False
    assert (await store.get(task.id)).quota_refunded  # type: ignore[union-attr]
    with pytest.raises(TaskNotFound):
        await store.refund(999)


async def test_queries(store: TaskStore, clock: Clock) -> None:
    ids = []
    for user in (1, 2, 1, 3, 1):
        clock.t += 1
        ids.append((await store.reserve(new_task(user_id=user), UNLIMITED)).id)
    await store.transition(ids[1], TaskState.SUBMITTING)
    await advance(store, ids[3], TaskState.SUCCEEDED)
    await advance(store, ids[4], TaskState.DELIVERED)
    queue = await store.queue()
    assert [(t.id, pos) for t, pos in queue] == [(ids[0], 1), (ids[2], 2)]
    assert [t.id for t in await store.unfinished()] == ids[:4]
    assert [t.id for t in await store.active_for_user(1)] == [ids[0], ids[2]]
    assert [t.id for t in await store.recent_for_user(1, limit=2)] == [ids[4], ids[2]]
    assert await store.recent_for_user(1, guild_id=999) == []
    counts = (await store.usage_summary(100, since=0)).by_state
    assert counts[TaskState.QUEUED] == 2 and counts[TaskState.TIMED_OUT] == 0
    assert sum(counts.values()) == 5


async def test_usage_summary_and_retention(store: TaskStore, clock: Clock) -> None:
    start = clock.t
    a = await store.reserve(new_task(user_id=1), UNLIMITED)
    b = await store.reserve(new_task(user_id=2), UNLIMITED)
    await store.reserve(new_task(user_id=2), UNLIMITED)
    await store.reserve(new_task(user_id=9, guild_id=None), UNLIMITED)
    await advance(store, a.id, TaskState.DELIVERED)
    await store.transition(b.id, TaskState.FAILED)
    await store.refund(b.id)
    summary = await store.usage_summary(100, since=start)
    assert summary.tasks == 3 and summary.distinct_users == 2
    assert summary.by_state[TaskState.QUEUED] == 1 and summary.by_state[TaskState.FAILED] == 1
    clock.t += 10
    assert [t.id for t in await store.expired_inputs(clock.t)] == [a.id, b.id]
    await store.update(a.id, inputs_removed_at=clock.t)
    assert [t.id for t in await store.expired_inputs(clock.t + 1)] == [b.id]
    assert await store.delete_older_than(start - 1) == 0
    assert await store.delete_older_than(clock.t + 1) == 2
    assert len(await store.unfinished()) == 2


async def test_endings_are_unfinished_until_told(store: TaskStore) -> None:
    """A failure counts as done for the engine only once its notice is out; a video at once."""
    failed = await store.reserve(new_task(), UNLIMITED)
    delivered = await store.reserve(new_task(), UNLIMITED)
    await store.transition(failed.id, TaskState.FAILED)
    moved = await advance(store, delivered.id, TaskState.DELIVERED)
    assert moved.is_told
    assert [t.id for t in await store.unfinished()] == [failed.id]
    await store.update(failed.id, notified_at=5.0)
    assert await store.unfinished() == []


def new_interaction(interaction_id: int = 9001, **kw: Any) -> NewOpenInteraction:
    """A valid acknowledged /video interaction."""
    values: dict[str, Any] = {
        "interaction_id": interaction_id,
        "kind": InteractionKind.VIDEO,
        "application_id": 42,
        "token": "secret-interaction-token",
        "token_expires_at": 1_700_000_900.0,
        "user_id": 1,
        "guild_id": 100,
        "channel_id": 200,
        "locale": "en-US",
        "payload": {"request": {"prompt": "p"}},
        "external_task_id": f"kvb-{interaction_id}",
    }
    values.update(kw)
    return NewOpenInteraction(**values)


async def test_an_interaction_is_recorded_once_and_its_token_never_printed(
    store: TaskStore,
) -> None:
    first = await store.open_interaction(new_interaction())
    again = await store.open_interaction(new_interaction(payload={"other": True}))
    assert again == first and first.stage is IntakeStage.RECEIVED and first.task_id is None
    assert first.payload == {"request": {"prompt": "p"}}
    assert "secret-interaction-token" not in repr(first)
    assert [i.id for i in await store.open_interactions()] == [first.id]


async def test_a_reservation_links_its_interaction_and_the_engine_waits_for_the_hand_over(
    store: TaskStore,
) -> None:
    entry = await store.open_interaction(new_interaction())
    task = await store.reserve(new_task(), UNLIMITED, interaction=entry.id)
    [reserved] = await store.open_interactions()
    assert reserved.stage is IntakeStage.RESERVED
    assert reserved.task_id == task.id
    assert await store.unfinished() == [], "the intake owns its task until the hand-over"
    with pytest.raises(StoreError):  # one request never reserves twice
        await store.reserve(new_task(), UNLIMITED, interaction=entry.id)
    summary = await store.usage_summary(100, since=0)
    assert summary.by_state == {**dict.fromkeys(TaskState, 0), TaskState.QUEUED: 1}
    started = await store.hand_over(entry.id, task.id, status_message_id=77, thread_id=77)
    assert (started.status_message_id, started.thread_id) == (77, 77)
    [moved] = await store.open_interactions()
    assert moved.id == entry.id and moved.stage is IntakeStage.STARTED
    assert [t.id for t in await store.unfinished()] == [task.id]
    with pytest.raises(StoreError):
        await store.hand_over(entry.id, task.id, status_message_id=78)
    await store.close_interaction(entry.id)
    assert await store.open_interactions() == []
    after = await store.get(task.id)
    assert after is not None and not after.is_told, "the engine still has to tell it"


async def test_a_task_failed_in_its_intake_is_told_by_the_intakes_answer(
    store: TaskStore,
) -> None:
    entry = await store.open_interaction(new_interaction())
    task = await store.reserve(new_task(), UNLIMITED, interaction=entry.id)
    await store.transition(task.id, TaskState.FAILED, error_code="not_submitted")
    assert await store.unfinished() == []
    await store.close_interaction(entry.id)
    told = await store.get(task.id)
    assert told is not None and told.is_told
    assert await store.unfinished() == []


# --- quotas ------------------------------------------------------------------------------------


async def test_concurrent_limit_counts_unfinished_tasks(store: TaskStore) -> None:
    limits = QuotaLimits(concurrent_per_user=2)
    a = await store.reserve(new_task(), limits)
    await store.reserve(new_task(guild_id=None), limits)  # counted across guilds and DMs
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), limits)
    assert (info.value.kind, info.value.used, info.value.limit) == ("concurrent_user", 2, 2)
    assert info.value.next_free_at is None
    await advance(store, a.id, TaskState.SUCCEEDED)
    await store.reserve(new_task(), limits)
    await store.reserve(new_task(user_id=2), limits)  # another user is unaffected


async def test_daily_limit_rolls_and_reports_next_free(store: TaskStore, clock: Clock) -> None:
    limits = QuotaLimits(daily_per_user=3)
    first = clock.t
    for _ in range(3):
        task = await store.reserve(new_task(), limits)
        await advance(store, task.id, TaskState.DELIVERED)
        clock.t += 100
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), limits)
    assert info.value.kind is QuotaKind.DAILY_USER
    assert (info.value.used, info.value.limit) == (3, 3)
    assert info.value.next_free_at == first + DAY
    assert await store.next_slot_frees_at(1, DAY) == first + DAY
    assert await store.usage(user_id=1, since=clock.t - DAY) == 3
    clock.t = first + DAY  # the first one ages out
    await store.reserve(new_task(), limits)


async def test_refund_and_reset_give_daily_quota_back(store: TaskStore, clock: Clock) -> None:
    limits = QuotaLimits(daily_per_user=2, concurrent_per_user=5)
    a = await store.reserve(new_task(), limits)
    b = await store.reserve(new_task(), limits)
    with pytest.raises(QuotaExceeded):
        await store.reserve(new_task(), limits)
    await store.transition(a.id, TaskState.FAILED)
    await store.refund(a.id)
    c = await store.reserve(new_task(), limits)
    with pytest.raises(QuotaExceeded):
        await store.reserve(new_task(), limits)
    assert await store.reset_usage(100, 1) == 2  # b and c
    t = await store.get(b.id)
    assert t is not None and t.quota_reset_at == clock.t and not t.quota_refunded
    assert await store.usage(user_id=1, since=clock.t - DAY) == 0
    await store.reserve(new_task(), limits)
    assert (await store.get(c.id)).state is TaskState.QUEUED  # type: ignore[union-attr]


async def test_guild_and_global_limits_and_order(store: TaskStore, clock: Clock) -> None:
    await store.reserve(new_task(user_id=1), UNLIMITED)
    await store.reserve(new_task(user_id=2), UNLIMITED)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(user_id=3), QuotaLimits(daily_per_guild=2))
    assert info.value.kind == "daily_guild" and info.value.next_free_at == clock.t + DAY
    await store.reserve(new_task(user_id=3, guild_id=None), QuotaLimits(daily_per_guild=2))
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(user_id=4, guild_id=5), QuotaLimits(daily_global=3))
    assert info.value.kind == "daily_global"
    # concurrent bites before daily when both are hit
    both = QuotaLimits(daily_per_user=1, concurrent_per_user=1, daily_global=1)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(user_id=1), both)
    assert info.value.kind == "concurrent_user"
    # 0 means unlimited for guild/global
    await store.reserve(new_task(user_id=5), QuotaLimits(daily_per_guild=0, daily_global=0))


async def test_exempt_and_blocked(store: TaskStore) -> None:
    exempt = QuotaLimits(daily_per_user=0, concurrent_per_user=0, daily_per_guild=1, exempt=True)
    for _ in range(3):
        await store.reserve(new_task(), exempt)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), QuotaLimits(daily_global=3, exempt=True))
    assert info.value.kind == "daily_global"
    assert await store.block_user(100, 1, reason="spam") is True
    assert await store.block_user(100, 1) is False
    assert (await store.get_guild_settings(100)).blocked_users == {1}
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), UNLIMITED)
    assert info.value.kind == "blocked"
    await store.reserve(new_task(guild_id=101), UNLIMITED)  # blocked per guild only
    await store.reserve(new_task(guild_id=None), UNLIMITED)  # and never in DMs
    assert await store.unblock_user(100, 1) is True
    await store.reserve(new_task(), UNLIMITED)


async def test_quota_refusal_leaves_no_row_and_no_open_transaction(store: TaskStore) -> None:
    limits = QuotaLimits(concurrent_per_user=1)
    await store.reserve(new_task(), limits)
    with pytest.raises(QuotaExceeded):
        await store.reserve(new_task(), limits)
    assert (await store.usage_summary(100, since=0)).tasks == 1
    assert not sqlite_connection(store).in_transaction


async def _race(stores: list[TaskStore], limits: QuotaLimits, n: int = 100) -> int:
    """Fire n reservations by one user at once, spread over the stores; count the grants."""

    async def one(i: int) -> bool:
        try:
            await stores[i % len(stores)].reserve(new_task(user_id=42), limits)
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(results)


@pytest.mark.parametrize(
    "limits",
    [QuotaLimits(concurrent_per_user=5), QuotaLimits(daily_per_user=5)],
    ids=["concurrent", "daily"],
)
async def test_100_concurrent_reservations_one_store(
    file_store: TaskStore, limits: QuotaLimits
) -> None:
    assert await _race([file_store], limits) == 5
    assert await file_store.usage(user_id=42, since=0) == 5


@pytest.mark.parametrize(
    "limits",
    [QuotaLimits(concurrent_per_user=5), QuotaLimits(daily_per_user=5)],
    ids=["concurrent", "daily"],
)
async def test_100_concurrent_reservations_two_connections(
    tmp_path: Path, limits: QuotaLimits
) -> None:
    url = f"sqlite:///{tmp_path}/shared.sqlite3"
    a, b = await asyncio.gather(TaskStore.open(url), TaskStore.open(url))  # race the migrations
    try:
        assert await _race([a, b], limits) == 5
        assert await a.usage(user_id=42, since=0) == 5
        assert len(await b.active_for_user(42)) == 5
    finally:
        await a.close()
        await b.close()


# --- guild settings and meta -------------------------------------------------------------------


async def test_guild_settings_roundtrip(store: TaskStore) -> None:
    empty = await store.get_guild_settings(100)
    assert empty.daily_per_user is None and empty.blocked_words == ()
    s = await store.set_guild_limits(100, daily_per_user=20, daily_per_guild=100)
    assert (s.daily_per_user, s.concurrent_per_user, s.daily_per_guild) == (20, None, 100)
    s = await store.set_guild_limits(100, daily_per_user=None, concurrent_per_user=3)
    assert (s.daily_per_user, s.concurrent_per_user, s.daily_per_guild) == (None, 3, 100)
    with pytest.raises(ValueError):
        await store.set_guild_limits(100, weekly=3)
    with pytest.raises(ValueError):
        await store.set_guild_limits(100, daily_per_user=-1)
    await store.set_override(100, "role", 7, daily=50)
    await store.set_override(100, "role", 8, exempt=True)
    await store.set_override(100, "user", 9, concurrent=4)
    await store.set_override(100, "user", 9, daily=1)  # replaces
    assert await store.add_blocked_word(100, "  Bad   Word ") is True
    assert await store.add_blocked_word(100, "bad word") is False
    await store.add_blocked_word(100, "alpha")
    await store.set_log_channel(100, 555)
    await store.block_user(100, 66)
    s = await store.get_guild_settings(100)
    assert s.role_overrides[7].daily == 50 and s.role_overrides[8].exempt
    assert s.user_overrides[9].daily == 1 and s.user_overrides[9].concurrent is None
    assert s.blocked_words == ("alpha", "bad word")
    assert s.log_channel_id == 555 and s.blocked_users == frozenset({66})
    assert s.daily_per_guild == 100  # log channel did not clear limits
    assert await store.remove_override(100, "role", 7) is True
    assert await store.remove_override(100, "role", 7) is False
    assert await store.remove_blocked_word(100, "BAD WORD") is True
    s = await store.get_guild_settings(100)
    assert 7 not in s.role_overrides and s.blocked_words == ("alpha",)
    assert (await store.get_guild_settings(101)).role_overrides == {}


async def test_meta(store: TaskStore) -> None:
    assert await store.get_meta("tree_hash") is None
    await store.set_meta("tree_hash", "abc")
    await store.set_meta("tree_hash", "def")
    assert await store.get_meta("tree_hash") == "def"


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
        task = await store.reserve(new_task(), QuotaLimits(daily_per_user=5), interaction=entry.id)
        assert db.transactions == [True]
        await store.hand_over(entry.id, task.id, status_message_id=1, notes=TaskNotes())
        await store.close_interaction(entry.id)
        await advance(store, task.id, TaskState.DELIVERED)
        await store.refund(task.id)
        await store.reset_usage(None, 1)
        await store.reset_usage(100, 1)
        await store.set_guild_limits(100, daily_per_user=3)
        await store.set_override(100, "role", 7, daily=2)
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
        ):
            await read
    assert db.transactions[0] is True and not any(db.transactions[1:])
    sqlite_only = re.compile(r"PRAGMA|json_|AUTOINCREMENT|BEGIN|\bIS \?|\bGLOB\b", re.I)
    assert len(db.statements) > 30
    assert [sql for sql in db.statements if sqlite_only.search(sql)] == []


# --- migrations --------------------------------------------------------------------------------


async def by_external_id(store: TaskStore, external_task_id: str) -> Task | None:
    """User 1's task with this external id, or None."""
    tasks = await store.recent_for_user(1, limit=100)
    return next((t for t in tasks if t.external_task_id == external_task_id), None)


def _make_old_db(path: Path, version: int) -> None:
    """A database at an old schema version, with a task in it, made by the old migrations."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute(
        "INSERT INTO tasks (external_task_id, kling_task_id, user_id, guild_id, channel_id, locale,"
        " prompt, options, image_count, input_dir, state, upload_limit, created_at, updated_at)"
        " VALUES ('ext-old', 'k-old', 1, 100, 200, 'nl', 'oud', '{\"duration\": 10}', 2, '/in',"
        " 'processing', 8388608, 1.0, 2.0)"
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4])
async def test_migrates_old_database_keeping_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite3"
    _make_old_db(path, version)
    async with await TaskStore.open(path) as store:
        assert await schema_version(store) == len(MIGRATIONS)
        task = await by_external_id(store, "ext-old")
        assert task is not None
        assert (task.kling_task_id, task.locale) == ("k-old", "nl")
        assert task.options == TaskOptions(duration="10")
        assert task.state is TaskState.PROCESSING and task.quota_reset_at is None
        assert await store.usage(user_id=1, since=0) == 1
        await store.set_meta("k", "v")  # v2 tables exist
        await store.reset_usage(100, 1, window=1e12)  # v3 column exists
        assert await store.usage(user_id=1, since=0) == 0


async def test_migration_5_counts_every_earlier_ending_as_told(tmp_path: Path) -> None:
    """Endings from before v5 were told by the code of their time: none is told again."""
    path = tmp_path / "v4.sqlite3"
    _make_old_db(path, 4)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO tasks (external_task_id, user_id, guild_id, channel_id, locale, prompt,"
        " options, image_count, input_dir, state, upload_limit, created_at, updated_at,"
        " finished_at) VALUES ('ext-failed', 1, 100, 200, 'en', 'p', '{}', 2, '/in', 'failed',"
        " 8388608, 1.0, 3.0, 3.0)"
    )
    conn.commit()
    conn.close()
    async with await TaskStore.open(path) as store:
        failed = await by_external_id(store, "ext-failed")
        assert failed is not None and failed.notified_at == 3.0 and failed.is_told
        assert [t.external_task_id for t in await store.unfinished()] == ["ext-old"]
        assert await store.open_interactions() == []


async def test_failed_migration_rolls_back_whole_step(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    broken = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);")
    with pytest.raises(MigrationError):
        await TaskStore.open(path, migrations=broken)
    conn = sqlite3.connect(path)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    extra = conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchall()
    conn.close()
    assert version == len(MIGRATIONS) and extra == []


async def test_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(MigrationError):
        await TaskStore.open(path)


# --- crash safety ------------------------------------------------------------------------------

WORKER = Path(__file__).with_name("store_crash_worker.py")
CHAIN = ["queued", "submitting", "submitted", "processing", "succeeded", "delivered"]


def _run_and_kill(db: Path, log: Path, seed: int, rng: random.Random) -> None:
    """Start the worker, wait for READY, let it run 0.2–0.8 s, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, str(WORKER), str(db), str(log), str(seed)])
    try:
        deadline = time.monotonic() + 20
        while not (log.exists() and b"READY" in log.read_bytes()):
            assert proc.poll() is None, "worker died before READY"
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.2, 0.8))
        assert proc.poll() is None, "worker exited on its own"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def _check_invariants(db: Path, lines: list[str]) -> int:
    """Reopen after the kill and check the database against itself and the worker's log."""
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    required = ("external_task_id", "user_id", "channel_id", "locale", "prompt", "options",
                "image_count", "input_dir", "state", "attempts", "quota_refunded",
                "upload_limit", "created_at", "updated_at")  # fmt: skip
    nulls = " OR ".join(f"{c} IS NULL" for c in required)
    assert raw.execute(f"SELECT COUNT(*) FROM tasks WHERE {nulls}").fetchone()[0] == 0
    states = {s for (s,) in raw.execute("SELECT DISTINCT state FROM tasks")}
    assert states <= {s.value for s in TaskState}
    terminal = ", ".join(f"'{s.value}'" for s in TERMINAL)
    assert (
        raw.execute(
            f"SELECT COUNT(*) FROM tasks WHERE state IN ({terminal}) AND finished_at IS NULL"
        ).fetchone()[0]
        == 0
    )
    # the quota invariant held at every commit: never more than 3 unfinished per user
    active = ", ".join(f"'{s.value}'" for s in ACTIVE)
    worst = raw.execute(
        f"SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM tasks WHERE state IN ({active}) "
        "GROUP BY user_id)"
    ).fetchone()[0]
    assert worst is None or worst <= 3
    rows = {
        i: (u, s, r)
        for i, u, s, r in raw.execute("SELECT id, user_id, state, quota_refunded FROM tasks")
    }
    untold = {i for (i,) in raw.execute("SELECT id FROM tasks WHERE notified_at IS NULL")}
    direct = raw.execute(
        "SELECT user_id, COUNT(*) FROM tasks WHERE quota_refunded = 0 AND quota_reset_at IS NULL "
        "GROUP BY user_id"
    ).fetchall()
    raw.close()

    async with await TaskStore.open(db) as store:
        for user, count in direct:
            assert await store.usage(user_id=user, since=0) == count
        assert await store.usage(since=0) == sum(c for _, c in direct)
        # the engine takes up every task not told yet: unfinished ones and untold endings
        # (a delivered task is told by its video)
        assert {t.id for t in await store.unfinished()} == {
            i for i, (_, s, _) in rows.items() if s not in {t.value for t in TERMINAL}
        } | {i for i, (_, s, _) in rows.items() if s != "delivered" and i in untold}
        assert not untold & {i for i, (_, s, _) in rows.items() if s == "delivered"}

    for line in lines:
        parts = line.split()
        if parts[0] == "R":
            assert rows[int(parts[1])][0] == int(parts[2])
        elif parts[0] == "T":
            state = rows[int(parts[1])][1]
            if parts[2] == "failed":
                assert state == "failed"
            else:
                assert state == "failed" or CHAIN.index(state) >= CHAIN.index(parts[2])
        elif parts[0] == "F":
            assert rows[int(parts[1])][2] == 1
    return len(lines)


def test_sigkill_leaves_database_consistent(tmp_path: Path) -> None:
    db = tmp_path / "crash" / "bot.sqlite3"
    rng = random.Random(4)
    logged = 0
    for run in range(5):
        log = tmp_path / f"run{run}.log"
        _run_and_kill(db, log, seed=run * 10, rng=rng)
        logged += asyncio.run(_check_invariants(db, log.read_text().splitlines()))
    assert logged > 50  # the worker really did work between the kills


async def test_cancelled_reservation_never_leaves_a_transaction_open(store: TaskStore) -> None:
    limits = QuotaLimits(daily_per_user=1000)
    for step in range(24):  # cancel at different points: before BEGIN, mid-way, at COMMIT
        pending = asyncio.create_task(store.reserve(new_task(), limits))
        await asyncio.sleep(step * 0.00003)
        pending.cancel()
        try:
            await pending
        except asyncio.CancelledError:
            pass
        # the connection is usable and out of any transaction afterwards
        await store.reserve(new_task(user_id=2), limits)
        assert not sqlite_connection(store).in_transaction
    counts = (await store.usage_summary(100, since=0)).tasks
    assert counts == 24 + await store.usage(user_id=1, since=0)
