"""One video request, from a deferred interaction to a queued task with its status message.

Shared by `/video`, the "Make a video" context menu and the Regenerate button:
options → permissions → images (intake, or the kept inputs) → blocked words → quota (one
atomic reservation with the insert) → status message and thread → the engine's queue.
Anything refused before the reservation is an ephemeral reply that says what to fix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot.config import ImageTransport
from bot.engine import new_callback_token
from bot.images import AttachmentRef, ImageIntakeError, prepare_images
from bot.kling.models import MAX_NEGATIVE_PROMPT, MAX_PROMPT
from bot.quota import QuotaExceeded, find_blocked_word, resolve_limits
from bot.store import GuildSettings, NewTask, Task, TaskState, new_external_task_id
from bot.strings import image_templates, text
from cogs._messages import clip, describe_error, jump_url, link_guild, status_embed

if TYPE_CHECKING:
    from bot.app import KlingBot

log = logging.getLogger(__name__)

DURATIONS = ("5", "10")
MODES = ("std", "pro")
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
THREAD_NAME_MAX = 100


@dataclass
class VideoRequest:
    """What the user asked for: images (attachments, or kept inputs) and options."""

    prompt: str
    duration: str | None = None
    mode: str | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None
    attachments: list[AttachmentRef] = field(default_factory=list)
    kept_inputs: list[tuple[str, bytes]] | None = None  # (format, bytes), for Regenerate
    image_names: list[str] = field(default_factory=list)

    def problems(self, locale: str) -> list[str]:
        """What is wrong with the options, in the user's words."""
        out: list[str] = []
        prompt = self.prompt.strip()
        if not prompt:
            out.append(text(locale, "reply.prompt_empty"))
        elif len(prompt) > MAX_PROMPT:
            out.append(text(locale, "reply.prompt_too_long", length=len(prompt), limit=MAX_PROMPT))
        if self.negative_prompt and len(self.negative_prompt) > MAX_NEGATIVE_PROMPT:
            out.append(
                text(
                    locale,
                    "reply.negative_too_long",
                    length=len(self.negative_prompt),
                    limit=MAX_NEGATIVE_PROMPT,
                )
            )
        if self.duration is not None and self.duration not in DURATIONS:
            out.append(text(locale, "reply.bad_duration"))
        if self.mode is not None and self.mode not in MODES:
            out.append(text(locale, "reply.bad_mode"))
        if self.cfg_scale is not None and not 0 <= self.cfg_scale <= 1:
            out.append(text(locale, "reply.bad_cfg"))
        return out

    def options(self) -> dict[str, Any]:
        """The API options that were set."""
        values = {
            "duration": self.duration,
            "mode": self.mode,
            "aspect_ratio": self.aspect_ratio,
            "negative_prompt": self.negative_prompt or None,
            "cfg_scale": self.cfg_scale,
        }
        return {key: value for key, value in values.items() if value is not None}


def attachment_refs(attachments: Sequence[discord.Attachment]) -> list[AttachmentRef]:
    """What intake needs to know of Discord attachments."""
    return [
        AttachmentRef(
            position=position,
            filename=attachment.filename,
            url=attachment.url,
            size=attachment.size,
            content_type=attachment.content_type,
            width=attachment.width,
            height=attachment.height,
        )
        for position, attachment in enumerate(attachments, start=1)
    ]


def missing_permissions(interaction: discord.Interaction[Any]) -> list[str]:
    """Permissions the bot needs in this channel to post the status and the result."""
    if interaction.guild is None:
        return []
    permissions = interaction.app_permissions
    needed = {"view_channel": "View Channel", "embed_links": "Embed Links"}
    if isinstance(interaction.channel, discord.Thread):
        needed["send_messages_in_threads"] = "Send Messages in Threads"
    else:
        needed["send_messages"] = "Send Messages"
    return [label for name, label in needed.items() if not getattr(permissions, name)]


def can_open_thread(interaction: discord.Interaction[Any]) -> bool:
    """Whether the result can go to a new thread on the status message."""
    channel = interaction.channel
    permissions = interaction.app_permissions
    return (
        interaction.guild is not None
        and isinstance(channel, discord.TextChannel)
        and permissions.create_public_threads
        and permissions.send_messages_in_threads
    )


async def reply(interaction: discord.Interaction[Any], content: str) -> None:
    """Answer the deferred interaction privately (the first answer edits the 'thinking')."""
    content = clip(content, 2000)
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=content, embed=None, view=None)
        else:
            await interaction.response.send_message(content, ephemeral=True)
    except discord.HTTPException:
        log.warning("Couldn't answer interaction %s", interaction.id, exc_info=True)


async def start_video(interaction: discord.Interaction[Any], request: VideoRequest) -> Task | None:
    """Run one request after the defer; every refusal is an ephemeral reply, nothing reserved."""
    bot: KlingBot = interaction.client
    locale = str(interaction.locale)
    task: Task | None = None
    try:
        problems = request.problems(locale)
        if problems:
            await reply(interaction, "\n".join(problems))
            return None
        missing = missing_permissions(interaction)
        where = "dm" if missing else ("thread" if can_open_thread(interaction) else "channel")
        guild_settings = (
            await bot.store.get_guild_settings(interaction.guild_id)
            if interaction.guild_id
            else None
        )
        if guild_settings is not None:
            refusal = _guild_refusal(locale, guild_settings, interaction.user.id, request.prompt)
            if refusal is not None:
                await reply(interaction, refusal)
                return None
        inputs, image_urls, changes = await _collect_inputs(bot, request, locale)

        roles = [role.id for role in getattr(interaction.user, "roles", [])]
        limits = resolve_limits(bot.settings, guild_settings, roles, interaction.user.id)
        external_id = new_external_task_id()
        folder = await bot.media.save_inputs(external_id, inputs)
        options: dict[str, Any] = {
            **request.options(),
            "image_names": request.image_names,
            "result_where": where,
            "quota_daily": None if limits.exempt else limits.daily_per_user,
        }
        if image_urls and len(image_urls) == len(inputs):
            options["image_urls"] = image_urls
        assert interaction.channel_id is not None
        try:
            task = await bot.store.reserve(
                NewTask(
                    user_id=interaction.user.id,
                    guild_id=interaction.guild_id,
                    channel_id=interaction.channel_id,
                    locale=locale,
                    prompt=request.prompt.strip(),
                    options=options,
                    image_count=len(inputs),
                    input_dir=str(folder),
                    upload_limit=interaction.filesize_limit,
                    callback_token=new_callback_token(),
                    external_task_id=external_id,
                ),
                limits,
            )
        except QuotaExceeded:
            await bot.media.remove(folder)
            raise
        try:
            task = await _post_status(interaction, task)
        except CannotPost:
            if missing:
                refusal = text(locale, "reply.missing_permissions", permissions=", ".join(missing))
            else:
                refusal = text(locale, "reply.cannot_post")
            await reply(interaction, refusal)
            return None
        bot.engine.enqueue(task)
        assert task.status_message_id is not None
        link = jump_url(link_guild(task), task.channel_id, task.status_message_id)
        answer = text(locale, "reply.accepted", link=link)
        if where == "dm":
            answer += "\n" + text(locale, "status.result_in_dm")
        if changes:
            answer += "\n" + text(
                locale, "reply.accepted_changes", changes="\n".join(f"• {c}" for c in changes)
            )
        await reply(interaction, answer)
        return task
    except (ImageIntakeError, QuotaExceeded) as error:
        await reply(interaction, describe_error(locale, error))
        return None
    except Exception as error:
        log.exception("Video request failed (task %s)", task.id if task else "none")
        if task is not None:
            await _abandon(bot, task)
        await reply(interaction, describe_error(locale, error, task.id if task else None))
        return None


def _guild_refusal(locale: str, settings: GuildSettings, user_id: int, prompt: str) -> str | None:
    """What the server's own rules refuse before anything is downloaded, if anything."""
    if user_id in settings.blocked_users:
        return text(locale, "quota.blocked")
    word = find_blocked_word(prompt, settings.blocked_words)
    if word is not None:
        return text(locale, "reply.blocked_word", word=word)
    return None


async def _collect_inputs(
    bot: KlingBot, request: VideoRequest, locale: str
) -> tuple[list[tuple[str, bytes]], list[str], list[str]]:
    """The images to send as (format, bytes), Discord links usable instead, and auto-fixes made."""
    if request.kept_inputs is not None:
        return request.kept_inputs, [], []
    images = await prepare_images(
        bot.session,
        request.attachments,
        autofix=bot.settings.image_autofix,
        timeout=bot.settings.image_download_timeout_seconds,
    )
    request.image_names = [image.filename for image in images]
    urls: list[str] = []
    if bot.settings.image_transport is ImageTransport.URL:
        # Only unchanged images can go as Discord's links; otherwise all go as base64.
        urls = [image.source_url for image in images if not image.changes]
    templates = image_templates(locale)
    changes = [change.render(templates) for image in images for change in image.changes]
    return [(image.format, image.data) for image in images], urls, changes


async def _abandon(bot: KlingBot, task: Task) -> None:
    """A request that broke after its reservation: end it and give the quota back."""
    try:
        current = await bot.store.get(task.id)
        if current is not None and current.state is TaskState.QUEUED:
            await bot.store.transition(
                task.id, TaskState.FAILED, expect=TaskState.QUEUED, error_code="not_submitted"
            )
            await bot.store.refund(task.id)
    except Exception:
        log.exception("Task %d couldn't be ended after the error", task.id)


class CannotPost(Exception):
    """Neither the channel nor the user's DMs take the status message; nothing was started."""


async def _post_status(interaction: discord.Interaction[Any], task: Task) -> Task:
    """Post the public status message where the result will go, open its thread, remember both.

    The result goes to a thread on the status message when the bot may open one, else to the
    channel, else (no permission to post there at all) to the user's DMs.
    """
    bot: KlingBot = interaction.client
    where = task.options.get("result_where")
    channel: discord.abc.Messageable = bot.get_partial_messageable(
        task.channel_id, guild_id=task.guild_id
    )
    quota_line = await bot.notifier.quota_line(task)
    position = bot.engine.next_queue_position()
    try:
        if where == "dm":
            channel = await interaction.user.create_dm()
        message = await channel.send(
            embed=status_embed(task, queue_position=position, quota_line=quota_line)
        )
    except discord.HTTPException as error:
        log.info("Task %d: the status message can't be posted (%s)", task.id, error)
        await bot.store.transition(
            task.id, TaskState.FAILED, expect=TaskState.QUEUED, error_code="not_submitted"
        )
        await bot.store.refund(task.id)
        raise CannotPost from None
    thread_id: int | None = None
    if where == "thread":
        name = text(task.locale, "status.thread_name", task_id=task.id, prompt=task.prompt)
        try:
            thread = await message.create_thread(name=clip(name, THREAD_NAME_MAX))
            thread_id = thread.id
        except discord.HTTPException as error:
            log.info("Task %d: no thread (%s); the result goes to the channel", task.id, error)
    options = dict(task.options)
    if where == "thread" and thread_id is None:
        options["result_where"] = "channel"
    task = await bot.store.update(
        task.id,
        channel_id=message.channel.id,
        status_message_id=message.id,
        thread_id=thread_id,
        options=options,
    )
    if where == "thread" and thread_id is None:
        await bot.notifier.edit_status(task, queue_position=position)
    return task


async def regenerate(interaction: discord.Interaction[Any], original: Task) -> None:
    """Start the same request again from the kept inputs; it counts against the quota."""
    bot: KlingBot = interaction.client
    locale = str(interaction.locale)
    await interaction.response.defer(ephemeral=True, thinking=True)
    folder = Path(original.input_dir)
    inputs: list[tuple[str, bytes]] = []
    if original.inputs_removed_at is None and original.input_dir:
        try:
            datas = await bot.media.load_inputs(folder)
        except OSError:
            datas = []
        inputs = [("PNG" if data.startswith(b"\x89PNG") else "JPEG", data) for data in datas]
    if len(inputs) < 2:
        await reply(interaction, text(locale, "reply.inputs_gone"))
        return
    options = original.options
    request = VideoRequest(
        prompt=original.prompt,
        duration=options.get("duration"),
        mode=options.get("mode"),
        aspect_ratio=options.get("aspect_ratio"),
        negative_prompt=options.get("negative_prompt"),
        cfg_scale=options.get("cfg_scale"),
        kept_inputs=inputs,
        image_names=list(options.get("image_names") or []),
    )
    await start_video(interaction, request)
