"""Fixtures every test may use: the PostgreSQL server (see `tests/postgres.py`), and a fresh
database on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import REQUIRE_ENV, URL_ENV, PostgresServer, admin_url, required

#: Why the PostgreSQL half of this run could not run (None: it could, or nobody asked).
_unavailable: list[str] = []
_skipped: list[str] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """This run's database on the PostgreSQL server; skipped (or, in CI, failed) without one."""
    reason = ""
    try:
        server = PostgresServer.start()
    except Exception as error:  # refused, unknown host, bad credentials, time-out
        reason = (
            f"no PostgreSQL server at {admin_url()} ({type(error).__name__}: {error}); "
            f"set {URL_ENV} to reach one"
        )
    if reason:
        _unavailable.append(reason)
        if required():
            pytest.fail(f"{REQUIRE_ENV} is set and {reason}", pytrace=False)
        pytest.skip(f"PostgreSQL half SKIPPED: {reason}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty schema on this run's database: the DATABASE_URL that points at it."""
    url = postgres_server.new_schema()
    try:
        yield url
    finally:
        postgres_server.drop_schema(url)


#: The backends a test that takes `database_url` runs on.
SHARED_BACKENDS = ("sqlite-file", "postgresql")


@pytest.fixture(params=SHARED_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database that several stores (and processes) can open: a SQLite file, or a
    PostgreSQL schema of its own."""
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path}/db/bot.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the tests the missing server skipped."""
    if report.skipped and "PostgreSQL half SKIPPED" in str(report.longrepr):
        _skipped.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say loudly, at the end, that the PostgreSQL half did not run."""
    if not _unavailable:
        return
    terminalreporter.section("PostgreSQL", sep="!", red=True, bold=True)
    if required():
        what = f"every test that needs it failed, as {REQUIRE_ENV} asks"
    else:
        what = f"{len(_skipped)} tests skipped; CI sets {REQUIRE_ENV}=1, which makes this a failure"
    terminalreporter.write_line(
        f"THE POSTGRESQL HALF OF THE SUITE DID NOT RUN: {_unavailable[0]}. ({what})",
        red=True,
        bold=True,
    )
