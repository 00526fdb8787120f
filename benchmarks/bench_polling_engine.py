"""Benchmark: the REAL engine's polls, today's growing gaps against the learned plan (issue 14).

Run: `.venv/bin/python benchmarks/bench_polling_engine.py`   (about two minutes; prints figures
and PASS/FAIL per target; asserts nothing on time).

What runs: `bot.engine.TaskEngine` with a SQLite store, against the fake CometAPI on loopback
(tests/fakes/cometapi.py), in one process. Time is SCALED: one real second stands for `SCALE`
seconds (the engine's `time_scale`, every interval of its config, every fake task's duration);
every figure below is printed back in unscaled seconds. Event-loop and store overhead is
scaled up with it (×`SCALE`), so the delays here are a little worse than the bot's.

- **polls/task**: the status queries the fake received for the task (a callback's wake-up
  poll included);
- **delay**: from the moment the fake provider reports the task done to the moment the engine
  hands the downloaded video to the notifier ("video posted"; the Discord upload itself takes
  the same time under both schedules);
- **today**: the growing-gap rule the engine had before (kept only here, as `TodayGaps`): first
  poll 10 s after the submit, the gap back to 10 s when the status first turns `processing`
  (the fake reports it at once), then ×1.5 per poll up to 60 s, ±10 % jitter;
- **new**: the engine as it is (`bot.engine.polls.EnginePolls`: `bot.polling.PollPlanner` on
  `bot.timing`'s learned distribution, history loaded from the store at start).

The mix of generation times (stated, not measured: Kling publishes no figures): kling-v1-6,
std 5 s median 70 s (half the tasks), std 10 s 110 s (20 %), pro 5 s 120 s (20 %), pro 10 s
180 s (10 %); log-normal within a kind with σ = 0.10 on the log scale, and 2 % of tasks stuck
×1.5–3 longer; a mix run is 100 tasks in exactly these shares (2 stuck), arriving at random
within 15 minutes (about 10 at the provider at once, within the query budget: a full budget is
bench_polling.py's rate-limited section); the 60 s case is 20 tasks, one every 8 s. Today's
rule doesn't learn, so one run of it serves as the baseline of both mix runs. "After warm-up" means the store
holds 20 finished tasks of the kind (the 60 s case; of every kind for the mix) when the engine
starts; "cold start" means an empty store. A callback reaches the bot 0.3 s after the finish.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from PIL import Image

from bot.engine import Delivered, EngineConfig, TaskEngine, new_callback_token
from bot.kling.client import ClientTimeouts, KlingClient
from bot.kling.ratelimit import RateLimiter
from bot.media import MediaStore
from bot.quota import QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, Task, TaskOptions, TaskState
from tests.fakes.cometapi import FakeCometAPI

SCALE = 30.0  # model seconds per real second
RATE = 5.0  # API_MAX_QUERIES_PER_SECOND (default), in model time
CALLBACK_LATENCY = 0.3  # model seconds from the finish to the callback reaching the bot
SEED = 14
DEBUG = False  # print each task's poll times (model s, relative to its finish)

#: (mode, duration, median seconds, share of tasks)
MIX = [("std", "5", 70.0, 0.5), ("std", "10", 110.0, 0.2), ("pro", "5", 120.0, 0.2)]
MIX.append(("pro", "10", 180.0, 0.1))
SIGMA = 0.10
STUCK_SHARE, STUCK_FACTOR = 0.02, (1.5, 3.0)
MIX_TASKS, MIX_SPREAD = 100, 900.0  # tasks of a mix run, arriving at random within this many s

# --- targets (issue 14) ------------------------------------------------------------------
T60_POLLS, T60_DELAY = 8.0, 5.0  # a 60 s task after 20 alike: polls/task, delay p95
MIX_DELAY_P95 = 8.0  # over the mix after warm-up (and polls/task no more than today)
CB_POLLS, CB_DELAY = 2.0, 1.0  # with callbacks


# --- the baseline: today's schedule --------------------------------------------------------


class TodayGaps:
    """The engine's poll gaps before issue 14 (`PollGaps`), behind `EnginePolls`' interface."""

    INTERVAL, MAX, GROWTH, JITTER = 10.0, 60.0, 1.5, 0.1

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.gaps: dict[int, float] = {}
        self.calls: dict[int, int] = {}

    async def load(self, store: TaskStore) -> int:
        return 0

    def track(self, task: Task) -> None:
        self.gaps[task.id] = self.INTERVAL
        self.calls[task.id] = 0

    def ensure(self, task: Task) -> None:
        if task.id not in self.gaps:
            self.track(task)

    def next(self, task_id: int) -> float:
        calls = self.calls[task_id] = self.calls.get(task_id, 0) + 1
        if calls == 2:  # the first poll saw `processing`: the old engine restarted the gap
            self.gaps[task_id] = self.INTERVAL
        gap = self.gaps.get(task_id, self.INTERVAL)
        self.gaps[task_id] = min(gap * self.GROWTH, self.MAX)
        gap *= self.rng.uniform(1 - self.JITTER, 1 + self.JITTER)
        return gap / SCALE

    def first(self) -> float:
        return self.rng.uniform(0, self.INTERVAL) / SCALE

    def called_back(self, task_id: int) -> None:
        pass

    def finished(self, task: Task) -> float | None:
        self.forget(task.id)
        return None

    def forget(self, task_id: int) -> None:
        self.gaps.pop(task_id, None)
        self.calls.pop(task_id, None)


# --- the world -------------------------------------------------------------------------------


@dataclass
class Notifier:
    """Notes when each video is handed over (monotonic seconds)."""

    delivered_at: dict[int, float] = field(default_factory=dict)
    failures: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expect: int = 0

    async def progress(self, task: Task, queue_position: int | None) -> None:
        pass

    async def deliver(self, task: Task) -> Delivered:
        self.delivered_at[task.id] = time.monotonic()
        self._check()
        return Delivered(1, "thread_upload")

    async def failed(self, task: Task) -> None:
        self.failures += 1
        self._check()

    def _check(self) -> None:
        if len(self.delivered_at) + self.failures >= self.expect:
            self.done.set()


@dataclass
class Job:
    """One task of a run: its options, its generation time (model s) and arrival (model s)."""

    mode: str
    duration: str
    seconds: float
    arrives: float = 0.0


@dataclass
class Result:
    polls: list[int]
    delays: list[float]  # model seconds
    jobs: list[Job] = field(default_factory=list)  # in the same order

    @property
    def mean_polls(self) -> float:
        return statistics.fmean(self.polls)

    def delay(self, q: float) -> float:
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 320), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def draw(rng: random.Random, median: float, stuck: bool = False) -> float:
    seconds = median * math.exp(rng.gauss(0.0, SIGMA))
    if stuck:
        seconds *= rng.uniform(*STUCK_FACTOR)
    return seconds


def mix_jobs(rng: random.Random, count: int, spread: float) -> list[Job]:
    """`count` tasks in the mix's exact shares (kinds, and 2 % stuck), in a random order,
    arriving at random within `spread` seconds: a sample that is the stated mix, not a lucky
    or unlucky draw from it."""
    kinds = [(m, d, median) for m, d, median, share in MIX for _ in range(round(share * count))]
    rng.shuffle(kinds)
    stuck = set(rng.sample(range(len(kinds)), round(STUCK_SHARE * len(kinds))))
    return [
        Job(mode, duration, draw(rng, median, i in stuck), rng.uniform(0, spread))
        for i, (mode, duration, median) in enumerate(kinds)
    ]


async def seed(store: TaskStore, jobs: list[Job]) -> None:
    """Finished tasks in the store, as the bot would have left them."""
    now = time.time() - 86_400
    for job in jobs:
        task = await store.reserve(new_task(job, "", new_callback_token()), QuotaLimits())
        await store.transition(task.id, TaskState.SUBMITTING)
        await store.transition(
            task.id, TaskState.SUBMITTED, kling_task_id=f"old-{task.id}", submitted_at=now
        )
        finished = now + job.seconds / SCALE
        await store.transition(
            task.id, TaskState.SUCCEEDED, video_url="https://v/x.mp4", finished_at=finished
        )
        await store.transition(task.id, TaskState.DELIVERED)
        now += 60


def new_task(job: Job, input_dir: str, token: str) -> NewTask:
    return NewTask(
        user_id=1,
        guild_id=10,
        channel_id=100,
        locale="en-US",
        prompt="a cat walks",
        options=TaskOptions(mode=job.mode, duration=job.duration),
        image_count=2,
        input_dir=input_dir,
        upload_limit=10 * 1024 * 1024,
        callback_token=token,
    )


async def run(
    schedule: str, history: list[Job], jobs: list[Job], *, callbacks: bool = False
) -> Result:
    """Run `jobs` through a fresh engine (store seeded with `history`) under `schedule`."""
    rng = random.Random(SEED)
    durations: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        api = FakeCometAPI(
            processing_after=0.0,
            finish_after_for=lambda body: durations[body["external_task_id"]],
            rough=None,
        )
        async with api, aiohttp.ClientSession() as session:
            store = await TaskStore.open(f"sqlite:///{folder}/bench.sqlite3")
            await seed(store, history)
            media = MediaStore(Path(folder) / "media")
            notifier = Notifier(expect=len(jobs))
            client = KlingClient(
                session,
                base_url=api.base_url,
                api_key=api.api_key,
                timeouts=ClientTimeouts(connect=2, submit=5, query=5),
                max_retries=2,
                backoff_base=0.01,
                limiter=RateLimiter(RATE * SCALE),
            )
            config = EngineConfig(
                max_concurrent=len(jobs),
                poll_interval=2.0 / SCALE,
                poll_max_interval=60.0 / SCALE,
                task_timeout=3600.0 / SCALE,
                submit_backoff=2.0 / SCALE,
                download_backoff=2.0 / SCALE,
                time_scale=SCALE,
                callback_public_url="https://bot.example.org" if callbacks else None,
                callback_listen_port=0 if callbacks else None,
            )
            engine = TaskEngine(store, client, notifier, session, media, config)
            if schedule == "today":
                engine.polls = TodayGaps(rng)  # type: ignore[assignment]
            await engine.start()
            image = png()
            started = time.monotonic()
            tasks: dict[int, Task] = {}
            job_of: dict[int, Job] = {}
            callers: list[asyncio.Task[None]] = []

            async def submit(job: Job) -> None:
                await asyncio.sleep(job.arrives / SCALE)
                task = await store.reserve(new_task(job, "", new_callback_token()), QuotaLimits())
                durations[task.external_task_id] = job.seconds / SCALE
                saved = await media.save_inputs(task.external_task_id, [("PNG", image)] * 2)
                task = await store.update(task.id, input_dir=str(saved))
                tasks[task.id] = task
                job_of[task.id] = job
                engine.enqueue(task)
                if callbacks:
                    callers.append(asyncio.create_task(call_back(task, job)))

            async def call_back(task: Task, job: Job) -> None:
                """POST the provider's callback `CALLBACK_LATENCY` after the task's finish."""
                while True:
                    remote = next(
                        (
                            t
                            for t in api.tasks.values()
                            if t.external_task_id == task.external_task_id
                        ),
                        None,
                    )
                    if remote is not None:
                        break
                    await asyncio.sleep(0.01)
                due = remote.created + remote.finish_after + CALLBACK_LATENCY / SCALE
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                url = (
                    f"http://127.0.0.1:{engine.callbacks.port}/kling/callback/"
                    f"{task.id}/{task.callback_token}"
                )
                body = {"task_id": remote.task_id, "task_status": "succeed", "task_result": {}}
                async with session.post(url, json=body) as response:
                    await response.read()

            await asyncio.gather(*(submit(job) for job in jobs))
            longest = max(j.seconds for j in jobs) / SCALE
            await asyncio.wait_for(notifier.done.wait(), timeout=longest * 3 + 30)
            for caller in callers:
                caller.cancel()
            await engine.stop()
            await store.close()
            assert notifier.failures == 0, "a task failed"
            assert api.violations == [], api.violations
            del started
            polls, delays = [], []
            by_external = {t.external_task_id: t for t in api.tasks.values()}
            for task_id, task in tasks.items():
                remote = by_external[task.external_task_id]
                done = remote.created + remote.finish_after
                delays.append((notifier.delivered_at[task_id] - done) * SCALE)
                polls.append(remote.queries)
                if DEBUG:
                    times = [
                        round((r.at - done) * SCALE, 1)
                        for r in api.queries
                        if r.path.endswith(remote.task_id)
                    ]
                    print(job_of[task_id], times)
            return Result(polls, delays, [job_of[task_id] for task_id in tasks])


# --- the report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def line(name: str, today: Result, new: Result) -> None:
    print(
        f"  {name:<28} polls/task {today.mean_polls:5.2f} → {new.mean_polls:5.2f} "
        f"(×{new.mean_polls / today.mean_polls:.2f})   delay p50 {today.delay(0.5):5.1f} → "
        f"{new.delay(0.5):4.1f} s (×{new.delay(0.5) / today.delay(0.5):.2f})   p95 "
        f"{today.delay(0.95):5.1f} → {new.delay(0.95):4.1f} s "
        f"(×{new.delay(0.95) / today.delay(0.95):.2f})"
    )


async def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    began = time.monotonic()
    rng = random.Random(SEED)
    print(
        f"Real engine + fake CometAPI on loopback, time ×{SCALE:g}, query rate {RATE:g}/s; "
        "today → new"
    )
    verdicts: list[tuple[str, bool]] = []

    alike = [Job("std", "5", 60.0 * math.exp(rng.gauss(0, SIGMA))) for _ in range(20)]
    sixty = [Job("std", "5", 60.0, arrives=i * 8.0) for i in range(20)]
    today = await run("today", alike, sixty)
    new = await run("new", alike, sixty)
    line("60 s task, after 20 alike", today, new)
    verdicts.append(
        (
            f"60 s task after 20 alike: ≤ {T60_POLLS:g} polls and p95 delay ≤ {T60_DELAY:g} s",
            new.mean_polls <= T60_POLLS and new.delay(0.95) <= T60_DELAY,
        )
    )

    warm = [  # 20 finished tasks of every kind, in a random order
        Job(mode, duration, draw(rng, median))
        for mode, duration, median, _ in MIX
        for _ in range(20)
    ]
    rng.shuffle(warm)
    mix = mix_jobs(rng, MIX_TASKS, MIX_SPREAD)
    today = mix_today = await run("today", [], mix)  # today's rule learns nothing
    new = await run("new", warm, mix)
    line(f"mix, after warm-up ({MIX_TASKS})", today, new)
    verdicts.append(
        (
            f"mix: p95 delay ≤ {MIX_DELAY_P95:g} s and polls/task ≤ today's",
            new.delay(0.95) <= MIX_DELAY_P95 and new.mean_polls <= today.mean_polls,
        )
    )

    today = await run("today", alike, sixty, callbacks=True)
    new = await run("new", alike, sixty, callbacks=True)
    line("60 s task, callbacks", today, new)
    verdicts.append(
        (
            f"callbacks: ≤ {CB_POLLS:g} polls and p95 delay ≤ {CB_DELAY:g} s",
            new.mean_polls <= CB_POLLS and new.delay(0.95) <= CB_DELAY,
        )
    )

    new = await run("new", [], mix)
    today = mix_today
    line(f"mix, cold start ({MIX_TASKS})", today, new)
    verdicts.append(
        (
            "cold start: polls/task and p95 delay no worse than today",
            new.mean_polls <= today.mean_polls and new.delay(0.95) <= today.delay(0.95),
        )
    )

    print()
    for name, ok in verdicts:
        print(f"  {verdict(ok)}  {name}")
    met = sum(ok for _, ok in verdicts)
    print(f"\n{met} of {len(verdicts)} targets met ({time.monotonic() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
