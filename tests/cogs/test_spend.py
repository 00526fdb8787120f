"""The spend part of /kling-admin usage built directly: its lines, the chart, the CSV and what
happens when the CSV is larger than Discord takes."""

from __future__ import annotations

import csv
import gzip
import io
import time

from PIL import Image

from bot.quota import QuotaLimits
from bot.tasks import NewTask, TaskOptions
from cogs.services import ServiceBot
from cogs.spend import spend_report
from tests.fakes.discord import FakeDiscord


async def spend(bot: ServiceBot, guild_id: int, count: int) -> None:
    for n in range(count):
        await bot.store.reserve(
            NewTask(
                user_id=1000 + n % 7,
                guild_id=guild_id,
                channel_id=1,
                locale="en",
                prompt="p",
                options=TaskOptions(mode="pro", duration="10"),
                image_count=2,
                input_dir="",
                upload_limit=1,
                price_cents=700,
            ),
            QuotaLimits(),
        )


async def test_the_report_its_chart_and_a_csv_too_large_for_discord(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    guild_id = int(fake.guild_id)
    await bot.store.set_guild_limits(guild_id, credits_daily_per_guild=50_000)
    await spend(bot, guild_id, 60)
    await spend(bot, guild_id + 1, 3)  # another server's: never in this one's report
    report = await spend_report(bot, guild_id, "en", now=time.time(), with_csv=True)
    text = "\n".join(report.lines)
    assert "Last 7 days: 420 credits for 60 videos" in text, text
    assert "Top members, last 7 days: <@1000> 63 credits, <@1001> 63 credits" in text, text
    assert "The provider reported no charges for these videos." in text
    assert "The whole bot this month (UTC): 441 credits (no monthly cap)" in text
    chart, table = report.files
    with Image.open(chart.fp) as image:
        image.load()
        assert image.size == (800, 400)
    rows = list(csv.DictReader(io.TextIOWrapper(table.fp, encoding="utf-8", newline="")))
    assert len(rows) == 60 and {r["guild_id"] for r in rows} == {str(guild_id)}

    small = await spend_report(
        bot, guild_id, "en", now=time.time(), with_csv=True, upload_limit=2_000
    )
    [_, packed] = small.files
    assert packed.filename.endswith(".csv.gz")
    unpacked = gzip.decompress(packed.fp.read()).decode("utf-8")
    assert len(unpacked) > 2_000 and unpacked.count("\r\n") == 61
    tiny = await spend_report(bot, guild_id, "en", now=time.time(), with_csv=True, upload_limit=50)
    assert len(tiny.files) == 1 and tiny.csv_note is not None and "too large" in tiny.csv_note
