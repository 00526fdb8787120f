"""`start_video` driven directly: one request from its interaction to a queued task (or a refusal),
against the fake Discord's REST API (see tests/cogs/conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from bot.images import AttachmentRef
from bot.quota import QuotaLimits
from bot.tasks import NewTask, ResultWhere, TaskOptions, TaskState
from cogs.services import ServiceBot
from cogs.video.flow import VideoRequest, start_video
from tests.cogs.video.helpers import DEFERRED_PRIVATELY, answers, request, status_posts
from tests.fakes.discord import FakeDiscord


async def test_a_request_becomes_a_queued_task_with_its_status_message_and_thread(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    sent, interaction, video = await request(fake, bot, duration="10")
    task = await start_video(interaction, video)
    callback = await sent.wait_callback()
    assert (callback.type, (callback.data or {}).get("flags")) == DEFERRED_PRIVATELY
    assert task is not None and task.state is TaskState.QUEUED
    assert task.options == TaskOptions(duration="10")
    assert task.notes.result_where is ResultWhere.THREAD
    assert task.notes.image_names == ("picture1.png", "picture2.png")
    [status] = status_posts(fake)
    assert task.status_message_id == int(status["id"]) and task.thread_id == task.status_message_id
    assert str(task.thread_id) in fake.channels, "the thread is opened on the status message"
    [answer] = answers(fake, sent)
    assert "on its way" in answer and status["id"] in answer
    assert list(bot.engine.queue.waiting) == [task.id], "handed over to the engine"
    assert await bot.store.open_interactions() == [], "answered: the record is closed"
    assert len(await bot.media.load_inputs(task.input_dir)) == 2


async def test_when_the_thread_cant_be_opened_the_result_goes_to_the_channel(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    body = {"message": "Missing Permissions", "code": 50013}
    fake.inject_error("POST", r"/messages/\d+/threads$", 403, body)
    sent, interaction, video = await request(fake, bot)
    task = await start_video(interaction, video)
    assert task is not None and task.thread_id is None
    assert task.notes.result_where is ResultWhere.CHANNEL
    stored = await bot.store.get(task.id)
    assert stored is not None and stored.notes.result_where is ResultWhere.CHANNEL
    [status] = status_posts(fake)
    footer = fake.message(status["id"])["embeds"][0].get("footer") or {}
    assert "in this channel" in footer.get("text", ""), "the status message says where it goes"
    assert len(answers(fake, sent)) == 1


async def test_a_blocked_word_is_refused_before_anything_is_fetched_or_kept(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    await bot.store.add_blocked_word(int(fake.guild_id), "Forbidden")
    sent, interaction, video = await request(fake, bot, prompt="a forbidden cube")
    assert await start_video(interaction, video) is None
    [answer] = answers(fake, sent)
    assert "forbidden" in answer
    assert fake.find_requests("GET", r"^/attachments/") == [], "no image was downloaded"
    assert status_posts(fake) == [] and await bot.store.open_interactions() == []
    assert await bot.store.recent_for_user(int(fake.user["id"])) == []


async def test_a_quota_refusal_says_which_limit_and_keeps_nothing(
    fake: FakeDiscord, bot: ServiceBot, tmp_path: Any
) -> None:
    user_id = int(fake.user["id"])
    await bot.store.set_guild_limits(int(fake.guild_id), daily_per_user=1)
    await bot.store.reserve(
        NewTask(
            user_id=user_id,
            guild_id=int(fake.guild_id),
            channel_id=int(fake.channel_id),
            locale="en-US",
            prompt="an earlier one",
            options=TaskOptions(),
            image_count=2,
            input_dir="",
            upload_limit=1,
        ),
        QuotaLimits(),
    )
    sent, interaction, video = await request(fake, bot)
    assert await start_video(interaction, video) is None
    [answer] = answers(fake, sent)
    assert "1 of your 1 videos for today" in answer
    assert status_posts(fake) == [] and len(await bot.store.recent_for_user(user_id)) == 1
    inputs = bot.media.root / "inputs"
    assert not inputs.exists() or list(inputs.iterdir()) == [], "the fetched images are gone"


def test_a_recorded_request_comes_back_as_it_was_asked() -> None:
    """What is recorded at the acknowledgement is all a restart has: nothing may be lost."""
    request = VideoRequest(
        prompt="two cats dance",
        duration="10",
        mode="pro",
        aspect_ratio="9:16",
        negative_prompt="blur",
        cfg_scale=0.4,
        attachments=[
            AttachmentRef(
                1, "a.png", "https://cdn.example/a.png?ex=1", 1234, "image/png", 400, 500
            ),
            AttachmentRef(2, "b.jpg", "https://cdn.example/b.jpg?ex=1", None, None, None, None),
        ],
    )
    payload = json.loads(json.dumps(request.to_payload()))  # as stored: JSON, no bytes
    assert VideoRequest.from_payload(payload) == request
    regenerate = VideoRequest(prompt="again", source_task_id=7, image_names=["a.png", "b.png"])
    assert VideoRequest.from_payload(json.loads(json.dumps(regenerate.to_payload()))) == regenerate


async def test_a_request_is_priced_and_a_credit_refusal_keeps_nothing(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    user_id = int(fake.user["id"])
    await bot.store.set_guild_limits(int(fake.guild_id), credits_daily_per_user=800)  # 8 credits
    sent, interaction, video = await request(fake, bot, mode="pro", duration="10")
    task = await start_video(interaction, video)
    assert task is not None and task.price_cents == 700  # the table's price, kept with it
    sent, interaction, video = await request(fake, bot, mode="pro", duration="5")
    assert await start_video(interaction, video) is None
    [answer] = answers(fake, sent)
    assert answer.startswith("A 5 s pro video costs 3.5 credits; you have 1 left today, ")
    assert len(status_posts(fake)) == 1 and len(await bot.store.recent_for_user(user_id)) == 1
    inputs = bot.media.root / "inputs"
    assert [p.name for p in inputs.iterdir()] == [task.external_task_id], "the refused one's gone"
    sent, interaction, video = await request(fake, bot)  # 1 credit still fits
    cheap = await start_video(interaction, video)
    assert cheap is not None and cheap.price_cents == 100
