"""Reservations: every quota checked with the insert in one transaction, refunds, resets, races."""

from __future__ import annotations

import asyncio

import pytest

from bot.quota import QuotaExceeded, QuotaKind, QuotaLimits
from bot.store import (
    TaskNotFound,
    TaskStore,
)
from bot.tasks import (
    TaskState,
)
from tests.bot.store.helpers import (
    DAY,
    UNLIMITED,
    Clock,
    in_transaction,
    new_task,
)
from tests.helpers import advance

# --- quotas ------------------------------------------------------------------------------------


async def test_concurrent_limit_counts_unfinished_tasks(store: TaskStore) -> None:
    limits = QuotaLimits(concurrent_per_user=2)
    a = await store.reserve(new_task(), limits)
    await store.reserve(new_task(guild_id=None), limits)  # counted across guilds and DMs
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), limits)
    assert (info.value.kind, info.value.used, info.value.limit) == ("concurrent_user", 2, 2)
    assert info.value.next_free_at is None
    await advance(store, a.id, TaskState.SUCCEEDED)
    await store.reserve(new_task(), limits)
    await store.reserve(new_task(user_id=2), limits)  # another user is unaffected


async def test_daily_limit_rolls_and_reports_next_free(store: TaskStore, clock: Clock) -> None:
    limits = QuotaLimits(daily_per_user=3)
    first = clock.t
    for _ in range(3):
        task = await store.reserve(new_task(), limits)
        await advance(store, task.id, TaskState.DELIVERED)
        clock.t += 100
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), limits)
    assert info.value.kind is QuotaKind.DAILY_USER
    assert (info.value.used, info.value.limit) == (3, 3)
    assert info.value.next_free_at == first + DAY
    assert await store.next_slot_frees_at(1, DAY) == first + DAY
    assert await store.usage(user_id=1, since=clock.t - DAY) == 3
    clock.t = first + DAY  # the first one ages out
    await store.reserve(new_task(), limits)


async def test_refund_and_reset_give_daily_quota_back(store: TaskStore, clock: Clock) -> None:
    limits = QuotaLimits(daily_per_user=2, concurrent_per_user=5)
    a = await store.reserve(new_task(), limits)
    b = await store.reserve(new_task(), limits)
    with pytest.raises(QuotaExceeded):
        await store.reserve(new_task(), limits)
    await store.transition(a.id, TaskState.FAILED)
    await store.refund(a.id)
    c = await store.reserve(new_task(), limits)
    with pytest.raises(QuotaExceeded):
        await store.reserve(new_task(), limits)
    assert await store.reset_usage(100, 1) == 2  # b and c
    t = await store.get(b.id)
    assert t is not None and t.quota_reset_at == clock.t and not t.quota_refunded
    assert await store.usage(user_id=1, since=clock.t - DAY) == 0
    await store.reserve(new_task(), limits)
    assert (await store.get(c.id)).state is TaskState.QUEUED  # type: ignore[union-attr]


async def test_guild_and_global_limits_and_order(store: TaskStore, clock: Clock) -> None:
    await store.reserve(new_task(user_id=1), UNLIMITED)
    await store.reserve(new_task(user_id=2), UNLIMITED)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(user_id=3), QuotaLimits(daily_per_guild=2))
    assert info.value.kind == "daily_guild" and info.value.next_free_at == clock.t + DAY
    await store.reserve(new_task(user_id=3, guild_id=None), QuotaLimits(daily_per_guild=2))
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(user_id=4, guild_id=5), QuotaLimits(daily_global=3))
    assert info.value.kind == "daily_global"
    # concurrent bites before daily when both are hit
    both = QuotaLimits(daily_per_user=1, concurrent_per_user=1, daily_global=1)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(user_id=1), both)
    assert info.value.kind == "concurrent_user"
    # 0 means unlimited for guild/global
    await store.reserve(new_task(user_id=5), QuotaLimits(daily_per_guild=0, daily_global=0))


async def test_exempt_and_blocked(store: TaskStore) -> None:
    exempt = QuotaLimits(daily_per_user=0, concurrent_per_user=0, daily_per_guild=1, exempt=True)
    for _ in range(3):
        await store.reserve(new_task(), exempt)
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), QuotaLimits(daily_global=3, exempt=True))
    assert info.value.kind == "daily_global"
    assert await store.block_user(100, 1, reason="spam") is True
    assert await store.block_user(100, 1) is False
    assert (await store.get_guild_settings(100)).blocked_users == {1}
    with pytest.raises(QuotaExceeded) as info:
        await store.reserve(new_task(), UNLIMITED)
    assert info.value.kind == "blocked"
    await store.reserve(new_task(guild_id=101), UNLIMITED)  # blocked per guild only
    await store.reserve(new_task(guild_id=None), UNLIMITED)  # and never in DMs
    assert await store.unblock_user(100, 1) is True
    await store.reserve(new_task(), UNLIMITED)


async def test_quota_refusal_leaves_no_row_and_no_open_transaction(store: TaskStore) -> None:
    limits = QuotaLimits(concurrent_per_user=1)
    await store.reserve(new_task(), limits)
    with pytest.raises(QuotaExceeded):
        await store.reserve(new_task(), limits)
    assert (await store.usage_summary(100, since=0)).tasks == 1
    assert not await in_transaction(store)


async def _race(stores: list[TaskStore], limits: QuotaLimits, n: int = 100) -> int:
    """Fire n reservations by one user at once, spread over the stores; count the grants."""

    async def one(i: int) -> bool:
        try:
            await stores[i % len(stores)].reserve(new_task(user_id=42), limits)
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(results)


@pytest.mark.parametrize(
    "limits",
    [QuotaLimits(concurrent_per_user=5), QuotaLimits(daily_per_user=5)],
    ids=["concurrent", "daily"],
)
async def test_100_concurrent_reservations_one_store(
    shared_store: TaskStore, limits: QuotaLimits
) -> None:
    assert await _race([shared_store], limits) == 5
    assert await shared_store.usage(user_id=42, since=0) == 5


@pytest.mark.parametrize(
    "limits",
    [QuotaLimits(concurrent_per_user=5), QuotaLimits(daily_per_user=5)],
    ids=["concurrent", "daily"],
)
async def test_100_concurrent_reservations_two_connections(
    database_url: str, limits: QuotaLimits
) -> None:
    url = database_url
    a, b = await asyncio.gather(TaskStore.open(url), TaskStore.open(url))  # race the migrations
    try:
        assert await _race([a, b], limits) == 5
        assert await a.usage(user_id=42, since=0) == 5
        assert len(await b.active_for_user(42)) == 5
    finally:
        await a.close()
        await b.close()


async def test_refund_is_idempotent(store: TaskStore) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    await store.transition(task.id, TaskState.FAILED, error_code="provider_failed")
    assert await store.refund(task.id) is True
    assert await store.refund(task.id) is False
    assert (await store.get(task.id)).quota_refunded  # type: ignore[union-attr]
    with pytest.raises(TaskNotFound):
        await store.refund(999)
