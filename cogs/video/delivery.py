"""`DiscordNotifier`: the engine's `Notifier` on Discord — status edits, the video, failures.

Everything here is an ordinary bot message or message edit (never the interaction webhook,
whose token dies after 15 minutes). Status edits are throttled to one per `EDIT_INTERVAL`
per task; final states are shown at once. Besides the engine's news, a running task's status
is shown again only when its estimate says something new (`status.next_refresh`: a few times).

An ending (the video, or the notice of a failure) reaches the user exactly once, whenever the
process dies: each step is either an edit (the final status: simply done again) or a post
that is found again before it is repeated — the result or notice by its Details button in
every place it may have gone (thread, channel, and the DMs once the fall-back was written
down), the log-channel line by its task number once its start was written down. The engine
asks again after a restart until the whole ending is done.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import discord

from bot.credits import CreditAlert, monthly_alert_text
from bot.engine.notifier import Delivered
from bot.strings import text
from bot.tasks import Task, TaskState
from cogs.messages import MESSAGE_MAX, clip, failure_reason, jump_url, link_guild, timestamp
from cogs.services import ServiceBot
from cogs.video.answers import carries_button, find_own_message, open_dm
from cogs.video.buttons import notice_view, result_view, task_marker
from cogs.video.status import edit_status, next_refresh

log = logging.getLogger(__name__)

EDIT_INTERVAL = 5.0
#: How a delivery went, for the metrics, when the ending was out before (a restart came between).
ALREADY_OUT = "again"


def delivery_how(task: Task, message: discord.Message) -> str:
    """How a result went out, in a few words for the metrics: where (`thread`, `channel`, `dm`)
    and what (`upload`, the file; `link`, the video's address), e.g. `thread_upload`."""
    channel_id = message.channel.id
    where = (
        "thread"
        if channel_id == task.thread_id
        else "channel"
        if channel_id == task.channel_id
        else "dm"
    )
    return f"{where}_{'upload' if message.attachments else 'link'}"


class DiscordNotifier:
    """Tells Discord users what the engine does with their tasks."""

    def __init__(self, bot: ServiceBot) -> None:
        self.bot = bot
        self._last_edit: dict[int, float] = {}
        self._latest: dict[int, tuple[Task, int | None]] = {}
        self._pending: dict[int, asyncio.Task[None]] = {}
        self._refresh: dict[int, asyncio.TimerHandle] = {}

    # --- the engine's Notifier protocol ----------------------------------------------------

    async def progress(self, task: Task, queue_position: int | None) -> None:
        """Show the new state (throttled: at most one edit per task every few seconds)."""
        if task.status_message_id is None:
            return
        self._latest[task.id] = (task, queue_position)
        if task.id not in self._pending:  # the edit runs aside: the engine never waits on Discord
            wait = self._last_edit.get(task.id, 0.0) + EDIT_INTERVAL - time.monotonic()
            self._pending[task.id] = asyncio.create_task(self._edit_later(task.id, max(0.0, wait)))

    async def deliver(self, task: Task) -> Delivered:
        """Post the video (or its link) for the owner, once; say which message and how.

        Idempotent: asked again (after a crash, or after a step failed) it finds what is out
        already and does only the rest — the final status edit and the log-channel line.
        """
        message_id, channel_id, how = await self._ending_message(task, self._post_result)
        link = jump_url(link_guild(task), channel_id, message_id)
        await self._finish_status(task, link)
        await self._log_line(task, link)
        return Delivered(message_id, how)

    async def failed(self, task: Task) -> None:
        """Say in the thread why the task ended without a video, and about the quota; once.

        Idempotent like `deliver`. Raises when Discord couldn't take it for now (the engine
        asks again); a notice no place accepts at all (thread, channel, DMs) is given up.
        """
        try:
            await self._ending_message(task, self._post_notice)
        except discord.DiscordServerError:
            raise
        except discord.HTTPException:
            log.warning("Task %d: no place takes the failure notice", task.id, exc_info=True)
        await self._finish_status(task, None)
        await self._log_line(task, None)

    async def post_credit_alert(self, alert: CreditAlert, *, look_first: bool) -> int:
        """Post one alert of the monthly cap in a server's log channel, in the server's
        language; with `look_first`, an earlier post of it (found by its marker) is taken.

        Returns the message id, or 0 when the channel refuses it; raises when Discord can't
        take it for now (the engine's next check tries again).
        """
        guild = self.bot.get_guild(alert.guild_id) if alert.guild_id else None
        locale = str(guild.preferred_locale) if guild is not None else None
        channel = self.bot.get_partial_messageable(alert.channel_id, guild_id=alert.guild_id)
        line = monthly_alert_text(
            locale,
            alert.percent,
            spent=alert.spent,
            cap=alert.cap,
            now=alert.started_at,
            table=self.bot.settings.price_table(),
            when=timestamp,
        )
        try:
            if look_first:
                found = await find_own_message(
                    self.bot,
                    channel,
                    alert.started_at,
                    lambda m: m.content.startswith(alert.marker),
                )
                if found is not None:
                    return found.id
            message = await channel.send(clip(line, MESSAGE_MAX))
        except discord.DiscordServerError:
            raise
        except discord.HTTPException as error:
            log.info("The monthly cap's alert can't go to channel %d (%s)", alert.channel_id, error)
            return 0
        return message.id

    async def flush(self) -> None:
        """Drop pending throttled edits (the bot is closing)."""
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        for refresh in self._refresh.values():
            refresh.cancel()
        self._refresh.clear()

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
        await edit_status(self.bot, task, queue_position=position)
        self._plan_refresh(task)

    def _plan_refresh(self, task: Task) -> None:
        """Show the task's status again when its estimate says something new."""
        old = self._refresh.pop(task.id, None)
        if old is not None:
            old.cancel()
        now = time.time()
        at = next_refresh(self.bot, task, now)
        if at is not None:
            loop = asyncio.get_running_loop()
            self._refresh[task.id] = loop.call_later(at - now, self._refresh_now, task)

    def _refresh_now(self, task: Task) -> None:
        self._refresh.pop(task.id, None)
        if task.id not in self._latest:  # else newer news is about to be shown anyway
            self._latest[task.id] = (task, None)
            if task.id not in self._pending:
                self._pending[task.id] = asyncio.create_task(self._edit_later(task.id, 0.0))

    async def _finish_status(self, task: Task, result_link: str | None) -> None:
        """Show the final state at once, whatever the throttle says.

        Raises when Discord couldn't take the edit for now (a server error or no connection:
        the ending is asked again); a status message that is gone, or that Discord refuses to
        edit, is left as it is.
        """
        pending = self._pending.pop(task.id, None)
        if pending is not None:
            pending.cancel()
        refresh = self._refresh.pop(task.id, None)
        if refresh is not None:
            refresh.cancel()
        self._latest.pop(task.id, None)
        self._last_edit.pop(task.id, None)
        final = replace(task, state=TaskState.DELIVERED) if result_link is not None else task
        try:
            await edit_status(self.bot, final, result_link=result_link, quietly=False)
        except discord.DiscordServerError:
            raise
        except discord.HTTPException as error:
            log.info("Task %d: the final status edit was refused (%s)", task.id, error)

    # --- the result ---------------------------------------------------------------------------

    async def _ending_message(
        self, task: Task, post: Callable[[Task], Awaitable[discord.Message]]
    ) -> tuple[int, int, str]:
        """The ending's message (its id, its channel, how it went out — `delivery_how`): the
        one already out, else a new post.

        Its id is stored at once, so a crash after this needs no search.
        """
        if task.result_message_id is not None:
            return task.result_message_id, task.thread_id or task.channel_id, ALREADY_OUT
        found = await self._find_ending(task)
        if found is not None:
            log.info("Task %d: its ending is already out as message %d", task.id, found.id)
            how = ALREADY_OUT
        else:
            found = await post(task)
            how = delivery_how(task, found)
        await self.bot.store.update(task.id, result_message_id=found.id)
        return found.id, found.channel.id, how

    async def _find_ending(self, task: Task) -> discord.Message | None:
        """The bot's own earlier result or notice for this task, if a crash hid it from the store.

        Only messages since the task finished can be it: the search starts there, however busy
        the channel has been since; it looks wherever `_send` may have posted.
        """
        marker = task_marker(task.id)
        since = task.finished_at or task.created_at
        for channel in await self._places(task, with_dm=task.notes.dm_fallback):
            found = await find_own_message(
                self.bot, channel, since, lambda message: carries_button(message, marker)
            )
            if found is not None:
                return found
        return None

    async def _places(self, task: Task, *, with_dm: bool) -> list[discord.abc.Messageable]:
        """Where the task's ending may be: its thread, its channel, and (with_dm) the DMs."""
        ids = dict.fromkeys(c for c in (task.thread_id, task.channel_id) if c is not None)
        places: list[discord.abc.Messageable] = [
            self.bot.get_partial_messageable(channel_id, guild_id=task.guild_id)
            for channel_id in ids
        ]
        if with_dm:
            try:
                places.append(await open_dm(self.bot, task.user_id))
            except discord.HTTPException:
                log.info("Task %d: the owner's DMs can't be opened", task.id)
        return places

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
            dm = await open_dm(self.bot, task.user_id)
        except discord.HTTPException:
            if refused is not None:
                raise refused from None
            raise
        if not task.notes.dm_fallback:  # written before the post, so it is looked for
            await self.bot.store.update(task.id, notes=replace(task.notes, dm_fallback=True))
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

    async def _post_notice(self, task: Task) -> discord.Message:
        """The failure notice: why, and about the quota; its Details button marks it."""
        mention = f"<@{task.user_id}>"
        if task.state is TaskState.TIMED_OUT:
            minutes = max(1, round(((task.finished_at or time.time()) - task.created_at) / 60))
            body = text(task.locale, "deliver.timed_out", mention=mention, minutes=minutes)
        else:
            body = text(task.locale, "deliver.failed", mention=mention, reason=failure_reason(task))
        refund = "deliver.refunded" if task.quota_refunded else "deliver.not_refunded"
        if task.price_cents:  # what it reserved, in credits
            price = self.bot.settings.price_table().amount_text(task.price_cents, task.locale)
            body = f"{body}\n{text(task.locale, refund + '_credits', price=price)}"
        else:
            body = f"{body}\n{text(task.locale, refund)}"
        return await self._send(task, clip(body, MESSAGE_MAX), view=notice_view(task))

    async def _log_line(self, task: Task, link: str | None) -> None:
        """One line per finished task in the guild's log channel, when one is set; once.

        `log_started_at` is written before the post and `log_message_id` after it, so only a
        post a crash may have hidden is looked for (by its task number) before posting again.
        """
        if task.guild_id is None or task.log_message_id is not None:
            return
        settings = await self.bot.store.get_guild_settings(task.guild_id)
        if settings.log_channel_id is None:
            return
        channel = self.bot.get_partial_messageable(settings.log_channel_id, guild_id=task.guild_id)
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
        prefix = f"#{task.id} · "
        try:
            if task.log_started_at is not None:
                found = await find_own_message(
                    self.bot, channel, task.log_started_at, lambda m: m.content.startswith(prefix)
                )
                if found is not None:
                    await self.bot.store.update(task.id, log_message_id=found.id)
                    return
            else:
                await self.bot.store.update(task.id, log_started_at=time.time())
            message = await channel.send(clip(line, MESSAGE_MAX))
        except discord.DiscordServerError:
            raise  # for now: the ending is asked again
        except discord.HTTPException as error:
            log.info("Task %d: no line in the log channel (%s)", task.id, error)
            return
        await self.bot.store.update(task.id, log_message_id=message.id)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
