"""The buttons under a delivered video: Regenerate, Details, Delete.

Their state lives in the custom_id (`kling:<action>:<task id>`) through discord.py's
`DynamicItem`, so they keep working after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from typing import Any

import discord

from bot.store import InteractionKind, OpenInteraction
from bot.strings import text
from bot.tasks import Task
from cogs.caller import is_manager, reply_privately
from cogs.messages import clip, options_text, state_text
from cogs.services import ServiceBot
from cogs.video.answers import acknowledge, answer, find_own_message
from cogs.video.flow import regenerate

log = logging.getLogger(__name__)

ACTIONS = ("regen", "details", "delete")
STYLES = {
    "regen": discord.ButtonStyle.primary,
    "details": discord.ButtonStyle.secondary,
    "delete": discord.ButtonStyle.danger,
}
EMOJI = {"regen": "🔁", "details": "ℹ️", "delete": "🗑️"}
LABEL_KEYS = {"regen": "button.regenerate", "details": "button.details", "delete": "button.delete"}


def task_marker(task_id: int) -> str:
    """The custom_id that marks a task's result message (its Details button)."""
    return f"kling:details:{task_id}"


class TaskButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"kling:(?P<action>regen|details|delete):(?P<task_id>[0-9]{1,20})",
):
    """One of the result buttons; everything it needs is in its custom_id."""

    def __init__(self, action: str, task_id: int, locale: str | None = None) -> None:
        super().__init__(
            discord.ui.Button(
                label=text(locale, LABEL_KEYS[action]),
                style=STYLES[action],
                emoji=EMOJI[action],
                custom_id=f"kling:{action}:{task_id}",
            )
        )
        self.action = action
        self.task_id = task_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> TaskButton:
        """Rebuild the button from a press, also after a restart."""
        return cls(match["action"], int(match["task_id"]), str(interaction.locale))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        """Route the press to its action; an unexpected error is logged and told plainly."""
        try:
            await self._act(interaction)
        except Exception:
            log.exception("Button %s for task %d failed", self.action, self.task_id)
            message = text(str(interaction.locale), "reply.unexpected", task_id=self.task_id)
            with contextlib.suppress(discord.HTTPException):
                await reply_privately(interaction, message)

    async def _act(self, interaction: discord.Interaction[Any]) -> None:
        bot: ServiceBot = interaction.client
        locale = str(interaction.locale)
        task = await bot.store.get(self.task_id)
        if task is None:
            await reply_privately(interaction, text(locale, "reply.task_gone"))
            return
        if self.action == "details":
            await reply_details(interaction, task, locale)
            return
        if not may_manage(interaction, task):
            await reply_privately(interaction, text(locale, "reply.not_yours"))
            return
        if self.action == "delete":
            await delete_result(interaction, task)
        else:
            await regenerate(interaction, task)


def result_view(task: Task) -> discord.ui.View:
    """The buttons under a result message."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(TaskButton(action, task.id, task.locale))
    return view


def notice_view(task: Task) -> discord.ui.View:
    """The button under a failure notice: Details (it also marks the notice as this task's)."""
    view = discord.ui.View(timeout=None)
    view.add_item(TaskButton("details", task.id, task.locale))
    return view


def may_manage(interaction: discord.Interaction[Any], task: Task) -> bool:
    """The task's owner, or someone who may manage the server."""
    return interaction.user.id == task.user_id or is_manager(interaction)


def details_embed(task: Task, locale: str, bot: ServiceBot) -> discord.Embed:
    """What the Details button shows."""
    end = task.delivered_at or task.finished_at or time.time()
    taken = f"{max(0, round(end - task.created_at))} s"
    body = text(
        locale,
        "details.body",
        kling_id=task.kling_task_id or "—",
        model=bot.settings.kling_model,
        options=options_text(task).replace("\n", "; "),
        images=task.image_count,
        taken=taken,
        state=state_text(task),
    )
    embed = discord.Embed(
        title=text(locale, "details.title", task_id=task.id), description=clip(body, 4000)
    )
    embed.add_field(name="Prompt", value=clip(task.prompt, 1024), inline=False)
    return embed


async def reply_details(interaction: discord.Interaction[Any], task: Task, locale: str) -> None:
    """Show Details privately, with the picture of the inputs while it is kept."""
    bot: ServiceBot = interaction.client
    embed = details_embed(task, locale, bot)
    picture = None
    if task.input_dir and task.inputs_removed_at is None:
        picture = await bot.media.picture(task.input_dir)
    if picture is None:
        await reply_privately(interaction, embed=embed)
        return
    embed.set_image(url=f"attachment://{picture.name}")  # never edited, so shown once
    await reply_privately(interaction, embed=embed, files=[discord.File(picture, picture.name)])


async def delete_result(interaction: discord.Interaction[Any], task: Task) -> None:
    """Acknowledge a Delete press (record it), then carry it out."""
    bot: ServiceBot = interaction.client
    message = interaction.message
    payload: dict[str, Any] = {}
    if message is not None:
        payload = {"message_id": message.id, "message_channel_id": message.channel.id}
    entry = await acknowledge(interaction, InteractionKind.DELETE, payload, task_id=task.id)
    if entry is not None:
        await run_delete(bot, entry)


async def run_delete(bot: ServiceBot, entry: OpenInteraction, *, resumed: bool = False) -> None:
    """Remove the result message and the kept video; say "deleted" only once it is gone.

    Every step can be done again, so a press a crash cut off is carried out again (`resumed`);
    the message is then first looked for, as the killed run may have deleted it already.
    """
    locale = entry.locale
    raw_id = entry.payload.get("message_id")
    message_id = int(raw_id) if raw_id is not None else None
    task = await bot.store.get(entry.task_id) if entry.task_id is not None else None
    if message_id is not None:
        channel = bot.get_partial_messageable(int(entry.payload["message_channel_id"]))
    if message_id is not None and resumed:
        since = (task.finished_at or task.created_at) if task is not None else entry.created_at
        wanted = message_id
        if await find_own_message(bot, channel, since, lambda m: m.id == wanted) is None:
            message_id = None  # gone already
    if message_id is not None:
        try:
            await channel.get_partial_message(message_id).delete()
        except discord.NotFound:
            pass  # someone else removed it already (or this press, before a crash)
        except discord.HTTPException as error:
            log.info("Task %s: the result message couldn't be deleted (%s)", entry.task_id, error)
            await answer(bot, entry, text(locale, "reply.delete_failed"), elsewhere=False)
            await bot.store.close_interaction(entry.id)
            return
    await answer(bot, entry, text(locale, "reply.deleted"), elsewhere=False)
    if task is not None and task.video_path:
        await bot.media.remove(task.video_path)
        await bot.store.update(task.id, video_path=None)
    await bot.store.close_interaction(entry.id)
