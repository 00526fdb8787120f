"""Property tests for intake over mutated files: the only outcomes are an accepted
image whose bytes fully decode, or ImageIntakeError. The long run (20,000 files) is marked slow;
benchmarks/bench_images_fuzz.py prints the same figures."""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.images import InspectionPool, PreparedImage
from tests.bot.images.hostile_images import (
    FuzzTally,
    fuzz_seeds,
    inspect_in_process,
    judge,
    mutate,
    mutated_files,
)

SEEDS = fuzz_seeds()


@pytest.fixture(autouse=True)
def quiet_pillow() -> Iterator[None]:
    """Pillow warns about odd metadata in mutated files; the outcome is what is judged."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def assert_sound(tally: FuzzTally) -> None:
    """No foreign exception, nothing accepted that doesn't decode."""
    assert tally.foreign == []
    assert tally.undecodable == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), rng=st.randoms(use_true_random=False))
def test_mutated_files_give_a_decodable_image_or_an_intake_error(
    seed: int, rng: random.Random
) -> None:
    tally = FuzzTally()
    judge(tally, mutate(rng, SEEDS[seed]), inspect_in_process)
    assert_sound(tally)


def test_unmutated_seeds_are_all_accepted() -> None:
    tally = FuzzTally()
    for data in SEEDS:
        judge(tally, data, inspect_in_process)
    assert (tally.accepted, tally.refused) == (len(SEEDS), 0)
    assert_sound(tally)


def test_mutated_files_through_the_worker_pool() -> None:
    pool = InspectionPool(2)
    try:

        def through_pool(data: bytes) -> PreparedImage:
            return pool.inspect_blocking(1, "fuzz", data)

        tally = FuzzTally()
        for data in mutated_files(150, seed=7):
            judge(tally, data, through_pool)
    finally:
        pool.close()
    assert_sound(tally)
    assert tally.accepted > 10 and tally.refused > 10  # both outcomes were exercised
    assert not {figures.outcome for figures in pool.figures} - {"image", "problems"}


@pytest.mark.slow
def test_twenty_thousand_mutated_files() -> None:
    tally = FuzzTally()
    for data in mutated_files(20_000):
        judge(tally, data, inspect_in_process)
    print(f"accepted {tally.accepted}, refused {tally.refused}")
    assert_sound(tally)
