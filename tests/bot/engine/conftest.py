"""The engine's world (fake CometAPI, a store, a notifier that records) for every engine test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.media import MediaStore
from bot.store import TaskStore
from tests.bot.engine.test_machine import RecordingNotifier, World
from tests.fakes.cometapi import FakeCometAPI


@pytest.fixture
async def world(tmp_path: Path, database_url: str) -> AsyncIterator[World]:
    """The engine's world on a database several engines can share (on each backend)."""
    async with FakeCometAPI(finish_after=0.15) as api, aiohttp.ClientSession() as session:
        store = await TaskStore.open(database_url)
        w = World(api, store, session, MediaStore(tmp_path / "media"), RecordingNotifier())
        try:
            yield w
        finally:
            for engine in w.engines:
                await engine.stop()
            await store.close()
