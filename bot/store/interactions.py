"""The record of every interaction the bot acknowledged and still owes an answer.

A /video intake or a Delete press is written here when it is acknowledged and removed once
answered, so a restart answers each one exactly once. Its stage is written before the step it
announces: `received` (nothing reserved yet), `reserved` (its task is stored and its quota
reserved, in the same transaction as this stage), `started` (its status message is recorded
and the engine has the task, again in one transaction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from bot.store.database import Row, StoreError
from bot.store.rows import (
    RETURNING_TASK,
    Rows,
    TaskNotFound,
    assignments,
    dump_json,
    task_from_row,
)
from bot.tasks import Task


class InteractionKind(StrEnum):
    """What an acknowledged interaction asked for."""

    VIDEO = "video"  # /video, the "Make a video" form, Regenerate
    DELETE = "delete"  # the Delete button under a result


class IntakeStage(StrEnum):
    """How far an open interaction got; each stage is written before the step it announces."""

    RECEIVED = "received"  # acknowledged; nothing reserved yet
    RESERVED = "reserved"  # its task is stored and quota reserved; the status message may be out
    STARTED = "started"  # the status message is recorded and the engine has the task


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
    owner: str | None = None  # the process that acknowledged it (None: from before owners)


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
    owner: str | None = None  # the process acknowledging it (`EngineConfig.process_name`)


_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(OpenInteraction))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM open_interactions"


def _from_row(row: Row) -> OpenInteraction:
    """Build an `OpenInteraction` from a row selected with `_COLUMNS` in order."""
    values = dict(zip(_COLUMNS, row, strict=True))
    values["payload"] = json.loads(values["payload"])
    values["kind"] = InteractionKind(values["kind"])
    values["stage"] = IntakeStage(values["stage"])
    return OpenInteraction(**values)


class InteractionRows(Rows):
    """The open interactions (acknowledged, not yet answered)."""

    async def open_interaction(self, new: NewOpenInteraction) -> OpenInteraction:
        """Record an acknowledged interaction (the same one again returns the first record)."""
        now = self._now()
        async with self._db.connection() as conn:
            await conn.execute(
                """INSERT INTO open_interactions (interaction_id, kind, application_id, token,
                        token_expires_at, user_id, guild_id, channel_id, locale, payload,
                        external_task_id, task_id, stage, created_at, updated_at, owner)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                    dump_json(new.payload),
                    new.external_task_id,
                    new.task_id,
                    IntakeStage.RECEIVED.value,
                    now,
                    now,
                    new.owner,
                ),
            )
            rows = await conn.fetch(f"{_SELECT} WHERE interaction_id = ?", (new.interaction_id,))
        return _from_row(rows[0])

    async def open_interactions(self) -> list[OpenInteraction]:
        """Every interaction a run acknowledged and didn't answer yet, oldest first."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(f"{_SELECT} ORDER BY id")
        return [_from_row(row) for row in rows]

    async def left_open(self, me: str) -> list[OpenInteraction]:
        """The open interactions a start-up of process `me` answers, oldest first: its own
        earlier run's, those from before owners, and those of processes no longer alive (a
        live process's are its own intakes in flight)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"{_SELECT} WHERE owner IS NULL OR owner = ? OR owner NOT IN ("
                "SELECT name FROM processes WHERE alive_until >= ?) ORDER BY id",
                (me, self._now()),
            )
        return [_from_row(row) for row in rows]

    async def hand_over(self, record_id: int, task_id: int, **task_fields: Any) -> Task:
        """Record the intake's last facts on its task (`task_fields`, e.g. the status message)
        and move the interaction to `started`, in one transaction: the task is the engine's."""
        now = self._now()
        async with self._db.transaction() as conn:
            pieces, params = await assignments(conn, task_id, task_fields)
            rows = await conn.fetch(
                f"UPDATE tasks SET {', '.join([*pieces, 'updated_at = ?'])} WHERE id = ? "
                f"{RETURNING_TASK}",
                [*params, now, task_id],
            )
            if not rows:
                raise TaskNotFound(task_id)
            moved = await conn.fetch(
                "UPDATE open_interactions SET stage = ?, updated_at = ? "
                "WHERE id = ? AND task_id = ? AND stage = ? RETURNING id",
                (IntakeStage.STARTED.value, now, record_id, task_id, IntakeStage.RESERVED.value),
            )
            if not moved:
                raise StoreError(f"interaction {record_id} is not reserved for task {task_id}")
        return task_from_row(rows[0])

    async def close_interaction(self, record_id: int) -> None:
        """The interaction got its answer: forget it (and its token).

        A task its intake ended (failed before the engine got it) was told by that answer, so
        it is marked told in the same transaction.
        """
        now = self._now()
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                "DELETE FROM open_interactions WHERE id = ? RETURNING stage, task_id",
                (record_id,),
            )
            if rows and rows[0][0] == IntakeStage.RESERVED.value and rows[0][1] is not None:
                await conn.execute(
                    "UPDATE tasks SET notified_at = ?, updated_at = ? "
                    "WHERE id = ? AND state IN ('failed', 'timed_out') AND notified_at IS NULL",
                    (now, now, rows[0][1]),
                )
