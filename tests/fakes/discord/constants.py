"""Discord's numbers the fake speaks: opcodes, intents, close codes, types, flags, permissions."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SPEC_PATH = Path(__file__).resolve().parent.parent / "discord-api-spec" / "openapi.json"
API_PREFIX = "/api/v10"
MIB = 1024 * 1024

# Gateway opcodes and intents (https://discord.com/developers/docs/topics/gateway).
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE = 0, 1, 2, 3
OP_RESUME, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 6, 9, 10, 11
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Gateway close codes the fake sends.
CLOSE_UNKNOWN_OPCODE, CLOSE_DECODE_ERROR = 4001, 4002
CLOSE_AUTHENTICATION_FAILED, CLOSE_ALREADY_AUTHENTICATED = 4004, 4005
CLOSE_INVALID_SHARD, CLOSE_SHARDING_REQUIRED = 4010, 4011
CLOSE_INVALID_INTENTS, CLOSE_DISALLOWED_INTENTS = 4013, 4014
#: A shard carries at most this many guilds; identifying a shard that would carry more is
#: closed with 4011 (Sharding required).
MAX_GUILDS_PER_SHARD = 2500

# Channel types, interaction types, callback types, message flags.
CH_GUILD_TEXT, CH_DM, CH_PUBLIC_THREAD, CH_PRIVATE_THREAD = 0, 1, 11, 12
IT_APPLICATION_COMMAND, IT_MESSAGE_COMPONENT, IT_MODAL_SUBMIT = 2, 3, 5
CB_MESSAGE, CB_DEFERRED_MESSAGE, CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE = 4, 5, 6, 7
CB_MODAL = 9
FLAG_HAS_THREAD, FLAG_EPHEMERAL, FLAG_LOADING = 1 << 5, 1 << 6, 1 << 7

PERM_VIEW_CHANNEL, PERM_SEND_MESSAGES, PERM_ATTACH_FILES = 1 << 10, 1 << 11, 1 << 15
PERM_READ_MESSAGE_HISTORY, PERM_CREATE_PUBLIC_THREADS = 1 << 16, 1 << 35
PERM_SEND_MESSAGES_IN_THREADS = 1 << 38

# Every permission bit up to SEND_VOICE_MESSAGES except ADMINISTRATOR; the bot's default role.
DEFAULT_BOT_PERMISSIONS = ((1 << 47) - 1) & ~(1 << 3)
DEFAULT_EVERYONE_PERMISSIONS = (
    (1 << 10)  # VIEW_CHANNEL
    | (1 << 11)  # SEND_MESSAGES
    | (1 << 16)  # READ_MESSAGE_HISTORY
    | (1 << 15)  # ATTACH_FILES
    | (1 << 14)  # EMBED_LINKS
    | (1 << 31)  # USE_APPLICATION_COMMANDS
    | (1 << 35)  # CREATE_PUBLIC_THREADS
    | (1 << 38)  # SEND_MESSAGES_IN_THREADS
)
