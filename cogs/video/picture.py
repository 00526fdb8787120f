"""The picture of a request's input images (`bot.collage`): made once at intake, kept beside
the images, attached to the public status message where the bot may attach files."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import discord

from bot.collage import make_collage
from bot.tasks import Task
from cogs.services import ServiceBot

log = logging.getLogger(__name__)


async def save_picture(bot: ServiceBot, folder: Path, inputs: list[tuple[str, bytes]]) -> None:
    """Make the picture of the inputs once (in a worker thread) and keep it beside them; a
    request goes on without it when it can't be made."""
    try:
        collage = await asyncio.to_thread(make_collage, [data for _, data in inputs])
        await bot.media.save_picture(folder, collage.filename, collage.data)
    except Exception:
        log.exception("The picture of the inputs in %s couldn't be made", folder)


async def send_status(
    bot: ServiceBot,
    channel: discord.abc.Messageable,
    task: Task,
    embed: discord.Embed,
    *,
    attach: bool,
) -> discord.Message:
    """Post the status message with the picture of the inputs attached when the bot may
    attach files there (`attach`) and the picture was made; else without it."""
    picture = await bot.media.picture(task.input_dir) if attach and task.input_dir else None
    if picture is not None:
        try:
            file = discord.File(picture, picture.name)
        except OSError:
            log.warning("Task %d: the picture of the inputs can't be read", task.id, exc_info=True)
        else:
            return await channel.send(embed=embed, file=file)
    return await channel.send(embed=embed)
