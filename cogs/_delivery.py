"""`DiscordNotifier`: the engine's `Notifier` on Discord — status edits, the video, failures.

Everything here is an ordinary bot message or message edit (never the interaction webhook,
whose token dies after 15 minutes). Status edits are throttled to one per `EDIT_INTERVAL`
per task; final states are shown at once. Delivery is exactly once: before posting, the
bot looks in the target channel for its own message for that task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.store import Task, TaskState
from bot.strings import text
from cogs._buttons import result_view, task_marker
from cogs._messages import clip, failure_reason, jump_url, link_guild, status_embed

if TYPE_CHECKING:
    from bot.app import KlingBot

log = logging.getLogger(__name__)

EDIT_INTERVAL = 5.0
HISTORY_LOOKBACK = 500  # messages read after the task finished, looking for its result
CLOCK_SLACK_SECONDS = 60.0
MESSAGE_MAX = 2000
DAY = 86400.0


class DiscordNotifier:
    """Tells Discord users what the engine does with their tasks."""

    def __init__(self, bot: KlingBot) -> None:
        self.bot = bot
        self._last_edit: dict[int, float] = {}
        self._latest: dict[int, tuple[Task, int | None]] = {}
        self._pending: dict[int, asyncio.Task[None]] = {}

    # --- the engine's Notifier protocol ----------------------------------------------------

    async def progress(self, task: Task, queue_position: int | None) -> None:
        """Show the new state (throttled: at most one edit per task every few seconds)."""
        if task.status_message_id is None:
            return
        self._latest[task.id] = (task, queue_position)
        if task.id not in self._pending:  # the edit runs aside: the engine never waits on Discord
            wait = self._last_edit.get(task.id, 0.0) + EDIT_INTERVAL - time.monotonic()
            self._pending[task.id] = asyncio.create_task(self._edit_later(task.id, max(0.0, wait)))

    async def deliver(self, task: Task) -> int | None:
        """Post the video (or its link) for the owner, once; return the message id."""
        existing = await self._find_delivery(self._target(task), task)
        if existing is not None:
            log.info("Task %d was already delivered as message %d", task.id, existing)
            await self._finish_status(task, existing)
            return existing
        message = await self._post_result(task)
        await self._finish_status(task, message.id)
        await self._log_line(task, jump_url(link_guild(task), message.channel.id, message.id))
        return message.id

    async def failed(self, task: Task) -> None:
        """Say in the thread why the task ended without a video, and about the quota."""
        mention = f"<@{task.user_id}>"
        if task.state is TaskState.TIMED_OUT:
            minutes = max(1, round((time.time() - task.created_at) / 60))
            body = text(task.locale, "deliver.timed_out", mention=mention, minutes=minutes)
        else:
            body = text(task.locale, "deliver.failed", mention=mention, reason=failure_reason(task))
        refund = "deliver.refunded" if task.quota_refunded else "deliver.not_refunded"
        body = f"{body}\n{text(task.locale, refund)}"
        try:
            await self._send(task, clip(body, 2000))
        except discord.HTTPException:
            log.warning("Task %d: couldn't post the failure notice", task.id, exc_info=True)
        await self._finish_status(task, None)
        await self._log_line(task, None)

    async def flush(self) -> None:
        """Drop pending throttled edits (the bot is closing)."""
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()

    # --- status message ----------------------------------------------------------------------

    async def _edit_later(self, task_id: int, wait: float) -> None:
        try:
            await asyncio.sleep(wait)
            self._pending.pop(task_id, None)
            await self._edit_latest(task_id)
        except asyncio.CancelledError:
            pass

    async def _edit_latest(self, task_id: int) -> None:
        latest = self._latest.pop(task_id, None)
        if latest is None:
            return
        task, position = latest
        self._last_edit[task_id] = time.monotonic()
        await self.edit_status(task, queue_position=position)

    async def _finish_status(self, task: Task, result_message_id: int | None) -> None:
        """Show the final state at once, whatever the throttle says."""
        pending = self._pending.pop(task.id, None)
        if pending is not None:
            pending.cancel()
        self._latest.pop(task.id, None)
        self._last_edit.pop(task.id, None)
        final = task
        link = None
        if result_message_id is not None:
            final = replace(task, state=TaskState.DELIVERED)
            link = jump_url(link_guild(task), task.thread_id or task.channel_id, result_message_id)
        await self.edit_status(final, result_link=link)

    async def edit_status(
        self, task: Task, *, queue_position: int | None = None, result_link: str | None = None
    ) -> None:
        if task.status_message_id is None:
            return
        quota_line = await self.quota_line(task)
        embed = status_embed(
            task, queue_position=queue_position, quota_line=quota_line, result_link=result_link
        )
        message = self.bot.get_partial_messageable(task.channel_id).get_partial_message(
            task.status_message_id
        )
        try:
            await message.edit(embed=embed)
        except discord.HTTPException as error:
            log.info("Task %d: status edit failed (%s)", task.id, error)

    async def quota_line(self, task: Task) -> str | None:
        limit = task.options.get("quota_daily")
        if limit is None:
            return text(task.locale, "status.quota_unlimited")
        used = await self.bot.store.usage(user_id=task.user_id, since=time.time() - DAY)
        return text(
            task.locale, "status.quota_value", remaining=max(0, int(limit) - used), limit=limit
        )

    # --- the result ---------------------------------------------------------------------------

    def _target(self, task: Task) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(
            task.thread_id or task.channel_id, guild_id=task.guild_id
        )

    async def _find_delivery(self, channel: discord.PartialMessageable, task: Task) -> int | None:
        """The bot's own earlier result message for this task, if a crash hid it from the store."""
        if task.result_message_id is not None:
            return task.result_message_id
        me = self.bot.user
        marker = task_marker(task.id)
        # Only messages since the task finished can be its result: start there, however busy
        # the channel has been since.
        since = (task.finished_at or task.created_at) - CLOCK_SLACK_SECONDS
        after = discord.Object(id=discord.utils.time_snowflake(datetime.fromtimestamp(since, UTC)))
        try:
            async for message in channel.history(limit=HISTORY_LOOKBACK, after=after):
                if me is not None and message.author.id != me.id:
                    continue
                for row in message.components:
                    for child in getattr(row, "children", ()):
                        if getattr(child, "custom_id", None) == marker:
                            return message.id
        except discord.HTTPException:
            log.info("Task %d: couldn't read the channel's history", task.id)
        return None

    async def _send(
        self,
        task: Task,
        content: str,
        *,
        view: discord.ui.View | None = None,
        video: Path | None = None,
    ) -> discord.Message:
        """Post for the task's owner: in its thread, else its channel, else by DM.

        A deleted thread or a permission taken away after the request never strands a result.
        Only the owner can be pinged, whatever the provider's text says.
        """
        places = dict.fromkeys(c for c in (task.thread_id, task.channel_id) if c is not None)
        refused: discord.HTTPException | None = None
        for channel_id in places:
            target = self.bot.get_partial_messageable(channel_id, guild_id=task.guild_id)
            try:
                return await self._post(target, task, content, view, video)
            except (discord.Forbidden, discord.NotFound) as error:
                log.info(
                    "Task %d: can't post in %d (%s); trying the next place",
                    task.id,
                    channel_id,
                    error,
                )
                refused = error
        try:
            dm = await (await self.bot.fetch_user(task.user_id)).create_dm()
        except discord.HTTPException:
            if refused is not None:
                raise refused from None
            raise
        return await self._post(dm, task, content, view, video)

    @staticmethod
    async def _post(
        target: discord.abc.Messageable,
        task: Task,
        content: str,
        view: discord.ui.View | None,
        video: Path | None,
    ) -> discord.Message:
        kwargs: dict[str, Any] = {
            "allowed_mentions": discord.AllowedMentions(users=[discord.Object(task.user_id)])
        }
        if view is not None:
            kwargs["view"] = view
        if video is not None:  # a fresh File each time: a sent one is consumed
            kwargs["file"] = discord.File(video, filename=f"kling-video-{task.id}.mp4")
        return await target.send(content, **kwargs)

    async def _post_result(self, task: Task) -> discord.Message:
        mention = f"<@{task.user_id}>"
        locale = task.locale
        view = result_view(task)
        path = Path(task.video_path) if task.video_path else None
        if (
            path is not None
            and task.video_bytes is not None
            and task.video_bytes <= task.upload_limit
        ):
            try:
                return await self._send(
                    task, text(locale, "deliver.ready", mention=mention), view=view, video=path
                )
            except discord.HTTPException as error:
                if error.status != 413:
                    raise
                log.info("Task %d: the upload was too large for Discord; sending the link", task.id)
        if task.video_url and path is not None:
            body = text(
                locale,
                "deliver.link",
                mention=mention,
                size=_megabytes(task.video_bytes or 0),
                limit=_megabytes(task.upload_limit),
                url=task.video_url,
            )
        elif task.video_url:
            body = text(
                locale,
                "deliver.link_unknown",
                mention=mention,
                reason=failure_reason(task),
                url=task.video_url,
            )
        else:
            body = text(locale, "deliver.no_link", mention=mention)
        if len(body) > MESSAGE_MAX and task.video_url:
            body = f"{mention} {task.video_url}"  # never cut a link in half
        return await self._send(task, clip(body, MESSAGE_MAX), view=view)

    async def _log_line(self, task: Task, link: str | None) -> None:
        """One line per finished task in the guild's log channel, when one is set."""
        if task.guild_id is None:
            return
        with contextlib.suppress(Exception):
            settings = await self.bot.store.get_guild_settings(task.guild_id)
            if settings.log_channel_id is None:
                return
            state = TaskState.DELIVERED if link else task.state
            line = text(
                task.locale,
                "log.line",
                task_id=task.id,
                user=f"<@{task.user_id}>",
                state=state.value,
                prompt=clip(task.prompt, 200),
                link=f" · {link}" if link else "",
            )
            await self.bot.get_partial_messageable(settings.log_channel_id).send(clip(line, 2000))


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
