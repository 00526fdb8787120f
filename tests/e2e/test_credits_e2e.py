"""End to end: credits. Prices in /quota, a refusal with the price, what is left and when it
frees, credit limits set by an admin, the monthly cap's alert in the log channel exactly once
across a restart, and /kling-admin usage with its chart (PNG) and CSV — the real `python -m bot`
against the fakes."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from typing import Any

from PIL import Image

from tests.e2e.helpers import World, png
from tests.e2e.test_commands_e2e import ADMIN_MEMBER, admin, quota_text
from tests.fakes.discord import FakeInteraction

CB_DEFERRED = 5
#: The fake provider's charges, in its own units: 10 per second, pro twice std.
UNITS = {("std", "5"): "50", ("std", "10"): "100", ("pro", "5"): "100", ("pro", "10"): "200"}


def units(body: dict[str, Any]) -> str:
    return UNITS[(body.get("mode", "std"), body.get("duration", "5"))]


async def usage_followup(world: World, interaction: FakeInteraction) -> Any:
    """The follow-up that carries /kling-admin usage's report (after its deferral)."""
    callback = await interaction.wait_callback(5)
    assert callback.type == CB_DEFERRED, callback
    path = rf"^/webhooks/\d+/{re.escape(interaction.token)}$"
    await world.discord.wait_for(lambda: world.discord.find_requests("POST", path), 15)
    [followup] = world.discord.find_requests("POST", path)
    assert followup.status == 200, followup.response
    return followup


async def test_credits_end_to_end(world: World) -> None:
    log_channel = world.discord.add_text_channel("video-log")
    member = world.discord.add_user("member")
    other = world.discord.add_user("other")
    world.api.deduction_for = units
    settings = {
        "CREDITS_DAILY_PER_USER": "10",
        "CREDITS_MONTHLY_GLOBAL": "20",
        "CREDIT_PRICE": "0.14",
        "CREDIT_CURRENCY": "EUR",
    }
    async with world.bot(**settings):
        assert await admin(world, "log-channel", channel=log_channel)
        quota = await quota_text(world, member)
        assert "Credits today (last 24 h): 10 of 10 credits (≈ 1.40 EUR) left" in quota, quota
        assert "5 s std: 1 credit (≈ 0.14 EUR) · 10 s std: 2 credits (≈ 0.28 EUR)" in quota
        assert "10 s pro: 7 credits (≈ 0.98 EUR)" in quota

        first = await world.video([png(), png()], user=member, mode="pro", duration="10")
        assert "on its way" in await world.answer(first)
        dear = await world.video([png(), png()], user=member, mode="pro", duration="5")
        refusal = await world.answer(dear)
        assert refusal.startswith(
            "A 5 s pro video costs 3.5 credits (≈ 0.49 EUR); you have 3 left today, "
            "7 more free up at <t:"
        ), refusal
        cheap = await world.video([png(), png()], user=member, mode="std", duration="10")
        assert "on its way" in await world.answer(cheap)
        quota = await quota_text(world, member)
        assert "Credits today (last 24 h): 1 of 10 credits (≈ 1.40 EUR) left" in quota, quota

        # An admin lowers the server's per-member limit: the other member has 2.5 credits a day.
        answer = await admin(world, "limits", credits_per_user=2.5)
        assert "credits_per_user=2.5" in answer, answer
        bad = await admin(world, "limits", credits_per_user=2.555)
        assert "more than two decimals" in bad, bad
        too_dear = await world.video([png(), png()], user=other, mode="pro", duration="5")
        assert "more than your daily limit of 2.5 credits" in await world.answer(too_dear)
        # 9 credits this month, then 2 and 7 more: 18 of 20 is past 80 % of the monthly cap
        third = await world.video([png(), png()], user=other, mode="std", duration="10")
        assert "on its way" in await world.answer(third)
        await admin(world, "limits")  # back to the bot's default (10)
        fourth = await world.video([png(), png()], user=other, mode="pro", duration="10")
        assert "on its way" in await world.answer(fourth)
        await world.until(lambda: sum(t["state"] == "delivered" for t in world.tasks()) == 4, 30)

        def alerts() -> list[dict[str, Any]]:
            messages = world.discord.messages_in(log_channel["id"])
            return [m for m in messages if m["content"].startswith(("⚠️", "🛑"))]

        await world.discord.wait_for(lambda: alerts(), 10)
        [eighty] = alerts()
        assert re.match(
            r"⚠️ \d{4}-\d\d · The bot has spent 18 credits \(≈ 2.52 EUR\) of its monthly cap of "
            r"20 credits \(≈ 2.80 EUR\) \(90 %\) this month\.",
            eighty["content"],
        ), eighty["content"]

        report = await world.discord.slash_command(
            "kling-admin", {"csv": True}, subcommand="usage", member_permissions=ADMIN_MEMBER
        )
        followup = await usage_followup(world, report)

    # a restart in the same month: the alert is not posted again
    async with world.bot(**settings):
        await asyncio.sleep(1.0)
        busy = await world.video([png(), png()], mode="pro", duration="5")  # a fresh member
        refused = await world.answer(busy)
        assert "; the bot has 2 left this month; its monthly budget starts again on <t:" in refused
        await asyncio.sleep(0.5)
    assert len(alerts()) == 1

    tasks = world.tasks()
    assert [t["price_cents"] for t in tasks] == [700, 200, 200, 700]
    assert [t["provider_deduction"] for t in tasks] == ["200", "100", "100", "200"]

    body = followup.json
    [embed] = body["embeds"]
    text = embed["description"]
    assert "Last 7 days: 18 credits (≈ 2.52 EUR) for 4 videos" in text, text
    assert f"<@{member['id']}> 9 credits (≈ 1.26 EUR)" in text, text
    assert "The provider reported charges for 4 of these videos: 600 in its own units" in text
    assert "The whole bot this month (UTC): 18 credits (≈ 2.52 EUR) of its cap of 20" in text
    assert embed["image"]["url"] == "attachment://spend.png"
    files = {f.filename: f for f in followup.files}
    assert set(files) == {"spend.png", next(n for n in files if n.endswith(".csv"))}
    with Image.open(io.BytesIO(files["spend.png"].data)) as chart:
        chart.load()  # decodes every pixel
        assert chart.format == "PNG" and chart.size == (800, 400)
    [csv_name] = [n for n in files if n.endswith(".csv")]
    assert re.fullmatch(rf"usage-{world.discord.guild_id}-\d{{4}}-\d\d-\d\d\.csv", csv_name)
    rows = list(csv.DictReader(io.StringIO(files[csv_name].data.decode("utf-8"), newline="")))
    assert [int(r["task_id"]) for r in rows] == [t["id"] for t in tasks]
    assert [r["user_id"] for r in rows] == [str(t["user_id"]) for t in tasks]
    assert [(r["mode"], r["duration_s"]) for r in rows] == [
        ("pro", "10"),
        ("std", "10"),
        ("std", "10"),
        ("pro", "10"),
    ]
    assert [r["price_credits"] for r in rows] == ["7", "2", "2", "7"]
    assert [r["provider_deduction"] for r in rows] == ["200", "100", "100", "200"]
    assert {r["state"] for r in rows} == {"delivered"} and {r["quota"] for r in rows} == {"counted"}
