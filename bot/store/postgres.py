"""The PostgreSQL backend: an asyncpg pool, the exclusive transaction, and the migrations.

Chosen by `DATABASE_URL=postgresql://user@host:port/db` (or `postgres://`). Query parameters
the driver doesn't know are session settings, so `?search_path=kvb` puts the bot's tables in
the schema `kvb` (it must exist).

How SQLite's behaviour maps here:

- Placeholders: the store writes `?`; each is rewritten to asyncpg's `$1, $2, ...` (outside
  quoted text), once per distinct statement.
- Each statement on `connection()` commits on its own (no transaction block), as on SQLite.
  Unlike SQLite's single connection, the pool lets several coroutines (and processes) run
  statements at once; every write that must not race is one guarded statement
  (`UPDATE ... WHERE state IN (...)`), which PostgreSQL re-checks on the row's newest version
  when two collide.
- The exclusive transaction (the reservation: it counts, then inserts) takes a transaction-
  level advisory lock as its first statement. Every reservation of every process on this schema
  waits for it, so they run one after another, as `BEGIN IMMEDIATE` makes them on SQLite; under
  READ COMMITTED each statement after the lock sees every reservation committed before it.
  (Not SERIALIZABLE: a burst of reservations would mostly fail with serialization errors and
  retry; the lock keeps each one a single short wait, and no reservation is ever refused
  because another one ran beside it.) The lock goes with the transaction: a killed process's
  connection closes, PostgreSQL rolls its transaction back and the lock is free.
- Lock waits give up after `busy_timeout_ms` (PostgreSQL's `lock_timeout`), like SQLite's
  busy timeout.
- The schema's version is the highest row of `schema_migrations` (one row per version, with
  when it was applied); each migration runs in its own transaction under another advisory lock,
  so two processes starting at once never apply one twice. DDL is transactional here too: a
  failed migration leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from bot.store.database import ConstraintError, MigrationError, Row, StoreError, text_params

#: URL schemes that select this backend.
SCHEMES = ("postgresql://", "postgres://")
#: The most connections one store holds open at once.
POOL_SIZE = 10
#: How long opening a connection may take.
CONNECT_TIMEOUT_SECONDS = 10.0
#: How long `close` waits for statements in flight before it cuts the connections.
CLOSE_TIMEOUT_SECONDS = 10.0

_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version    INTEGER PRIMARY KEY,
        applied_at DOUBLE PRECISION NOT NULL
    )
"""


def is_postgres_url(database_url: object) -> bool:
    """Whether a DATABASE_URL selects PostgreSQL."""
    return isinstance(database_url, str) and database_url.startswith(SCHEMES)


@lru_cache(maxsize=1024)
def numbered_placeholders(sql: str) -> str:
    """`?` placeholders as `$1, $2, ...`; a `?` inside quotes ('...' or "...") stays."""
    out: list[str] = []
    quote = ""
    count = 0
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            count += 1
            out.append(f"${count}")
            continue
        out.append(char)
    return "".join(out)


def lock_key(schema: str, purpose: str) -> int:
    """A 64-bit advisory lock key for one purpose in one schema (bots in other schemas of the
    same database never wait on each other)."""
    digest = hashlib.blake2b(f"kling-video-bot:{schema}:{purpose}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class _Statements:
    """The `Connection` the store's parts see: one pooled asyncpg connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement and return its rows (as tuples, like SQLite's)."""
        try:
            records = await self._conn.fetch(numbered_placeholders(sql), *text_params(params))
        except asyncpg.IntegrityConstraintViolationError as error:
            raise ConstraintError(str(error)) from error
        return [tuple(record) for record in records]

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement."""
        try:
            await self._conn.execute(numbered_placeholders(sql), *text_params(params))
        except asyncpg.IntegrityConstraintViolationError as error:
            raise ConstraintError(str(error)) from error


class PostgresDatabase:
    """The store's `Database` on a PostgreSQL schema, through a pool of connections."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        """Wrap an open pool on a migrated schema; use `PostgresDatabase.open` instead."""
        self._pool = pool
        self.schema = schema
        self._reserve_lock = lock_key(schema, "exclusive")

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        busy_timeout_ms: int = 10_000,
        migrations: Sequence[str],
        pool_size: int = POOL_SIZE,
    ) -> PostgresDatabase:
        """Connect, and bring the schema to the current version by applying `migrations`."""
        if not is_postgres_url(database_url):
            raise ValueError("a PostgreSQL URL starts with postgresql:// or postgres://")
        settings = {"lock_timeout": str(int(busy_timeout_ms))}
        try:
            pool = await asyncpg.create_pool(
                database_url,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                server_settings=settings,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise StoreError(f"PostgreSQL refused the connection: {error}") from None
        try:
            async with pool.acquire() as conn:
                schema = await conn.fetchval("SELECT current_schema()")
                if schema is None:
                    raise StoreError(
                        "the database has no schema to create the tables in "
                        "(does the search_path name a schema that exists?)"
                    )
                await _migrate(conn, migrations, lock_key(schema, "migrate"))
        except BaseException:
            await _close_pool(pool)
            raise
        return cls(pool, str(schema))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_Statements]:
        """A connection of the pool, alone for the block; each statement commits on its own."""
        async with self._pool.acquire() as conn:
            yield _Statements(conn)

    @asynccontextmanager
    async def transaction(self, *, exclusive: bool = False) -> AsyncIterator[_Statements]:
        """A transaction: committed on success, rolled back on any error (or cancellation).

        `exclusive` first waits for the advisory lock every exclusive transaction takes.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            if exclusive:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._reserve_lock)
            yield _Statements(conn)

    async def close(self) -> None:
        """Close the pool, after the statements in flight (cut after a while)."""
        await _close_pool(self._pool)


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully; terminate what is still busy after `CLOSE_TIMEOUT_SECONDS`."""
    try:
        await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_SECONDS)
    except TimeoutError:
        pool.terminate()


async def _version(conn: asyncpg.Connection) -> int:
    """The schema version recorded in `schema_migrations` (0 when none was applied)."""
    return int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))


async def schema_version(conn: asyncpg.Connection) -> int | None:
    """The schema version of the connection's schema, read only; None when it has none yet."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    return await _version(conn) if exists else None


async def connect_read_only(database_url: str) -> asyncpg.Connection:
    """One connection for an operator's look (`check`, `health`): every transaction on it is
    read-only, so the look can never change the database."""
    try:
        return await asyncpg.connect(
            database_url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"default_transaction_read_only": "on"},
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise StoreError(f"PostgreSQL refused the connection: {error}") from None


async def read_meta(database_url: str, key: str) -> str | None:
    """A value of the `meta` table, read only; None when it isn't there. Raises `StoreError`
    when the schema has no tables yet (the bot never started on it)."""
    conn = await connect_read_only(database_url)
    try:
        if await schema_version(conn) is None:
            raise StoreError("it has no tables yet (has the bot started with it?)")
        value = await conn.fetchval("SELECT value FROM meta WHERE key = $1", key)
    except asyncpg.PostgresError as error:
        raise StoreError(str(error)) from None
    finally:
        await conn.close()
    return None if value is None else str(value)


async def read_schema_version(database_url: str) -> int | None:
    """The schema version of the database, read only (None: the bot never started on it)."""
    conn = await connect_read_only(database_url)
    try:
        return await schema_version(conn)
    except asyncpg.PostgresError as error:
        raise StoreError(str(error)) from None
    finally:
        await conn.close()


async def _migrate(conn: asyncpg.Connection, migrations: Sequence[str], key: int) -> None:
    """Apply the pending migrations, each in its own transaction under the migration lock.

    The version is re-read under the lock, so two processes starting at once cannot apply the
    same migration twice; a database newer than the code is refused before anything changes.
    """
    target = len(migrations)
    version = 0
    while True:
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
                await conn.execute(_VERSION_TABLE)
                current = await _version(conn)
                if current > target:
                    raise MigrationError(
                        f"the database is at schema version {current}, newer than this code "
                        f"({target}); upgrade the bot"
                    )
                if current >= target:
                    return
                version = current + 1
                await conn.execute(migrations[version - 1])
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    version,
                    time.time(),
                )
        except asyncpg.PostgresError as error:
            raise MigrationError(
                f"migration to schema version {version} failed: {error}"
            ) from error
