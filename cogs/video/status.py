"""The public status message of a task: its quota line, and its edits.

The message itself is built by `cogs.messages.status_embed`; the intake posts it, the notifier
keeps it up to date.
"""

from __future__ import annotations

import logging
import time

import discord

from bot.quota import DAY_SECONDS
from bot.strings import text
from bot.tasks import Task
from cogs.messages import status_embed
from cogs.services import ServiceBot

log = logging.getLogger(__name__)


async def edit_status(
    bot: ServiceBot,
    task: Task,
    *,
    queue_position: int | None = None,
    result_link: str | None = None,
    quietly: bool = True,
) -> None:
    """Show the task's state on its status message (a failed edit is logged when `quietly`)."""
    if task.status_message_id is None:
        return
    embed = status_embed(
        task,
        queue_position=queue_position,
        quota_line=await quota_line(bot, task),
        result_link=result_link,
    )
    message = bot.get_partial_messageable(task.channel_id).get_partial_message(
        task.status_message_id
    )
    try:
        await message.edit(embed=embed)
    except discord.HTTPException as error:
        if not quietly:
            raise
        log.info("Task %d: status edit failed (%s)", task.id, error)


async def quota_line(bot: ServiceBot, task: Task) -> str:
    """The owner's quota in words, for the status message."""
    limit = task.notes.quota_daily
    if limit is None:
        return text(task.locale, "status.quota_unlimited")
    used = await bot.store.usage(user_id=task.user_id, since=time.time() - DAY_SECONDS)
    return text(task.locale, "status.quota_value", remaining=max(0, limit - used), limit=limit)
