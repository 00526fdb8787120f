"""Crash-test worker: hammers a database until it is killed (used by the crash test in
tests/bot/store/test_backends.py).

Usage: python store_crash_worker.py DATABASE_URL LOG_PATH SEED
Each committed write is appended to LOG_PATH *after* its commit returned:
`R <id> <user>` (reserved), `T <id> <state>` (transitioned), `F <id>` (refunded).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from bot.quota import QuotaExceeded, QuotaLimits
from bot.store import StaleTransition, TaskStore
from bot.tasks import NewTask, TaskOptions, TaskState

USERS = (1, 2, 3)
LIMITS = QuotaLimits(daily_per_user=None, concurrent_per_user=3)
CHAIN = (
    TaskState.QUEUED,
    TaskState.SUBMITTING,
    TaskState.SUBMITTED,
    TaskState.PROCESSING,
    TaskState.SUCCEEDED,
    TaskState.DELIVERED,
)


def _log(fd: int, line: str) -> None:
    """Append one line with a single write() so a kill leaves whole lines or nothing."""
    os.write(fd, (line + "\n").encode())


async def _worker(store: TaskStore, fd: int, rng: random.Random) -> None:
    """Reserve, move and refund tasks forever."""
    while True:
        user = rng.choice(USERS)
        try:
            task = await store.reserve(
                NewTask(
                    user_id=user,
                    guild_id=rng.choice((None, 10)),
                    channel_id=20,
                    locale="en-US",
                    prompt="crash " * rng.randint(1, 20),
                    options=TaskOptions(duration="5", mode="std"),
                    image_count=2,
                    input_dir="/tmp/in",
                    upload_limit=8_000_000,
                ),
                LIMITS,
            )
            _log(fd, f"R {task.id} {user}")
        except QuotaExceeded:
            pass
        active = await store.active_for_user(user)
        if not active:
            continue
        task = rng.choice(active)
        if rng.random() < 0.15:
            try:
                moved = await store.transition(
                    task.id, TaskState.FAILED, error_code="provider_failed"
                )
            except StaleTransition:
                continue
            _log(fd, f"T {moved.id} failed")
            if await store.refund(moved.id):
                _log(fd, f"F {moved.id}")
            continue
        step = CHAIN.index(task.state) + 1
        try:
            moved = await store.transition(task.id, CHAIN[step], attempts=step)
        except StaleTransition:
            continue
        _log(fd, f"T {moved.id} {moved.state.value}")
        if moved.state is TaskState.SUCCEEDED:
            moved = await store.transition(moved.id, TaskState.DELIVERED)
            _log(fd, f"T {moved.id} delivered")


async def main() -> None:
    """Open the store, say READY, and run a few concurrent workers."""
    url, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    store = await TaskStore.open(url)
    _log(fd, "READY")
    await asyncio.gather(*(_worker(store, fd, random.Random(seed + i)) for i in range(3)))


if __name__ == "__main__":
    asyncio.run(main())
