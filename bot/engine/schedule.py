"""When the engine looks at each task next: a heap of due actions (the durable-timer pattern).

Each tracked task has at most one action due; scheduling another replaces it (its old entry in
the heap is skipped when it comes up). The schedule lives in memory: after a restart the engine
rebuilds it from the stored states.
"""

from __future__ import annotations

import heapq
import itertools
import time
from enum import StrEnum


class Action(StrEnum):
    """What the engine does next for a tracked task."""

    RESOLVE = "resolve"  # a submit of unknown outcome: look it up by external id
    POLL = "poll"
    DELIVER = "deliver"
    TELL = "tell"  # ended without a video; its notice isn't out yet


class Schedule:
    """The due action of every tracked task, soonest first."""

    def __init__(self) -> None:
        self._due: dict[int, tuple[float, Action]] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._seq = itertools.count()

    def __contains__(self, task_id: object) -> bool:
        """Whether the task has an action due."""
        return task_id in self._due

    def put(self, task_id: int, action: Action, delay: float) -> None:
        """Do `action` for the task `delay` seconds from now (instead of what was due)."""
        due = time.monotonic() + max(0.0, delay)
        self._due[task_id] = (due, action)
        heapq.heappush(self._heap, (due, next(self._seq), task_id))

    def pending(self, task_id: int) -> Action | None:
        """The task's due action, if any."""
        entry = self._due.get(task_id)
        return entry[1] if entry else None

    def cancel(self, task_id: int) -> None:
        """Nothing is due for the task any more."""
        self._due.pop(task_id, None)

    def pop_due(self, now: float) -> list[tuple[int, Action]]:
        """The actions due by `now` (monotonic), taken off the schedule."""
        ready: list[tuple[int, Action]] = []
        while self._heap and self._heap[0][0] <= now:
            due, _, task_id = heapq.heappop(self._heap)
            current = self._due.get(task_id)
            if current is None or current[0] != due:
                continue  # superseded by a later schedule
            del self._due[task_id]
            ready.append((task_id, current[1]))
        return ready

    def next_due(self) -> float | None:
        """When (monotonic) the soonest entry comes up, or None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None
