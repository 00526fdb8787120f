"""A process-wide limit on API requests per second, shared by every task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """Spaces calls evenly so that no more than `rate` start in any second.

    Waiters are served in arrival order; a burst of `burst` calls may start at once after
    a quiet period.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._interval = 1.0 / rate
        self._burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._next_free = clock() - self._burst * self._interval

    def set_rate(self, rate: float) -> None:
        """Space the calls from now on for a new `rate` (e.g. this process's share of it)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._interval = 1.0 / rate

    async def acquire(self) -> None:
        """Wait for the next free slot."""
        now = self._clock()
        earliest = now - (self._burst - 1) * self._interval
        slot = max(self._next_free, earliest)
        self._next_free = slot + self._interval
        delay = slot - now
        if delay > 0:
            await self._sleep(delay)
