"""The task engine: one per process, it moves every task from `queued` to its end.

`queued → submitting → submitted → processing → succeeded → delivered`, or `failed` /
`timed_out`. Every state is written to the store before the step it announces, so a crash
at any moment leaves a row that says what to do next; `start` picks every unfinished row up.
A task is done only once the user was told how it ended: a video is marked delivered after
the notifier handed it over, and a failure or time-out is marked told after its notice went
out, so a crash between an ending and its message never loses the message.

One scheduler loop (the durable-timer pattern): a heap of due actions per task, woken early
through an `asyncio.Event` by new tasks and callbacks. Submits go through a FIFO queue with at
most `max_concurrent` tasks at the provider; polls back off from `poll_interval` to
`poll_max_interval` and share the client's rate limiter. The engine never imports discord:
it tells a `Notifier`, which the Discord side implements.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import heapq
import hmac
import itertools
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from bot.config import ImageTransport, Settings
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
from bot.kling.models import ImageItem, KlingTask, MultiImageRequest, TaskStatus
from bot.logs import current_task_id
from bot.media import MediaStore
from bot.ops import HEARTBEAT_KEY, HEARTBEAT_SECONDS
from bot.quota import DAY_SECONDS, refund_due
from bot.store import StaleTransition, TaskStore
from bot.tasks import FailureReason, Task, TaskState

log = logging.getLogger(__name__)

CALLBACK_PATH = "/kling/callback/{task_id}/{token}"
MP4_BRAND = b"ftyp"
DOWNLOAD_CHUNK = 256 * 1024
DOWNLOAD_ATTEMPTS = 3
DELIVERY_ATTEMPTS = 8
SHUTDOWN_GRACE_SECONDS = 10.0
RETENTION_SWEEP_SECONDS = 3600.0
#: Finished tasks' rows are kept at least this long, whatever RETENTION_DAYS says: the quotas
#: (24 h), the usage summary (7 days) and monthly spend views (30 days) count them.
ROW_RETENTION_FLOOR_SECONDS = 35 * DAY_SECONDS
EXACT_POSITIONS = 25
COARSE_POSITION_STEP = 10
ANNOUNCE_DEBOUNCE_SECONDS = 0.2
RATE_HEADROOM = 1.25


class Notifier(Protocol):
    """What the engine tells the outside world (the Discord side implements it)."""

    async def progress(self, task: Task, queue_position: int | None) -> None:
        """The task moved (state or queue position); update what the user sees."""

    async def deliver(self, task: Task) -> int | None:
        """Hand the finished video over (the file at `video_path`, else the link in `video_url`
        with the reason in `error_code`); return the id of the message that carries it.

        Must be idempotent: after a crash it may be asked again for a task it already delivered.
        """

    async def failed(self, task: Task) -> None:
        """The task ended without a video (`failed` or `timed_out`); tell the user why.

        Must be idempotent like `deliver`; raise when the user couldn't be told yet (the engine
        asks again later, and after a restart).
        """


@dataclass(frozen=True)
class EngineConfig:
    """The knobs of the engine, usually from `Settings`."""

    max_concurrent: int = 2
    poll_interval: float = 10.0
    poll_max_interval: float = 60.0
    poll_growth: float = 1.5
    poll_jitter: float = 0.1
    task_timeout: float = 1800.0
    video_max_bytes: int = 200 * 1024 * 1024
    model: str = "kling-v1-6"
    image_transport: ImageTransport = ImageTransport.BASE64
    callback_public_url: str | None = None
    callback_listen_port: int | None = None
    retention_seconds: float = 7 * DAY_SECONDS
    submit_backoff: float = 2.0
    download_backoff: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        """The engine's knobs as the operator set them."""
        return cls(
            max_concurrent=settings.kling_max_concurrent_tasks,
            poll_interval=settings.poll_interval_seconds,
            poll_max_interval=max(
                settings.poll_max_interval_seconds, settings.poll_interval_seconds
            ),
            task_timeout=settings.task_timeout_seconds,
            video_max_bytes=settings.video_max_bytes,
            model=settings.kling_model,
            image_transport=settings.image_transport,
            callback_public_url=settings.callback_public_url,
            callback_listen_port=settings.callback_listen_port,
            retention_seconds=settings.retention_days * DAY_SECONDS,
        )


def new_callback_token() -> str:
    """An unguessable per-task token for the callback URL."""
    return secrets.token_urlsafe(24)


class Action(StrEnum):
    """What the engine does next for a tracked task."""

    RESOLVE = "resolve"  # a submit of unknown outcome: look it up by external id
    POLL = "poll"
    DELIVER = "deliver"
    TELL = "tell"  # ended without a video; its notice isn't out yet


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
    ) -> None:
        self.store = store
        self.client = client
        self.notifier = notifier
        self.session = session
        self.media = media
        self.config = config or EngineConfig()
        self._clock = clock
        self._queue: deque[int] = deque()
        self._at_provider: set[int] = set()
        self._gaps: dict[int, float] = {}
        self._due: dict[int, tuple[float, Action]] = {}
        self._heap: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        self._busy: set[int] = set()
        self._delivery_attempts: dict[int, int] = {}
        self._announced: dict[int, int] = {}  # task id → the queue position last told
        self._queue_changed = asyncio.Event()
        self._announcer: asyncio.Task[None] | None = None
        # step → (its task, may it be cancelled at stop)
        self._inflight: dict[asyncio.Task[None], tuple[int | None, bool]] = {}
        self._critical: set[int] = set()  # tasks whose step is writing or delivering
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._submit_paused_until = 0.0
        self._submit_backoff = self.config.submit_backoff
        self._operator_alerted: set[type[KlingError]] = set()
        self._callback_runner: web.AppRunner | None = None
        self._last_sweep = 0.0
        self._last_beat = 0.0
        self.callback_port: int | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Pick up every unfinished task (queue order kept) and start the scheduler."""
        for task in await self.store.unfinished():
            self._adopt(task)
        if self.config.callback_listen_port is not None and self.config.callback_public_url:
            await self._start_callback_server(self.config.callback_listen_port)
        self._loop_task = asyncio.create_task(self._run_loop(), name="kling-engine")
        self._announcer = asyncio.create_task(self._announce_loop(), name="kling-queue-places")
        log.info(
            "Engine started: %d queued, %d at the provider",
            len(self._queue),
            len(self._at_provider),
        )

    async def stop(self) -> None:
        """Stop taking new work, let in-flight writes and deliveries finish, then return.

        Polls and lookups that haven't got their answer yet are cancelled at once: they
        change nothing and are asked again after the restart.
        """
        self._stopping = True
        self._wake.set()
        for background in (self._loop_task, self._announcer):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        for step, (task_id, cancellable) in list(self._inflight.items()):
            if cancellable and task_id not in self._critical:
                step.cancel()
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=SHUTDOWN_GRACE_SECONDS)
            for step in pending:  # a cancelled submit stays `submitting`: resolved on restart
                step.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._callback_runner is not None:
            await self._callback_runner.cleanup()
        log.info("Engine stopped")

    def enqueue(self, task: Task) -> None:
        """Take a newly stored `queued` task (called by the Discord side after it stored one).

        A task the engine already tracks is left as it is (an intake finished after a restart
        may hand over a task the engine picked up at start).
        """
        if self._stopping or task.state is not TaskState.QUEUED or self._tracks(task.id):
            return
        self._queue.append(task.id)
        self._queue_moved()
        self._wake.set()

    def _tracks(self, task_id: int) -> bool:
        return (
            task_id in self._queue
            or task_id in self._due
            or task_id in self._at_provider
            or task_id in self._busy
        )

    def queue_position(self, task_id: int) -> int | None:
        """The 1-based place of a task in the submit queue, or None when it isn't waiting."""
        try:
            return self._queue.index(task_id) + 1
        except ValueError:
            return None

    def callback_url(self, task: Task) -> str | None:
        """The URL the provider should call for this task, when callbacks are configured."""
        if not self.config.callback_public_url or not task.callback_token:
            return None
        path = CALLBACK_PATH.format(task_id=task.id, token=task.callback_token)
        return self.config.callback_public_url + path

    def wake(self, task_id: int) -> None:
        """Look at a tracked task now (a callback said it changed)."""
        if task_id in self._due:
            _, action = self._due[task_id]
            self._schedule(task_id, action, 0.0)

    def next_queue_position(self) -> int | None:
        """Where a task enqueued now would wait, or None when it would be sent at once."""
        if not self._queue and len(self._at_provider) < self.config.max_concurrent:
            return None
        return len(self._queue) + 1

    def _adopt(self, task: Task) -> None:
        if task.state is TaskState.QUEUED:
            self._queue.append(task.id)
            self._queue_moved()
        elif task.state is TaskState.SUBMITTING:
            self._at_provider.add(task.id)
            self._schedule(task.id, Action.RESOLVE, self._spread())
        elif task.state in (TaskState.SUBMITTED, TaskState.PROCESSING):
            self._at_provider.add(task.id)
            self._gaps[task.id] = self.config.poll_interval
            self._schedule(task.id, Action.POLL, self._spread())
        elif task.state is TaskState.SUCCEEDED:
            self._schedule(task.id, Action.DELIVER, 0.0)
        elif task.state in (TaskState.FAILED, TaskState.TIMED_OUT):  # ended, notice not out
            self._schedule(task.id, Action.TELL, 0.0)

    def _spread(self) -> float:
        """A random first delay, so a restart with many tasks doesn't stampede."""
        return random.uniform(0, max(self.config.poll_interval, self._gap_floor()))

    def _gap_floor(self) -> float:
        """The shortest gap the query rate allows when every task at the provider is polled."""
        limiter = self.client.limiter
        if limiter is None:
            return 0.0
        # Some headroom, so polls never quite fill the limiter and a backlog can always drain.
        return len(self._at_provider) / limiter.rate * RATE_HEADROOM

    # --- scheduling -----------------------------------------------------------------------

    def _schedule(self, task_id: int, action: Action, delay: float) -> None:
        due = time.monotonic() + max(0.0, delay)
        self._due[task_id] = (due, action)
        heapq.heappush(self._heap, (due, next(self._seq), task_id))
        self._wake.set()

    def _forget(self, task_id: int) -> None:
        self._due.pop(task_id, None)
        self._gaps.pop(task_id, None)
        self._delivery_attempts.pop(task_id, None)
        if task_id in self._at_provider:
            self._at_provider.discard(task_id)
            self._wake.set()  # a slot at the provider is free

    async def _run_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            await self._fill_submit_slots(now)
            while self._heap and self._heap[0][0] <= now:
                due, _, task_id = heapq.heappop(self._heap)
                current = self._due.get(task_id)
                if current is None or current[0] != due:
                    continue  # superseded by a later schedule
                if task_id in self._busy:
                    self._schedule(task_id, current[1], self.config.poll_interval)
                    continue
                del self._due[task_id]
                action = current[1]
                cancellable = action in (Action.POLL, Action.RESOLVE)
                self._spawn(task_id, self._act(task_id, action), cancellable=cancellable)
            if self._clock() - self._last_sweep > RETENTION_SWEEP_SECONDS:
                self._last_sweep = self._clock()
                self._spawn(None, self._sweep_retention())
            if self._clock() - self._last_beat >= HEARTBEAT_SECONDS:
                self._last_beat = self._clock()
                self._spawn(None, self.store.set_meta(HEARTBEAT_KEY, f"{self._last_beat:.3f}"))
            timeout = HEARTBEAT_SECONDS  # the loop comes round at least once per heartbeat
            if self._heap:
                timeout = min(timeout, max(0.0, self._heap[0][0] - time.monotonic()))
            if self._queue and self._submit_paused_until > now:
                pause = self._submit_paused_until - now
                timeout = min(timeout, pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _spawn(
        self, task_id: int | None, step: Coroutine[Any, Any, None], *, cancellable: bool = False
    ) -> None:
        if task_id is not None:
            self._busy.add(task_id)
        job = asyncio.create_task(self._guarded(task_id, step))
        self._inflight[job] = (task_id, cancellable)
        job.add_done_callback(lambda done: self._inflight.pop(done, None))

    async def _guarded(self, task_id: int | None, step: Awaitable[None]) -> None:
        """Run one step; an unexpected error is logged with the task id and retried later."""
        if task_id is not None:
            current_task_id.set(task_id)  # every log line of this step carries the task id
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Engine step for task %s failed unexpectedly; retrying later", task_id)
            if task_id is not None and not self._stopping:
                self._retry_later(task_id)
        finally:
            if task_id is not None:
                self._busy.discard(task_id)
                self._wake.set()

    def _retry_later(self, task_id: int) -> None:
        """Take a task up again, unhurried, after an unexpected error in its step.

        Its provider slot is freed meanwhile (a slot must never leak and stall the queue);
        `_act` re-reads the row then and decides from its state.
        """
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
            if task_id not in self._queue:
                self._queue.appendleft(task_id)
                self._queue_moved()
            return
        if task.state is TaskState.SUCCEEDED:
            await self._deliver(task)
            return
        self._at_provider.add(task_id)
        if task.state is TaskState.SUBMITTING:
            if self._timed_out(task):
                await self._time_out(task)
            else:
                await self._resolve(task)
        else:
            await self._poll(task)

    # --- submit ---------------------------------------------------------------------------

    async def _fill_submit_slots(self, now: float) -> None:
        if now < self._submit_paused_until:
            return
        while self._queue and len(self._at_provider) < self.config.max_concurrent:
            task_id = self._queue.popleft()
            self._queue_moved()
            self._at_provider.add(task_id)
            self._spawn(task_id, self._submit(task_id))

    def _queue_moved(self) -> None:
        self._queue_changed.set()

    async def _announce_loop(self) -> None:
        """Tell waiting tasks their places, off the scheduler loop, at most a few times a second."""
        while True:
            await self._queue_changed.wait()
            await asyncio.sleep(ANNOUNCE_DEBOUNCE_SECONDS)
            self._queue_changed.clear()
            try:
                await self._announce_queue()
            except Exception:
                log.exception("Telling queue places failed")

    async def _announce_queue(self) -> None:
        """Tell each waiting task its place when it changed.

        The first `EXACT_POSITIONS` places are told every move; further back, every
        `COARSE_POSITION_STEP` places, so a long queue doesn't cost a store read per task per move.
        """
        moved: list[tuple[int, int]] = []
        for position, task_id in enumerate(list(self._queue), start=1):
            told = self._announced.get(task_id)
            if told == position:
                continue
            if (
                position > EXACT_POSITIONS
                and told is not None
                and abs(told - position) < COARSE_POSITION_STEP
            ):
                continue
            moved.append((task_id, position))
        if not moved:
            return
        rows = {task.id: task for task, _ in await self.store.queue()}  # one read for all
        for task_id, position in moved:
            task = rows.get(task_id)
            if task is not None:
                self._announced[task_id] = position
                await self._tell(self.notifier.progress(task, position))

    async def _submit(self, task_id: int) -> None:
        self._announced.pop(task_id, None)
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
        self._critical.add(task.id)
        try:
            await self._send_now(task, is_resend=is_resend)
        finally:
            self._critical.discard(task.id)

    async def _send_now(self, task: Task, *, is_resend: bool) -> None:
        try:
            request = await self._build_request(task)
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
            self._submit_backoff = self.config.submit_backoff
            await self._track(task, created)

    async def _build_request(self, task: Task) -> MultiImageRequest:
        urls = task.notes.image_urls
        if self.config.image_transport is ImageTransport.URL and urls:
            images = list(urls)
        else:
            images = [
                base64.b64encode(data).decode("ascii")
                for data in await self.media.load_inputs(task.input_dir)
            ]
            if not images:
                raise FileNotFoundError(task.input_dir)
        return MultiImageRequest(
            model_name=self.config.model,
            image_list=[ImageItem(image=image) for image in images],
            prompt=task.prompt,
            external_task_id=task.external_task_id,
            callback_url=self.callback_url(task),
            **task.options.to_json(),
        )

    async def _back_to_queue(self, task: Task, why: str) -> None:
        """The provider didn't take the task: it waits at the front of the queue."""
        log.info("Task %d goes back to the queue: %s", task.id, why)
        await self.store.transition(task.id, TaskState.QUEUED, submit_posts=0)
        self._at_provider.discard(task.id)
        self._queue.appendleft(task.id)
        self._queue_moved()
        self._submit_paused_until = time.monotonic() + self._submit_backoff
        self._submit_backoff = min(self._submit_backoff * 2, self.config.poll_max_interval)
        self._wake.set()

    async def _resolve(self, task: Task) -> None:
        """A submit of unknown outcome: find it by external id (kling-api.md decision 8)."""
        try:
            found = await self.client.find_by_external_id(task.external_task_id)
        except KlingError as error:
            log.warning("Task %d: lookup by external id failed (%s); later", task.id, error)
            self._schedule(task.id, Action.RESOLVE, self._grow_gap(task.id))
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
        self._gaps[task.id] = self.config.poll_interval
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
            self._schedule(task.id, Action.POLL, self._grow_gap(task.id))
            return
        if not remote.finished and self._timed_out(task):
            await self._time_out(task)
            return
        await self._apply_status(task, remote)

    async def _apply_status(self, task: Task, remote: KlingTask) -> None:
        """Act on a status the provider reported (the step can't be cancelled from here on)."""
        self._critical.add(task.id)
        try:
            await self._apply_remote_status(task, remote)
        finally:
            self._critical.discard(task.id)

    async def _apply_remote_status(self, task: Task, remote: KlingTask) -> None:
        status = remote.task_status
        if status is TaskStatus.SUCCEED:
            video = remote.video
            if video is None:  # nothing to deliver: a provider failure, refunded like one
                await self._fail(task, FailureReason.NO_VIDEO, remote.missing_video_reason())
                return
            task = await self.store.transition(
                task.id,
                TaskState.SUCCEEDED,
                video_url=video.url,
                status_message=remote.task_status_msg,
            )
            self._at_provider.discard(task.id)
            self._wake.set()
            await self._deliver(task)
        elif status is TaskStatus.FAILED:
            message = remote.task_status_msg or "the provider gave no reason"
            await self._fail(task, FailureReason.PROVIDER_FAILED, message)
        elif status is TaskStatus.PROCESSING and task.state is not TaskState.PROCESSING:
            task = await self.store.transition(task.id, TaskState.PROCESSING)
            self._gaps[task.id] = self.config.poll_interval  # it moved: look again soon
            await self._tell(self.notifier.progress(task, None))
            self._schedule(task.id, Action.POLL, self._grow_gap(task.id))
        else:
            self._schedule(task.id, Action.POLL, self._grow_gap(task.id))

    def _grow_gap(self, task_id: int) -> float:
        """The next gap of a task: the current one, which then grows ×growth up to the max."""
        gap = self._gaps.get(task_id, self.config.poll_interval)
        self._gaps[task_id] = min(gap * self.config.poll_growth, self.config.poll_max_interval)
        return self._jittered(max(gap, self._gap_floor()))

    def _jittered(self, gap: float) -> float:
        spread = gap * self.config.poll_jitter
        return gap + random.uniform(-spread, spread)

    # --- endings --------------------------------------------------------------------------

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

    async def _fail(self, task: Task, reason: FailureReason, message: str) -> None:
        """End a task as failed, give its quota back and tell the user."""
        try:
            task = await self.store.transition(
                task.id,
                TaskState.FAILED,
                error_code=reason.value,
                status_message=message,
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

    # --- the video ------------------------------------------------------------------------

    async def _deliver(self, task: Task) -> None:
        if task.video_path is None and task.error_code is None:
            task = await self._fetch_video(task)
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

    async def _fetch_video(self, task: Task) -> Task:
        """Download the video once, streamed and capped, and check it is an MP4."""
        if not task.video_url:
            return await self.store.update(
                task.id, error_code=FailureReason.VIDEO_DOWNLOAD_FAILED.value
            )
        path = self.media.video_path(task.id)
        reason: FailureReason = FailureReason.VIDEO_DOWNLOAD_FAILED
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                size = await self._download(task.video_url, path)
            except _VideoRefused as refused:
                reason = refused.reason
                break
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                log.warning(
                    "Task %d: video download attempt %d failed: %s", task.id, attempt, error
                )
                delay = min(30.0, self.config.download_backoff * 2 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                continue
            return await self.store.update(task.id, video_path=str(path), video_bytes=size)
        log.warning("Task %d: video not kept (%s); delivering the link", task.id, reason.value)
        return await self.store.update(task.id, error_code=reason.value)

    async def _download(self, url: str, path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        limit = self.config.video_max_bytes
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
        try:
            async with self.session.get(url, timeout=timeout) as response:
                response.raise_for_status()
                if response.content_length is not None and response.content_length > limit:
                    raise _VideoRefused(FailureReason.VIDEO_TOO_LARGE)
                size = 0
                head = b""
                with partial.open("wb") as out:
                    async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                        size += len(chunk)
                        if size > limit:
                            raise _VideoRefused(FailureReason.VIDEO_TOO_LARGE)
                        if len(head) < 12:
                            head = (head + chunk)[:12]
                            if len(head) >= 8 and head[4:8] != MP4_BRAND:
                                raise _VideoRefused(FailureReason.VIDEO_NOT_MP4)
                        out.write(chunk)
            if len(head) < 8:
                raise _VideoRefused(FailureReason.VIDEO_NOT_MP4)
            partial.replace(path)
            return size
        finally:
            partial.unlink(missing_ok=True)

    async def _sweep_retention(self) -> None:
        """Remove the videos and inputs of tasks that ended longer ago than the retention,
        then the rows of finished tasks unchanged for the retention and at least
        `ROW_RETENTION_FLOOR_SECONDS` (0 keeps everything).

        Removing a task's files changes its row, so a row goes that long after its files, and
        never before them (the store's clock for both is the row's last change).
        """
        if self.config.retention_seconds <= 0:
            return
        cutoff = self._clock() - self.config.retention_seconds
        for task in await self.store.expired_inputs(cutoff):
            for path in (task.input_dir, task.video_path):
                if path and self._in_media_dir(path):
                    await self.media.remove(path)
            await self.store.update(task.id, inputs_removed_at=self._clock())
        keep_rows = max(self.config.retention_seconds, ROW_RETENTION_FLOOR_SECONDS)
        removed = await self.store.delete_older_than(self._clock() - keep_rows)
        if removed:
            log.info(
                "Removed %d finished task(s) unchanged for %.0f days",
                removed,
                keep_rows / DAY_SECONDS,
            )

    def _in_media_dir(self, path: str) -> bool:
        """Whether a stored path lies inside MEDIA_DIR: the sweep removes nothing else (an
        empty `input_dir` is the current folder, which holds the database)."""
        root = self.media.root.resolve()
        target = Path(path).resolve()
        return target != root and target.is_relative_to(root)

    async def _tell(self, call: Awaitable[None]) -> None:
        """Tell the notifier; its failure never stops the engine."""
        try:
            await call
        except Exception:
            log.exception("Notifier failed")

    # --- callbacks ------------------------------------------------------------------------

    async def _start_callback_server(self, port: int) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post(CALLBACK_PATH, self.handle_callback)
        self._callback_runner = web.AppRunner(app, access_log=None)
        await self._callback_runner.setup()
        site = web.TCPSite(
            self._callback_runner, "0.0.0.0", port
        )  # the provider calls in from outside
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        if sockets:
            self.callback_port = sockets[0].getsockname()[1]
        log.info("Callback listener on port %s", self.callback_port)

    async def handle_callback(self, request: web.Request) -> web.Response:
        """A provider notice: check the token, validate the body, then look at the task now."""
        not_found = web.json_response({"error": "not found"}, status=404)
        try:
            task_id = int(request.match_info["task_id"])
        except ValueError:
            return not_found
        task = await self.store.get(task_id)
        token = request.match_info["token"].encode()
        expected = (task.callback_token or "").encode() if task else b""
        if task is None or not expected or not hmac.compare_digest(token, expected):
            return not_found
        try:
            body = await request.json()
            remote = KlingTask.model_validate(body)
        except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
            return web.json_response({"error": "invalid body"}, status=400)
        if task.kling_task_id is not None and remote.task_id != task.kling_task_id:
            return web.json_response({"error": "task id does not match"}, status=400)
        if not task.is_terminal:
            self.wake(task.id)  # confirmed by a query, never trusted as is
        return web.json_response({"ok": True})


class _VideoRefused(Exception):
    def __init__(self, reason: FailureReason) -> None:
        super().__init__(reason.value)
        self.reason = reason
