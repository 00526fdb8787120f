"""Helpers shared by the unit tests."""

from __future__ import annotations

from collections import deque
from typing import Any

from bot.store import TaskStore
from bot.tasks import TRANSITIONS, Task, TaskState


def route(start: TaskState, goal: TaskState) -> list[TaskState]:
    """The states a task passes through, the shortest way `TRANSITIONS` allows, to `goal`."""
    came_from: dict[TaskState, TaskState] = {}
    todo = deque([start])
    while todo:
        state = todo.popleft()
        if state is goal and state is not start:
            break
        for after, befores in TRANSITIONS.items():
            if state in befores and after not in came_from:
                came_from[after] = state
                todo.append(after)
    assert goal in came_from, f"{goal} can't be reached from {start}"
    path = [goal]
    while path[-1] in came_from and came_from[path[-1]] is not start:
        path.append(came_from[path[-1]])
    return path[::-1]


async def advance(store: TaskStore, task_id: int, to: TaskState, **fields: Any) -> Task:
    """Move a task to `to` through the allowed transitions; `fields` go with the last one."""
    task = await store.get(task_id)
    assert task is not None
    *between, last = route(task.state, to)
    for state in between:
        await store.transition(task_id, state)
    return await store.transition(task_id, last, **fields)
