"""What the user is told about when their video will be ready: figures, flags and words."""

from __future__ import annotations

import math
import random

import pytest

from bot.eta import (
    BAR_DONE,
    BAR_TO_GO,
    EstimateBasis,
    basis_text,
    estimate_queued,
    estimate_running,
    minutes,
    next_finish,
    next_slot_text,
    progress_bar,
    queued_text,
    remaining_median,
    running_text,
)
from bot.strings import EN, NL
from bot.timing import GenerationTimeModel, Observation, TaskKind

STD5 = TaskKind("kling-v1-6", "std", "5")
PRO10 = TaskKind("kling-v1-6", "pro", "10")


def model_with(kind: TaskKind, median: float, count: int = 20, spread: float = 0.08):
    """A model that has seen `count` tasks of `kind` around `median` seconds."""
    rng = random.Random(5)
    model = GenerationTimeModel()
    for _ in range(count):
        model.observe(Observation(kind, median * math.exp(rng.gauss(0.0, spread))))
    return model


# --- a running task ---


def test_without_history_the_estimate_says_it_is_a_first_guess() -> None:
    estimate = estimate_running(GenerationTimeModel(), STD5, 10.0)
    assert estimate.basis is EstimateBasis.PRIOR and estimate.history == 0
    assert estimate.remaining is not None and estimate.remaining > 60.0  # the prior: ~2 min
    assert EN["eta.basis_prior"] in running_text("en-US", estimate)
    assert NL["eta.basis_prior"] in running_text("nl", estimate)


def test_with_history_the_estimate_names_how_many_tasks_it_rests_on() -> None:
    estimate = estimate_running(model_with(STD5, 120.0), STD5, 30.0)
    assert estimate.basis is EstimateBasis.HISTORY and estimate.history == 20
    words = running_text("en-US", estimate)
    assert "last 20 videos" in words
    assert "About 2 min left" in words or "About 1 min left" in words


def test_one_finished_video_is_said_in_words_that_fit_one() -> None:
    words = basis_text("en-US", EstimateBasis.HISTORY, 1)
    assert words == "From the last video like this (the only one so far)."
    assert "1 video's" not in basis_text("nl", EstimateBasis.HISTORY, 1)


def test_a_kind_not_seen_yet_borrows_from_others_and_says_so() -> None:
    estimate = estimate_running(model_with(STD5, 60.0), PRO10, 10.0)
    assert estimate.basis is EstimateBasis.OTHER_KINDS
    assert EN["eta.basis_other"] in running_text("en", estimate)


def test_time_left_shrinks_and_progress_grows_while_the_task_runs_as_usual() -> None:
    model = model_with(STD5, 120.0)
    estimates = [estimate_running(model, STD5, t) for t in (0.0, 30.0, 60.0, 90.0, 110.0)]
    remaining = [e.remaining for e in estimates]
    progress = [e.progress for e in estimates]
    assert all(r is not None for r in remaining) and all(p is not None for p in progress)
    assert remaining == sorted(remaining, reverse=True)  # type: ignore[type-var]
    assert progress == sorted(progress)  # type: ignore[type-var]
    assert progress[0] == 0.0 and all(0.0 <= p < 1.0 for p in progress)  # type: ignore[operator]
    # At the start the expected total is the median of the kind.
    assert estimates[0].remaining == pytest.approx(model.distribution(STD5).median)


def test_past_the_usual_time_it_says_longer_than_usual_without_a_bar() -> None:
    model = model_with(STD5, 120.0)
    usual = estimate_running(model, STD5, 0.0).usual
    assert usual == pytest.approx(model.distribution(STD5).quantile(0.9))
    late = estimate_running(model, STD5, usual + 1.0)
    assert late.late and late.remaining is None and late.progress is None
    words = running_text("en", late)
    assert "Taking longer than usual" in words
    assert BAR_DONE not in words and BAR_TO_GO not in words
    assert "Duurt langer dan gewoonlijk" in running_text("nl", late)
    assert not estimate_running(model, STD5, usual - 1.0).late


def test_a_live_time_from_the_caller_replaces_the_minutes() -> None:
    model = model_with(STD5, 120.0)
    estimate = estimate_running(model, STD5, 30.0)
    assert estimate.total is not None and estimate.remaining is not None
    assert estimate.total == pytest.approx(30.0 + estimate.remaining)
    words = running_text("en", estimate, when="<t:1700000090:R>")
    assert "Likely ready <t:1700000090:R>" in words and "min left" not in words
    assert "Waarschijnlijk klaar <t:1" in running_text("nl", estimate, when="<t:1:R>")
    late = estimate_running(model, STD5, 10_000.0)
    assert "Taking longer than usual" in running_text("en", late, when="<t:1:R>")
    queued = estimate_queued(model, STD5, ahead=[STD5] * 3, running=[(STD5, 0.0)], slots=1)
    assert queued_text("en", queued, when="<t:2:R>").startswith("Likely to start <t:2:R>")


def test_the_last_minute_is_said_as_such() -> None:
    model = model_with(STD5, 120.0)
    estimate = estimate_running(model, STD5, 100.0)
    assert estimate.remaining is not None and estimate.remaining < 45.0
    assert "Less than a minute left" in running_text("en", estimate)
    assert "Nog minder dan een minuut" in running_text("nl", estimate)


# --- words and the bar ---


@pytest.mark.parametrize(
    ("fraction", "filled"), [(0.0, 0), (0.05, 0), (0.34, 3), (0.5, 5), (0.95, 9), (0.999, 9)]
)
def test_the_bar_shows_the_fraction_and_is_never_full(fraction: float, filled: int) -> None:
    bar = progress_bar(fraction)
    assert len(bar) == 10
    assert bar == BAR_DONE * filled + BAR_TO_GO * (10 - filled)


@pytest.mark.parametrize(("seconds", "expected"), [(10, 1), (89, 1), (91, 2), (150, 2), (600, 10)])
def test_minutes_round_and_never_say_zero(seconds: float, expected: int) -> None:
    assert minutes(seconds) == expected


def test_next_slot_words() -> None:
    assert next_slot_text("en", 20.0) == "within a minute"
    assert next_slot_text("en", 300.0) == "in about 5 min"
    assert next_slot_text("nl", 300.0) == "over ongeveer 5 min"


def test_every_estimate_string_exists_in_both_languages_with_the_same_placeholders() -> None:
    import string

    keys = [key for key in EN if key.startswith("eta.")] + ["status.estimate"]
    assert len(keys) >= 10
    for key in keys:
        fields = {name for _, name, _, _ in string.Formatter().parse(EN[key]) if name}
        dutch = {name for _, name, _, _ in string.Formatter().parse(NL[key]) if name}
        assert fields == dutch, key


# --- the queue ---


def test_a_queued_task_starts_when_a_slot_frees() -> None:
    model = model_with(STD5, 60.0)
    median = model.distribution(STD5).median
    # Two slots, both busy with tasks that just started; nobody else ahead.
    first = estimate_queued(model, STD5, ahead=[], running=[(STD5, 0.0), (STD5, 0.0)], slots=2)
    assert first.position == 1
    assert first.starts_in == pytest.approx(median, rel=0.01)
    assert first.ready_in == pytest.approx(2 * median, rel=0.01)
    # Two more ahead take the two freed slots; this one waits for the next round.
    third = estimate_queued(
        model, STD5, ahead=[STD5, STD5], running=[(STD5, 0.0), (STD5, 0.0)], slots=2
    )
    assert third.position == 3
    assert third.starts_in == pytest.approx(2 * median, rel=0.01)
    assert third.basis is EstimateBasis.HISTORY and third.history == 20


def test_a_queued_task_with_a_free_slot_starts_at_once() -> None:
    estimate = estimate_queued(GenerationTimeModel(), STD5, ahead=[], running=[], slots=2)
    assert estimate.starts_in == 0.0
    assert estimate.basis is EstimateBasis.PRIOR
    assert queued_text("en", estimate).startswith("Likely to start within a minute")


def test_a_long_queue_says_minutes_in_both_languages() -> None:
    model = model_with(STD5, 60.0)
    estimate = estimate_queued(model, STD5, ahead=[STD5] * 9, running=[(STD5, 30.0)], slots=1)
    assert estimate.starts_in > 9 * 55.0
    assert "Likely to start in about" in queued_text("en", estimate)
    assert "Begint waarschijnlijk over ongeveer" in queued_text("nl", estimate)


# --- the next free slot ---


def test_next_finish_is_the_median_of_the_earliest_finish() -> None:
    model = model_with(STD5, 60.0)
    assert next_finish(model, []) is None
    alone = next_finish(model, [(STD5, 20.0)])
    assert alone == pytest.approx(remaining_median(model, STD5, 20.0), rel=1e-3)
    both = next_finish(model, [(STD5, 20.0), (STD5, 20.0)])
    assert both is not None and alone is not None and both < alone  # two chances to finish
    later = next_finish(model, [(STD5, 20.0), (STD5, 50.0)])
    assert later is not None and later <= remaining_median(model, STD5, 50.0)
