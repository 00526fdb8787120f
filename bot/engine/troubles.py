"""When something outside the engine fails: an operator problem is logged loudly once per
kind (not once per task), and an ending the notifier couldn't hand over is asked again with
growing gaps, up to `DELIVERY_ATTEMPTS` times, then left until the next restart.
"""

from __future__ import annotations

import logging

from bot.engine.config import EngineConfig
from bot.kling.errors import KlingError, OperatorError

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 8


class OperatorAlerts:
    """Operator problems (a bad key, no balance): one loud line per kind."""

    def __init__(self) -> None:
        self._alerted: set[type[KlingError]] = set()

    def alert(self, error: OperatorError) -> None:
        """Log an operator problem loudly, once per kind, not once per task."""
        if type(error) in self._alerted:
            log.debug("Operator problem again: %s", error)
            return
        self._alerted.add(type(error))
        log.error("OPERATOR ACTION NEEDED: %s. Hint: %s.", error, error.hint)


class EndingRetries:
    """How often each task's ending failed to go out, and how long until the next try."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._attempts: dict[int, int] = {}

    def failed(self, task_id: int, what: str) -> float | None:
        """One more failure (logged, with the exception being handled): the delay before the
        next try, or None when it is given up until the restart."""
        attempts = self._attempts.get(task_id, 0) + 1
        self._attempts[task_id] = attempts
        if attempts >= DELIVERY_ATTEMPTS:
            log.exception(
                "Task %d: %s failed %d times; giving up until restart", task_id, what, attempts
            )
            return None
        delay = min(self.config.poll_max_interval, self.config.poll_interval * 2**attempts)
        log.warning(
            "Task %d: %s failed; retry %d in %.0f s", task_id, what, attempts, delay, exc_info=True
        )
        return delay

    def forget(self, task_id: int) -> None:
        """The task is done with (or no longer this engine's)."""
        self._attempts.pop(task_id, None)
