"""Benchmark of bot.store on both backends: a SQLite file and PostgreSQL, side by side.
Start-up load, reservation throughput (one after another, and 100 at once from one store and
from two), transitions, size.

PostgreSQL: the server `KVB_TEST_POSTGRES_URL` names (default postgresql://postgres@127.0.0.1:5432/test);
the benchmark makes a database of its own there and drops it. Without a server it says so and
measures SQLite alone.

Run: .venv/bin/python benchmarks/bench_store.py   (prints figures; asserts nothing on time)
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.quota import QuotaExceeded, QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, TaskOptions, TaskState
from tests.postgres import PostgresServer, admin_url

ROWS = 10_000
USERS = 200
TARGET_LOAD_S = 1.0
TARGET_RESERVES_PER_S = 1_000.0
DEFAULT_LIMITS = QuotaLimits(daily_per_user=10_000, concurrent_per_user=10_000)
DELIVERED_PATH = (
    TaskState.SUBMITTING,
    TaskState.SUBMITTED,
    TaskState.SUCCEEDED,
    TaskState.DELIVERED,
)
# Every limit set (and never reached) so each reservation runs all four counts.
LIMITS = QuotaLimits(
    daily_per_user=10_000, concurrent_per_user=10_000, daily_per_guild=100_000, daily_global=100_000
)


def _new_task(rng: random.Random) -> NewTask:
    """A realistic insert: a prompt of a few dozen words, the usual options."""
    return NewTask(
        user_id=rng.randrange(USERS),
        guild_id=rng.choice((111111111111111111, 222222222222222222, None)),
        channel_id=333333333333333333,
        locale="en-US",
        prompt=" ".join(rng.choice(("a", "cat", "slowly", "turns", "into", "a", "dog")) for _ in range(40)),
        options=TaskOptions(duration="5", mode="std", aspect_ratio="16:9", negative_prompt="blur", cfg_scale=0.5),
        image_count=rng.randint(2, 4),
        input_dir="data/media/inputs/kvb-0123456789abcdef0123456789abcdef",
        upload_limit=10 * 1024 * 1024,
        callback_token="f" * 32,
    )  # fmt: skip


Figures = dict[str, tuple[str, str, bool | None]]  # name -> (value, target, met)


async def _race(stores: list[TaskStore], rng: random.Random, n: int = 100) -> tuple[float, int]:
    """n reservations by one user at once, over the stores; (seconds, granted)."""
    limits = QuotaLimits(concurrent_per_user=10, daily_per_user=1_000_000)

    async def one(i: int) -> bool:
        try:
            await stores[i % len(stores)].reserve(replace(_new_task(rng), user_id=4242), limits)
        except QuotaExceeded:
            return False
        return True

    started = time.perf_counter()
    granted = sum(await asyncio.gather(*(one(i) for i in range(n))))
    return time.perf_counter() - started, granted


async def measure(url: str, other_url: str, size_of: object) -> Figures:
    """Every figure on one backend: `url` gets the 10,000 rows, `other_url` the default run."""
    rng = random.Random(1)
    figures: Figures = {}
    tasks = [_new_task(rng) for _ in range(ROWS)]

    # The default configuration: per-user daily and concurrent limits only.
    other = await TaskStore.open(other_url)
    started = time.perf_counter()
    for t in tasks:
        await other.reserve(t, DEFAULT_LIMITS)
    rate = ROWS / (time.perf_counter() - started)
    figures["reserve+insert, per-user limits"] = (f"{rate:,.0f}/s", "≥ 1,000/s", rate >= 1000)

    # 100 reservations by one user at once: from one store, then from two (two processes).
    second = await TaskStore.open(other_url)
    for label, stores in (("one store", [other]), ("two stores", [other, second])):
        async with other._db.connection() as conn:
            await conn.execute("DELETE FROM tasks WHERE user_id = 4242")
        elapsed, granted = await _race(stores, rng)
        figures[f"100 reservations at once, {label}"] = (
            f"{elapsed * 1e3:,.0f} ms",
            f"{granted} granted",
            granted == 10,
        )
    await second.close()
    await other.close()

    store = await TaskStore.open(url)
    # Worst case: all four limits counted, every row inside the 24 h window.
    started = time.perf_counter()
    ids = [(await store.reserve(t, LIMITS)).id for t in tasks]
    elapsed = time.perf_counter() - started
    rate = ROWS / elapsed
    figures["reserve+insert, all four limits"] = (f"{rate:,.0f}/s", "≥ 1,000/s", rate >= 1000)
    figures["  mean latency per reservation"] = (f"{elapsed / ROWS * 1e3:.3f} ms", "", None)

    started = time.perf_counter()
    unfinished = await store.unfinished()
    load = time.perf_counter() - started
    figures[f"load unfinished ({len(unfinished):,} of {ROWS:,} rows)"] = (
        f"{load:.3f} s",
        "≤ 1 s",
        load <= 1,
    )

    # A realistic mix: most tasks delivered or failed, a few still in flight; each task
    # takes the moves the engine makes (queued → ... → delivered, or queued → failed).
    started = time.perf_counter()
    count = 0
    for task_id in ids[: int(ROWS * 0.95)]:
        states = DELIVERED_PATH if rng.random() < 0.9 else (TaskState.FAILED,)
        for to in states:
            await store.transition(
                task_id, to, video_url="https://cdn.example/v.mp4", video_bytes=5_000_000
            )
        count += len(states)
    moves = count / (time.perf_counter() - started)
    figures["transition (guarded UPDATE … RETURNING)"] = (f"{moves:,.0f}/s", "", None)

    started = time.perf_counter()
    unfinished = await store.unfinished()
    load = time.perf_counter() - started
    figures[f"load unfinished ({len(unfinished):,} of {ROWS:,} rows) "] = (
        f"{load:.3f} s",
        "≤ 1 s",
        load <= 1,
    )
    size = await size_of(store)  # type: ignore[operator]  # and closes the store
    figures["database bytes per task (incl. indexes)"] = (f"{size / ROWS:,.0f} B", "", None)
    return figures


async def _postgres_size(store: TaskStore) -> int:
    """Bytes of the schema's tables with their indexes and TOAST; closes the store."""
    async with store._db.connection() as conn:
        rows = await conn.fetch(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        )
    await store.close()
    return int(rows[0][0])


async def main() -> None:
    """Fill a temp database with 10,000 tasks on each backend and measure."""
    columns: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite3"

        async def sqlite_size(store: TaskStore) -> int:
            await store.close()  # closing checkpoints the WAL into the main file
            return path.stat().st_size

        columns["SQLite (file)"] = await measure(
            f"sqlite:///{path}", f"sqlite:///{Path(tmp) / 'defaults.sqlite3'}", sqlite_size
        )
    try:
        server = PostgresServer.start()
    except Exception as error:
        print(f"PostgreSQL: no server at {admin_url()} ({error}); SQLite alone.\n")
    else:
        try:
            columns["PostgreSQL"] = await measure(
                server.new_schema(), server.new_schema(), _postgres_size
            )
        finally:
            server.stop()
    names = list(next(iter(columns.values())))
    print(f"{'':<46} " + " ".join(f"{label:>22}" for label in columns) + "   target")
    for name in names:
        cells = []
        target = ""
        for figures in columns.values():
            value, target, ok = figures.get(name, ("-", "", None))
            verdict = "" if ok is None else (" OK" if ok else " MISSED")
            cells.append(f"{value + verdict:>22}")
        print(f"{name.rstrip():<46} " + " ".join(cells) + f"   {target}")


if __name__ == "__main__":  # fmt: skip
    asyncio.run(main())
