"""The crash soak (slow): 40 requests from 6 users, 12+ SIGKILLs at chosen and random moments.

Run with `make slow`. Each seed prints its figures; every request must end with exactly one
visible answer — nothing lost, nothing submitted or delivered twice.
"""

from __future__ import annotations

import pytest

from tests.e2e.soak import run_soak


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_crash_soak_loses_nothing_and_does_nothing_twice(
    seed: int, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await run_soak(seed, requests=40, kills=12, users=6)
    with capsys.disabled():
        print("\n" + report.summary())
        for line in report.details:
            print("   ", line)
    assert report.kills >= 8 and report.by_kind.get("intake") and report.by_kind.get("notice")
    assert report.clean, report.details
    assert report.acknowledged + report.unacknowledged == report.requests
