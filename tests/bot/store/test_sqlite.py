"""The SQLite backend: opening and its settings, its migrations (crash safety, cancellation and
what both backends share: test_backends.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.credits import CreditKind
from bot.pricing import PriceTable
from bot.store import (
    MIGRATIONS,
    MigrationError,
    TaskStore,
)
from bot.tasks import (
    TaskOptions,
    TaskState,
)
from tests.bot.store.helpers import (
    by_external_id,
    schema_version,
    sqlite_connection,
)

# --- opening and settings ------------------------------------------------------------------


async def test_open_file_sets_pragmas_and_creates_parent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bot.sqlite3"
    async with await TaskStore.open(f"sqlite:///{path}") as store:
        assert path.exists()
        conn = sqlite_connection(store)
        assert (await conn.execute_fetchall("PRAGMA journal_mode"))[0][0] == "wal"  # type: ignore[index]
        assert (await conn.execute_fetchall("PRAGMA foreign_keys"))[0][0] == 1  # type: ignore[index]
        assert (await conn.execute_fetchall("PRAGMA synchronous"))[0][0] == 1  # type: ignore[index]
        assert (await conn.execute_fetchall("PRAGMA busy_timeout"))[0][0] == 10_000  # type: ignore[index]
        assert await schema_version(store) == len(MIGRATIONS) >= 3


async def test_open_memory_and_plain_path(tmp_path: Path) -> None:
    async with await TaskStore.open("sqlite:///:memory:") as store:
        assert await schema_version(store) == len(MIGRATIONS)
    async with await TaskStore.open(tmp_path / "plain.db", synchronous="FULL") as store:
        assert (await sqlite_connection(store).execute_fetchall("PRAGMA synchronous"))[0][0] == 2  # type: ignore[index]


async def test_open_rejects_other_databases() -> None:
    with pytest.raises(ValueError):
        await TaskStore.open("mysql://localhost/db")


# --- migrations --------------------------------------------------------------------------------


def _make_old_db(path: Path, version: int) -> None:
    """A database at an old schema version, with a task in it, made by the old migrations."""
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute(
        "INSERT INTO tasks (external_task_id, kling_task_id, user_id, guild_id, channel_id, locale,"
        " prompt, options, image_count, input_dir, state, upload_limit, created_at, updated_at)"
        " VALUES ('ext-old', 'k-old', 1, 100, 200, 'nl', 'oud', '{\"duration\": 10}', 2, '/in',"
        " 'processing', 8388608, 1.0, 2.0)"
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
async def test_migrates_old_database_keeping_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite3"
    _make_old_db(path, version)
    async with await TaskStore.open(path) as store:
        assert await schema_version(store) == len(MIGRATIONS)
        task = await by_external_id(store, "ext-old")
        assert task is not None
        assert (task.kling_task_id, task.locale) == ("k-old", "nl")
        assert task.options == TaskOptions(duration="10")
        assert task.state is TaskState.PROCESSING and task.quota_reset_at is None
        assert await store.usage(user_id=1, since=0) == 1
        await store.set_meta("k", "v")  # v2 tables exist
        await store.reset_usage(100, 1, window=1e12)  # v3 column exists
        assert await store.usage(user_id=1, since=0) == 0


async def test_migration_5_counts_every_earlier_ending_as_told(tmp_path: Path) -> None:
    """Endings from before v5 were told by the code of their time: none is told again."""
    path = tmp_path / "v4.sqlite3"
    _make_old_db(path, 4)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO tasks (external_task_id, user_id, guild_id, channel_id, locale, prompt,"
        " options, image_count, input_dir, state, upload_limit, created_at, updated_at,"
        " finished_at) VALUES ('ext-failed', 1, 100, 200, 'en', 'p', '{}', 2, '/in', 'failed',"
        " 8388608, 1.0, 3.0, 3.0)"
    )
    conn.commit()
    conn.close()
    async with await TaskStore.open(path) as store:
        failed = await by_external_id(store, "ext-failed")
        assert failed is not None and failed.notified_at == 3.0 and failed.is_told
        assert [t.external_task_id for t in await store.unfinished()] == ["ext-old"]
        assert await store.open_interactions() == []


async def test_migration_6_leaves_old_tasks_unpriced_until_the_table_prices_them(
    tmp_path: Path,
) -> None:
    """v6 adds prices: a task from before has none until the start-up prices it, once, from
    its own options (a 10 s video here), and then it counts against the credit limits."""
    path = tmp_path / "v5.sqlite3"
    _make_old_db(path, 5)
    async with await TaskStore.open(path) as store:
        old = await by_external_id(store, "ext-old")
        assert old is not None and old.price_cents is None and old.provider_deduction is None
        assert await store.credits_spent(CreditKind.DAILY_USER, user_id=1, window=1e12) == 0
        assert await store.price_unpriced(PriceTable.default().price_of_options) == 1
        assert (await store.get(old.id)).price_cents == 200  # type: ignore[union-attr]
        assert await store.credits_spent(CreditKind.DAILY_USER, user_id=1, window=1e12) == 200
        settings = await store.set_guild_limits(100, credits_daily_per_user=250)
        assert settings.credits_daily_per_user == 250 and settings.daily_per_user is None
        override = await store.set_override(100, "role", 7, credits_daily=0)
        assert (await store.get_guild_settings(100)).role_overrides[7] == override


async def test_failed_migration_rolls_back_whole_step(tmp_path: Path) -> None:
    path = tmp_path / "bad.sqlite3"
    broken = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);")
    with pytest.raises(MigrationError):
        await TaskStore.open(path, migrations=broken)
    conn = sqlite3.connect(path)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    extra = conn.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchall()
    conn.close()
    assert version == len(MIGRATIONS) and extra == []


async def test_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(MigrationError):
        await TaskStore.open(path)
