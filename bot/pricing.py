"""What a video costs, in credits: the price table, exact amounts, and how they are shown.

A credit is the operator's unit of spend: by default a 5-second std video costs 1 credit and the
other options are priced relative to it (PRICE_* settings). Amounts are exact: the code and the
store hold them as whole **cents of a credit** (1 credit = 100), never as floats, so a ledger of
thousands of 3.5-credit videos adds up to the last cent. The operator may also say what one
credit costs in their currency (CREDIT_PRICE, CREDIT_CURRENCY); that is for display only.

A request's price is looked up from its options when it is reserved and stored with the task,
so a price change never changes what a running task reserved. An option the request leaves
out is priced as the API's default for it (std, 5 s).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Protocol, get_args

from bot.kling.models import Duration, Mode
from bot.strings import DUTCH, language, text
from bot.tasks import TaskOptions

#: Cents of a credit in one credit: every amount in the code and the store is a whole number
#: of them.
CENTS_PER_CREDIT = 100
#: The options the price depends on, in the order they are shown; the same lists the API
#: model accepts, so a new mode or duration there can't be left unpriced here.
MODES: tuple[str, ...] = get_args(Mode)
DURATIONS: tuple[str, ...] = get_args(Duration)
#: What the API uses when a request leaves the option out.
DEFAULT_MODE = "std"
DEFAULT_DURATION = "5"
#: The defaults, in credits: 10 s costs twice 5 s (true at every provider we compared), pro
#: costs 3.5× std, the top of the range we found (1.7-3.5×): a cap in credits then errs on
#: the side of stopping early, never of spending past what the operator meant.
DEFAULT_PRICES: Mapping[tuple[str, str], Decimal] = {
    ("std", "5"): Decimal("1"),
    ("std", "10"): Decimal("2"),
    ("pro", "5"): Decimal("3.5"),
    ("pro", "10"): Decimal("7"),
}


class UnknownOption(ValueError):
    """A mode or duration the price table has no price for."""


class PriceSettings(Protocol):
    """The price settings (`bot.config.Settings` satisfies this)."""

    @property
    def price_std_5s(self) -> Decimal:
        """Credits for a 5 s std video."""
        ...

    @property
    def price_std_10s(self) -> Decimal:
        """Credits for a 10 s std video."""
        ...

    @property
    def price_pro_5s(self) -> Decimal:
        """Credits for a 5 s pro video."""
        ...

    @property
    def price_pro_10s(self) -> Decimal:
        """Credits for a 10 s pro video."""
        ...

    @property
    def credit_price(self) -> Decimal | None:
        """What one credit costs in CREDIT_CURRENCY, or None to show no money."""
        ...

    @property
    def credit_currency(self) -> str:
        """The currency CREDIT_PRICE is in, as shown (e.g. USD, EUR, €)."""
        ...


def price_setting_name(mode: str, duration: str) -> str:
    """The setting that prices one option, e.g. `PRICE_PRO_10S`."""
    return f"PRICE_{mode.upper()}_{duration}S"


def to_cents(credits: Decimal | int | str) -> int:
    """An exact amount of credits as whole cents; more than two decimals is a ValueError."""
    try:
        amount = Decimal(credits) if not isinstance(credits, Decimal) else credits
    except InvalidOperation:
        raise ValueError(f"{credits!r} is not a number") from None
    if not amount.is_finite():
        raise ValueError(f"{credits!r} is not a finite number")
    cents = amount * CENTS_PER_CREDIT
    if cents != cents.to_integral_value():
        raise ValueError(f"{credits!r} has more than two decimals")
    return int(cents)


def to_credits(cents: int) -> Decimal:
    """Whole cents as an exact Decimal of credits (350 → 3.5)."""
    return Decimal(cents) / CENTS_PER_CREDIT


def _plain(value: Decimal) -> str:
    """A Decimal without exponent and without trailing zeros (1E+3 → 1000, 3.50 → 3.5)."""
    value = value.normalize()
    if value == value.to_integral_value():
        return f"{value:.0f}"
    return f"{value:f}"


def format_number(value: Decimal, locale: str | None) -> str:
    """A plain number in the reader's language: `3.5` in English, `3,5` in Dutch."""
    shown = _plain(value)
    return shown.replace(".", ",") if language(locale) == DUTCH else shown


def format_credits(cents: int, locale: str | None) -> str:
    """An amount of credits as a bare number in the reader's language (350 → 3.5 / 3,5)."""
    return format_number(to_credits(cents), locale)


def format_money(amount: Decimal, locale: str | None) -> str:
    """A money amount with two decimals (0.98), or four when it is less than a cent."""
    places = Decimal("0.01") if amount == 0 or abs(amount) >= Decimal("0.01") else Decimal("0.0001")
    shown = f"{amount.quantize(places, rounding=ROUND_HALF_UP):f}"
    return shown.replace(".", ",") if language(locale) == DUTCH else shown


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The price in cents of a credit of every option, and what a credit costs in money.

    Complete by construction: every mode × duration the API model accepts has a price, each
    more than 0 (a free option would slip past every credit limit, the monthly cap too).
    """

    cents: Mapping[tuple[str, str], int]
    credit_price: Decimal | None = None
    currency: str = "USD"
    _ordered: tuple[tuple[str, str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expected = {(mode, duration) for mode in MODES for duration in DURATIONS}
        missing = expected - set(self.cents)
        if missing:
            names = ", ".join(price_setting_name(m, d) for m, d in sorted(missing))
            raise ValueError(f"the price table has no price for {names}")
        unknown = set(self.cents) - expected
        if unknown:
            raise ValueError(f"the price table prices unknown options: {sorted(unknown)}")
        for (mode, duration), cents in self.cents.items():
            if isinstance(cents, bool) or not isinstance(cents, int) or cents <= 0:
                raise ValueError(
                    f"{price_setting_name(mode, duration)} must be more than 0 (it is {cents!r})"
                )
        if self.credit_price is not None and not (
            self.credit_price.is_finite() and self.credit_price > 0
        ):
            raise ValueError("the price of a credit must be more than 0")
        ordered = tuple((m, d, self.cents[(m, d)]) for m in MODES for d in DURATIONS)
        object.__setattr__(self, "cents", dict(self.cents))
        object.__setattr__(self, "_ordered", ordered)

    @classmethod
    def from_credits(
        cls,
        prices: Mapping[tuple[str, str], Decimal | int | str],
        *,
        credit_price: Decimal | None = None,
        currency: str = "USD",
    ) -> PriceTable:
        """A table from prices in credits (each exact to the cent)."""
        return cls(
            {key: to_cents(value) for key, value in prices.items()},
            credit_price=credit_price,
            currency=currency,
        )

    @classmethod
    def default(cls) -> PriceTable:
        """The documented default prices (1, 2, 3.5 and 7 credits), no money shown."""
        return cls.from_credits(DEFAULT_PRICES)

    @classmethod
    def from_settings(cls, settings: PriceSettings) -> PriceTable:
        """The table the operator configured (PRICE_*, CREDIT_PRICE, CREDIT_CURRENCY)."""
        prices = {
            (mode, duration): getattr(settings, price_setting_name(mode, duration).lower())
            for mode in MODES
            for duration in DURATIONS
        }
        return cls.from_credits(
            prices, credit_price=settings.credit_price, currency=settings.credit_currency
        )

    def price(self, mode: str | None = None, duration: str | int | None = None) -> int:
        """The price in cents of one request; a left-out option is the API's default."""
        key = (
            DEFAULT_MODE if mode is None else str(mode),
            DEFAULT_DURATION if duration is None else str(duration),
        )
        try:
            return self.cents[key]
        except KeyError:
            raise UnknownOption(f"no price for mode {key[0]!r}, duration {key[1]!r}") from None

    def price_of_options(self, options: TaskOptions) -> int:
        """The price of a task's options (a mode or duration left out is the API's default)."""
        return self.price(options.mode or None, options.duration or None)

    @property
    def cheapest(self) -> int:
        """The lowest price of any option, in cents."""
        return min(self.cents.values())

    def items(self) -> tuple[tuple[str, str, int], ...]:
        """Every (mode, duration, cents), std before pro and short before long."""
        return self._ordered

    def money(self, cents: int) -> Decimal | None:
        """What an amount of credits costs in the operator's currency, or None when not set."""
        if self.credit_price is None:
            return None
        return to_credits(cents) * self.credit_price

    def amount_text(self, cents: int, locale: str | None) -> str:
        """An amount for a reader: `7 credits (≈ 0.98 USD)`, or `7 credits` without a price."""
        key = "credits.amount_one" if cents == CENTS_PER_CREDIT else "credits.amount"
        shown = text(locale, key, amount=format_credits(cents, locale))
        money = self.money(cents)
        if money is None:
            return shown
        return text(
            locale,
            "credits.with_money",
            credits=shown,
            money=format_money(money, locale),
            currency=self.currency,
        )


def option_text(locale: str | None, mode: str | None, duration: str | int | None) -> str:
    """An option as a reader says it: `10 s pro`."""
    return text(
        locale,
        "credits.option",
        mode=mode or DEFAULT_MODE,
        duration=DEFAULT_DURATION if duration is None else duration,
    )


def price_list_text(table: PriceTable, locale: str | None) -> str:
    """What each option costs, one short line: `5 s std: 1 credit · 10 s std: 2 credits · …`."""
    return " · ".join(
        text(
            locale,
            "credits.price_item",
            option=option_text(locale, mode, duration),
            price=table.amount_text(cents, locale),
        )
        for mode, duration, cents in table.items()
    )
