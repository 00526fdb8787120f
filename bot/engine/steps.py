"""The engine's steps in flight: one asyncio task each, at most one per engine task at a time.

A step that only asks (a poll, a lookup) is cancellable: `stop` cancels it at once, unless it
is inside a `critical` part (writing the answer it got, or handing an ending over). Every other
step gets `grace` seconds to finish; a submit cancelled after that stays `submitting` and is
looked up after the restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

from bot.logs import current_task_id

log = logging.getLogger(__name__)


class Steps:
    """Runs the engine's steps and knows which tasks are busy."""

    def __init__(self, *, on_error: Callable[[int], None], on_done: Callable[[], None]) -> None:
        """`on_error(task_id)` after a step raised unexpectedly; `on_done()` after every step."""
        self._on_error = on_error
        self._on_done = on_done
        # step → (its task, may it be cancelled at stop)
        self._inflight: dict[asyncio.Task[None], tuple[int | None, bool]] = {}
        self._busy: set[int] = set()
        self._critical: set[int] = set()  # tasks whose step is writing or delivering

    def busy(self, task_id: int) -> bool:
        """Whether a step for the task is running."""
        return task_id in self._busy

    def spawn(
        self, task_id: int | None, step: Coroutine[Any, Any, None], *, cancellable: bool = False
    ) -> None:
        """Run `step` for the task (None: for no task, e.g. the retention sweep)."""
        if task_id is not None:
            self._busy.add(task_id)
        job = asyncio.create_task(self._guarded(task_id, step))
        self._inflight[job] = (task_id, cancellable)
        job.add_done_callback(lambda done: self._inflight.pop(done, None))

    @contextmanager
    def critical(self, task_id: int) -> Iterator[None]:
        """A part of a step that `stop` lets finish even when the step is cancellable."""
        self._critical.add(task_id)
        try:
            yield
        finally:
            self._critical.discard(task_id)

    async def stop(self, grace: float) -> None:
        """Cancel what may be cancelled, give the rest `grace` seconds, then cancel them too."""
        for step, (task_id, cancellable) in list(self._inflight.items()):
            if cancellable and task_id not in self._critical:
                step.cancel()
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=grace)
            for step in pending:
                step.cancel()
            if pending:
                await asyncio.wait(pending)

    async def _guarded(self, task_id: int | None, step: Coroutine[Any, Any, None]) -> None:
        """Run one step; an unexpected error is logged with the task id and handed on."""
        if task_id is not None:
            current_task_id.set(task_id)  # every log line of this step carries the task id
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Engine step for task %s failed unexpectedly; retrying later", task_id)
            if task_id is not None:
                self._on_error(task_id)
        finally:
            if task_id is not None:
                self._busy.discard(task_id)
                self._on_done()
