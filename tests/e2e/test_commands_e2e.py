"""End to end: the context menu, the result buttons, /quota, /tasks, /kling-admin, Dutch,
exactly-once delivery across a crash, and a clean stop mid-press — the real `python -m bot`
against the fakes.

Every scenario asserts what the fake Discord and the fake CometAPI actually received; the
`world` fixture ends each test with `World.check_clean` (no request Discord would refuse, no
unknown route, no secret, no traceback in the bot's output).
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from typing import Any

from PIL import Image

from tests.e2e.helpers import EPHEMERAL, World, png
from tests.fakes.discord import FakeInteraction, InteractionCallback
from tests.fakes.discord.records import RecordedRequest

CB_MESSAGE, CB_DEFERRED, CB_MODAL = 4, 5, 9
MANAGE_GUILD = 1 << 5
DEFAULT_MEMBER = (
    (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31) | (1 << 35) | (1 << 38)
)
ADMIN_MEMBER = DEFAULT_MEMBER | MANAGE_GUILD


def text_inputs(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every text input (type 4) in a modal's components, however they are nested."""
    found: list[dict[str, Any]] = []
    for node in components:
        if node.get("type") == 4:
            found.append(node)
        found.extend(text_inputs(node.get("components") or []))
        if isinstance(node.get("component"), dict):
            found.extend(text_inputs([node["component"]]))
    return found


def private(callback: InteractionCallback) -> dict[str, Any]:
    """The data of an ephemeral message callback (asserts it is one)."""
    assert callback.type == CB_MESSAGE, callback
    assert callback.data is not None and callback.data.get("flags", 0) & EPHEMERAL, callback.data
    return callback.data


async def said(interaction: FakeInteraction) -> str:
    """The content of the bot's immediate ephemeral answer."""
    return str(private(await interaction.wait_callback(5)).get("content") or "")


def image_attachments(world: World, images: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for position, data in enumerate(images, start=1):
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        out.append(
            world.discord.add_attachment(f"photo{position}.png", data, "image/png", width, height)
        )
    return out


async def test_context_menu_make_a_video(world: World) -> None:
    """Right-click → Make a video: 3 images → modal → one submit → delivered; 1 or 5 refused."""
    channel = str(world.discord.channel_id)
    three = [png(400 + 10 * i, 420, (30 * i, 100, 180)) for i in range(3)]
    with_three = world.discord.add_user_message(
        channel, "look at these", image_attachments(world, three)
    )
    with_one = world.discord.add_user_message(channel, "one", image_attachments(world, [png()]))
    with_five = world.discord.add_user_message(
        channel, "five", image_attachments(world, [png() for _ in range(5)])
    )
    async with world.bot():
        menu = world.discord.find_command("Make a video")
        assert menu is not None and menu["type"] == 3, "synced as a MESSAGE command"

        for message, count in ((with_one, 1), (with_five, 5)):
            refused = await world.discord.message_command("Make a video", message)
            answer = await said(refused)
            assert f"has {count} images" in answer and "needs 2 to 4" in answer, answer

        opened = await world.discord.message_command("Make a video", with_three)
        modal = await opened.wait_callback(3)
        assert modal.type == CB_MODAL and modal.data is not None
        inputs = text_inputs(modal.data["components"])
        assert len(inputs) == 3, modal.data
        prompt_input = inputs[0]
        assert prompt_input["required"] is True and prompt_input["style"] == 2
        values = {item["custom_id"]: item.get("value") or "" for item in inputs}
        values[prompt_input["custom_id"]] = "three pictures come alive"

        # The modal is in the user's language.
        dutch = await world.discord.message_command("Make a video", with_three, locale="nl")
        dutch_modal = (await dutch.wait_callback(3)).data or {}
        assert dutch_modal.get("title") == "Maak een video van deze afbeeldingen"
        assert text_inputs(dutch_modal["components"])[0]["label"] == "Beschrijf de video"

        # A bad duration typed in the form is refused before anything is spent.
        duration_id = inputs[1]["custom_id"]
        wrong = await world.discord.submit_modal(
            modal.data["custom_id"], {**values, duration_id: "7"}
        )
        assert "Duration must be 5 or 10 seconds." in await world.answer(wrong)
        assert world.api.submits == [] and world.tasks() == []

        # A submitted form is closed: the user opens the menu again and sends a good one.
        reopened = await world.discord.message_command("Make a video", with_three)
        modal = await reopened.wait_callback(3)
        assert modal.type == CB_MODAL and modal.data is not None
        inputs = text_inputs(modal.data["components"])
        values = {item["custom_id"]: item.get("value") or "" for item in inputs}
        values[inputs[0]["custom_id"]] = "three pictures come alive"
        submitted = await world.discord.submit_modal(modal.data["custom_id"], values)
        callback = await submitted.wait_callback(3)
        assert callback.type == CB_DEFERRED
        assert callback.data and callback.data.get("flags", 0) & EPHEMERAL
        assert "on its way" in await world.answer(submitted)
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)

    [submit] = world.api.submits
    assert [item["image"] for item in submit.body["image_list"]] == [
        base64.b64encode(data).decode() for data in three
    ]
    assert submit.body["prompt"] == "three pictures come alive"
    assert submit.body["duration"] == "5" and submit.body["mode"] == "std"
    [upload] = world.uploads()
    [thread] = world.discord.threads
    assert upload.path == f"/channels/{thread['id']}/messages"
    [task] = world.tasks()
    assert task["image_count"] == 3 and task["state"] == "delivered"
    assert all(i.callback for i in world.discord.interactions.values()), "each one answered"


async def test_buttons_quota_and_tasks_on_a_delivered_video(world: World) -> None:
    """/quota and /tasks after one video; Details; Delete and Regenerate by others refused;
    Delete by the owner removes the message."""
    other = world.discord.add_user("someone-else")
    async with world.bot():
        await world.video([png(), png(500, 400)])
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)
        [task] = world.tasks()
        [upload] = world.uploads()
        message_id = str(upload.response["id"])
        thread_id = str(task["thread_id"])

        quota = private(await (await world.discord.slash_command("quota")).wait_callback(5))
        [embed] = quota["embeds"]
        assert "Today (last 24 h): 1 of 10" in embed["description"], embed
        assert "Running or waiting: 0 of 2" in embed["description"], embed

        tasks = private(await (await world.discord.slash_command("tasks")).wait_callback(5))
        [embed] = tasks["embeds"]
        link = f"https://discord.com/channels/{world.discord.guild_id}/{thread_id}/{message_id}"
        assert f"#{task['id']} · ✅ Done" in embed["description"], embed
        assert f"[↗]({link})" in embed["description"], embed

        message = world.discord.message(message_id)
        details = private(
            await (
                await world.discord.press_button(message, f"kling:details:{task['id']}")
            ).wait_callback(5)
        )
        [embed] = details["embeds"]
        [remote_id] = world.api.tasks
        assert task["kling_task_id"] == remote_id
        assert f"Kling task: {remote_id}" in embed["description"], embed

        for action in ("delete", "regen"):
            press = await world.discord.press_button(
                message, f"kling:{action}:{task['id']}", user=other
            )
            assert "Only the person who asked" in await said(press), action
        assert world.discord.find_requests("DELETE", rf"/messages/{message_id}$") == []
        assert world.discord.message(message_id)["id"] == message_id, "still there"
        await asyncio.sleep(0.3)
        assert len(world.api.submits) == 1 and len(world.tasks()) == 1, "no regeneration"

        nothing = await world.discord.slash_command("tasks", user=other)
        assert await said(nothing) == "You haven't made any videos yet. Try /video!"

        # Discord refuses the delete: the owner is not told it was deleted, the video is kept.
        world.discord.inject_error(
            "DELETE",
            rf"/messages/{message_id}$",
            403,
            {"message": "Missing Permissions", "code": 50013},
        )
        press = await world.discord.press_button(message, f"kling:delete:{task['id']}")
        answer = await world.answer(press)
        assert answer == "I couldn't delete the video. Please try again in a moment.", answer
        assert world.discord.message(message_id)["id"] == message_id
        assert world.tasks()[0]["video_path"] is not None

        press = await world.discord.press_button(message, f"kling:delete:{task['id']}")
        assert await world.answer(press) == "The video was deleted."
        await world.discord.wait_for(
            lambda: len(world.discord.find_requests("DELETE", rf"/messages/{message_id}$")) == 2, 5
        )
        # The handler's last step forgets the kept video: then it is done (no SIGTERM mid-way).
        await world.until(lambda: world.tasks()[0]["video_path"] is None, 5)
    [_, delete] = world.discord.find_requests("DELETE", rf"/messages/{message_id}$")
    assert delete.path == f"/channels/{thread_id}/messages/{message_id}" and delete.status == 204
    assert message_id not in {m["id"] for m in world.discord.messages_in(thread_id)}


async def admin(world: World, sub: str, **options: Any) -> str:
    """Run `/kling-admin <sub> options...` as a member with Manage Server."""
    interaction = await world.discord.slash_command(
        "kling-admin", options, subcommand=sub, member_permissions=ADMIN_MEMBER
    )
    return await said(interaction)


async def test_kling_admin_limits_words_blocks_and_log_channel(world: World) -> None:
    """Admins set limits, blocked words, blocks and a log channel; each one takes effect."""
    log_channel = world.discord.add_text_channel("video-log")  # before the bot starts
    member = world.discord.add_user("member")
    blocked = world.discord.add_user("troublemaker")
    async with world.bot():
        admin_cmd = world.discord.find_command("kling-admin")
        assert admin_cmd is not None
        assert int(admin_cmd["default_member_permissions"]) == MANAGE_GUILD
        subs = {o["name"]: o for o in admin_cmd["options"]}
        assert subs["limits"]["type"] == 1 and subs["block"]["options"][0]["type"] == 6

        refused = await world.discord.slash_command(
            "kling-admin", {"daily_per_user": 1}, subcommand="limits", user=member
        )
        assert await said(refused) == "You need the Manage Server permission for this."
        await asyncio.sleep(0.3)
        assert refused.followup_ids == [], "one clear refusal, no 'something went wrong' after it"

        answer = await admin(world, "limits", daily_per_user=1)
        assert answer.startswith("Server limits now: daily_per_user=1"), answer
        answer = await admin(world, "log-channel", channel=log_channel)
        assert answer == f"Task log channel: <#{log_channel['id']}>.", answer
        answer = await admin(world, "blocked-word", word="forbidden")
        assert answer == "Prompts containing “forbidden” are now refused.", answer
        answer = await admin(world, "block", user=blocked)
        assert answer == f"<@{blocked['id']}> can no longer make videos here.", answer

        first = await world.video([png(), png()], user=member)
        assert "on its way" in await world.answer(first)
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.discord.wait_for(lambda: world.discord.messages_in(log_channel["id"]), 10)

        second = await world.video([png(), png()], user=member)
        assert "You've used 1 of your 1 videos for today" in await world.answer(second)

        worded = await world.video([png(), png()], "A Forbidden dance", user=world.discord.user)
        assert "doesn't allow (“forbidden”)" in await world.answer(worded)

        stopped = await world.video([png(), png()], user=blocked)
        assert "You can't make videos on this server" in await world.answer(stopped)
        await asyncio.sleep(0.5)

    assert len(world.api.submits) == 1, "only the first video reached the API"
    [task] = world.tasks()
    assert task["user_id"] == int(member["id"]) and task["state"] == "delivered"
    [line] = world.discord.messages_in(log_channel["id"])
    assert line["content"].startswith(f"#{task['id']} · <@{member['id']}> · delivered"), line
    result = f"/{task['thread_id']}/{task['result_message_id']}"
    assert result in line["content"], line


async def test_dutch_messages_and_command_localizations(world: World) -> None:
    """A Dutch client gets Dutch refusals and a Dutch result; /video is localised for nl."""
    async with world.bot():
        video = world.discord.find_command("video")
        assert video is not None
        assert video["name_localizations"]["nl"] == "video"
        assert video["description_localizations"]["nl"].startswith("Maak een korte video")
        options = {o["name"]: o for o in video["options"]}
        assert options["image1"]["name_localizations"]["nl"] == "afbeelding1"

        small = await world.video([png(), png(299, 400)], locale="nl")
        answer = await world.answer(small)
        assert "Deze afbeeldingen kunnen nog niet gebruikt worden" in answer, answer
        assert "299×400 px, moet minstens 300×300 zijn" in answer, answer

        good = await world.video([png(), png()], locale="nl")
        assert "Je video komt eraan" in await world.answer(good)
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)
    [upload] = world.uploads()
    assert "je video is klaar" in upload.json["content"]
    assert [b["label"] for row in upload.json["components"] for b in row["components"]] == [
        "Opnieuw maken",
        "Details",
        "Verwijderen",
    ]
    assert len(world.api.submits) == 1


def posts_the_video(request: RecordedRequest) -> bool:
    """The result's post (the status message carries a file too: the picture of the inputs)."""
    return any(f.filename.endswith(".mp4") for f in request.files)


async def test_crash_after_posting_the_result_delivers_exactly_once(world: World) -> None:
    """Discord stores the result but the bot dies before hearing back: after the restart it
    finds its own message in the thread's history and does not post again."""
    world.discord.delay_next("POST", r"^/channels/\d+/messages$", 30, match=posts_the_video)
    async with world.bot() as first:
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.discord.delayed, 20)
        first.kill()
        await first.wait()
    [task] = world.tasks()
    assert task["state"] == "succeeded" and task["result_message_id"] is None
    thread_id = str(task["thread_id"])
    assert len(world.uploads()) == 1

    async with world.bot():
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 20)
        await asyncio.sleep(0.5)
    assert len(world.uploads()) == 1, "not posted again"
    results = [
        m for m in world.discord.messages_in(thread_id) if m["attachments"] or m["components"]
    ]
    assert len(results) == 1
    [task] = world.tasks()
    assert str(task["result_message_id"]) == results[0]["id"]
    assert world.discord.find_requests("GET", rf"^/channels/{thread_id}/messages$")
    assert len(world.api.submits) == 1
    status = world.discord.message(str(task["status_message_id"]))
    state = next(f["value"] for f in status["embeds"][0]["fields"] if f["name"] == "Status")
    assert re.search(rf"/{thread_id}/{results[0]['id']}", state), state


async def quota_text(world: World, user: dict[str, Any], **kwargs: Any) -> str:
    """The description (and fields) of the /quota embed for `user`."""
    callback = await (
        await world.discord.slash_command("quota", user=user, **kwargs)
    ).wait_callback(5)
    [embed] = private(callback)["embeds"]
    fields = "\n".join(f"{f['name']}: {f['value']}" for f in embed.get("fields") or [])
    return f"{embed['description']}\n{fields}"


async def test_kling_admin_overrides_reset_unblock_words_and_reports(world: World) -> None:
    """role-limit, user-limit (exempt), reset-usage, unblock, the word list, active and usage."""
    role = world.discord.add_role("video-fans")  # before the bot starts
    fan = world.discord.add_user("fan")
    vip = world.discord.add_user("vip")
    plain = world.discord.add_user("plain")
    world.api.finish_after = 0.2
    async with world.bot():
        answer = await admin(world, "limits", daily_per_user=1)
        assert answer.startswith("Server limits now:"), answer
        answer = await admin(world, "role-limit", role=role, daily=3)
        assert answer == (
            f"Limits for <@&{role['id']}> now: daily=3, concurrent=default, credits=default"
        ), answer
        answer = await admin(world, "user-limit", user=vip, exempt=True)
        assert answer == (
            f"Limits for <@{vip['id']}> now: daily=default, concurrent=default, credits=default, "
            "exempt"
        )
        roles = {"member_roles": [role["id"]]}
        assert "Today (last 24 h): 0 of 3" in await quota_text(world, fan, **roles)
        vip_quota = await quota_text(world, vip)
        assert "0 of no limit" in vip_quota and "You are exempt" in vip_quota, vip_quota
        assert "Today (last 24 h): 0 of 1" in await quota_text(world, plain)

        # The role's limit (3) applies to the fan, the server's (1) to the plain member.
        for _ in range(2):
            accepted = await world.video([png(), png()], user=fan, member_roles=[role["id"]])
            assert "on its way" in await world.answer(accepted)
        first = await world.video([png(), png()], user=plain)
        assert "on its way" in await world.answer(first)
        second = await world.video([png(), png()], user=plain)
        assert "You've used 1 of your 1 videos for today" in await world.answer(second)

        active = private(
            await (
                await world.discord.slash_command(
                    "kling-admin", subcommand="active", member_permissions=ADMIN_MEMBER
                )
            ).wait_callback(5)
        )
        assert "embeds" in active or "nothing" in str(active.get("content")).lower(), active
        await world.discord.wait_for(lambda: len(world.uploads()) == 3, 30)

        answer = await admin(world, "reset-usage", user=plain)
        assert answer == f"<@{plain['id']}>'s usage was reset (1 videos no longer count).", answer
        again = await world.video([png(), png()], user=plain)
        assert "on its way" in await world.answer(again)

        assert await admin(world, "block", user=fan)
        blocked = await world.video([png(), png()], user=fan, member_roles=[role["id"]])
        assert "You can't make videos on this server" in await world.answer(blocked)
        answer = await admin(world, "unblock", user=fan)
        assert answer == f"<@{fan['id']}> can make videos here again.", answer
        unblocked = await world.video([png(), png()], user=fan, member_roles=[role["id"]])
        assert "on its way" in await world.answer(unblocked)

        assert await admin(world, "blocked-word") == "No blocked words."
        await admin(world, "blocked-word", word="spam")
        await admin(world, "blocked-word", word="eggs")
        listed = await admin(world, "blocked-word")
        assert (
            listed == "Blocked words: `eggs`, `spam`" or listed == "Blocked words: `spam`, `eggs`"
        )
        assert await admin(world, "blocked-word", word="spam", remove=True) == (
            "“spam” is allowed again."
        )
        assert await admin(world, "blocked-word", word="spam", remove=True) == (
            "“spam” wasn't on the list."
        )
        assert await admin(world, "blocked-word") == "Blocked words: `eggs`"
        assert await admin(world, "log-channel") == "The task log is off."
        answer = await admin(world, "user-limit", user=vip, clear=True)
        assert answer == f"<@{vip['id']}> now follows the server's limits.", answer
        assert "You are exempt" not in await quota_text(world, vip)

        await world.discord.wait_for(lambda: len(world.uploads()) == 5, 30)
        await world.until(lambda: all(t["state"] == "delivered" for t in world.tasks()), 10)
        usage = await world.discord.slash_command(
            "kling-admin", subcommand="usage", member_permissions=ADMIN_MEMBER
        )
        deferred = await usage.wait_callback(5)
        assert deferred.type == CB_DEFERRED and (deferred.data or {})["flags"] & EPHEMERAL
        path = rf"^/webhooks/\d+/{re.escape(usage.token)}$"
        await world.discord.wait_for(lambda: world.discord.find_requests("POST", path), 10)
        [report] = world.discord.find_requests("POST", path)
        [embed] = report.json["embeds"]
        assert "Last day: 5 videos by 2 people (0 failed)" in embed["description"], embed
        assert "Last 7 days: 5 credits for 5 videos" in embed["description"], embed
        assert report.json["flags"] & EPHEMERAL
        assert [f.filename for f in report.files] == ["spend.png"], "no CSV unless asked"
    assert len(world.api.submits) == 5


async def test_sigterm_during_a_button_press_lets_it_finish(world: World) -> None:
    """`docker stop` while a Delete press is waiting on Discord: the press completes, the bot
    exits 0, and nothing is cut off mid-request (no traceback)."""
    async with world.bot() as bot:
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.uploads(), 20)
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 10)
        [task] = world.tasks()
        message = world.discord.message(str(task["result_message_id"]))
        world.discord.delay_next("DELETE", r"^/channels/\d+/messages/\d+$", 1.0)
        press = await world.discord.press_button(message, f"kling:delete:{task['id']}")
        await world.discord.wait_for(lambda: world.discord.delayed, 5)
        assert await bot.stop() == 0
    assert world.tasks()[0]["video_path"] is None, "the press finished before the bot closed"
    assert [r.json["content"] for r in world.original_edits(press)] == ["The video was deleted."]
    assert press.followup_ids == [], "no 'something went wrong' after 'deleted'"


async def test_crash_after_posting_in_a_busy_channel_still_delivers_once(world: World) -> None:
    """Without a thread, a busy channel buries the result under others' messages before the
    restart; the bot still finds its own message and does not post again."""
    channel = str(world.discord.channel_id)
    world.discord.deny_threads(channel)
    world.discord.delay_next("POST", r"^/channels/\d+/messages$", 30, match=posts_the_video)
    async with world.bot() as first:
        await world.video([png(), png()])
        await world.discord.wait_for(lambda: world.discord.delayed, 20)
        first.kill()
        await first.wait()
    for n in range(120):  # more than one page of history
        world.discord.add_user_message(channel, f"chatter {n}", [])
    async with world.bot():
        await world.until(lambda: world.tasks()[0]["state"] == "delivered", 20)
        await asyncio.sleep(0.5)
    assert len(world.uploads()) == 1, "not posted again"
