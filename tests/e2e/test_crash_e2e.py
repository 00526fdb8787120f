"""End to end: the real bot process SIGKILLed at chosen moments, restarted on the same data.

Each moment is made deterministic by having the fakes hold one specific request (the CDN an
image download, Discord a notice, an edit, a delete) and killing the bot while it is held.
After the restart every request must end with exactly one visible answer: one video or one
failure notice, one status message showing the end, one log line, the private answer edited.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.e2e.conftest import on_both_backends
from tests.e2e.helpers import World, png
from tests.fakes.discord import RecordedRequest

MANAGE_GUILD = 1 << 5
ADMIN_MEMBER = (
    (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31) | (1 << 35) | (1 << 38)
) | MANAGE_GUILD


def open_interactions(world: World) -> list[dict[str, Any]]:
    """The requests the bot still owes an answer, as stored."""
    return world.rows("SELECT * FROM open_interactions")


def status_state(world: World, task: dict[str, Any]) -> str:
    """The Status field of a task's status message as Discord shows it now."""
    message = world.discord.message(str(task["status_message_id"]))
    [embed] = message["embeds"]
    return str(next(f["value"] for f in embed["fields"] if f["name"] == "Status"))


def status_messages(world: World, task_id: int) -> list[dict[str, Any]]:
    """The bot's status messages for a task, wherever they are."""
    title = f"🎬 Video request #{task_id}"
    return [
        message
        for channel in list(world.discord.channels)
        for message in world.discord.messages_in(channel)
        if any(e.get("title") == title for e in message.get("embeds") or [])
    ]


def marked(world: World, task_id: int) -> list[dict[str, Any]]:
    """The bot's results and failure notices for a task (each carries its Details button)."""
    marker = f"kling:details:{task_id}"
    return [
        message
        for channel in list(world.discord.channels)
        for message in world.discord.messages_in(channel)
        if marker in json.dumps(message.get("components") or [])
    ]


def content_has(words: str) -> Any:
    """A hold filter: the request's JSON content contains `words`."""

    def match(request: RecordedRequest) -> bool:
        return words in str((request.json or {}).get("content") or "")

    return match


@on_both_backends
async def test_killed_while_fetching_the_images_the_request_resumes_once(world: World) -> None:
    hold = world.discord.hold_next("GET", r"^/attachments/")
    async with world.bot() as first:
        interaction = await world.video([png(), png(500, 400)])
        assert (await interaction.wait_callback(3)).type == 5
        await world.discord.wait_for(lambda: hold.held, 10)
        first.kill()
        await first.wait()
    hold.drop()
    assert world.tasks() == [], "killed in its intake: nothing reserved yet"
    assert len(open_interactions(world)) == 1, "but the request is on record"

    async with world.bot():
        await world.discord.wait_for(lambda: world.uploads(), 30)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)
        answer = await world.answer(interaction)
        await asyncio.sleep(0.5)
    assert "on its way" in answer
    [task] = world.tasks()
    assert len(world.uploads()) == 1 and len(world.api.submits) == 1
    assert len(status_messages(world, task["id"])) == 1
    assert "Done" in status_state(world, task)
    assert open_interactions(world) == [], "answered and closed"


async def test_killed_in_the_intake_after_the_token_ran_out_tells_the_user_once(
    world: World,
) -> None:
    """A restart that comes too late for the token: told in the channel, nothing counted."""
    hold = world.discord.hold_next("GET", r"^/attachments/")
    async with world.bot() as first:
        interaction = await world.video([png(), png()])
        await world.discord.wait_for(lambda: hold.held, 10)
        first.kill()
        await first.wait()
    hold.drop()
    # A long outage: the token is dead for Discord, and the bot's record says so too.
    interaction.token_ttl = 0
    world.rows("UPDATE open_interactions SET token_expires_at = 0")
    channel = str(world.discord.channel_id)

    def interrupted() -> list[dict[str, Any]]:
        return [m for m in world.discord.messages_in(channel) if "interrupted" in m["content"]]

    for _ in range(2):  # a second restart doesn't say it again
        async with world.bot():
            await world.discord.wait_for(interrupted, 15)
            await asyncio.sleep(0.5)
    [notice] = interrupted()
    assert notice["content"].startswith(f"<@{world.discord.user['id']}> ")
    assert "Nothing was counted against your quota" in notice["content"]
    [post] = [r for r in world.posts(channel) if r.response["id"] == notice["id"]]
    assert [str(u) for u in post.json["allowed_mentions"]["users"]] == [world.discord.user["id"]]
    assert world.original_edits(interaction) == [], "the dead token was not used"
    assert world.tasks() == [] and world.api.requests == []
    assert open_interactions(world) == []


@pytest.mark.parametrize("notice_out", [False, True], ids=["notice-lost", "notice-posted"])
async def test_killed_between_the_failed_state_and_its_notice_it_is_told_once(
    world: World, notice_out: bool
) -> None:
    world.api.outcome = "failed"
    hold = world.discord.hold_next(
        "POST",
        r"^/channels/\d+/messages$",
        effect_first=notice_out,
        match=content_has("couldn't be made"),
    )
    async with world.bot() as first:
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: hold.held, 20)
        first.kill()
        await first.wait()
    hold.drop()
    [task] = world.tasks()
    assert task["state"] == "failed"

    async with world.bot():
        await world.discord.wait_for(lambda: status_state(world, task).startswith("❌"), 20)
        await world.discord.wait_for(lambda: marked(world, task["id"]), 10)
        await asyncio.sleep(0.5)
    [task] = world.tasks()
    assert task["notified_at"] is not None
    [notice] = marked(world, task["id"])
    assert notice["channel_id"] == str(task["thread_id"])
    assert (
        "couldn't be made" in notice["content"] and world.api.failure_message in notice["content"]
    )
    assert "doesn't count against your quota" in notice["content"]
    assert task["quota_refunded"] == 1 and str(task["result_message_id"]) == notice["id"]
    assert status_state(world, task).startswith("❌ Failed"), "the final status edit happened"
    assert len(world.api.submits) == 1


async def test_killed_between_the_upload_and_the_status_edit_delivers_once(world: World) -> None:
    log_channel = world.discord.add_text_channel("video-log")
    channel = str(world.discord.channel_id)
    hold = world.discord.hold_next(
        "PATCH",
        rf"^/channels/{channel}/messages/\d+$",
        match=lambda request: "Done" in json.dumps(request.json or {}, ensure_ascii=False),
    )
    async with world.bot() as first:
        answer = await (
            await world.discord.slash_command(
                "kling-admin",
                {"channel": log_channel},
                subcommand="log-channel",
                member_permissions=ADMIN_MEMBER,
            )
        ).wait_callback(5)
        assert answer.data and "Task log channel" in answer.data["content"]
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: hold.held, 20)
        first.kill()
        await first.wait()
    hold.drop()
    [task] = world.tasks()
    assert task["state"] == "succeeded" and len(world.uploads()) == 1

    async with world.bot():
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 20)
        await world.discord.wait_for(lambda: world.discord.messages_in(log_channel["id"]), 10)
        await asyncio.sleep(0.5)
    [task] = world.tasks()
    assert len(world.uploads()) == 1, "not uploaded again"
    [result] = marked(world, task["id"])
    assert str(task["result_message_id"]) == result["id"]
    assert f"/{task['thread_id']}/{result['id']}" in status_state(world, task)
    [line] = world.discord.messages_in(log_channel["id"])
    assert line["content"].startswith(f"#{task['id']} · ") and "delivered" in line["content"]


async def test_killed_while_the_log_line_was_answered_it_is_not_posted_twice(
    world: World,
) -> None:
    log_channel = world.discord.add_text_channel("video-log")
    hold = world.discord.hold_next(
        "POST", rf"^/channels/{log_channel['id']}/messages$", effect_first=True
    )
    async with world.bot() as first:
        await (
            await world.discord.slash_command(
                "kling-admin",
                {"channel": log_channel},
                subcommand="log-channel",
                member_permissions=ADMIN_MEMBER,
            )
        ).wait_callback(5)
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: hold.held, 20)
        first.kill()
        await first.wait()
    hold.drop()
    async with world.bot():
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 20)
        await asyncio.sleep(0.5)
    [task] = world.tasks()
    [line] = world.discord.messages_in(log_channel["id"])
    assert str(task["log_message_id"]) == line["id"]
    assert len(world.uploads()) == 1


async def test_a_regenerate_press_killed_in_its_intake_makes_exactly_one_task(
    world: World,
) -> None:
    """Regenerate's status message is out but the bot died before hearing back: after the
    restart the press gets its answer, with one new task, one status message, one video."""
    async with world.bot() as first:
        await world.video([png(), png(500, 400)])
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)
        [original] = world.tasks()
        message = world.discord.message(str(original["result_message_id"]))
        hold = world.discord.hold_next(  # the new status message, in the thread pressed in
            "POST",
            r"^/channels/\d+/messages$",
            effect_first=True,
            match=lambda request: "#2" in json.dumps(request.json or {}),
        )
        press = await world.discord.press_button(message, f"kling:regen:{original['id']}")
        await world.discord.wait_for(lambda: hold.held, 10)
        first.kill()
        await first.wait()
    hold.drop()
    assert len(world.tasks()) == 2 and world.tasks()[1]["status_message_id"] is None

    async with world.bot():
        await world.discord.wait_for(lambda: len(world.uploads()) == 2, 30)
        await world.until(lambda: world.tasks()[1]["state"] == "delivered", 10)
        answer = await world.answer(press)
        await asyncio.sleep(0.5)
    assert "on its way" in answer
    tasks = world.tasks()
    assert len(tasks) == 2 and len(world.api.submits) == 2
    [status] = status_messages(world, tasks[1]["id"])
    assert str(tasks[1]["status_message_id"]) == status["id"]
    assert status["channel_id"] == str(tasks[0]["thread_id"]), "where Regenerate was pressed"
    [result] = marked(world, tasks[1]["id"])
    assert result["channel_id"] == status["channel_id"]
    assert world.api.submits[1].body["image_list"] == world.api.submits[0].body["image_list"]


async def test_a_delete_press_killed_after_the_delete_is_answered_once(world: World) -> None:
    async with world.bot() as first:
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)
        [task] = world.tasks()
        message_id = str(task["result_message_id"])
        hold = world.discord.hold_next("DELETE", rf"/messages/{message_id}$", effect_first=True)
        press = await world.discord.press_button(
            world.discord.message(message_id), f"kling:delete:{task['id']}"
        )
        await world.discord.wait_for(lambda: hold.held, 10)
        first.kill()
        await first.wait()
    hold.drop()
    assert world.tasks()[0]["video_path"] is not None
    async with world.bot():
        await world.until(lambda: world.tasks()[0]["video_path"] is None, 15)
        assert await world.answer(press) == "The video was deleted."
        await asyncio.sleep(0.3)
    assert [r.json["content"] for r in world.original_edits(press)] == ["The video was deleted."]
    assert len(world.discord.find_requests("DELETE", rf"/messages/{message_id}$")) == 1
    assert open_interactions(world) == []


async def test_killed_after_opening_the_thread_the_request_takes_it_as_it_is(
    world: World,
) -> None:
    """The status message and its thread are out, the bot died before recording them."""
    channel = str(world.discord.channel_id)
    hold = world.discord.hold_next(
        "POST", rf"^/channels/{channel}/messages/\d+/threads$", effect_first=True
    )
    async with world.bot() as first:
        interaction = await world.video([png(), png()])
        await world.discord.wait_for(lambda: hold.held, 20)
        first.kill()
        await first.wait()
    hold.drop()
    [task] = world.tasks()
    assert task["status_message_id"] is None and len(world.discord.threads) == 1
    async with world.bot():
        await world.discord.wait_for(lambda: world.uploads(), 30)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)
        assert "on its way" in await world.answer(interaction)
    [task] = world.tasks()
    [thread] = world.discord.threads
    [status] = status_messages(world, task["id"])
    assert str(task["status_message_id"]) == status["id"] == thread["id"] == str(task["thread_id"])
    [result] = marked(world, task["id"])
    assert result["channel_id"] == thread["id"]
    assert len(world.discord.find_requests("POST", r"/threads$")) == 1, "not opened twice"


async def test_a_request_made_while_the_bot_gets_ready_is_not_taken_for_a_left_over(
    world: World,
) -> None:
    """A /video acknowledged before discord.py says "ready" (it waits for its guilds) is still in
    its intake when the start-up recovery looks for requests a previous run left open: it must
    not be answered twice (once by its own intake, once as a left-over)."""
    hold = world.discord.hold_next("GET", r"^/attachments/")
    async with world.bot() as bot:
        interaction = await world.video([png(), png(500, 400)])
        assert (await interaction.wait_callback(3)).type == 5
        await world.discord.wait_for(lambda: hold.held, 10)
        # The recovery runs once the bot is ready, which is after this request was recorded.
        await world.until(lambda: "Start-up: " in bot.output(), 20)
        hold.release()
        await world.until(lambda: world.tasks() and world.tasks()[0]["state"] == "delivered", 20)
        await world.until(lambda: not open_interactions(world), 10)
    assert len(world.tasks()) == 1
    assert "Start-up: 0 request(s)" in bot.output(), "a request of this run taken for a left-over"
    assert len(world.uploads()) == 1
