"""The SQLite backend: one aiosqlite connection, its PRAGMAs, and the migrations.

Every statement on the connection runs under an asyncio lock, so a transaction started by one
coroutine never swallows another coroutine's write. Every transaction is `BEGIN IMMEDIATE`: it
takes SQLite's write lock up front, so two processes never both read and then both write (a
deferred transaction can't wait for the lock, only fail); other connections wait for it
(`busy_timeout`) instead of failing. That also makes every transaction exclusive.

Durability: WAL journal with `synchronous=NORMAL`. A killed process (SIGKILL, OOM) never
loses a committed transaction nor corrupts the file: commits sit in the WAL, which the OS
keeps. Only a power cut / kernel crash can lose the last few commits (never consistency);
the engine's resume recovers an interrupted submit through `external_task_id`, so commits
without an fsync each are worth it. Pass `synchronous="FULL"` to fsync every commit.

The schema's version is SQLite's `user_version`; each migration (`sqlite_schema.MIGRATIONS`)
is applied in its own transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from bot.store.database import ConstraintError, MigrationError, Row, StoreError, text_params


def parse_database_url(database_url_or_path: str | Path) -> str:
    """The SQLite path from `sqlite:///path`, `sqlite:///:memory:` or a plain path."""
    text = str(database_url_or_path)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        raise ValueError(
            "a database URL is sqlite:///path, sqlite:///:memory: or postgresql://user@host/db"
        )
    if not text:
        raise ValueError("the database path is empty")
    return text


class _Statements:
    """The `Connection` the store's parts see: one aiosqlite connection, already locked."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement and return its rows."""
        try:
            return list(await self._conn.execute_fetchall(sql, text_params(params)))
        except sqlite3.IntegrityError as error:
            raise ConstraintError(str(error)) from error

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        try:
            await self._conn.execute(sql, text_params(params))
        except sqlite3.IntegrityError as error:
            raise ConstraintError(str(error)) from error


class SqliteDatabase:
    """The store's `Database` on one SQLite file (or `:memory:`)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        """Wrap an open, migrated connection; use `SqliteDatabase.open` instead."""
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        database_url_or_path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        migrations: Sequence[str],
    ) -> SqliteDatabase:
        """Open (creating if needed) the database, set it up and apply `migrations`."""
        path = parse_database_url(database_url_or_path)
        memory = path == ":memory:"
        if not memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not memory:
                mode = await _switch_to_wal(conn)
                if str(mode).lower() != "wal":
                    raise StoreError(f"could not switch {path} to WAL (journal_mode={mode})")
            if synchronous not in ("NORMAL", "FULL"):
                raise ValueError("synchronous must be NORMAL or FULL")
            await conn.execute(f"PRAGMA synchronous = {synchronous}")
            await conn.execute("PRAGMA foreign_keys = ON")
            await _migrate(conn, migrations)
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Statements]:
        """The connection, alone (no other coroutine's statement can interleave)."""
        async with self._lock:
            yield _Statements(self._conn)

    @asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[_Statements]:
        """A `BEGIN IMMEDIATE` transaction (always exclusive): committed on success, rolled
        back on any error."""
        async with self._lock:
            conn = self._conn
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield _Statements(conn)
                await conn.execute("COMMIT")
            except BaseException:
                # Also on cancellation: aiosqlite runs queued statements in order even when
                # their awaiter is cancelled, so this ROLLBACK lands after a BEGIN still in
                # flight and the connection is never left inside a transaction.
                await _rollback_quietly(conn)
                raise

    async def close(self) -> None:
        """Close the connection (waits for statements in flight)."""
        async with self._lock:
            await self._conn.close()


async def _user_version(conn: aiosqlite.Connection) -> int:
    """The schema version stored in the database header."""
    rows = list(await conn.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def _rollback_quietly(conn: aiosqlite.Connection) -> None:
    """Roll back if a transaction is open; a failed rollback must not hide the first error."""
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


async def _switch_to_wal(conn: aiosqlite.Connection, attempts: int = 100) -> str:
    """Set WAL mode; SQLite doesn't wait on its busy timeout for this, so wait here.

    A second process (or connection) switching the same new file at the same moment gets
    "database is locked" at once; it succeeds a moment later.
    """
    for attempt in range(attempts):
        try:
            rows = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            return str(next(iter(rows))[0])
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


def _split_script(script: str) -> list[str]:
    """Split a migration script into complete SQL statements."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n\t;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n\t;"):
        raise MigrationError(f"incomplete SQL statement in migration: {buffer.strip()[:60]}")
    return statements


async def _migrate(conn: aiosqlite.Connection, migrations: Sequence[str]) -> None:
    """Apply the pending migrations, each in its own `BEGIN IMMEDIATE` transaction.

    The version is re-read inside the transaction, so two processes starting at once cannot
    apply the same migration twice.
    """
    target = len(migrations)
    current = await _user_version(conn)
    if current > target:
        raise MigrationError(
            f"the database is at schema version {current}, newer than this code ({target}); "
            "upgrade the bot"
        )
    for version in range(current + 1, target + 1):
        try:
            await conn.execute("BEGIN IMMEDIATE")
            if await _user_version(conn) >= version:
                await conn.execute("COMMIT")
                continue
            for statement in _split_script(migrations[version - 1]):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {version}")
            await conn.execute("COMMIT")
        except sqlite3.Error as error:
            await _rollback_quietly(conn)
            raise MigrationError(
                f"migration to schema version {version} failed: {error}"
            ) from error
        except BaseException:
            await _rollback_quietly(conn)
            raise
