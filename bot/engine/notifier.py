"""What the engine tells the outside world; the Discord side implements it."""

from __future__ import annotations

from typing import Protocol

from bot.tasks import Task


class Notifier(Protocol):
    """What the engine tells the outside world (the Discord side implements it).

    The engine never waits on a slow `progress`; any exception from a call is logged and never
    stops the engine, and an ending (`deliver`, `failed`) that raises is asked again later.
    """

    async def progress(self, task: Task, queue_position: int | None) -> None:
        """The task moved (state or queue position); update what the user sees."""

    async def deliver(self, task: Task) -> int | None:
        """Hand the finished video over (the file at `video_path`, else the link in `video_url`
        with the reason in `error_code`); return the id of the message that carries it.

        Must be idempotent: after a crash it may be asked again for a task it already delivered.
        """

    async def failed(self, task: Task) -> None:
        """The task ended without a video (`failed` or `timed_out`); tell the user why.

        Must be idempotent like `deliver`; raise when the user couldn't be told yet (the engine
        asks again later, and after a restart).
        """
