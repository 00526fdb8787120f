"""The retention sweep: old tasks' files, then old finished tasks' rows.

The videos and inputs of tasks that ended longer ago than the retention go first (only paths
inside MEDIA_DIR), then the rows of finished tasks unchanged for the retention and at least
`ROW_RETENTION_FLOOR_SECONDS` (a retention of 0 keeps everything). Removing a task's files
changes its row, so a row goes that long after its files, and never before them (the store's
clock for both is the row's last change).
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.media import MediaStore
from bot.quota import DAY_SECONDS
from bot.store import TaskStore

log = logging.getLogger(__name__)

#: Finished tasks' rows are kept at least this long, whatever RETENTION_DAYS says: the quotas
#: (24 h), the usage summary (7 days) and monthly spend views (30 days) count them.
ROW_RETENTION_FLOOR_SECONDS = 35 * DAY_SECONDS


async def sweep(store: TaskStore, media: MediaStore, now: float, retention_seconds: float) -> None:
    """Remove what is older than `retention_seconds` at `now` (see the module docstring)."""
    if retention_seconds <= 0:
        return
    for task in await store.expired_inputs(now - retention_seconds):
        for path in (task.input_dir, task.video_path):
            if path and _in_media_dir(media, path):
                await media.remove(path)
        await store.update(task.id, inputs_removed_at=now)
    keep_rows = max(retention_seconds, ROW_RETENTION_FLOOR_SECONDS)
    removed = await store.delete_older_than(now - keep_rows)
    if removed:
        log.info(
            "Removed %d finished task(s) unchanged for %.0f days", removed, keep_rows / DAY_SECONDS
        )


def _in_media_dir(media: MediaStore, path: str) -> bool:
    """Whether a stored path lies inside MEDIA_DIR: the sweep removes nothing else (an empty
    `input_dir` is the current folder, which holds the database)."""
    root = media.root.resolve()
    target = Path(path).resolve()
    return target != root and target.is_relative_to(root)
