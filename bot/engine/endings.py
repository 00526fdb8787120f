"""How a task ends without a video: failed or timed out, its quota settled, the user told.

A part of `TaskEngine` (`bot.engine.machine`), kept apart so the state machine stays small.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from bot.engine.config import EngineConfig
from bot.engine.notifier import Notifier
from bot.engine.schedule import Action
from bot.kling.errors import KlingError, OperatorError
from bot.quota import refund_due
from bot.store import StaleTransition, TaskStore
from bot.tasks import FailureReason, Task, TaskState

log = logging.getLogger("bot.engine.machine")


class Endings:
    """The endings of `TaskEngine`: time-outs, failures, refunds and their notices."""

    store: TaskStore
    notifier: Notifier
    config: EngineConfig
    _clock: Callable[[], float]
    _operator_alerted: set[type[KlingError]]

    def _forget(self, task_id: int) -> None:
        raise NotImplementedError

    def _notifier_failed(self, task: Task, action: Action, what: str) -> None:
        raise NotImplementedError

    def _timed_out(self, task: Task) -> bool:
        """Past the time-out: counted from the submit once at the provider, else from creation."""
        started = task.submitted_at or task.created_at
        return self._clock() - started > self.config.task_timeout

    async def _time_out(self, task: Task) -> None:
        try:
            task = await self.store.transition(
                task.id,
                TaskState.TIMED_OUT,
                error_code=FailureReason.TIMED_OUT.value,
                status_message=f"not finished after {self.config.task_timeout:g} s",
            )
        except StaleTransition:
            return
        task = await self._settle_quota(task)
        self._forget(task.id)
        log.info("Task %d timed out", task.id)
        await self._tell_ending(task)

    async def _fail(
        self, task: Task, reason: FailureReason, message: str, charged: str | None = None
    ) -> None:
        """End a task as failed, give its quota back and tell the user; `charged` is what the
        provider's last answer said it deducted, if it said."""
        try:
            task = await self.store.transition(
                task.id,
                TaskState.FAILED,
                error_code=reason.value,
                status_message=message,
                provider_deduction=charged,
            )
        except StaleTransition:
            return
        task = await self._settle_quota(task)
        self._forget(task.id)
        log.info("Task %d failed (%s): %s", task.id, reason.value, message)
        await self._tell_ending(task)

    async def _settle_quota(self, task: Task) -> Task:
        """Give an ended task's quota back when the policy says so (again after a crash: once)."""
        reached = task.kling_task_id is not None
        if refund_due(task.state, reached_provider=reached) and await self.store.refund(task.id):
            task = replace(task, quota_refunded=True)
        return task

    async def _tell_ending(self, task: Task) -> None:
        """Tell the user why the task ended without a video; it is told once the notice is out."""
        try:
            await self.notifier.failed(task)
        except Exception:
            self._notifier_failed(task, Action.TELL, "telling the ending")
            return
        await self.store.update(task.id, notified_at=self._clock())
        self._forget(task.id)

    def _alert_operator(self, error: OperatorError) -> None:
        """Log an operator problem loudly, once per kind, not once per task."""
        if type(error) in self._operator_alerted:
            log.debug("Operator problem again: %s", error)
            return
        self._operator_alerted.add(type(error))
        log.error("OPERATOR ACTION NEEDED: %s. Hint: %s.", error, error.hint)
