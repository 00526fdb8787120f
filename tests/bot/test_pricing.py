"""The price table: complete, exact to the cent, priced as the API defaults, shown in two languages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.config import Settings, load_settings
from bot.kling.models import KlingTask, MultiImageRequest, provider_deduction
from bot.pricing import (
    DEFAULT_PRICES,
    DURATIONS,
    MODES,
    PriceTable,
    UnknownOption,
    format_credits,
    format_money,
    option_text,
    price_list_text,
    price_setting_name,
    to_cents,
    to_credits,
)
from bot.tasks import TaskOptions


def settings(**values: object) -> Settings:
    return load_settings(discord_token="t", cometapi_key="k", _env_file=None, **values)


def test_every_option_the_api_accepts_has_a_setting_and_a_default_price() -> None:
    request_fields = MultiImageRequest.model_fields
    assert request_fields["mode"].annotation is not None  # the lists come from the API model
    for mode in MODES:
        for duration in DURATIONS:
            assert price_setting_name(mode, duration).lower() in Settings.model_fields
            assert (mode, duration) in DEFAULT_PRICES
    assert len(DEFAULT_PRICES) == len(MODES) * len(DURATIONS)


def test_the_default_table_is_the_documented_one() -> None:
    table = PriceTable.from_settings(settings())
    assert table == PriceTable.default()
    assert [(m, d, c) for m, d, c in table.items()] == [
        ("std", "5", 100),
        ("std", "10", 200),
        ("pro", "5", 350),
        ("pro", "10", 700),
    ]
    assert table.cheapest == 100


def test_a_left_out_option_is_priced_as_the_api_default() -> None:
    table = PriceTable.from_credits(
        {("std", "5"): 1, ("std", "10"): 2, ("pro", "5"): 3, ("pro", "10"): 6}
    )
    assert table.price() == table.price("std", "5") == 100
    assert table.price("pro") == 300
    assert table.price(None, 10) == table.price(duration="10") == 200
    assert table.price_of_options(TaskOptions()) == 100
    assert table.price_of_options(TaskOptions(mode="pro", duration="10")) == 600
    assert table.price_of_options(TaskOptions(mode="", duration="")) == 100
    with pytest.raises(UnknownOption):
        table.price("master", "5")
    with pytest.raises(UnknownOption):
        table.price("std", 7)


def test_the_operators_prices_are_used_exactly() -> None:
    table = PriceTable.from_settings(
        settings(
            price_std_5s="0.33",
            price_std_10s="0.66",
            price_pro_5s="1.15",
            price_pro_10s="2.30",
            credit_price="0.25",
            credit_currency="EUR",
        )
    )
    assert table.price("std", "5") == 33 and table.price("pro", "10") == 230
    # a thousand videos add up to the cent (floats would not: 0.33 * 1000 != 330.0 exactly)
    assert sum(table.price("std", "5") for _ in range(1000)) == 33_000
    assert table.money(33_000) == Decimal("82.5")
    assert table.amount_text(230, "en") == "2.3 credits (≈ 0.58 EUR)"


@pytest.mark.parametrize(
    "prices",
    [
        {("std", "5"): 1, ("std", "10"): 2, ("pro", "5"): 3},  # one missing
        {("std", "5"): 1, ("std", "10"): 2, ("pro", "5"): 3, ("pro", "10"): 0},  # free
        {("std", "5"): 1, ("std", "10"): 2, ("pro", "5"): 3, ("pro", "10"): -1},  # negative
        {("std", "5"): 1, ("std", "10"): 2, ("pro", "5"): 3, ("pro", "10"): 6, ("x", "5"): 1},
    ],
)
def test_an_incomplete_free_or_negative_table_is_refused(
    prices: dict[tuple[str, str], int],
) -> None:
    with pytest.raises(ValueError) as caught:
        PriceTable.from_credits(prices)
    assert "\n" not in str(caught.value)


def test_a_missing_price_is_named_by_its_setting() -> None:
    with pytest.raises(ValueError, match="PRICE_PRO_10S"):
        PriceTable.from_credits({("std", "5"): 1, ("std", "10"): 2, ("pro", "5"): 3})


def test_cents_are_exact_and_refuse_what_would_be_rounded() -> None:
    assert to_cents("3.5") == 350 and to_cents(Decimal("7")) == 700 and to_cents(2) == 200
    assert to_cents("1e3") == 100_000 and to_cents("0.01") == 1
    for bad in ("0.125", "nan", "inf", "three", "1,5"):
        with pytest.raises(ValueError):
            to_cents(bad)
    assert to_credits(350) == Decimal("3.5") and to_credits(0) == 0


@given(st.integers(min_value=0, max_value=10**15))
def test_cents_and_credits_round_trip(cents: int) -> None:
    assert to_cents(to_credits(cents)) == cents
    assert to_cents(format_credits(cents, "en")) == cents
    assert format_credits(cents, "nl") == format_credits(cents, "en").replace(".", ",")


def test_amounts_read_well_in_both_languages() -> None:
    table = PriceTable.from_credits(DEFAULT_PRICES, credit_price=Decimal("0.14"), currency="USD")
    assert table.amount_text(700, "en-US") == "7 credits (≈ 0.98 USD)"
    assert table.amount_text(350, "nl") == "3,5 credits (≈ 0,49 USD)"
    assert table.amount_text(100, "en-GB") == "1 credit (≈ 0.14 USD)"
    assert PriceTable.default().amount_text(1000, "en") == "10 credits"
    assert PriceTable.default().amount_text(5, "en") == "0.05 credits"
    assert option_text("en", "pro", "10") == "10 s pro"
    assert option_text("nl", None, None) == "5 s std"
    assert price_list_text(PriceTable.default(), "en") == (
        "5 s std: 1 credit · 10 s std: 2 credits · 5 s pro: 3.5 credits · 10 s pro: 7 credits"
    )
    assert "3,5 credits" in price_list_text(PriceTable.default(), "nl")


def test_money_rounds_half_up_and_shows_fractions_of_a_cent() -> None:
    assert format_money(Decimal("0.985"), "en") == "0.99"
    assert format_money(Decimal("0.0014"), "en") == "0.0014"
    assert format_money(Decimal("12"), "nl") == "12,00"
    assert format_money(Decimal("0"), "en") == "0.00"


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("5", "5"),
        (5, "5"),
        (0.5, "0.5"),
        (" 0.50 ", "0.5"),
        ("0", "0"),
        ("1e3", "1000"),
        ("", None),
        ("five", None),
        ("-1", None),
        ("NaN", None),
        (float("inf"), None),
        (True, None),
        (None, None),
        ([5], None),
        ({"units": 5}, None),
        ("9" * 100, None),
        ("=1+1", None),
    ],
)
def test_the_providers_deduction_is_kept_only_as_a_plain_number(
    raw: object, kept: str | None
) -> None:
    assert provider_deduction(raw) == kept
    answer = {"task_id": "1", "final_unit_deduction": raw}
    assert KlingTask.model_validate(answer).final_unit_deduction == kept
