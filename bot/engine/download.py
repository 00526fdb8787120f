"""The video download: once, streamed and capped, into MEDIA_DIR (the provider's links expire).

A video is kept only when it is whole, within `VIDEO_MAX_BYTES` and an MP4; it is written
under a temporary name and renamed into place, so a file at its path is always whole.
Otherwise the reason is returned and the user gets the link instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path

import aiohttp

from bot.engine.config import EngineConfig
from bot.media import MediaStore
from bot.store import TaskStore
from bot.tasks import FailureReason, Task

log = logging.getLogger(__name__)

MP4_BRAND = b"ftyp"
DOWNLOAD_CHUNK = 256 * 1024
DOWNLOAD_ATTEMPTS = 3


class VideoRefused(Exception):
    """The video can't be kept, for a reason that won't change on another try."""

    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


async def keep_video(
    task: Task,
    store: TaskStore,
    media: MediaStore,
    session: aiohttp.ClientSession,
    config: EngineConfig,
) -> Task:
    """Download a finished task's video once and record where it is; without it, the reason."""
    if not task.video_url:
        return await store.update(task.id, error_code=FailureReason.VIDEO_DOWNLOAD_FAILED.value)
    path = media.video_path(task.id)
    fetched = await fetch_video(
        session,
        task.id,
        task.video_url,
        path,
        max_bytes=config.video_max_bytes,
        backoff=config.download_backoff,
    )
    if isinstance(fetched, FailureReason):
        log.warning("Task %d: video not kept (%s); delivering the link", task.id, fetched.value)
        return await store.update(task.id, error_code=fetched.value)
    return await store.update(task.id, video_path=str(path), video_bytes=fetched)


async def fetch_video(
    session: aiohttp.ClientSession,
    task_id: int,
    url: str,
    path: Path,
    *,
    max_bytes: int,
    backoff: float,
) -> int | FailureReason:
    """Download the video to `path`, trying `DOWNLOAD_ATTEMPTS` times; its size, or why not."""
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return await download(session, url, path, max_bytes=max_bytes)
        except VideoRefused as refused:
            return refused.reason
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            log.warning("Task %d: video download attempt %d failed: %s", task_id, attempt, error)
            delay = min(30.0, backoff * 2 ** (attempt - 1))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
    return FailureReason.VIDEO_DOWNLOAD_FAILED


async def download(session: aiohttp.ClientSession, url: str, path: Path, *, max_bytes: int) -> int:
    """Stream one MP4 of at most `max_bytes` to `path`; its size. Raises `VideoRefused`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
    try:
        async with session.get(url, timeout=timeout) as response:
            response.raise_for_status()
            if response.content_length is not None and response.content_length > max_bytes:
                raise VideoRefused(FailureReason.VIDEO_TOO_LARGE)
            size = 0
            head = b""
            with partial.open("wb") as out:
                async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise VideoRefused(FailureReason.VIDEO_TOO_LARGE)
                    if len(head) < 12:
                        head = (head + chunk)[:12]
                        if len(head) >= 8 and head[4:8] != MP4_BRAND:
                            raise VideoRefused(FailureReason.VIDEO_NOT_MP4)
                    out.write(chunk)
        if len(head) < 8:
            raise VideoRefused(FailureReason.VIDEO_NOT_MP4)
        partial.replace(path)
        return size
    finally:
        partial.unlink(missing_ok=True)
