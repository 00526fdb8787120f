"""The public status message of a task: its quota line, its estimate, and its edits.

The message itself is built by `cogs.messages.status_embed`; the intake posts it (with the
picture of the input images attached), the notifier keeps it up to date. The estimate comes
from the engine's learned generation times (`bot.engine.polls`, `bot.eta`): when a waiting task
likely starts, or a bar and when a running one is likely ready — as Discord's live relative
time, so the words stay true between the few edits.
"""

from __future__ import annotations

import logging
import time

import discord

from bot.eta import queued_text, running_text
from bot.quota import DAY_SECONDS
from bot.strings import text
from bot.tasks import Task, TaskState
from cogs.messages import status_embed, timestamp
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
        estimate=estimate_text(bot, task, queue_position),
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


#: States in which a task is at the provider (or being sent there).
RUNNING = frozenset({TaskState.SUBMITTING, TaskState.SUBMITTED, TaskState.PROCESSING})


def estimate_text(bot: ServiceBot, task: Task, queue_position: int | None) -> str | None:
    """When the task likely starts or is ready, in words; None once it has ended."""
    polls = bot.engine.polls
    if task.state is TaskState.QUEUED and queue_position is not None:
        waiting, starts = polls.queued(task, queue_position)
        return queued_text(task.locale, waiting, when=timestamp(starts))
    if task.state in RUNNING or task.state is TaskState.QUEUED:  # queued: sent at once
        running, ready = polls.running(task)
        return running_text(task.locale, running, when=None if ready is None else timestamp(ready))
    return None


#: The shares of the usual time of its kind (by when 9 in 10 such tasks are done) at which a
#: running task's status is shown again (its bar moves), and the least time between two such
#: refreshes (seconds). Fixed marks: the likely finish moves later while a task runs, so marks
#: taken from it would slide and come again and again.
REFRESH_MARKS = (0.25, 0.5, 0.75)
REFRESH_MIN_GAP = 10.0


def next_refresh(bot: ServiceBot, task: Task, now: float) -> float | None:
    """When a running task's status says something new (unix seconds): its bar moves on, or it
    turns "taking longer than usual"; None when nothing more will change. So a task's status
    is edited a handful of times (at most four), never once per poll."""
    if task.state not in RUNNING or task.submitted_at is None:
        return None
    polls = bot.engine.polls
    running, _ready = polls.running(task)
    if running.late:
        return None
    usual = running.usual / polls.scale
    marks = [task.submitted_at + f * usual for f in REFRESH_MARKS]
    marks.append(task.submitted_at + usual + 1.0 / polls.scale)  # just past: "longer than usual"
    upcoming = [mark for mark in marks if mark >= now + REFRESH_MIN_GAP / polls.scale]
    return min(upcoming) if upcoming else None
