"""The task engine: one per process, it moves every task from `queued` to its end.

`queued → submitting → submitted → processing → succeeded → delivered`, or `failed` /
`timed_out`. Every state is written to the store before the step it announces, so a crash
at any moment leaves a row that says what to do next; `start` picks every unfinished row up.
A task is done only once the user was told how it ended: a video is marked delivered after
the notifier handed it over, and a failure or time-out is marked told after its notice went
out, so a crash between an ending and its message never loses the message.

One scheduler loop drives the parts, each in its own module: the `Schedule` of due actions
(woken early by new tasks and callbacks), the `SubmitQueue` (at most `max_concurrent` at the
provider), `EnginePolls` (polls planned from the learned generation times), the `LeaseKeeper`
(which tasks this process works), the `Steps` in flight, the `CallbackServer`, the download
(`keep_video`) and the periodic `Chores`. It never imports discord: it tells a `Notifier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp

from bot.engine.callbacks import CallbackServer
from bot.engine.chores import Chores
from bot.engine.config import EngineConfig
from bot.engine.credit_alerts import CreditCapWatch
from bot.engine.download import keep_video
from bot.engine.leases import LeaseKeeper
from bot.engine.notifier import Notifier
from bot.engine.polls import EnginePolls
from bot.engine.request import build_request
from bot.engine.schedule import Action, Schedule
from bot.engine.steps import Steps
from bot.engine.submit_queue import SubmitQueue
from bot.engine.troubles import EndingRetries, OperatorAlerts
from bot.kling.client import KlingClient
from bot.kling.errors import (
    ConcurrencyLimitError,
    KlingError,
    OperatorError,
    SubmitOutcomeUnknownError,
    TaskNotFoundError,
    TransientError,
    UserFixableError,
)
from bot.kling.models import KlingTask, TaskStatus
from bot.media import MediaStore
from bot.metrics import MetricsRecorder, NullMetrics
from bot.ops import HEARTBEAT_SECONDS
from bot.quota import refund_due
from bot.store import StaleTransition, TaskStore
from bot.tasks import FailureReason, Task, TaskState

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0


class TaskEngine:
    """Moves every task through its states; see the module docstring."""

    def __init__(
        self,
        store: TaskStore,
        client: KlingClient,
        notifier: Notifier,
        session: aiohttp.ClientSession,
        media: MediaStore,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        cap_watch: CreditCapWatch | None = None,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.store = store
        self.cap_watch = cap_watch  # the monthly cap's alerts
        self.metrics = metrics or NullMetrics()
        self.client = client
        self.notifier = notifier
        self.session = session
        self.media = media
        self.config = config or EngineConfig()
        self.queue = SubmitQueue(
            store,
            self._tell_place,
            max_concurrent=self.config.max_concurrent,
            backoff=self.config.submit_backoff,
            max_backoff=self.config.poll_max_interval,
        )
        self._wake = asyncio.Event()  # the scheduler loop looks again now
        self.callbacks = CallbackServer(store, self.wake)
        self.schedule = Schedule()
        self.steps = Steps(on_error=self._retry_later, on_done=self._wake.set)
        self.polls = EnginePolls(self.config, client, clock=clock)
        self.leases = LeaseKeeper(
            store, self.config, self.queue, client.limiter, metrics=self.metrics
        )
        self.leases.attach(adopt=self._adopt, lost=self._forget, tracks=self._tracks)
        self._clock = clock
        self.retries = EndingRetries(self.config)  # endings the notifier couldn't hand over
        self._stopping = False
        self._background: list[asyncio.Task[None]] = []  # the scheduler and the queue's places
        self.operator = OperatorAlerts()
        self.chores = Chores(store, media, self.config, clock=clock, cap_watch=cap_watch)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn from the finished tasks, pick up every unfinished task another process doesn't
        hold (queue order kept) and start the scheduler."""
        learned = await self.polls.load(self.store)
        for task in await self.leases.start():
            self._adopt(task)
        port = self.config.callback_listen_port
        if port is not None and self.config.callback_public_url:
            if not await self.callbacks.start(port):  # no listener: no callback URL to give
                self.config = replace(self.config, callback_public_url=None)
                self.polls.without_callbacks()
        self._background = [
            asyncio.create_task(self._run_loop(), name="kling-engine"),
            asyncio.create_task(self.queue.run(), name="kling-queue-places"),
        ]
        log.info(
            "Engine started: %d queued, %d at the provider, %d finished tasks learned from",
            len(self.queue.waiting),
            len(self.queue.at_provider),
            learned,
        )

    async def stop(self) -> None:
        """Stop taking new work, let in-flight writes and deliveries finish, then return.

        Polls and lookups that haven't got their answer yet are cancelled at once: they
        change nothing and are asked again after the restart.
        """
        self._stopping = True
        self._wake.set()
        for background in self._background:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        await self.steps.stop(SHUTDOWN_GRACE_SECONDS)
        await self.callbacks.stop()
        await self.leases.stop()
        log.info("Engine stopped")

    def enqueue(self, task: Task) -> None:
        """Take a newly stored `queued` task (called by the Discord side after it stored one).

        A task the engine already tracks is left as it is (an intake finished after a restart
        may hand over a task the engine picked up at start).
        """
        if self.cap_watch is not None:  # its price is spent now
            self.cap_watch.nudge()
        if self._stopping or task.state is not TaskState.QUEUED or self._tracks(task.id):
            return
        self.queue.append(task.id)
        self._wake.set()

    def _tracks(self, task_id: int) -> bool:
        return (
            task_id in self.queue.waiting
            or task_id in self.schedule
            or task_id in self.queue.at_provider
            or self.steps.busy(task_id)
        )

    def wake(self, task_id: int) -> None:
        """Look at a tracked task now (a callback said it changed)."""
        action = self.schedule.pending(task_id)
        if action is not None:
            self.polls.called_back(task_id)
            self._schedule(task_id, action, 0.0)

    def _adopt(self, task: Task) -> None:
        if task.state is TaskState.QUEUED:
            self.queue.append(task.id)
        elif task.state is TaskState.SUBMITTING:
            self.queue.at_provider.add(task.id)
            self._schedule(task.id, Action.RESOLVE, self.polls.first())
        elif task.state in (TaskState.SUBMITTED, TaskState.PROCESSING):
            self.queue.at_provider.add(task.id)
            self.polls.track(task)
            self._schedule(task.id, Action.POLL, self.polls.first())
        elif task.state is TaskState.SUCCEEDED:
            self._schedule(task.id, Action.DELIVER, 0.0)
        elif task.state in (TaskState.FAILED, TaskState.TIMED_OUT):  # ended, notice not out
            self._schedule(task.id, Action.TELL, 0.0)

    # --- scheduling -----------------------------------------------------------------------

    def _schedule(self, task_id: int, action: Action, delay: float) -> None:
        self.schedule.put(task_id, action, delay)
        self._wake.set()

    def _forget(self, task_id: int) -> None:
        self.schedule.cancel(task_id)
        self.polls.forget(task_id)
        self.retries.forget(task_id)
        if task_id in self.queue.at_provider:
            self.queue.at_provider.discard(task_id)
            self._wake.set()  # a slot at the provider is free

    async def _run_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            for task_id in self.queue.take_ready(now):
                self.steps.spawn(task_id, self._submit(task_id))
            for task_id, action in self.schedule.pop_due(now):
                if self.steps.busy(task_id):
                    self._schedule(task_id, action, self.config.poll_interval)
                    continue
                cancellable = action in (Action.POLL, Action.RESOLVE)
                self.steps.spawn(task_id, self._act(task_id, action), cancellable=cancellable)
            for chore in (*self.chores.due(now), *self.leases.due()):
                self.steps.spawn(None, chore)
            timeout = min(HEARTBEAT_SECONDS, self.leases.until_due())  # comes round at least then
            next_due = self.schedule.next_due()
            if next_due is not None:
                timeout = min(timeout, max(0.0, next_due - time.monotonic()))
            pause = self.queue.pause_left(now)
            if pause is not None:
                timeout = min(timeout, pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _retry_later(self, task_id: int) -> None:
        """Take a task up again, unhurried, after an unexpected error in its step.

        Its provider slot is freed meanwhile (a slot must never leak and stall the queue);
        `_act` re-reads the row then and decides from its state.
        """
        if self._stopping:
            return
        self._forget(task_id)
        self._schedule(task_id, Action.POLL, self.config.poll_max_interval)

    async def _act(self, task_id: int, action: Action) -> None:
        """Take a tracked task's next step, decided by its stored state (`action` may be stale)."""
        task = await self.store.get(task_id)
        if task is None or task.is_told:
            self._forget(task_id)
            return
        if task.state in (TaskState.FAILED, TaskState.TIMED_OUT):
            await self._tell_ending(await self._settle_quota(task))  # a crash came in between
            return
        if task.state is TaskState.QUEUED:
            self._forget(task_id)
            self.queue.put_back(task_id)
            return
        if task.state is TaskState.SUCCEEDED:
            await self._deliver(task)
            return
        self.queue.at_provider.add(task_id)
        if task.state is TaskState.SUBMITTING:
            if self._timed_out(task):
                await self._time_out(task)
            else:
                await self._resolve(task)
        else:
            self.polls.ensure(task)  # e.g. taken up again after an error in its step
            await self._poll(task)

    # --- submit ---------------------------------------------------------------------------

    async def _tell_place(self, task: Task, position: int) -> None:
        await self._tell(self.notifier.progress(task, position))

    async def _submit(self, task_id: int) -> None:
        task = await self.store.get(task_id)
        if task is None or task.state is not TaskState.QUEUED:
            self._forget(task_id)
            return
        if self._timed_out(task):
            await self._time_out(task)
            return
        started = await self.leases.take_slot(task)  # None: no slot free, or another's task
        if started is not None:
            await self._tell(self.notifier.progress(started, None))
            await self._send(started)

    async def _send(self, task: Task, *, is_resend: bool = False) -> None:
        """Send a task that is `submitting` (its state is already written); never cancelled."""
        with self.steps.critical(task.id):
            await self._send_now(task, is_resend=is_resend)

    async def _send_now(self, task: Task, *, is_resend: bool) -> None:
        try:
            request = await build_request(task, self.media, self.config)
        except FileNotFoundError:
            await self._fail(task, FailureReason.INPUTS_MISSING, "the input images are gone")
            return
        try:
            # The engine owns resends (counted in the row), so the client never resends itself.
            created = await self.client.submit_multi_image(
                request, may_resend=False, is_resend=is_resend
            )
        except ConcurrencyLimitError:
            await self._back_to_queue(task, "the provider runs as many tasks as it may (1303)")
        except SubmitOutcomeUnknownError as error:
            log.warning("Task %d: submit outcome unknown (%s); will look it up", task.id, error)
            self._schedule(task.id, Action.RESOLVE, self.config.poll_interval)
        except UserFixableError as error:
            reason = (
                FailureReason.CONTENT_POLICY
                if error.kind == FailureReason.CONTENT_POLICY
                else FailureReason.INVALID_REQUEST
            )
            await self._fail(task, reason, error.api_message or error.user_text)
        except OperatorError as error:
            self.operator.alert(error)
            await self._fail(task, FailureReason.OPERATOR, error.user_text)
        except TransientError as error:  # clearly not created (refused or never sent)
            await self._back_to_queue(task, str(error))
        else:
            self.queue.accepted()
            await self._track(task, created)

    async def _back_to_queue(self, task: Task, why: str) -> None:
        """The provider didn't take the task: it waits at the front of the queue."""
        log.info("Task %d goes back to the queue: %s", task.id, why)
        await self.store.transition(task.id, TaskState.QUEUED, submit_posts=0)
        self.queue.put_back(task.id)
        self.queue.refused()
        self._wake.set()

    async def _resolve(self, task: Task) -> None:
        """A submit of unknown outcome: find it by external id; send it again at most once."""
        try:
            found = await self.client.find_by_external_id(task.external_task_id)
        except KlingError as error:
            log.warning("Task %d: lookup by external id failed (%s); later", task.id, error)
            self._schedule(task.id, Action.RESOLVE, self.polls.next(task.id))
            return
        if found is not None:
            log.info("Task %d: found at the provider as %s", task.id, found.task_id)
            await self._track(task, found)
        elif task.submit_posts < 2:
            log.info("Task %d: the provider never got it; sending it once more", task.id)
            task = await self.store.update(task.id, submit_posts=max(task.submit_posts, 1) + 1)
            await self._send(task, is_resend=True)
        else:
            await self._fail(
                task, FailureReason.NOT_SUBMITTED, "the submit never reached the provider"
            )

    async def _track(self, task: Task, remote: KlingTask) -> None:
        task = await self.store.transition(
            task.id, TaskState.SUBMITTED, kling_task_id=remote.task_id
        )
        self.polls.track(task)
        await self._tell(self.notifier.progress(task, None))
        await self._apply_status(task, remote)

    # --- polling --------------------------------------------------------------------------

    async def _poll(self, task: Task) -> None:
        """Ask the provider; a task past its time-out gets this last look before it ends."""
        assert task.kling_task_id is not None
        self.metrics.count_poll()
        try:
            remote = await self.client.get_task(task.kling_task_id)
        except KlingError as error:  # time-outs, 5xx, 429 after retries, a vanished task, the key
            if self._timed_out(task):
                await self._time_out(task)
                return
            if isinstance(error, OperatorError):
                self.operator.alert(error)
                self._schedule(task.id, Action.POLL, self.config.poll_max_interval)
                return
            level = logging.WARNING if isinstance(error, TaskNotFoundError) else logging.INFO
            log.log(level, "Task %d: query failed (%s); next poll later", task.id, error)
            self._schedule(task.id, Action.POLL, self.polls.next(task.id))
            return
        if not remote.finished and self._timed_out(task):
            await self._time_out(task)
            return
        await self._apply_status(task, remote)

    async def _apply_status(self, task: Task, remote: KlingTask) -> None:
        """Act on a status the provider reported (the step can't be cancelled from here on)."""
        with self.steps.critical(task.id):
            await self._apply_remote_status(task, remote)

    async def _apply_remote_status(self, task: Task, remote: KlingTask) -> None:
        status = remote.task_status
        if status is TaskStatus.SUCCEED:
            video = remote.video
            if video is None:  # nothing to deliver: a provider failure, refunded like one
                reason = remote.missing_video_reason()
                await self._fail(task, FailureReason.NO_VIDEO, reason, remote.final_unit_deduction)
                return
            finished_at = self.polls.finished(task)  # learned; None: not known well enough
            task = await self.store.transition(
                task.id,
                TaskState.SUCCEEDED,
                **({} if finished_at is None else {"finished_at": finished_at}),
                video_url=video.url,
                status_message=remote.task_status_msg,
                provider_deduction=remote.final_unit_deduction,
            )
            self.queue.at_provider.discard(task.id)
            self._wake.set()
            await self._deliver(task)
        elif status is TaskStatus.FAILED:
            message = remote.task_status_msg or "the provider gave no reason"
            await self._fail(
                task, FailureReason.PROVIDER_FAILED, message, remote.final_unit_deduction
            )
        elif status is TaskStatus.PROCESSING and task.state is not TaskState.PROCESSING:
            task = await self.store.transition(task.id, TaskState.PROCESSING)
            await self._tell(self.notifier.progress(task, None))
            self._schedule(task.id, Action.POLL, self.polls.next(task.id))
        else:
            self._schedule(task.id, Action.POLL, self.polls.next(task.id))

    # --- endings --------------------------------------------------------------------------

    def _timed_out(self, task: Task) -> bool:
        """Past the time-out: counted from the submit once at the provider, else from creation."""
        started = task.submitted_at or task.created_at
        return self._clock() - started > self.config.task_timeout

    async def _time_out(self, task: Task) -> None:
        message = f"not finished after {self.config.task_timeout:g} s"
        await self._end(task, TaskState.TIMED_OUT, FailureReason.TIMED_OUT, message)

    async def _fail(
        self, task: Task, reason: FailureReason, message: str, charged: str | None = None
    ) -> None:
        """End a task as failed; `charged` is what the provider's last answer said it deducted,
        if it said."""
        await self._end(task, TaskState.FAILED, reason, message, provider_deduction=charged)

    async def _end(
        self, task: Task, state: TaskState, reason: FailureReason, message: str, **fields: Any
    ) -> None:
        """End a task without a video, give its quota back when due and tell the user."""
        try:
            task = await self.store.transition(
                task.id, state, error_code=reason.value, status_message=message, **fields
            )
        except StaleTransition:
            return
        task = await self._settle_quota(task)
        self._forget(task.id)
        log.info("Task %d ended %s (%s): %s", task.id, state.value, reason.value, message)
        await self._tell_ending(task)

    async def _settle_quota(self, task: Task) -> Task:
        """Give an ended task's quota back when the policy says so (again after a crash: once)."""
        reached = task.kling_task_id is not None
        if refund_due(task.state, reached_provider=reached) and await self.store.refund(task.id):
            task = replace(task, quota_refunded=True)
        return task

    async def _tell_ending(self, task: Task) -> None:
        """Tell the user why the task ended without a video; it is told once the notice is out."""
        if not await self.leases.hold(task.id):  # never told by two processes
            return
        try:
            await self.notifier.failed(task)
        except Exception:
            self._notifier_failed(task, Action.TELL, "telling the ending")
            return
        await self.store.update(task.id, notified_at=self._clock())
        self._forget(task.id)

    # --- the video ------------------------------------------------------------------------

    async def _deliver(self, task: Task) -> None:
        if task.video_path is None and task.error_code is None:
            task = await keep_video(task, self.store, self.media, self.session, self.config)
        if not await self.leases.hold(task.id):  # never delivered by two processes
            return
        try:
            delivered = await self.notifier.deliver(task)
        except Exception:
            self._notifier_failed(task, Action.DELIVER, "delivery")
            return
        self.metrics.count_delivery(delivered.how)
        with contextlib.suppress(StaleTransition):
            await self.store.transition(
                task.id, TaskState.DELIVERED, result_message_id=delivered.message_id
            )
        self._forget(task.id)

    def _notifier_failed(self, task: Task, action: Action, what: str) -> None:
        """The notifier couldn't hand an ending over: try again later, a few times."""
        delay = self.retries.failed(task.id, what)
        if delay is None:
            self._forget(task.id)
        else:
            self._schedule(task.id, action, delay)

    async def _tell(self, call: Awaitable[None]) -> None:
        """Tell the notifier; its failure never stops the engine."""
        try:
            await call
        except Exception:
            log.exception("Notifier failed")
