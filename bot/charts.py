"""A small PNG bar chart of spend per day, drawn with Pillow (no plotting library).

One bar per day, credits on the left axis, the day of the month under each bar, and an
optional cap as a dashed line. The picture is opaque on a dark card of its own, so it reads
the same in Discord's dark and light themes, and is saved with a small palette: a 31-day
chart is a few kilobytes. Every input is handled: all zeros, one day, many days, amounts up
to the largest a 64-bit ledger can hold.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from PIL import Image, ImageDraw, ImageFont

from bot.pricing import CENTS_PER_CREDIT, format_number

WIDTH = 800
HEIGHT = 400
#: Colours (RGB): Discord's own dark card and text colours, a light blurple for bars, a red for
#: the cap. Text has at least 4.5:1 contrast on the card, the bars at least 3:1 (WCAG AA).
BACKGROUND = (43, 45, 49)
TEXT = (242, 243, 245)
MUTED = (181, 186, 193)
GRID = (78, 80, 88)
BAR = (108, 122, 255)
CAP = (255, 110, 114)
TITLE_SIZE = 20
LABEL_SIZE = 15
MAX_BAR_WIDTH = 56
_PAD = 14
_SUFFIXES = ((Decimal(10) ** 12, "T"), (Decimal(10) ** 9, "B"), (Decimal(10) ** 6, "M"))

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def _font(size: int) -> Font:
    """Pillow's built-in font at `size` (a scalable one where Pillow has FreeType)."""
    return ImageFont.load_default(size=size)


def _nice_step(span: Decimal, ticks: int = 4) -> Decimal:
    """A round step (1, 2 or 5 × a power of ten) that splits `span` in about `ticks` parts."""
    raw = span / ticks
    exponent = math.floor(math.log10(raw))
    base = Decimal(10) ** exponent
    for factor in (1, 2, 5, 10):
        step = base * factor
        if step >= raw:
            return step
    return base * 10  # not reached: factor 10 always covers raw


def compact_number(value: Decimal, locale: str | None) -> str:
    """An axis label: `750`, `2.5`, `12k`, `1.5M`, `3B`, `40T` (Dutch with a comma)."""
    for size, suffix in _SUFFIXES:
        if abs(value) >= size:
            return format_number(_round(value / size), locale) + suffix
    if abs(value) >= 10_000:
        return format_number(_round(value / 1000), locale) + "k"
    return format_number(_round(value), locale)


def _round(value: Decimal) -> Decimal:
    """At most two decimals, and none from 100 on (an axis needs no more)."""
    places = Decimal(1) if abs(value) >= 100 else Decimal("0.01")
    return value.quantize(places)


def _text_size(draw: ImageDraw.ImageDraw, value: str, font: Font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), value, font=font)
    return int(right - left), int(bottom - top)


def spend_chart_png(
    days: Sequence[tuple[date, int]],
    *,
    title: str,
    cap: int | None = None,
    cap_label: str | None = None,
    locale: str | None = None,
) -> bytes:
    """A PNG bar chart of credits per day.

    `days` holds (day, cents of a credit) oldest first, zero days included (see
    `bot.usage.daily_totals`); `cap` (cents) draws a dashed line labelled `cap_label`.
    Raises ValueError for no days or a negative amount.
    """
    if not days:
        raise ValueError("a chart needs at least one day")
    if any(cents < 0 for _, cents in days) or (cap is not None and cap < 0):
        raise ValueError("spend is never negative")
    values = [Decimal(cents) / CENTS_PER_CREDIT for _, cents in days]
    cap_value = None if not cap else Decimal(cap) / CENTS_PER_CREDIT
    highest = max([*values, cap_value or Decimal(0)])
    if highest == 0:
        highest = Decimal(1)
    step = _nice_step(highest)
    tick_count = math.ceil(highest / step)
    top = step * tick_count

    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, label_font = _font(TITLE_SIZE), _font(LABEL_SIZE)

    tick_labels = [compact_number(step * i, locale) for i in range(tick_count + 1)]
    label_width = max(_text_size(draw, label, label_font)[0] for label in tick_labels)
    _, label_height = _text_size(draw, "0123456789", label_font)
    _, title_height = _text_size(draw, title or "0", title_font)
    left = _PAD + label_width + 10
    right = WIDTH - _PAD
    plot_top = _PAD + title_height + 18
    plot_bottom = HEIGHT - _PAD - label_height - 10
    plot_height = plot_bottom - plot_top

    draw.text((_PAD, _PAD), title, fill=TEXT, font=title_font)

    def y_of(value: Decimal) -> int:
        return plot_bottom - round(float(value / top) * plot_height)

    for i, label in enumerate(tick_labels):
        y = y_of(step * i)
        draw.line([(left, y), (right, y)], fill=GRID, width=1)
        width, _ = _text_size(draw, label, label_font)
        draw.text((left - 10 - width, y), label, fill=MUTED, font=label_font, anchor="lm")

    slot = (right - left) / len(days)
    bar_width = max(1, min(MAX_BAR_WIDTH, round(slot * 0.7)))
    widest_day = _text_size(draw, "28", label_font)[0] + 4
    stride = max(1, math.ceil(widest_day / slot))
    last = len(days) - 1
    for index, ((day, _), value) in enumerate(zip(days, values, strict=True)):
        centre = left + slot * (index + 0.5)
        if value > 0:
            y = min(y_of(value), plot_bottom - 1)  # the smallest spend still shows
            x0 = round(centre - bar_width / 2)
            draw.rectangle([(x0, y), (x0 + bar_width - 1, plot_bottom - 1)], fill=BAR)
        if (last - index) % stride == 0:  # the newest day is always labelled
            draw.text(
                (centre, plot_bottom + 6), str(day.day), fill=MUTED, font=label_font, anchor="mt"
            )

    if cap_value is not None:
        y = y_of(cap_value)
        for x in range(left, right, 12):
            draw.line([(x, y), (min(x + 6, right), y)], fill=CAP, width=2)
        if cap_label:
            draw.text((right, y - 4), cap_label, fill=CAP, font=label_font, anchor="rb")

    out = io.BytesIO()
    image.quantize(colors=32, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()
