"""The store: task rows, the quota ledger, guild settings and the interaction records.

Its parts share one `Database` (`database.py`), the seam a second backend plugs into:

- `database`: the seam (`Database`, `Connection`) and the store's errors
- `sqlite`, `sqlite_schema`: the SQLite backend, and its schema as one migration per version
- `postgres`, `postgres_schema`: the PostgreSQL backend and its schema, version for version
- `rows`: a task as a row of the `tasks` table
- `tasks`: task rows: their moves between states, their fields, the queries and retention
- `reservations`: the quota ledger: the reservation (quotas and insert at once), usage, refunds
- `guilds`: what a guild's admins set, and a small key-value table
- `spend`: credits spent, the usage reports, and the monthly cap's alerts
- `interactions`: the record of every interaction acknowledged and not yet answered
- `leases`: the process registry and each task's lease (several processes, one bot)

`TaskStore` is all of them on one database, so callers write `store.reserve(...)`,
`store.transition(...)`, `store.get_guild_settings(...)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from bot.store.database import (
    Connection,
    ConstraintError,
    Database,
    MigrationError,
    StoreError,
)
from bot.store.guilds import GuildRows
from bot.store.interactions import (
    IntakeStage,
    InteractionKind,
    InteractionRows,
    NewOpenInteraction,
    OpenInteraction,
)
from bot.store.leases import AT_PROVIDER, LeaseRows, SlotRefused
from bot.store.postgres import PostgresDatabase, is_postgres_url
from bot.store.postgres_schema import MIGRATIONS as POSTGRES_MIGRATIONS
from bot.store.reservations import ReservationRows
from bot.store.rows import StaleTransition, TaskNotFound
from bot.store.spend import SpendRows
from bot.store.sqlite import SqliteDatabase, parse_database_url
from bot.store.sqlite_schema import MIGRATIONS
from bot.store.tasks import TaskRows

__all__ = [
    "AT_PROVIDER",
    "MIGRATIONS",
    "POSTGRES_MIGRATIONS",
    "Connection",
    "ConstraintError",
    "Database",
    "IntakeStage",
    "InteractionKind",
    "MigrationError",
    "NewOpenInteraction",
    "OpenInteraction",
    "SlotRefused",
    "StaleTransition",
    "StoreError",
    "TaskNotFound",
    "TaskStore",
    "is_postgres_url",
    "parse_database_url",
]


class TaskStore(TaskRows, ReservationRows, SpendRows, GuildRows, InteractionRows, LeaseRows):
    """Task rows, quota reservations, spend, guild settings, interaction records and leases on
    one database."""

    def __init__(self, db: Database, *, now: Callable[[], float] = time.time) -> None:
        """Work on an open, migrated database; `TaskStore.open` opens one."""
        self._db = db
        self._now = now

    @classmethod
    async def open(
        cls,
        database_url_or_path: str | Path,
        *,
        now: Callable[[], float] = time.time,
        busy_timeout_ms: int = 10_000,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        migrations: Sequence[str] | None = None,
    ) -> TaskStore:
        """Open (creating if needed) the database, set it up and migrate it to the current schema.

        `sqlite:///path`, `sqlite:///:memory:` or a plain path: SQLite (`synchronous` is its);
        `postgresql://...` or `postgres://...`: PostgreSQL. `migrations` replaces the backend's
        own (`MIGRATIONS`, `POSTGRES_MIGRATIONS`), for tests.
        """
        db: Database
        if is_postgres_url(database_url_or_path):
            db = await PostgresDatabase.open(
                str(database_url_or_path),
                busy_timeout_ms=busy_timeout_ms,
                migrations=POSTGRES_MIGRATIONS if migrations is None else migrations,
            )
        else:
            db = await SqliteDatabase.open(
                database_url_or_path,
                busy_timeout_ms=busy_timeout_ms,
                synchronous=synchronous,
                migrations=MIGRATIONS if migrations is None else migrations,
            )
        return cls(db, now=now)

    async def close(self) -> None:
        """Close the database (waits for statements in flight)."""
        await self._db.close()

    async def __aenter__(self) -> TaskStore:
        """Use the store as `async with await TaskStore.open(...) as store`."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on leaving the block."""
        await self.close()
