"""Properties of the Kling client over arbitrary answers from a hostile peer (hypothesis).

Whatever a peer sends (any status, headers, body, framing, gzip, cut into any writes), the
client ends with a task or one of its own errors, never a foreign exception; and a valid task
answer is read as that task however it arrives. `make test` runs a modest number of examples;
the 5,000-answer run is marked slow (and `benchmarks/bench_client_fuzz.py` prints its counts).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.kling.models import KlingTask
from tests.fakes.hostile_http import (
    ClientHarness,
    Operation,
    RawAnswer,
    fuzz_client,
    is_foreign,
    raw_answers,
    read_valid_answers,
    valid_answers,
)

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
operations = st.sampled_from(["query", "submit"])


@pytest.fixture(scope="module")
def harness() -> Iterator[ClientHarness]:
    """One hostile peer and client for the module, on their own event loop."""
    logging.getLogger("bot.kling.client").setLevel(logging.ERROR)  # lookups log a warning each
    try:
        with ClientHarness() as running:
            yield running
    finally:
        logging.getLogger("bot.kling.client").setLevel(logging.NOTSET)


@PROPERTY
@given(answer=raw_answers(), operation=operations)
def test_every_answer_ends_as_a_task_or_the_clients_own_error(
    harness: ClientHarness, answer: RawAnswer, operation: Operation
) -> None:
    outcome = harness.ask(answer, operation)
    assert not is_foreign(outcome), f"{outcome!r} escaped for {answer!r:.500}"


@settings(PROPERTY, max_examples=60)  # answers up to 1.5 MB: fewer here, 500 in the slow run
@given(case=valid_answers(), operation=operations)
def test_a_valid_answer_is_read_however_it_arrives(
    harness: ClientHarness, case: tuple[str, RawAnswer], operation: Operation
) -> None:
    task_id, answer = case
    outcome = harness.ask(answer, operation)
    assert isinstance(outcome, KlingTask), f"{outcome!r} for {answer!r:.500}"
    assert outcome.task_id == task_id


@pytest.mark.slow
def test_5000_arbitrary_answers_raise_no_foreign_exception(harness: ClientHarness) -> None:
    report = fuzz_client(harness, 5000)
    assert report.answers >= 5000
    assert report.foreign == []


@pytest.mark.slow
def test_500_valid_answers_are_all_read(harness: ClientHarness) -> None:
    assert read_valid_answers(harness, 500, seed=1) == (500, 500)
