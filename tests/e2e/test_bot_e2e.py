"""The real bot process (`python -m bot`) against a fake Discord and a fake CometAPI.

Every scenario asserts what Discord and the API actually received. The fake Discord checks
each request against Discord's OpenAPI description; `World.check_clean` fails a test on any
request Discord would refuse, any call the fake doesn't know, or a secret in the traffic.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import os

import pytest
from PIL import Image

from tests.e2e.conftest import on_both_backends, run_bot_process
from tests.e2e.helpers import EPHEMERAL, World, png
from tests.fakes.cometapi import MP4_BYTES


@pytest.mark.parametrize("count", [2, 4])
@on_both_backends
async def test_happy_path(world: World, count: int) -> None:
    images = [png(400 + 20 * i, 400, (40 * i, 90, 200)) for i in range(count)]
    async with world.bot():
        interaction = await world.video(images, duration="10", mode="pro")
        callback = await interaction.wait_callback(3)
        assert callback.type == 5, "deferred first"
        assert callback.data and callback.data.get("flags", 0) & EPHEMERAL
        answer = await world.answer(interaction)
        assert "on its way" in answer
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await asyncio.sleep(0.5)
    [submit] = world.api.submits
    assert [item["image"] for item in submit.body["image_list"]] == [
        base64.b64encode(data).decode() for data in images
    ]
    assert submit.body["duration"] == "10" and submit.body["mode"] == "pro"
    assert submit.body["model_name"] == "kling-v1-6"
    [thread] = world.discord.threads
    [upload] = world.uploads()
    assert upload.path == f"/channels/{thread['id']}/messages"
    assert [f.data for f in upload.files] == [MP4_BYTES]
    assert f"<@{world.discord.user['id']}>" in upload.json["content"]
    buttons = [c["custom_id"] for row in upload.json["components"] for c in row["components"]]
    [task] = world.tasks()
    assert buttons == [
        f"kling:regen:{task['id']}",
        f"kling:details:{task['id']}",
        f"kling:delete:{task['id']}",
    ]
    assert task["state"] == "delivered"
    status = world.discord.message(str(task["status_message_id"]))
    assert status["channel_id"] == str(world.discord.channel_id)
    assert thread["id"] == status["id"], "the thread hangs on the status message"
    assert world.discord.ack_latencies[interaction.id] < 3


def encoded(image_format: str, width: int = 400, height: int = 400) -> bytes:
    """A real image in another format."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 160, 90)).save(buffer, image_format)
    return buffer.getvalue()


def noise_png(min_bytes: int) -> bytes:
    """A PNG of random pixels, at least `min_bytes` big (noise doesn't compress)."""
    side = int((min_bytes / 3) ** 0.5) + 16
    return png_from(Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)))


def png_from(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


async def test_every_broken_image_rule_is_refused_before_anything_is_spent(world: World) -> None:
    good = png()
    truncated = png(500, 500)
    cases = {
        "too_small": (png(299, 400), "299×400 px, needs at least 300×300"),
        "aspect": (png(1000, 399), "needs between 1:2.5 and 2.5:1"),
        "not_image": (b"just some text, not a picture" * 20, "not an image file"),
        "format": (encoded("WEBP"), "WEBP isn't accepted — use JPG or PNG"),
        "corrupt": (truncated[: len(truncated) // 2], "damaged or incomplete"),
        "too_big": (noise_png(10 * 1024 * 1024 + 50_000), "must be at most 10 MB"),
    }
    async with world.bot(IMAGE_AUTOFIX="false"):
        for name, (bad, expected) in cases.items():
            first = world.discord.add_attachment("img1.png", good, "image/png")
            second = world.discord.add_attachment("img2.png", bad, "image/png")
            interaction = await world.discord.slash_command(
                "video", {"image1": first, "image2": second, "prompt": "move"}
            )
            callback = await interaction.wait_callback(3)
            assert callback.data and callback.data.get("flags", 0) & EPHEMERAL
            answer = await world.answer(interaction)
            assert expected in answer, (name, answer)
            assert "image 2 (img2.png)" in answer
        # Several problems at once are all reported together.
        first = world.discord.add_attachment("a.png", png(250, 250), "image/png")
        second = world.discord.add_attachment("b.webp", encoded("WEBP"), "image/webp")
        interaction = await world.discord.slash_command(
            "video", {"image1": first, "image2": second, "prompt": "move"}
        )
        answer = await world.answer(interaction)
        assert "image 1 (a.png): 250×250 px" in answer and "image 2 (b.webp): WEBP" in answer
    assert world.api.requests == [], "no API call"
    assert world.tasks() == [], "no quota used"
    assert world.posts(str(world.discord.channel_id)) == [], "nothing public"


async def test_fixable_images_are_converted_and_the_user_is_told(world: World) -> None:
    async with world.bot():
        first = world.discord.add_attachment("cat.webp", encoded("WEBP"), "image/webp")
        second = world.discord.add_attachment("dog.gif", encoded("GIF"), "image/gif")
        interaction = await world.discord.slash_command(
            "video", {"image1": first, "image2": second, "prompt": "run"}
        )
        answer = await world.answer(interaction)
        await world.discord.wait_for(lambda: world.uploads(), 20)
    assert "on its way" in answer and "converted WEBP to PNG" in answer
    [submit] = world.api.submits
    for item in submit.body["image_list"]:
        assert base64.b64decode(item["image"]).startswith(b"\x89PNG")


async def test_provider_failure_is_told_in_the_thread_and_refunded(world: World) -> None:
    world.api.outcome = "failed"
    async with world.bot():
        await world.video([png(), png(500, 300)])
        await world.discord.wait_for(
            lambda: world.discord.threads and world.posts(world.discord.threads[0]["id"]), 20
        )
        [notice] = world.posts(world.discord.threads[0]["id"])
    assert "couldn't be made" in notice.json["content"]
    assert world.api.failure_message in notice.json["content"]
    assert "doesn't count against your quota" in notice.json["content"]
    [task] = world.tasks()
    assert task["state"] == "failed" and task["quota_refunded"] == 1


async def test_error_bursts_while_polling_still_deliver(world: World) -> None:
    world.api.finish_after = 0.5
    world.api.add_fault("server_error", on="query", times=4)
    world.api.add_fault("rate_limit", on="query", times=3, retry_after=0.2)
    async with world.bot():
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.uploads(), 40)
    assert len(world.api.submits) == 1


async def test_provider_concurrency_limit_queues_and_finishes(world: World) -> None:
    world.api.max_concurrent = 1
    world.api.finish_after = 0.4
    async with world.bot(KLING_MAX_CONCURRENT_TASKS="3", QUOTA_CONCURRENT_PER_USER="5"):
        for _ in range(3):
            await world.video([png(), png()])
        await world.discord.wait_for(lambda: len(world.uploads()) == 3, 60)
    assert len(world.api.tasks) == 3
    assert len(world.api.submits) > 3, "some submits met 1303 and waited"
    assert all(t["state"] == "delivered" for t in world.tasks())


async def test_video_over_the_upload_limit_is_sent_as_a_link(world: World) -> None:
    async with world.bot():
        await world.video([png(), png()], attachment_size_limit=1000)
        await world.discord.wait_for(
            lambda: world.discord.threads and world.posts(world.discord.threads[0]["id"]), 20
        )
        [notice] = world.posts(world.discord.threads[0]["id"])
    assert notice.files == []
    assert "too big to upload here" in notice.json["content"]
    assert world.api.base_url in notice.json["content"]


async def test_no_thread_permission_delivers_in_the_channel(world: World) -> None:
    channel = str(world.discord.channel_id)
    world.discord.deny_threads(channel)
    async with world.bot():
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.uploads(), 20)
    [upload] = world.uploads()
    assert upload.path == f"/channels/{channel}/messages"
    assert world.discord.threads == []
    [task] = world.tasks()
    assert task["thread_id"] is None


@on_both_backends
async def test_quota_exhausted(world: World) -> None:
    async with world.bot(QUOTA_DAILY_PER_USER="1"):
        first = await world.video([png(), png()])
        assert "on its way" in await world.answer(first)
        second = await world.video([png(), png()])
        answer = await world.answer(second)
    assert "You've used 1 of your 1 videos for today" in answer
    assert len(world.api.submits) <= 1
    assert len(world.tasks()) == 1


@on_both_backends
async def test_twenty_users_at_once(world: World) -> None:
    world.api.finish_after = 0.2
    users = [world.discord.add_user(f"user{i}") for i in range(20)]
    async with world.bot(KLING_MAX_CONCURRENT_TASKS="5"):
        interactions = await asyncio.gather(*(world.video([png(), png()], user=u) for u in users))
        callbacks = await asyncio.gather(*(i.wait_callback(3) for i in interactions))
        assert all(c.type == 5 for c in callbacks)
        await world.discord.wait_for(lambda: len(world.uploads()) == 20, 90)
    tasks = world.tasks()
    assert len(tasks) == 20 and {t["user_id"] for t in tasks} == {int(u["id"]) for u in users}
    assert len(world.api.tasks) == 20


@on_both_backends
async def test_restart_after_sigkill_mid_task_delivers_once_and_buttons_still_work(
    world: World,
) -> None:
    world.api.finish_after = 1000  # the provider holds the task until the test says so
    async with world.bot() as first:
        await world.video([png(), png(600, 400)])
        await world.until(lambda: world.api.tasks)
        await asyncio.sleep(0.3)
        first.kill()
        await first.wait()
    [remote] = world.api.tasks
    world.api.finish(remote)
    async with world.bot():
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await asyncio.sleep(1.0)
    assert len(world.uploads()) == 1, "delivered exactly once"
    assert len(world.api.submits) == 1, "never submitted twice"
    [task] = world.tasks()
    assert task["state"] == "delivered"
    # After another restart (SIGTERM this time), Regenerate on the old message still works.
    [upload] = world.uploads()
    message = world.discord.message(str(upload.response["id"]))
    async with world.bot() as third:
        world.api.finish_after = 0.2
        press = await world.discord.press_button(message, f"kling:regen:{task['id']}")
        callback = await press.wait_callback(3)
        assert callback.type == 5
        await world.discord.wait_for(lambda: len(world.uploads()) == 2, 20)
        await third.stop()
        assert third.returncode == 0
    assert len(world.api.submits) == 2
    assert world.api.submits[1].body["image_list"] == world.api.submits[0].body["image_list"]


async def test_sigterm_mid_task_resumes(world: World) -> None:
    world.api.finish_after = 4
    async with world.bot() as first:
        await world.video([png(), png()])
        await world.until(lambda: world.api.tasks)
        await first.stop()
        assert first.returncode == 0, first.output()[-2000:]
    assert world.uploads() == []
    async with world.bot():
        await world.discord.wait_for(lambda: world.uploads(), 20)
    assert len(world.uploads()) == 1 and len(world.api.submits) == 1


async def test_no_privileged_intents(world: World) -> None:
    async with world.bot():
        pass
    privileged = (1 << 1) | (1 << 8) | (1 << 15)
    assert world.discord.identified_intents and all(
        i & privileged == 0 for i in world.discord.identified_intents
    )


async def test_images_go_as_discord_links_with_url_transport(world: World) -> None:
    async with world.bot(IMAGE_TRANSPORT="url"):
        interaction = await world.video([png(), png(500, 400)])
        await world.discord.wait_for(lambda: world.uploads(), 20)
    attachments = interaction.payload["data"]["resolved"]["attachments"].values()
    [submit] = world.api.submits
    assert [i["image"] for i in submit.body["image_list"]] == [a["url"] for a in attachments]


async def test_no_permission_to_post_in_the_channel_goes_to_dms(world: World) -> None:
    channel = str(world.discord.channel_id)
    world.discord.deny_send_messages(channel)
    async with world.bot():
        interaction = await world.video([png(), png()])
        answer = await world.answer(interaction)
        await world.discord.wait_for(lambda: world.uploads(), 20)
    assert "direct message" in answer
    [dm] = world.discord.find_requests("POST", r"^/users/@me/channels$")
    dm_channel = dm.response["id"]
    [upload] = world.uploads()
    assert upload.path == f"/channels/{dm_channel}/messages"
    assert world.posts(channel) == [], "nothing in the channel the bot may not post in"
    [task] = world.tasks()
    assert str(task["channel_id"]) == dm_channel and task["state"] == "delivered"


async def test_status_edits_are_throttled(world: World) -> None:
    world.api.processing_after = 0.3
    world.api.finish_after = 7.0
    async with world.bot():
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.uploads(), 30)
        await asyncio.sleep(0.3)
    [task] = world.tasks()
    status = f"/channels/{world.discord.channel_id}/messages/{task['status_message_id']}"
    edits = [r.time for r in world.discord.requests if r.method == "PATCH" and r.path == status]
    assert len(edits) >= 3, "submitting, processing and the final state were shown"
    gaps = [b - a for a, b in itertools.pairwise(edits[:-1])]  # the final edit may come at once
    assert all(gap >= 4.5 for gap in gaps), gaps


async def test_commands_sync_only_when_changed_and_sync_forces_it(world: World) -> None:
    async with world.bot():
        pass
    assert world.discord.command_syncs == 1
    async with world.bot():
        pass
    assert world.discord.command_syncs == 1, "unchanged commands are not synced again"
    async with run_bot_process(
        "bot", world.env(), world.discord.url, fake=world.discord, ready=None, args=["sync"]
    ) as process:
        code = await process.wait(30)
        world.processes.append(process)
    assert code == 0, process.output()[-2000:]
    assert world.discord.command_syncs == 2, "`python -m bot sync` forces a sync"
    assert world.api.requests == []


async def test_status_message_refused_by_discord_starts_nothing(world: World) -> None:
    channel = str(world.discord.channel_id)
    async with world.bot():
        world.discord.inject_error(
            "POST",
            rf"^/channels/{channel}/messages$",
            403,
            {"code": 50013, "message": "Missing Permissions"},
        )
        interaction = await world.video([png(), png()])
        answer = await world.answer(interaction)
        await asyncio.sleep(0.5)
    assert "didn't let me post here" in answer
    assert world.api.requests == [], "nothing submitted"
    [task] = world.tasks()
    assert task["state"] == "failed" and task["quota_refunded"] == 1


async def test_a_database_that_cant_be_opened_is_one_clear_line(world: World) -> None:
    (world.tmp / "blocker").write_text("a file where the database folder should be")
    async with run_bot_process(
        "bot",
        world.env(DATABASE_URL=f"sqlite:///{world.tmp}/blocker/bot.sqlite3"),
        world.discord.url,
        fake=world.discord,
        ready=None,
    ) as process:
        code = await process.wait(30)
    assert code == 1
    assert "The database at" in process.output() and "Traceback" not in process.output()


async def test_a_postgresql_server_that_cant_be_reached_is_one_clear_line(world: World) -> None:
    url = "postgresql://bot:hunter2@127.0.0.1:1/kling"
    async with run_bot_process(
        "bot", world.env(DATABASE_URL=url), world.discord.url, fake=world.discord, ready=None
    ) as process:
        code = await process.wait(30)
    output = process.output()
    assert code == 1
    assert "The database at postgresql://bot:***@127.0.0.1:1/kling can't be opened" in output
    assert "hunter2" not in output and "Traceback" not in output


async def test_a_deleted_thread_doesnt_strand_the_result(world: World) -> None:
    world.api.finish_after = 1.5
    channel = str(world.discord.channel_id)
    async with world.bot():
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.discord.threads, 20)
        thread = world.discord.threads[0]["id"]
        unknown = {"code": 10003, "message": "Unknown Channel"}
        world.discord.inject_error("POST", rf"^/channels/{thread}/messages$", 404, unknown, times=5)
        world.discord.inject_error("GET", rf"^/channels/{thread}/messages$", 404, unknown, times=5)
        await world.discord.wait_for(lambda: any(r.status == 200 for r in world.uploads()), 20)
    [upload] = [r for r in world.uploads() if r.status == 200]
    assert upload.path == f"/channels/{channel}/messages", "the channel, since the thread is gone"
    assert world.tasks()[0]["state"] == "delivered"


async def test_only_the_owner_can_be_pinged_by_a_failure_notice(world: World) -> None:
    world.api.outcome = "failed"
    world.api.failure_message = "rejected, ask <@999999999999999999> or @everyone"
    async with world.bot():
        await world.video([png(), png()])
        await world.discord.wait_for(
            lambda: world.discord.threads and world.posts(world.discord.threads[0]["id"]), 20
        )
    [notice] = world.posts(world.discord.threads[0]["id"])
    allowed = notice.json["allowed_mentions"]
    assert allowed.get("parse", []) == []
    assert [str(u) for u in allowed["users"]] == [world.discord.user["id"]]
