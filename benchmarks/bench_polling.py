"""Benchmark: today's poll schedule against the learned one (bot.polling), in virtual time.

Run: `.venv/bin/python benchmarks/bench_polling.py`   (pure computation, well under a minute;
prints figures and PASS/FAIL against the targets below; asserts nothing on time).

What is simulated, in virtual seconds (no sockets, no sleeping):
- the provider finishes each task T seconds after the submit and reports `processing` from
  `PROCESSING_AFTER` on; every query takes `QUERY_SECONDS` and sees the state at the moment it
  is sent; a callback (when configured) reaches the bot `CALLBACK_SECONDS` after the finish;
- "delay" is from the provider's finish to the answer that tells the bot (the moment it starts
  the download: downloading and posting take the same time under both schedules);
- **today's schedule** is bot/engine.py's as it stands (EngineConfig defaults): after the submit
  the first poll comes one `poll_interval` (10 s) later, each gap is the previous ×1.5 up to
  `poll_max_interval` (60 s), the gap goes back to 10 s when the status first turns `processing`,
  every gap gets ±10 % jitter and is at least the rate floor (active tasks / rate × 1.25);
- **the new schedule** is driven through exactly the calls the engine will make:
  `PollPlanner.track(task_id, kind, submitted_at)` when the task reaches the provider,
  `next_poll(task_id, now)` after every "still running" answer, and
  `finished(task_id, noticed_at, callback_at=...)` when it is done, which feeds the model what
  the bot can know: the callback's time, or the middle of the last gap between polls.

The mix of generation times (stated, not measured: Kling publishes no figures): kling-v1-6,
std 5 s median 70 s (half the tasks), std 10 s 110 s (20 %), pro 5 s 120 s (20 %), pro 10 s
180 s (10 %); within a kind log-normal with σ = 0.10 on the log scale (two tasks in three within
±10 % of the kind's median), and 2 % of tasks stuck for ×1.5–3 longer. A sweep at the end shows
how the figures move with that spread.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.polling import PollPlanner, PollPolicy
from bot.timing import GenerationTimeModel, TaskKind

# --- today's schedule: the engine's growing gaps before issue 14 (its defaults) -----------------
# The growing-gap rule the engine had before the learned plan (issue 14), kept here as the
# baseline: the defaults it ran with.
POLL_INTERVAL = 10.0
POLL_MAX = 60.0
POLL_GROWTH = 1.5
POLL_JITTER = 0.1
RATE_HEADROOM = 1.25
#: Other planner knobs to try, e.g. BENCH_POLICY='{"poll_cost": 1.0}' (default: production).
POLICY = json.loads(os.environ.get("BENCH_POLICY", "{}"))
RATE = 5.0  # API_MAX_QUERIES_PER_SECOND default

# --- the simulated world ---------------------------------------------------------------------
QUERY_SECONDS = 0.3
CALLBACK_SECONDS = 0.3
PROCESSING_AFTER = 5.0
MODEL = "kling-v1-6"
MIX: tuple[tuple[TaskKind, float, float], ...] = (
    (TaskKind(MODEL, "std", "5"), 70.0, 0.5),
    (TaskKind(MODEL, "std", "10"), 110.0, 0.2),
    (TaskKind(MODEL, "pro", "5"), 120.0, 0.2),
    (TaskKind(MODEL, "pro", "10"), 180.0, 0.1),
)
SPREAD = 0.10
STUCK_SHARE = 0.02
STUCK_FACTOR = (1.5, 3.0)

# --- targets ---------------------------------------------------------------------------------
TARGET_60S_POLLS = 8
TARGET_60S_DELAY = 5.0
TARGET_MIX_P95 = 8.0
TARGET_CALLBACK_POLLS = 2
TARGET_CALLBACK_DELAY = 1.0

# --- sizes -----------------------------------------------------------------------------------
WARM_PER_KIND = 20
TRIALS_60S = 300
MIX_TASKS = 3000
COLD_TASKS = 2000
RATE_TASKS = 1500
RATE_ARRIVALS_PER_SECOND = 1.0  # ≈ 100 tasks at the provider at once
RATE_LIMIT = 5.0
DRIFT_TASKS = 240
DRIFT_AT = 80
DRIFT_FACTOR = 1.5


@dataclass
class Outcome:
    """One task's figures."""

    polls: int
    delay: float
    noticed: float


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0–100), linear between ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def draw_task(rng: random.Random, spread: float = SPREAD) -> tuple[TaskKind, float]:
    """A task of the mix: its kind and its true generation time."""
    pick = rng.random()
    kind, median, _ = MIX[-1]
    for candidate, candidate_median, share in MIX:
        pick -= share
        if pick <= 0:
            kind, median = candidate, candidate_median
            break
    seconds = median * math.exp(rng.gauss(0.0, spread))
    if rng.random() < STUCK_SHARE:
        seconds *= rng.uniform(*STUCK_FACTOR)
    return kind, seconds


# --- the two schedules, one task at a time -----------------------------------------------------


def today_task(finish: float, rng: random.Random, *, callback: bool = False) -> Outcome:
    """bot/engine.py today: `_track` → `_apply_status` → `_grow_gap`, reset on `processing`."""
    floor = 1 / RATE * RATE_HEADROOM  # `_gap_floor` with one task at the provider

    def grow(gap: float) -> tuple[float, float]:
        nxt = min(gap * POLL_GROWTH, POLL_MAX)
        base = max(gap, floor)
        return base + rng.uniform(-base * POLL_JITTER, base * POLL_JITTER), nxt

    gap = POLL_INTERVAL
    state = "submitted"
    delay, gap = grow(gap)
    at = delay
    polls = 0
    while True:
        if callback and at >= finish + CALLBACK_SECONDS:
            at = finish + CALLBACK_SECONDS  # the callback wakes the task: one confirming query
            polls += 1
            noticed = at + QUERY_SECONDS
            return Outcome(polls, noticed - finish, noticed)
        polls += 1
        answered = at + QUERY_SECONDS
        if at >= finish:
            return Outcome(polls, answered - finish, answered)
        if at >= PROCESSING_AFTER and state == "submitted":
            state = "processing"
            gap = POLL_INTERVAL  # "it moved: look again soon"
        delay, gap = grow(gap)
        at = answered + delay


def new_task(
    planner: PollPlanner,
    task_id: int,
    kind: TaskKind,
    finish: float,
    *,
    callback: bool = False,
    learn: bool = True,
) -> Outcome:
    """The learned schedule, through the planner's engine-facing calls (submit at t = 0):
    `track`, `next_poll` after every "still running", then `finished` (which feeds the model)
    or, with `learn` off, `forget`."""
    planner.track(task_id, kind, 0.0)
    at = planner.next_poll(task_id, 0.0)
    polls = 0
    callback_at = None
    while True:
        if callback and at >= finish + CALLBACK_SECONDS:
            callback_at = at = finish + CALLBACK_SECONDS  # the callback wakes the task
            polls += 1
            noticed = at + QUERY_SECONDS
            break
        polls += 1
        answered = at + QUERY_SECONDS
        if at >= finish:
            noticed = answered
            break
        at = answered + planner.next_poll(task_id, answered)
    if learn:
        planner.finished(task_id, noticed, callback_at=callback_at)
    else:
        planner.forget(task_id)
    return Outcome(polls, noticed - finish, noticed)


def new_planner(
    model: GenerationTimeModel, *, callbacks: bool = False, seed: int = 0
) -> PollPlanner:
    """A planner with the production policy and a seeded jitter."""
    rng = random.Random(seed)
    return PollPlanner(
        model, PollPolicy(max_gap=POLL_MAX, callbacks=callbacks, **POLICY), uniform=rng.uniform
    )


def warm_model(
    rng: random.Random, per_kind: int = WARM_PER_KIND, spread: float = SPREAD
) -> GenerationTimeModel:
    """A model that has seen `per_kind` tasks of every kind of the mix (through the planner)."""
    model = GenerationTimeModel()
    planner = new_planner(model, seed=rng.randrange(1 << 30))
    counts = dict.fromkeys((kind for kind, _, _ in MIX), 0)
    task_id = 0
    while min(counts.values()) < per_kind:
        kind, finish = draw_task(rng, spread)
        if counts[kind] >= per_kind:
            continue
        counts[kind] += 1
        task_id += 1
        new_task(planner, task_id, kind, finish)
    return model


# --- reporting ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """Polls and delays of many tasks."""

    polls: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.polls.append(outcome.polls)
        self.delays.append(outcome.delay)

    @property
    def mean_polls(self) -> float:
        return statistics.fmean(self.polls)

    def delay(self, p: float) -> float:
        return percentile(self.delays, p)


def table(rows: list[tuple[str, Figures]], reference: Figures | None = None) -> None:
    """Print polls per task and delay p50/p95/max, with ratios to `reference`."""
    print(f"    {'schedule':<26}{'polls/task':>11}{'delay p50':>11}{'p95':>8}{'max':>8}")
    for name, figures in rows:
        line = (
            f"    {name:<26}{figures.mean_polls:>11.2f}{figures.delay(50):>10.1f}s"
            f"{figures.delay(95):>7.1f}s{max(figures.delays):>7.1f}s"
        )
        if reference is not None and figures is not reference:
            line += (
                f"   ratio new/today: polls ×{figures.mean_polls / reference.mean_polls:.2f},"
                f" p50 ×{figures.delay(50) / reference.delay(50):.2f},"
                f" p95 ×{figures.delay(95) / reference.delay(95):.2f}"
            )
        print(line)


RESULTS: list[tuple[str, bool]] = []


def verdict(name: str, ok: bool, detail: str) -> None:
    """Record and print one target."""
    RESULTS.append((name, ok))
    print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")


# --- sections ----------------------------------------------------------------------------------


def section_sixty_seconds() -> None:
    """A 60-second task after 20 alike tasks (std 5 s, median 60 s, the mix's spread)."""
    print(f"\n1. A 60-second task after {WARM_PER_KIND} alike tasks ({TRIALS_60S} trials)")
    kind = TaskKind(MODEL, "std", "5")
    today, new = Figures(), Figures()
    for trial in range(TRIALS_60S):
        rng = random.Random(1000 + trial)
        model = GenerationTimeModel()
        planner = new_planner(model, seed=trial)
        for task_id in range(WARM_PER_KIND):
            finish = 60.0 * math.exp(rng.gauss(0.0, SPREAD))
            new_task(planner, task_id, kind, finish)
        new.add(new_task(planner, 999, kind, 60.0))
        today.add(today_task(60.0, rng))
    table([("today", today), ("learned", new)], today)
    worst_polls = max(new.polls)
    verdict(
        "60 s task: ≤ 8 polls",
        worst_polls <= TARGET_60S_POLLS,
        f"at most {worst_polls:.0f} polls in every trial (mean {new.mean_polls:.2f}; today {today.mean_polls:.2f})",
    )
    verdict(
        "60 s task: ≤ 5 s from done to noticed",
        max(new.delays) <= TARGET_60S_DELAY,
        f"worst {max(new.delays):.1f} s, p95 {new.delay(95):.1f} s (today p50 {today.delay(50):.1f} s)",
    )


def run_mix(
    model: GenerationTimeModel,
    tasks: int,
    seed: int,
    *,
    callbacks: bool = False,
    lost: bool = False,
    learning: bool = True,
    spread: float = SPREAD,
) -> tuple[Figures, Figures]:
    """Today's and the new schedule on `tasks` tasks of the mix (the same tasks for both).

    `callbacks`: the provider calls back and the planner knows it; `lost`: it never does.
    """
    rng = random.Random(seed)
    planner = new_planner(model, callbacks=callbacks, seed=seed)
    today, new = Figures(), Figures()
    for task_id in range(tasks):
        kind, finish = draw_task(rng, spread)
        today.add(today_task(finish, rng, callback=callbacks and not lost))
        new.add(
            new_task(
                planner, task_id, kind, finish, callback=callbacks and not lost, learn=learning
            )
        )
    return today, new


def section_mix() -> None:
    """The mix, after 20 tasks of every kind; the model keeps learning."""
    print(
        f"\n2. The mix ({MIX_TASKS} tasks) after {WARM_PER_KIND} tasks of every kind, no callbacks"
    )
    today, new = run_mix(warm_model(random.Random(7)), MIX_TASKS, seed=8)
    table([("today", today), ("learned", new)], today)
    verdict(
        "mix: p95 delay ≤ 8 s",
        new.delay(95) <= TARGET_MIX_P95,
        f"p95 {new.delay(95):.1f} s (today {today.delay(95):.1f} s)",
    )
    verdict(
        "mix: no more polls per task than today",
        new.mean_polls <= today.mean_polls,
        f"{new.mean_polls:.2f} vs today {today.mean_polls:.2f}",
    )
    per_kind(seed=8)


def per_kind(seed: int) -> None:
    """The same figures for each kind on its own."""
    print("    per kind (learned schedule after warm-up):")
    for kind, median, _ in MIX:
        rng = random.Random(seed + int(median))
        model = warm_model(random.Random(7))
        planner = new_planner(model, seed=seed)
        today, new = Figures(), Figures()
        for task_id in range(400):
            finish = median * math.exp(rng.gauss(0.0, SPREAD))
            today.add(today_task(finish, rng))
            outcome = new_task(planner, task_id, kind, finish)
            new.add(outcome)
        print(
            f"      {kind.mode} {kind.duration:>2} s (median {median:>3.0f} s): polls {new.mean_polls:.2f}"
            f" (today {today.mean_polls:.2f}), delay p50 {new.delay(50):.1f} s p95 {new.delay(95):.1f} s"
            f" (today {today.delay(50):.1f} / {today.delay(95):.1f} s)"
        )


def section_callbacks() -> None:
    """The mix with callbacks: polling is the safety net."""
    print(
        f"\n3. The mix ({MIX_TASKS} tasks) with callbacks, after {WARM_PER_KIND} tasks of every kind"
        " (polls include the query that confirms the callback)"
    )
    today, new = run_mix(warm_model(random.Random(7)), MIX_TASKS, seed=9, callbacks=True)
    _, lost = run_mix(warm_model(random.Random(7)), MIX_TASKS, seed=9, callbacks=True, lost=True)
    table(
        [
            ("today (+callback)", today),
            ("learned (+callback)", new),
            ("learned, callback lost", lost),
        ],
        today,
    )
    within = sum(1 for p in new.polls if p <= TARGET_CALLBACK_POLLS) / len(new.polls)
    verdict(
        "callbacks: ≤ 2 polls per task",
        max(new.polls) <= TARGET_CALLBACK_POLLS,
        f"{within:.1%} of tasks within 2 polls, at most {max(new.polls):.0f}; mean {new.mean_polls:.2f}",
    )
    verdict(
        "callbacks: ≤ 1 s from done to noticed",
        max(new.delays) <= TARGET_CALLBACK_DELAY,
        f"worst {max(new.delays):.2f} s (callback {CALLBACK_SECONDS:g} s + query {QUERY_SECONDS:g} s)",
    )
    print(
        "    when a callback is lost, the safety polls find the task "
        f"{lost.delay(50):.0f} s (p50) / {lost.delay(95):.0f} s (p95) after it finished"
    )


def section_cold() -> None:
    """No history at all: every task planned from the prior alone."""
    print(
        f"\n4. Cold start: {COLD_TASKS} tasks of the mix, each planned from the prior (no history)"
    )
    today, new = run_mix(GenerationTimeModel(), COLD_TASKS, seed=10, learning=False)
    table([("today", today), ("prior only", new)], today)
    ok = (
        new.mean_polls <= today.mean_polls
        and new.delay(50) <= today.delay(50)
        and new.delay(95) <= today.delay(95)
    )
    verdict(
        "cold start: not worse than today",
        ok,
        f"polls {new.mean_polls:.2f} vs {today.mean_polls:.2f}, p50 {new.delay(50):.1f} vs"
        f" {today.delay(50):.1f} s, p95 {new.delay(95):.1f} vs {today.delay(95):.1f} s",
    )
    print("    first tasks of a fresh bot (learning from the first one on):")
    model = GenerationTimeModel()
    rng = random.Random(11)
    planner = new_planner(model, seed=11)
    window = Figures()
    for task_id in range(1, 61):
        kind, finish = draw_task(rng)
        outcome = new_task(planner, task_id, kind, finish)
        window.add(outcome)
        if task_id % 20 == 0:
            print(
                f"      tasks {task_id - 19:>2}–{task_id:<2}: polls {window.mean_polls:.2f},"
                f" delay p50 {window.delay(50):.1f} s p95 {window.delay(95):.1f} s"
            )
            window = Figures()


# --- many tasks sharing the query rate ----------------------------------------------------------


def section_rate_limited() -> None:
    """About 100 tasks at the provider at once, one 5 q/s limit shared by all of them."""
    print(
        f"\n5. Rate-limited: {RATE_TASKS} tasks arriving {RATE_ARRIVALS_PER_SECOND:g}/s"
        f" (≈ 100 at the provider), {RATE_LIMIT:g} queries/s shared (FIFO limiter as in the client)"
    )
    rows = [(name, *simulate_rate_limited(name)) for name in ("today", "learned")]
    print(
        f"    {'schedule':<10}{'polls/task':>11}{'delay p50':>11}{'p95':>8}"
        f"{'steady':>10}{'busiest min':>13}{'wait p95':>10}{'found done':>12}{'≤ 15 s before done':>20}"
    )
    for name, figures, (steady, busiest), wait, hit, near in rows:
        print(
            f"    {name:<10}{figures.mean_polls:>11.2f}{figures.delay(50):>10.1f}s"
            f"{figures.delay(95):>7.1f}s{steady:>6.2f} q/s{busiest:>9.2f} q/s{wait:>9.1f}s"
            f"{hit:>12.1%}{near:>20.1%}"
        )
    today, learned = rows[0], rows[1]
    budget = RATE_LIMIT / RATE_HEADROOM
    steady, busiest = learned[2]
    verdict(
        "rate-limited: the planner keeps to the query budget",
        steady <= budget * 1.05 and busiest <= RATE_LIMIT,
        f"steady {steady:.2f} q/s (budget {budget:g} = rate / {RATE_HEADROOM:g}), busiest minute"
        f" {busiest:.2f} q/s (limit {RATE_LIMIT:g}); polls waited for the limiter"
        f" {learned[3]:.2f} s at p95 (today {today[3]:.2f} s)",
    )
    verdict(
        "rate-limited: polls go where finishes are likely",
        learned[5] > today[5] and learned[1].delay(50) < today[1].delay(50),
        f"{learned[5]:.1%} of polls within 15 s before a finish or after it (today {today[5]:.1%}),"
        f" delay p50 {learned[1].delay(50):.1f} s vs {today[1].delay(50):.1f} s",
    )


def simulate_rate_limited(
    name: str,
) -> tuple[Figures, tuple[float, float], float, float, float]:
    """Discrete events: arrivals, polls queued FIFO behind a limiter of RATE_LIMIT per second.

    Returns the figures, the query rate (steady: from 300 s to the last arrival; the busiest
    minute), the p95 wait behind the limiter, the share
    of polls that found the task done and the share sent within 15 s before the finish or after.
    """
    rng = random.Random(12)
    model = warm_model(random.Random(7))
    planner = PollPlanner(
        model,
        PollPolicy(max_gap=POLL_MAX, queries_per_second=RATE_LIMIT, **POLICY),
        uniform=random.Random(13).uniform,
    )
    floor_per_task = 1 / RATE_LIMIT * RATE_HEADROOM  # `_gap_floor` per task at the provider
    arrivals: list[tuple[float, TaskKind, float]] = []
    clock = 0.0
    for _ in range(RATE_TASKS):
        clock += rng.expovariate(RATE_ARRIVALS_PER_SECOND)
        kind, seconds = draw_task(rng)
        arrivals.append((clock, kind, seconds))
    events: list[tuple[float, int, int]] = []  # (due, sequence, task id; negative: the submit)
    sequence = itertools.count()
    for task_id, (start, _, _) in enumerate(arrivals):
        heapq.heappush(events, (start, next(sequence), -(task_id + 1)))
    tasks: dict[int, _RateTask] = {}
    next_free = 0.0
    sent: list[float] = []
    waits: list[float] = []
    figures = Figures()
    hits = near = 0
    while events:
        due, _, task_id = heapq.heappop(events)
        if task_id < 0:  # the submit was answered: the task is at the provider
            task_id = -task_id - 1
            start, kind, seconds = arrivals[task_id]
            task = tasks[task_id] = _RateTask(kind, start, start + seconds)
            if name == "learned":
                planner.track(task_id, kind, start)
                delay = planner.next_poll(task_id, start)
            else:
                delay = task.today_gap(len(tasks) * floor_per_task, rng)
            heapq.heappush(events, (start + delay, next(sequence), task_id))
            continue
        task = tasks[task_id]
        at = max(due, next_free)  # the limiter: first come, first served, evenly spaced
        next_free = at + 1 / RATE_LIMIT
        sent.append(at)
        waits.append(at - due)
        task.polls += 1
        answered = at + QUERY_SECONDS
        near += task.finish - at <= 15.0
        if at >= task.finish:
            hits += 1
            figures.add(Outcome(task.polls, answered - task.finish, answered))
            del tasks[task_id]
            if name == "learned":
                planner.finished(task_id, answered)
            continue
        if name == "learned":
            delay = planner.next_poll(task_id, answered)
        else:
            if at - task.start >= PROCESSING_AFTER and not task.processing:
                task.processing = True
                task.gap = POLL_INTERVAL
            delay = task.today_gap(len(tasks) * floor_per_task, rng)
        heapq.heappush(events, (answered + delay, next(sequence), task_id))
    steady_from, steady_to = 300.0, arrivals[-1][0]
    steady = sum(steady_from <= at < steady_to for at in sent) / (steady_to - steady_from)
    rates = (steady, _busiest(sent, 60.0))
    return figures, rates, percentile(waits, 95), hits / len(sent), near / len(sent)


@dataclass
class _RateTask:
    kind: TaskKind
    start: float
    finish: float
    polls: int = 0
    gap: float = POLL_INTERVAL
    processing: bool = False

    def today_gap(self, floor: float, rng: random.Random) -> float:
        """`_grow_gap` with the rate floor of the tasks now at the provider."""
        gap = self.gap
        self.gap = min(gap * POLL_GROWTH, POLL_MAX)
        base = max(gap, floor)
        return base + rng.uniform(-base * POLL_JITTER, base * POLL_JITTER)


def _busiest(times: list[float], window: float) -> float:
    """The highest rate (per second) in any `window` seconds."""
    ordered = sorted(times)
    best = start = 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best / window


# --- a provider that gets slower ------------------------------------------------------------------


def section_drift() -> None:
    """std 5 s at 70 s, then the provider becomes 1.5× slower: the model follows."""
    print(
        f"\n6. Forgetting: std 5 s tasks at a median of 70 s; from task {DRIFT_AT} on the provider"
        f" is ×{DRIFT_FACTOR:g} slower"
    )
    kind = TaskKind(MODEL, "std", "5")
    rng = random.Random(14)
    model = GenerationTimeModel()
    planner = new_planner(model, seed=14)
    window = Figures()
    for task_id in range(1, DRIFT_TASKS + 1):
        median = 70.0 * (DRIFT_FACTOR if task_id > DRIFT_AT else 1.0)
        finish = median * math.exp(rng.gauss(0.0, SPREAD))
        outcome = new_task(planner, task_id, kind, finish)
        window.add(outcome)
        if task_id % 20 == 0:
            print(
                f"    tasks {task_id - 19:>3}–{task_id:<3} true median {median:>4.0f} s,"
                f" learned {model.distribution(kind).median:>5.1f} s: polls {window.mean_polls:.2f},"
                f" delay p50 {window.delay(50):.1f} s p95 {window.delay(95):.1f} s"
            )
            window = Figures()


def section_spread() -> None:
    """How the mix figures move with the within-kind spread (for information)."""
    print("\n7. Sensitivity to the spread within a kind (σ of ln seconds), mix after warm-up")
    print(
        f"    {'σ':>6}{'polls new':>11}{'today':>8}{'p50 new':>10}{'p95 new':>10}{'p95 today':>11}"
    )
    for spread in (0.05, 0.10, 0.15, 0.20, 0.30):
        model = warm_model(random.Random(7), spread=spread)
        today, new = run_mix(model, 1500, seed=15, spread=spread)
        print(
            f"    {spread:>6.2f}{new.mean_polls:>11.2f}{today.mean_polls:>8.2f}"
            f"{new.delay(50):>9.1f}s{new.delay(95):>9.1f}s{today.delay(95):>10.1f}s"
        )


SECTIONS: tuple[Callable[[], None], ...] = (
    section_sixty_seconds,
    section_mix,
    section_callbacks,
    section_cold,
    section_rate_limited,
    section_drift,
    section_spread,
)


def main() -> int:
    """Run every section; exit 0 (figures are information, not a test)."""
    started = time.perf_counter()
    print("Poll schedules in virtual time: today's (bot/engine.py) vs learned (bot/polling.py)")
    print(
        f"today: first poll {POLL_INTERVAL:g} s, ×{POLL_GROWTH:g} up to {POLL_MAX:g} s, reset on"
        f" processing, ±{POLL_JITTER:.0%} jitter; queries take {QUERY_SECONDS:g} s;"
        f" callbacks arrive {CALLBACK_SECONDS:g} s after the finish"
    )
    mix = ", ".join(
        f"{kind.mode} {kind.duration} s {median:g} s ({share:.0%})" for kind, median, share in MIX
    )
    print(
        f"mix (stated): medians {mix}; log-normal σ = {SPREAD:g} within a kind;"
        f" {STUCK_SHARE:.0%} stuck ×{STUCK_FACTOR[0]:g}–{STUCK_FACTOR[1]:g}"
    )
    print(f"planner: {PollPolicy(max_gap=POLL_MAX, **POLICY)}")
    for section in SECTIONS:
        section()
    passed = sum(ok for _, ok in RESULTS)
    print(f"\n{passed} of {len(RESULTS)} targets met ({time.perf_counter() - started:.0f} s)")
    for name, ok in RESULTS:
        if not ok:
            print(f"  not met: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
