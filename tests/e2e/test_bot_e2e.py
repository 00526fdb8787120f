"""The real bot process (`python -m bot`) against a fake Discord and a fake CometAPI.

Every scenario asserts what Discord and the API actually received. The fake Discord checks
each request against Discord's OpenAPI description; `World.check_clean` fails a test on any
request Discord would refuse, any call the fake doesn't know, or a secret in the traffic.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.e2e.conftest import BotProcess, run_bot_process
from tests.fakes.cometapi import MP4_BYTES, FakeCometAPI
from tests.fakes.discord_fake import FakeDiscord, FakeInteraction, RecordedRequest

API_KEY = "sk-e2e-secret-cometapi-key-1234"
EPHEMERAL = 1 << 6


def png(width: int = 400, height: int = 400, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A real PNG made here."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class World:
    """The fakes, the bot's files, and helpers to drive and inspect them."""

    discord: FakeDiscord
    api: FakeCometAPI
    tmp: Path
    processes: list[BotProcess] = field(default_factory=list)

    @property
    def database(self) -> Path:
        return self.tmp / "bot.sqlite3"

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "DISCORD_TOKEN": self.discord.token,
            "COMETAPI_KEY": API_KEY,
            "COMETAPI_BASE_URL": self.api.base_url,
            "DATABASE_URL": f"sqlite:///{self.database}",
            "MEDIA_DIR": str(self.tmp / "media"),
            "DISCORD_GUILD_IDS": str(self.discord.guild_id),
            "POLL_INTERVAL_SECONDS": "0.1",
            "POLL_MAX_INTERVAL_SECONDS": "0.3",
            "API_MAX_RETRIES": "3",
            "API_MAX_QUERIES_PER_SECOND": "100",
            "LOG_LEVEL": "INFO",
        }
        values.update(extra)
        return values

    @contextlib.asynccontextmanager
    async def bot(self, **extra: str) -> AsyncIterator[BotProcess]:
        """Run `python -m bot` until the block ends (SIGTERM then)."""
        async with run_bot_process(
            "bot", self.env(**extra), self.discord.url, fake=self.discord
        ) as process:
            self.processes.append(process)
            await asyncio.sleep(0.3)  # let discord.py settle on its new session
            await self.discord.wait_for(lambda: self.discord.connected, 10)
            yield process

    async def video(
        self, images: list[bytes], prompt: str = "a red cube turns", **options: Any
    ) -> FakeInteraction:
        """Type /video with these images."""
        values: dict[str, Any] = {}
        for position, data in enumerate(images, start=1):
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
            values[f"image{position}"] = self.discord.add_attachment(
                f"picture{position}.png", data, "image/png", width, height
            )
        values["prompt"] = prompt
        user = options.pop("user", None)
        limit = options.pop("attachment_size_limit", None)
        values.update(options)
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs["user"] = user
        if limit is not None:
            kwargs["attachment_size_limit"] = limit
        return await self.discord.slash_command("video", values, **kwargs)

    async def until(self, predicate: Any, timeout: float = 20) -> None:
        """Wait for a condition on the fake API (which doesn't wake the fake Discord)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)

    def original_edits(self, interaction: FakeInteraction) -> list[RecordedRequest]:
        """The bot's edits of its deferred (ephemeral) answer."""
        return self.discord.find_requests(
            "PATCH", rf"/webhooks/\d+/{re.escape(interaction.token)}/messages/@original"
        )

    async def answer(self, interaction: FakeInteraction, timeout: float = 15) -> str:
        """The text of the bot's private answer to an interaction."""
        await self.discord.wait_for(lambda: self.original_edits(interaction), timeout)
        return str(self.original_edits(interaction)[-1].json.get("content") or "")

    def uploads(self) -> list[RecordedRequest]:
        """Every message the bot posted with an .mp4 file."""
        return [
            r
            for r in self.discord.requests
            if r.method == "POST" and any(f.filename.endswith(".mp4") for f in r.files)
        ]

    def posts(self, channel_id: str) -> list[RecordedRequest]:
        """Messages the bot posted in a channel (status messages, results, failures)."""
        return [
            r
            for r in self.discord.requests
            if r.method == "POST"
            and r.path == f"/channels/{channel_id}/messages"
            and r.status == 200
        ]

    def tasks(self) -> list[dict[str, Any]]:
        """The task rows as the bot stored them."""
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute("SELECT * FROM tasks ORDER BY id")]

    def check_clean(self) -> None:
        """Nothing Discord would refuse, nothing unknown, no secret anywhere."""
        assert self.discord.violations == [], self.discord.violations
        assert self.discord.unknown_requests == [], self.discord.unknown_requests
        for request in self.discord.requests:
            blob = repr(request.json)
            assert API_KEY not in blob and self.discord.token not in blob
        for process in self.processes:
            output = process.output()
            assert API_KEY not in output, "the API key leaked into the log"
            assert self.discord.token not in output, "the bot token leaked into the log"
            assert "Traceback" not in output, output[-3000:]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with FakeDiscord() as discord, FakeCometAPI(api_key=API_KEY, finish_after=0.3) as api:
        w = World(discord, api, tmp_path)
        yield w
        w.check_clean()


@pytest.mark.parametrize("count", [2, 4])
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


async def test_every_broken_image_rule_is_refused_before_anything_is_spent(world: World) -> None:
    good = png()
    cases = {
        "too_small": ([good, png(299, 400)], "299×400 px, needs at least 300×300"),
        "aspect": ([good, png(1000, 399)], "needs between 1:2.5 and 2.5:1"),
        "not_image": ([good, b"just some text, not a picture" * 20], "not an image file"),
        "count": ([good], None),
    }
    async with world.bot(IMAGE_AUTOFIX="false"):
        for name, (images, expected) in cases.items():
            if name == "count":
                continue  # Discord itself requires image1 and image2
            att = []
            for position, data in enumerate(images, start=1):
                att.append(world.discord.add_attachment(f"img{position}.png", data, "image/png"))
            interaction = await world.discord.slash_command(
                "video", {"image1": att[0], "image2": att[1], "prompt": "move"}
            )
            callback = await interaction.wait_callback(3)
            assert callback.data and callback.data.get("flags", 0) & EPHEMERAL
            answer = await world.answer(interaction)
            assert expected is not None and expected in answer, (name, answer)
            assert "image 2 (img2.png)" in answer
    assert world.api.requests == [], "no API call"
    assert world.tasks() == [], "no quota used"
    assert world.posts(str(world.discord.channel_id)) == [], "nothing public"


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


async def test_quota_exhausted(world: World) -> None:
    async with world.bot(QUOTA_DAILY_PER_USER="1"):
        first = await world.video([png(), png()])
        assert "on its way" in await world.answer(first)
        second = await world.video([png(), png()])
        answer = await world.answer(second)
    assert "You've used 1 of your 1 videos for today" in answer
    assert len(world.api.submits) <= 1
    assert len(world.tasks()) == 1


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
