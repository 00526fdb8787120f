"""At start-up: answer every interaction a killed process acknowledged and left open.

The records are read in `setup_hook`, before the gateway connects, so they are all an earlier
run's: discord.py takes interactions at once but says `ready` seconds later, and a request this
run records meanwhile is its own. A video request resumes where it stopped while its token is
valid; one that never got its task and whose token is (nearly) gone is told it was interrupted
and that nothing was counted. A Delete press is carried out again (each of its steps can be
repeated).
"""

from __future__ import annotations

import asyncio
import logging

from bot.store import IntakeStage, InteractionKind, OpenInteraction
from bot.strings import text
from cogs.messages import timestamp
from cogs.services import ServiceBot
from cogs.video.answers import tell_user, token_alive
from cogs.video.buttons import run_delete
from cogs.video.flow import run_video

log = logging.getLogger(__name__)

#: An intake is resumed after a restart only while its token answers for this much longer.
RESUME_MARGIN_SECONDS = 60.0


async def recover(bot: ServiceBot, entries: list[OpenInteraction]) -> None:
    """Answer `entries`, the records left open (read before this run connected), once the
    bot is ready."""
    await bot.wait_until_ready()  # threads are opened on messages of known guilds
    log.info("Start-up: %d request(s) a previous run left open", len(entries))
    await asyncio.gather(*(_recover_one(bot, entry) for entry in entries))


async def _recover_one(bot: ServiceBot, entry: OpenInteraction) -> None:
    try:
        if entry.kind is InteractionKind.DELETE:
            await run_delete(bot, entry, resumed=True)
        elif entry.stage is IntakeStage.RECEIVED and not token_alive(entry, RESUME_MARGIN_SECONDS):
            mention = f"<@{entry.user_id}>"
            when = timestamp(entry.created_at)
            await tell_user(
                bot, entry, text(entry.locale, "reply.interrupted", mention=mention, when=when)
            )
            await bot.store.close_interaction(entry.id)
        else:
            await run_video(bot, entry)
    except Exception:
        log.exception("Request %d couldn't be answered after the restart", entry.interaction_id)
