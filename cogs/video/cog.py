"""The commands everyone uses: /video, the "Make a video" context menu, /quota and /tasks."""

from __future__ import annotations

import logging
import time
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import locale_str as _
from discord.ext import commands

from bot.credits import CreditKind, quota_text
from bot.images import MAX_IMAGES, MIN_IMAGES
from bot.kling.models import (
    ASPECT_RATIOS,
    DEFAULT_DURATION,
    DEFAULT_MODE,
    DURATIONS,
    MAX_PROMPT,
    MODES,
)
from bot.quota import DAY_SECONDS
from bot.strings import text
from bot.tasks import TaskState
from cogs.caller import caller_limits, reply_privately, role_ids
from cogs.messages import EMBED_FIELD_MAX, clip, jump_url, link_guild, state_text, timestamp
from cogs.services import ServiceBot
from cogs.translator import command_text
from cogs.video.buttons import TaskButton
from cogs.video.flow import VideoRequest, attachment_refs, start_video

log = logging.getLogger(__name__)

MODAL_TIMEOUT_SECONDS = 15 * 60
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
#: The names the commands show for the API's values (every value has one).
DURATION_NAMES = {"5": _("5 seconds"), "10": _("10 seconds")}
MODE_NAMES = {"std": _("std (standard)"), "pro": _("pro (higher quality)")}
ASPECT_RATIO_NAMES = {
    "16:9": _("16:9 landscape"),
    "9:16": _("9:16 portrait"),
    "1:1": _("1:1 square"),
}


def api_choices(
    values: tuple[str, ...], names: dict[str, app_commands.locale_str]
) -> list[app_commands.Choice[str]]:
    """A command's choices for an option: each value the API takes, with its shown name."""
    return [app_commands.Choice(name=names[value], value=value) for value in values]


def looks_like_image(attachment: discord.Attachment) -> bool:
    """Whether an attachment of a message is meant as an image (intake checks the bytes)."""
    if attachment.content_type and attachment.content_type.startswith("image/"):
        return True
    return attachment.filename.lower().endswith(IMAGE_SUFFIXES)


class VideoModal(discord.ui.Modal):
    """Asks for the prompt (and duration/mode) for the context menu."""

    def __init__(
        self, message: discord.Message, attachments: list[discord.Attachment], locale: str
    ) -> None:
        # A form the user closes without sending is forgotten after the interaction's lifetime.
        super().__init__(
            title=clip(command_text(locale, "Make a video from these images"), 45),
            timeout=MODAL_TIMEOUT_SECONDS,
        )
        self.attachments = attachments
        self.prompt: discord.ui.TextInput[VideoModal] = discord.ui.TextInput(
            label=command_text(locale, "Describe the video"),
            style=discord.TextStyle.paragraph,
            max_length=MAX_PROMPT,
            required=True,
        )
        self.duration: discord.ui.TextInput[VideoModal] = discord.ui.TextInput(
            label=command_text(locale, "Duration (5 or 10)"),
            default=DEFAULT_DURATION,
            max_length=max(len(value) for value in DURATIONS),
            required=False,
        )
        self.mode: discord.ui.TextInput[VideoModal] = discord.ui.TextInput(
            label=command_text(locale, "Mode (std or pro)"),
            default=DEFAULT_MODE,
            max_length=max(len(value) for value in MODES),
            required=False,
        )
        for item in (self.prompt, self.duration, self.mode):
            self.add_item(item)

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        """The same flow as /video (which acknowledges the form first)."""
        request = VideoRequest(
            prompt=self.prompt.value,
            duration=(self.duration.value or DEFAULT_DURATION).strip(),
            mode=(self.mode.value or DEFAULT_MODE).strip().lower(),
            attachments=attachment_refs(self.attachments),
        )
        await start_video(interaction, request)


class VideoCog(commands.Cog):
    """Making videos, and seeing one's quota and tasks."""

    def __init__(self, bot: ServiceBot) -> None:
        self.bot = bot
        self.context_menu = app_commands.ContextMenu(
            name=_("Make a video"), callback=self.make_video_from_message
        )

    async def cog_load(self) -> None:
        """Register the context menu and the buttons that survive restarts."""
        self.bot.tree.add_command(self.context_menu)
        self.bot.add_dynamic_items(TaskButton)

    async def cog_unload(self) -> None:
        """Undo `cog_load`."""
        self.bot.tree.remove_command(self.context_menu.name, type=self.context_menu.type)
        self.bot.remove_dynamic_items(TaskButton)

    @app_commands.command(
        name=_("video"), description=_("Make a short video from 2–4 images and a prompt")
    )
    @app_commands.rename(
        image1=_("image1"),
        image2=_("image2"),
        image3=_("image3"),
        image4=_("image4"),
        prompt=_("prompt"),
        duration=_("duration"),
        mode=_("mode"),
        aspect_ratio=_("aspect_ratio"),
        negative_prompt=_("negative_prompt"),
        cfg_scale=_("cfg_scale"),
    )
    @app_commands.describe(
        image1=_("First image (JPG or PNG, at least 300×300)"),
        image2=_("Second image"),
        image3=_("Third image (optional)"),
        image4=_("Fourth image (optional)"),
        prompt=_("What should happen in the video (max 500 characters)"),
        duration=_("Length of the video"),
        mode=_("std is faster, pro looks better"),
        aspect_ratio=_("Shape of the video"),
        negative_prompt=_("What to avoid (max 200 characters)"),
        cfg_scale=_("How closely to follow the prompt, 0 to 1"),
    )
    @app_commands.choices(
        duration=api_choices(DURATIONS, DURATION_NAMES),
        mode=api_choices(MODES, MODE_NAMES),
        aspect_ratio=api_choices(ASPECT_RATIOS, ASPECT_RATIO_NAMES),
    )
    async def video(
        self,
        interaction: discord.Interaction[Any],
        image1: discord.Attachment,
        image2: discord.Attachment,
        prompt: app_commands.Range[str, 1, MAX_PROMPT],
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        duration: str | None = None,
        mode: str | None = None,
        aspect_ratio: str | None = None,
        negative_prompt: app_commands.Range[str, 1, 200] | None = None,
        cfg_scale: app_commands.Range[float, 0.0, 1.0] | None = None,
    ) -> None:
        """Make a video from 2–4 attached images and a prompt (acknowledged first, at once)."""
        attachments = [a for a in (image1, image2, image3, image4) if a is not None]
        request = VideoRequest(
            prompt=prompt,
            duration=duration,
            mode=mode,
            aspect_ratio=aspect_ratio,
            negative_prompt=negative_prompt,
            cfg_scale=cfg_scale,
            attachments=attachment_refs(attachments),
        )
        await start_video(interaction, request)

    async def make_video_from_message(
        self, interaction: discord.Interaction[Any], message: discord.Message
    ) -> None:
        """The "Make a video" context menu: the message's images, a modal for the prompt."""
        locale = str(interaction.locale)
        images = [a for a in message.attachments if looks_like_image(a)]
        if not MIN_IMAGES <= len(images) <= MAX_IMAGES:
            await reply_privately(
                interaction, text(locale, "reply.context_count", count=len(images))
            )
            return
        await interaction.response.send_modal(VideoModal(message, images, locale))

    @app_commands.command(name=_("quota"), description=_("Show how many videos you can still make"))
    async def quota(self, interaction: discord.Interaction[Any]) -> None:
        """The caller's usage, limits, credits left and what each option costs, running and
        queued tasks, and when the next slot frees."""
        locale = str(interaction.locale)
        store = self.bot.store
        caller = await caller_limits(
            self.bot, interaction.guild_id, interaction.user.id, role_ids(interaction.user)
        )
        limits = caller.videos
        now = time.time()
        used = await store.usage(user_id=interaction.user.id, since=now - DAY_SECONDS)
        active = await store.active_for_user(interaction.user.id)
        unlimited = text(locale, "quota.unlimited")
        next_free = await store.next_slot_frees_at(interaction.user.id, limit=limits.daily_per_user)
        if next_free is not None and (
            limits.daily_per_user is None or used < limits.daily_per_user
        ):
            next_free = None
        next_text = timestamp(next_free) if next_free else "—"
        concurrent_limit = None if limits.exempt else limits.concurrent_per_user
        if next_free is None and concurrent_limit is not None and len(active) >= concurrent_limit:
            likely = self.bot.engine.polls.next_free(active)  # the learned generation times
            if likely is not None:
                next_text = text(locale, "quota.next_likely", when=timestamp(likely))
        body = text(
            locale,
            "quota.body",
            used=used,
            daily=unlimited
            if limits.exempt or limits.daily_per_user is None
            else limits.daily_per_user,
            active=len(active),
            concurrent=unlimited
            if limits.exempt or limits.concurrent_per_user is None
            else limits.concurrent_per_user,
            next=next_text,
        )
        if limits.exempt:
            body += "\n" + text(locale, "quota.exempt")
        credit_limit = None if caller.credits.exempt else caller.credits.daily_per_user
        spent = await store.credits_spent(CreditKind.DAILY_USER, user_id=interaction.user.id)
        body += "\n\n" + quota_text(locale, self.bot.settings.price_table(), credit_limit, spent)
        lines = []
        for task in active:
            position = (
                self.bot.engine.queue.position(task.id) if task.state is TaskState.QUEUED else None
            )
            lines.append(f"#{task.id} · {state_text(task, position)} · {clip(task.prompt, 60)}")
        embed = discord.Embed(title=text(locale, "quota.title"), description=body)
        if lines:
            embed.add_field(name="⏳", value=clip("\n".join(lines), EMBED_FIELD_MAX), inline=False)
        await reply_privately(interaction, embed=embed)

    @app_commands.command(name=_("tasks"), description=_("Show your recent videos"))
    async def tasks(self, interaction: discord.Interaction[Any]) -> None:
        """The caller's recent tasks with state, time and a jump link to each result."""
        locale = str(interaction.locale)
        recent = await self.bot.store.recent_for_user(interaction.user.id, limit=10)
        if not recent:
            await reply_privately(interaction, text(locale, "tasks.empty"))
            return
        lines = []
        for task in recent:
            link = ""
            if task.result_message_id is not None:
                url = jump_url(
                    link_guild(task), task.thread_id or task.channel_id, task.result_message_id
                )
                link = f" · [↗]({url})"
            elif task.status_message_id is not None:
                url = jump_url(link_guild(task), task.channel_id, task.status_message_id)
                link = f" · [↗]({url})"
            lines.append(
                text(
                    locale,
                    "tasks.line",
                    task_id=task.id,
                    state=state_text(task),
                    when=timestamp(task.created_at),
                    prompt=clip(task.prompt, 50),
                    link=link,
                )
            )
        embed = discord.Embed(
            title=text(locale, "tasks.title"), description=clip("\n".join(lines), 4000)
        )
        await reply_privately(interaction, embed=embed)
