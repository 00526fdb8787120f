"""The monthly cap's alerts: 80 % and 100 %, exactly once each per month and place, across
restarts and a crash between the claim and the post."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from bot.credits import CreditAlert
from bot.engine import CreditCapWatch
from bot.pricing import PriceTable
from bot.store import TaskStore
from bot.tasks import TaskOptions
from tests.bot.store.helpers import UNLIMITED, Clock, new_task

CAP = 10_000  # 100 credits
TABLE = PriceTable.default()  # the cheapest video: 1 credit


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


@dataclass
class Poster:
    """Records the posts; a post may be refused, fail for now, or be "out" already."""

    posts: list[CreditAlert] = field(default_factory=list)
    looked: list[CreditAlert] = field(default_factory=list)
    out_already: dict[tuple[str, int, int], int] = field(default_factory=dict)
    refuse: set[int] = field(default_factory=set)
    down: int = 0

    async def post_credit_alert(self, alert: CreditAlert, *, look_first: bool) -> int:
        key = (alert.month, alert.percent, alert.channel_id)
        if look_first:
            self.looked.append(alert)
            if key in self.out_already:
                return self.out_already[key]
        if self.down:
            self.down -= 1
            raise RuntimeError("Discord is down")
        if alert.channel_id in self.refuse:
            return 0
        self.posts.append(alert)
        self.out_already[key] = 7000 + len(self.posts)
        return self.out_already[key]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[TaskStore]:
    """On both backends."""
    clock = Clock(utc(2026, 11, 10))
    async with await TaskStore.open(database_url, now=clock) as s:
        await s.set_log_channel(100, 500)
        await s.set_log_channel(101, 501)
        yield s


def clock_of(store: TaskStore) -> Clock:
    clock = store._now
    assert isinstance(clock, Clock)
    return clock


def watch(store: TaskStore, poster: Poster, cap: int | None = CAP) -> CreditCapWatch:
    return CreditCapWatch(store, cap=cap, prices=TABLE, poster=poster, clock=clock_of(store))


async def spend(store: TaskStore, cents: int) -> None:
    await store.reserve(new_task(options=TaskOptions(), price_cents=cents), UNLIMITED)


def said(poster: Poster) -> list[tuple[int, int]]:
    return [(alert.percent, alert.channel_id) for alert in poster.posts]


async def test_80_and_100_percent_once_each_per_month_and_channel(
    store: TaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    poster = Poster()
    cap = watch(store, poster)
    await spend(store, 7_999)
    assert await cap.check() == []
    await spend(store, 1)  # 80 % exactly
    with caplog.at_level(logging.WARNING, logger="bot.engine.credit_alerts"):
        await cap.check()
    assert said(poster) == [(80, 500), (80, 501)]
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("⚠️ 2026-11 · The bot has spent 80 credits of its monthly cap")
    await cap.check()
    await spend(store, 1_900)  # 99 %: one more 1-credit video still fits
    await cap.check()
    assert said(poster) == [(80, 500), (80, 501)]
    await spend(store, 1)  # 99.01 %: not even the cheapest video fits any more
    await cap.check()
    await cap.check()
    assert said(poster) == [(80, 500), (80, 501), (100, 500), (100, 501)]
    assert poster.posts[2].spent == 9_901 and poster.posts[2].cap == CAP
    clock_of(store).t = utc(2026, 12, 1, 0, 5)  # a new month: its spend starts at nothing
    await cap.check()
    assert len(poster.posts) == 4
    await spend(store, 8_500)
    await cap.check()
    assert said(poster)[4:] == [(80, 500), (80, 501)] and poster.posts[4].month == "2026-12"


async def test_a_jump_straight_past_the_cap_posts_only_the_highest(store: TaskStore) -> None:
    poster = Poster()
    await spend(store, 9_950)
    await watch(store, poster).check()
    assert said(poster) == [(100, 500), (100, 501)]
    claimed = await store.credit_alerts()
    assert sorted((a.percent, a.channel_id, a.message_id) for a in claimed) == [
        (80, 0, 0),
        (80, 500, 0),
        (80, 501, 0),
        (100, 0, 0),
        (100, 500, 7001),
        (100, 501, 7002),
    ]


async def test_a_restart_mid_month_posts_nothing_again(store: TaskStore) -> None:
    poster = Poster()
    await spend(store, 8_000)
    await watch(store, poster).check()
    clock_of(store).t = utc(2026, 11, 20)
    again = Poster()
    await watch(store, again).check()  # a new process, the same month
    assert again.posts == [] and again.looked == []
    await spend(store, 1_950)
    await watch(store, again).check()
    assert said(again) == [(100, 500), (100, 501)]


async def test_a_crash_between_the_claim_and_the_post_is_found_not_posted_twice(
    store: TaskStore,
) -> None:
    await spend(store, 8_000)
    for channel in (0, 500, 501):  # claimed, then the process died before or after posting
        await store.claim_credit_alert(
            CreditAlert("2026-11", 80, channel, 100, 8_000, CAP, started_at=clock_of(store).t)
        )
    poster = Poster(out_already={("2026-11", 80, 500): 4242})  # 500's post was out already
    await watch(store, poster).check()
    assert sorted(a.channel_id for a in poster.looked) == [500, 501]  # looked before posting
    assert said(poster) == [(80, 501)]
    done = {a.channel_id: a.message_id for a in await store.credit_alerts()}
    assert done == {0: 0, 500: 4242, 501: 7001}


async def test_discord_down_tries_again_and_a_refusing_channel_is_left(store: TaskStore) -> None:
    poster = Poster(down=1, refuse={501})
    await spend(store, 8_000)
    cap = watch(store, poster)
    await cap.check()  # 500 fails for now; 501 refuses for good
    assert said(poster) == []
    await cap.check()
    assert said(poster) == [(80, 500)] and [a.channel_id for a in poster.looked] == [500]
    await cap.check()
    assert said(poster) == [(80, 500)]
    done = {a.channel_id: a.message_id for a in await store.credit_alerts()}
    assert done == {0: 0, 500: 7001, 501: 0}


async def test_a_log_channel_set_later_gets_the_months_alert(store: TaskStore) -> None:
    poster = Poster()
    await spend(store, 8_000)
    cap = watch(store, poster)
    await cap.check()
    await store.set_log_channel(102, 502)
    await cap.check()
    assert said(poster) == [(80, 500), (80, 501), (80, 502)]


async def test_no_cap_no_alerts_and_the_engine_asks_only_when_due(store: TaskStore) -> None:
    poster = Poster()
    await spend(store, 1_000_000)
    uncapped = watch(store, poster, cap=None)
    assert not uncapped.wants_check(0.0)
    assert await uncapped.check() == [] and await store.credit_alerts() == []
    cap = watch(store, poster)
    assert cap.wants_check(0.0)  # at start
    await cap.run_check()
    assert not cap.wants_check(0.0)
    cap.nudge()  # a reservation
    assert cap.wants_check(0.0)
