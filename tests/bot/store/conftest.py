"""The store's fixtures: a clock the test moves, and stores on every backend.

`store` runs each test on SQLite in memory, SQLite in a file and PostgreSQL (a schema of its
own on the run's database; skipped loudly, or failed in CI, without a server).
`shared_store` is on `database_url` (tests/conftest.py): a fresh database other connections
and processes can open too, a SQLite file or a PostgreSQL schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import TaskStore
from tests.bot.store.helpers import Clock

#: The backends every store test runs on (`database_url`, in tests/conftest.py, has the two
#: that other connections can open too).
BACKENDS = ("sqlite-memory", "sqlite-file", "postgresql")


def backend_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """A fresh, empty database of this backend."""
    if backend == "sqlite-memory":
        return "sqlite:///:memory:"
    if backend == "sqlite-file":
        return f"sqlite:///{tmp_path}/db/bot.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[TaskStore]:
    async with await TaskStore.open(backend_url(request, request.param, tmp_path), now=clock) as s:
        yield s


@pytest.fixture
async def shared_store(database_url: str, clock: Clock) -> AsyncIterator[TaskStore]:
    """A store on `database_url` (a SQLite file, or PostgreSQL)."""
    async with await TaskStore.open(database_url, now=clock) as s:
        yield s
