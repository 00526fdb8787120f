"""The engine's share of the work when several processes run the bot on one database.

Every process runs an engine, and each engine works only the tasks it holds a lease on
(`bot.store.leases`). The `LeaseKeeper`:

- at start, registers the process and claims every unfinished task nobody holds, and those its
  own previous run held (the name stays the same across restarts);
- every third of `lease_seconds`, marks the process alive, renews its leases, lets go of the
  tasks another process took meanwhile (it was away longer than a lease), and takes over the
  tasks whose lease ran out: a dead process's tasks, adopted exactly as at start-up;
- shares the API query rate: each process takes `rate / live processes` (the live ones in the
  registry), so all of them together stay within the rate the key allows;
- at stop, gives every lease up, so another process (or the restart) goes on at once.

Two steps must never be taken by two processes: the submit (the store's `start_submit`
checks the lease and takes the provider slot, counting every process's tasks there, in one
transaction) and handing an ending over (`hold`, asked right before it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection

from bot.kling.ratelimit import RateLimiter
from bot.store import TaskStore
from bot.tasks import Task

log = logging.getLogger(__name__)

#: A lease is renewed this many times within its length (and a dead one taken over as often).
RENEWALS_PER_LEASE = 3


class LeaseKeeper:
    """Holds the leases of one process's engine; see the module docstring."""

    def __init__(
        self,
        store: TaskStore,
        name: str,
        lease_seconds: float,
        *,
        adopt: Callable[[Task], None],
        lost: Callable[[int], None],
        tracked: Callable[[], Collection[int]],
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`adopt(task)`: take a task on (as at start-up); `lost(task_id)`: another process has
        it now; `tracked()`: the tasks the engine works; `limiter`: the query rate to share."""
        self.store = store
        self.name = name
        self.lease_seconds = lease_seconds
        self._adopt = adopt
        self._lost = lost
        self._tracked = tracked
        self._limiter = limiter
        self._full_rate = None if limiter is None else limiter.rate
        self._clock = clock
        self._last = clock()
        self._running = False
        self.taken_over = 0  # tasks taken over from another process since the start

    async def start(self) -> list[Task]:
        """Register the process; the tasks it takes on at start (oldest first)."""
        alive = await self.store.register_process(self.name, self.lease_seconds)
        if alive is not None:
            log.warning(
                "Another process named %r counted as alive until %.0f s from now: its previous "
                "run died moments ago, or two processes share the name. Hint: give each process "
                "its own SHARD_IDS.",
                self.name,
                alive - self.store._now(),
            )
        await self._share_rate()
        return await self.store.claim(self.name, self.lease_seconds, own=True)

    def due(self) -> bool:
        """Whether the next look is due (and none is running)."""
        wait = self.lease_seconds / RENEWALS_PER_LEASE
        return not self._running and self._clock() - self._last >= wait

    def until_due(self) -> float:
        """How long until the next look is due."""
        return max(0.0, self._last + self.lease_seconds / RENEWALS_PER_LEASE - self._clock())

    async def keep(self) -> None:
        """Stay alive, renew, let go of lost tasks, take over expired ones (one look)."""
        self._running = True
        self._last = self._clock()
        try:
            await self.store.heartbeat_process(self.name, self.lease_seconds)
            held = await self.store.renew(self.name, self.lease_seconds)
            unheld = set(self._tracked()) - held  # new (nobody holds it yet), ended, or lost
            for task_id in await self.store.held_by_others(unheld, self.name) if unheld else ():
                log.warning("Task %d: another process took it over; letting go", task_id)
                self._lost(task_id)
            await self._share_rate()
            for task in await self.store.claim(self.name, self.lease_seconds):
                # The takeover: a dead process's task (or one nobody held), adopted as at start.
                log.info("Task %d: taken over (%s)", task.id, task.state.value)
                self.taken_over += 1
                self._adopt(task)
        finally:
            self._running = False

    async def hold(self, task_id: int) -> bool:
        """Whether this process still holds the task (taking it when it is free)."""
        if await self.store.hold(task_id, self.name, self.lease_seconds):
            return True
        log.warning("Task %d: another process holds it; leaving it to that one", task_id)
        return False

    async def stop(self) -> None:
        """Give every lease up and leave the registry."""
        await self.store.end_process(self.name)

    async def _share_rate(self) -> None:
        """Take this process's share of the query rate."""
        if self._limiter is None or self._full_rate is None:
            return
        live = max(1, len(await self.store.live_processes()))
        share = self._full_rate / live
        if share != self._limiter.rate:
            log.info("Query rate: %.3g/s, a share of %d live processes", share, live)
            self._limiter.set_rate(share)
