"""What the engine tells the outside world; the Discord side implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.tasks import Task


@dataclass(frozen=True, slots=True)
class Delivered:
    """A result handed over: the message that carries it, and how it went (for the metrics).

    `how` is one of a few words the notifier chooses (the Discord side: `upload` or `link`, and
    where: `thread_upload`, `dm_link`, …; `again` for an ending already out before a restart).
    """

    message_id: int | None
    how: str = "unknown"


class Notifier(Protocol):
    """What the engine tells the outside world (the Discord side implements it).

    The engine never waits on a slow `progress`; any exception from a call is logged and never
    stops the engine, and an ending (`deliver`, `failed`) that raises is asked again later.
    """

    async def progress(self, task: Task, queue_position: int | None) -> None:
        """The task moved (state or queue position); update what the user sees."""

    async def deliver(self, task: Task) -> Delivered:
        """Hand the finished video over (the file at `video_path`, else the link in `video_url`
        with the reason in `error_code`); say which message carries it, and how it went.

        Must be idempotent: after a crash it may be asked again for a task it already delivered.
        """

    async def failed(self, task: Task) -> None:
        """The task ended without a video (`failed` or `timed_out`); tell the user why.

        Must be idempotent like `deliver`; raise when the user couldn't be told yet (the engine
        asks again later, and after a restart).
        """
