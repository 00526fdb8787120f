"""The engine's periodic jobs, each on its own clock: the heartbeat, the retention sweep and
the monthly cap's check.

The scheduler loop asks `due` on every turn and runs what it gets as steps of no task; the loop
comes round at least once per `HEARTBEAT_SECONDS`, so none of them waits longer than that.
`beat_written` is when this process last wrote its heartbeat (kept in memory: with several
processes on one database the stored one may be another's), for `/healthz`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from bot.engine.config import EngineConfig
from bot.engine.credit_alerts import CreditCapWatch
from bot.engine.retention import sweep
from bot.media import MediaStore
from bot.ops import HEARTBEAT_KEY, HEARTBEAT_SECONDS
from bot.store import TaskStore

RETENTION_SWEEP_SECONDS = 3600.0


class Chores:
    """Which periodic jobs are due: the heartbeat, the retention sweep, the cap's check."""

    def __init__(
        self,
        store: TaskStore,
        media: MediaStore,
        config: EngineConfig,
        *,
        clock: Callable[[], float] = time.time,
        cap_watch: CreditCapWatch | None = None,
    ) -> None:
        self.store = store
        self.media = media
        self.config = config
        self.cap_watch = cap_watch
        self._clock = clock
        self._last_sweep = 0.0
        self._last_beat = 0.0
        self.beat_written: float | None = None

    def due(self, now: float) -> Iterator[Coroutine[Any, Any, None]]:
        """The jobs to run now (`now` is the loop's monotonic time, for the cap's check)."""
        if self._clock() - self._last_sweep > RETENTION_SWEEP_SECONDS:
            self._last_sweep = self._clock()
            yield self.sweep()
        if self._clock() - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = self._clock()
            yield self._beat(self._last_beat)
        if self.cap_watch is not None and self.cap_watch.wants_check(now):
            yield self.cap_watch.run_check()

    async def _beat(self, now: float) -> None:
        await self.store.set_meta(HEARTBEAT_KEY, f"{now:.3f}")
        self.beat_written = now

    async def sweep(self) -> None:
        """Remove old tasks' files, then old finished tasks' rows (`bot.engine.retention`)."""
        await sweep(self.store, self.media, self._clock(), self.config.retention_seconds)
