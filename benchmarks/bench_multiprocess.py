"""Benchmark of several engine processes on one database (leases), against the fake CometAPI.

1. Throughput: tasks taken in and moved to `delivered` per second by 1 and by 2 engine
   processes (each a child process running a `TaskEngine` with its own lease name), on a
   SQLite file and on PostgreSQL. On the parent's "go" each process takes in its share of the
   tasks as its intakes would (reserve, inputs on disk, `enqueue`), so the figure includes the
   insert. The fake API answers at once (the figure is the engine's and the store's cost per
   task, not the provider's time), the notifier does nothing.
2. Takeover: two engine processes, every task at the provider; one is SIGKILLed, and the time
   from its death to the other's first action on its tasks (the lease taken over) is measured,
   several times, with LEASE_SECONDS=3.

The fake API runs in this (the parent) process; on a 2-core machine it shares the CPU with the
engines, so the 2-process figure is what two processes on two cores do with a third busy one.

PostgreSQL: the server `KVB_TEST_POSTGRES_URL` names (default postgresql://postgres@127.0.0.1:5432/test);
a database of its own is made and dropped. Without a server SQLite is measured alone.

Run: .venv/bin/python benchmarks/bench_multiprocess.py   (prints figures; asserts nothing on time)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from PIL import Image

from bot.engine import EngineConfig, TaskEngine
from bot.engine.notifier import Delivered
from bot.kling.client import ClientTimeouts, KlingClient
from bot.kling.ratelimit import RateLimiter
from bot.media import MediaStore
from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, Task, TaskOptions
from tests.fakes.cometapi import FakeCometAPI
from tests.postgres import PostgresServer, admin_url

TASKS = 300
TAKEOVER_TASKS = 20
TAKEOVER_ROUNDS = 3
TAKEOVER_LEASE = 3.0
THROUGHPUT_LEASE = 30.0
API_KEY = "bench-key"
DEADLINE_SECONDS = 120.0


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


# --- the worker: one engine process ----------------------------------------------------------


class QuietNotifier:
    """Tells nobody; a delivery is message 1."""

    async def progress(self, task: Task, queue_position: int | None) -> None:
        """Nothing to show."""

    async def deliver(self, task: Task) -> Delivered:
        """Delivered at once."""
        return Delivered(1, "upload")

    async def failed(self, task: Task) -> None:
        """Nothing to tell."""

    async def post_credit_alert(self, *args: object, **kwargs: object) -> int:
        """No alerts here."""
        return 1


async def worker(name: str, db: str, api: str, media: str, lease: float, tasks: int) -> None:
    """Run one engine until SIGTERM; on "go" (a line on stdin) take in `tasks` tasks."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    config = EngineConfig(
        max_concurrent=100,
        poll_interval=0.02,
        poll_max_interval=0.05,
        task_timeout=600,
        submit_backoff=0.02,
        download_backoff=0.01,
        process_name=name,
        lease_seconds=lease,
    )
    async with aiohttp.ClientSession() as session:
        store = await TaskStore.open(db)
        client = KlingClient(
            session,
            base_url=api,
            api_key=API_KEY,
            timeouts=ClientTimeouts(connect=5, submit=10, query=10),
            max_retries=2,
            backoff_base=0.01,
            limiter=RateLimiter(5000),
        )
        media_store = MediaStore(Path(media))
        engine = TaskEngine(store, client, QuietNotifier(), session, media_store, config)
        await engine.start()
        print("started", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        for _ in range(tasks):  # as intakes do: stored, then handed to this process's engine
            engine.enqueue(await new_task(store, media_store))
        await stop.wait()
        await engine.stop()
        await store.close()


# --- the parent: the fake API, the tasks, the clock ------------------------------------------

_IMAGE = _png()
_NUMBERS = iter(range(10**9))


async def new_task(store: TaskStore, media: MediaStore) -> Task:
    """A queued task with its two input images on disk."""
    task = await store.reserve(
        NewTask(
            user_id=next(_NUMBERS), guild_id=10, channel_id=100, locale="en-US",
            prompt="a cat walks", options=TaskOptions(), image_count=2, input_dir="",
            upload_limit=10 * 1024 * 1024,
        ),
        QuotaLimits(),
    )  # fmt: skip
    folder = await media.save_inputs(task.external_task_id, [("PNG", _IMAGE)] * 2)
    return await store.update(task.id, input_dir=str(folder))


async def spawn(
    name: str, db: str, api: str, media: Path, lease: float, tasks: int
) -> asyncio.subprocess.Process:
    """Start a worker and wait for its engine to have started."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", name, db, api, str(media), str(lease), str(tasks),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"started":
        raise RuntimeError(f"worker {name} did not start: {line!r}")
    return proc


async def go(procs: list[asyncio.subprocess.Process]) -> None:
    """Tell the workers to take their tasks in."""
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()


async def finish(procs: list[asyncio.subprocess.Process]) -> None:
    """Stop the workers still running (SIGTERM: a clean stop)."""
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        await asyncio.wait_for(proc.wait(), 30)


async def count(store: TaskStore, sql: str) -> int:
    """The one number a SELECT COUNT(*) gives."""
    async with store._db.connection() as conn:
        rows = await conn.fetch(sql)
    return int(rows[0][0])


async def throughput(db: str, tmp: Path, processes: int) -> tuple[float, dict[str, int]]:
    """Tasks delivered per second by `processes` engines; and how many each delivered."""
    media_dir = tmp / f"media-{processes}-{time.monotonic_ns()}"
    async with FakeCometAPI(api_key=API_KEY, finish_after=0.0, rough=None) as api:
        store = await TaskStore.open(db)
        procs = [
            await spawn(f"p{k}", db, api.base_url, media_dir, THROUGHPUT_LEASE, TASKS // processes)
            for k in range(processes)
        ]
        try:
            started = time.perf_counter()
            await go(procs)
            delivered = "SELECT COUNT(*) FROM tasks WHERE state = 'delivered'"
            async with asyncio.timeout(DEADLINE_SECONDS):  # a broken engine fails, never hangs
                while await count(store, delivered) < TASKS:
                    await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            async with store._db.connection() as conn:
                rows = await conn.fetch("SELECT lease_owner, COUNT(*) FROM tasks GROUP BY 1")
        finally:
            await finish(procs)
            await store.close()
        assert len(api.submits) == TASKS, f"{len(api.submits)} submits for {TASKS} tasks"
        return TASKS / elapsed, {str(owner): int(n) for owner, n in rows}


async def takeover(fresh: Callable[[str], str], tmp: Path) -> list[float]:
    """Seconds from one engine's SIGKILL to the other's first action on its tasks."""
    figures = []
    for round_ in range(TAKEOVER_ROUNDS):
        db = fresh(f"takeover-{round_}")
        media_dir = tmp / f"media-takeover-{round_}"
        async with FakeCometAPI(api_key=API_KEY, finish_after=600.0, rough=None) as api:
            store = await TaskStore.open(db)
            names = [f"r{round_}-{k}" for k in range(2)]
            procs = [
                await spawn(name, db, api.base_url, media_dir, TAKEOVER_LEASE, TAKEOVER_TASKS // 2)
                for name in names
            ]
            try:
                await go(procs)
                sent = "SELECT COUNT(*) FROM tasks WHERE kling_task_id IS NOT NULL"
                async with asyncio.timeout(DEADLINE_SECONDS):
                    while await count(store, sent) < TAKEOVER_TASKS:
                        await asyncio.sleep(0.02)
                held_sql = f"SELECT COUNT(*) FROM tasks WHERE lease_owner = '{names[0]}'"
                held = await count(store, held_sql)
                assert held > 0, "the victim holds none of the tasks"
                procs[0].kill()
                died = time.perf_counter()
                async with asyncio.timeout(DEADLINE_SECONDS):
                    while await count(store, held_sql) == held:  # its first task changing hands
                        await asyncio.sleep(0.01)
                figures.append(time.perf_counter() - died)
            finally:
                await finish(procs)
                await store.close()
    return figures


async def bench() -> None:
    """Print the figures."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        backends: dict[str, Callable[[str], str]] = {
            "SQLite (file)": lambda name: f"sqlite:///{tmp / name}.sqlite3"
        }
        server = None
        try:
            server = PostgresServer.start()
        except Exception as error:
            print(f"PostgreSQL: no server at {admin_url()} ({error}); SQLite alone.\n")
        else:
            pg = server
            backends["PostgreSQL"] = lambda name: pg.new_schema()
        try:
            print(
                f"Throughput: {TASKS} tasks taken in and delivered, the fake API answering at once"
            )
            for label, fresh in backends.items():
                for processes in (1, 2):
                    rate, shares = await throughput(fresh(f"tp-{processes}"), tmp, processes)
                    split = ", ".join(f"{owner}: {n}" for owner, n in sorted(shares.items()))
                    plural = "processes" if processes > 1 else "process  "
                    print(f"  {label:<14} {processes} {plural}: {rate:7.1f} tasks/s   ({split})")
            print(
                f"\nTakeover: 2 processes, {TAKEOVER_TASKS} tasks at the provider, "
                f"LEASE_SECONDS={TAKEOVER_LEASE:g}, one SIGKILLed: its death → the other's "
                "first action on its tasks"
            )
            for label, fresh in backends.items():
                figures = await takeover(fresh, tmp)
                shown = ", ".join(f"{f:.2f}" for f in figures)
                print(
                    f"  {label:<14} {shown} s   (median {statistics.median(figures):.2f} s; at "
                    f"most LEASE_SECONDS + a third of it = {TAKEOVER_LEASE * 4 / 3:.1f} s)"
                )
        finally:
            if server is not None:
                server.stop()


def main() -> None:
    """The figures, or (with --worker) one engine process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=6, metavar=("NAME", "DB", "API", "MEDIA", "LEASE", "N"))
    args = parser.parse_args()
    if args.worker:
        name, db, api, media, lease, tasks = args.worker
        asyncio.run(worker(name, db, api, media, float(lease), int(tasks)))
    else:
        asyncio.run(bench())


if __name__ == "__main__":
    main()
