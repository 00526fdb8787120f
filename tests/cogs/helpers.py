"""Helpers of the Discord side's tests."""

from __future__ import annotations

import time
from dataclasses import replace

from bot.tasks import ResultWhere, Task, TaskNotes, TaskOptions, TaskState


def make_task(**changes: object) -> Task:
    now = time.time()
    task = Task(
        id=7,
        external_task_id="kvb-1",
        kling_task_id="861",
        user_id=42,
        guild_id=1,
        channel_id=2,
        status_message_id=3,
        thread_id=4,
        result_message_id=None,
        locale="nl",
        prompt="een kat",
        options=TaskOptions(duration="10"),
        image_count=2,
        input_dir="/tmp/x",
        state=TaskState.QUEUED,
        status_message=None,
        error_code=None,
        video_url=None,
        video_path=None,
        video_bytes=None,
        attempts=0,
        quota_refunded=False,
        callback_token="t",
        upload_limit=10 << 20,
        created_at=now,
        updated_at=now,
        submitted_at=None,
        finished_at=None,
        delivered_at=None,
        quota_reset_at=None,
        inputs_removed_at=None,
        notes=TaskNotes(image_names=("a.png", "b.png"), result_where=ResultWhere.THREAD),
    )
    return replace(task, **changes)  # type: ignore[arg-type]
