"""A fake Discord (REST v10 + gateway + CDN) on loopback that enforces the contract.

The real bot process talks to it through ``tests/e2e/launcher.py``, which points discord.py's
REST base and gateway URL here. Everything the bot sends is recorded, and every request body
is validated against Discord's official OpenAPI description (``tests/fakes/discord-api-spec``)
plus the limits Discord enforces that the description does not express (2000-character
message content, the upload limit, one callback per interaction, the 3-second ack window,
interaction-token expiry...). A refused request is answered exactly as Discord would (status
code and error body) *and* recorded in :attr:`FakeDiscord.violations`, so every test can end
with ``assert fake.violations == []``.

Payloads follow discord.py's ``discord/types/`` TypedDicts so the real client parses them.

Typical use (see ``tests/e2e/test_fake_discord.py``)::

    async with FakeDiscord() as fake, run_bot_process("bot", env, fake.url, fake=fake):
        image = fake.add_attachment("a.png", png_bytes, "image/png", 512, 512)
        inter = await fake.slash_command("video", {"image1": image, "prompt": "a cat"})
        assert (await inter.wait_callback(timeout=3)).type == 5
        ...
        assert fake.violations == []

Sharded bots: ``fake.add_guild("B", shard=(1, 2))`` places a guild on shard 1 of 2; each
gateway session (``fake.sessions``) gets only its shard's guilds and events, and
``FakeInteraction.sessions`` says where an interaction went.

The parts, one module each: ``state`` (everything shared), ``gateway`` and ``session``
(websocket sessions, sharding), ``interactions`` (what a user does), ``rest/`` (the routes, by
resource), ``cdn``, ``contract`` and ``openapi`` (what Discord accepts), ``faults`` (injected
errors, delays, holds), ``server`` (the HTTP front), ``fake`` (``FakeDiscord``, the test API).
"""

from tests.fakes.discord.constants import (
    CB_DEFERRED_MESSAGE,
    CB_DEFERRED_UPDATE,
    CB_MESSAGE,
    CB_MODAL,
    CB_UPDATE_MESSAGE,
    CH_DM,
    CH_GUILD_TEXT,
    CH_PRIVATE_THREAD,
    CH_PUBLIC_THREAD,
    CLOSE_INVALID_SHARD,
    CLOSE_SHARDING_REQUIRED,
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILD_PRESENCES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    IT_APPLICATION_COMMAND,
    IT_MESSAGE_COMPONENT,
    IT_MODAL_SUBMIT,
    PRIVILEGED_INTENTS,
)
from tests.fakes.discord.fake import FakeDiscord
from tests.fakes.discord.faults import Hold
from tests.fakes.discord.records import (
    FakeInteraction,
    InteractionCallback,
    RecordedRequest,
    UploadedFile,
    Violation,
)
from tests.fakes.discord.session import GatewaySession
from tests.fakes.discord.snowflakes import shard_for

__all__ = [
    "CB_DEFERRED_MESSAGE",
    "CB_DEFERRED_UPDATE",
    "CB_MESSAGE",
    "CB_MODAL",
    "CB_UPDATE_MESSAGE",
    "CH_DM",
    "CH_GUILD_TEXT",
    "CH_PRIVATE_THREAD",
    "CH_PUBLIC_THREAD",
    "CLOSE_INVALID_SHARD",
    "CLOSE_SHARDING_REQUIRED",
    "DEFAULT_BOT_PERMISSIONS",
    "DEFAULT_EVERYONE_PERMISSIONS",
    "INTENT_DIRECT_MESSAGES",
    "INTENT_GUILDS",
    "INTENT_GUILD_MEMBERS",
    "INTENT_GUILD_MESSAGES",
    "INTENT_GUILD_PRESENCES",
    "INTENT_MESSAGE_CONTENT",
    "IT_APPLICATION_COMMAND",
    "IT_MESSAGE_COMPONENT",
    "IT_MODAL_SUBMIT",
    "PRIVILEGED_INTENTS",
    "FakeDiscord",
    "FakeInteraction",
    "GatewaySession",
    "Hold",
    "InteractionCallback",
    "RecordedRequest",
    "UploadedFile",
    "Violation",
    "shard_for",
]
