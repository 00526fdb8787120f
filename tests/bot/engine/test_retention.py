"""The engine's retention sweep: old files go after RETENTION_DAYS, finished tasks' rows after
their files, once unchanged for RETENTION_DAYS but never less than the 35 days the quotas and
usage views count; nothing outside MEDIA_DIR is ever removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import ROW_RETENTION_FLOOR_SECONDS
from bot.engine.retention import sweep as sweep_retention
from bot.media import MediaStore
from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, Task, TaskOptions, TaskState
from tests.helpers import advance

DAY = 86400.0
NOW = 1_800_000_000.0


class Clock:
    """A clock the test moves; the store and the engine both read it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def make_task(
    store: TaskStore,
    clock: Clock,
    days_ago: float,
    end: TaskState | None,
    input_dir: Path,
) -> Task:
    """A task created (and ended, if `end`) `days_ago` days before now."""
    input_dir.mkdir(parents=True, exist_ok=True)
    (input_dir / "1.png").write_bytes(b"png")
    clock.now = NOW - days_ago * DAY
    task = await store.reserve(
        NewTask(
            user_id=1,
            guild_id=10,
            channel_id=100,
            locale="en-US",
            prompt="p",
            options=TaskOptions(),
            image_count=1,
            input_dir=str(input_dir),
            upload_limit=1,
        ),
        QuotaLimits(),
    )
    if end is TaskState.DELIVERED:
        task = await advance(store, task.id, TaskState.DELIVERED)
    elif end is TaskState.FAILED:
        task = await store.transition(task.id, TaskState.FAILED)
        await store.refund(task.id)
    elif end is not None:
        task = await advance(store, task.id, end)
    clock.now = NOW
    return task


async def sweep(media: Path, store: TaskStore, clock: Clock, retention_days: float) -> None:
    await sweep_retention(store, MediaStore(media), clock(), retention_days * DAY)


async def remaining(store: TaskStore, tasks: list[Task]) -> list[bool]:
    return [await store.get(task.id) is not None for task in tasks]


async def test_old_finished_rows_go_after_their_files_and_what_the_quotas_read_stays(
    tmp_path: Path, database_url: str
) -> None:
    clock = Clock()
    media = tmp_path / "media"
    store = await TaskStore.open(database_url, now=clock)
    try:
        ends = [
            (60, TaskState.DELIVERED),  # 0: old, counted
            (60, TaskState.FAILED),  # 1: old, refunded
            (60, TaskState.TIMED_OUT),  # 2: old
            (30, TaskState.DELIVERED),  # 3: a month old
            (3, TaskState.DELIVERED),  # 4: this week
            (60, None),  # 5: still queued: never removed
            (60, TaskState.SUCCEEDED),  # 6: not delivered yet: never removed
        ]
        tasks = [
            await make_task(store, clock, days, end, media / "inputs" / f"t{n}")
            for n, (days, end) in enumerate(ends)
        ]
        week = await store.usage_summary(10, NOW - 7 * DAY)
        month = await store.usage(user_id=1, since=NOW - 30 * DAY)

        await sweep(media, store, clock, retention_days=0)  # 0 keeps everything
        assert await remaining(store, tasks) == [True] * 7
        assert all(Path(task.input_dir).exists() for task in tasks)

        await sweep(media, store, clock, retention_days=7)
        # The files of what ended over 7 days ago go; every row stays for now.
        kept = [Path(task.input_dir).exists() for task in tasks]
        assert kept == [False, False, False, False, True, True, True]
        assert await remaining(store, tasks) == [True] * 7
        assert await store.usage_summary(10, NOW - 7 * DAY) == week
        assert await store.usage(user_id=1, since=NOW - 30 * DAY) == month

        clock.now = NOW + 34 * DAY
        await sweep(media, store, clock, retention_days=7)
        assert await remaining(store, tasks) == [True] * 7  # files gone 34 days: rows stay

        clock.now = NOW + 36 * DAY
        await sweep(media, store, clock, retention_days=7)
        assert await remaining(store, tasks) == [False, False, False, False, True, True, True]
        assert not Path(tasks[4].input_dir).exists()  # its files went at +34 days, its row stays
    finally:
        await store.close()


async def test_a_longer_retention_keeps_rows_longer(tmp_path: Path, database_url: str) -> None:
    clock = Clock()
    media = tmp_path / "media"
    store = await TaskStore.open(database_url, now=clock)
    try:
        [task] = [await make_task(store, clock, 100, TaskState.DELIVERED, media / "inputs" / "a")]
        await sweep(media, store, clock, retention_days=90)
        assert not Path(task.input_dir).exists()
        clock.now = NOW + 89 * DAY
        await sweep(media, store, clock, retention_days=90)
        assert await remaining(store, [task]) == [True]  # more than the 35-day floor
        clock.now = NOW + 91 * DAY
        await sweep(media, store, clock, retention_days=90)
        assert await remaining(store, [task]) == [False]
        assert ROW_RETENTION_FLOOR_SECONDS >= 30 * DAY  # monthly views still see a month
    finally:
        await store.close()


async def test_the_sweep_removes_nothing_outside_media_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """A row whose input_dir is empty (the current folder: the database's) or elsewhere must
    never make the sweep delete that folder."""
    here = tmp_path / "bot-home"
    outside = tmp_path / "elsewhere"
    here.mkdir()
    (here / "keep.txt").write_text("the database lives here")
    monkeypatch.chdir(here)
    clock = Clock()
    media = here / "media"
    store = await TaskStore.open(database_url, now=clock)
    try:
        empty = await make_task(store, clock, 60, TaskState.FAILED, media / "inputs" / "x")
        await make_task(store, clock, 60, TaskState.FAILED, outside)
        root = await make_task(store, clock, 60, TaskState.FAILED, media / "inputs" / "y")
        clock.now = NOW - 60 * DAY
        await store.update(empty.id, input_dir="")
        await store.update(root.id, input_dir=str(media))
        clock.now = NOW
        await sweep(media, store, clock, retention_days=7)
        assert (here / "keep.txt").exists() and (outside / "1.png").exists()
        assert (media / "inputs" / "x" / "1.png").exists()  # not named by its row any more
        assert len(await store.expired_inputs(NOW)) == 0  # all three were looked at
    finally:
        await store.close()
