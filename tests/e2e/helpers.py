"""Shared end-to-end helpers: the `World` (fakes + the bot's files) and test images."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from PIL import Image

from tests.e2e.conftest import BotProcess, run_bot_process
from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord import FakeDiscord, FakeInteraction, RecordedRequest
from tests.postgres import run_sync

API_KEY = "sk-e2e-secret-cometapi-key-1234"
EPHEMERAL = 1 << 6


def png(width: int = 400, height: int = 400, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A real PNG made here."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class World:
    """The fakes, the bot's files, and helpers to drive and inspect them.

    The bot's database is a SQLite file in `tmp`, or the PostgreSQL schema `postgres_url`
    names (`World.rows` reads either the same way).
    """

    discord: FakeDiscord
    api: FakeCometAPI
    tmp: Path
    processes: list[BotProcess] = field(default_factory=list)
    postgres_url: str | None = None

    @property
    def database(self) -> Path:
        """The SQLite file (when the world is on SQLite)."""
        assert self.postgres_url is None, "this world's database is PostgreSQL: use rows()"
        return self.tmp / "bot.sqlite3"

    @property
    def database_url(self) -> str:
        """The bot's DATABASE_URL."""
        return self.postgres_url or f"sqlite:///{self.tmp / 'bot.sqlite3'}"

    def rows(self, sql: str) -> list[dict[str, Any]]:
        """Run one statement on the bot's database, as the bot left it; its rows as dicts."""
        if self.postgres_url is None:
            with contextlib.closing(sqlite3.connect(self.database)) as db:
                db.row_factory = sqlite3.Row
                found = [dict(row) for row in db.execute(sql)]
                db.commit()
                return found
        url = self.postgres_url

        async def fetch() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(url)
            try:
                return [dict(record) for record in await conn.fetch(sql)]
            finally:
                await conn.close()

        return run_sync(fetch)

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "DISCORD_TOKEN": self.discord.token,
            "COMETAPI_KEY": API_KEY,
            "COMETAPI_BASE_URL": self.api.base_url,
            "DATABASE_URL": self.database_url,
            "MEDIA_DIR": str(self.tmp / "media"),
            "DISCORD_GUILD_IDS": str(self.discord.guild_id),
            "POLL_INTERVAL_SECONDS": "0.1",
            "POLL_MAX_INTERVAL_SECONDS": "0.3",
            "API_MAX_RETRIES": "3",
            "API_MAX_QUERIES_PER_SECOND": "100",
            "LOG_LEVEL": "INFO",
        }
        values.update(extra)
        return values

    @contextlib.asynccontextmanager
    async def bot(self, **extra: str) -> AsyncIterator[BotProcess]:
        """Run `python -m bot` until the block ends (SIGTERM then)."""
        before = self.discord.ready_count  # a restart must wait for its own READY

        def ready(fake: FakeDiscord) -> bool:
            return fake.ready_count > before and fake.connected

        async with run_bot_process(
            "bot", self.env(**extra), self.discord.url, fake=self.discord, ready=ready
        ) as process:
            self.processes.append(process)
            await asyncio.sleep(0.3)  # let discord.py settle on its new session
            await self.discord.wait_for(lambda: self.discord.connected, 10)
            yield process

    async def video(
        self, images: list[bytes], prompt: str = "a red cube turns", **options: Any
    ) -> FakeInteraction:
        """Type /video with these images (`user`, `locale`... go to the interaction)."""
        values: dict[str, Any] = {}
        for position, data in enumerate(images, start=1):
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
            values[f"image{position}"] = self.discord.add_attachment(
                f"picture{position}.png", data, "image/png", width, height
            )
        values["prompt"] = prompt
        kwargs: dict[str, Any] = {}
        for key in (
            "user",
            "attachment_size_limit",
            "locale",
            "member_permissions",
            "member_roles",
        ):
            value = options.pop(key, None)
            if value is not None:
                kwargs[key] = value
        values.update(options)
        return await self.discord.slash_command("video", values, **kwargs)

    async def until(self, predicate: Any, timeout: float = 20) -> None:
        """Wait for a condition on the fake API (which doesn't wake the fake Discord)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)

    def original_edits(self, interaction: FakeInteraction) -> list[RecordedRequest]:
        """The bot's edits of its deferred (ephemeral) answer."""
        return self.discord.find_requests(
            "PATCH", rf"/webhooks/\d+/{re.escape(interaction.token)}/messages/@original"
        )

    async def answer(self, interaction: FakeInteraction, timeout: float = 15) -> str:
        """The text of the bot's private answer to an interaction."""
        await self.discord.wait_for(lambda: self.original_edits(interaction), timeout)
        return str(self.original_edits(interaction)[-1].json.get("content") or "")

    def uploads(self) -> list[RecordedRequest]:
        """Every message the bot posted with an .mp4 file (not those a test dropped)."""
        return [
            r
            for r in self.discord.requests
            if r.method == "POST"
            and not r.dropped
            and any(f.filename.endswith(".mp4") for f in r.files)
        ]

    def posts(self, channel_id: str) -> list[RecordedRequest]:
        """Messages the bot posted in a channel (status messages, results, failures)."""
        return [
            r
            for r in self.discord.requests
            if r.method == "POST"
            and r.path == f"/channels/{channel_id}/messages"
            and r.status == 200
        ]

    def tasks(self) -> list[dict[str, Any]]:
        """The task rows as the bot stored them."""
        return self.rows("SELECT * FROM tasks ORDER BY id")

    def check_clean(self) -> None:
        """Nothing Discord would refuse, nothing unknown, no secret anywhere."""
        assert self.discord.violations == [], self.discord.violations
        assert self.discord.unknown_requests == [], self.discord.unknown_requests
        for request in self.discord.requests:
            blob = repr(request.json)
            assert API_KEY not in blob and self.discord.token not in blob
        for process in self.processes:
            output = process.output()
            assert API_KEY not in output, "the API key leaked into the log"
            assert self.discord.token not in output, "the bot token leaked into the log"
            assert "Traceback" not in output, output[-3000:]
            # Output to a pipe (docker logs, journald, a file): no colour codes, no voice talk.
            assert "\x1b[" not in output, "colour codes in redirected logs"
            assert "voice will NOT be supported" not in output
