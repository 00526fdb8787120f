"""The status message's estimate and the picture of the inputs, end to end (`python -m bot`).

The status message shows what the bot expects (honest that nothing has finished yet, then
resting on the finished videos), carries one small picture of the input images, keeps it
through its edits, and Details shows the picture again.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from tests.e2e.helpers import EPHEMERAL, World, png
from tests.fakes.discord.records import RecordedRequest

PRIOR = "A first guess: no video has finished yet."


def estimates(requests: list[RecordedRequest]) -> list[str]:
    """The Estimate field of every status message posted or edited by these requests."""
    found = []
    for request in requests:
        for embed in (request.json or {}).get("embeds") or []:
            for field in embed.get("fields") or []:
                if field.get("name") == "Estimate":
                    found.append(str(field.get("value")))
    return found


def status_requests(world: World, task: dict[str, Any]) -> list[RecordedRequest]:
    """The post and the edits of a task's status message."""
    channel = world.discord.channel_id
    post = [
        r
        for r in world.posts(str(channel))
        if str((r.response or {}).get("id")) == str(task["status_message_id"])
    ]
    edits = world.discord.find_requests(
        "PATCH", f"/channels/{channel}/messages/{task['status_message_id']}"
    )
    return post + edits


async def test_status_shows_the_estimate_and_the_picture_and_details_shows_it_again(
    world: World,
) -> None:
    world.api.processing_after = 0.2
    world.api.finish_after = 1.5
    images = [png(400, 400, (200, 40, 40)), png(600, 400, (40, 200, 40)), png(300, 500)]
    async with world.bot():
        await world.video(images)
        await world.discord.wait_for(lambda: len(world.uploads()) == 1, 30)
        await asyncio.sleep(0.5)
        first = world.tasks()[0]
        requests = status_requests(world, first)
        [post] = requests[:1]
        # The picture: one small image, attached when the status message is posted.
        [picture] = post.files
        assert picture.filename in ("inputs.jpg", "inputs.png")
        assert len(picture.data) <= 300 * 1024
        with Image.open(io.BytesIO(picture.data)) as image:
            assert image.width > 2 * image.height, "the three images side by side"
        assert not any(r.files for r in requests[1:]), "edits never upload it again"
        stored = world.discord.message(str(first["status_message_id"]))
        assert [a["filename"] for a in stored["attachments"]] == [picture.filename]
        # The estimate: honest that nothing has finished yet; a bar while it runs.
        shown = estimates(requests)
        assert shown and all(PRIOR in line for line in shown[:-1]), shown
        assert all("▱" in line and "Likely ready <t:" in line for line in shown), shown
        assert "Estimate" not in str(requests[-1].json), "the final state has no estimate"

        # Details on the result shows the picture again, privately.
        [upload] = world.uploads()
        result = world.discord.message(str(upload.response["id"]))
        press = await world.discord.press_button(result, f"kling:details:{first['id']}")
        callback = await press.wait_callback(5)
        assert callback.data is not None and callback.data.get("flags", 0) & EPHEMERAL
        assert [f.data for f in callback.files] == [picture.data]
        [embed] = callback.data["embeds"]
        assert embed["image"]["url"] == f"attachment://{picture.filename}"

        # A second video like it: the estimate now rests on the first one.
        await world.video([png(), png(500, 400)])
        await world.discord.wait_for(lambda: len(world.uploads()) == 2, 30)
        await asyncio.sleep(0.3)
        second = world.tasks()[1]
        shown = estimates(status_requests(world, second))
        assert any(
            "From the last video like this (the only one so far)." in line for line in shown
        ), shown
    world.check_clean()


async def test_without_the_right_to_attach_files_the_status_goes_without_the_picture(
    world: World,
) -> None:
    world.api.finish_after = 1000
    world.discord.deny_attach_files(str(world.discord.channel_id))
    async with world.bot():
        interaction = await world.video([png(), png(500, 400)])
        assert "on its way" in await world.answer(interaction)
        await world.until(lambda: world.api.submits)
        [task] = world.tasks()
        [post] = status_requests(world, task)[:1]
        assert post.status == 200 and post.files == []
        assert estimates([post]), "the estimate is there all the same"
    world.check_clean()
