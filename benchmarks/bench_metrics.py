"""Benchmark of what a /metrics scrape costs the bot: the store's count of tasks by state (one
GROUP BY over the state index) on a SQLite file and on PostgreSQL, with 16,384 and 131,072 task
rows (about a month of a busy bot's rows, which retention keeps at least 35 days), then the
whole scrape over HTTP (gauges refreshed from the store, then the text exposition). The
PostgreSQL table is vacuumed first, as autovacuum keeps a table that old.

PostgreSQL: the server `KVB_TEST_POSTGRES_URL` names (default postgresql://postgres@127.0.0.1:5432/test);
the benchmark makes a database of its own there and drops it. Without a server it says so and
measures SQLite alone.

Run: .venv/bin/python benchmarks/bench_metrics.py   (prints figures; asserts nothing on time)
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.config import load_settings
from bot.metrics import Metrics
from bot.monitoring import start_metrics_server
from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, TaskOptions
from tests.postgres import PostgresServer, admin_url

SIZES = (16_384, 131_072)
RUNS = 30
COLUMNS = (
    "user_id, guild_id, channel_id, status_message_id, thread_id, locale, prompt, options, "
    "image_count, input_dir, state, callback_token, upload_limit, created_at, updated_at, "
    "price_cents"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def grow(store: TaskStore, rows: int, *, postgres: bool) -> None:
    """`rows` task rows (a power of two times the first), most delivered, as a month leaves them."""
    await store.reserve(
        NewTask(
            user_id=1,
            guild_id=2,
            channel_id=3,
            locale="en-US",
            prompt="a cat slowly turns into a dog " * 8,
            options=TaskOptions(duration="5", mode="std"),
            image_count=3,
            input_dir="data/media/inputs/x",
            upload_limit=10 * 1024 * 1024,
        ),
        QuotaLimits(),
    )
    db = store._db
    count = 1
    while count < rows:
        async with db.connection() as conn:
            await conn.execute(
                f"INSERT INTO tasks (external_task_id, {COLUMNS}) "
                f"SELECT external_task_id || '-{count}-' || CAST(id AS TEXT), {COLUMNS} FROM tasks"
            )
        count *= 2
    async with db.connection() as conn:
        await conn.execute("UPDATE tasks SET state = 'delivered' WHERE id % 20 <> 0")
        await conn.execute("UPDATE tasks SET state = 'failed' WHERE id % 40 = 0")
        await conn.execute("UPDATE tasks SET state = 'processing' WHERE id % 1000 = 20")
    if postgres:
        async with db.connection() as conn:  # what autovacuum does to a month-old table
            await conn.execute("VACUUM ANALYZE tasks")


async def measure(url: str, label: str) -> None:
    for rows in SIZES:
        store = await TaskStore.open(url)
        try:
            async with store._db.connection() as conn:
                await conn.execute("DELETE FROM tasks")
            await grow(store, rows, postgres=label == "PostgreSQL")
            counts = await store.count_by_state()
            assert sum(counts.values()) >= rows
            times = []
            for _ in range(RUNS):
                started = time.perf_counter()
                await store.count_by_state()
                times.append(time.perf_counter() - started)
            port = free_port()
            metrics = Metrics("bench")
            settings = load_settings(
                discord_token="t", cometapi_key="k", _env_file=None, metrics_port=port
            )
            server = await start_metrics_server(
                settings, store, metrics, time.time, host="127.0.0.1"
            )
            assert server is not None
            scrapes = []
            async with aiohttp.ClientSession() as session:
                for _ in range(RUNS):
                    started = time.perf_counter()
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        body = await response.read()
                    scrapes.append(time.perf_counter() - started)
            await server.stop()
            print(
                f"{label:<11} {sum(counts.values()):>8,} rows: count_by_state median "
                f"{statistics.median(times) * 1000:7.2f} ms (max {max(times) * 1000:7.2f}); "
                f"whole scrape median {statistics.median(scrapes) * 1000:7.2f} ms, "
                f"{len(body):,} bytes"
            )
        finally:
            await store.close()


async def main() -> None:
    print(f"A /metrics scrape: median of {RUNS} runs each.")
    with tempfile.TemporaryDirectory() as folder:
        await measure(f"sqlite:///{folder}/bench.sqlite3", "SQLite")
    try:
        server = PostgresServer.start()
    except Exception as error:
        print(f"PostgreSQL: no server at {admin_url()} ({error}); SQLite alone.")
        return
    try:
        await measure(server.new_schema(), "PostgreSQL")
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
