"""Helpers of the store's tests: a settable clock, valid inserts, a look at the backend itself."""

from __future__ import annotations

from typing import Any

import aiosqlite

from bot.quota import QuotaLimits
from bot.store import InteractionKind, NewOpenInteraction, TaskStore
from bot.store.postgres import PostgresDatabase
from bot.store.sqlite import SqliteDatabase
from bot.tasks import NewTask, Task, TaskOptions

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
    """The schema version the database is at (SQLite's user_version, PostgreSQL's
    schema_migrations)."""
    if isinstance(store._db, PostgresDatabase):
        async with store._db.connection() as conn:
            rows = await conn.fetch("SELECT MAX(version) FROM schema_migrations")
        return int(rows[0][0])
    rows = await sqlite_connection(store).execute_fetchall("PRAGMA user_version")
    return int(next(iter(rows))[0])


async def in_transaction(store: TaskStore) -> bool:
    """Whether a transaction is left open on the store's database (SQLite: its connection;
    PostgreSQL: any session on the database but this look's own)."""
    if isinstance(store._db, PostgresDatabase):
        async with store._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
            )
        return bool(rows[0][0])
    return sqlite_connection(store).in_transaction


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


async def by_external_id(store: TaskStore, external_task_id: str) -> Task | None:
    """User 1's task with this external id, or None."""
    tasks = await store.recent_for_user(1, limit=100)
    return next((t for t in tasks if t.external_task_id == external_task_id), None)
