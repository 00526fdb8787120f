"""The task engine against the fake CometAPI, with a recording notifier and short intervals."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import random
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.credits import CreditAlert
from bot.engine import CreditCapWatch, EngineConfig, TaskEngine, new_callback_token
from bot.engine.callbacks import callback_url
from bot.engine.notifier import Delivered
from bot.engine.request import build_request
from bot.kling.client import ClientTimeouts, KlingClient
from bot.kling.ratelimit import RateLimiter
from bot.media import MediaStore
from bot.metrics import MetricsRecorder
from bot.pricing import PriceTable
from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.tasks import FailureReason, NewTask, Task, TaskOptions, TaskState
from tests.fakes.cometapi import MP4_BYTES, FakeCometAPI, Roughness

FAST = EngineConfig(
    max_concurrent=2,
    poll_interval=0.05,
    poll_max_interval=0.2,
    task_timeout=30,
    submit_backoff=0.05,
    download_backoff=0.01,
)


def png(size: tuple[int, int] = (320, 320)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class RecordingNotifier:
    """Records what the engine tells; can be told to fail deliveries."""

    progress_calls: list[tuple[int, TaskState, int | None]] = field(default_factory=list)
    delivered: list[Task] = field(default_factory=list)
    failures: list[Task] = field(default_factory=list)
    fail_deliveries: int = 0
    fail_notices: int = 0
    events: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def progress(self, task: Task, queue_position: int | None) -> None:
        self.progress_calls.append((task.id, task.state, queue_position))
        async with self.events:
            self.events.notify_all()

    async def deliver(self, task: Task) -> Delivered:
        if self.fail_deliveries > 0:
            self.fail_deliveries -= 1
            raise RuntimeError("Discord is down")
        self.delivered.append(task)
        async with self.events:
            self.events.notify_all()
        return Delivered(9000 + task.id, "upload")

    async def failed(self, task: Task) -> None:
        if self.fail_notices > 0:
            self.fail_notices -= 1
            raise RuntimeError("Discord is down")
        self.failures.append(task)
        async with self.events:
            self.events.notify_all()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self.events:
            await asyncio.wait_for(self.events.wait_for(predicate), timeout)


@dataclass
class World:
    api: FakeCometAPI
    store: TaskStore
    session: aiohttp.ClientSession
    media: MediaStore
    notifier: RecordingNotifier
    engines: list[TaskEngine] = field(default_factory=list)

    def client(self) -> KlingClient:
        return KlingClient(
            self.session,
            base_url=self.api.base_url,
            api_key=self.api.api_key,
            timeouts=ClientTimeouts(connect=1, submit=1, query=1),
            max_retries=2,
            backoff_base=0.01,
            limiter=RateLimiter(500),
        )

    async def engine(
        self,
        config: EngineConfig = FAST,
        start: bool = True,
        metrics: MetricsRecorder | None = None,
    ) -> TaskEngine:
        engine = TaskEngine(
            self.store,
            self.client(),
            self.notifier,
            self.session,
            self.media,
            config,
            metrics=metrics,
        )
        self.engines.append(engine)
        if start:
            await engine.start()
        return engine

    async def new_task(
        self, engine: TaskEngine | None = None, *, images: int = 2, **options: Any
    ) -> Task:
        task = await self.store.reserve(
            NewTask(
                user_id=1,
                guild_id=10,
                channel_id=100,
                locale="en-US",
                prompt="a cat walks",
                options=TaskOptions(**options),
                image_count=images,
                input_dir="",
                upload_limit=10 * 1024 * 1024,
                callback_token=new_callback_token(),
            ),
            QuotaLimits(),
        )
        folder = await self.media.save_inputs(task.external_task_id, [("PNG", png())] * images)
        task = await self.store.update(task.id, input_dir=str(folder))
        if engine is not None:
            engine.enqueue(task)
        return task

    async def until_queries(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.api.queries) < count:
                await asyncio.sleep(0.01)

    async def until_state(self, task: Task, state: TaskState, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while (await self.state(task)).state is not state:
                await asyncio.sleep(0.01)

    async def state(self, task: Task) -> Task:
        current = await self.store.get(task.id)
        assert current is not None
        return current


async def test_a_task_goes_all_the_way_to_delivered(world: World) -> None:
    engine = await world.engine()
    task = await world.new_task(engine, images=4, duration="10", mode="pro")
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    await world.until_state(task, TaskState.DELIVERED)  # written once the notifier returned
    done = await world.state(task)
    assert done.result_message_id == 9000 + task.id
    assert done.video_path is not None and Path(done.video_path).read_bytes() == MP4_BYTES
    assert done.video_bytes == len(MP4_BYTES)
    assert not done.quota_refunded
    [submit] = world.api.submits
    assert submit.body["external_task_id"] == task.external_task_id
    assert len(submit.body["image_list"]) == 4
    assert submit.body["duration"] == "10" and submit.body["mode"] == "pro"
    assert "callback_url" not in submit.body
    states = [state for tid, state, _ in world.notifier.progress_calls if tid == task.id]
    assert TaskState.SUBMITTING in states and TaskState.SUBMITTED in states
    assert world.api.violations == []


async def test_provider_failure_is_told_and_refunded(world: World) -> None:
    world.api.outcome = "failed"
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.failures) == 1)
    [failed] = world.notifier.failures
    assert failed.state is TaskState.FAILED
    assert failed.error_code == FailureReason.PROVIDER_FAILED
    assert failed.status_message == world.api.failure_message
    assert failed.quota_refunded
    assert (await world.state(task)).quota_refunded


async def test_content_policy_refusal_fails_without_retry(world: World) -> None:
    world.api.add_fault("content_policy", on="submit")
    engine = await world.engine()
    await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.failures) == 1)
    assert world.notifier.failures[0].error_code == FailureReason.CONTENT_POLICY
    assert world.notifier.failures[0].quota_refunded
    assert len(world.api.submits) == 1


async def test_operator_problem_is_logged_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.api.add_fault("balance", on="submit", times=3)
    engine = await world.engine()
    for _ in range(3):
        await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.failures) == 3)
    alerts = [r for r in caplog.records if "OPERATOR ACTION NEEDED" in r.getMessage()]
    assert len(alerts) == 1
    assert all(t.error_code == FailureReason.OPERATOR for t in world.notifier.failures)


async def test_1303_puts_the_task_back_in_the_queue(world: World) -> None:
    world.api.add_fault("concurrency", on="submit", times=2)
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    assert len(world.api.submits) == 3
    assert world.notifier.failures == []
    assert (await world.state(task)).attempts == 3


async def test_queue_keeps_at_most_max_concurrent_at_the_provider(world: World) -> None:
    world.api.max_concurrent = 2
    world.api.finish_after = 0.3
    engine = await world.engine()
    tasks = [await world.new_task(engine) for _ in range(5)]
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 5, timeout=20)
    sent = [r.body["external_task_id"] for r in world.api.submits]
    # Slots go out first in, first out. Tasks given slots at the same moment (two freed at
    # once) may POST in either order: on PostgreSQL their SUBMITTING writes run side by side
    # on the pool. So no task is ever sent more than the slots that free together ahead of
    # or behind its place in the queue.
    assert sorted(sent) == sorted(t.external_task_id for t in tasks)
    for place, task in enumerate(tasks):
        assert abs(sent.index(task.external_task_id) - place) < FAST.max_concurrent, sent
    positions = [(tid, pos) for tid, state, pos in world.notifier.progress_calls if pos is not None]
    assert (tasks[4].id, 3) in positions and (tasks[4].id, 1) in positions
    refused = len(world.api.submits) - 5
    assert refused == 0, "the engine's own limit kept it under the provider's"


async def test_500_and_429_bursts_while_polling(world: World) -> None:
    world.api.finish_after = 0.3
    engine = await world.engine()
    task = await world.new_task(engine)
    world.api.add_fault("server_error", on="query", times=4)
    world.api.add_fault("rate_limit", on="query", times=3, retry_after=0.01)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1, timeout=15)
    await world.until_state(task, TaskState.DELIVERED)  # written once the notifier returned
    assert len(world.api.submits) == 1


async def test_unfinished_task_times_out(world: World) -> None:
    world.api.finish_after = 1000
    config = EngineConfig(**{**FAST.__dict__, "task_timeout": 0.4})
    engine = await world.engine(config)
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.failures) == 1)
    timed_out = await world.state(task)
    assert timed_out.state is TaskState.TIMED_OUT
    assert not timed_out.quota_refunded, "a timed-out task keeps its quota used"


#: One real second stands for a minute: the planner's 2 s..60 s gaps become 1/30 s..1 s.
SCALED = EngineConfig(
    **{**FAST.__dict__, "poll_interval": 2 / 60, "poll_max_interval": 1.0, "time_scale": 60.0}
)


async def seed_history(world: World, count: int, seconds: float) -> None:
    """`count` delivered tasks of the default kind that took `seconds` at the provider."""
    for _ in range(count):
        task = await world.new_task()
        await world.store.transition(task.id, TaskState.SUBMITTING)
        start = time.time() - 100
        await world.store.transition(
            task.id, TaskState.SUBMITTED, kling_task_id=f"old-{task.id}", submitted_at=start
        )
        await world.store.transition(
            task.id, TaskState.SUCCEEDED, video_url="https://v/x.mp4", finished_at=start + seconds
        )
        await world.store.transition(task.id, TaskState.DELIVERED)


async def test_polls_are_planned_from_the_history_and_teach_it(world: World) -> None:
    """After 20 tasks of a minute (scaled: a second), a task of a minute is found with few
    polls; its finish is learned, stored, and learned again by the next engine."""
    await seed_history(world, 20, 1.0)
    world.api.finish_after = 1.0
    engine = await world.engine(SCALED)
    assert engine.polls.model.count() == 20
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    await world.until_state(task, TaskState.DELIVERED)
    assert 1 <= len(world.api.queries) <= 8, [round(q.at, 2) for q in world.api.queries]
    done = await world.state(task)
    assert done.submitted_at is not None and done.finished_at is not None
    assert done.finished_at < (done.delivered_at or 0), "the provider's finish, not the notice"
    assert engine.polls.model.count() == 21
    again = await world.engine(SCALED, start=False)
    assert await again.polls.load(world.store) == 21


async def test_polls_back_off_in_the_long_tail(world: World) -> None:
    """A task far slower than every one before it is asked less and less often."""
    await seed_history(world, 20, 0.3)
    world.api.finish_after = 100
    engine = await world.engine(SCALED)
    task = await world.new_task(engine)
    await asyncio.sleep(3.0)  # ten times the usual time
    queries = [r.at for r in world.api.queries]
    gaps = [b - a for a, b in itertools.pairwise(queries)]
    assert 3 <= len(queries) <= 20, "a poll every 1/30 s would be 90"
    assert gaps[-1] > 2.5 * gaps[0], gaps
    assert (await world.state(task)).state in (TaskState.SUBMITTED, TaskState.PROCESSING)


async def test_video_that_is_not_mp4_is_delivered_as_a_link(world: World) -> None:
    world.api.video_bytes = b"<html>not a video</html>"
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    [delivered] = world.notifier.delivered
    assert delivered.video_path is None
    assert delivered.error_code == FailureReason.VIDEO_NOT_MP4
    assert delivered.video_url and delivered.video_url.endswith(".mp4")
    assert not world.media.video_path(task.id).exists()


@pytest.mark.parametrize(
    "videos",
    [
        [],
        [{"url": "javascript:alert(1)"}],
        [{"url": "file:///etc/passwd", "duration": "-5"}],
        [{"url": 12345}, {"url": "not a url"}],
        "not a list",
    ],
)
async def test_success_without_a_usable_video_is_a_refunded_provider_failure(
    world: World, videos: object
) -> None:
    world.api.videos = videos  # type: ignore[assignment]
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.failures) == 1)
    [failed] = world.notifier.failures
    assert failed.state is TaskState.FAILED
    assert failed.error_code == FailureReason.NO_VIDEO
    assert failed.status_message and "video" in failed.status_message
    assert failed.video_url is None
    assert failed.quota_refunded and (await world.state(task)).quota_refunded
    assert world.notifier.delivered == []
    assert not [r for r in world.api.requests if r.path.startswith("/videos/")], "nothing fetched"


async def test_a_video_that_arrives_in_rough_pieces_is_kept_whole(world: World) -> None:
    """The download reads to the end however the body comes: pieces, chunked, gzipped."""
    world.api.video_bytes = MP4_BYTES + random.Random(7).randbytes(600_000)
    world.api.rough = Roughness(seed=7, max_pieces=40, max_delay=0.002, chunked=0.5, gzip=0.5)
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    [delivered] = world.notifier.delivered
    assert delivered.error_code is None and delivered.video_path is not None
    assert Path(delivered.video_path).read_bytes() == world.api.video_bytes
    assert world.media.video_path(task.id).exists()


async def test_video_over_the_cap_is_delivered_as_a_link(world: World) -> None:
    world.api.video_bytes = MP4_BYTES + b"\0" * 100_000
    config = EngineConfig(**{**FAST.__dict__, "video_max_bytes": 50_000})
    engine = await world.engine(config)
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    assert world.notifier.delivered[0].error_code == FailureReason.VIDEO_TOO_LARGE
    assert not world.media.video_path(task.id).exists()


async def test_failed_delivery_is_retried(world: World) -> None:
    world.notifier.fail_deliveries = 2
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1, timeout=15)
    await world.until_state(task, TaskState.DELIVERED)
    assert len([r for r in world.api.requests if r.path.startswith("/videos/")]) == 1, (
        "downloaded once"
    )


# --- restarts ----------------------------------------------------------------------------


async def test_restart_picks_up_every_state(world: World) -> None:
    world.api.finish_after = 0.2
    queued = await world.new_task()
    submitted = await world.new_task()
    remote = await world.client().submit_multi_image(
        await build_request(submitted, world.media, FAST)
    )
    await world.store.transition(submitted.id, TaskState.SUBMITTING)
    await world.store.transition(submitted.id, TaskState.SUBMITTED, kling_task_id=remote.task_id)
    processing = await world.new_task()
    remote2 = await world.client().submit_multi_image(
        await build_request(processing, world.media, FAST)
    )
    await world.store.transition(processing.id, TaskState.SUBMITTING)
    await world.store.transition(processing.id, TaskState.SUBMITTED, kling_task_id=remote2.task_id)
    await world.store.transition(processing.id, TaskState.PROCESSING)
    succeeded = await world.new_task()
    await world.store.transition(succeeded.id, TaskState.SUBMITTING)
    await world.store.transition(succeeded.id, TaskState.SUBMITTED, kling_task_id="x")
    await world.store.transition(
        succeeded.id, TaskState.SUCCEEDED, video_url=world.api.base_url + "/videos/nope.mp4"
    )
    await world.engine()
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 4, timeout=15)
    assert {t.id for t in world.notifier.delivered} == {
        queued.id,
        submitted.id,
        processing.id,
        succeeded.id,
    }
    assert len(world.api.submits) == 3, "only the queued task was sent"
    [link_only] = [t for t in world.notifier.delivered if t.id == succeeded.id]
    assert link_only.error_code == FailureReason.VIDEO_DOWNLOAD_FAILED
    downloads = [r for r in world.api.requests if r.path == "/videos/nope.mp4"]
    assert len(downloads) == 3, "the download was retried, then the link delivered"


async def test_restart_in_submitting_when_the_provider_has_it(world: World) -> None:
    task = await world.new_task()
    request = await build_request(task, world.media, FAST)
    await world.store.transition(task.id, TaskState.SUBMITTING, attempts=1)
    await world.client().submit_multi_image(request)  # reached the provider, then the crash
    await world.engine()
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    assert len(world.api.submits) == 1, "found by external id, never sent twice"
    assert len(world.api.tasks) == 1


async def test_restart_in_submitting_when_the_provider_never_got_it(world: World) -> None:
    task = await world.new_task()
    await world.store.transition(task.id, TaskState.SUBMITTING, attempts=1)
    await world.engine()
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    assert len(world.api.submits) == 1, "sent once, after a clear not found"


async def test_restart_in_submitting_with_an_unknown_answer_is_not_resubmitted(
    world: World,
) -> None:
    task = await world.new_task()
    await world.store.transition(task.id, TaskState.SUBMITTING, attempts=1)
    fault = world.api.add_fault("server_error", on="query", times=1000)
    await world.engine()
    await asyncio.sleep(0.6)
    assert len(world.api.queries) >= 3, "the lookup was tried again"
    assert world.api.submits == [], "never resubmitted while the lookup can't answer"
    assert (await world.state(task)).state is TaskState.SUBMITTING
    world.api.faults.remove(fault)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1, timeout=15)
    assert len(world.api.submits) == 1


async def test_stop_then_start_loses_nothing(world: World) -> None:
    world.api.finish_after = 0.5
    engine = await world.engine()
    tasks = [await world.new_task(engine) for _ in range(4)]
    await asyncio.sleep(0.15)
    await engine.stop()
    world.engines.remove(engine)
    states = [(await world.state(t)).state for t in tasks]
    assert TaskState.DELIVERED not in states[2:], states
    await world.engine()
    await world.notifier.wait(
        lambda: len({t.id for t in world.notifier.delivered}) == 4, timeout=20
    )
    assert len(world.api.tasks) == 4, "no task created twice"


async def test_a_failure_counts_as_told_only_once_its_notice_is_out(world: World) -> None:
    world.api.outcome = "failed"
    world.notifier.fail_notices = 2
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.until_state(task, TaskState.FAILED)
    assert not (await world.state(task)).is_told, "the notice failed: not told yet"
    await world.notifier.wait(lambda: len(world.notifier.failures) == 1, timeout=15)
    await asyncio.sleep(0.05)
    told = await world.state(task)
    assert told.is_told and told.quota_refunded
    assert len(world.notifier.failures) == 1, "told once"


async def test_restart_tells_an_ending_whose_notice_never_went_out(world: World) -> None:
    """The process died between the failed state and its notice (and before the refund)."""
    failed = await world.new_task()
    await world.store.transition(failed.id, TaskState.SUBMITTING)
    await world.store.transition(failed.id, TaskState.FAILED, error_code="provider_failed")
    timed_out = await world.new_task()
    await world.store.transition(timed_out.id, TaskState.SUBMITTING)
    await world.store.transition(timed_out.id, TaskState.SUBMITTED, kling_task_id="k-1")
    await world.store.transition(timed_out.id, TaskState.TIMED_OUT, error_code="timed_out")
    told = await world.new_task()
    await world.store.transition(told.id, TaskState.FAILED, notified_at=1.0)
    await world.engine()
    await world.notifier.wait(lambda: len(world.notifier.failures) == 2)
    await asyncio.sleep(0.1)
    by_id = {t.id: t for t in world.notifier.failures}
    assert set(by_id) == {failed.id, timed_out.id}, "the told one isn't told again"
    assert by_id[failed.id].quota_refunded, "the refund the crash cut off is made before telling"
    assert not by_id[timed_out.id].quota_refunded, "timed out at the provider: it counts"
    assert (await world.state(failed)).is_told and (await world.state(timed_out)).is_told
    assert world.api.requests == [], "an ended task is never sent or polled again"


async def test_enqueue_leaves_a_task_it_already_tracks_alone(world: World) -> None:
    world.api.finish_after = 1000
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.until_state(task, TaskState.SUBMITTED)
    engine.enqueue(await world.state(task))  # e.g. an intake finishing after a restart
    engine.enqueue(replace(task, state=TaskState.QUEUED))
    assert engine.queue.position(task.id) is None
    await asyncio.sleep(0.5)  # polls come at most 0.2 s apart
    assert len(world.api.submits) == 1 and len(world.api.queries) >= 2, "still polled"


# --- callbacks ---------------------------------------------------------------------------


async def callback_engine(world: World, poll_interval: float = 5.0) -> TaskEngine:
    world.api.finish_after = 1000
    config = EngineConfig(
        **{
            **FAST.__dict__,
            "poll_interval": poll_interval,
            "poll_max_interval": 5.0,
            "callback_public_url": "https://bot.example.org",
            "callback_listen_port": 0,
        }
    )
    return await world.engine(config)


async def test_callback_wakes_the_task_at_once(world: World) -> None:
    engine = await callback_engine(world)
    task = await world.new_task(engine)
    await world.notifier.wait(
        lambda: any(s is TaskState.SUBMITTED for _, s, _ in world.notifier.progress_calls)
    )
    current = await world.state(task)
    assert world.api.submits[0].body["callback_url"] == callback_url(
        engine.config.callback_public_url, current
    )
    world.api.finish(current.kling_task_id or "")
    url = f"http://127.0.0.1:{engine.callbacks.port}/kling/callback/{task.id}/{task.callback_token}"
    body = {"task_id": current.kling_task_id, "task_status": "succeed", "task_result": {}}
    for _ in range(2):  # a repeat changes nothing
        async with world.session.post(url, json=body) as response:
            assert response.status == 200
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1, timeout=3)
    await asyncio.sleep(0.1)
    assert len(world.notifier.delivered) == 1


async def test_a_taken_callback_port_is_one_clear_line_and_polling_carries_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.api.finish_after = 0.3
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = replace(
            FAST, callback_public_url="https://bot.example.org", callback_listen_port=port
        )
        with caplog.at_level(logging.ERROR, logger="bot.engine.callbacks"):
            engine = await world.engine(config)
        await world.new_task(engine)
        await world.notifier.wait(lambda: len(world.notifier.delivered) == 1, timeout=10)
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"Can't listen for the provider's callbacks on port {port}" in line
    assert "the port is in use" in line and "CALLBACK_LISTEN_PORT" in line
    assert "callback_url" not in world.api.submits[0].body, "no URL nobody listens on"


async def test_forged_callback_token_gets_404_and_changes_nothing(world: World) -> None:
    engine = await callback_engine(world)
    task = await world.new_task(engine)
    await world.notifier.wait(
        lambda: any(s is TaskState.SUBMITTED for _, s, _ in world.notifier.progress_calls)
    )
    before = len(world.api.queries)
    for path in (
        f"/kling/callback/{task.id}/forged",
        f"/kling/callback/99999/{task.callback_token}",
        "/kling/callback/x/y",
    ):
        async with world.session.post(
            f"http://127.0.0.1:{engine.callbacks.port}{path}",
            json={"task_id": "1", "task_status": "succeed"},
        ) as response:
            assert response.status == 404
    await asyncio.sleep(0.2)
    assert len(world.api.queries) == before
    assert (await world.state(task)).state is TaskState.SUBMITTED


@pytest.mark.parametrize("body", [b"not json", b"[" * 100_000 + b"]" * 100_000])
async def test_callback_with_a_bad_body_is_refused(world: World, body: bytes) -> None:
    engine = await callback_engine(world)
    task = await world.new_task(engine)
    url = f"http://127.0.0.1:{engine.callbacks.port}/kling/callback/{task.id}/{task.callback_token}"
    async with world.session.post(url, data=body) as response:
        assert response.status == 400


async def test_retention_removes_old_inputs_and_videos(world: World) -> None:
    engine = await world.engine(EngineConfig(**{**FAST.__dict__, "retention_seconds": 0.001}))
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    await asyncio.sleep(0.05)
    done = await world.state(task)
    assert Path(done.input_dir).exists()
    await engine.chores.sweep()
    assert not Path(done.input_dir).exists()
    assert done.video_path and not Path(done.video_path).exists()
    assert (await world.state(task)).inputs_removed_at is not None


async def test_callback_after_the_poll_changes_nothing(world: World) -> None:
    world.api.finish_after = 0.1
    # Scaled so the safety poll (at most 10 model minutes after the last) comes within 0.5 s.
    config = EngineConfig(
        **{
            **FAST.__dict__,
            "poll_interval": 0.001,
            "poll_max_interval": 0.05,
            "time_scale": 1200.0,
            "callback_public_url": "https://bot.example.org",
            "callback_listen_port": 0,
        }
    )
    engine = await world.engine(config)
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1, timeout=10)
    await asyncio.sleep(0.05)
    done = await world.state(task)
    queries = len(world.api.queries)
    url = f"http://127.0.0.1:{engine.callbacks.port}/kling/callback/{task.id}/{task.callback_token}"
    body = {"task_id": done.kling_task_id, "task_status": "succeed"}
    async with world.session.post(url, json=body) as response:
        assert response.status == 200
    await asyncio.sleep(0.2)
    assert len(world.notifier.delivered) == 1
    assert len(world.api.queries) == queries, "a late notice for a finished task asks nothing"


async def test_long_queue_tells_far_places_coarsely(world: World) -> None:
    engine = await world.engine(start=False)
    tasks = [await world.new_task() for _ in range(40)]
    engine.queue.waiting.extend(t.id for t in tasks)

    async def told_after_moves(moves: int) -> dict[int, int]:
        for _ in range(moves):
            engine.queue.waiting.popleft()
        world.notifier.progress_calls.clear()
        await engine.queue.announce()
        return {tid: pos for tid, _, pos in world.notifier.progress_calls if pos is not None}

    assert len(await told_after_moves(0)) == 40, "everyone learns their place"
    after_one = await told_after_moves(1)
    assert sorted(after_one.values()) == list(range(1, 26)), "every move near the front"
    after_ten = await told_after_moves(9)
    assert tasks[-1].id in after_ten and after_ten[tasks[-1].id] == 30, "far back: every 10 places"


async def test_stop_cancels_polls_waiting_for_the_rate_limit(world: World) -> None:
    world.api.finish_after = 1000
    client = world.client()
    client.limiter = RateLimiter(2)
    client.limiter.rate = 1000  # slower than it says, so polls pile up waiting in it
    config = EngineConfig(**{**FAST.__dict__, "max_concurrent": 6})
    engine = TaskEngine(world.store, client, world.notifier, world.session, world.media, config)
    await engine.start()
    tasks = [await world.new_task(engine) for _ in range(6)]
    await asyncio.sleep(
        1.5
    )  # six tasks want a poll every 0.05 s; the limiter lets 2 a second through
    before = len(world.api.queries)
    await engine.stop()
    assert len(world.api.queries) <= before + 1, "polls waiting in the limiter were not sent"
    states = {(await world.state(t)).state for t in tasks}
    assert states <= {TaskState.SUBMITTED, TaskState.PROCESSING}, "nothing half-done"


async def test_time_in_our_queue_does_not_count_against_the_provider(world: World) -> None:
    world.api.finish_after = 0.4
    config = EngineConfig(**{**FAST.__dict__, "max_concurrent": 1, "task_timeout": 0.6})
    engine = await world.engine(config)
    first = await world.new_task(engine)
    second = await world.new_task(engine)  # waits ~0.45 s in the queue, then 0.4 s at Kling
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 2, timeout=10)
    assert {t.id for t in world.notifier.delivered} == {first.id, second.id}
    assert world.notifier.failures == []


async def test_a_task_past_its_time_gets_a_last_look(world: World) -> None:
    world.api.finish_after = 0.25
    config = EngineConfig(**{**FAST.__dict__, "poll_interval": 0.5, "task_timeout": 0.3})
    engine = await world.engine(config)
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: world.notifier.delivered or world.notifier.failures)
    assert [t.id for t in world.notifier.delivered] == [task.id], "finished just in time"


async def test_timed_out_before_reaching_the_provider_is_refunded(world: World) -> None:
    world.api.add_fault("concurrency", on="submit", times=1000)
    config = EngineConfig(**{**FAST.__dict__, "task_timeout": 0.3, "submit_backoff": 0.2})
    engine = await world.engine(config)
    await world.new_task(engine)
    await world.notifier.wait(lambda: world.notifier.failures, timeout=10)
    [timed_out] = world.notifier.failures
    assert timed_out.state is TaskState.TIMED_OUT and timed_out.quota_refunded


async def test_a_task_is_never_posted_more_than_twice(world: World) -> None:
    world.api.add_fault("server_error", on="submit", times=10)
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: world.notifier.failures, timeout=15)
    assert len(world.api.submits) == 2, "sent, then once more after a clear not-found"
    failed = await world.state(task)
    assert failed.state is TaskState.FAILED and failed.error_code == FailureReason.NOT_SUBMITTED
    assert failed.quota_refunded


async def test_a_store_hiccup_never_leaks_a_provider_slot(world: World) -> None:
    engine = await world.engine(EngineConfig(**{**FAST.__dict__, "max_concurrent": 1}), start=False)
    real_get = world.store.get
    hiccups = {"left": 3}

    async def flaky_get(task_id: int) -> Task | None:
        if hiccups["left"] > 0:
            hiccups["left"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return await real_get(task_id)

    world.store.get = flaky_get  # type: ignore[method-assign]
    await engine.start()
    for _ in range(3):
        await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 3, timeout=15)


# --- what the provider says it charged ---------------------------------------------------------


def kling_units(body: dict[str, Any]) -> str:
    """The fake's charge in the provider's own units: 10 per second, pro twice std."""
    return str(int(body.get("duration", "5")) * 10 * (2 if body.get("mode") == "pro" else 1))


async def test_the_providers_deduction_is_kept_beside_our_price(world: World) -> None:
    world.api.deduction_for = kling_units
    engine = await world.engine()
    task = await world.new_task(engine, duration="10", mode="pro")
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    [delivered] = world.notifier.delivered
    assert delivered.provider_deduction == "200"  # written with the move to succeeded
    assert (await world.state(task)).provider_deduction == "200"


async def test_a_failed_tasks_deduction_is_kept_and_garbage_is_not(world: World) -> None:
    world.api.outcome = "failed"
    world.api.deduction_for = lambda body: "0"
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.failures) == 1)
    assert (await world.state(task)).provider_deduction == "0"
    world.api.deduction_for = lambda body: {"units": "lots"}  # not a number: not kept
    world.api.outcome = "succeed"
    other = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    assert (await world.state(other)).provider_deduction is None


async def test_no_deduction_in_the_answer_leaves_it_unknown(world: World) -> None:
    engine = await world.engine()
    task = await world.new_task(engine)
    await world.notifier.wait(lambda: len(world.notifier.delivered) == 1)
    assert (await world.state(task)).provider_deduction is None


async def test_the_engine_looks_at_the_monthly_cap_when_a_task_comes_in(world: World) -> None:
    posted: list[int] = []

    class Poster:
        async def post_credit_alert(self, alert: CreditAlert, *, look_first: bool) -> int:
            posted.append(alert.percent)
            return 1

    await world.store.set_log_channel(10, 500)
    watch = CreditCapWatch(world.store, cap=1000, prices=PriceTable.default(), poster=Poster())
    engine = TaskEngine(
        world.store,
        world.client(),
        world.notifier,
        world.session,
        world.media,
        FAST,
        cap_watch=watch,
    )
    world.engines.append(engine)
    await engine.start()
    await asyncio.sleep(0.05)
    assert posted == []  # looked at start: nothing spent yet
    priced = NewTask(
        user_id=2,
        guild_id=10,
        channel_id=100,
        locale="en",
        prompt="p",
        options=TaskOptions(mode="pro", duration="10"),
        image_count=2,
        input_dir="",
        upload_limit=1,
        price_cents=850,
    )
    await world.store.reserve(priced, QuotaLimits())  # 8.5 of 10 credits
    await world.new_task(engine)  # the intake hands a task over: the watch looks again
    async with asyncio.timeout(5):
        while posted != [80]:
            await asyncio.sleep(0.01)
