"""Answering a user exactly once, also when the process died in between.

An interaction whose work has lasting effects (a video request, a Delete press) is recorded in
the store the moment it is acknowledged (`acknowledge`): who, where, its token and when the
token expires. From then on it is answered through that record, never through the live
`discord.Interaction` object, so a restarted process answers it the same way: the deferred
answer is edited by token (`answer`; an edit, so saying it again is harmless) while the token
lives, and otherwise the user is told in the channel or the DMs (`tell_user`), after looking
there for the message a killed run may already have posted (`find_own_message`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import discord

from bot.store import InteractionKind, NewOpenInteraction, OpenInteraction
from bot.strings import text
from bot.tasks import ResultWhere
from cogs.messages import MESSAGE_MAX, clip
from cogs.services import ServiceBot

log = logging.getLogger(__name__)

HISTORY_LOOKBACK = 500  # messages read after a moment, looking for one the bot posted
CLOCK_SLACK_SECONDS = 60.0
TOKEN_SLACK_SECONDS = 5.0  # a token this close to its end is treated as expired
#: Discord's alias for the interaction's own (deferred) answer in the webhook routes.
ORIGINAL: Any = "@original"
#: Answers by token that say the token (or its answer) is gone: tell the user elsewhere.
TOKEN_GONE = (401, 404)


def token_alive(entry: OpenInteraction, margin: float = TOKEN_SLACK_SECONDS) -> bool:
    """Whether the interaction's token still answers for at least `margin` seconds."""
    return entry.token_expires_at - time.time() > margin


async def acknowledge(
    interaction: discord.Interaction[Any],
    kind: InteractionKind,
    payload: dict[str, Any],
    *,
    task_id: int | None = None,
    external_task_id: str | None = None,
) -> OpenInteraction | None:
    """Defer the interaction (privately, "thinking…"), then record it in the store at once.

    The defer goes first, before any other I/O, so a burst of requests is acknowledged within
    Discord's 3 s whatever the disk does; the record follows immediately, and from then on a
    restart answers the request. None when the interaction can't be acknowledged or recorded
    (the user is told what can be told).
    """
    bot: ServiceBot = interaction.client
    assert interaction.channel_id is not None
    try:
        await interaction.response.defer(ephemeral=True, thinking=True)
    except discord.HTTPException as error:
        log.warning("Interaction %s couldn't be acknowledged (%s)", interaction.id, error)
        return None
    try:
        return await bot.store.open_interaction(
            NewOpenInteraction(
                interaction_id=interaction.id,
                kind=kind,
                application_id=interaction.application_id,
                token=interaction.token,
                token_expires_at=interaction.expires_at.timestamp(),
                user_id=interaction.user.id,
                guild_id=interaction.guild_id,
                channel_id=interaction.channel_id,
                locale=str(interaction.locale),
                payload=payload,
                external_task_id=external_task_id,
                task_id=task_id,
                owner=bot.settings.process_name,
            )
        )
    except Exception:
        log.exception("Interaction %s couldn't be recorded", interaction.id)
        with contextlib.suppress(discord.HTTPException):
            await interaction.edit_original_response(
                content=text(str(interaction.locale), "reply.unexpected_plain")
            )
        return None


async def answer(
    bot: ServiceBot, entry: OpenInteraction, content: str, *, elsewhere: bool = True
) -> None:
    """Put `content` in the interaction's deferred answer (visible to the user only).

    Saying it again is harmless: it is an edit. When the token no longer answers (a restart
    came too late) the user is told in the channel or the DMs instead, unless not `elsewhere`.
    """
    content = clip(content, MESSAGE_MAX)
    if token_alive(entry):
        webhook = discord.Webhook.partial(entry.application_id, entry.token, client=bot)
        try:
            await webhook.edit_message(ORIGINAL, content=content, embed=None, view=None)
            return
        except discord.HTTPException as error:
            if error.status not in TOKEN_GONE:
                log.warning(
                    "Interaction %d: the answer was refused (%s)", entry.interaction_id, error
                )
                return
            log.info(
                "Interaction %d: its token no longer answers (%s)", entry.interaction_id, error
            )
    if elsewhere:
        await tell_user(bot, entry, f"<@{entry.user_id}> {content}")


async def tell_user(bot: ServiceBot, entry: OpenInteraction, content: str) -> None:
    """Post `content` for the interaction's user where they will see it, once.

    The channel of the interaction (not when its result was to go to the DMs), else the DMs;
    a post a killed run made already is found there first. Only the user can be pinged.
    """
    content = clip(content, MESSAGE_MAX)
    places: list[discord.abc.Messageable] = []
    if entry.payload.get("where") != ResultWhere.DM:
        places.append(bot.get_partial_messageable(entry.channel_id, guild_id=entry.guild_id))
    try:
        places.append(await open_dm(bot, entry.user_id))
    except discord.HTTPException as error:
        log.info("Interaction %d: the user's DMs can't be opened (%s)", entry.interaction_id, error)
    for place in places:
        found = await find_own_message(
            bot, place, entry.created_at, lambda message: message.content == content
        )
        if found is not None:
            return
    mentions = discord.AllowedMentions(users=[discord.Object(entry.user_id)])
    for place in places:
        try:
            await place.send(content, allowed_mentions=mentions)
            return
        except (discord.Forbidden, discord.NotFound) as error:
            log.info("Interaction %d: can't tell the user here (%s)", entry.interaction_id, error)
    log.warning("Interaction %d: no place lets the bot tell its user", entry.interaction_id)


async def open_dm(bot: ServiceBot, user_id: int) -> discord.DMChannel:
    """The bot's DM channel with a user (opened if needed)."""
    user = bot.get_user(user_id) or await bot.fetch_user(user_id)
    return await user.create_dm()


def carries_button(message: discord.Message, custom_id: str) -> bool:
    """Whether a message has a button with this custom_id (how the bot marks its posts)."""
    return any(
        getattr(child, "custom_id", None) == custom_id
        for row in message.components
        for child in getattr(row, "children", ())
    )


async def find_own_message(
    bot: ServiceBot,
    channel: discord.abc.Messageable,
    since: float,
    matches: Callable[[discord.Message], bool],
) -> discord.Message | None:
    """The bot's own message in `channel`, posted since `since` (Unix seconds), that `matches`.

    How a post a crash may have cut off is found before it is made again: only messages since
    the moment it could first have been posted are read, however busy the channel has been
    since. A history that can't be read finds nothing.
    """
    me = bot.user
    start = since - CLOCK_SLACK_SECONDS
    after = discord.Object(id=discord.utils.time_snowflake(datetime.fromtimestamp(start, UTC)))
    try:
        async for message in channel.history(limit=HISTORY_LOOKBACK, after=after):
            if me is not None and message.author.id != me.id:
                continue
            if matches(message):
                return message
    except discord.HTTPException as error:
        log.info("Couldn't read the history of channel %s (%s)", getattr(channel, "id", "?"), error)
    return None
