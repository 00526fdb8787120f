"""A task as a row of the `tasks` table, and what the store's parts share to read and write it.

The `options` column holds one JSON object: the task's `TaskOptions` (fixed at the insert) and
its `TaskNotes` beside them, under the keys the bot has always written, so rows from before
the two were typed load as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from enum import StrEnum
from typing import Any

from bot.store.database import Connection, Database, Row, StoreError
from bot.tasks import ACTIVE, TERMINAL, Task, TaskNotes, TaskOptions, TaskState

#: SQL for "the task holds a concurrent slot", "the engine is done with it", "it counts
#: against the daily limits" (not refunded, not reset by an admin), and "its price was spent"
#: (not refunded: an admin's reset frees a member's or a server's quota, but what a video cost
#: stays spent, so the bot-wide credit limits and the spend reports still count it).
ACTIVE_SQL = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE))
TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))
COUNTED = "quota_refunded = 0 AND quota_reset_at IS NULL"
SPENT = "quota_refunded = 0"

#: The columns of the tasks table, in `Task`'s order: its fields but `notes`, which shares the
#: `options` column's JSON object with the options.
TASK_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Task) if f.name != "notes")
SELECT_TASK = f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks"
RETURNING_TASK = f"RETURNING {', '.join(TASK_COLUMNS)}"
#: Fields `update` and `transition` may set; the rest are managed by the store.
UPDATABLE_COLUMNS: frozenset[str] = (frozenset(TASK_COLUMNS) | {"notes"}) - {
    "id",
    "external_task_id",
    "user_id",
    "guild_id",
    "options",  # what was sent to the API; the notes beside it in the column may change
    "price_cents",  # what the task reserved: a later price change never changes it
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


class TaskNotFound(StoreError, LookupError):
    """No task has that id."""

    def __init__(self, task_id: int) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id} does not exist")


class StaleTransition(StoreError):
    """A transition found the task in a state it can't be entered from (`TRANSITIONS`)."""

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


class Rows:
    """What the store's parts share: one database and one clock (`TaskStore` sets both)."""

    _db: Database
    _now: Callable[[], float]


def task_from_row(row: Row) -> Task:
    """Build a `Task` from a row selected with `TASK_COLUMNS` in order."""
    values = dict(zip(TASK_COLUMNS, row, strict=True))
    stored = json.loads(values["options"])
    values["options"] = TaskOptions.from_json(stored)
    values["notes"] = TaskNotes.from_json(stored)
    values["state"] = TaskState(values["state"])
    values["quota_refunded"] = bool(values["quota_refunded"])
    return Task(**values)


async def fetch_tasks(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[Task]:
    """Run a SELECT of task columns and build the rows."""
    return [task_from_row(row) for row in await conn.fetch(sql, params)]


def dump_json(value: Mapping[str, Any]) -> str:
    """A JSON object, compact and with sorted keys."""
    if not isinstance(value, Mapping):
        raise TypeError("a JSON column holds an object (a dict)")
    return json.dumps(dict(value), separators=(",", ":"), sort_keys=True)


def options_json(options: TaskOptions, notes: TaskNotes) -> str:
    """The `options` column: the API options and the bot's notes in one JSON object."""
    return dump_json({**options.to_json(), **notes.to_json()})


async def assignments(
    conn: Connection, task_id: int, values: Mapping[str, Any]
) -> tuple[list[str], list[Any]]:
    """`col = ?` pieces and parameters for an UPDATE of a task, with names and values checked.

    `notes` is written into the `options` column, beside the task's stored options.
    """
    unknown = set(values) - UPDATABLE_COLUMNS
    if unknown:
        raise ValueError(f"not an updatable task field: {', '.join(sorted(unknown))}")
    pieces: list[str] = []
    params: list[Any] = []
    for name in sorted(values):
        value = values[name]
        if value is None and name in _NOT_NULL_UPDATABLE:
            raise ValueError(f"{name} cannot be None")
        if name == "notes":
            name, value = "options", options_json(await _stored_options(conn, task_id), value)
        elif isinstance(value, StrEnum):
            value = value.value
        pieces.append(f"{name} = ?")
        params.append(value)
    return pieces, params


async def _stored_options(conn: Connection, task_id: int) -> TaskOptions:
    """A task's API options as stored (they never change after the insert)."""
    rows = await conn.fetch("SELECT options FROM tasks WHERE id = ?", (task_id,))
    if not rows:
        raise TaskNotFound(task_id)
    return TaskOptions.from_json(json.loads(rows[0][0]))
