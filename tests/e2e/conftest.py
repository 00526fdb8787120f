"""Fixtures for end-to-end tests: a started fake Discord and a bot-process runner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord import FakeDiscord

if TYPE_CHECKING:
    from tests.e2e.helpers import World

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = REPO_ROOT / "tests" / "e2e" / "launcher.py"


class BotProcess:
    """A bot subprocess started through the launcher; output is captured in memory."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._chunks: list[bytes] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(65536):
            self._chunks.append(chunk)

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return b"".join(self._chunks).decode(errors="replace")

    @property
    def returncode(self) -> int | None:
        """The exit code, or None while running."""
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process (a crash: no cleanup)."""
        if self.proc.returncode is None:
            self.proc.kill()

    def terminate(self) -> None:
        """SIGTERM the process (what a supervisor does on restart)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit; return its code."""
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 2)
        return code

    async def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit code."""
        self.terminate()
        try:
            return await self.wait(timeout)
        except TimeoutError:
            self.kill()
            return await self.wait(timeout)


def default_ready(fake: FakeDiscord) -> bool:
    """Ready = the fake accepted an IDENTIFY and sent READY + GUILD_CREATE."""
    return fake.ready_count > 0


@contextlib.asynccontextmanager
async def run_bot_process(
    module: str,
    env: Mapping[str, str],
    discord_url: str,
    *,
    fake: FakeDiscord | None = None,
    ready: Callable[[FakeDiscord], Any] | None = default_ready,
    ready_timeout: float = 20.0,
    args: list[str] | None = None,
) -> AsyncIterator[BotProcess]:
    """Start ``python tests/e2e/launcher.py --discord URL -m module`` and yield a BotProcess.

    ``env`` is added to a copy of ``os.environ``; PYTHONPATH is the repo root. When ``fake``
    is given, waits until ``ready(fake)`` is truthy (fails with the bot's output if the
    process exits or the wait times out). On exit: SIGTERM, SIGKILL after 10 s.
    """
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(LAUNCHER),
        "--discord",
        discord_url,
        "-m",
        module,
        *(args or []),
        cwd=str(REPO_ROOT),
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    bot = BotProcess(proc)
    try:
        if fake is not None and ready is not None:
            exited = asyncio.create_task(proc.wait())
            ok = asyncio.create_task(fake.wait_for(lambda: ready(fake), ready_timeout))
            done, _ = await asyncio.wait({exited, ok}, return_when=asyncio.FIRST_COMPLETED)
            if ok not in done:
                ok.cancel()
                await asyncio.sleep(0.1)
                raise AssertionError(
                    f"bot exited ({proc.returncode}) before ready:\n{bot.output()}"
                )
            exited.cancel()
            if ok.exception() is not None:
                raise AssertionError(f"bot not ready: {ok.exception()}\n{bot.output()}")
        yield bot
    finally:
        await bot.stop()


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord: one guild, one text channel, a bot user and an application."""
    async with FakeDiscord() as fake:
        yield fake


#: Which database the bot runs on in a test that takes `world` and doesn't choose:
#: `KVB_E2E_DATABASE=postgresql` runs the whole suite on PostgreSQL (default: sqlite).
E2E_DATABASE_ENV = "KVB_E2E_DATABASE"
#: Put on a test to run it on both backends (`make test` runs these on PostgreSQL too).
on_both_backends = pytest.mark.parametrize("world", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """Fake Discord + fake CometAPI + a folder for the bot, and its database (SQLite, or a
    PostgreSQL schema of its own); ends with `World.check_clean`."""
    from tests.e2e.helpers import API_KEY, World  # helpers import this module

    backend = getattr(request, "param", None) or os.environ.get(E2E_DATABASE_ENV) or "sqlite"
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"{E2E_DATABASE_ENV} is sqlite or postgresql, not {backend!r}")
    postgres_url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    async with FakeDiscord() as discord, FakeCometAPI(api_key=API_KEY, finish_after=0.3) as api:
        w = World(discord, api, tmp_path, postgres_url=postgres_url)
        yield w
        w.check_clean()
