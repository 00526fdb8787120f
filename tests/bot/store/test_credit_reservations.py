"""Credit limits in the reservation: the price checked with the insert in one transaction, the
refusal's words, refunds and resets in credits, races at the limit, a restart mid-month and a
price change while tasks run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bot.credits import CreditKind, CreditLimits, CreditsExceeded, quota_text, refusal_text
from bot.pricing import PriceTable
from bot.quota import QuotaExceeded, QuotaLimits
from bot.store import TaskStore
from bot.tasks import NewTask, TaskOptions, TaskState
from tests.bot.store.helpers import DAY, UNLIMITED, Clock, in_transaction, new_task
from tests.helpers import advance

TABLE = PriceTable.default()  # 1, 2, 3.5 and 7 credits
STD5, STD10, PRO5, PRO10 = 100, 200, 350, 700


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def priced(
    user_id: int = 1, guild_id: int | None = 100, *, mode: str = "std", duration: str = "5"
) -> NewTask:
    """A new task of one option, priced by the default table."""
    return new_task(
        user_id,
        guild_id,
        options=TaskOptions(mode=mode, duration=duration),
        price_cents=TABLE.price(mode, duration),
    )


async def spend(store: TaskStore, kind: CreditKind, **scope: int) -> int:
    return await store.credits_spent(kind, **scope)


# --- the check ---------------------------------------------------------------------------------


async def test_a_price_that_crosses_the_member_limit_is_refused_with_what_frees_when(
    store: TaskStore, clock: Clock
) -> None:
    limits = CreditLimits(daily_per_user=2000)  # 20 credits a day
    first = await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    assert first.price_cents == PRO10
    clock.t += 3600
    await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    clock.t += 3600
    await store.reserve(priced(mode="pro", duration="5"), UNLIMITED, credits=limits)  # 17.5
    clock.t += 60
    with pytest.raises(CreditsExceeded) as info:
        await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    refusal = info.value.refusal
    assert refusal.kind is CreditKind.DAILY_USER
    assert (refusal.price, refusal.limit, refusal.spent, refusal.left) == (700, 2000, 1750, 250)
    assert (refusal.mode, refusal.duration) == ("pro", "10")
    # 4.5 credits must leave the window: the oldest (7 credits) does, 24 h after it was made
    assert refusal.frees_at == first.created_at + DAY and refusal.freed == 700
    # a cheaper option still fits, up to the limit and not a cent past it
    await store.reserve(priced(mode="std", duration="10"), UNLIMITED, credits=limits)
    assert await spend(store, CreditKind.DAILY_USER, user_id=1) == 1950
    with pytest.raises(CreditsExceeded):
        await store.reserve(priced(), UNLIMITED, credits=limits)  # 1 credit: 20.5
    await store.reserve(
        new_task(options=TaskOptions(), price_cents=50), UNLIMITED, credits=limits
    )  # half a credit: lands on the limit exactly
    assert await spend(store, CreditKind.DAILY_USER, user_id=1) == 2000
    with pytest.raises(CreditsExceeded):
        await store.reserve(new_task(price_cents=1), UNLIMITED, credits=limits)
    assert (await store.usage_summary(100, since=0)).tasks == 5
    assert not await in_transaction(store)
    clock.t = first.created_at + DAY + 1  # the oldest left the window
    await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)


async def test_each_credit_limit_in_its_order_and_scope(store: TaskStore, clock: Clock) -> None:
    server = CreditLimits(daily_per_guild=1000)
    await store.reserve(priced(1, mode="pro", duration="10"), UNLIMITED, credits=server)
    with pytest.raises(CreditsExceeded) as info:  # another member, the same server
        await store.reserve(priced(2, mode="pro", duration="5"), UNLIMITED, credits=server)
    assert info.value.refusal.kind is CreditKind.DAILY_GUILD
    await store.reserve(priced(2, guild_id=101, mode="pro"), UNLIMITED, credits=server)
    await store.reserve(priced(2, guild_id=None, mode="pro"), UNLIMITED, credits=server)  # a DM
    bot_day = CreditLimits(daily_global=2000)  # 14 credits spent so far, everywhere
    with pytest.raises(CreditsExceeded) as info:
        await store.reserve(
            priced(3, guild_id=102, mode="pro", duration="10"), UNLIMITED, credits=bot_day
        )
    assert info.value.refusal.kind is CreditKind.DAILY_GLOBAL and info.value.refusal.left == 600
    # the member's limit is reported first when several refuse
    every = CreditLimits(daily_per_user=100, daily_per_guild=100, daily_global=100)
    with pytest.raises(CreditsExceeded) as info:
        await store.reserve(priced(1), UNLIMITED, credits=every)
    assert info.value.refusal.kind is CreditKind.DAILY_USER


async def test_video_counts_still_refuse_first_and_unchanged(store: TaskStore) -> None:
    await store.reserve(priced(), QuotaLimits(daily_per_user=1), credits=CreditLimits())
    with pytest.raises(QuotaExceeded):
        await store.reserve(
            priced(), QuotaLimits(daily_per_user=1), credits=CreditLimits(daily_per_user=50)
        )


async def test_an_exempt_member_still_meets_the_bot_wide_credit_limits(store: TaskStore) -> None:
    exempt = CreditLimits(daily_per_user=100, daily_global=1000, exempt=True)
    await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=exempt)
    with pytest.raises(CreditsExceeded) as info:
        await store.reserve(priced(mode="pro", duration="5"), UNLIMITED, credits=exempt)
    assert info.value.refusal.kind is CreditKind.DAILY_GLOBAL


async def test_a_price_above_the_limit_itself_never_fits(store: TaskStore) -> None:
    with pytest.raises(CreditsExceeded) as info:
        await store.reserve(
            priced(mode="pro", duration="10"), UNLIMITED, credits=CreditLimits(daily_per_user=500)
        )
    assert info.value.refusal.never_fits and info.value.refusal.frees_at is None


# --- refunds and resets ------------------------------------------------------------------------


async def test_a_refund_gives_the_price_back_and_a_reset_frees_only_member_and_server(
    store: TaskStore,
) -> None:
    limits = CreditLimits(daily_per_user=1000, daily_per_guild=1000, daily_global=1000)
    failed = await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    await store.transition(failed.id, TaskState.FAILED, error_code="provider_failed")
    assert await store.refund(failed.id)
    # refunded: counted nowhere, so a second 7-credit video fits everywhere
    kept = await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    assert await spend(store, CreditKind.DAILY_USER, user_id=1) == 700
    assert await spend(store, CreditKind.DAILY_GLOBAL) == 700
    await advance(store, kept.id, TaskState.DELIVERED)
    assert await store.reset_usage(100, 1) == 1
    # an admin's reset frees the member's and the server's credits ...
    assert await spend(store, CreditKind.DAILY_USER, user_id=1) == 0
    assert await spend(store, CreditKind.DAILY_GUILD, guild_id=100) == 0
    # ... but the money stays spent for the bot-wide limits and the month
    assert await spend(store, CreditKind.DAILY_GLOBAL) == 700
    assert await store.month_spent() == 700
    with pytest.raises(CreditsExceeded) as info:
        await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    assert info.value.refusal.kind is CreditKind.DAILY_GLOBAL


# --- races at the limit ------------------------------------------------------------------------


async def _race(stores: list[TaskStore], credits: CreditLimits, prices: list[int]) -> list[int]:
    """Fire one reservation per price at once, spread over the stores; the granted prices."""

    async def one(i: int) -> int:
        task = new_task(user_id=42, options=TaskOptions(), price_cents=prices[i])
        try:
            await stores[i % len(stores)].reserve(task, UNLIMITED, credits=credits)
        except CreditsExceeded:
            return 0
        return prices[i]

    return [p for p in await asyncio.gather(*(one(i) for i in range(len(prices)))) if p]


LIMITS = [
    CreditLimits(daily_per_user=2000),
    CreditLimits(daily_per_guild=2000),
    CreditLimits(daily_global=2000),
    CreditLimits(monthly_global=2000),
]
IDS = ["member", "server", "bot-day", "bot-month"]


@pytest.mark.parametrize("credits", LIMITS, ids=IDS)
async def test_100_presses_at_once_never_spend_a_credit_past_the_limit(
    shared_store: TaskStore, credits: CreditLimits
) -> None:
    granted = await _race([shared_store], credits, [PRO5] * 100)
    assert granted == [PRO5] * 5  # 17.5 credits; a sixth would be 21
    mixed = [STD5, STD10, PRO5, PRO10] * 25
    more = await _race([shared_store], credits, mixed)
    assert sum(granted) + sum(more) <= 2000
    assert 2000 - sum(granted) - sum(more) < STD5  # the cheap ones filled it up to the cent


@pytest.mark.parametrize("credits", LIMITS, ids=IDS)
async def test_100_presses_at_once_over_two_connections(
    database_url: str, credits: CreditLimits
) -> None:
    url = database_url
    a, b = await asyncio.gather(TaskStore.open(url), TaskStore.open(url))
    try:
        granted = await _race([a, b], credits, [PRO5, STD5] * 50)
        assert sum(granted) <= 2000
        assert sum(granted) > 2000 - STD5
        assert await a.credits_spent(CreditKind.DAILY_USER, user_id=42) == sum(granted)
        assert await b.month_spent() == sum(granted)
    finally:
        await a.close()
        await b.close()


# --- the month, a restart, a price change ------------------------------------------------------


async def test_a_restart_mid_month_keeps_the_months_spend(database_url: str) -> None:
    url = database_url
    clock = Clock(utc(2026, 10, 31, 23, 0))
    month = CreditLimits(monthly_global=2000)
    async with await TaskStore.open(url, now=clock) as store:
        await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=month)  # October
        clock.t = utc(2026, 11, 3, 9, 0)
        for _ in range(2):
            await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=month)
        assert await store.month_spent() == 1400
    clock.t = utc(2026, 11, 16, 12, 0)  # the bot restarts mid-month
    async with await TaskStore.open(url, now=clock) as store:
        assert await store.month_spent() == 1400  # October's video doesn't count
        await store.reserve(priced(mode="pro", duration="5"), UNLIMITED, credits=month)
        await store.reserve(priced(mode="std", duration="10"), UNLIMITED, credits=month)
        with pytest.raises(CreditsExceeded) as info:  # 19.5 spent: a 1-credit video fits ...
            await store.reserve(priced(mode="std", duration="10"), UNLIMITED, credits=month)
        refusal = info.value.refusal
        assert refusal.kind is CreditKind.MONTHLY_GLOBAL and refusal.left == 50
        assert refusal.frees_at == utc(2026, 12, 1)  # the cap frees when the next month starts
        with pytest.raises(CreditsExceeded):  # ... no: only half a credit is left
            await store.reserve(priced(), UNLIMITED, credits=month)
        clock.t = utc(2026, 12, 1, 0, 0, 1)
        await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=month)
        assert await store.month_spent() == 700


async def test_a_price_change_never_changes_what_running_tasks_reserved(
    database_url: str,
) -> None:
    url = database_url
    clock = Clock()
    limits = CreditLimits(daily_per_user=3000)
    async with await TaskStore.open(url, now=clock) as store:
        running = await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    dearer = PriceTable.from_credits(
        {("std", "5"): 2, ("std", "10"): 4, ("pro", "5"): 9, ("pro", "10"): 18}
    )
    async with await TaskStore.open(url, now=clock) as store:  # restarted with new prices
        assert await store.price_unpriced(dearer.price_of_options) == 0
        assert (await store.get(running.id)).price_cents == PRO10  # type: ignore[union-attr]
        with pytest.raises(ValueError, match="not an updatable"):
            await store.update(running.id, price_cents=1800)
        new = await store.reserve(
            new_task(options=TaskOptions(mode="pro", duration="10"), price_cents=1800),
            UNLIMITED,
            credits=limits,
        )
        assert await spend(store, CreditKind.DAILY_USER, user_id=1) == PRO10 + 1800
        await advance(store, running.id, TaskState.PROCESSING)
        await store.transition(running.id, TaskState.FAILED, error_code="provider_failed")
        await store.refund(running.id)  # gives back exactly what it reserved
        assert await spend(store, CreditKind.DAILY_USER, user_id=1) == new.price_cents


async def test_rows_from_before_prices_are_priced_once_at_start(store: TaskStore) -> None:
    old = await store.reserve(new_task(options=TaskOptions(mode="pro", duration="10")), UNLIMITED)
    plain = await store.reserve(new_task(options=TaskOptions()), UNLIMITED)
    async with store._db.connection() as conn:  # as the migration leaves them
        await conn.execute("UPDATE tasks SET price_cents = NULL")
    assert await store.price_unpriced(TABLE.price_of_options) == 2
    assert (await store.get(old.id)).price_cents == PRO10  # type: ignore[union-attr]
    assert (await store.get(plain.id)).price_cents == STD5  # type: ignore[union-attr]
    assert await store.price_unpriced(TABLE.price_of_options) == 0


async def test_a_negative_price_is_refused(store: TaskStore) -> None:
    with pytest.raises(ValueError):
        await store.reserve(new_task(price_cents=-1), UNLIMITED)


async def test_the_readme_example_is_what_the_bot_says(store: TaskStore, clock: Clock) -> None:
    """The README's credits example, played on the store: the same refusal and /quota line."""
    euro = PriceTable.from_credits(
        {("std", "5"): 1, ("std", "10"): 2, ("pro", "5"): "3.5", ("pro", "10"): 7},
        credit_price=Decimal("0.14"),
        currency="EUR",
    )
    limits = CreditLimits(daily_per_user=2000)
    clock.t = utc(2026, 11, 5, 9, 12)
    await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    clock.t = utc(2026, 11, 5, 10, 30)
    await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)
    clock.t = utc(2026, 11, 5, 12, 0)
    await store.reserve(priced(mode="pro", duration="5"), UNLIMITED, credits=limits)
    clock.t = utc(2026, 11, 5, 14, 0)
    with pytest.raises(CreditsExceeded) as info:
        await store.reserve(priced(mode="pro", duration="10"), UNLIMITED, credits=limits)

    def hour(unix: float, style: str) -> str:
        return datetime.fromtimestamp(unix, UTC).strftime("%H:%M")

    refusal = refusal_text("en", info.value.refusal, euro, when=hour)
    spent = await store.credits_spent(CreditKind.DAILY_USER, user_id=1)
    quota = quota_text("en", euro, limits.daily_per_user, spent).splitlines()[0]
    readme = " ".join((Path(__file__).parents[3] / "README.md").read_text().split())
    assert f"> {refusal}" in readme
    assert quota == "Credits today (last 24 h): 2.5 of 20 credits (≈ 2.80 EUR) left"
    assert "*Credits today (last 24 h): 2.5 of 20 credits (≈ 2.80 EUR) left*" in readme
    await store.reserve(priced(), UNLIMITED, credits=limits)  # "a 5 s std video still fits"
