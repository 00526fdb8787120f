"""Operator tools: backup while the bot writes, the engine's heartbeat, and the log formats."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.engine import Delivered, EngineConfig, TaskEngine
from bot.kling.client import KlingClient
from bot.logs import current_task_id, setup_logging
from bot.media import MediaStore
from bot.ops import HEARTBEAT_KEY, OpsError, backup, health, read_heartbeat
from bot.store import TaskStore
from tests.bot.test_main import clean_env, run_cli


class Writer:
    """Writes to the database as fast as it can until stopped, each write one transaction
    that adds a row and sets a counter to the number of rows: a copy where the two disagree
    is torn."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as db:
            db.isolation_level = None
            while not self._stop.is_set():
                db.execute("BEGIN IMMEDIATE")
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    (f"row-{self.count + 1}", "x" * 200),
                )
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('rows', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(self.count + 1),),
                )
                db.execute("COMMIT")
                self.count += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[Writer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)


def assert_whole(copy: Path) -> int:
    """The copy opens, passes SQLite's integrity check, and its counter matches its rows."""
    with contextlib.closing(sqlite3.connect(copy)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'row-%'").fetchone()[0]
        counter = db.execute("SELECT value FROM meta WHERE key = 'rows'").fetchone()
        assert counter is not None and int(counter[0]) == rows, "a torn copy"
        assert db.execute("PRAGMA user_version").fetchone()[0] > 0  # the migrated schema
        return int(rows)


async def make_database(path: Path) -> None:
    store = await TaskStore.open(f"sqlite:///{path}")
    await store.close()


async def test_backup_while_the_database_is_written_is_never_torn(tmp_path: Path) -> None:
    database = tmp_path / "data" / "bot.sqlite3"
    await make_database(database)
    media = tmp_path / "data" / "media"
    (media / "videos").mkdir(parents=True)
    (media / "videos" / "1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000)
    (media / "videos" / "2.part").write_bytes(b"half a video")  # still being downloaded
    (media / "inputs" / "kvb-1").mkdir(parents=True)
    (media / "inputs" / "kvb-1" / "1.png").write_bytes(b"png")
    (media / "inputs" / "kvb-1" / ".2.png.part").write_bytes(b"half")
    env = clean_env(
        DISCORD_TOKEN="t",
        COMETAPI_KEY="k",
        DATABASE_URL=f"sqlite:///{database}",
        MEDIA_DIR=str(media),
    )
    seen: list[int] = []
    with Writer(database).running() as writer:
        while writer.count < 50:
            await asyncio.sleep(0.01)
        for number in range(3):
            before = writer.count
            code, out, err = await run_cli(
                "backup", str(tmp_path / f"backup-{number}"), cwd=tmp_path, env=env
            )
            assert code == 0, out + err
            assert writer.count > before, "the writer kept writing during the backup"
            seen.append(assert_whole(tmp_path / f"backup-{number}" / "kling-bot.sqlite3"))
            assert seen[-1] >= before
    assert seen == sorted(seen) and seen[0] >= 50
    copied = tmp_path / "backup-0" / "media"
    assert (copied / "videos" / "1.mp4").read_bytes() == (media / "videos" / "1.mp4").read_bytes()
    assert (copied / "inputs" / "kvb-1" / "1.png").exists()
    assert sorted(p.name for p in copied.rglob("*") if p.is_file()) == ["1.mp4", "1.png"]
    assert "2 file(s)" in out and "Traceback" not in err


def test_backup_never_overwrites_a_backup(tmp_path: Path) -> None:
    database = tmp_path / "bot.sqlite3"
    asyncio.run(make_database(database))
    backup(f"sqlite:///{database}", tmp_path / "media", tmp_path / "b")
    with pytest.raises(OpsError, match="already holds a backup"):
        backup(f"sqlite:///{database}", tmp_path / "media", tmp_path / "b")
    with pytest.raises(OpsError, match="memory"):
        backup("sqlite:///:memory:", tmp_path / "media", tmp_path / "c")


async def test_backup_says_when_there_is_no_database(tmp_path: Path) -> None:
    env = clean_env(
        DISCORD_TOKEN="t", COMETAPI_KEY="k", DATABASE_URL=f"sqlite:///{tmp_path}/none.sqlite3"
    )
    code, _, err = await run_cli("backup", str(tmp_path / "b"), cwd=tmp_path, env=env)
    assert code == 1 and "no database" in err and "Traceback" not in err
    code, _, err = await run_cli("backup", cwd=tmp_path, env=env)
    assert code == 2 and "backup PATH" in err


class SilentNotifier:
    """A notifier for engines that never finish a task in these tests."""

    async def progress(self, task: object, queue_position: int | None) -> None:
        """Nothing to tell."""

    async def deliver(self, task: object) -> Delivered:
        """Never called here."""
        return Delivered(None)

    async def failed(self, task: object) -> None:
        """Never called here."""


def idle_engine(store: TaskStore, session: aiohttp.ClientSession, media: Path) -> TaskEngine:
    """An engine with no API behind it (nothing is ever submitted)."""
    client = KlingClient(session, base_url="http://127.0.0.1:9", api_key="k")
    return TaskEngine(store, client, SilentNotifier(), session, MediaStore(media), EngineConfig())


async def test_the_engine_writes_a_heartbeat_that_health_reads(
    tmp_path: Path, database_url: str
) -> None:
    """On both backends (`health` is the command line's, so it runs outside this loop)."""
    store = await TaskStore.open(database_url)
    async with aiohttp.ClientSession() as session:
        engine = idle_engine(store, session, tmp_path / "media")
        assert await asyncio.to_thread(read_heartbeat, database_url) is None
        with pytest.raises(OpsError, match="never written"):
            await asyncio.to_thread(health, database_url)
        await engine.start()
        try:
            async with asyncio.timeout(10):
                while await store.get_meta(HEARTBEAT_KEY) is None:
                    await asyncio.sleep(0.01)
            said = await asyncio.to_thread(health, database_url)
            assert said.startswith("the engine's heartbeat is")
        finally:
            await engine.stop()
            await store.close()
    with pytest.raises(OpsError, match="stopped making progress"):
        await asyncio.to_thread(health, database_url, max_age=-1)


# --- logs ----------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_are_one_object_per_line_with_the_task_id() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    log = logging.getLogger("bot.engine")
    log.info("no task here")
    token = current_task_id.set(42)
    try:
        log.warning("Task %d: query failed (%s)", 42, 'a "quoted"\nsecond line')
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")
    finally:
        current_task_id.reset(token)
    log.debug("below the level")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "bot.engine"
    assert first["time"].endswith("+00:00")
    assert second["task_id"] == 42 and second["message"].endswith('a "quoted"\nsecond line)')
    assert third["task_id"] == 42 and "ValueError: boom" in third["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_text_logs_have_no_colour_codes_and_name_the_task() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "text", stream)
    token = current_task_id.set(7)
    try:
        logging.getLogger("discord.client").warning("something")
    finally:
        current_task_id.reset(token)
    line = stream.getvalue()
    assert "\x1b[" not in line
    assert line.rstrip().endswith("WARNING  discord.client: something [task 7]")


async def test_each_engine_step_logs_with_its_own_task_id(tmp_path: Path) -> None:
    """The engine sets the task id in each step's own context: steps never see each other's."""
    seen: dict[str, int | None] = {}

    async def step(name: str) -> None:
        await asyncio.sleep(0.01)
        seen[name] = current_task_id.get()

    async with aiohttp.ClientSession() as session:
        store = await TaskStore.open("sqlite:///:memory:")
        engine = idle_engine(store, session, tmp_path / "media")
        engine.steps.spawn(1, step("one"))
        engine.steps.spawn(2, step("two"))
        engine.steps.spawn(None, step("sweep"))
        await asyncio.gather(*engine.steps._inflight)
        await store.close()
    assert seen == {"one": 1, "two": 2, "sweep": None}
    assert current_task_id.get() is None
