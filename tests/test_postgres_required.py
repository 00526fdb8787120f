"""Without a PostgreSQL server the PostgreSQL half of the suite is skipped, loudly; with
KVB_REQUIRE_POSTGRES=1 (as `.ci/run` sets it) the same run fails, so a skip never passes for
green in CI. Both are checked by running a small part of the suite against a closed port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import REQUIRE_ENV, URL_ENV

REPO = Path(__file__).resolve().parents[1]
NOBODY = "postgresql://postgres@127.0.0.1:1/test"  # port 1: nothing listens there


def _run_suite_part(require: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (REQUIRE_ENV, URL_ENV)}
    env[URL_ENV] = NOBODY
    if require is not None:
        env[REQUIRE_ENV] = require
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/bot/store/test_guilds.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_without_a_server_the_postgresql_half_is_skipped_loudly() -> None:
    run = _run_suite_part(require=None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped" in run.stdout and "passed" in run.stdout
    assert "THE POSTGRESQL HALF OF THE SUITE DID NOT RUN" in run.stdout
    assert NOBODY in run.stdout


@pytest.mark.parametrize("require", ["1", "true"])
def test_in_ci_a_missing_server_fails_the_run(require: str) -> None:
    run = _run_suite_part(require=require)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{REQUIRE_ENV} is set" in run.stdout
    assert "error" in run.stdout.splitlines()[-1]  # the summary line counts the errors
