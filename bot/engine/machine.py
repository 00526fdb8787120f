"""The task engine: one per process, it moves every task from `queued` to its end.

`queued → submitting → submitted → processing → succeeded → delivered`, or `failed` /
`timed_out`. Every state is written to the store before the step it announces, so a crash
at any moment leaves a row that says what to do next; `start` picks every unfinished row up.
A task is done only once the user was told how it ended: a video is marked delivered after
the notifier handed it over, and a failure or time-out is marked told after its notice went
out, so a crash between an ending and its message never loses the message.

One scheduler loop drives the parts, each in its own module: the `Schedule` of due actions
(the durable-timer pattern; the loop is woken early through an `asyncio.Event` by new tasks and
callbacks), the `SubmitQueue` (at most `max_concurrent` tasks at the provider), the
`EnginePolls` (polls planned from the learned generation times, within the client's shared
rate limit; `bot.engine.polls`), the `Steps` in flight, the `CallbackServer`, the video download (`keep_video`) and the retention
`sweep`. The engine never imports discord: it tells a `Notifier`, which the Discord side
implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bot.engine.callbacks import CallbackServer
from bot.engine.config import EngineConfig
from bot.engine.credit_alerts import CreditCapWatch
from bot.engine.download import keep_video
from bot.engine.endings import Endings
from bot.engine.notifier import Notifier
from bot.engine.polls import EnginePolls
from bot.engine.request import build_request
from bot.engine.retention import sweep
from bot.engine.schedule import Action, Schedule
from bot.engine.steps import Steps
from bot.engine.submit_queue import SubmitQueue
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
from bot.ops import HEARTBEAT_KEY, HEARTBEAT_SECONDS
from bot.store import StaleTransition, TaskStore
from bot.tasks import FailureReason, Task, TaskState

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 8
SHUTDOWN_GRACE_SECONDS = 10.0
RETENTION_SWEEP_SECONDS = 3600.0


class TaskEngine(Endings):
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
    ) -> None:
        self.store = store
        self.cap_watch = cap_watch  # the monthly cap's alerts
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
        self._clock = clock
        self._delivery_attempts: dict[int, int] = {}
        self._stopping = False
        self._background: list[asyncio.Task[None]] = []  # the scheduler and the queue's places
        self._operator_alerted: set[type[KlingError]] = set()
        self._last_sweep = 0.0
        self._last_beat = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn from the finished tasks, pick up every unfinished one (queue order kept) and
        start the scheduler."""
        learned = await self.polls.load(self.store)
        for task in await self.store.unfinished():
            self._adopt(task)
        if self.config.callback_listen_port is not None and self.config.callback_public_url:
            await self.callbacks.start(self.config.callback_listen_port)
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
        self._delivery_attempts.pop(task_id, None)
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
            if self._clock() - self._last_sweep > RETENTION_SWEEP_SECONDS:
                self._last_sweep = self._clock()
                self.steps.spawn(None, self._sweep_retention())
            if self._clock() - self._last_beat >= HEARTBEAT_SECONDS:
                self._last_beat = self._clock()
                beat = self.store.set_meta(HEARTBEAT_KEY, f"{self._last_beat:.3f}")
                self.steps.spawn(None, beat)
            if self.cap_watch is not None and self.cap_watch.wants_check(now):
                self.steps.spawn(None, self.cap_watch.run_check())
            timeout = HEARTBEAT_SECONDS  # the loop comes round at least once per heartbeat
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
        task = await self.store.transition(
            task.id,
            TaskState.SUBMITTING,
            attempts=task.attempts + 1,
            submit_posts=1,  # written before the POST it counts
        )
        await self._tell(self.notifier.progress(task, None))
        await self._send(task)

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
            self._alert_operator(error)
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
        try:
            remote = await self.client.get_task(task.kling_task_id)
        except KlingError as error:  # time-outs, 5xx, 429 after retries, a vanished task, the key
            if self._timed_out(task):
                await self._time_out(task)
                return
            if isinstance(error, OperatorError):
                self._alert_operator(error)
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

    # --- the video ------------------------------------------------------------------------

    async def _deliver(self, task: Task) -> None:
        if task.video_path is None and task.error_code is None:
            task = await keep_video(task, self.store, self.media, self.session, self.config)
        try:
            message_id = await self.notifier.deliver(task)
        except Exception:
            self._notifier_failed(task, Action.DELIVER, "delivery")
            return
        with contextlib.suppress(StaleTransition):
            await self.store.transition(task.id, TaskState.DELIVERED, result_message_id=message_id)
        self._forget(task.id)

    def _notifier_failed(self, task: Task, action: Action, what: str) -> None:
        """The notifier couldn't hand an ending over: try again later, a few times."""
        attempts = self._delivery_attempts.get(task.id, 0) + 1
        self._delivery_attempts[task.id] = attempts
        if attempts >= DELIVERY_ATTEMPTS:
            log.exception(
                "Task %d: %s failed %d times; giving up until restart", task.id, what, attempts
            )
            self._forget(task.id)
            return
        delay = min(self.config.poll_max_interval, self.config.poll_interval * 2**attempts)
        log.warning(
            "Task %d: %s failed; retry %d in %.0f s", task.id, what, attempts, delay, exc_info=True
        )
        self._schedule(task.id, action, delay)

    async def _sweep_retention(self) -> None:
        """Remove old tasks' files, then old finished tasks' rows (`bot.engine.retention`)."""
        await sweep(self.store, self.media, self._clock(), self.config.retention_seconds)

    async def _tell(self, call: Awaitable[None]) -> None:
        """Tell the notifier; its failure never stops the engine."""
        try:
            await call
        except Exception:
            log.exception("Notifier failed")
