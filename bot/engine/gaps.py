"""How long the engine waits between two polls of a task.

A task's gap starts at `poll_interval` when it reaches the provider (or when its status
changes), grows ×`poll_growth` with each poll up to `poll_max_interval`, and is jittered by
±`poll_jitter`. It is never shorter than the shared query rate allows when every task at the
provider is polled, with some headroom, so polls never quite fill the rate limiter and a
backlog can always drain.
"""

from __future__ import annotations

import random
from collections.abc import Set

from bot.engine.config import EngineConfig
from bot.kling.client import KlingClient

RATE_HEADROOM = 1.25


class PollGaps:
    """The current gap of every task being polled."""

    def __init__(self, config: EngineConfig, client: KlingClient, at_provider: Set[int]) -> None:
        self.config = config
        self.client = client
        self.at_provider = at_provider  # the tasks that share the query rate
        self._gaps: dict[int, float] = {}

    def restart(self, task_id: int) -> None:
        """The task reached the provider or moved: look at it again soon."""
        self._gaps[task_id] = self.config.poll_interval

    def forget(self, task_id: int) -> None:
        """The task is no longer polled."""
        self._gaps.pop(task_id, None)

    def next(self, task_id: int) -> float:
        """The task's next gap: the current one, which then grows ×growth up to the max."""
        gap = self._gaps.get(task_id, self.config.poll_interval)
        self._gaps[task_id] = min(gap * self.config.poll_growth, self.config.poll_max_interval)
        gap = max(gap, self.floor())
        spread = gap * self.config.poll_jitter
        return gap + random.uniform(-spread, spread)

    def first(self) -> float:
        """A random first delay after a restart, so many tasks don't stampede."""
        return random.uniform(0, max(self.config.poll_interval, self.floor()))

    def floor(self) -> float:
        """The shortest gap the query rate allows when every task at the provider is polled."""
        limiter = self.client.limiter
        if limiter is None:
            return 0.0
        return len(self.at_provider) / limiter.rate * RATE_HEADROOM
