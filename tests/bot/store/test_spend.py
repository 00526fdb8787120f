"""What was spent: the reports' queries, usage rows for the CSV, the alerts' claims."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.credits import CreditAlert
from bot.store import TaskStore
from bot.tasks import TaskOptions, TaskState
from bot.usage import Counted
from tests.bot.store.helpers import UNLIMITED, Clock, new_task
from tests.helpers import advance


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


async def reserve(store: TaskStore, user_id: int, guild_id: int | None, price: int) -> int:
    task = await store.reserve(
        new_task(user_id, guild_id, options=TaskOptions(mode="pro"), price_cents=price), UNLIMITED
    )
    return task.id


async def test_spends_top_members_and_usage_rows(store: TaskStore, clock: Clock) -> None:
    clock.t = utc(2026, 11, 1, 10)
    a = await reserve(store, 1, 100, 700)
    clock.t = utc(2026, 11, 2, 10)
    b = await reserve(store, 2, 100, 350)
    c = await reserve(store, 2, 100, 350)
    d = await reserve(store, 3, 100, 100)
    e = await reserve(store, 1, 101, 700)  # another server
    await advance(store, b, TaskState.PROCESSING)
    await store.transition(b, TaskState.FAILED, error_code="provider_failed")
    await store.refund(b)  # refunded: not spent
    await advance(store, c, TaskState.DELIVERED)
    await store.reset_usage(100, 2)  # reset: the member's quota is free, the money is spent
    await store.update(a, provider_deduction="20")
    assert await store.spends(0, guild_id=100) == [
        (utc(2026, 11, 1, 10), 700),
        (utc(2026, 11, 2, 10), 350),
        (utc(2026, 11, 2, 10), 100),
    ]
    assert len(await store.spends(0)) == 4
    assert await store.spends(utc(2026, 11, 2), guild_id=100) == [
        (utc(2026, 11, 2, 10), 350),
        (utc(2026, 11, 2, 10), 100),
    ]
    assert await store.top_spenders(0, guild_id=100) == [(1, 700), (2, 350), (3, 100)]
    assert await store.top_spenders(0, guild_id=100, limit=1) == [(1, 700)]
    assert await store.top_spenders(0) == [(1, 1400), (2, 350), (3, 100)]
    rows = await store.usage_rows(0, guild_id=100)
    assert [row.task_id for row in rows] == [a, b, c, d]
    assert [row.counted for row in rows] == [
        Counted.COUNTED,
        Counted.REFUNDED,
        Counted.RESET,
        Counted.COUNTED,
    ]
    assert rows[0].provider_deduction == "20" and rows[0].price == 700
    assert rows[0].mode == "pro" and rows[0].duration is None and rows[1].state == "failed"
    assert e not in [row.task_id for row in rows]
    assert await store.month_spent() == 700 + 350 + 100 + 700


async def test_log_channels_and_alert_claims(store: TaskStore, clock: Clock) -> None:
    await store.set_log_channel(100, 555)
    await store.set_log_channel(101, None)
    await store.set_guild_limits(102)
    assert await store.log_channels() == [(100, 555)]
    clock.t = utc(2026, 11, 20)
    alert = CreditAlert("2026-11", 80, 555, 100, spent=8000, cap=10_000, started_at=clock.t)
    assert await store.claim_credit_alert(alert) is True
    assert await store.claim_credit_alert(alert) is False  # claimed once per month and place
    assert await store.credit_alerts() == [alert]
    await store.complete_credit_alert(alert, 9001)
    await store.complete_credit_alert(alert, 9002)  # completed once: the first id stays
    [done] = await store.credit_alerts()
    assert done.message_id == 9001
    assert await store.credit_alerts(utc(2026, 12, 1)) == []  # another month
