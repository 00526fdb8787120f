"""Credit limits: which apply, exactly when a price fits, and the refusal a member reads."""

from __future__ import annotations

import string
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import load_settings
from bot.credits import (
    CreditAlert,
    CreditKind,
    CreditLimits,
    CreditRefusal,
    CreditsExceeded,
    check_credits,
    explain,
    month_key,
    month_start,
    monthly_alert_text,
    monthly_alerts_due,
    next_month_start,
    quota_text,
    refusal_text,
    resolve_credit_limits,
    spent_percent,
    window_start,
)
from bot.pricing import PriceTable
from bot.quota import DAY_SECONDS
from bot.strings import EN, NL
from bot.tasks import GuildSettings, QuotaOverride

DAY = DAY_SECONDS
TABLE = PriceTable.default()


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


def clock(unix: float, style: str) -> str:
    """A reader's clock for the tests: UTC, `18:40` for a time, `2026-12-01` for a date."""
    moment = datetime.fromtimestamp(unix, UTC)
    return moment.strftime("%H:%M") if style == "t" else moment.strftime("%Y-%m-%d")


def settings(**values: object) -> object:
    return load_settings(discord_token="t", cometapi_key="k", _env_file=None, **values)


# --- which limits apply ----------------------------------------------------------------------


def test_the_default_settings_set_no_credit_limit() -> None:
    limits = resolve_credit_limits(settings())  # type: ignore[arg-type]
    assert limits == CreditLimits()
    assert limits.checks(in_guild=True) == []


def test_limits_come_from_the_settings_and_a_server_may_change_its_own() -> None:
    defaults = settings(
        credits_daily_per_user="20",
        credits_daily_per_guild="100",
        credits_daily_global="500.5",
        credits_monthly_global="5000",
    )
    limits = resolve_credit_limits(defaults)  # type: ignore[arg-type]
    assert limits.checks(in_guild=True) == [
        (CreditKind.DAILY_USER, 2000),
        (CreditKind.DAILY_GUILD, 10_000),
        (CreditKind.DAILY_GLOBAL, 50_050),
        (CreditKind.MONTHLY_GLOBAL, 500_000),
    ]
    assert [k for k, _ in limits.checks(in_guild=False)] == [
        CreditKind.DAILY_USER,
        CreditKind.DAILY_GLOBAL,
        CreditKind.MONTHLY_GLOBAL,
    ]
    own = GuildSettings(1, credits_daily_per_user=750, credits_daily_per_guild=0)  # cents
    server = resolve_credit_limits(defaults, own)  # type: ignore[arg-type]
    assert server.daily_per_user == 750 and server.daily_per_guild is None  # 0 = no limit
    assert server.daily_global == 50_050 and server.monthly_global == 500_000


def test_roles_and_a_members_own_override_set_the_per_member_credits() -> None:
    defaults = settings(credits_daily_per_user="20")
    guild = GuildSettings(
        1,
        credits_daily_per_user=1000,
        role_overrides={
            7: QuotaOverride(credits_daily=1500),
            8: QuotaOverride(credits_daily=3000),
            9: QuotaOverride(daily=5),  # sets no credits: keeps the server's
        },
        user_overrides={42: QuotaOverride(credits_daily=200), 43: QuotaOverride(daily=1)},
    )
    resolve = resolve_credit_limits
    assert resolve(defaults, guild, [9], 1).daily_per_user == 1000  # type: ignore[arg-type]
    assert resolve(defaults, guild, [7, 8, 9], 1).daily_per_user == 3000  # type: ignore[arg-type]
    assert resolve(defaults, guild, [8], 42).daily_per_user == 200  # type: ignore[arg-type]
    assert resolve(defaults, guild, [8], 43).daily_per_user == 3000  # type: ignore[arg-type]
    guild_with_free_role = GuildSettings(1, role_overrides={7: QuotaOverride(credits_daily=0)})
    free = resolve(defaults, guild_with_free_role, [7], 1)  # type: ignore[arg-type]
    assert free.daily_per_user is None  # 0 (no limit) is the most generous
    exempt = resolve(defaults, guild, [], 1, exempt=True)  # type: ignore[arg-type]
    assert exempt.checks(in_guild=True) == []


def test_an_exempt_member_still_meets_the_bot_wide_limits() -> None:
    limits = CreditLimits(
        daily_per_user=100, daily_per_guild=100, daily_global=300, monthly_global=900, exempt=True
    )
    assert [k for k, _ in limits.checks(in_guild=True)] == [
        CreditKind.DAILY_GLOBAL,
        CreditKind.MONTHLY_GLOBAL,
    ]


# --- whether a price fits --------------------------------------------------------------------


def test_landing_exactly_on_a_limit_fits_and_one_cent_more_does_not() -> None:
    checks = [(CreditKind.DAILY_USER, 2000)]
    assert check_credits(700, checks, {CreditKind.DAILY_USER: 1300}) is None
    refusal = check_credits(700, checks, {CreditKind.DAILY_USER: 1301})
    assert refusal == CreditRefusal(CreditKind.DAILY_USER, price=700, limit=2000, spent=1301)
    assert refusal.left == 699 and not refusal.never_fits
    assert check_credits(700, checks, {}) is None  # nothing spent yet


def test_the_first_limit_that_bites_is_reported() -> None:
    limits = CreditLimits(daily_per_user=1000, daily_per_guild=1000, monthly_global=1000)
    spent = {
        CreditKind.DAILY_USER: 0,
        CreditKind.DAILY_GUILD: 900,
        CreditKind.MONTHLY_GLOBAL: 950,
    }
    refusal = check_credits(200, limits.checks(in_guild=True), spent)
    assert refusal is not None and refusal.kind is CreditKind.DAILY_GUILD
    refusal = check_credits(200, limits.checks(in_guild=False), spent)
    assert refusal is not None and refusal.kind is CreditKind.MONTHLY_GLOBAL


def test_a_negative_price_is_a_bug() -> None:
    with pytest.raises(ValueError):
        check_credits(-1, [], {})


@given(
    limit=st.integers(min_value=100, max_value=10_000),
    prices=st.lists(st.sampled_from([100, 200, 350, 700]), min_size=1, max_size=200),
)
def test_one_request_after_another_never_spends_past_the_limit(
    limit: int, prices: list[int]
) -> None:
    # What the store does in each reservation transaction, one after another.
    spent = 0
    checks = [(CreditKind.MONTHLY_GLOBAL, limit)]
    for price in prices:
        if check_credits(price, checks, {CreditKind.MONTHLY_GLOBAL: spent}) is None:
            spent += price
        else:
            assert spent + price > limit
    assert spent <= limit


# --- when enough frees -----------------------------------------------------------------------


def test_the_issues_example_reads_as_the_issue_says() -> None:
    now = utc(2026, 11, 5, 12, 0)
    oldest = utc(2026, 11, 4, 18, 40)
    spends = [(utc(2026, 11, 5, 9, 0), 600), (oldest, 300), (utc(2026, 11, 5, 1, 0), 700)]
    refusal = check_credits(
        700,
        [(CreditKind.DAILY_USER, 2000)],
        {CreditKind.DAILY_USER: 1600},
        options={"mode": "pro", "duration": "10", "prompt": "a cat"},
    )
    assert refusal is not None and (refusal.mode, refusal.duration) == ("pro", "10")
    refusal = explain(refusal, spends, now=now)
    assert refusal.frees_at == oldest + DAY and refusal.freed == 300
    message = refusal_text("en-US", refusal, TABLE, when=clock)
    assert message == (
        "A 10 s pro video costs 7 credits; you have 4 left today, 3 more free up at 18:40."
    )
    dutch = refusal_text("nl", refusal, TABLE, when=clock)
    assert dutch == (
        "Een 10 s pro-video kost 7 credits; je hebt vandaag nog 4 over, en 3 extra vanaf 18:40."
    )


def test_several_spends_may_have_to_leave_before_it_fits() -> None:
    now = 10 * DAY
    spends = [(now - 20_000, 100), (now - 30_000, 100), (now - 10_000, 500)]
    refusal = CreditRefusal(CreditKind.DAILY_GUILD, price=700, limit=1000, spent=700)
    explained = explain(refusal, spends, now=now)
    # 400 must leave: 100 (oldest), 100, then 500 → at the third, 700 have gone
    assert explained.frees_at == now - 10_000 + DAY and explained.freed == 700


def test_spends_that_dont_add_up_say_nothing_rather_than_guess() -> None:
    refusal = CreditRefusal(CreditKind.DAILY_USER, price=700, limit=1000, spent=900, mode="pro")
    refusal = replace(refusal, duration="10")
    explained = explain(refusal, [(0.0, 100)], now=1000.0)
    assert explained.frees_at is None
    message = refusal_text("en", explained, TABLE, when=clock)
    assert message == "A 10 s pro video costs 7 credits; you have 1 left today."


def test_a_price_above_the_limit_itself_never_fits_and_says_so() -> None:
    refusal = check_credits(
        700, [(CreditKind.DAILY_USER, 500)], {}, options={"mode": "pro", "duration": 10}
    )
    assert refusal is not None and refusal.never_fits
    assert explain(refusal, [], now=0.0).frees_at is None
    message = refusal_text("en", refusal, TABLE, when=clock)
    assert message == (
        "A 10 s pro video costs 7 credits, more than your daily limit of 5 credits. "
        "/quota shows what each option costs."
    )
    assert "/quotum" in refusal_text("nl", refusal, TABLE, when=clock)


def test_the_monthly_cap_frees_when_the_next_month_starts() -> None:
    now = utc(2026, 12, 31, 23, 59, 59)
    refusal = CreditRefusal(
        CreditKind.MONTHLY_GLOBAL, price=350, limit=100_000, spent=99_900, mode="pro"
    )
    explained = explain(refusal, [(now - 5, 99_900)], now=now)
    assert explained.frees_at == utc(2027, 1, 1) and explained.freed == 99_900
    message = refusal_text("en", explained, TABLE, when=clock)
    assert message == (
        "A 5 s pro video costs 3.5 credits; the bot has 1 left this month; "
        "its monthly budget starts again on 2027-01-01."
    )


@given(
    spends=st.lists(
        st.tuples(st.integers(min_value=0, max_value=86_399), st.sampled_from([100, 200, 350])),
        min_size=1,
        max_size=40,
    ),
    price=st.sampled_from([100, 200, 350, 700]),
    slack=st.integers(min_value=0, max_value=3000),
)
def test_at_the_time_it_names_the_price_fits_and_a_second_before_it_does_not(
    spends: list[tuple[int, int]], price: int, slack: int
) -> None:
    now = 100_000.0
    window = DAY
    timed = [(now - window + 1 + t, cents) for t, cents in spends]  # all inside the window
    spent = sum(cents for _, cents in timed)
    limit = max(price, spent + price - 1 - slack)  # never the price itself too dear
    refusal = check_credits(price, [(CreditKind.DAILY_USER, limit)], {CreditKind.DAILY_USER: spent})
    if spent + price <= limit:
        assert refusal is None
        return
    assert refusal is not None
    explained = explain(refusal, timed, now=now, window=window)
    assert explained.frees_at is not None

    def spent_at(moment: float) -> int:
        return sum(cents for created, cents in timed if created > moment - window)

    assert spent_at(explained.frees_at) + price <= limit
    assert spent_at(explained.frees_at - 1) + price > limit
    assert explained.freed == spent - spent_at(explained.frees_at)


# --- windows ---------------------------------------------------------------------------------


def test_months_are_calendar_months_in_utc() -> None:
    assert month_start(utc(2026, 11, 5, 14, 3)) == utc(2026, 11, 1)
    assert month_start(utc(2026, 11, 1)) == utc(2026, 11, 1)
    assert month_start(utc(2026, 10, 31, 23, 59, 59)) == utc(2026, 10, 1)
    assert next_month_start(utc(2026, 2, 28, 12)) == utc(2026, 3, 1)
    assert next_month_start(utc(2026, 12, 1)) == utc(2027, 1, 1)
    assert month_key(utc(2027, 1, 1)) == "2027-01"
    now = utc(2026, 11, 5, 14, 3)
    assert window_start(CreditKind.MONTHLY_GLOBAL, now) == utc(2026, 11, 1)
    assert window_start(CreditKind.DAILY_USER, now) == now - DAY


# --- the monthly cap in the log channel ------------------------------------------------------


def test_the_80_percent_alert_comes_at_80_percent() -> None:
    assert monthly_alerts_due(7_999, 10_000, cheapest=100) == ()
    assert monthly_alerts_due(8_000, 10_000, cheapest=100) == (80,)
    assert monthly_alerts_due(9_000, 10_000, cheapest=100, already=(80,)) == ()
    assert monthly_alerts_due(5_000, None, cheapest=100) == ()
    assert monthly_alerts_due(5_000, 0, cheapest=100) == ()


def test_the_100_percent_alert_comes_when_not_even_the_cheapest_video_fits() -> None:
    # the cap is never crossed, so spend may stop short of it
    assert monthly_alerts_due(9_900, 10_000, cheapest=100, already=(80,)) == ()
    assert monthly_alerts_due(9_950, 10_000, cheapest=100, already=(80,)) == (100,)
    assert monthly_alerts_due(10_000, 10_000, cheapest=100, already=(80, 100)) == ()
    # a jump straight to the end: both are due (announce the highest, record both)
    assert monthly_alerts_due(9_950, 10_000, cheapest=100) == (80, 100)


def test_the_alert_lines_name_the_spend_and_the_cap() -> None:
    now = utc(2026, 11, 20)
    eighty = monthly_alert_text("en", 80, spent=8_050, cap=10_000, now=now, table=TABLE, when=clock)
    assert eighty == (
        "⚠️ 2026-11 · The bot has spent 80.5 credits of its monthly cap of 100 credits (80 %) "
        "this month."
    )
    full = monthly_alert_text("nl", 100, spent=9_950, cap=10_000, now=now, table=TABLE, when=clock)
    assert "99,5 credits" in full and "2026-12-01" in full
    # the marker a restart finds the post by is the same in every language
    alert = CreditAlert("2026-11", 100, 5, 1, spent=9_950, cap=10_000, started_at=now)
    assert full.startswith(alert.marker + " ") and full.startswith("🛑 2026-11 · ")
    assert spent_percent(9_999, 10_000) == 99 and spent_percent(1, 0) == 0


def test_the_refusal_carries_no_more_than_amounts() -> None:
    error = CreditsExceeded(CreditRefusal(CreditKind.DAILY_GLOBAL, 700, 1000, 900))
    assert str(error) == "credits daily_global: a price of 700 cents with 900 of 1000 spent"
    assert error.refusal.kind == "daily_global"


def test_every_credit_string_exists_in_both_languages_with_the_same_placeholders() -> None:
    keys = [k for k in EN if k.startswith(("credits.", "chart.", "log.credits", "admin.spend"))]
    keys += ["quota.credits_left", "quota.credits_unlimited", "quota.prices"]
    assert len(keys) > 20
    for key in keys:
        fields = {name for _, name, _, _ in string.Formatter().parse(EN[key]) if name}
        dutch = {name for _, name, _, _ in string.Formatter().parse(NL[key]) if name}
        assert fields == dutch, key
    for kind in CreditKind:
        assert f"credits.refused.{kind.value}" in EN
        assert f"credits.too_dear.{kind.value}" in EN


def test_quota_shows_credits_left_and_what_each_option_costs() -> None:
    table = PriceTable.default()
    assert quota_text("en", table, 2000, 1600) == (
        "Credits today (last 24 h): 4 of 20 credits left\n"
        "What a video costs: 5 s std: 1 credit · 10 s std: 2 credits · 5 s pro: 3.5 credits"
        " · 10 s pro: 7 credits"
    )
    assert quota_text("nl", table, 2000, 2100).startswith(
        "Credits vandaag (laatste 24 u): nog 0 van 20 credits\nWat een video kost: "
    )
    assert quota_text("en", table, None, 5000).startswith("Credits: no daily limit\n")
