"""One video request, from an acknowledged interaction to a queued task with its status message.

Shared by `/video`, the "Make a video" form and the Regenerate button. `start_video` defers the
interaction and records the request at once (an open interaction: who, where, the token and its
expiry, the attachments' links and the options — never the image bytes); `run_video` then takes
the record through options → images (intake, or the kept inputs) → blocked words → quota (one
atomic reservation with the insert, linked to the record) → status message and thread (handed
over to the engine with the record's next stage, in one transaction) → the answer, after which
the record is closed. Each stage is written before the step it announces.

So a killed process loses no request: `recovery.recover` runs at start-up and takes every open
record on from its stage with `run_video` — the intake resumes while the token is valid and the
attachments can be fetched (the user gets the one answer they were waiting for). Anything
refused before the reservation is a private answer that says what to fix.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import discord

from bot.config import ImageTransport
from bot.credits import CreditsExceeded
from bot.engine import new_callback_token
from bot.images import AttachmentRef, ImageIntakeError, prepare_images
from bot.kling.models import DURATIONS, MAX_NEGATIVE_PROMPT, MAX_PROMPT, MODES
from bot.quota import QuotaExceeded, find_blocked_word
from bot.store import IntakeStage, InteractionKind, OpenInteraction
from bot.strings import image_templates, text
from bot.tasks import (
    FailureReason,
    GuildSettings,
    NewTask,
    ResultWhere,
    Task,
    TaskNotes,
    TaskOptions,
    TaskState,
    new_external_task_id,
)
from cogs.caller import caller_limits, role_ids
from cogs.messages import clip, describe_error, jump_url, link_guild, status_embed
from cogs.services import ServiceBot
from cogs.video.answers import acknowledge, answer, find_own_message, open_dm
from cogs.video.picture import save_picture, send_status
from cogs.video.status import edit_status, estimate_text, quota_line

log = logging.getLogger(__name__)

THREAD_NAME_MAX = 100
THREAD_EXISTS = 160004  # Discord: "A thread has already been created for this message"
#: Why a task ended in its intake (kept in its status_message, so a restart says it again).
CANNOT_POST = "the status message can't be posted"
BROKE_IN_INTAKE = "the request broke after its reservation"


@dataclass
class VideoRequest:
    """What the user asked for: images (attachments, or a task's kept inputs) and options."""

    prompt: str
    duration: str | None = None
    mode: str | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None
    attachments: list[AttachmentRef] = field(default_factory=list)
    source_task_id: int | None = None  # Regenerate: the task whose kept inputs are used
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

    def options(self) -> TaskOptions:
        """The API options, as asked for."""
        return TaskOptions(
            duration=self.duration,
            mode=self.mode,
            aspect_ratio=self.aspect_ratio,
            negative_prompt=self.negative_prompt or None,
            cfg_scale=self.cfg_scale,
        )

    def to_payload(self) -> dict[str, Any]:
        """The request as JSON-ready data, for its record."""
        return asdict(self)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> VideoRequest:
        """The request back from its record."""
        values = dict(data)
        values["attachments"] = [AttachmentRef(**ref) for ref in values.get("attachments", [])]
        return cls(**values)


def attachment_refs(attachments: list[discord.Attachment]) -> list[AttachmentRef]:
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


def video_payload(interaction: discord.Interaction[Any], request: VideoRequest) -> dict[str, Any]:
    """Everything the request needs of the interaction, read before any I/O, for its record."""
    missing = missing_permissions(interaction)
    if missing:
        where = ResultWhere.DM
    else:
        where = ResultWhere.THREAD if can_open_thread(interaction) else ResultWhere.CHANNEL
    permissions = interaction.app_permissions
    return {
        "request": request.to_payload(),
        "roles": role_ids(interaction.user),
        # The picture of the inputs goes with the status message where the bot may attach it.
        "attach_files": interaction.guild is None or permissions.attach_files,
        "upload_limit": interaction.filesize_limit,
        "where": where.value,
        "missing": missing,
    }


async def start_video(interaction: discord.Interaction[Any], request: VideoRequest) -> Task | None:
    """Acknowledge a video request (record it), then run it; every refusal is private."""
    entry = await acknowledge(
        interaction,
        InteractionKind.VIDEO,
        video_payload(interaction, request),
        external_task_id=new_external_task_id(),
    )
    if entry is None:
        return None
    return await run_video(interaction.client, entry)


async def regenerate(interaction: discord.Interaction[Any], original: Task) -> None:
    """Start the same request again from the kept inputs; it counts against the quota."""
    options = original.options
    request = VideoRequest(
        prompt=original.prompt,
        duration=options.duration,
        mode=options.mode,
        aspect_ratio=options.aspect_ratio,
        negative_prompt=options.negative_prompt,
        cfg_scale=options.cfg_scale,
        source_task_id=original.id,
        image_names=list(original.notes.image_names),
    )
    await start_video(interaction, request)


async def run_video(bot: ServiceBot, entry: OpenInteraction) -> Task | None:
    """Take a recorded request on from its stage to its answer (live, or after a restart)."""
    locale = entry.locale
    stage = entry.stage
    task: Task | None = None
    try:
        if entry.task_id is not None:
            task = await bot.store.get(entry.task_id)
        if task is None:
            task = await _reserve(bot, entry, VideoRequest.from_payload(entry.payload["request"]))
            if task is None:
                return None
            stage = IntakeStage.RESERVED
        if stage is IntakeStage.RESERVED:
            if task.state is not TaskState.QUEUED:  # the intake ended it before a crash
                await _finish(bot, entry, _intake_failure(entry, task))
                return None
            try:
                task = await _post_status(
                    bot, entry, task, look_first=entry.stage is IntakeStage.RESERVED
                )
            except CannotPost:
                ended = await bot.store.get(task.id)
                await _finish(bot, entry, _intake_failure(entry, ended or task))
                return None
            stage = IntakeStage.STARTED
            bot.engine.enqueue(task)
        await _finish(bot, entry, _accepted(entry, task), elsewhere=False)
        return task
    except (ImageIntakeError, QuotaExceeded, CreditsExceeded) as error:
        await _finish(bot, entry, describe_error(locale, error, prices=bot.settings.price_table()))
        return None
    except InputsGone:
        await _finish(bot, entry, text(locale, "reply.inputs_gone"))
        return None
    except Exception as error:
        log.exception("Video request failed (task %s)", task.id if task else "none")
        if task is not None and stage is IntakeStage.RESERVED:
            await _abandon(bot, task)
        await _finish(bot, entry, describe_error(locale, error, task.id if task else None))
        return None


async def _finish(
    bot: ServiceBot, entry: OpenInteraction, content: str, *, elsewhere: bool = True
) -> None:
    """Give the request its answer, then close its record (in that order: an answer said
    twice is one edit; a record closed first could lose the answer)."""
    await answer(bot, entry, content, elsewhere=elsewhere)
    try:
        await bot.store.close_interaction(entry.id)
    except Exception:
        log.exception("Request %d couldn't be closed", entry.interaction_id)


def _accepted(entry: OpenInteraction, task: Task) -> str:
    """The answer to a request that became a task: where to follow it, what was adjusted."""
    locale = entry.locale
    assert task.status_message_id is not None
    link = jump_url(link_guild(task), task.channel_id, task.status_message_id)
    reply = text(locale, "reply.accepted", link=link)
    if task.notes.result_where is ResultWhere.DM:
        reply += "\n" + text(locale, "status.result_in_dm")
    changes = task.notes.image_changes
    if changes:
        reply += "\n" + text(
            locale, "reply.accepted_changes", changes="\n".join(f"• {c}" for c in changes)
        )
    return reply


def _intake_failure(entry: OpenInteraction, task: Task) -> str:
    """Why a request whose task ended in its intake didn't start (nothing was counted)."""
    locale = entry.locale
    if task.status_message != CANNOT_POST:
        return text(locale, "reply.unexpected", task_id=task.id)
    missing = entry.payload.get("missing") or []
    if missing:
        return text(locale, "reply.missing_permissions", permissions=", ".join(missing))
    return text(locale, "reply.cannot_post")


async def _reserve(bot: ServiceBot, entry: OpenInteraction, request: VideoRequest) -> Task | None:
    """Check the request, take in its images and reserve its task; None when refused (told)."""
    locale = entry.locale
    problems = request.problems(locale)
    if problems:
        await _finish(bot, entry, "\n".join(problems))
        return None
    roles = list(entry.payload.get("roles") or [])
    caller = await caller_limits(bot, entry.guild_id, entry.user_id, roles)
    guild_settings, limits = caller.guild_settings, caller.videos
    if guild_settings is not None:
        refusal = _guild_refusal(locale, guild_settings, entry.user_id, request.prompt)
        if refusal is not None:
            await _finish(bot, entry, refusal)
            return None
    inputs, image_urls, changes = await _collect_inputs(bot, request, locale)
    assert entry.external_task_id is not None
    folder = await bot.media.save_inputs(entry.external_task_id, inputs)
    await save_picture(bot, folder, inputs)
    notes = TaskNotes(
        result_where=ResultWhere(entry.payload["where"]),
        quota_daily=None if limits.exempt else limits.daily_per_user,
        image_names=tuple(request.image_names),
        image_changes=tuple(changes),
        image_urls=tuple(image_urls) if len(image_urls) == len(inputs) else (),
    )
    options = request.options()
    # Priced now, stored with the task: a price change later never changes what it reserved.
    price = bot.settings.price_table().price(options.mode, options.duration)
    try:
        return await bot.store.reserve(
            NewTask(
                user_id=entry.user_id,
                guild_id=entry.guild_id,
                channel_id=entry.channel_id,
                locale=locale,
                prompt=request.prompt.strip(),
                options=options,
                price_cents=price,
                notes=notes,
                image_count=len(inputs),
                input_dir=str(folder),
                upload_limit=int(entry.payload["upload_limit"]),
                callback_token=new_callback_token(),
                external_task_id=entry.external_task_id,
            ),
            limits,
            credits=caller.credits,
            interaction=entry.id,
        )
    except (QuotaExceeded, CreditsExceeded):
        await bot.media.remove(folder)
        raise


def _guild_refusal(locale: str, settings: GuildSettings, user_id: int, prompt: str) -> str | None:
    """What the server's own rules refuse before anything is downloaded, if anything."""
    if user_id in settings.blocked_users:
        return text(locale, "quota.blocked")
    word = find_blocked_word(prompt, settings.blocked_words)
    if word is not None:
        return text(locale, "reply.blocked_word", word=word)
    return None


class InputsGone(Exception):
    """Regenerate: the original images are no longer kept."""


async def _collect_inputs(
    bot: ServiceBot, request: VideoRequest, locale: str
) -> tuple[list[tuple[str, bytes]], list[str], list[str]]:
    """The images to send as (format, bytes), Discord links usable instead, and auto-fixes made."""
    if request.source_task_id is not None:
        return await _kept_inputs(bot, request.source_task_id), [], []
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


async def _kept_inputs(bot: ServiceBot, task_id: int) -> list[tuple[str, bytes]]:
    """A task's kept input images as (format, bytes); raises `InputsGone` without them."""
    original = await bot.store.get(task_id)
    if original is None or original.inputs_removed_at is not None or not original.input_dir:
        raise InputsGone
    try:
        datas = await bot.media.load_inputs(Path(original.input_dir))
    except OSError:
        datas = []
    if len(datas) < 2:
        raise InputsGone
    return [("PNG" if data.startswith(b"\x89PNG") else "JPEG", data) for data in datas]


async def _abandon(bot: ServiceBot, task: Task) -> None:
    """A request that broke after its reservation: end it and give the quota back."""
    try:
        current = await bot.store.get(task.id)
        if current is not None and current.state is TaskState.QUEUED:
            await _end_in_intake(bot, task, BROKE_IN_INTAKE)
    except Exception:
        log.exception("Task %d couldn't be ended after the error", task.id)


async def _end_in_intake(bot: ServiceBot, task: Task, why: str) -> None:
    """End a task its intake can't hand over (`why` is kept, so a restart says it again); it
    never reached the provider, so its quota comes back."""
    await bot.store.transition(
        task.id, TaskState.FAILED, error_code=FailureReason.NOT_SUBMITTED.value, status_message=why
    )
    await bot.store.refund(task.id)


class CannotPost(Exception):
    """Neither the channel nor the user's DMs take the status message; nothing was started."""


async def _post_status(
    bot: ServiceBot, entry: OpenInteraction, task: Task, *, look_first: bool
) -> Task:
    """Post the public status message where the result will go, open its thread, and hand the
    task over to the engine with both recorded.

    The result goes to a thread on the status message when the bot may open one, else to the
    channel, else (no permission to post there at all) to the user's DMs. With `look_first`
    (a run was killed after the reservation) the message that run may have posted is looked
    for first, and a thread it opened is taken as it is.
    """
    where = task.notes.result_where
    quota = await quota_line(bot, task)
    position = bot.engine.queue.next_position()
    message: discord.Message | None = None
    try:
        channel: discord.abc.Messageable
        if where is ResultWhere.DM:
            channel = await open_dm(bot, entry.user_id)
        else:
            channel = bot.get_partial_messageable(task.channel_id, guild_id=task.guild_id)
        if look_first:
            title = text(task.locale, "status.title", task_id=task.id)
            message = await find_own_message(
                bot, channel, task.created_at, lambda m: any(e.title == title for e in m.embeds)
            )
        if message is None:
            embed = status_embed(
                task,
                queue_position=position,
                quota_line=quota,
                estimate=estimate_text(bot, task, position),
            )
            attach = where is ResultWhere.DM or bool(entry.payload.get("attach_files"))
            message = await send_status(bot, channel, task, embed, attach=attach)
    except discord.HTTPException as error:
        log.info("Task %d: the status message can't be posted (%s)", task.id, error)
        await _end_in_intake(bot, task, CANNOT_POST)
        raise CannotPost from None
    thread_id: int | None = None
    if where is ResultWhere.THREAD and message.flags.has_thread:  # opened before a crash
        thread_id = message.id  # a thread made from a message has the message's id
    elif where is ResultWhere.THREAD:
        name = text(task.locale, "status.thread_name", task_id=task.id, prompt=task.prompt)
        try:
            thread = await message.create_thread(name=clip(name, THREAD_NAME_MAX))
            thread_id = thread.id
        except discord.HTTPException as error:
            if error.code == THREAD_EXISTS:  # opened before a crash: a thread has its message's id
                thread_id = message.id
            else:
                log.info("Task %d: no thread (%s); the result goes to the channel", task.id, error)
    no_thread = where is ResultWhere.THREAD and thread_id is None
    notes = replace(task.notes, result_where=ResultWhere.CHANNEL) if no_thread else task.notes
    task = await bot.store.hand_over(
        entry.id,
        task.id,
        channel_id=message.channel.id,
        status_message_id=message.id,
        thread_id=thread_id,
        notes=notes,
    )
    if no_thread:
        await edit_status(bot, task, queue_position=position)
    return task
