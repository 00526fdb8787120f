"""The SQLite store: task rows, the quota ledger, per-guild settings, migrations.

One `TaskStore` owns one aiosqlite connection. Every statement on it runs under an asyncio
lock, so a transaction started by one coroutine never swallows another coroutine's write.
Writes that must be atomic across processes (reservations, migrations) run in
`BEGIN IMMEDIATE` transactions, which take SQLite's write lock up front; other connections
wait for it (`busy_timeout`) instead of failing.

Durability: WAL journal with `synchronous=NORMAL`. A killed process (SIGKILL, OOM) never
loses a committed transaction nor corrupts the file: commits sit in the WAL, which the OS
keeps. Only a power cut / kernel crash can lose the last few commits (never consistency);
the engine's resume recovers an interrupted submit through `external_task_id`, so commits
without an fsync each are worth it. Pass `synchronous="FULL"` to `open` to fsync every commit.

Quota accounting: a task counts against the daily limits while `quota_refunded` is 0 and
`quota_reset_at` is NULL. `refund` sets the first (policy refunds by the engine);
`reset_usage` sets the second (an admin's reset), so the two stay distinguishable.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiosqlite

from bot.quota import DAY_SECONDS, QuotaExceeded, QuotaKind, QuotaLimits
from bot.tasks import (
    ACTIVE,
    FINISHED,
    TERMINAL,
    TRANSITIONS,
    GuildSettings,
    NewTask,
    QuotaOverride,
    Task,
    TaskNotes,
    TaskOptions,
    TaskState,
    UsageSummary,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "UPDATABLE_COLUMNS",
    "IntakeStage",
    "InteractionKind",
    "MigrationError",
    "NewOpenInteraction",
    "OpenInteraction",
    "StaleTransition",
    "StoreError",
    "TaskNotFound",
    "TaskStore",
    "parse_database_url",
]


class InteractionKind(StrEnum):
    """What an acknowledged interaction asked for."""

    VIDEO = "video"  # /video, the "Make a video" form, Regenerate
    DELETE = "delete"  # the Delete button under a result


class IntakeStage(StrEnum):
    """How far an open interaction got; each stage is written before the step it announces."""

    RECEIVED = "received"  # acknowledged; nothing reserved yet
    RESERVED = "reserved"  # its task is stored and quota reserved; the status message may be out
    STARTED = "started"  # the status message is recorded and the engine has the task


_STATE_LIST = ", ".join(f"'{s.value}'" for s in TaskState)
_ACTIVE_SQL = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE))
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))
_COUNTED = "quota_refunded = 0 AND quota_reset_at IS NULL"

# --- schema -------------------------------------------------------------------------------
# Each entry is one version; never edit a shipped entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    # v1: tasks
    f"""
    CREATE TABLE tasks (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        external_task_id  TEXT    NOT NULL UNIQUE,
        kling_task_id     TEXT    UNIQUE,
        user_id           INTEGER NOT NULL,
        guild_id          INTEGER,
        channel_id        INTEGER NOT NULL,
        status_message_id INTEGER,
        thread_id         INTEGER,
        result_message_id INTEGER,
        locale            TEXT    NOT NULL,
        prompt            TEXT    NOT NULL,
        options           TEXT    NOT NULL CHECK (json_valid(options)),
        image_count       INTEGER NOT NULL CHECK (image_count >= 0),
        input_dir         TEXT    NOT NULL,
        state             TEXT    NOT NULL CHECK (state IN ({_STATE_LIST})),
        status_message    TEXT,
        error_code        TEXT,
        video_url         TEXT,
        video_path        TEXT,
        video_bytes       INTEGER,
        attempts          INTEGER NOT NULL DEFAULT 0,
        quota_refunded    INTEGER NOT NULL DEFAULT 0 CHECK (quota_refunded IN (0, 1)),
        callback_token    TEXT,
        upload_limit      INTEGER NOT NULL,
        created_at        REAL    NOT NULL,
        updated_at        REAL    NOT NULL,
        submitted_at      REAL,
        finished_at       REAL,
        delivered_at      REAL
    );
    CREATE INDEX idx_tasks_user_created ON tasks (user_id, created_at);
    CREATE INDEX idx_tasks_guild_created ON tasks (guild_id, created_at);
    CREATE INDEX idx_tasks_created ON tasks (created_at);
    CREATE INDEX idx_tasks_state ON tasks (state);
    """,
    # v2: what guild admins set from Discord, and a small key-value table
    """
    CREATE TABLE guild_settings (
        guild_id            INTEGER PRIMARY KEY,
        daily_per_user      INTEGER CHECK (daily_per_user >= 0),
        concurrent_per_user INTEGER CHECK (concurrent_per_user >= 0),
        daily_per_guild     INTEGER CHECK (daily_per_guild >= 0),
        log_channel_id      INTEGER
    );
    CREATE TABLE quota_overrides (
        guild_id   INTEGER NOT NULL,
        kind       TEXT    NOT NULL CHECK (kind IN ('role', 'user')),
        target_id  INTEGER NOT NULL,
        daily      INTEGER CHECK (daily >= 0),
        concurrent INTEGER CHECK (concurrent >= 0),
        exempt     INTEGER NOT NULL DEFAULT 0 CHECK (exempt IN (0, 1)),
        PRIMARY KEY (guild_id, kind, target_id)
    );
    CREATE TABLE blocked_users (
        guild_id   INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        reason     TEXT,
        blocked_at REAL    NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE TABLE blocked_words (
        guild_id INTEGER NOT NULL,
        word     TEXT    NOT NULL,
        PRIMARY KEY (guild_id, word)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # v3: admin usage resets and input retention on tasks; partial indexes that let every
    # quota count run on an index alone (only the rows that count are in them)
    f"""
    ALTER TABLE tasks ADD COLUMN quota_reset_at REAL;
    ALTER TABLE tasks ADD COLUMN inputs_removed_at REAL;
    DROP INDEX idx_tasks_created;
    CREATE INDEX idx_tasks_counted_user ON tasks (user_id, created_at) WHERE {_COUNTED};
    CREATE INDEX idx_tasks_counted_guild ON tasks (guild_id, created_at) WHERE {_COUNTED};
    CREATE INDEX idx_tasks_counted ON tasks (created_at) WHERE {_COUNTED};
    CREATE INDEX idx_tasks_user_active ON tasks (user_id) WHERE state IN ({_ACTIVE_SQL});
    """,
    # v4: how many times the current submit was POSTed, written before each POST, so a
    # restart never sends a task a third time (kling-api.md decision 8: at most one resend)
    """
    ALTER TABLE tasks ADD COLUMN submit_posts INTEGER NOT NULL DEFAULT 0;
    """,
    # v5: nothing lost when the process dies. `notified_at`: when the user was told how the
    # task ended (its video, its failure notice, or the intake's answer); a task the user
    # wasn't told about yet is still the engine's. `log_started_at` is written before the
    # log-channel line is posted and `log_message_id` after, so a restart looks for a line that
    # may be out before posting one. `open_interactions`: every interaction the bot acknowledged
    # and still owes an answer (a /video intake, a Delete press), written when it is
    # acknowledged and removed once answered, so a restart answers each one exactly once.
    f"""
    ALTER TABLE tasks ADD COLUMN notified_at REAL;
    ALTER TABLE tasks ADD COLUMN log_started_at REAL;
    ALTER TABLE tasks ADD COLUMN log_message_id INTEGER;
    UPDATE tasks SET notified_at = COALESCE(delivered_at, finished_at, updated_at)
        WHERE state IN ({_TERMINAL_SQL});
    CREATE INDEX idx_tasks_untold ON tasks (id) WHERE notified_at IS NULL;
    CREATE TABLE open_interactions (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        interaction_id   INTEGER NOT NULL UNIQUE,
        kind             TEXT    NOT NULL CHECK (kind IN ('video', 'delete')),
        application_id   INTEGER NOT NULL,
        token            TEXT    NOT NULL,
        token_expires_at REAL    NOT NULL,
        user_id          INTEGER NOT NULL,
        guild_id         INTEGER,
        channel_id       INTEGER NOT NULL,
        locale           TEXT    NOT NULL,
        payload          TEXT    NOT NULL CHECK (json_valid(payload)),
        external_task_id TEXT    UNIQUE,
        task_id          INTEGER,
        stage            TEXT    NOT NULL CHECK (stage IN ('received', 'reserved', 'started')),
        created_at       REAL    NOT NULL,
        updated_at       REAL    NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


# --- errors ----------------------------------------------------------------------------------


class StoreError(Exception):
    """Base class of the store's own errors."""


class MigrationError(StoreError):
    """The database schema could not be brought to the current version."""


class TaskNotFound(StoreError, LookupError):
    """No task has that id."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id} does not exist")


class StaleTransition(StoreError):
    """A guarded transition found the task in a state other than the expected ones."""

    def __init__(
        self,
        task_id: int,
        to: TaskState,
        expected: frozenset[TaskState],
        actual: TaskState,
    ) -> None:
        self.task_id = task_id
        self.to = to
        self.expected = expected
        self.actual = actual
        wanted = ", ".join(sorted(s.value for s in expected))
        super().__init__(
            f"task {task_id}: cannot move to {to.value}; it is {actual.value}, expected {wanted}"
        )


# --- rows --------------------------------------------------------------------------------------


#: The columns of the tasks table, in `Task`'s order: its fields but `notes`, which shares the
#: `options` column's JSON object with the options.
_TASK_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Task) if f.name != "notes")
_SELECT_TASK = f"SELECT {', '.join(_TASK_COLUMNS)} FROM tasks"
_RETURNING = f"RETURNING {', '.join(_TASK_COLUMNS)}"
#: Columns `update` and `transition` may set; the rest are managed by the store.
UPDATABLE_COLUMNS: frozenset[str] = (frozenset(_TASK_COLUMNS) | {"notes"}) - {
    "id",
    "options",  # what was sent to the API; the notes beside it in the column may change
    "external_task_id",
    "user_id",
    "guild_id",
    "created_at",
    "updated_at",
    "state",
    "quota_refunded",
    "quota_reset_at",
}
_NOT_NULL_UPDATABLE = frozenset(
    {
        "channel_id",
        "locale",
        "prompt",
        "notes",
        "image_count",
        "input_dir",
        "attempts",
        "upload_limit",
        "submit_posts",
    }
)


def _task_from_row(row: Sequence[Any]) -> Task:
    """Build a `Task` from a row selected with `_TASK_COLUMNS` in order."""
    values = dict(zip(_TASK_COLUMNS, row, strict=True))
    stored = json.loads(values["options"])
    values["options"] = TaskOptions.from_json(stored)
    values["notes"] = TaskNotes.from_json(stored)
    values["state"] = TaskState(values["state"])
    values["quota_refunded"] = bool(values["quota_refunded"])
    return Task(**values)


@dataclass(frozen=True, slots=True)
class OpenInteraction:
    """An interaction the bot acknowledged and still owes an answer (one row of the journal).

    The token answers the interaction by REST until `token_expires_at`; it is a credential for
    that time and never printed (left out of `repr`).
    """

    id: int
    interaction_id: int
    kind: InteractionKind
    application_id: int
    token: str = field(repr=False)
    token_expires_at: float
    user_id: int
    guild_id: int | None
    channel_id: int
    locale: str
    payload: dict[str, Any]
    external_task_id: str | None
    task_id: int | None
    stage: IntakeStage
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NewOpenInteraction:
    """What is known of an interaction when it is acknowledged: the fields of the insert."""

    interaction_id: int
    kind: InteractionKind
    application_id: int
    token: str = field(repr=False)
    token_expires_at: float
    user_id: int
    guild_id: int | None
    channel_id: int
    locale: str
    payload: dict[str, Any]
    external_task_id: str | None = None
    task_id: int | None = None


_INTERACTION_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(OpenInteraction))
_SELECT_INTERACTION = f"SELECT {', '.join(_INTERACTION_COLUMNS)} FROM open_interactions"


def _interaction_from_row(row: Sequence[Any]) -> OpenInteraction:
    """Build an `OpenInteraction` from a row selected with `_INTERACTION_COLUMNS` in order."""
    values = dict(zip(_INTERACTION_COLUMNS, row, strict=True))
    values["payload"] = json.loads(values["payload"])
    values["kind"] = InteractionKind(values["kind"])
    values["stage"] = IntakeStage(values["stage"])
    return OpenInteraction(**values)


_GUILD_LIMITS: frozenset[str] = frozenset(
    {"daily_per_user", "concurrent_per_user", "daily_per_guild"}
)


def parse_database_url(database_url_or_path: str | Path) -> str:
    """The SQLite path from `sqlite:///path`, `sqlite:///:memory:` or a plain path."""
    text = str(database_url_or_path)
    if text.startswith("sqlite:///"):
        text = text.removeprefix("sqlite:///")
    elif "://" in text:
        raise ValueError("only sqlite:///path or sqlite:///:memory: is supported")
    if not text:
        raise ValueError("the database path is empty")
    return text


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


def _check_limit(name: str, value: object) -> int | None:
    """Accept None or a non-negative int for a limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or None")
    return value


# --- the store ---------------------------------------------------------------------------------


class TaskStore:
    """Task rows, quota reservations and guild settings on one SQLite connection."""

    def __init__(
        self, conn: aiosqlite.Connection, path: str, *, now: Callable[[], float] = time.time
    ) -> None:
        """Wrap an open, migrated connection; use `TaskStore.open` instead."""
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path
        self._now = now

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        database_url_or_path: str | Path,
        *,
        now: Callable[[], float] = time.time,
        busy_timeout_ms: int = 10_000,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        migrations: Sequence[str] = MIGRATIONS,
    ) -> TaskStore:
        """Open (creating if needed) the database, set it up and migrate it to the current schema."""
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
        return cls(conn, path, now=now)

    async def close(self) -> None:
        """Close the connection (waits for statements in flight)."""
        async with self._lock:
            await self._conn.close()

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

    async def schema_version(self) -> int:
        """The database's `PRAGMA user_version`."""
        async with self._lock:
            return await _user_version(self._conn)

    # --- transaction helpers ---------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, alone (no other coroutine's statement can interleave)."""
        async with self._lock:
            yield self._conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any error."""
        async with self._lock:
            conn = self._conn
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                # Also on cancellation: aiosqlite runs queued statements in order even when
                # their awaiter is cancelled, so this ROLLBACK lands after a BEGIN still in
                # flight and the connection is never left inside a transaction.
                await _rollback_quietly(conn)
                raise

    async def _fetch_tasks(self, sql: str, params: Sequence[Any] = ()) -> list[Task]:
        """Run a SELECT of task columns and build the rows."""
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(sql, params)
        return [_task_from_row(r) for r in rows]

    async def _fetch_task(self, sql: str, params: Sequence[Any]) -> Task | None:
        """Run a SELECT of task columns expected to match at most one row."""
        tasks = await self._fetch_tasks(sql, params)
        return tasks[0] if tasks else None

    # --- reservation (quota + insert, atomically) -----------------------------------------

    async def reserve(
        self,
        new_task: NewTask,
        limits: QuotaLimits,
        *,
        window: float = DAY_SECONDS,
        interaction: int | None = None,
    ) -> Task:
        """Check every quota and insert the `queued` task in one transaction, or raise.

        Raises `QuotaExceeded` (kind `blocked` first, then the limit that bites in the order
        concurrent, user daily, guild daily, global daily) and leaves the database unchanged.
        With `interaction` (an open interaction's id, stage `received`), the same transaction
        links the task to it and moves it to `reserved`, so a crash can never leave a task that
        its request doesn't know of (nor reserve twice for one request).
        """
        options = _options_json(new_task.options, new_task.notes)
        now = self._now()
        since = now - window
        user_id, guild_id = new_task.user_id, new_task.guild_id
        checks = limits.checks(in_guild=guild_id is not None)

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

        async with self._transaction() as conn:
            rows = list(await conn.execute_fetchall(f"SELECT {', '.join(selects)}", params))
            counts = rows[0]
            if counts[0]:
                raise QuotaExceeded(QuotaKind.BLOCKED, 0, 0, None)
            for (kind, limit), used in zip(checks, counts[1:], strict=True):
                if used >= limit:
                    next_free = await _next_free(conn, kind, user_id, guild_id, since, used, limit)
                    raise QuotaExceeded(
                        kind, used, limit, None if next_free is None else next_free + window
                    )
            inserted = await conn.execute_fetchall(
                f"""INSERT INTO tasks (external_task_id, user_id, guild_id, channel_id,
                        status_message_id, thread_id, locale, prompt, options, image_count,
                        input_dir, state, callback_token, upload_limit, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {_RETURNING}""",
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
                ),
            )
            row = next(iter(inserted))
            if interaction is not None:
                linked = await conn.execute_fetchall(
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
                if not list(linked):
                    raise StoreError(f"interaction {interaction} is not waiting for a reservation")
        return _task_from_row(row)

    # --- writes on one task ------------------------------------------------------------------

    async def transition(self, task_id: int, to: TaskState, **fields: Any) -> Task:
        """Move a task to `to` (plus `fields`) in one UPDATE, from a state `TRANSITIONS` allows.

        Sets `updated_at`; `submitted_at` on entering submitted, `finished_at` on entering
        succeeded/failed/timed_out (and delivered, if not set yet), `delivered_at` on
        delivered — unless given in `fields`. Raises `StaleTransition` when the task is in a
        state `to` can't be entered from, `TaskNotFound` when it does not exist.
        """
        to = TaskState(to)
        expected = TRANSITIONS[to]
        now = self._now()
        assignments = ["state = ?", "updated_at = ?"]
        params: list[Any] = [to.value, now]
        if to is TaskState.SUBMITTED and "submitted_at" not in fields:
            assignments.append("submitted_at = ?")
            params.append(now)
        if to in FINISHED and "finished_at" not in fields:
            if to is TaskState.DELIVERED:  # delivered after succeeded: keep when it finished
                assignments.append("finished_at = COALESCE(finished_at, ?)")
            else:
                assignments.append("finished_at = ?")
            params.append(now)
        if to is TaskState.DELIVERED:
            if "notified_at" not in fields:  # its video is the user's answer
                assignments.append("notified_at = ?")
                params.append(now)
            if "delivered_at" not in fields:
                assignments.append("delivered_at = ?")
                params.append(now)
        async with self._connection() as conn:
            options = await _stored_options(conn, task_id) if "notes" in fields else None
            more, more_params = _assignments(fields, options)
            sql = (
                f"UPDATE tasks SET {', '.join([*assignments, *more])} WHERE id = ? "
                f"AND state IN ({', '.join('?' for _ in expected)}) {_RETURNING}"
            )
            rows = list(
                await conn.execute_fetchall(
                    sql, [*params, *more_params, task_id, *(s.value for s in expected)]
                )
            )
            if not rows:
                found = list(
                    await conn.execute_fetchall("SELECT state FROM tasks WHERE id = ?", (task_id,))
                )
        if rows:
            return _task_from_row(rows[0])
        if not found:
            raise TaskNotFound(task_id)
        raise StaleTransition(task_id, to, expected, TaskState(found[0][0]))

    async def update(self, task_id: int, **fields: Any) -> Task:
        """Set non-state fields of a task (e.g. thread_id, status_message_id, notes)."""
        if not fields:
            raise ValueError("update needs at least one field")
        now = self._now()
        async with self._connection() as conn:
            options = await _stored_options(conn, task_id) if "notes" in fields else None
            assignments, params = _assignments(fields, options)
            sql = (
                f"UPDATE tasks SET {', '.join(assignments)}, updated_at = ? WHERE id = ? "
                f"{_RETURNING}"
            )
            rows = list(await conn.execute_fetchall(sql, [*params, now, task_id]))
        if not rows:
            raise TaskNotFound(task_id)
        return _task_from_row(rows[0])

    async def refund(self, task_id: int) -> bool:
        """Give a task's quota back (idempotent); True when this call changed it."""
        async with self._connection() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "UPDATE tasks SET quota_refunded = 1, updated_at = ? "
                    "WHERE id = ? AND quota_refunded = 0 RETURNING id",
                    (self._now(), task_id),
                )
            )
            if rows:
                return True
            exists = list(
                await conn.execute_fetchall("SELECT 1 FROM tasks WHERE id = ?", (task_id,))
            )
        if not exists:
            raise TaskNotFound(task_id)
        return False

    # --- queries -------------------------------------------------------------------------------

    async def get(self, task_id: int) -> Task | None:
        """The task with this internal id, or None."""
        return await self._fetch_task(f"{_SELECT_TASK} WHERE id = ?", (task_id,))

    async def by_kling_id(self, kling_task_id: str) -> Task | None:
        """The task with this Kling task id, or None."""
        return await self._fetch_task(f"{_SELECT_TASK} WHERE kling_task_id = ?", (kling_task_id,))

    async def by_external_id(self, external_task_id: str) -> Task | None:
        """The task with this external (our own) task id, or None."""
        return await self._fetch_task(
            f"{_SELECT_TASK} WHERE external_task_id = ?", (external_task_id,)
        )

    async def recent_for_user(
        self, user_id: int, limit: int = 10, *, guild_id: int | None = None
    ) -> list[Task]:
        """A user's latest tasks, newest first (optionally only those from one guild)."""
        if guild_id is None:
            return await self._fetch_tasks(
                f"{_SELECT_TASK} WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                (user_id, limit),
            )
        return await self._fetch_tasks(
            f"{_SELECT_TASK} WHERE user_id = ? AND guild_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (user_id, guild_id, limit),
        )

    async def unfinished(self) -> list[Task]:
        """Every task the engine still has to move or tell the user about, by id.

        That is every task whose end the user hasn't been told yet (`notified_at` unset),
        except those still in their intake (an open interaction at stage `reserved` owns them
        until its status message is recorded).
        """
        return await self._fetch_tasks(
            f"{_SELECT_TASK} WHERE notified_at IS NULL AND id NOT IN ("
            "SELECT task_id FROM open_interactions WHERE stage = 'reserved' "
            "AND task_id IS NOT NULL) ORDER BY id"
        )

    async def queue(self) -> list[tuple[Task, int]]:
        """The queued tasks in FIFO order, each with its 1-based position."""
        tasks = await self._fetch_tasks(f"{_SELECT_TASK} WHERE state = 'queued' ORDER BY id")
        return [(task, position) for position, task in enumerate(tasks, start=1)]

    async def queue_position(self, task_id: int) -> int | None:
        """A queued task's 1-based place in the queue, or None when it is not queued."""
        async with self._connection() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT (SELECT COUNT(*) FROM tasks q WHERE q.state = 'queued' AND q.id <= t.id)"
                    " FROM tasks t WHERE t.id = ? AND t.state = 'queued'",
                    (task_id,),
                )
            )
        return int(rows[0][0]) if rows else None

    async def active_for_user(self, user_id: int) -> list[Task]:
        """A user's tasks that hold a concurrent slot (queued … processing), oldest first."""
        return await self._fetch_tasks(
            f"{_SELECT_TASK} WHERE user_id = ? AND state IN ({_ACTIVE_SQL}) ORDER BY id",
            (user_id,),
        )

    async def usage(
        self, *, user_id: int | None = None, guild_id: int | None = None, since: float
    ) -> int:
        """How many tasks created after `since` count against quota (not refunded or reset).

        With `user_id` the user's (everywhere), with `guild_id` the guild's, with both the
        user's in that guild, with neither every task.
        """
        where = [f"created_at > ? AND {_COUNTED}"]
        params: list[Any] = [since]
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if guild_id is not None:
            where.append("guild_id = ?")
            params.append(guild_id)
        async with self._connection() as conn:
            rows = list(
                await conn.execute_fetchall(
                    f"SELECT COUNT(*) FROM tasks WHERE {' AND '.join(where)}", params
                )
            )
        return int(rows[0][0])

    async def next_slot_frees_at(
        self, user_id: int, window: float = DAY_SECONDS, *, limit: int | None = None
    ) -> float | None:
        """When the user's daily usage next drops (below `limit`, if given), or None if never."""
        since = self._now() - window
        async with self._connection() as conn:
            if limit is None:
                used, offset = 1, 0
            else:
                sql, params = _usage_sql(QuotaKind.DAILY_USER, user_id, None, since)
                used = int(next(iter(await conn.execute_fetchall(sql, params)))[0])
                offset = max(used - limit, 0)
            if used == 0:
                return None
            oldest = await _nth_counted(conn, QuotaKind.DAILY_USER, user_id, None, since, offset)
        return None if oldest is None else oldest + window

    async def counts_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state (every state present, zeros included)."""
        async with self._connection() as conn:
            rows = await conn.execute_fetchall("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        counts = dict.fromkeys(TaskState, 0)
        for state, count in rows:
            counts[TaskState(state)] = int(count)
        return counts

    async def usage_summary(self, guild_id: int, since: float) -> UsageSummary:
        """A guild's tasks since `since`: how many, by state, and by how many users."""
        async with self._connection() as conn:
            by_state_rows = await conn.execute_fetchall(
                "SELECT state, COUNT(*) FROM tasks WHERE guild_id = ? AND created_at >= ? "
                "GROUP BY state",
                (guild_id, since),
            )
            users = list(
                await conn.execute_fetchall(
                    "SELECT COUNT(DISTINCT user_id) FROM tasks "
                    "WHERE guild_id = ? AND created_at >= ?",
                    (guild_id, since),
                )
            )
        by_state = dict.fromkeys(TaskState, 0)
        for state, count in by_state_rows:
            by_state[TaskState(state)] = int(count)
        return UsageSummary(
            tasks=sum(by_state.values()), by_state=by_state, distinct_users=int(users[0][0])
        )

    # --- retention -----------------------------------------------------------------------------

    async def delete_older_than(self, ts: float) -> int:
        """Delete terminal tasks last changed before `ts`; returns how many went.

        Unfinished and succeeded-but-undelivered tasks are never deleted. Deleting rows younger
        than the quota window would give their quota back, so pass `ts` ≤ now − 24 h.
        """
        async with self._transaction() as conn:
            rows = await conn.execute_fetchall(
                f"DELETE FROM tasks WHERE state IN ({_TERMINAL_SQL}) AND updated_at < ? "
                "RETURNING id",
                (ts,),
            )
        return len(list(rows))

    async def expired_inputs(self, ts: float) -> list[Task]:
        """Terminal tasks last changed before `ts` whose inputs are still on disk.

        After removing the files, record it with `update(task_id, inputs_removed_at=...)`.
        """
        return await self._fetch_tasks(
            f"{_SELECT_TASK} WHERE state IN ({_TERMINAL_SQL}) AND updated_at < ? "
            "AND inputs_removed_at IS NULL ORDER BY id",
            (ts,),
        )

    # --- open interactions (acknowledged, not yet answered) -------------------------------------

    async def open_interaction(self, new: NewOpenInteraction) -> OpenInteraction:
        """Record an acknowledged interaction (the same one again returns the first record)."""
        now = self._now()
        async with self._connection() as conn:
            await conn.execute(
                """INSERT INTO open_interactions (interaction_id, kind, application_id, token,
                        token_expires_at, user_id, guild_id, channel_id, locale, payload,
                        external_task_id, task_id, stage, created_at, updated_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (interaction_id) DO NOTHING""",
                (
                    new.interaction_id,
                    InteractionKind(new.kind).value,
                    new.application_id,
                    new.token,
                    new.token_expires_at,
                    new.user_id,
                    new.guild_id,
                    new.channel_id,
                    new.locale,
                    _dump_json(new.payload),
                    new.external_task_id,
                    new.task_id,
                    IntakeStage.RECEIVED.value,
                    now,
                    now,
                ),
            )
            rows = list(
                await conn.execute_fetchall(
                    f"{_SELECT_INTERACTION} WHERE interaction_id = ?", (new.interaction_id,)
                )
            )
        return _interaction_from_row(rows[0])

    async def get_open_interaction(self, record_id: int) -> OpenInteraction | None:
        """One open interaction by its record id, or None when it was answered."""
        async with self._connection() as conn:
            rows = list(
                await conn.execute_fetchall(f"{_SELECT_INTERACTION} WHERE id = ?", (record_id,))
            )
        return _interaction_from_row(rows[0]) if rows else None

    async def open_interactions(self) -> list[OpenInteraction]:
        """Every interaction a run acknowledged and didn't answer yet, oldest first."""
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(f"{_SELECT_INTERACTION} ORDER BY id")
        return [_interaction_from_row(r) for r in rows]

    async def hand_over(self, record_id: int, task_id: int, **task_fields: Any) -> Task:
        """Record the intake's last facts on its task (`task_fields`, e.g. the status message)
        and move the interaction to `started`, in one transaction: the task is the engine's."""
        now = self._now()
        async with self._transaction() as conn:
            options = await _stored_options(conn, task_id) if "notes" in task_fields else None
            assignments, params = _assignments(task_fields, options)
            assignments.append("updated_at = ?")
            rows = list(
                await conn.execute_fetchall(
                    f"UPDATE tasks SET {', '.join(assignments)} WHERE id = ? {_RETURNING}",
                    [*params, now, task_id],
                )
            )
            if not rows:
                raise TaskNotFound(task_id)
            moved = await conn.execute_fetchall(
                "UPDATE open_interactions SET stage = ?, updated_at = ? "
                "WHERE id = ? AND task_id = ? AND stage = ? RETURNING id",
                (IntakeStage.STARTED.value, now, record_id, task_id, IntakeStage.RESERVED.value),
            )
            if not list(moved):
                raise StoreError(f"interaction {record_id} is not reserved for task {task_id}")
        return _task_from_row(rows[0])

    async def close_interaction(self, record_id: int) -> None:
        """The interaction got its answer: forget it (and its token).

        A task its intake ended (failed before the engine got it) was told by that answer, so
        it is marked told in the same transaction.
        """
        now = self._now()
        async with self._transaction() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "DELETE FROM open_interactions WHERE id = ? RETURNING stage, task_id",
                    (record_id,),
                )
            )
            if rows and rows[0][0] == IntakeStage.RESERVED.value and rows[0][1] is not None:
                await conn.execute(
                    "UPDATE tasks SET notified_at = ?, updated_at = ? "
                    "WHERE id = ? AND state IN ('failed', 'timed_out') AND notified_at IS NULL",
                    (now, now, rows[0][1]),
                )

    # --- guild settings ------------------------------------------------------------------------

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        """Everything the guild's admins set (defaults when nothing is set)."""
        async with self._connection() as conn:
            limits = list(
                await conn.execute_fetchall(
                    "SELECT daily_per_user, concurrent_per_user, daily_per_guild, log_channel_id "
                    "FROM guild_settings WHERE guild_id = ?",
                    (guild_id,),
                )
            )
            overrides = await conn.execute_fetchall(
                "SELECT kind, target_id, daily, concurrent, exempt FROM quota_overrides "
                "WHERE guild_id = ?",
                (guild_id,),
            )
            blocked = await conn.execute_fetchall(
                "SELECT user_id FROM blocked_users WHERE guild_id = ?", (guild_id,)
            )
            words = await conn.execute_fetchall(
                "SELECT word FROM blocked_words WHERE guild_id = ? ORDER BY word", (guild_id,)
            )
        roles: dict[int, QuotaOverride] = {}
        users: dict[int, QuotaOverride] = {}
        for kind, target_id, daily, concurrent, exempt in overrides:
            target = roles if kind == "role" else users
            target[int(target_id)] = QuotaOverride(daily, concurrent, bool(exempt))
        row = limits[0] if limits else (None, None, None, None)
        return GuildSettings(
            guild_id=guild_id,
            daily_per_user=row[0],
            concurrent_per_user=row[1],
            daily_per_guild=row[2],
            log_channel_id=row[3],
            role_overrides=roles,
            user_overrides=users,
            blocked_users=frozenset(int(r[0]) for r in blocked),
            blocked_words=tuple(str(r[0]) for r in words),
        )

    async def set_guild_limits(self, guild_id: int, **limits: int | None) -> GuildSettings:
        """Set some of daily_per_user, concurrent_per_user, daily_per_guild (None = default)."""
        unknown = set(limits) - _GUILD_LIMITS
        if unknown:
            raise ValueError(f"unknown guild limit(s): {', '.join(sorted(unknown))}")
        checked = {name: _check_limit(name, value) for name, value in limits.items()}
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id) VALUES (?) ON CONFLICT DO NOTHING",
                (guild_id,),
            )
            if checked:
                names = sorted(checked)
                await conn.execute(
                    f"UPDATE guild_settings SET {', '.join(f'{n} = ?' for n in names)} "
                    "WHERE guild_id = ?",
                    [*(checked[n] for n in names), guild_id],
                )
        return await self.get_guild_settings(guild_id)

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        """Set (or with None clear) the guild's log channel."""
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id, log_channel_id) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET log_channel_id = excluded.log_channel_id",
                (guild_id, channel_id),
            )

    async def set_override(
        self,
        guild_id: int,
        kind: Literal["role", "user"],
        target_id: int,
        daily: int | None = None,
        concurrent: int | None = None,
        exempt: bool = False,
    ) -> QuotaOverride:
        """Create or replace a role's or user's quota override in a guild."""
        if kind not in ("role", "user"):
            raise ValueError("kind must be 'role' or 'user'")
        override = QuotaOverride(
            _check_limit("daily", daily), _check_limit("concurrent", concurrent), bool(exempt)
        )
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO quota_overrides (guild_id, kind, target_id, daily, concurrent, exempt) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id, kind, target_id) DO UPDATE SET "
                "daily = excluded.daily, concurrent = excluded.concurrent, exempt = excluded.exempt",
                (guild_id, kind, target_id, daily, concurrent, int(exempt)),
            )
        return override

    async def remove_override(
        self, guild_id: int, kind: Literal["role", "user"], target_id: int
    ) -> bool:
        """Remove an override; True when there was one."""
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(
                "DELETE FROM quota_overrides WHERE guild_id = ? AND kind = ? AND target_id = ? "
                "RETURNING 1",
                (guild_id, kind, target_id),
            )
        return bool(list(rows))

    async def block_user(self, guild_id: int, user_id: int, *, reason: str | None = None) -> bool:
        """Block a user from starting videos in a guild; True when newly blocked."""
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(
                "INSERT INTO blocked_users (guild_id, user_id, reason, blocked_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                (guild_id, user_id, reason, self._now()),
            )
        return bool(list(rows))

    async def unblock_user(self, guild_id: int, user_id: int) -> bool:
        """Lift a block; True when the user was blocked."""
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(
                "DELETE FROM blocked_users WHERE guild_id = ? AND user_id = ? RETURNING 1",
                (guild_id, user_id),
            )
        return bool(list(rows))

    async def is_blocked(self, guild_id: int | None, user_id: int) -> bool:
        """Whether the user is blocked in the guild (never in DMs)."""
        if guild_id is None:
            return False
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(
                "SELECT 1 FROM blocked_users WHERE guild_id = ? AND user_id = ?",
                (guild_id, user_id),
            )
        return bool(list(rows))

    async def add_blocked_word(self, guild_id: int, word: str) -> bool:
        """Add a blocked word/phrase (stored trimmed and lower-cased); True when new."""
        normalized = " ".join(word.split()).casefold()
        if not normalized:
            raise ValueError("a blocked word cannot be empty")
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(
                "INSERT INTO blocked_words (guild_id, word) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (guild_id, normalized),
            )
        return bool(list(rows))

    async def remove_blocked_word(self, guild_id: int, word: str) -> bool:
        """Remove a blocked word/phrase; True when it was there."""
        normalized = " ".join(word.split()).casefold()
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(
                "DELETE FROM blocked_words WHERE guild_id = ? AND word = ? RETURNING 1",
                (guild_id, normalized),
            )
        return bool(list(rows))

    async def reset_usage(
        self, guild_id: int | None, user_id: int, *, window: float = DAY_SECONDS
    ) -> int:
        """Stop the user's tasks in this guild from the last `window` counting; returns how many.

        Sets `quota_reset_at` on them (not `quota_refunded`, which stays the engine's policy
        refund). Tasks still running keep their concurrent slot: that limit counts real work.
        """
        now = self._now()
        async with self._connection() as conn:
            rows = await conn.execute_fetchall(
                f"UPDATE tasks SET quota_reset_at = ?, updated_at = ? "
                f"WHERE user_id = ? AND guild_id IS ? AND created_at > ? AND {_COUNTED} "
                "RETURNING id",
                (now, now, user_id, guild_id, now - window),
            )
        return len(list(rows))

    # --- key-value ---------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value from the key-value table, or None."""
        async with self._connection() as conn:
            rows = list(await conn.execute_fetchall("SELECT value FROM meta WHERE key = ?", (key,)))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value in the key-value table."""
        async with self._connection() as conn:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


# --- module helpers -------------------------------------------------------------------------


def _dump_json(value: Mapping[str, Any]) -> str:
    """A JSON object, compact and with sorted keys."""
    if not isinstance(value, Mapping):
        raise TypeError("a JSON column holds an object (a dict)")
    return json.dumps(dict(value), separators=(",", ":"), sort_keys=True)


def _options_json(options: TaskOptions, notes: TaskNotes) -> str:
    """The `options` column: the API options and the bot's notes in one JSON object."""
    return _dump_json({**options.to_json(), **notes.to_json()})


async def _stored_options(conn: aiosqlite.Connection, task_id: int) -> TaskOptions:
    """A task's API options as stored (they never change after the insert)."""
    rows = list(await conn.execute_fetchall("SELECT options FROM tasks WHERE id = ?", (task_id,)))
    if not rows:
        raise TaskNotFound(task_id)
    return TaskOptions.from_json(json.loads(rows[0][0]))


def _assignments(
    values: Mapping[str, Any], options: TaskOptions | None = None
) -> tuple[list[str], list[Any]]:
    """`col = ?` pieces and parameters for an UPDATE, with names and values checked.

    `notes` is written into the `options` column, beside the task's stored `options`.
    """
    unknown = set(values) - UPDATABLE_COLUMNS
    if unknown:
        raise ValueError(f"not an updatable task field: {', '.join(sorted(unknown))}")
    assignments: list[str] = []
    params: list[Any] = []
    for name in sorted(values):
        value = values[name]
        if value is None and name in _NOT_NULL_UPDATABLE:
            raise ValueError(f"{name} cannot be None")
        if name == "notes":
            assert options is not None, "notes are written beside the stored options"
            name, value = "options", _options_json(options, value)
        elif isinstance(value, StrEnum):
            value = value.value
        assignments.append(f"{name} = ?")
        params.append(value)
    return assignments, params


def _usage_sql(
    kind: QuotaKind, user_id: int, guild_id: int | None, since: float
) -> tuple[str, list[Any]]:
    """The COUNT query for one quota kind and its parameters."""
    if kind is QuotaKind.CONCURRENT_USER:
        return (
            f"SELECT COUNT(*) FROM tasks WHERE user_id = ? AND state IN ({_ACTIVE_SQL})",
            [user_id],
        )
    where, params = _daily_scope(kind, user_id, guild_id, since)
    return f"SELECT COUNT(*) FROM tasks WHERE {where}", params


def _daily_scope(
    kind: QuotaKind, user_id: int, guild_id: int | None, since: float
) -> tuple[str, list[Any]]:
    """The WHERE clause of the tasks that count for one daily quota kind."""
    if kind is QuotaKind.DAILY_USER:
        return f"user_id = ? AND created_at > ? AND {_COUNTED}", [user_id, since]
    if kind is QuotaKind.DAILY_GUILD:
        return f"guild_id = ? AND created_at > ? AND {_COUNTED}", [guild_id, since]
    if kind is QuotaKind.DAILY_GLOBAL:
        return f"created_at > ? AND {_COUNTED}", [since]
    raise ValueError(f"{kind} is not a daily quota")


async def _nth_counted(
    conn: aiosqlite.Connection,
    kind: QuotaKind,
    user_id: int,
    guild_id: int | None,
    since: float,
    offset: int,
) -> float | None:
    """created_at of the (offset+1)-th oldest counted task in a daily scope, or None."""
    where, params = _daily_scope(kind, user_id, guild_id, since)
    rows = list(
        await conn.execute_fetchall(
            f"SELECT created_at FROM tasks WHERE {where} ORDER BY created_at LIMIT 1 OFFSET ?",
            [*params, offset],
        )
    )
    return float(rows[0][0]) if rows else None


async def _next_free(
    conn: aiosqlite.Connection,
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
