"""The store's fixtures: a clock the test moves, a store in memory and one on disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import TaskStore
from tests.bot.store.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(clock: Clock) -> AsyncIterator[TaskStore]:
    async with await TaskStore.open("sqlite:///:memory:", now=clock) as s:
        yield s


@pytest.fixture
async def file_store(tmp_path: Path, clock: Clock) -> AsyncIterator[TaskStore]:
    async with await TaskStore.open(f"sqlite:///{tmp_path}/db/bot.sqlite3", now=clock) as s:
        yield s
