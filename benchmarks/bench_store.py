"""Benchmark of bot.store on a file database: start-up load, reservation throughput, size.

Run: .venv/bin/python benchmarks/bench_store.py   (prints figures; asserts nothing on time)
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, TaskOptions, TaskState

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


def _line(name: str, value: str, target: str, ok: bool | None) -> None:
    """Print one figure against its target."""
    verdict = "" if ok is None else ("OK" if ok else "MISSED")
    print(f"{name:<46} {value:>12}   target {target:<12} {verdict}")


async def main() -> None:
    """Fill a temp database with 10,000 tasks and measure."""
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite3"
        store = await TaskStore.open(f"sqlite:///{path}")
        tasks = [_new_task(rng) for _ in range(ROWS)]

        # The default configuration: per-user daily and concurrent limits only.
        other = await TaskStore.open(f"sqlite:///{Path(tmp) / 'defaults.sqlite3'}")
        started = time.perf_counter()
        for t in tasks:
            await other.reserve(t, DEFAULT_LIMITS)
        rate = ROWS / (time.perf_counter() - started)
        await other.close()
        _line("reserve+insert, per-user limits", f"{rate:,.0f}/s", "≥ 1,000/s", rate >= 1000)

        # Worst case: all four limits counted, every row inside the 24 h window.
        started = time.perf_counter()
        ids = [(await store.reserve(t, LIMITS)).id for t in tasks]
        elapsed = time.perf_counter() - started
        rate = ROWS / elapsed
        _line("reserve+insert, all four limits", f"{rate:,.0f}/s", "≥ 1,000/s", rate >= 1000)
        _line("  mean latency per reservation", f"{elapsed / ROWS * 1e3:.3f} ms", "", None)

        started = time.perf_counter()
        unfinished = await store.unfinished()
        load = time.perf_counter() - started
        _line(
            f"load unfinished ({len(unfinished):,} of {ROWS:,} rows)",
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
        _line("transition (guarded UPDATE … RETURNING)", f"{moves:,.0f}/s", "", None)

        started = time.perf_counter()
        unfinished = await store.unfinished()
        load = time.perf_counter() - started
        _line(
            f"load unfinished ({len(unfinished):,} of {ROWS:,} rows)",
            f"{load:.3f} s",
            "≤ 1 s",
            load <= 1,
        )

        await store.close()
        size = path.stat().st_size  # closing checkpoints the WAL into the main file
        _line("database bytes per task (incl. indexes)", f"{size / ROWS:,.0f} B", "", None)
        _line("database file", f"{size / 1e6:.2f} MB", "", None)


if __name__ == "__main__":  # fmt: skip
    asyncio.run(main())
