"""What users see, built in one place: the status embed, and every domain error as a message."""

from __future__ import annotations

import discord

from bot.credits import CreditsExceeded, refusal_text
from bot.images import ImageIntakeError
from bot.kling.errors import KlingError
from bot.kling.models import DEFAULT_ASPECT_RATIO, DEFAULT_DURATION, DEFAULT_MODE
from bot.pricing import PriceTable
from bot.quota import QuotaExceeded, QuotaKind
from bot.strings import image_templates, text
from bot.tasks import FailureReason, ResultWhere, Task, TaskState

#: Discord's longest message, and its longest embed field.
MESSAGE_MAX = 2000
EMBED_FIELD_MAX = 1024
COLOURS = {
    TaskState.DELIVERED: discord.Colour.green(),
    TaskState.SUCCEEDED: discord.Colour.green(),
    TaskState.FAILED: discord.Colour.red(),
    TaskState.TIMED_OUT: discord.Colour.orange(),
}


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """A link that opens a message in Discord."""
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def link_guild(task: Task) -> int | None:
    """The guild part of a jump link to the task's messages (None when they live in DMs)."""
    return None if task.notes.result_where is ResultWhere.DM else task.guild_id


def clip(value: str, limit: int) -> str:
    """Shorten text to `limit` characters with an ellipsis."""
    return value if len(value) <= limit else value[: limit - 1] + "…"


def timestamp(unix: float, style: str = "R") -> str:
    """Discord's timestamp markup, shown in each reader's own time and language."""
    return f"<t:{int(unix)}:{style}>"


def options_text(task: Task) -> str:
    """The options of a task in one short line (plus the optional ones when set)."""
    options = task.options
    lines = [
        text(
            task.locale,
            "options.value",
            duration=options.duration or DEFAULT_DURATION,
            mode=options.mode or DEFAULT_MODE,
            aspect_ratio=options.aspect_ratio or DEFAULT_ASPECT_RATIO,
        )
    ]
    if options.negative_prompt:
        lines.append(
            text(
                task.locale, "options.negative", negative_prompt=clip(options.negative_prompt, 200)
            )
        )
    if options.cfg_scale is not None:
        lines.append(text(task.locale, "options.cfg", cfg_scale=options.cfg_scale))
    return "\n".join(lines)


def state_text(
    task: Task, queue_position: int | None = None, result_link: str | None = None
) -> str:
    """The task's state in words."""
    locale = task.locale
    if task.state is TaskState.QUEUED:
        if queue_position:
            return text(locale, "state.queued", position=queue_position)
        return text(locale, "state.queued_plain")
    if task.state is TaskState.DELIVERED:
        if result_link:
            return text(locale, "state.delivered", link=result_link)
        return text(locale, "state.delivered_plain")
    if task.state is TaskState.FAILED:
        return text(locale, "state.failed", reason=failure_reason(task))
    return text(locale, f"state.{task.state.value}")


def status_embed(
    task: Task,
    *,
    queue_position: int | None = None,
    quota_line: str | None = None,
    result_link: str | None = None,
    estimate: str | None = None,
) -> discord.Embed:
    """The public status message of a task; `estimate` is when it is likely ready, in words
    (`bot.eta`). The picture of its input images is the message's attachment, not the embed's
    image: an edit of an embed that shows its own attachment makes Discord show it twice."""
    locale = task.locale
    embed = discord.Embed(
        title=text(locale, "status.title", task_id=task.id),
        colour=COLOURS.get(task.state, discord.Colour.blurple()),
    )
    embed.add_field(
        name=text(locale, "status.prompt"), value=clip(task.prompt, EMBED_FIELD_MAX), inline=False
    )
    names = task.notes.image_names
    if names:
        images = "\n".join(f"{i}. {clip(str(n), 60)}" for i, n in enumerate(names, start=1))
        embed.add_field(name=text(locale, "status.images"), value=images, inline=True)
    embed.add_field(name=text(locale, "status.options"), value=options_text(task), inline=True)
    embed.add_field(
        name=text(locale, "status.state"),
        value=clip(state_text(task, queue_position, result_link), EMBED_FIELD_MAX),
        inline=False,
    )
    if estimate:
        embed.add_field(
            name=text(locale, "status.estimate"),
            value=clip(estimate, EMBED_FIELD_MAX),
            inline=False,
        )
    embed.add_field(
        name=text(locale, "status.elapsed"), value=timestamp(task.created_at), inline=True
    )
    if quota_line:
        embed.add_field(name=text(locale, "status.quota"), value=quota_line, inline=True)
    where = task.notes.result_where
    if where is ResultWhere.THREAD and task.thread_id:
        embed.set_footer(text=text(locale, "status.result_in_thread", where="🧵"))
    elif where is ResultWhere.CHANNEL:
        embed.set_footer(text=text(locale, "status.result_in_channel"))
    return embed


def failure_reason(task: Task) -> str:
    """Why a task ended without a video (or was delivered as a link), in plain words."""
    code = task.error_code or ""
    try:
        reason = FailureReason(code)
    except ValueError:
        return text(task.locale, "reason.unknown")
    if reason is FailureReason.PROVIDER_FAILED:
        return text(
            task.locale, "reason.provider_failed", message=clip(task.status_message or "?", 300)
        )
    return text(task.locale, f"reason.{reason.value}")


def quota_message(locale: str | None, error: QuotaExceeded) -> str:
    """A quota refusal: which limit, the usage, and when the next slot frees."""
    if error.kind is QuotaKind.BLOCKED:
        return text(locale, "quota.blocked")
    if error.next_free_at is not None:
        when = timestamp(error.next_free_at)
    else:
        when = text(locale, "quota.next_unknown")
    if error.kind is QuotaKind.CONCURRENT_USER:
        when = f" ({when})" if error.next_free_at is not None else ""
    return text(locale, f"quota.{error.kind.value}", used=error.used, limit=error.limit, next=when)


def images_message(locale: str | None, error: ImageIntakeError) -> str:
    """Every image problem, one per line, in the user's language."""
    templates = image_templates(locale)
    problems = "\n".join(f"• {problem.render(templates)}" for problem in error.problems)
    return text(locale, "reply.images_rejected", problems=problems)


def credits_message(locale: str | None, error: CreditsExceeded, prices: PriceTable) -> str:
    """A credit refusal: the price, what is left and when enough frees (the reader's time)."""
    return refusal_text(locale, error.refusal, prices, when=timestamp)


def describe_error(
    locale: str | None,
    error: BaseException,
    task_id: int | None = None,
    *,
    prices: PriceTable | None = None,
) -> str:
    """The one mapping from a domain error to what the user reads (`prices` shows money beside
    credits, as the operator set it)."""
    if isinstance(error, ImageIntakeError):
        return images_message(locale, error)
    if isinstance(error, QuotaExceeded):
        return quota_message(locale, error)
    if isinstance(error, CreditsExceeded):
        return credits_message(locale, error, prices or PriceTable.default())
    if isinstance(error, KlingError):
        return text(locale, "reply.api_trouble")
    if task_id is not None:
        return text(locale, "reply.unexpected", task_id=task_id)
    return text(locale, "reply.unexpected_plain")
