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
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from bot.engine.config import EngineConfig
from bot.engine.submit_queue import SubmitQueue
from bot.kling.ratelimit import RateLimiter
from bot.metrics import MetricsRecorder, NullMetrics
from bot.store import SlotRefused, TaskStore
from bot.tasks import Task

log = logging.getLogger(__name__)

#: A lease is renewed this many times within its length (and a dead one taken over as often).
RENEWALS_PER_LEASE = 3


def _ignore(*_: object) -> Any:
    """What the keeper calls before `attach` gave it the engine's hooks."""
    return False


class LeaseKeeper:
    """Holds the leases of one process's engine; see the module docstring."""

    def __init__(
        self,
        store: TaskStore,
        config: EngineConfig,
        queue: SubmitQueue,
        limiter: RateLimiter | None = None,
        *,
        metrics: MetricsRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`queue`: where a task waits when every provider slot is taken; `limiter`: the query
        rate to share; `metrics`: where take-overs are counted."""
        self.store = store
        self.name = config.process_name
        self.lease_seconds = config.lease_seconds
        self._backoff = config.submit_backoff
        self._max_concurrent = config.max_concurrent
        self._queue = queue
        self._limiter = limiter
        self._full_rate = None if limiter is None else limiter.rate
        self._metrics = metrics or NullMetrics()
        self._clock = clock
        self._last = clock()
        self._running = False
        self._held: set[int] = set()  # the tasks this process held at the last look
        self._adopt: Callable[[Task], None] = _ignore
        self._lost: Callable[[int], None] = _ignore
        self._tracks: Callable[[int], bool] = _ignore
        self.taken_over = 0  # tasks taken over from another process since the start

    def attach(
        self,
        *,
        adopt: Callable[[Task], None],
        lost: Callable[[int], None],
        tracks: Callable[[int], bool],
    ) -> None:
        """The engine's hooks: `adopt(task)` takes a task on as at start-up; `lost(task_id)`
        drops one another process has now; `tracks(task_id)`: whether the engine works it."""
        self._adopt, self._lost, self._tracks = adopt, lost, tracks

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
        tasks = await self.store.claim(self.name, self.lease_seconds, own=True)
        self._held = {task.id for task in tasks}
        return tasks

    def due(self) -> Iterator[Coroutine[Any, Any, None]]:
        """The look at the leases, when it is due (and none is running)."""
        wait = self.lease_seconds / RENEWALS_PER_LEASE
        if not self._running and self._clock() - self._last >= wait:
            self._running = True
            self._last = self._clock()
            yield self.keep()

    def until_due(self) -> float:
        """How long until the next look is due."""
        wait = self.lease_seconds / RENEWALS_PER_LEASE
        return max(0.01, self._last + wait - self._clock())

    async def keep(self) -> None:
        """Stay alive, renew, let go of lost tasks, take over expired ones (one look)."""
        self._running = True
        self._last = self._clock()
        try:
            await self.store.heartbeat_process(self.name, self.lease_seconds)
            held = await self.store.renew(self.name, self.lease_seconds)
            gone = self._held - held  # ended since, or lost to another process
            for task_id in await self.store.held_by_others(gone, self.name) if gone else ():
                log.warning("Task %d: another process took it over; letting go", task_id)
                self._lost(task_id)
            self._held = held
            await self._share_rate()
            for task in await self.store.claim(self.name, self.lease_seconds):
                self._held.add(task.id)
                if not self._tracks(task.id):
                    # The takeover: a dead process's task (or one nobody held), adopted as at
                    # start-up.
                    log.info("Task %d: taken over (%s)", task.id, task.state.value)
                    self.taken_over += 1
                    self._metrics.count_takeover()
                    self._adopt(task)
        finally:
            self._running = False

    async def hold(self, task_id: int) -> bool:
        """Whether this process still holds the task (taking it when it is free); when another
        holds it, the engine lets go of it."""
        if await self.store.hold(task_id, self.name, self.lease_seconds):
            self._held.add(task_id)
            return True
        log.warning("Task %d: another process holds it; leaving it to that one", task_id)
        self._lost(task_id)
        return False

    async def take_slot(self, task: Task) -> Task | None:
        """Move a queued task to `submitting` under this process's lease, with a provider slot
        counted over every process (one transaction); the task as written, or None: every slot
        is taken (it waits at the front of the queue), or another process holds it now."""
        started = await self.store.start_submit(
            task.id,
            self.name,
            self.lease_seconds,
            self._max_concurrent,
            attempts=task.attempts + 1,
            submit_posts=1,  # written before the POST it counts
        )
        if started is SlotRefused.FULL:  # other processes' tasks fill the provider's slots
            self._queue.put_back(task.id)
            self._queue.pause(self._backoff)
            return None
        if started is SlotRefused.NOT_MINE:
            log.info("Task %d: another process submits it; leaving it to that one", task.id)
            self._lost(task.id)
            return None
        self._held.add(task.id)
        return started

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
