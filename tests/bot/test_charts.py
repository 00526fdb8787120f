"""The daily-spend chart: a real PNG that shows what it was given, whatever it was given."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal

import pytest
from PIL import Image

from bot.charts import (
    BACKGROUND,
    BAR,
    CAP,
    HEIGHT,
    MUTED,
    TEXT,
    WIDTH,
    compact_number,
    spend_chart_png,
)

START = date(2026, 10, 12)


def days_of(values: list[int], start: date = START) -> list[tuple[date, int]]:
    return [(start + timedelta(days=i), cents) for i, cents in enumerate(values)]


def decode(png: bytes) -> Image.Image:
    """The chart as saved: a palette PNG without transparency (opaque on either theme)."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "P"
    assert "transparency" not in image.info
    image.load()
    return image


def near(pixel: Sequence[int], colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def per_column(image: Image.Image, colour: tuple[int, int, int]) -> list[int]:
    """How many pixels of (about) `colour` each column holds."""
    palette = image.getpalette() or []
    indexes = [i for i in range(len(palette) // 3) if near(palette[3 * i : 3 * i + 3], colour)]
    data = image.tobytes()
    width = image.size[0]
    columns = [data[x::width] for x in range(width)]
    return [sum(column.count(bytes([i])) for i in indexes) for column in columns]


def bar_runs(image: Image.Image) -> list[tuple[int, int, int]]:
    """Each bar as (first column, last column, height in pixels), left to right."""
    heights = per_column(image, BAR)
    runs: list[tuple[int, int, int]] = []
    start = None
    for x, h in enumerate([*heights, 0]):
        if h and start is None:
            start = x
        elif not h and start is not None:
            runs.append((start, x - 1, max(heights[start:x])))
            start = None
    return runs


def luminance(colour: tuple[int, int, int]) -> float:
    def channel(value: int) -> float:
        v = value / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_a_month_of_spend_is_a_small_opaque_png_with_one_bar_per_spending_day() -> None:
    random.seed(7)
    values = [random.choice([0, 100, 350, 700, 1200, 2450, 3000]) for _ in range(31)]
    png = spend_chart_png(days_of(values), title="Credits spent per day (UTC)", cap=3000)
    assert len(png) < 40_000, len(png)
    image = decode(png)  # opaque: it reads the same on either theme
    assert image.size == (WIDTH, HEIGHT)
    runs = bar_runs(image)
    spending = [v for v in values if v]
    assert len(runs) == len(spending)
    # taller spend, taller bar (equal spend, equal bar within a pixel of rounding)
    for (_, _, h1), v1 in zip(runs, spending, strict=True):
        for (_, _, h2), v2 in zip(runs, spending, strict=True):
            if v1 > v2:
                assert h1 > h2
            elif v1 == v2:
                assert abs(h1 - h2) <= 1


def test_the_newest_day_is_on_the_right() -> None:
    image = decode(spend_chart_png(days_of([0] * 6 + [500]), title="t"))
    ((first, _, _),) = bar_runs(image)
    assert first > WIDTH * 0.8


def test_the_cap_is_a_line_in_its_own_colour_and_only_when_given() -> None:
    def cap_pixels(png: bytes) -> int:
        return sum(per_column(decode(png), CAP))

    assert cap_pixels(spend_chart_png(days_of([100, 200]), title="t")) == 0
    assert cap_pixels(spend_chart_png(days_of([100, 200]), title="t", cap=5000)) > 300
    # a cap above every bar still fits in the picture
    with_label = spend_chart_png(days_of([100, 200]), title="t", cap=10**6, cap_label="cap 10000")
    assert cap_pixels(with_label) > 300


@pytest.mark.parametrize(
    "values",
    [
        [0] * 7,  # nothing spent
        [0],  # one day, nothing
        [350],  # one day
        [1] * 31,  # the smallest spend, every day
        [9_000_000_000_000_000_000 // (i + 1) for i in range(31)],  # the largest a ledger holds
        [random.Random(3).randrange(0, 10**6) for _ in range(90)],  # more days than a month
    ],
)
def test_any_spend_gives_a_chart(values: list[int]) -> None:
    png = spend_chart_png(days_of(values), title="Credits spent per day (UTC)", cap=700)
    image = decode(png)
    assert image.size == (WIDTH, HEIGHT)
    assert len(png) < 40_000
    assert len(bar_runs(image)) <= sum(1 for v in values if v)
    if sum(values) and len(values) <= 31:
        assert len(bar_runs(image)) == sum(1 for v in values if v)  # even 0.01 credit shows


def test_nothing_to_draw_or_negative_spend_is_refused() -> None:
    with pytest.raises(ValueError):
        spend_chart_png([], title="t")
    with pytest.raises(ValueError):
        spend_chart_png(days_of([100, -1]), title="t")
    with pytest.raises(ValueError):
        spend_chart_png(days_of([100]), title="t", cap=-5)


def test_text_and_bars_stand_out_from_the_chart_background() -> None:
    assert contrast(TEXT, BACKGROUND) >= 4.5
    assert contrast(MUTED, BACKGROUND) >= 4.5
    assert contrast(CAP, BACKGROUND) >= 4.5
    assert contrast(BAR, BACKGROUND) >= 3.0  # WCAG's minimum for graphics


@pytest.mark.parametrize(
    ("value", "english", "dutch"),
    [
        (Decimal(0), "0", "0"),
        (Decimal("2.5"), "2.5", "2,5"),
        (Decimal(750), "750", "750"),
        (Decimal(12_000), "12k", "12k"),
        (Decimal(1_500_000), "1.5M", "1,5M"),
        (Decimal(3 * 10**9), "3B", "3B"),
        (Decimal(4 * 10**13), "40T", "40T"),
    ],
)
def test_axis_numbers_are_short(value: Decimal, english: str, dutch: str) -> None:
    assert compact_number(value, "en") == english
    assert compact_number(value, "nl") == dutch
