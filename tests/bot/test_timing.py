"""Generation times: the prior, learning, robustness to outliers, forgetting, the maths."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from bot.timing import (
    MAX_SECONDS,
    PRIOR_SIGMA,
    TAIL_PRIOR,
    GenerationTime,
    GenerationTimeModel,
    Observation,
    TaskKind,
    prior_distribution,
)

STD5 = TaskKind("kling-v1-6", "std", "5")
STD10 = TaskKind("kling-v1-6", "std", "10")
PRO5 = TaskKind("kling-v1-6", "pro", "5")
PRO10 = TaskKind("kling-v1-6", "pro", "10")


def times(median: float, count: int, *, spread: float = 0.1, seed: int = 0) -> list[float]:
    """`count` log-normal generation times around `median`."""
    rng = random.Random(seed)
    return [median * math.exp(rng.gauss(0.0, spread)) for _ in range(count)]


def learned(kind: TaskKind, seconds: list[float], model: GenerationTimeModel | None = None):
    """A model that has seen `seconds` for `kind`, oldest first."""
    model = model or GenerationTimeModel()
    for value in seconds:
        model.observe(Observation(kind, value))
    return model


# --- the kind and the prior ---


def test_kind_from_stored_options_uses_the_defaults_for_what_is_missing() -> None:
    assert TaskKind.of("kling-v1-6", {}) == STD5
    assert TaskKind.of("kling-v1-6", {"mode": "pro", "duration": "10"}) == PRO10
    assert TaskKind.of("kling-v1-6", {"mode": None, "duration": 10}) == STD10


def test_an_empty_model_answers_with_the_prior() -> None:
    model = GenerationTimeModel()
    for kind in (STD5, STD10, PRO5, PRO10):
        distribution = model.distribution(kind)
        assert distribution == prior_distribution(kind)
        assert distribution.history == 0 and distribution.other_history == 0
        assert distribution.body_sigma == PRIOR_SIGMA and distribution.tail_share == TAIL_PRIOR


def test_the_prior_says_two_minutes_for_std_5s_and_longer_for_pro_and_10s() -> None:
    medians = {kind: prior_distribution(kind).body_mu for kind in (STD5, STD10, PRO5, PRO10)}
    assert math.exp(medians[STD5]) == pytest.approx(120.0)
    assert medians[STD5] < medians[STD10] < medians[PRO10]
    assert medians[STD5] < medians[PRO5] < medians[PRO10]
    # Wide: the middle 80 % of a std 5 s task spans more than a factor 3.
    prior = prior_distribution(STD5)
    assert prior.quantile(0.9) / prior.quantile(0.1) > 3.0


def test_an_unknown_duration_or_mode_still_gets_a_sensible_prior() -> None:
    assert TaskKind("m", "std", "15").prior_median() == pytest.approx(3 * 120.0)
    assert TaskKind("m", "ultra", "5").prior_median() >= TaskKind("m", "pro", "5").prior_median()
    assert TaskKind("m", "std", "soon").prior_median() > 0


# --- learning ---


def test_twenty_alike_tasks_pull_the_estimate_to_them() -> None:
    model = learned(STD5, times(60.0, 20))
    distribution = model.distribution(STD5)
    assert distribution.history == 20
    assert distribution.median == pytest.approx(60.0, rel=0.06)
    assert distribution.body_sigma < 0.2  # far narrower than the prior's 0.5
    assert distribution.quantile(0.9) < 80.0


def test_a_single_task_moves_the_centre_but_not_the_spread() -> None:
    model = learned(STD5, [60.0])
    distribution = model.distribution(STD5)
    prior = prior_distribution(STD5)
    assert 60.0 < math.exp(distribution.body_mu) < 120.0
    assert distribution.body_sigma >= prior.body_sigma  # one task says nothing about spread


def test_outliers_move_neither_the_centre_nor_the_spread_but_feed_the_tail() -> None:
    clean = learned(STD5, times(60.0, 40))
    dirty_times = times(60.0, 40)
    for index in (5, 13, 22, 31):  # one task in ten is stuck for 25 minutes, one took 2 s
        dirty_times[index] = 1500.0
    dirty_times[17] = 2.0
    dirty = learned(STD5, dirty_times)
    clean_fit, dirty_fit = clean.distribution(STD5), dirty.distribution(STD5)
    assert math.exp(dirty_fit.body_mu) == pytest.approx(math.exp(clean_fit.body_mu), rel=0.05)
    assert dirty_fit.body_sigma < 1.5 * clean_fit.body_sigma
    assert dirty_fit.tail_share > clean_fit.tail_share
    # A plain mean would have been dragged far off; the median stays near a minute.
    assert statistics_mean(dirty_times) > 150.0
    assert dirty_fit.median < 70.0


def statistics_mean(values: list[float]) -> float:
    """The plain mean, for contrast."""
    return sum(values) / len(values)


def test_forgetting_follows_a_provider_that_gets_slower() -> None:
    model = learned(STD5, times(60.0, 100, seed=1))
    assert model.distribution(STD5).median == pytest.approx(60.0, rel=0.06)
    learned(STD5, times(120.0, 15, seed=2), model)
    partly = model.distribution(STD5).median
    learned(STD5, times(120.0, 30, seed=3), model)  # one half-life of the new speed
    mostly = model.distribution(STD5).median
    assert 60.0 < partly < mostly
    assert mostly == pytest.approx(120.0, rel=0.1)


def test_without_forgetting_old_history_would_hold_it_back() -> None:
    """The same data with a very long half-life: the shift is followed much later."""
    data = times(60.0, 100, seed=1) + times(120.0, 30, seed=2)
    forgetting = learned(STD5, data).distribution(STD5).median
    stubborn = learned(STD5, data, GenerationTimeModel(half_life=10_000)).distribution(STD5).median
    assert stubborn < 80.0 < forgetting


def test_history_of_one_kind_moves_the_prior_of_kinds_not_seen_yet() -> None:
    model = learned(STD5, times(60.0, 30))  # the provider runs 2× faster than the prior
    unseen = model.distribution(PRO10)
    assert unseen.history == 0 and unseen.other_history == 30
    assert unseen.median < 0.8 * prior_distribution(PRO10).median
    assert unseen.body_sigma == PRIOR_SIGMA  # its spread is still unknown


def test_kinds_are_learned_apart() -> None:
    model = learned(STD5, times(60.0, 30))
    learned(PRO10, times(240.0, 30, seed=4), model)
    assert model.distribution(STD5).median == pytest.approx(60.0, rel=0.06)
    assert model.distribution(PRO10).median == pytest.approx(240.0, rel=0.06)
    assert model.count(STD5) == 30 and model.count() == 60


def test_from_observations_is_observing_in_order_and_skips_what_is_not_a_time() -> None:
    rows = [Observation.from_times(STD5, 1000.0, 1000.0 + seconds) for seconds in times(60.0, 25)]
    rows += [
        Observation.from_times(STD5, None, 50.0),
        Observation.from_times(STD5, 100.0, None),
        Observation.from_times(STD5, 100.0, 90.0),  # finished before it was sent
        Observation.from_times(STD5, 0.0, MAX_SECONDS * 2),  # a task resumed days later
        Observation.from_times(STD5, 0.0, math.nan),
    ]
    assert rows[-5:] == [None] * 5
    built = GenerationTimeModel.from_observations(rows)
    fed = learned(STD5, times(60.0, 25))
    assert built.count() == 25
    built_fit, fed_fit = built.distribution(STD5), fed.distribution(STD5)
    assert built_fit.body_mu == pytest.approx(fed_fit.body_mu)
    assert built_fit.body_sigma == pytest.approx(fed_fit.body_sigma)
    assert built_fit.tail_share == pytest.approx(fed_fit.tail_share)


def test_history_is_bounded() -> None:
    model = GenerationTimeModel(max_history=50)
    learned(STD5, times(60.0, 200), model)
    assert model.count() == 50


def test_identical_times_keep_a_small_spread() -> None:
    """A fake provider that always takes 30 s: narrow, but never a zero-width spike."""
    distribution = learned(STD5, [30.0] * 40).distribution(STD5)
    assert 0.0 < distribution.body_sigma < 0.1
    assert math.isfinite(distribution.hazard(30.0)) and distribution.hazard(30.0) > 0


# --- the maths of a distribution ---


@pytest.mark.parametrize(
    "distribution",
    [
        prior_distribution(STD5),
        GenerationTime(math.log(60.0), 0.05, 0.01, 40),
        GenerationTime(math.log(300.0), 0.8, 0.2, 3),
    ],
)
def test_distribution_functions_agree(distribution: GenerationTime) -> None:
    grid = [1.0, 5.0, 20.0, 45.0, 60.0, 90.0, 200.0, 1000.0, 10_000.0]
    survivals = [distribution.survival(t) for t in grid]
    assert all(a >= b for a, b in itertools.pairwise(survivals))
    for t in grid:
        assert distribution.cdf(t) + distribution.survival(t) == pytest.approx(1.0)
        assert distribution.density(t) >= 0.0
        hazard = distribution.hazard(t)
        assert math.isfinite(hazard) and hazard >= 0.0
    for p in (0.05, 0.5, 0.9, 0.99):
        assert distribution.cdf(distribution.quantile(p)) == pytest.approx(p, abs=1e-6)
    # The density integrates to the CDF (trapezoids on a fine log grid).
    points = [math.exp(x / 200.0) for x in range(0, 200 * 9)]
    area = sum(
        (b - a) * 0.5 * (distribution.density(a) + distribution.density(b))
        for a, b in itertools.pairwise(points)
    )
    assert area == pytest.approx(distribution.cdf(points[-1]) - distribution.cdf(1.0), abs=2e-3)


def test_conditional_quantiles_start_at_the_elapsed_time() -> None:
    distribution = GenerationTime(math.log(60.0), 0.1, 0.02, 20)
    assert distribution.quantile(0.5, given_elapsed=30.0) == pytest.approx(
        distribution.median, rel=0.01
    )
    later = distribution.quantile(0.5, given_elapsed=90.0)
    assert later > 90.0
    assert distribution.quantile(0.5, given_elapsed=10_000.0) > 10_000.0
    with pytest.raises(ValueError):
        distribution.quantile(1.0)


def test_far_in_the_tail_the_hazard_stays_finite_and_positive() -> None:
    distribution = GenerationTime(math.log(60.0), 0.03, 0.01, 50)
    for t in (120.0, 600.0, 86_400.0, 1e7):
        hazard = distribution.hazard(t)
        assert 0.0 < hazard < 1.0
