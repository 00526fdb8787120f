"""What credit limits cost the reservation, on a busy month's ledger.

Run: `.venv/bin/python benchmarks/bench_credits.py [TASKS]`.

Fills a SQLite file with a month of tasks (20,000 by default: 3,000 members, 20 servers, a mix
of options, a tenth refunded), then times `TaskStore.reserve` (median and p99 of 300, one after
the other) with the video limits only and with every credit limit on (member, server, bot per
day, bot per month: four more sums in the same SELECT), and the spend report's queries for one
server. Also prints SQLite's plan for the month's sum, to show it runs on the covering index.
Asserts nothing on time: these are figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.credits import CreditKind, CreditLimits, month_start
from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.store.reservations import credit_scope
from bot.store.sqlite import SqliteDatabase
from bot.tasks import NewTask, TaskOptions

#: Tasks in the month; another number may be given: `bench_credits.py 100000`.
TASKS = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
PRICES = {("std", "5"): 100, ("std", "10"): 200, ("pro", "5"): 350, ("pro", "10"): 700}


def new_task(user_id: int, guild_id: int) -> NewTask:
    return NewTask(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=1,
        locale="en",
        prompt="p",
        options=TaskOptions(mode="std", duration="5"),
        image_count=2,
        input_dir="",
        upload_limit=1,
        price_cents=100,
    )


async def fill(store: TaskStore, now: float) -> None:
    db = store._db
    assert isinstance(db, SqliteDatabase)
    start = month_start(now)
    rng = random.Random(7)
    rows = []
    for i in range(TASKS):
        mode, duration = rng.choice(list(PRICES))
        created = rng.uniform(start, now)
        rows.append(
            (
                f"bench-{i}",
                rng.randrange(3000),
                rng.randrange(20),
                json.dumps({"mode": mode, "duration": duration}),
                int(rng.random() < 0.1),
                created,
                created,
                PRICES[(mode, duration)],
            )
        )
    async with db.transaction() as conn:
        for row in rows:
            await conn.execute(
                "INSERT INTO tasks (external_task_id, user_id, guild_id, channel_id, locale, "
                "prompt, options, image_count, input_dir, state, quota_refunded, upload_limit, "
                "created_at, updated_at, price_cents) VALUES (?, ?, ?, 1, 'en', 'p', ?, 2, '', "
                "'delivered', ?, 1, ?, ?, ?)",
                row,
            )


async def timed(store: TaskStore, credits: CreditLimits | None, runs: int = 300) -> list[float]:
    out = []
    for i in range(runs):
        task = new_task(10_000 + i, i % 20)
        start = time.perf_counter()
        await store.reserve(task, QuotaLimits(daily_per_user=50), credits=credits)
        out.append(time.perf_counter() - start)
    return out


def figures(name: str, times: list[float]) -> None:
    ordered = sorted(times)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    print(
        f"{name}: median {statistics.median(times) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms "
        f"({len(times)} reservations, one after the other)"
    )


async def main() -> None:
    now = time.time()
    with tempfile.TemporaryDirectory() as folder:
        async with await TaskStore.open(f"sqlite:///{folder}/bench.sqlite3") as store:
            started = time.perf_counter()
            await fill(store, now)
            print(
                f"ledger: {TASKS:,} tasks this month, filled in {time.perf_counter() - started:.1f} s"
            )
            figures("reserve, video limits only", await timed(store, None))
            every = CreditLimits(
                daily_per_user=10**9,
                daily_per_guild=10**9,
                daily_global=10**9,
                monthly_global=10**9,
            )
            figures("reserve, every credit limit on", await timed(store, every))
            start = time.perf_counter()
            await store.spends(now - 30 * 86_400, guild_id=3)
            await store.top_spenders(now - 30 * 86_400, guild_id=3)
            await store.usage_rows(now - 30 * 86_400, guild_id=3)
            elapsed = (time.perf_counter() - start) * 1000
            print(f"spend report queries for one server (30 days): {elapsed:.1f} ms")
            where, params = credit_scope(CreditKind.MONTHLY_GLOBAL, 0, None, now, 86_400)
            db = store._db
            assert isinstance(db, SqliteDatabase)
            async with db.connection() as conn:
                plan = await conn.fetch(
                    "EXPLAIN QUERY PLAN SELECT COALESCE(SUM(price_cents), 0) FROM tasks "
                    f"WHERE {where}",
                    params,
                )
            print("plan of the month's sum:", "; ".join(str(row[-1]) for row in plan))


if __name__ == "__main__":
    asyncio.run(main())
