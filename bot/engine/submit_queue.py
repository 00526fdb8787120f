"""The submit queue: tasks waiting for a slot at the provider, first in, first out.

At most `max_concurrent` tasks are at the provider at once (`at_provider` holds their ids,
from the moment their submit starts until they end). When the provider refuses a task for now
(its concurrency is full, or a refusal that clearly created nothing), the task goes back to
the front and submits pause for a back-off that doubles with each refusal in a row.

The waiting tasks are told their place, off the engine's loop and at most a few times a
second: the first `EXACT_POSITIONS` places on every move, further back every
`COARSE_POSITION_STEP` places, so a long queue doesn't cost a store read per task per move.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from bot.store import TaskStore
from bot.tasks import Task

log = logging.getLogger(__name__)

EXACT_POSITIONS = 25
COARSE_POSITION_STEP = 10
ANNOUNCE_DEBOUNCE_SECONDS = 0.2


class SubmitQueue:
    """The waiting tasks (by id), the provider's slots, and the back-off after a refusal."""

    def __init__(
        self,
        store: TaskStore,
        tell_place: Callable[[Task, int], Awaitable[None]],
        *,
        max_concurrent: int,
        backoff: float,
        max_backoff: float,
    ) -> None:
        self.store = store
        self.tell_place = tell_place
        self.max_concurrent = max_concurrent
        self.waiting: deque[int] = deque()
        self.at_provider: set[int] = set()
        self._first_backoff = backoff
        self._max_backoff = max_backoff
        self._backoff = backoff
        self._paused_until = 0.0
        self._told: dict[int, int] = {}  # task id → the place it was last told
        self._moved = asyncio.Event()

    def append(self, task_id: int) -> None:
        """A task joins the end of the queue."""
        self.waiting.append(task_id)
        self._moved.set()

    def put_back(self, task_id: int) -> None:
        """A task goes back to the front of the queue (it keeps no slot at the provider)."""
        self.at_provider.discard(task_id)
        if task_id not in self.waiting:
            self.waiting.appendleft(task_id)
            self._moved.set()

    def position(self, task_id: int) -> int | None:
        """The 1-based place of a task in the queue, or None when it isn't waiting."""
        try:
            return self.waiting.index(task_id) + 1
        except ValueError:
            return None

    def next_position(self) -> int | None:
        """Where a task enqueued now would wait, or None when it would be sent at once."""
        if not self.waiting and len(self.at_provider) < self.max_concurrent:
            return None
        return len(self.waiting) + 1

    def take_ready(self, now: float) -> list[int]:
        """The tasks whose submit starts now: each takes a slot at the provider."""
        if now < self._paused_until:
            return []
        ready: list[int] = []
        while self.waiting and len(self.at_provider) < self.max_concurrent:
            task_id = self.waiting.popleft()
            self._moved.set()
            self.at_provider.add(task_id)
            self._told.pop(task_id, None)
            ready.append(task_id)
        return ready

    def pause_left(self, now: float) -> float | None:
        """How long tasks still wait for the back-off to end (None when nothing waits on it)."""
        if self.waiting and self._paused_until > now:
            return self._paused_until - now
        return None

    def refused(self) -> None:
        """The provider didn't take a task for now: pause the submits, longer each time."""
        self._paused_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def pause(self, seconds: float) -> None:
        """Wait `seconds` before the next submit (every slot is taken, by other processes too)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def accepted(self) -> None:
        """The provider took a task: the next refusal pauses briefly again."""
        self._backoff = self._first_backoff

    async def run(self) -> None:
        """Tell waiting tasks their places whenever the queue moved (until cancelled)."""
        while True:
            await self._moved.wait()
            await asyncio.sleep(ANNOUNCE_DEBOUNCE_SECONDS)
            self._moved.clear()
            try:
                await self.announce()
            except Exception:
                log.exception("Telling queue places failed")

    async def announce(self) -> None:
        """Tell each waiting task its place when it changed (see the module docstring)."""
        moved: list[tuple[int, int]] = []
        for position, task_id in enumerate(list(self.waiting), start=1):
            told = self._told.get(task_id)
            if told == position:
                continue
            if (
                position > EXACT_POSITIONS
                and told is not None
                and abs(told - position) < COARSE_POSITION_STEP
            ):
                continue
            moved.append((task_id, position))
        if not moved:
            return
        rows = {task.id: task for task, _ in await self.store.queue()}  # one read for all
        for task_id, position in moved:
            task = rows.get(task_id)
            if task is not None:
                self._told[task_id] = position
                await self.tell_place(task, position)
