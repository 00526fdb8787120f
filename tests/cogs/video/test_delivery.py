"""`DiscordNotifier` driven directly: the engine's endings told in Discord exactly once, against
the fake Discord's REST API (see tests/cogs/conftest.py)."""

from __future__ import annotations

import json
import time
from typing import Any

from bot.credits import CreditAlert
from bot.engine.notifier import Delivered
from bot.tasks import FailureReason, Task, TaskState
from cogs.services import ServiceBot
from cogs.video.delivery import ALREADY_OUT, DiscordNotifier
from cogs.video.flow import start_video
from tests.cogs.video.helpers import request
from tests.fakes.discord import FakeDiscord
from tests.helpers import advance

MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 1000


async def queued_task(fake: FakeDiscord, bot: ServiceBot) -> Task:
    """A request made into a task, with its status message and thread."""
    _, interaction, video = await request(fake, bot)
    task = await start_video(interaction, video)
    assert task is not None and task.thread_id is not None
    return task


def marked(fake: FakeDiscord, channel_id: int | None, task_id: int) -> list[dict[str, Any]]:
    """The messages in a channel that carry the task's Details button (its result or notice)."""
    marker = f"kling:details:{task_id}"
    return [
        message
        for message in fake.messages_in(str(channel_id))
        if marker in json.dumps(message.get("components") or [])
    ]


async def test_the_video_is_posted_once_in_the_thread_even_when_asked_again(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    task = await queued_task(fake, bot)
    path = bot.media.video_path(task.id)
    path.parent.mkdir(parents=True)
    path.write_bytes(MP4)
    task = await advance(bot.store, task.id, TaskState.SUCCEEDED, video_url="https://v/1.mp4")
    task = await bot.store.update(task.id, video_path=str(path), video_bytes=len(MP4))
    notifier = DiscordNotifier(bot)
    delivered = await notifier.deliver(task)
    assert delivered.how == "thread_upload"
    message_id = delivered.message_id
    [result] = marked(fake, task.thread_id, task.id)
    assert int(result["id"]) == message_id
    assert [a["filename"] for a in result["attachments"]] == [f"kling-video-{task.id}.mp4"]
    assert result["content"].startswith(f"<@{task.user_id}>")
    status = fake.message(str(task.status_message_id))["embeds"][0]
    assert any(str(message_id) in str(field["value"]) for field in status["fields"])
    # A crash before the engine wrote `delivered`: asked again, it finds its own post.
    await bot.store.update(task.id, result_message_id=None)
    again = await bot.store.get(task.id)
    assert again is not None
    assert await notifier.deliver(again) == Delivered(message_id, ALREADY_OUT)
    assert len(marked(fake, task.thread_id, task.id)) == 1, "posted once"


async def test_a_link_in_the_channel_says_so_for_the_metrics(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    task = await queued_task(fake, bot)
    task = await advance(
        bot.store,
        task.id,
        TaskState.SUCCEEDED,
        video_url="https://v/2.mp4",
        error_code=FailureReason.VIDEO_DOWNLOAD_FAILED.value,
    )
    body = {"message": "Unknown Channel", "code": 10003}
    fake.inject_error("POST", rf"^/channels/{task.thread_id}/messages$", 404, body)
    delivered = await DiscordNotifier(bot).deliver(task)
    [result] = marked(fake, task.channel_id, task.id)
    assert "https://v/2.mp4" in result["content"] and result["attachments"] == []
    assert delivered == Delivered(int(result["id"]), "channel_link")


async def test_a_failure_is_told_in_the_channel_when_the_thread_is_gone(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    task = await queued_task(fake, bot)
    task = await advance(
        bot.store,
        task.id,
        TaskState.FAILED,
        error_code=FailureReason.PROVIDER_FAILED.value,
        status_message="risk control",
    )
    await bot.store.refund(task.id)
    task = await bot.store.get(task.id)  # type: ignore[assignment]
    body = {"message": "Unknown Channel", "code": 10003}
    fake.inject_error("POST", rf"^/channels/{task.thread_id}/messages$", 404, body)
    await DiscordNotifier(bot).failed(task)
    assert marked(fake, task.thread_id, task.id) == []
    [notice] = marked(fake, task.channel_id, task.id)
    assert "risk control" in notice["content"]
    assert "It doesn't count against your quota: you get its 1 credit back." in notice["content"]
    status = fake.message(str(task.status_message_id))["embeds"][0]
    assert "risk control" in json.dumps(status)
    # Told again (the engine asks until `notified_at` is written): nothing new is posted.
    await bot.store.update(task.id, result_message_id=None)
    await DiscordNotifier(bot).failed(await bot.store.get(task.id))  # type: ignore[arg-type]
    assert len(marked(fake, task.channel_id, task.id)) == 1
    assert marked(fake, task.thread_id, task.id) == [], "not posted again in the thread either"


async def test_the_monthly_cap_alert_is_posted_once_and_found_again(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    channel = int(fake.channel_id)
    alert = CreditAlert(
        "2026-11", 100, channel, int(fake.guild_id), 9_950, 10_000, started_at=time.time() - 1
    )
    notifier = DiscordNotifier(bot)
    message_id = await notifier.post_credit_alert(alert, look_first=True)  # nothing out yet
    [posted] = fake.messages_in(str(channel))
    assert int(posted["id"]) == message_id
    assert posted["content"].startswith("🛑 2026-11 · The bot has reached its monthly cap of 100")
    # a crash before the message id was stored: the post is found, not made twice
    assert await notifier.post_credit_alert(alert, look_first=True) == message_id
    assert len(fake.messages_in(str(channel))) == 1
    body = {"message": "Missing Permissions", "code": 50013}
    fake.inject_error("POST", rf"/channels/{channel}/messages$", 403, body)
    refused = CreditAlert("2026-12", 80, channel, int(fake.guild_id), 8_000, 10_000, 0.0)
    assert await notifier.post_credit_alert(refused, look_first=False) == 0  # given up
