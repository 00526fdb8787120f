"""The poll planner: where polls go, the bounds on gaps, the shared query budget, callbacks."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from bot.polling import PollPlanner, PollPolicy
from bot.timing import GenerationTimeModel, Observation, TaskKind

STD5 = TaskKind("kling-v1-6", "std", "5")
PRO10 = TaskKind("kling-v1-6", "pro", "10")
NO_JITTER = PollPolicy(jitter=0.0)


def model_with(kind: TaskKind, median: float, count: int = 30, spread: float = 0.1):
    """A model that has seen `count` tasks of `kind` around `median` seconds."""
    rng = random.Random(3)
    model = GenerationTimeModel()
    for _ in range(count):
        model.observe(Observation(kind, median * math.exp(rng.gauss(0.0, spread))))
    return model


def gaps(times: list[float]) -> list[float]:
    """The gaps of a schedule, the first from the submit."""
    return [b - a for a, b in zip([0.0, *times], times, strict=False)]


def polls_between(times: list[float], start: float, end: float) -> int:
    """How many polls fall in [start, end)."""
    return sum(start <= t < end for t in times)


# --- one task ---


@pytest.mark.parametrize("median", [None, 30.0, 60.0, 180.0, 900.0])
def test_the_schedule_rises_and_every_gap_is_within_the_bounds(median: float | None) -> None:
    model = GenerationTimeModel() if median is None else model_with(STD5, median)
    policy = PollPolicy(min_gap=2.0, max_gap=60.0, jitter=0.0)
    schedule = PollPlanner(model, policy).schedule(STD5, until=3600.0)
    assert schedule == sorted(schedule) and len(set(schedule)) == len(schedule)
    for gap in gaps(schedule):
        assert policy.min_gap - 1e-9 <= gap <= policy.max_gap + 1e-9
    assert 3600.0 - schedule[-1] <= policy.max_gap  # never silent for longer than the max gap


def test_polls_are_dense_where_tasks_finish_and_sparse_before() -> None:
    model = model_with(STD5, 120.0)
    distribution = model.distribution(STD5)
    start, end = distribution.quantile(0.1), distribution.quantile(0.9)
    schedule = PollPlanner(model, NO_JITTER).schedule(STD5, until=600.0)
    before = polls_between(schedule, 0.0, start) / start
    window = polls_between(schedule, start, end) / (end - start)
    assert window > 4 * before
    window_gaps = [b - a for a, b in itertools.pairwise(schedule) if start <= a < end]
    assert max(window_gaps) <= 10.0  # a finish in the window is noticed within seconds
    assert gaps(schedule)[0] > 30.0  # nothing is spent in the first half-minute


def test_the_long_tail_backs_off_to_the_max_gap() -> None:
    model = model_with(STD5, 60.0)
    policy = PollPolicy(max_gap=60.0, jitter=0.0)
    schedule = PollPlanner(model, policy).schedule(STD5, until=1800.0)
    late = [t for t in schedule if t > 300.0]
    late_gaps = [b - a for a, b in itertools.pairwise(late)]
    assert late_gaps and all(b >= a - 1e-6 for a, b in itertools.pairwise(late_gaps))
    assert late_gaps[-1] == pytest.approx(60.0)
    dense = min(gaps(schedule))
    assert dense < 6.0  # much denser around the minute than in the tail


def test_a_finish_at_the_usual_time_is_noticed_within_a_few_seconds() -> None:
    model = model_with(STD5, 60.0)
    schedule = PollPlanner(model, NO_JITTER).schedule(STD5, until=600.0)
    for finish in (50.0, 55.0, 60.0, 65.0, 70.0):
        noticed = next(t for t in schedule if t >= finish)
        assert noticed - finish <= 5.0
    assert polls_between(schedule, 0.0, 65.0) <= 7


def test_next_poll_respects_min_and_max_gap_at_any_elapsed_time() -> None:
    model = model_with(STD5, 60.0)
    policy = PollPolicy(min_gap=3.0, max_gap=45.0)
    planner = PollPlanner(model, policy)
    planner.track(1, STD5, submitted_at=1_000_000.0)
    for elapsed in (0.0, 1.0, 30.0, 58.0, 60.0, 75.0, 400.0, 1e5):
        gap = planner.next_poll(1, 1_000_000.0 + elapsed)
        assert 3.0 <= gap <= 45.0


def test_jitter_stays_within_its_share() -> None:
    model = model_with(STD5, 60.0)
    plain = PollPlanner(model, PollPolicy(jitter=0.0))
    low = PollPlanner(model, PollPolicy(jitter=0.02), uniform=lambda a, b: a)
    high = PollPlanner(model, PollPolicy(jitter=0.02), uniform=lambda a, b: b)
    for planner in (plain, low, high):
        planner.track(7, STD5, 0.0)
    base = plain.next_poll(7, 40.0)
    assert low.next_poll(7, 40.0) == pytest.approx(base * 0.98)
    assert high.next_poll(7, 40.0) == pytest.approx(base * 1.02)


def test_an_untracked_task_still_gets_a_sane_gap() -> None:
    planner = PollPlanner(GenerationTimeModel(), PollPolicy())
    assert PollPolicy().min_gap <= planner.next_poll(404, 123.0) <= PollPolicy().max_gap


def test_each_kind_is_polled_by_its_own_times() -> None:
    model = model_with(STD5, 60.0)
    for _ in range(30):
        model.observe(Observation(PRO10, 300.0))
    planner = PollPlanner(model, NO_JITTER)
    quick, slow = planner.schedule(STD5, 400.0), planner.schedule(PRO10, 400.0)
    assert polls_between(quick, 50.0, 75.0) > polls_between(slow, 50.0, 75.0)
    assert polls_between(slow, 280.0, 320.0) > polls_between(quick, 280.0, 320.0)


@pytest.mark.parametrize("value", [{"min_gap": 0.0}, {"min_gap": 70.0}, {"poll_cost": 0.0}])
def test_a_policy_that_cannot_make_a_schedule_is_refused(value: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PollPolicy(**value)  # type: ignore[arg-type]


# --- many tasks, one budget ---


def spread_tasks(planner: PollPlanner, count: int, now: float) -> None:
    """`count` std 5 s tasks at the provider, submitted evenly over the last 150 s."""
    for task_id in range(count):
        planner.track(task_id, STD5, submitted_at=now - 150.0 * task_id / count)


def planned_rate(planner: PollPlanner, count: int, now: float) -> float:
    """Polls per second the planner asks for right now (each task: one poll per next gap)."""
    return sum(1.0 / planner.next_poll(task_id, now) for task_id in range(count))


def test_without_a_budget_many_tasks_would_ask_for_more_than_the_rate() -> None:
    model = model_with(STD5, 60.0)
    planner = PollPlanner(model, NO_JITTER)
    spread_tasks(planner, 100, now=10_000.0)
    assert planned_rate(planner, 100, 10_000.0) > 5.0


def test_a_shared_budget_is_respected_and_goes_where_finishes_are_likely() -> None:
    model = model_with(STD5, 60.0)
    policy = PollPolicy(queries_per_second=5.0, rate_headroom=1.25, jitter=0.0)
    planner = PollPlanner(model, policy)
    now = 10_000.0
    spread_tasks(planner, 100, now)
    # The budget is the rate less its headroom; the gaps planned now stay within the rate.
    assert planned_rate(planner, 100, now) <= 5.0
    # Task i was submitted 1.5·i seconds ago: those near a minute in wait least.
    near_finish = [planner.next_poll(i, now) for i in range(100) if 52.0 <= 1.5 * i <= 68.0]
    unlikely = [planner.next_poll(i, now) for i in range(100) if 1.5 * i <= 20.0]
    assert max(near_finish) < min(unlikely)


def test_over_budget_every_task_gets_an_equal_share_beyond_the_max_gap() -> None:
    model = model_with(STD5, 60.0)
    policy = PollPolicy(queries_per_second=5.0, rate_headroom=1.25, max_gap=60.0, jitter=0.0)
    planner = PollPlanner(model, policy)
    spread_tasks(planner, 1000, now=5000.0)
    share = 1000 / policy.budget  # type: ignore[operator]
    for task_id in (0, 400, 999):
        assert planner.next_poll(task_id, 5000.0) == pytest.approx(share)


def test_forgetting_tasks_frees_their_share() -> None:
    model = model_with(STD5, 60.0)
    policy = PollPolicy(queries_per_second=5.0, jitter=0.0)
    planner = PollPlanner(model, policy)
    spread_tasks(planner, 1000, now=5000.0)
    crowded = planner.next_poll(0, 5000.0)
    for task_id in range(1, 1000):
        planner.forget(task_id)
    assert len(planner) == 1 and 0 in planner
    assert planner.tracked(5000.0) == [(STD5, pytest.approx(0.0))]
    assert planner.next_poll(0, 5000.0) < crowded


# --- callbacks ---


def test_with_callbacks_a_task_is_polled_once_when_it_is_very_likely_done() -> None:
    model = model_with(STD5, 60.0)
    policy = PollPolicy(callbacks=True, jitter=0.0)
    planner = PollPlanner(model, policy)
    distribution = model.distribution(STD5)
    schedule = planner.schedule(STD5, until=1800.0)
    assert schedule[0] >= distribution.quantile(0.95)
    assert polls_between(schedule, 0.0, distribution.quantile(0.99)) <= 1
    for gap in gaps(schedule)[1:]:
        assert policy.max_gap <= gap <= policy.callback_max_gap + 1e-9
    # Without callbacks the same task is polled several times before then.
    plain = PollPlanner(model, NO_JITTER).schedule(STD5, until=1800.0)
    assert polls_between(plain, 0.0, distribution.quantile(0.99)) >= 4


def test_with_callbacks_and_no_history_the_safety_poll_is_bounded() -> None:
    policy = PollPolicy(callbacks=True, callback_max_gap=300.0, jitter=0.0)
    planner = PollPlanner(GenerationTimeModel(), policy)
    planner.track(1, PRO10, 0.0)
    assert policy.max_gap <= planner.next_poll(1, 0.0) <= 300.0


# --- learning from finished tasks ---


def test_a_finish_found_by_a_poll_is_learned_at_the_middle_of_the_last_gap() -> None:
    model = GenerationTimeModel()
    planner = PollPlanner(model, NO_JITTER)
    planner.track(1, STD5, submitted_at=1000.0)
    planner.next_poll(1, 1000.0 + 56.0)  # still running at 56 s
    observation = planner.finished(1, noticed_at=1000.0 + 60.0)
    assert observation is not None and observation.seconds == pytest.approx(58.0)
    assert model.count(STD5) == 1 and 1 not in planner


def test_a_finish_told_by_a_callback_is_learned_at_the_callback() -> None:
    model = GenerationTimeModel()
    planner = PollPlanner(model, PollPolicy(callbacks=True, jitter=0.0))
    planner.track(1, STD5, submitted_at=0.0)
    planner.next_poll(1, 0.0)
    observation = planner.finished(1, noticed_at=71.3, callback_at=71.0)
    assert observation is not None and observation.seconds == pytest.approx(71.0)


def test_a_vague_finish_teaches_nothing() -> None:
    """Found done long after the last look (a restart, a lost callback): the poll schedule, not
    the generation, decided that time, so learning it would feed the schedule back to itself."""
    model = GenerationTimeModel()
    planner = PollPlanner(model, NO_JITTER)
    planner.track(1, STD5, submitted_at=0.0)
    planner.next_poll(1, 0.0)  # the submit's answer: the last time it was seen running
    assert planner.finished(1, noticed_at=180.0) is None
    assert model.count() == 0
    planner.forget(2)  # forgetting what isn't tracked is harmless
    assert planner.finished(2, noticed_at=10.0) is None


def test_lost_callbacks_are_noticed_and_tasks_are_polled_as_without_them() -> None:
    model = model_with(STD5, 60.0)
    planner = PollPlanner(model, PollPolicy(callbacks=True, jitter=0.0))
    safety = planner.schedule(STD5, until=600.0)[0]
    for task_id in range(3):  # three tasks in a row found done by the safety poll
        assert planner.callbacks_trusted
        planner.track(task_id, STD5, submitted_at=0.0)
        planner.next_poll(task_id, 0.0)
        planner.finished(task_id, noticed_at=safety)
    assert not planner.callbacks_trusted
    assert planner.schedule(STD5, until=600.0)[0] < safety  # polling as without callbacks
    planner.track(9, STD5, submitted_at=0.0)
    planner.finished(9, noticed_at=61.0, callback_at=60.5)  # a callback came again
    assert planner.callbacks_trusted
