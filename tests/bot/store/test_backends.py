"""What both backends must do alike: the same schema, crash safety under SIGKILL, no transaction
left open by a cancelled reservation. (Every other store test runs on both backends too, through
the `store` fixture.)"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bot.quota import QuotaLimits
from bot.store import MIGRATIONS, POSTGRES_MIGRATIONS, TaskStore, parse_database_url
from bot.store.postgres import PostgresDatabase, is_postgres_url
from bot.tasks import ACTIVE, TERMINAL, TaskState
from tests.bot.store.helpers import in_transaction, new_task

# --- one schema -----------------------------------------------------------------------------


def test_both_backends_have_every_schema_version() -> None:
    """A migration added to one backend's list and not the other's is caught here."""
    assert len(POSTGRES_MIGRATIONS) == len(MIGRATIONS)


async def _columns(store: TaskStore) -> dict[str, list[tuple[str, bool]]]:
    """Each table's columns in order, with whether they may be NULL."""
    tables: dict[str, list[tuple[str, bool]]] = {}
    async with store._db.connection() as conn:
        if isinstance(store._db, PostgresDatabase):
            rows = await conn.fetch(
                "SELECT table_name, column_name, is_nullable = 'YES' FROM "
                "information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name <> 'schema_migrations' ORDER BY table_name, ordinal_position"
            )
            for table, column, nullable in rows:
                tables.setdefault(table, []).append((column, bool(nullable)))
            return tables
        names = await conn.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
        for (table,) in names:
            for _cid, column, _type, notnull, _default, pk in await conn.fetch(
                f"PRAGMA table_info({table})"
            ):
                # SQLite lets a non-INTEGER primary key column hold NULL; PostgreSQL doesn't,
                # and the store never writes one.
                tables.setdefault(table, []).append((column, not notnull and not pk))
    return tables


async def test_both_backends_end_in_the_same_tables_and_columns(postgres_url: str) -> None:
    async with (
        await TaskStore.open("sqlite:///:memory:") as sqlite,
        await TaskStore.open(postgres_url) as postgres,
    ):
        on_sqlite, on_postgres = await _columns(sqlite), await _columns(postgres)
    assert on_sqlite == on_postgres
    assert {"tasks", "meta", "open_interactions"} <= set(on_postgres)


# --- crash safety ------------------------------------------------------------------------------

WORKER = Path(__file__).with_name("store_crash_worker.py")
CHAIN = ["queued", "submitting", "submitted", "processing", "succeeded", "delivered"]


def _run_and_kill(url: str, log: Path, seed: int, rng: random.Random) -> None:
    """Start the worker, wait for READY, let it run 0.2–0.8 s, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, str(WORKER), url, str(log), str(seed)])
    try:
        deadline = time.monotonic() + 20
        while not (log.exists() and b"READY" in log.read_bytes()):
            assert proc.poll() is None, "worker died before READY"
            assert time.monotonic() < deadline, "worker never became ready"
            time.sleep(0.02)
        time.sleep(rng.uniform(0.2, 0.8))
        assert proc.poll() is None, "worker exited on its own"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def _check_invariants(url: str, lines: list[str]) -> int:
    """Reopen after the kill and check the database against itself and the worker's log."""
    if not is_postgres_url(url):
        raw = sqlite3.connect(parse_database_url(url))
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        raw.close()
    async with await TaskStore.open(url) as store:
        async with store._db.connection() as conn:
            required = ("external_task_id", "user_id", "channel_id", "locale", "prompt",
                        "options", "image_count", "input_dir", "state", "attempts",
                        "quota_refunded", "upload_limit", "created_at", "updated_at")  # fmt: skip
            nulls = " OR ".join(f"{c} IS NULL" for c in required)
            assert (await conn.fetch(f"SELECT COUNT(*) FROM tasks WHERE {nulls}"))[0][0] == 0
            states = {s for (s,) in await conn.fetch("SELECT DISTINCT state FROM tasks")}
            assert states <= {s.value for s in TaskState}
            terminal = ", ".join(f"'{s.value}'" for s in TERMINAL)
            unfinished_ends = await conn.fetch(
                f"SELECT COUNT(*) FROM tasks WHERE state IN ({terminal}) AND finished_at IS NULL"
            )
            assert unfinished_ends[0][0] == 0
            # the quota invariant held at every commit: never more than 3 unfinished per user
            active = ", ".join(f"'{s.value}'" for s in ACTIVE)
            worst = await conn.fetch(
                f"SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM tasks WHERE state IN ({active}) "
                "GROUP BY user_id) AS per_user"
            )
            assert worst[0][0] is None or worst[0][0] <= 3
            rows = {
                i: (u, s, r)
                for i, u, s, r in await conn.fetch(
                    "SELECT id, user_id, state, quota_refunded FROM tasks"
                )
            }
            untold = {
                i for (i,) in await conn.fetch("SELECT id FROM tasks WHERE notified_at IS NULL")
            }
            direct = await conn.fetch(
                "SELECT user_id, COUNT(*) FROM tasks "
                "WHERE quota_refunded = 0 AND quota_reset_at IS NULL GROUP BY user_id"
            )
        for user, count in direct:
            assert await store.usage(user_id=user, since=0) == count
        assert await store.usage(since=0) == sum(c for _, c in direct)
        # the engine takes up every task not told yet: unfinished ones and untold endings
        # (a delivered task is told by its video)
        assert {t.id for t in await store.unfinished()} == {
            i for i, (_, s, _) in rows.items() if s not in {t.value for t in TERMINAL}
        } | {i for i, (_, s, _) in rows.items() if s != "delivered" and i in untold}
        assert not untold & {i for i, (_, s, _) in rows.items() if s == "delivered"}

    for line in lines:
        parts = line.split()
        if parts[0] == "R":
            assert rows[int(parts[1])][0] == int(parts[2])
        elif parts[0] == "T":
            state = rows[int(parts[1])][1]
            if parts[2] == "failed":
                assert state == "failed"
            else:
                assert state == "failed" or CHAIN.index(state) >= CHAIN.index(parts[2])
        elif parts[0] == "F":
            assert rows[int(parts[1])][2] == 1
    return len(lines)


def test_sigkill_leaves_database_consistent(database_url: str, tmp_path: Path) -> None:
    """A killed process never leaves a half-written reservation or move, on either backend:
    every commit the worker saw is there, nothing else is half there."""
    rng = random.Random(4)
    logged = 0
    for run in range(5):
        log = tmp_path / f"run{run}.log"
        _run_and_kill(database_url, log, seed=run * 10, rng=rng)
        logged += asyncio.run(_check_invariants(database_url, log.read_text().splitlines()))
    assert logged > 50  # the worker really did work between the kills


# --- cancellation ------------------------------------------------------------------------------


async def test_cancelled_reservation_never_leaves_a_transaction_open(store: TaskStore) -> None:
    limits = QuotaLimits(daily_per_user=1000)
    for step in range(24):  # cancel at different points: before BEGIN, mid-way, at COMMIT
        pending = asyncio.create_task(store.reserve(new_task(), limits))
        await asyncio.sleep(step * 0.00003)
        pending.cancel()
        try:
            await pending
        except asyncio.CancelledError:
            pass
        # the connection is usable and out of any transaction afterwards
        await store.reserve(new_task(user_id=2), limits)
        assert not await in_transaction(store)
    counts = (await store.usage_summary(100, since=0)).tasks
    assert counts == 24 + await store.usage(user_id=1, since=0)
