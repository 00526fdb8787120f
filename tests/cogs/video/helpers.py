"""Helpers of the Discord side's direct tests: a /video as Discord sends it, and what came back."""

from __future__ import annotations

import io
from typing import Any

import discord
from PIL import Image

from cogs.services import ServiceBot
from cogs.video.flow import VideoRequest, attachment_refs
from tests.fakes.discord import FakeDiscord, FakeInteraction

DEFERRED_PRIVATELY = (5, 64)  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE, EPHEMERAL


def png(width: int = 400, height: int = 400) -> bytes:
    """A valid PNG of that size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, "PNG")
    return buffer.getvalue()


async def request(
    fake: FakeDiscord, bot: ServiceBot, prompt: str = "a red cube turns", **options: Any
) -> tuple[FakeInteraction, discord.Interaction[Any], VideoRequest]:
    """A /video with two images, as discord.py builds it from the payload Discord sends."""
    attachments = [
        fake.add_attachment(f"picture{n}.png", png(), "image/png", 400, 400) for n in (1, 2)
    ]
    sent = await fake.slash_command(
        "video",
        {"image1": attachments[0], "image2": attachments[1], "prompt": prompt},
        require_gateway=False,
    )
    interaction: discord.Interaction[Any] = discord.Interaction(
        data=sent.payload,  # type: ignore[arg-type]
        state=bot._connection,
    )
    refs = attachment_refs([discord.Attachment(data=a, state=bot._connection) for a in attachments])  # type: ignore[arg-type]
    return sent, interaction, VideoRequest(prompt=prompt, attachments=refs, **options)


def answers(fake: FakeDiscord, sent: FakeInteraction) -> list[str]:
    """What the bot put in its deferred private answer, edit by edit."""
    edits = fake.find_requests("PATCH", rf"/webhooks/\d+/{sent.token}/messages/@original")
    return [str(edit.json["content"]) for edit in edits]


def status_posts(fake: FakeDiscord) -> list[dict[str, Any]]:
    """The status messages the bot posted in the channel."""
    return [
        message
        for message in fake.messages_in(str(fake.channel_id))
        if any("Video request #" in (e.get("title") or "") for e in message.get("embeds") or [])
    ]
