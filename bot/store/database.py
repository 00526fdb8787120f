"""The seam between the store and a database: what a backend implements.

The store's parts (`tasks`, `reservations`, `guilds`, `interactions`) write their SQL once,
portable between SQLite and PostgreSQL (`RETURNING`, `ON CONFLICT`, partial indexes, no
`IS ?`), with `?` placeholders, and run it through a `Database`:

- `connection()`: a connection for a few statements that nothing else interleaves with;
  each statement commits on its own.
- `transaction(exclusive=...)`: statements that commit together or not at all. With
  `exclusive`, no other exclusive transaction runs at the same time: the reservation counts a
  user's tasks and inserts one, and two of those must never overlap.
- `close()`.

Text is stored as given, except the NUL character, which PostgreSQL can't store in text:
every backend writes it as U+FFFD (`text_params`), so a prompt or a provider's message holding
one is kept alike everywhere instead of failing on one backend.

A backend brings its own schema and migrations and rewrites `?` when its driver wants another
placeholder style (asyncpg numbers them: `$1`, `$2`, ...). A statement that breaks a
constraint of the schema (a second row with a unique value, a NULL where none may be, a
failed CHECK) raises `ConstraintError` on every backend; other driver errors go through as they
are. The backends: `SqliteDatabase` (`bot/store/sqlite.py`), `PostgresDatabase`
(`bot/store/postgres.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

#: One row of a result: its values in the order the statement selected them.
Row = Sequence[Any]
#: What a NUL character in text is stored as.
NUL_REPLACEMENT = "\ufffd"


def text_params(params: Sequence[Any]) -> Sequence[Any]:
    """The parameters as every backend stores them: NUL in text becomes U+FFFD."""
    if not any(isinstance(p, str) and "\x00" in p for p in params):
        return params
    return [p.replace("\x00", NUL_REPLACEMENT) if isinstance(p, str) else p for p in params]


class StoreError(Exception):
    """Base class of the store's own errors."""


class MigrationError(StoreError):
    """The database schema could not be brought to the current version."""


class ConstraintError(StoreError):
    """A statement broke a constraint of the schema (unique, not null, check); nothing of it
    was written. The driver's own error is its `__cause__`."""


class Connection(Protocol):
    """Runs statements: SQL with `?` placeholders and its parameters in order."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement and return its rows (none for a write without RETURNING)."""
        ...

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one statement whose rows, if any, are not needed."""
        ...


class Database(Protocol):
    """A database the store runs on (see the module docstring)."""

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection of its own for a few statements, each committed on its own."""
        ...

    def transaction(self, *, exclusive: bool = False) -> AbstractAsyncContextManager[Connection]:
        """A transaction: committed when the block ends, rolled back when it raises (or is
        cancelled). `exclusive`: it never overlaps another exclusive transaction."""
        ...

    async def close(self) -> None:
        """Close, after the statements in flight."""
        ...
