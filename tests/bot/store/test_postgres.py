"""The PostgreSQL backend: placeholders, opening, its migrations, its locks."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.credits import CreditKind
from bot.pricing import PriceTable
from bot.quota import QuotaLimits
from bot.store import POSTGRES_MIGRATIONS, MigrationError, StoreError, TaskStore
from bot.store.postgres import PostgresDatabase, is_postgres_url, lock_key, numbered_placeholders
from bot.tasks import TaskOptions, TaskState
from tests.bot.store.helpers import by_external_id, new_task, schema_version
from tests.postgres import PostgresServer

# --- the URL and the placeholders -----------------------------------------------------------


def test_both_url_schemes_select_postgresql() -> None:
    assert is_postgres_url("postgresql://u@h:5432/db")
    assert is_postgres_url("postgres://u@h/db")
    assert not is_postgres_url("sqlite:///data/bot.sqlite3")
    assert not is_postgres_url("postgresql+asyncpg://u@h/db")


def test_placeholders_are_numbered_outside_quotes() -> None:
    assert numbered_placeholders("SELECT ? , ?") == "SELECT $1 , $2"
    assert (
        numbered_placeholders("UPDATE t SET a = ?, b = 'what?' WHERE c = ? AND \"odd?\" = ?")
        == "UPDATE t SET a = $1, b = 'what?' WHERE c = $2 AND \"odd?\" = $3"
    )
    assert numbered_placeholders("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', $1"


# --- opening and migrations ------------------------------------------------------------------


async def _raw(url: str) -> asyncpg.Connection:
    """A plain connection to the test's schema (to look at what the store doesn't say)."""
    return await asyncpg.connect(url)


async def test_open_migrates_and_records_each_version(postgres_url: str) -> None:
    async with await TaskStore.open(postgres_url) as store:
        assert isinstance(store._db, PostgresDatabase)
        assert await schema_version(store) == len(POSTGRES_MIGRATIONS) >= 5
    conn = await _raw(postgres_url)
    try:
        versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        assert sorted(versions) == list(range(1, len(POSTGRES_MIGRATIONS) + 1))
    finally:
        await conn.close()
    async with await TaskStore.open(postgres_url) as store:  # a second open changes nothing
        assert await schema_version(store) == len(POSTGRES_MIGRATIONS)


async def _old_database(url: str, version: int) -> None:
    """A schema at an old version, with a task in it, made by the old migrations."""
    await (await TaskStore.open(url, migrations=POSTGRES_MIGRATIONS[:version])).close()
    conn = await _raw(url)
    try:
        await conn.execute(
            "INSERT INTO tasks (external_task_id, kling_task_id, user_id, guild_id, channel_id,"
            " locale, prompt, options, image_count, input_dir, state, upload_limit, created_at,"
            " updated_at) VALUES ('ext-old', 'k-old', 1, 100, 200, 'nl', 'oud',"
            " '{\"duration\": 10}', 2, '/in', 'processing', 8388608, 1.0, 2.0)"
        )
        if version == 4:  # an ending from before v5
            await conn.execute(
                "INSERT INTO tasks (external_task_id, user_id, guild_id, channel_id, locale,"
                " prompt, options, image_count, input_dir, state, upload_limit, created_at,"
                " updated_at, finished_at) VALUES ('ext-failed', 1, 100, 200, 'en', 'p', '{}',"
                " 2, '/in', 'failed', 8388608, 1.0, 3.0, 3.0)"
            )
    finally:
        await conn.close()


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5])
async def test_migrates_old_database_keeping_data(postgres_url: str, version: int) -> None:
    await _old_database(postgres_url, version)
    async with await TaskStore.open(postgres_url) as store:
        assert await schema_version(store) == len(POSTGRES_MIGRATIONS)
        task = await by_external_id(store, "ext-old")
        assert task is not None
        assert (task.kling_task_id, task.locale) == ("k-old", "nl")
        assert task.options == TaskOptions(duration="10")
        assert task.state is TaskState.PROCESSING and task.quota_reset_at is None
        if version == 4:  # v5 counts every earlier ending as told: none is told again
            failed = await by_external_id(store, "ext-failed")
            assert failed is not None and failed.notified_at == 3.0 and failed.is_told
            assert [t.external_task_id for t in await store.unfinished()] == ["ext-old"]
            assert await store.open_interactions() == []
        assert await store.usage(user_id=1, since=0) == (2 if version == 4 else 1)
        await store.set_meta("k", "v")  # v2 tables exist
        await store.reset_usage(100, 1, window=1e12)  # v3 column exists
        assert await store.usage(user_id=1, since=0) == 0


async def test_migration_6_leaves_old_tasks_unpriced_until_the_table_prices_them(
    postgres_url: str,
) -> None:
    await _old_database(postgres_url, 5)
    async with await TaskStore.open(postgres_url) as store:
        old = await by_external_id(store, "ext-old")
        assert old is not None and old.price_cents is None and old.provider_deduction is None
        assert await store.credits_spent(CreditKind.DAILY_USER, user_id=1, window=1e12) == 0
        assert await store.price_unpriced(PriceTable.default().price_of_options) == 1
        assert (await store.get(old.id)).price_cents == 200  # type: ignore[union-attr]
        assert await store.credits_spent(CreditKind.DAILY_USER, user_id=1, window=1e12) == 200
        settings = await store.set_guild_limits(100, credits_daily_per_user=250)
        assert settings.credits_daily_per_user == 250 and settings.daily_per_user is None


async def test_failed_migration_rolls_back_whole_step(postgres_url: str) -> None:
    broken = (
        *POSTGRES_MIGRATIONS,
        "CREATE TABLE extra (x INTEGER); INSERT INTO nowhere VALUES (1);",
    )
    with pytest.raises(MigrationError, match=f"version {len(POSTGRES_MIGRATIONS) + 1}"):
        await TaskStore.open(postgres_url, migrations=broken)
    conn = await _raw(postgres_url)
    try:
        assert await conn.fetchval("SELECT MAX(version) FROM schema_migrations") == len(
            POSTGRES_MIGRATIONS
        )
        assert await conn.fetchval("SELECT to_regclass('extra')") is None
    finally:
        await conn.close()


async def test_refuses_newer_schema(postgres_url: str) -> None:
    await (await TaskStore.open(postgres_url)).close()
    conn = await _raw(postgres_url)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations VALUES ($1, 0)", len(POSTGRES_MIGRATIONS) + 1
        )
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="newer than this code"):
        await TaskStore.open(postgres_url)


async def test_processes_starting_at_once_apply_each_migration_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(TaskStore.open(postgres_url) for _ in range(4)))
    try:
        for store in stores:
            assert await schema_version(store) == len(POSTGRES_MIGRATIONS)
    finally:
        for store in stores:
            await store.close()


async def test_a_missing_schema_or_database_is_a_clear_error(
    postgres_server: PostgresServer,
) -> None:
    with pytest.raises(StoreError, match="search_path"):
        await TaskStore.open(postgres_server.database_url(search_path="no_such_schema"))
    with pytest.raises(StoreError, match="does not exist"):
        await TaskStore.open(postgres_server.database_url().rsplit("/", 1)[0] + "/kvb_nope")


# --- the exclusive transaction -----------------------------------------------------------------


async def test_exclusive_transactions_wait_for_each_other_across_pools(postgres_url: str) -> None:
    async with (
        await TaskStore.open(postgres_url) as a,
        await TaskStore.open(postgres_url) as b,
    ):
        async with a._db.transaction(exclusive=True):
            waiting = asyncio.create_task(b.reserve(new_task(), QuotaLimits()))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # b waits for a's lock
            async with b._db.transaction() as conn:  # a plain transaction never waits
                await conn.fetch("SELECT COUNT(*) FROM tasks")
        assert (await waiting).state is TaskState.QUEUED


async def test_the_lock_is_per_schema_and_gives_up_after_the_busy_timeout(
    postgres_server: PostgresServer,
) -> None:
    first, second = postgres_server.new_schema(), postgres_server.new_schema()
    try:
        async with (
            await TaskStore.open(first) as a,
            await TaskStore.open(second) as other,
            await TaskStore.open(first, busy_timeout_ms=200) as impatient,
        ):
            assert lock_key("a", "exclusive") != lock_key("b", "exclusive")
            async with a._db.transaction(exclusive=True):
                await other.reserve(new_task(), QuotaLimits())  # another schema: no wait
                with pytest.raises(asyncpg.LockNotAvailableError):
                    await impatient.reserve(new_task(), QuotaLimits())
            await impatient.reserve(new_task(), QuotaLimits())
            assert await impatient.usage(since=0) == 1
    finally:
        postgres_server.drop_schema(first)
        postgres_server.drop_schema(second)
