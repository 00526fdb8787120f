"""Several processes, one bot: the process registry and each task's lease.

A task is worked by one process at a time. Its row names the process that holds it
(`lease_owner`) and until when (`lease_until`); the owner renews its leases well before they
run out. A process that dies stops renewing, and once its leases have expired another process
claims its tasks and takes them on from their stored state, as a restart would. Two writes
would do harm if a second process made them too, so each checks the lease in the same
statement that makes it: the submit (`start_submit`, which also takes the provider slot) and
the delivery (`hold`, just before the video goes out).

A process's name stays the same across its restarts (the engine's `process_name`), so a
restarted process takes its own tasks back at once instead of waiting for their leases to run
out.

Claims never wait on each other: PostgreSQL skips rows another claim has locked
(`FOR UPDATE SKIP LOCKED`); SQLite's write lock (`BEGIN IMMEDIATE`) runs claims one after
another. Every claim re-checks the lease in its UPDATE, so a task is never claimed twice.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import Any

from bot.store.postgres import PostgresDatabase
from bot.store.rows import RETURNING_TASK, Rows, fetch_tasks
from bot.tasks import Task, TaskState

#: The states in which a task takes one of the provider's slots.
AT_PROVIDER = (TaskState.SUBMITTING, TaskState.SUBMITTED, TaskState.PROCESSING)
AT_PROVIDER_SQL = ", ".join(f"'{s.value}'" for s in AT_PROVIDER)
#: "This process may take the task": nobody holds it, it holds it, or the lease ran out.
_FREE_FOR = "(lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)"
#: How many ids one `IN (...)` lists at most.
_ID_CHUNK = 500
#: Tasks still in their intake (the intake hands them over when it is done).
_IN_INTAKE = (
    "SELECT task_id FROM open_interactions WHERE stage = 'reserved' AND task_id IS NOT NULL"
)


class SlotRefused(StrEnum):
    """Why `start_submit` did not start a submit."""

    FULL = "full"  # the provider runs as many of the bot's tasks as it may
    NOT_MINE = "not mine"  # another process holds the task, or it is no longer queued


class LeaseRows(Rows):
    """The process registry and the tasks' leases."""

    def _row_locks(self) -> str:
        """What a claim's SELECT adds so that two claims never wait on each other's rows."""
        return " FOR UPDATE SKIP LOCKED" if isinstance(self._db, PostgresDatabase) else ""

    # --- processes -----------------------------------------------------------------------------

    async def register_process(self, name: str, lease_seconds: float) -> float | None:
        """Record a process as started and alive for `lease_seconds`.

        Returns until when a process of this name was still counted alive when it was
        registered before (None when it wasn't, or when that time had passed): a twin of the
        same name, or this process's own previous run that died moments ago.
        """
        now = self._now()
        async with self._db.transaction() as conn:
            before = await conn.fetch("SELECT alive_until FROM processes WHERE name = ?", (name,))
            await conn.execute(
                "INSERT INTO processes (name, started_at, alive_until) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at, "
                "alive_until = excluded.alive_until",
                (name, now, now + lease_seconds),
            )
        alive_until = float(before[0][0]) if before else None
        return alive_until if alive_until is not None and alive_until > now else None

    async def heartbeat_process(self, name: str, lease_seconds: float) -> None:
        """A process is alive for `lease_seconds` more."""
        now = self._now()
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO processes (name, started_at, alive_until) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET alive_until = excluded.alive_until",
                (name, now, now + lease_seconds),
            )

    async def end_process(self, name: str) -> None:
        """A process stops: it is no longer alive, and every lease it held is free now."""
        now = self._now()
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE tasks SET lease_owner = NULL, lease_until = NULL "
                "WHERE lease_owner = ? AND notified_at IS NULL",
                (name,),
            )
            await conn.execute("UPDATE processes SET alive_until = ? WHERE name = ?", (now, name))

    async def live_processes(self) -> list[str]:
        """The names of the processes alive now, sorted."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT name FROM processes WHERE alive_until >= ? ORDER BY name", (self._now(),)
            )
        return [str(row[0]) for row in rows]

    # --- leases --------------------------------------------------------------------------------

    async def claim(
        self, owner: str, lease_seconds: float, limit: int | None = None, *, own: bool = False
    ) -> list[Task]:
        """Take the lease on unfinished tasks nobody holds, or whose lease ran out (at most
        `limit` of them, oldest first; None: all). `own`: also those `owner` still holds (its
        start after a restart).

        Unfinished is what `unfinished` returns: the user wasn't told how the task ended, and
        its intake is done.
        """
        now = self._now()
        limited = " LIMIT ?" if limit is not None else ""
        free = _FREE_FOR if own else "(lease_owner IS NULL OR lease_until < ?)"
        free_params = (owner, now) if own else (now,)
        async with self._db.transaction() as conn:
            tasks = await fetch_tasks(
                conn,
                # Picked once (MATERIALIZED): PostgreSQL may otherwise run a LIMIT subquery
                # again for each row it updates, and each run skips the rows it just took.
                "WITH picked AS MATERIALIZED ("
                f"SELECT id FROM tasks WHERE notified_at IS NULL AND {free} "
                f"AND id NOT IN ({_IN_INTAKE}) ORDER BY id{limited}{self._row_locks()}) "
                "UPDATE tasks SET lease_owner = ?, lease_until = ? "
                f"WHERE id IN (SELECT id FROM picked) AND notified_at IS NULL AND {free} "
                f"{RETURNING_TASK}",
                (
                    *free_params,
                    *([] if limit is None else [limit]),
                    owner,
                    now + lease_seconds,
                    *free_params,
                ),
            )
        return sorted(tasks, key=lambda task: task.id)

    async def renew(self, owner: str, lease_seconds: float) -> set[int]:
        """Push the leases `owner` still holds on; returns the ids of those tasks.

        A lease that ran out is renewed too, unless another process took the task meanwhile
        (then it is not in the result: the task is no longer this process's).
        """
        now = self._now()
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "UPDATE tasks SET lease_until = ? WHERE lease_owner = ? "
                "AND notified_at IS NULL RETURNING id",
                (now + lease_seconds, owner),
            )
        return {int(row[0]) for row in rows}

    async def hold(self, task_id: int, owner: str, lease_seconds: float) -> bool:
        """Whether `owner` holds the task's lease now (taking it when it is free), renewed.

        Asked right before a step a second process must never take as well.
        """
        now = self._now()
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"UPDATE tasks SET lease_owner = ?, lease_until = ? WHERE id = ? AND {_FREE_FOR} "
                "RETURNING id",
                (owner, now + lease_seconds, task_id, owner, now),
            )
        return bool(rows)

    async def release(self, task_id: int, owner: str) -> None:
        """Give a task's lease up (another process may take it at once)."""
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE tasks SET lease_owner = NULL, lease_until = NULL "
                "WHERE id = ? AND lease_owner = ?",
                (task_id, owner),
            )

    async def held_by_others(self, task_ids: Collection[int], owner: str) -> set[int]:
        """Which of these tasks another process holds now (or held last)."""
        ids = sorted(task_ids)
        found: set[int] = set()
        async with self._db.connection() as conn:
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start : start + _ID_CHUNK]
                rows = await conn.fetch(
                    f"SELECT id FROM tasks WHERE id IN ({', '.join('?' for _ in chunk)}) "
                    "AND lease_owner IS NOT NULL AND lease_owner <> ?",
                    (*chunk, owner),
                )
                found.update(int(row[0]) for row in rows)
        return found

    async def lease_of(self, task_id: int) -> tuple[str | None, float | None]:
        """Who holds a task's lease, and until when (for tests and the operator)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT lease_owner, lease_until FROM tasks WHERE id = ?", (task_id,)
            )
        if not rows:
            return None, None
        owner, until = rows[0]
        return owner, None if until is None else float(until)

    async def at_provider_count(self) -> int:
        """How many of the bot's tasks the provider runs now (all processes together)."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                f"SELECT COUNT(*) FROM tasks WHERE state IN ({AT_PROVIDER_SQL})"
            )
        return int(rows[0][0])

    async def start_submit(
        self, task_id: int, owner: str, lease_seconds: float, max_at_provider: int, **fields: Any
    ) -> Task | SlotRefused:
        """Move a queued task to `submitting` if `owner` may take it and the provider has a
        slot free, counting every process's tasks there; one exclusive transaction, so two
        processes never take the last slot both. `fields`: `attempts`, `submit_posts`."""
        now = self._now()
        extra = sorted(fields)
        if set(extra) - {"attempts", "submit_posts"}:
            raise ValueError("start_submit sets only attempts and submit_posts")
        async with self._db.transaction(exclusive=True) as conn:
            busy = await conn.fetch(
                f"SELECT COUNT(*) FROM tasks WHERE state IN ({AT_PROVIDER_SQL})"
            )
            if max_at_provider and int(busy[0][0]) >= max_at_provider:
                return SlotRefused.FULL
            tasks = await fetch_tasks(
                conn,
                "UPDATE tasks SET state = 'submitting', updated_at = ?, lease_owner = ?, "
                f"lease_until = ?{''.join(f', {name} = ?' for name in extra)} "
                f"WHERE id = ? AND state = 'queued' AND {_FREE_FOR} {RETURNING_TASK}",
                (now, owner, now + lease_seconds, *(fields[n] for n in extra), task_id, owner, now),
            )
        return tasks[0] if tasks else SlotRefused.NOT_MINE
