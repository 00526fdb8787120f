"""Task rows: their moves from state to state, their other fields, and what is read of them."""

from __future__ import annotations

import json
from typing import Any

from bot.store.rows import (
    ACTIVE_SQL,
    RETURNING_TASK,
    SELECT_TASK,
    TERMINAL_SQL,
    Rows,
    StaleTransition,
    TaskNotFound,
    assignments,
    fetch_tasks,
    task_from_row,
)
from bot.tasks import FINISHED, TRANSITIONS, Task, TaskOptions, TaskState, UsageSummary


class TaskRows(Rows):
    """The task rows (the insert is `ReservationRows.reserve`, with its quota check)."""

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
        pieces = ["state = ?", "updated_at = ?"]
        params: list[Any] = [to.value, now]
        if to is TaskState.SUBMITTED and "submitted_at" not in fields:
            pieces.append("submitted_at = ?")
            params.append(now)
        if to in FINISHED and "finished_at" not in fields:
            if to is TaskState.DELIVERED:  # delivered after succeeded: keep when it finished
                pieces.append("finished_at = COALESCE(finished_at, ?)")
            else:
                pieces.append("finished_at = ?")
            params.append(now)
        if to is TaskState.DELIVERED:
            if "notified_at" not in fields:  # its video is the user's answer
                pieces.append("notified_at = ?")
                params.append(now)
            if "delivered_at" not in fields:
                pieces.append("delivered_at = ?")
                params.append(now)
        states = ", ".join("?" for _ in expected)
        async with self._db.connection() as conn:
            more, more_params = await assignments(conn, task_id, fields)
            rows = await conn.fetch(
                f"UPDATE tasks SET {', '.join([*pieces, *more])} "
                f"WHERE id = ? AND state IN ({states}) {RETURNING_TASK}",
                [*params, *more_params, task_id, *(s.value for s in expected)],
            )
            if not rows:
                found = await conn.fetch("SELECT state FROM tasks WHERE id = ?", (task_id,))
        if rows:
            return task_from_row(rows[0])
        if not found:
            raise TaskNotFound(task_id)
        raise StaleTransition(task_id, to, expected, TaskState(found[0][0]))

    async def update(self, task_id: int, **fields: Any) -> Task:
        """Set non-state fields of a task (e.g. thread_id, status_message_id, notes)."""
        if not fields:
            raise ValueError("update needs at least one field")
        async with self._db.connection() as conn:
            pieces, params = await assignments(conn, task_id, fields)
            rows = await conn.fetch(
                f"UPDATE tasks SET {', '.join(pieces)}, updated_at = ? WHERE id = ? "
                f"{RETURNING_TASK}",
                [*params, self._now(), task_id],
            )
        if not rows:
            raise TaskNotFound(task_id)
        return task_from_row(rows[0])

    # --- queries -------------------------------------------------------------------------------

    async def _tasks(self, sql: str, params: tuple[Any, ...] = ()) -> list[Task]:
        """The tasks a SELECT of task columns finds."""
        async with self._db.connection() as conn:
            return await fetch_tasks(conn, sql, params)

    async def get(self, task_id: int) -> Task | None:
        """The task with this internal id, or None."""
        tasks = await self._tasks(f"{SELECT_TASK} WHERE id = ?", (task_id,))
        return tasks[0] if tasks else None

    async def recent_for_user(
        self, user_id: int, limit: int = 10, *, guild_id: int | None = None
    ) -> list[Task]:
        """A user's latest tasks, newest first (optionally only those from one guild)."""
        if guild_id is None:
            return await self._tasks(
                f"{SELECT_TASK} WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                (user_id, limit),
            )
        return await self._tasks(
            f"{SELECT_TASK} WHERE user_id = ? AND guild_id = ? "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (user_id, guild_id, limit),
        )

    async def unfinished(self) -> list[Task]:
        """Every task the engine still has to move or tell the user about, by id.

        That is every task whose end the user hasn't been told yet (`notified_at` unset),
        except those still in their intake (an open interaction at stage `reserved` owns them
        until its status message is recorded).
        """
        return await self._tasks(
            f"{SELECT_TASK} WHERE notified_at IS NULL AND id NOT IN ("
            "SELECT task_id FROM open_interactions WHERE stage = 'reserved' "
            "AND task_id IS NOT NULL) ORDER BY id"
        )

    async def queue(self) -> list[tuple[Task, int]]:
        """The queued tasks in FIFO order, each with its 1-based position."""
        tasks = await self._tasks(f"{SELECT_TASK} WHERE state = 'queued' ORDER BY id")
        return [(task, position) for position, task in enumerate(tasks, start=1)]

    async def count_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state now (every state, 0 for an empty one).

        One GROUP BY over the state index: the metrics read it at each scrape.
        """
        async with self._db.connection() as conn:
            rows = await conn.fetch("SELECT state, COUNT(*) FROM tasks GROUP BY state")
        counts = dict.fromkeys(TaskState, 0)
        for state, count in rows:
            counts[TaskState(state)] = int(count)
        return counts

    async def active_for_user(self, user_id: int) -> list[Task]:
        """A user's tasks that hold a concurrent slot (queued … processing), oldest first."""
        return await self._tasks(
            f"{SELECT_TASK} WHERE user_id = ? AND state IN ({ACTIVE_SQL}) ORDER BY id",
            (user_id,),
        )

    async def generation_history(self, limit: int) -> list[tuple[TaskOptions, float, float]]:
        """The last `limit` tasks that finished with a video, oldest first: each one's options,
        `submitted_at` and `finished_at` (when the provider finished, as well as the engine
        knew it), for the learned generation times (`bot.timing`)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT options, submitted_at, finished_at FROM tasks "
                "WHERE state IN ('succeeded', 'delivered') AND submitted_at IS NOT NULL "
                "AND finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT ?",
                (limit,),
            )
        return [
            (TaskOptions.from_json(json.loads(options)), float(submitted), float(finished))
            for options, submitted, finished in reversed(rows)
        ]

    async def usage_summary(self, guild_id: int, since: float) -> UsageSummary:
        """A guild's tasks since `since`: how many, by state, and by how many users."""
        async with self._db.connection() as conn:
            by_state_rows = await conn.fetch(
                "SELECT state, COUNT(*) FROM tasks WHERE guild_id = ? AND created_at >= ? "
                "GROUP BY state",
                (guild_id, since),
            )
            users = await conn.fetch(
                "SELECT COUNT(DISTINCT user_id) FROM tasks WHERE guild_id = ? AND created_at >= ?",
                (guild_id, since),
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
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                f"DELETE FROM tasks WHERE state IN ({TERMINAL_SQL}) AND updated_at < ? "
                "RETURNING id",
                (ts,),
            )
        return len(rows)

    async def expired_inputs(self, ts: float) -> list[Task]:
        """Terminal tasks last changed before `ts` whose inputs are still on disk.

        After removing the files, record it with `update(task_id, inputs_removed_at=...)`.
        """
        return await self._tasks(
            f"{SELECT_TASK} WHERE state IN ({TERMINAL_SQL}) AND updated_at < ? "
            "AND inputs_removed_at IS NULL ORDER BY id",
            (ts,),
        )
