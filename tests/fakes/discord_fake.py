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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import json
import mimetypes
import re
import secrets
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import BodyPartReader, WSMsgType, web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DEFAULT_SPEC_PATH = Path(__file__).resolve().parent / "discord-api-spec" / "openapi.json"
API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
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
#: Routes whose answers the fake checks against the description's response schema too: who the
#: bot is and its application (what `python -m bot check` reads).
RESPONSES_CHECKED = {("GET", "/users/@me"), ("GET", "/oauth2/applications/@me")}

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


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    """A JSON response with exactly ``Content-Type: application/json``.

    discord.py compares the header verbatim: a ``; charset=utf-8`` suffix makes it treat the
    body as text.
    """
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _error(
    status: int, code: int, message: str, errors: dict[str, Any] | None = None
) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return _json(body, status=status)


@dataclass
class UploadedFile:
    """One ``files[n]`` part of a multipart request."""

    field_name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedRequest:
    """A REST request the fake received (after parsing, before answering)."""

    method: str
    path: str  # without the /api/v10 prefix for API routes
    query: dict[str, str]
    json: Any  # the JSON body or the multipart ``payload_json``, parsed; None if absent
    files: list[UploadedFile]
    time: float  # time.monotonic()
    status: int = 0  # filled in once answered
    response: Any = None
    dropped: bool = False  # held, then dropped by the test: Discord never acted on it


@dataclass
class Violation:
    """A request Discord would refuse. ``kind`` is a short machine-readable tag."""

    kind: str
    method: str
    path: str
    detail: str
    errors: Any = None


@dataclass
class InteractionCallback:
    """An accepted ``POST /interactions/{id}/{token}/callback``."""

    interaction_id: str
    type: int
    data: dict[str, Any] | None
    files: list[UploadedFile]
    latency: float  # seconds between the INTERACTION_CREATE dispatch and the callback
    time: float


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched; await :meth:`wait_callback` for the bot's answer."""

    fake: FakeDiscord
    payload: dict[str, Any]
    dispatched_at: float
    ack_deadline: float
    token_ttl: float
    callback: InteractionCallback | None = None
    original_message_id: str | None = None
    followup_ids: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The interaction id (snowflake string)."""
        return str(self.payload["id"])

    @property
    def token(self) -> str:
        """The interaction token (used by the callback and webhook routes)."""
        return str(self.payload["token"])

    @property
    def channel_id(self) -> str:
        """The channel the interaction happened in."""
        return str(self.payload["channel_id"])

    @property
    def expired(self) -> bool:
        """Whether the interaction token is past its lifetime."""
        return time.monotonic() - self.dispatched_at > self.token_ttl

    async def wait_callback(self, timeout: float = 5.0) -> InteractionCallback:
        """Wait until the bot answered this interaction's callback (accepted answers only)."""
        await self.fake.wait_for(lambda: self.callback is not None, timeout)
        assert self.callback is not None
        return self.callback

    async def wait_followups(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until ``count`` followup messages were posted; return them (oldest first)."""
        await self.fake.wait_for(lambda: len(self.followup_ids) >= count, timeout)
        return [self.fake.message(mid) for mid in self.followup_ids]

    def original_message(self) -> dict[str, Any] | None:
        """The ``@original`` response message, if the callback created one."""
        if self.original_message_id is None:
            return None
        return self.fake.message(self.original_message_id)


class _Session:
    """A gateway session: identified state (id, seq, intents, replay buffer) and the
    websocket currently carrying it (``None`` while disconnected but resumable)."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws: web.WebSocketResponse | None = None
        self.seq = 0
        self.session_id = secrets.token_hex(16)
        self.intents: int | None = None
        self.ready = False
        self.buffer: list[dict[str, Any]] = []  # sent DISPATCHes, replayed on RESUME
        self._zlib: Any = None
        self.lock = asyncio.Lock()
        self.attach(ws, compress)

    def attach(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        """Carry the session over ``ws`` (a fresh compression context per connection)."""
        self.ws = ws
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None

    def take_over(self, other: _Session) -> None:
        """Continue on ``other``'s connection (RESUME), keeping its compression stream."""
        self.ws, self._zlib = other.ws, other._zlib
        other.ws = None

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def send(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload)
        async with self.lock:
            if self.ws is None or self.ws.closed:
                return
            if self._zlib is not None:
                data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(text)


class _OpenAPI:
    """Request-body (and some response-body) validators from Discord's OpenAPI description."""

    def __init__(self, spec_path: Path) -> None:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        schemas = spec["components"]["schemas"]
        # Quirk: the description types snowflakes as strings, but Discord accepts integers too
        # and discord.py sends e.g. attachment ids ``{"id": 0}`` as ints.
        if "SnowflakeType" in schemas:
            snowflake = schemas["SnowflakeType"]
            schemas["SnowflakeType"] = {
                "anyOf": [snowflake, {"type": "integer", "minimum": 0}],
            }
        self.spec = spec
        resource: Resource[Any] = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:discord-openapi", resource)
        self.templates: list[tuple[re.Pattern[str], str, int]] = []
        for template in spec["paths"]:
            regex = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
            self.templates.append((re.compile(regex), template, literal))
        self.templates.sort(key=lambda t: -t[2])
        self._validators: dict[tuple[str, str], Draft202012Validator | None] = {}

    def match(self, path: str) -> str | None:
        """Return the OpenAPI path template for a concrete path (most literal match wins)."""
        for regex, template, _ in self.templates:
            if regex.match(path):
                return template
        return None

    def has_operation(self, method: str, template: str) -> bool:
        """Whether the description documents this method on this path template."""
        return method.lower() in self.spec["paths"].get(template, {})

    def response_validator(self, method: str, template: str, status: int) -> Draft202012Validator:
        """A validator for the JSON body the description documents for this answer."""
        pointer = "/".join(
            p.replace("~", "~0").replace("/", "~1")
            for p in (
                "paths",
                template,
                method.lower(),
                "responses",
                str(status),
                "content",
                "application/json",
                "schema",
            )
        )
        return Draft202012Validator(
            {"$ref": f"urn:discord-openapi#/{pointer}"}, registry=self.registry
        )

    def validator(self, method: str, template: str) -> Draft202012Validator | None:
        key = (method.lower(), template)
        if key not in self._validators:
            op = self.spec["paths"].get(template, {}).get(method.lower())
            content = (op or {}).get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                self._validators[key] = None
            else:
                pointer = "/".join(
                    p.replace("~", "~0").replace("/", "~1")
                    for p in (
                        "paths",
                        template,
                        method.lower(),
                        "requestBody",
                        "content",
                        "application/json",
                        "schema",
                    )
                )
                schema = {"$ref": f"urn:discord-openapi#/{pointer}"}
                self._validators[key] = Draft202012Validator(schema, registry=self.registry)
        return self._validators[key]


@functools.lru_cache(maxsize=4)
def _load_openapi(spec_path: Path) -> _OpenAPI:
    """Parse the description once per process (it is read-only once built)."""
    return _OpenAPI(spec_path)


_ERROR_CODES = {
    "maxLength": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH",
    "maxItems": "BASE_TYPE_MAX_LENGTH",
    "minItems": "BASE_TYPE_MIN_LENGTH",
    "type": "BASE_TYPE_BAD_TYPE",
    "required": "BASE_TYPE_REQUIRED",
    "enum": "BASE_TYPE_CHOICES",
    "pattern": "STRING_TYPE_REGEX",
    "maximum": "NUMBER_TYPE_MAX",
    "minimum": "NUMBER_TYPE_MIN",
}


def _form_errors(items: Iterable[tuple[list[str | int], str, str]]) -> dict[str, Any]:
    """Build Discord's nested ``errors`` object from (path, code, message) triples."""
    out: dict[str, Any] = {}
    for path, code, message in items:
        node = out
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return out


def _schema_errors(errors: Iterable[ValidationError]) -> list[tuple[list[str | int], str, str]]:
    out: list[tuple[list[str | int], str, str]] = []
    for err in errors:
        # Descend into the most relevant branch of anyOf/oneOf failures.
        leaf = err
        while leaf.context:
            leaf = min(leaf.context, key=lambda e: (-len(e.absolute_path), len(e.context or [])))
        path = list(err.absolute_path) or list(leaf.absolute_path)
        code = _ERROR_CODES.get(str(leaf.validator), "BASE_TYPE_INVALID")
        out.append((path, code, leaf.message[:300]))
    return out


Handler = Callable[[web.Request, RecordedRequest, dict[str, str]], Awaitable[web.Response]]


class FakeDiscord:
    """A strict fake of Discord's REST API v10, gateway and CDN on 127.0.0.1.

    Use ``async with FakeDiscord() as fake:`` (or ``await fake.start()`` / ``await fake.stop()``).
    Point the bot at :attr:`url` with ``tests/e2e/launcher.py``.

    Configuration (all keyword-only):

    * ``token`` – the bot token the bot must present (``Authorization: Bot <token>``, IDENTIFY).
    * ``ack_deadline`` – seconds between INTERACTION_CREATE and a callback Discord still accepts
      (3.0); later → 404 ``10062 Unknown interaction``.
    * ``token_ttl`` – lifetime of interaction tokens (15 min); later → 401 ``50027``.
    * ``upload_limit`` – max bytes per uploaded file (10 MiB, an unboosted guild); over → 413.
    * ``bot_permissions`` – the bot role's permission bits (all but ADMINISTRATOR). Posting,
      uploading, opening a thread and reading history need theirs (and View Channel);
      without, Discord's 403 (50013 Missing Permissions, 50001 Missing Access).
    * ``privileged_intents_enabled`` – privileged intent bits the application is allowed (0:
      none, as for a fresh bot); identifying with others closes the gateway with 4014.
    * ``heartbeat_interval_ms`` – sent in HELLO (41250, Discord's value).
    * ``resume_supported`` – keep sessions of dropped connections for RESUME (True); False
      answers every RESUME with INVALID_SESSION (discord.py then waits 5 s and IDENTIFYs).
    * ``spec_path`` – the OpenAPI description (defaults to the copy beside this module).
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        bot_name: str = "Kling Video Bot",
        guild_name: str = "Test Guild",
        channel_name: str = "general",
        ack_deadline: float = 3.0,
        token_ttl: float = 15 * 60,
        upload_limit: int = 10 * MIB,
        privileged_intents_enabled: int = 0,
        heartbeat_interval_ms: int = 41_250,
        resume_supported: bool = True,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        spec_path: Path | None = None,
    ) -> None:
        self.token = token
        self.ack_deadline = ack_deadline
        self.token_ttl = token_ttl
        self.upload_limit = upload_limit
        self.privileged_intents_enabled = privileged_intents_enabled
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.resume_supported = resume_supported
        self.bot_permissions = bot_permissions
        self._openapi = _load_openapi(spec_path or DEFAULT_SPEC_PATH)
        self._counter = itertools.count()

        self.application_id = self.snowflake()
        self.bot_user: dict[str, Any] = self._user_payload(
            self.application_id, "kling-video-bot", bot=True
        )
        self.bot_user["global_name"] = bot_name
        self.user: dict[str, Any] = self._user_payload(self.snowflake(), "tester")
        self.users: dict[str, dict[str, Any]] = {
            self.bot_user["id"]: self.bot_user,
            self.user["id"]: self.user,
        }

        self.guild_id = self.snowflake()
        self.bot_role_id = self.snowflake()
        self.guilds: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._message_index: dict[str, dict[str, Any]] = {}
        guild = {
            "id": self.guild_id,
            "name": guild_name,
            "icon": None,
            "owner_id": self.user["id"],
            "roles": [
                self._role_payload(self.guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS),
                self._role_payload(self.bot_role_id, bot_name, bot_permissions, managed=True),
            ],
            "premium_tier": 0,
            "channels": [],
            "threads": [],
        }
        self.guilds[self.guild_id] = guild
        self.channel_id = self.add_text_channel(channel_name)["id"]

        # Recording.
        self.requests: list[RecordedRequest] = []
        self.unknown_requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.interactions: dict[str, FakeInteraction] = {}
        self.interaction_callbacks: list[InteractionCallback] = []
        self.ack_latencies: dict[str, float] = {}
        self.delayed: list[RecordedRequest] = []  # requests answered late by `delay_next`
        self.holds: list[Hold] = []
        self.threads: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[str, list[dict[str, Any]]] = {}
        self.command_syncs = 0
        self.identifies: list[dict[str, Any]] = []
        self.resume_attempts = 0
        self.resumes = 0
        self.ready_count = 0
        self.gateway_sent: list[dict[str, Any]] = []
        self.gateway_received: list[dict[str, Any]] = []
        self.gateway_closes: list[int] = []
        self.cdn: dict[str, tuple[bytes, str]] = {}

        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._denied: dict[str, set[str]] = {}
        self._blocked_dm_users: set[str] = set()
        self._sessions: list[_Session] = []
        self._fake_closed: set[int] = set()
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._install_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeDiscord:
        """Start listening on 127.0.0.1 on a free port."""
        self._cond = asyncio.Condition()
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=200 * MIB)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/attachments/{path:.+}", self._cdn_get)
        app.router.add_route("*", "/{tail:.*}", self._dispatch_http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        assert sockets, "the fake's server did not bind"
        self._port = int(sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Close gateway connections and stop the server."""
        if self._cond is not None:
            self._stopping.set()
        for session in list(self._sessions):
            if session.ws is not None:
                with contextlib.suppress(Exception):
                    await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (give it to the launcher)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """REST base, ``{url}/api/v10``."""
        return f"{self.url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Websocket gateway URL, as returned by ``GET /gateway/bot``."""
        return f"ws://127.0.0.1:{self._port}/gateway"

    # ------------------------------------------------------------------ waiting

    async def _notify(self) -> None:
        if self._cond is None:
            return
        async with self._cond:
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked whenever the fake records something).

        Returns the predicate's value; raises ``TimeoutError`` with a summary otherwise.
        """
        assert self._cond is not None, "FakeDiscord not started"
        value = predicate()
        if value:
            return value
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"condition not met within {timeout}s; last requests: "
                    + ", ".join(f"{r.method} {r.path} -> {r.status}" for r in self.requests[-8:])
                    + f"; violations: {self.violations}"
                ) from None
        return predicate()

    # ------------------------------------------------------------------ configuration helpers

    def snowflake(self) -> str:
        """A fresh, increasing snowflake (string) with the current timestamp."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((ms << 22) | (next(self._counter) & 0x3FFFFF))

    def add_text_channel(self, name: str, guild_id: str | None = None) -> dict[str, Any]:
        """Add a guild text channel (before the bot connects, or it won't know it)."""
        gid = guild_id or self.guild_id
        guild = self.guilds[gid]
        channel: dict[str, Any] = {
            "id": self.snowflake(),
            "type": CH_GUILD_TEXT,
            "guild_id": gid,
            "name": name,
            "position": len(guild["channels"]),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "default_auto_archive_duration": 1440,
            "flags": 0,
        }
        guild["channels"].append(channel)
        self.channels[channel["id"]] = channel
        self._messages[channel["id"]] = []
        return channel

    def add_role(self, name: str, permissions: int = 0) -> dict[str, Any]:
        """Add a guild role (before the bot connects, or it won't know it); return its payload.

        Give its id to ``send_interaction(member_roles=[...])`` to make a member carry it.
        """
        role = self._role_payload(self.snowflake(), name, permissions)
        self.guilds[self.guild_id]["roles"].append(role)
        return role

    def add_user(self, username: str) -> dict[str, Any]:
        """Register another (human) user and return its payload."""
        user = self._user_payload(self.snowflake(), username)
        self.users[user["id"]] = user
        return user

    def deny_threads(self, channel_id: str) -> None:
        """Make thread creation in ``channel_id`` fail with 403 ``50013 Missing Permissions``."""
        self._denied.setdefault(str(channel_id), set()).add("threads")

    def deny_send_messages(self, channel_id: str) -> None:
        """Make posting in ``channel_id`` fail with 403 ``50013 Missing Permissions``."""
        self._denied.setdefault(str(channel_id), set()).add("send")

    def inject_error(
        self,
        method: str,
        path_pattern: str,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        r"""Answer the next ``times`` matching requests with ``status``/``body`` (a scripted fault).

        ``path_pattern`` is a regex searched in the path without ``/api/v10`` (e.g.
        ``r"/channels/\d+/messages$"``). Injected answers are not violations.
        """
        self._faults.append(
            _Fault(method.upper(), re.compile(path_pattern), status, body, times, headers or {})
        )

    def rate_limit_next(
        self, method: str, path_pattern: str, retry_after: float = 0.05, *, times: int = 1
    ) -> None:
        """Answer the next matching requests with Discord's 429 (which discord.py retries)."""
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after),
            "X-RateLimit-Bucket": "fake-bucket",
            "X-RateLimit-Scope": "user",
        }
        self.inject_error(method, path_pattern, 429, body, times=times, headers=headers)

    def delay_next(
        self,
        method: str,
        path_pattern: str,
        seconds: float,
        *,
        times: int = 1,
        with_files: bool = False,
    ) -> None:
        r"""Answer the next ``times`` matching requests only after ``seconds``.

        The request takes effect first (a POSTed message is stored and dispatched), then the
        answer waits: like Discord having done it while the answer is lost or late. With
        ``with_files`` only multipart requests carrying files match. Delayed requests are
        listed in :attr:`delayed` as soon as their effect is stored.
        """
        self._delays.append(
            _Delay(method.upper(), re.compile(path_pattern), seconds, times, with_files)
        )

    def hold_next(
        self,
        method: str,
        path_pattern: str,
        *,
        times: int = 1,
        effect_first: bool = False,
        match: Callable[[RecordedRequest], bool] | None = None,
    ) -> Hold:
        r"""Hold the next ``times`` matching requests until the test releases or drops them.

        For killing the bot at a chosen moment: the request has arrived and waits, the test
        SIGKILLs the bot, then ``hold.drop()`` (Discord never acted on it: no effect, no answer)
        or ``hold.release()``. With ``effect_first`` the request takes effect at once (a POSTed
        message is stored) and only its answer is held — Discord did it, the bot never heard.
        ``path_pattern`` is a regex searched in the path without ``/api/v10``; CDN downloads
        (``GET /attachments/...``) can be held too. ``match`` narrows it by the recorded
        request (its ``json``, ``files``...). Stopping the fake drops what is still held.
        """
        hold = Hold(method.upper(), re.compile(path_pattern), times, effect_first, match)
        self.holds.append(hold)
        return hold

    def add_user_message(
        self,
        channel_id: str,
        content: str,
        attachments: list[dict[str, Any]],
        author: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a message a human posted (e.g. with ``add_attachment`` payloads); return it."""
        cid = str(channel_id)
        atts = [{k: v for k, v in a.items() if k != "ephemeral"} for a in attachments]
        message = self._new_message(cid, {"content": content}, atts)
        message["author"] = author or self.user
        return message

    def member_payload(
        self, user: dict[str, Any], permissions: int | None = None
    ) -> dict[str, Any]:
        """A guild member payload for ``user`` (as in resolved data: without ``user``)."""
        member = {k: v for k, v in self._member_payload(user, []).items() if k != "user"}
        if permissions is not None:
            member["permissions"] = str(permissions)
        return member

    def block_dms(self, user_id: str) -> None:
        """Messages to this user's DM fail with 403 ``50007 Cannot send messages to this user``."""
        self._blocked_dm_users.add(str(user_id))

    def add_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str = "image/png",
        width: int | None = None,
        height: int | None = None,
    ) -> dict[str, Any]:
        """Serve ``data`` from the fake CDN; return the attachment payload for an interaction."""
        att_id = self.snowflake()
        path = f"{self.channel_id}/{att_id}/{filename}"
        self.cdn[path] = (data, content_type)
        payload: dict[str, Any] = {
            "id": att_id,
            "filename": filename,
            "size": len(data),
            "url": f"{self.url}/attachments/{path}?ex=0&is=0&hm=0",
            "proxy_url": f"{self.url}/attachments/{path}?ex=0&is=0&hm=0&proxy=1",
            "content_type": content_type,
            "ephemeral": True,
        }
        if width is not None and height is not None:
            payload["width"] = width
            payload["height"] = height
        return payload

    # ------------------------------------------------------------------ read helpers

    def messages_in(self, channel_id: str) -> list[dict[str, Any]]:
        """Messages in a channel, oldest first."""
        return list(self._messages.get(str(channel_id), []))

    def message(self, message_id: str) -> dict[str, Any]:
        """A stored message by id."""
        return self._message_index[str(message_id)]

    def find_requests(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """Recorded requests with ``method`` whose path (without /api/v10) matches the regex."""
        rx = re.compile(path_pattern)
        return [r for r in self.requests if r.method == method.upper() and rx.search(r.path)]

    def attachment_bytes(self, attachment: dict[str, Any]) -> bytes:
        """The bytes behind an attachment payload served by the fake CDN."""
        path = attachment["url"].split("/attachments/", 1)[1].split("?", 1)[0]
        return self.cdn[path][0]

    def command_id(self, name: str, guild_id: str | None = None) -> str:
        """The id of a registered command (guild ones first), or a fresh id if never synced."""
        for cmd in self.guild_commands.get(str(guild_id or self.guild_id), []) + self.commands:
            if cmd["name"] == name:
                return str(cmd["id"])
        return self.snowflake()

    def find_command(self, name: str) -> dict[str, Any] | None:
        """A registered command (guild or global) by name."""
        for cmd in self.guild_commands.get(self.guild_id, []) + self.commands:
            if cmd["name"] == name:
                return cmd
        return None

    @property
    def identified_intents(self) -> list[int]:
        """The ``intents`` of every IDENTIFY received."""
        return [int(d.get("intents", 0)) for d in self.identifies]

    # ------------------------------------------------------------------ payload builders

    @staticmethod
    def _user_payload(user_id: str, username: str, *, bot: bool = False) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": user_id,
            "username": username,
            "discriminator": "0",
            "global_name": username,
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "primary_guild": None,
        }
        if bot:
            user["bot"] = True
        return user

    @staticmethod
    def _role_payload(
        role_id: str, name: str, permissions: int, *, managed: bool = False
    ) -> dict[str, Any]:
        return {
            "id": role_id,
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": 1 if managed else 0,
            "permissions": str(permissions),
            "managed": managed,
            "mentionable": False,
            "flags": 0,
        }

    def _member_payload(self, user: dict[str, Any], roles: list[str]) -> dict[str, Any]:
        return {
            "user": user,
            "nick": None,
            "avatar": None,
            "roles": roles,
            "joined_at": _now_iso(),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }

    def _guild_create_payload(self, guild: dict[str, Any]) -> dict[str, Any]:
        members = [
            self._member_payload(self.bot_user, [self.bot_role_id]),
            self._member_payload(self.user, []),
        ]
        return {
            **copy.deepcopy(guild),
            "unavailable": False,
            "large": False,
            "member_count": len(members),
            "members": members,
            "voice_states": [],
            "presences": [],
            "emojis": [],
            "stickers": [],
            "features": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": _now_iso(),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "preferred_locale": "en-US",
            "premium_subscription_count": 0,
            "max_members": 500000,
            "description": None,
            "banner": None,
            "splash": None,
            "discovery_splash": None,
            "vanity_url_code": None,
            "application_id": None,
        }

    def _new_message(
        self,
        channel_id: str,
        body: dict[str, Any],
        attachments: list[dict[str, Any]],
        *,
        msg_type: int = 0,
        interaction: FakeInteraction | None = None,
        flags: int = 0,
    ) -> dict[str, Any]:
        channel = self.channels[channel_id]
        message: dict[str, Any] = {
            "id": self.snowflake(),
            "channel_id": channel_id,
            "author": self.bot_user,
            "content": body.get("content") or "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": bool(body.get("tts") or False),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": [self._embed_out(e) for e in body.get("embeds") or []],
            "components": body.get("components") or [],
            "pinned": False,
            "type": msg_type,
            "flags": flags
            | (int(body.get("flags") or 0) & (FLAG_EPHEMERAL | (1 << 2) | (1 << 12))),
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
        if body.get("message_reference"):
            ref = dict(body["message_reference"])
            ref.setdefault("channel_id", channel_id)
            message["message_reference"] = ref
            message["type"] = 19
        if interaction is not None:
            message["webhook_id"] = self.application_id
            message["application_id"] = self.application_id
            user = interaction.payload.get("member", {}).get("user") or interaction.payload.get(
                "user"
            )
            message["interaction_metadata"] = {
                "id": interaction.id,
                "type": interaction.payload["type"],
                "user": user,
                "authorizing_integration_owners": interaction.payload.get(
                    "authorizing_integration_owners", {}
                ),
            }
        self._messages.setdefault(channel_id, []).append(message)
        self._message_index[message["id"]] = message
        channel["last_message_id"] = message["id"]
        if channel.get("type") in (CH_PUBLIC_THREAD, CH_PRIVATE_THREAD):
            channel["message_count"] = channel.get("message_count", 0) + 1
            channel["total_message_sent"] = channel.get("total_message_sent", 0) + 1
        return message

    @staticmethod
    def _embed_out(embed: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in embed.items() if v is not None}
        out.setdefault("type", "rich")
        return out

    # ------------------------------------------------------------------ HTTP plumbing

    def _install_routes(self) -> None:
        r = self._add
        r("GET", "/gateway", self._get_gateway)
        r("GET", "/gateway/bot", self._get_gateway_bot)
        r("GET", "/users/@me", self._get_me)
        r("GET", "/users/{user_id}", self._get_user)
        r("GET", "/oauth2/applications/@me", self._get_app)
        r("GET", "/applications/@me", self._get_app)
        r("GET", "/applications/{app}/commands", self._get_commands)
        r("PUT", "/applications/{app}/commands", self._put_commands)
        r("POST", "/applications/{app}/commands", self._post_command)
        r("GET", "/applications/{app}/guilds/{guild}/commands", self._get_commands)
        r("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands)
        r("POST", "/applications/{app}/guilds/{guild}/commands", self._post_command)
        r("POST", "/interactions/{iid}/{token}/callback", self._interaction_callback)
        r("POST", "/webhooks/{app}/{token}", self._webhook_execute)
        for method in ("GET", "PATCH", "DELETE"):
            r(method, "/webhooks/{app}/{token}/messages/{mid}", self._webhook_message)
        r("GET", "/channels/{cid}", self._get_channel)
        r("GET", "/channels/{cid}/messages", self._list_messages)
        r("POST", "/channels/{cid}/messages", self._create_message)
        r("GET", "/channels/{cid}/messages/{mid}", self._get_message)
        r("PATCH", "/channels/{cid}/messages/{mid}", self._edit_message)
        r("DELETE", "/channels/{cid}/messages/{mid}", self._delete_message)
        r("POST", "/channels/{cid}/messages/{mid}/threads", self._thread_from_message)
        r("POST", "/channels/{cid}/threads", self._thread_without_message)
        r("POST", "/users/@me/channels", self._create_dm)

    def _add(self, method: str, template: str, handler: Handler) -> None:
        sample = re.sub(r"\{\w+\}", "1", template)
        documented = self._openapi.match(sample)
        if template != "/gateway" and (
            documented is None or not self._openapi.has_operation(method, documented)
        ):
            raise AssertionError(f"{method} {template} is not in Discord's OpenAPI description")
        regex = re.compile(
            "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        )
        self._routes.append((method, regex, handler))

    @staticmethod
    def _is_token_route(path: str) -> bool:
        return path.startswith("/interactions/") or bool(re.match(r"^/webhooks/[^/]+/[^/]+", path))

    async def _dispatch_http(self, request: web.Request) -> web.Response:
        raw_path = request.path
        path = raw_path[len(API_PREFIX) :] if raw_path.startswith(API_PREFIX) else raw_path
        rec = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            json=None,
            files=[],
            time=time.monotonic(),
        )
        self.requests.append(rec)
        try:
            response = await self._handle(request, rec, raw_path.startswith(API_PREFIX))
        except _Refusal as refusal:
            response = refusal.response
        except Exception as exc:  # a bug in the fake: make it loud, never a silent retry loop
            self._violation("fake_error", rec, f"{type(exc).__name__}: {exc}")
            response = _error(500, 0, "500: Internal Server Error (fake)")
        rec.status = response.status
        with contextlib.suppress(Exception):
            rec.response = json.loads(response.text or "null")
        delay = self._take_delay(rec)
        await self._notify()
        hold = self._take_hold(rec, effect_first=True) if not rec.dropped else None
        if hold is not None:  # done; the answer waits for the test (and dies with the client)
            await self._wait_hold(hold, rec)
            return response
        if delay:
            # Interruptible, so stopping the fake never waits for a late answer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        return response

    def _take_delay(self, rec: RecordedRequest) -> float:
        for item in self._delays:
            if item.times > 0 and item.method == rec.method and item.pattern.search(rec.path):
                if item.with_files and not rec.files:
                    continue
                item.times -= 1
                self.delayed.append(rec)
                return item.seconds
        return 0.0

    async def _handle(
        self, request: web.Request, rec: RecordedRequest, is_api: bool
    ) -> web.Response:
        handler: Handler | None = None
        params: dict[str, str] = {}
        if is_api:
            for method, regex, candidate in self._routes:
                m = regex.match(rec.path)
                if m and method == request.method:
                    handler, params = candidate, m.groupdict()
                    break
        if handler is None:
            self.unknown_requests.append(rec)
            return _error(404, 0, "404: Not Found")

        if not self._is_token_route(rec.path) and rec.path != "/gateway":
            if request.headers.get("Authorization") != f"Bot {self.token}":
                self._violation("unauthorized", rec, "missing or wrong Authorization header")
                return _error(401, 0, "401: Unauthorized")

        await self._read_body(request, rec)
        for fault in self._faults:
            if fault.times > 0 and fault.method == rec.method and fault.pattern.search(rec.path):
                fault.times -= 1
                headers = {"Content-Type": "application/json", **fault.headers}
                body = b"" if fault.body is None else json.dumps(fault.body).encode()
                return web.Response(body=body, status=fault.status, headers=headers)
        self._validate_schema(rec)
        hold = self._take_hold(rec, effect_first=False)
        if hold is not None and not await self._wait_hold(hold, rec):
            return self._drop(rec)
        response = await handler(request, rec, params)
        if response.status == 200 and (rec.method, rec.path) in RESPONSES_CHECKED:
            self._check_own_response(rec, response)
        return response

    def _check_own_response(self, rec: RecordedRequest, response: web.Response) -> None:
        """The fake's own answer must match what the description documents (a fake bug else)."""
        template = self._openapi.match(rec.path)
        assert template is not None and isinstance(response.body, bytes)
        validator = self._openapi.response_validator(rec.method, template, response.status)
        errors = _schema_errors(validator.iter_errors(json.loads(response.body)))
        if errors:
            self._violation(
                "fake_response", rec, "the fake's answer breaks the description", errors
            )

    def _take_hold(self, rec: RecordedRequest, *, effect_first: bool) -> Hold | None:
        for hold in self.holds:
            if (
                hold.times > 0
                and hold.effect_first == effect_first
                and hold.method == rec.method
                and hold.pattern.search(rec.path)
                and (hold.match is None or hold.match(rec))
            ):
                hold.times -= 1
                return hold
        return None

    async def _wait_hold(self, hold: Hold, rec: RecordedRequest) -> bool:
        """Wait until the test releases (True) or drops (False) a held request."""
        gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        hold.held.append(rec)
        hold.gates.append(gate)
        await self._notify()
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({gate, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        return gate.done() and gate.result()

    @staticmethod
    def _drop(rec: RecordedRequest) -> web.Response:
        rec.dropped = True
        return _error(503, 0, "dropped by the test (the client is gone)")

    async def _read_body(self, request: web.Request, rec: RecordedRequest) -> None:
        if not request.body_exists:
            return
        ctype = request.content_type
        if ctype == "multipart/form-data":
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):  # nested multipart: not used
                    continue
                name = part.name or ""
                data = bytes(await part.read(decode=False))
                if name == "payload_json":
                    rec.json = self._parse_json(rec, data)
                elif part.filename is not None or name.startswith("files["):
                    rec.files.append(
                        UploadedFile(
                            field_name=name,
                            filename=part.filename or name,
                            content_type=part.headers.get(
                                "Content-Type", "application/octet-stream"
                            ),
                            data=data,
                        )
                    )
                else:
                    self._violation("bad_multipart", rec, f"unexpected multipart field {name!r}")
                    raise _Refusal(_error(400, 50035, "Invalid Form Body", {}))
        else:
            data = await request.read()
            if data:
                rec.json = self._parse_json(rec, data)

    def _parse_json(self, rec: RecordedRequest, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            self._violation("bad_json", rec, "body is not valid JSON")
            raise _Refusal(_error(400, 50109, "The request body contains invalid JSON.")) from None

    def _validate_schema(self, rec: RecordedRequest) -> None:
        if rec.json is None:
            return
        template = self._openapi.match(rec.path)
        if template is None:
            return
        validator = self._openapi.validator(rec.method, template)
        if validator is None:
            return
        errors = _schema_errors(validator.iter_errors(rec.json))
        if errors:
            self._refuse_form(rec, errors, kind="schema")

    def _violation(self, kind: str, rec: RecordedRequest, detail: str, errors: Any = None) -> None:
        self.violations.append(Violation(kind, rec.method, rec.path, detail, errors))

    def _refuse_form(
        self,
        rec: RecordedRequest,
        errors: list[tuple[list[str | int], str, str]],
        kind: str = "limit",
    ) -> NoReturn:
        body = _form_errors(errors)
        self._violation(kind, rec, "; ".join(f"{p}: {m}" for p, _, m in errors), body)
        raise _Refusal(_error(400, 50035, "Invalid Form Body", body))

    def _refuse(
        self, rec: RecordedRequest, kind: str, status: int, code: int, message: str
    ) -> NoReturn:
        self._violation(kind, rec, f"{status} {code} {message}")
        raise _Refusal(_error(status, code, message))

    # ------------------------------------------------------------------ limits Discord enforces

    def _check_message_body(
        self, rec: RecordedRequest, body: dict[str, Any], *, creating: bool
    ) -> None:
        if not isinstance(body, dict):
            self._refuse_form(rec, [([], "MODEL_TYPE_CONVERT", "Must be an object.")])
        errors: list[tuple[list[str | int], str, str]] = []
        content = body.get("content")
        if isinstance(content, str) and len(content) > 2000:
            errors.append((["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."))
        embeds = body.get("embeds") or []
        if isinstance(embeds, list):
            if len(embeds) > 10:
                errors.append(
                    (["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
                )
            total = 0
            for embed in embeds:
                if isinstance(embed, dict):
                    total += sum(len(str(embed.get(k) or "")) for k in ("title", "description"))
                    total += len(str((embed.get("footer") or {}).get("text") or ""))
                    total += len(str((embed.get("author") or {}).get("name") or ""))
                    for fld in embed.get("fields") or []:
                        total += len(str(fld.get("name") or "")) + len(str(fld.get("value") or ""))
            if total > 6000:
                errors.append(
                    (
                        ["embeds"],
                        "MAX_EMBED_SIZE_EXCEEDED",
                        "Embed size exceeds maximum size of 6000",
                    )
                )
        errors.extend(self._check_components(body.get("components")))
        if len(rec.files) > 10:
            errors.append((["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))
        if errors:
            self._refuse_form(rec, errors)
        if creating and not (
            content
            or embeds
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
            or rec.files
        ):
            self._refuse(rec, "empty_message", 400, 50006, "Cannot send an empty message")

    def _check_components(self, components: Any) -> list[tuple[list[str | int], str, str]]:
        errors: list[tuple[list[str | int], str, str]] = []
        if not isinstance(components, list):
            return errors
        seen: set[str] = set()

        def walk(node: Any, path: list[str | int]) -> None:
            if not isinstance(node, dict):
                return
            custom_id = node.get("custom_id")
            if isinstance(custom_id, str):
                if len(custom_id) > 100:
                    errors.append(
                        (
                            [*path, "custom_id"],
                            "BASE_TYPE_MAX_LENGTH",
                            "Must be 100 or fewer in length.",
                        )
                    )
                if custom_id in seen:
                    errors.append(
                        (
                            [*path, "custom_id"],
                            "COMPONENT_CUSTOM_ID_DUPLICATED",
                            "Component custom id cannot be duplicated",
                        )
                    )
                seen.add(custom_id)
            if node.get("type") == 1 and len(node.get("components") or []) > 5:
                errors.append(
                    ([*path, "components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
                )
            if node.get("type") == 2:  # button: link buttons have url, others custom_id
                style = node.get("style")
                if style == 5 and not node.get("url"):
                    errors.append(([*path, "url"], "BASE_TYPE_REQUIRED", "This field is required"))
                if style in (1, 2, 3, 4) and not custom_id:
                    errors.append(
                        ([*path, "custom_id"], "BASE_TYPE_REQUIRED", "This field is required")
                    )
            for i, child in enumerate(node.get("components") or []):
                walk(child, [*path, "components", i])
            accessory = node.get("accessory")
            if accessory is not None:
                walk(accessory, [*path, "accessory"])

        for i, comp in enumerate(components):
            walk(comp, ["components", i])
        return errors

    def _check_files(self, rec: RecordedRequest, limit: int) -> None:
        for f in rec.files:
            if len(f.data) > limit:
                self._refuse(rec, "upload_too_large", 413, 40005, "Request entity too large")

    def _store_files(
        self, rec: RecordedRequest, channel_id: str, body: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Turn uploaded ``files[n]`` into attachment payloads served by the CDN."""
        meta: dict[str, dict[str, Any]] = {}
        for item in body.get("attachments") or []:
            if isinstance(item, dict) and "id" in item:
                meta[str(item["id"])] = item
        out: list[dict[str, Any]] = []
        for index, f in enumerate(rec.files):
            m = re.match(r"files\[(\d+)\]", f.field_name)
            key = m.group(1) if m else str(index)
            info = meta.get(key, {})
            filename = str(info.get("filename") or f.filename)
            att_id = self.snowflake()
            path = f"{channel_id}/{att_id}/{filename}"
            ctype = f.content_type
            if ctype in ("", "application/octet-stream"):
                ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            self.cdn[path] = (f.data, ctype)
            att: dict[str, Any] = {
                "id": att_id,
                "filename": filename,
                "size": len(f.data),
                "url": f"{self.url}/attachments/{path}?ex=0&is=0&hm=0",
                "proxy_url": f"{self.url}/attachments/{path}?ex=0&is=0&hm=0&proxy=1",
                "content_type": ctype,
            }
            if info.get("description"):
                att["description"] = info["description"]
            out.append(att)
        return out

    def _permission(self, rec: RecordedRequest, channel_id: str, what: str) -> None:
        channel = self.channels.get(channel_id, {})
        parent = str(channel.get("parent_id") or "")
        if channel.get("type") != CH_DM:
            # What the bot's role allows (Discord answers 50001 when the bot can't even see the
            # channel, 50013 when it may see it but not do this).
            granted = self._app_permissions(parent or channel_id)
            thread = channel.get("type") in (CH_PUBLIC_THREAD, CH_PRIVATE_THREAD)
            if not granted & PERM_VIEW_CHANNEL:
                self._refuse(rec, "forbidden", 403, 50001, "Missing Access")
            needed = {
                "send": PERM_SEND_MESSAGES_IN_THREADS if thread else PERM_SEND_MESSAGES,
                "threads": PERM_CREATE_PUBLIC_THREADS,
                "history": PERM_READ_MESSAGE_HISTORY,
                "attach": PERM_ATTACH_FILES,
            }[what]
            if not granted & needed:
                self._refuse(rec, "forbidden", 403, 50013, "Missing Permissions")
        if what in self._denied.get(channel_id, set()) or (
            what == "send"
            and channel.get("type") in (CH_PUBLIC_THREAD, CH_PRIVATE_THREAD)
            and "send" in self._denied.get(parent, set())
        ):
            self._refuse(rec, "forbidden", 403, 50013, "Missing Permissions")
        if channel.get("type") == CH_DM and what == "send":
            for r in channel.get("recipients", []):
                if r["id"] in self._blocked_dm_users:
                    self._refuse(rec, "forbidden", 403, 50007, "Cannot send messages to this user")

    def _app_permissions(self, channel_id: str) -> int:
        """The bot's permissions in a channel, as Discord reports them in an interaction."""
        permissions = self.bot_permissions
        denied = self._denied.get(str(channel_id), set())
        if "threads" in denied:
            permissions &= ~((1 << 35) | (1 << 36))  # CREATE_PUBLIC/PRIVATE_THREADS
        if "send" in denied:
            permissions &= ~((1 << 11) | (1 << 38))  # SEND_MESSAGES (+ IN_THREADS)
        return permissions

    def _channel(self, rec: RecordedRequest, channel_id: str) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            self._refuse(rec, "unknown_channel", 404, 10003, "Unknown Channel")
        return channel

    def _stored_message(
        self, rec: RecordedRequest, channel_id: str, message_id: str
    ) -> dict[str, Any]:
        msg = self._message_index.get(message_id)
        if msg is None or msg["channel_id"] != channel_id:
            self._refuse(rec, "unknown_message", 404, 10008, "Unknown Message")
        return msg

    # ------------------------------------------------------------------ gateway dispatch

    async def dispatch(self, event: str, data: dict[str, Any], intent: int | None = None) -> int:
        """Send a DISPATCH to every identified session (filtered by ``intent``).

        Sessions that are disconnected but resumable only buffer it (replayed on RESUME, as
        Discord does). Returns how many open connections it was sent over.
        """
        sent = 0
        for session in list(self._sessions):
            if not session.ready:
                continue
            if intent is not None and not (session.intents or 0) & intent:
                continue
            was_open = session.open
            await self._dispatch_to(session, event, data)
            sent += was_open
        await self._notify()
        return sent

    async def _dispatch_message_create(self, message: dict[str, Any]) -> None:
        intent = INTENT_GUILD_MESSAGES if message.get("guild_id") else INTENT_DIRECT_MESSAGES
        data = dict(message)
        if message.get("guild_id"):
            data["member"] = {
                k: v
                for k, v in self._member_payload(self.bot_user, [self.bot_role_id]).items()
                if k != "user"
            }
        await self.dispatch("MESSAGE_CREATE", data, intent)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress")
        compress = compress if compress == "zlib-stream" else None  # else: plain text frames
        session = _Session(ws, compress)
        self._sessions.append(session)
        try:
            hello = {"heartbeat_interval": self.heartbeat_interval_ms}
            await session.send({"op": OP_HELLO, "s": None, "t": None, "d": hello})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    raw = msg.data
                elif msg.type == WSMsgType.BINARY:
                    raw = msg.data.decode()
                else:
                    break
                try:
                    payload = json.loads(raw)
                except ValueError:
                    await self._close(session, 4002, "Error while decoding payload.")
                    break
                self.gateway_received.append(payload)
                session = await self._gateway_op(session, payload)
                if ws.closed:
                    break
        finally:
            if session.ws is ws:
                session.ws = None
                # A clean close by the client (1000/1001) ends the session, as on Discord;
                # otherwise it stays resumable (unless resumes are disabled).
                clean = ws.close_code in (1000, 1001) and not self._closing_by_fake(ws)
                if not session.ready or clean or not self.resume_supported:
                    self._forget(session)
            await self._notify()
        return ws

    def _closing_by_fake(self, ws: web.WebSocketResponse) -> bool:
        return id(ws) in self._fake_closed

    def _forget(self, session: _Session) -> None:
        session.ready = False
        if session in self._sessions:
            self._sessions.remove(session)

    async def _close(self, session: _Session, code: int, reason: str) -> None:
        self.gateway_closes.append(code)
        if session.ws is not None:
            self._fake_closed.add(id(session.ws))
            await session.ws.close(code=code, message=reason.encode())

    async def _gateway_op(self, session: _Session, payload: dict[str, Any]) -> _Session:
        """Handle one client payload; returns the session now carried by this connection."""
        op = payload.get("op")
        data = payload.get("d")
        if op == OP_HEARTBEAT:
            await session.send({"op": OP_HEARTBEAT_ACK, "s": None, "t": None, "d": None})
        elif op == OP_IDENTIFY:
            await self._identify(session, data or {})
        elif op == OP_RESUME:
            return await self._resume(session, data or {})
        elif op in (OP_PRESENCE, 4, 8, 31):  # presence, voice, member request, soundboard
            pass
        else:
            await self._close(session, 4001, "Unknown opcode.")
        return session

    async def _resume(self, conn: _Session, data: dict[str, Any]) -> _Session:
        self.resume_attempts += 1
        await self._notify()
        if data.get("token") != self.token:
            await self._close(conn, 4004, "Authentication failed.")
            return conn
        old = next(
            (s for s in self._sessions if s.ready and s.session_id == data.get("session_id")),
            None,
        )
        if old is None or old.open or not self.resume_supported:
            await conn.send({"op": OP_INVALID_SESSION, "s": None, "t": None, "d": False})
            return conn
        self._forget(conn)
        old.take_over(conn)
        seq = int(data.get("seq") or 0)
        for missed in old.buffer:
            if missed["s"] > seq:
                await old.send(missed)
        await self._dispatch_to(old, "RESUMED", {"_trace": ["fake-discord"]})
        self.resumes += 1
        await self._notify()
        return old

    async def _identify(self, session: _Session, data: dict[str, Any]) -> None:
        recorded = {k: v for k, v in data.items() if k != "token"}
        recorded["token_ok"] = data.get("token") == self.token
        self.identifies.append(recorded)
        await self._notify()
        if session.ready:
            await self._close(session, 4005, "Already authenticated.")
            return
        if data.get("token") != self.token:
            await self._close(session, 4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0:
            await self._close(session, 4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents_enabled:
            await self._close(session, 4014, "Disallowed intent(s).")
            return
        session.intents = intents
        session.ready = True
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": gid, "unavailable": True} for gid in self.guilds],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": data.get("shard", [0, 1]),
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
            "_trace": ["fake-discord"],
        }
        await self._dispatch_to(session, "READY", ready)
        for guild in self.guilds.values():
            if intents & INTENT_GUILDS:
                await self._dispatch_to(session, "GUILD_CREATE", self._guild_create_payload(guild))
        self.ready_count += 1
        await self._notify()

    async def _dispatch_to(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        """Send one DISPATCH to one session (buffered for replay on RESUME)."""
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.buffer = [*session.buffer[-499:], payload]
        self.gateway_sent.append(payload)
        await session.send(payload)

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection with ``code``.

        With 4000 ("unknown error") discord.py reconnects and RESUMEs; events dispatched
        meanwhile are buffered and replayed.
        """
        for session in list(self._sessions):
            if session.open:
                await self._close(session, code, "dropped by test")

    def invalidate_sessions(self) -> None:
        """Forget every session: the next RESUME gets INVALID_SESSION, forcing an IDENTIFY."""
        for session in list(self._sessions):
            if not session.open:
                self._forget(session)
            session.session_id = "invalidated-" + session.session_id

    @property
    def connected(self) -> bool:
        """Whether at least one identified gateway session is open."""
        return any(s.ready and s.open for s in self._sessions)

    # ------------------------------------------------------------------ interactions

    async def send_interaction(
        self,
        interaction_type: int,
        data: dict[str, Any] | None,
        *,
        channel_id: str | None = None,
        user: dict[str, Any] | None = None,
        message: dict[str, Any] | None = None,
        locale: str = "en-US",
        attachment_size_limit: int | None = None,
        require_gateway: bool = True,
        member_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
        member_roles: list[str] | None = None,
    ) -> FakeInteraction:
        """Build a realistic INTERACTION_CREATE, dispatch it over the gateway, return a handle."""
        cid = str(channel_id or self.channel_id)
        channel = self.channels[cid]
        user = user or self.user
        guild_id = channel.get("guild_id")
        payload: dict[str, Any] = {
            "id": self.snowflake(),
            "application_id": self.application_id,
            "type": interaction_type,
            "token": "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48),
            "version": 1,
            "channel_id": cid,
            "channel": copy.deepcopy(channel),
            "app_permissions": str(self._app_permissions(cid)),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": attachment_size_limit or self.upload_limit,
        }
        if data is not None:
            payload["data"] = data
        if guild_id:
            payload["guild_id"] = guild_id
            payload["guild"] = {"id": guild_id, "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            member = self._member_payload(user, list(member_roles or []))
            member["permissions"] = str(member_permissions)
            payload["member"] = member
            payload["authorizing_integration_owners"] = {"0": guild_id}
            payload["context"] = 0
        else:
            payload["user"] = user
            payload["authorizing_integration_owners"] = {"0": guild_id or self.guild_id}
            payload["context"] = 1
        if message is not None:
            payload["message"] = message
        interaction = FakeInteraction(
            fake=self,
            payload=payload,
            dispatched_at=time.monotonic(),
            ack_deadline=self.ack_deadline,
            token_ttl=self.token_ttl,
        )
        if require_gateway and not self.connected:
            raise RuntimeError("no identified gateway session to dispatch the interaction to")
        self.interactions[interaction.id] = interaction
        interaction.dispatched_at = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    def slash_command_data(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        guild_id: str | None = None,
        subcommand: str | None = None,
    ) -> dict[str, Any]:
        """``data`` of a CHAT_INPUT interaction; attachment options take ``add_attachment`` dicts.

        Option types come from the synced command when known, else from the Python value.
        ``subcommand`` ("sub" or "group sub") nests the options as Discord does
        (``[{"type": 1, "name": sub, "options": [...]}]``, inside a type 2 group). USER,
        CHANNEL and ROLE options take the user / channel / role payload and fill
        ``resolved`` (users + members in a guild, channels with permissions, roles).
        """
        cmd = self.find_command(name)
        declared_list = (cmd or {}).get("options") or []
        path = subcommand.split() if subcommand else []
        for part in path:
            parent = next((o for o in declared_list if o.get("name") == part), {})
            declared_list = parent.get("options") or []
        declared = {o["name"]: o for o in declared_list}
        resolved: dict[str, dict[str, Any]] = {}
        opts: list[dict[str, Any]] = []
        for opt_name, value in (options or {}).items():
            opt_type = declared.get(opt_name, {}).get("type")
            if isinstance(value, dict) and "filename" in value:
                resolved.setdefault("attachments", {})[value["id"]] = value
                opts.append({"name": opt_name, "type": 11, "value": value["id"]})
                continue
            if isinstance(value, dict) and "id" in value:
                opt_type = opt_type or self._entity_option_type(value)
                self._resolve_entity(resolved, opt_type, value)
                opts.append({"name": opt_name, "type": opt_type, "value": str(value["id"])})
                continue
            if opt_type is None:
                if isinstance(value, bool):
                    opt_type = 5
                elif isinstance(value, int):
                    opt_type = 4
                elif isinstance(value, float):
                    opt_type = 10
                else:
                    opt_type = 3
            opts.append({"name": opt_name, "type": opt_type, "value": value})
        for depth, part in enumerate(reversed(path)):
            kind = 1 if depth == 0 else 2  # SUB_COMMAND, then SUB_COMMAND_GROUP
            opts = [{"name": part, "type": kind, "options": opts}]
        data: dict[str, Any] = {
            "id": self.command_id(name, guild_id),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        if resolved:
            data["resolved"] = resolved
        return data

    def _entity_option_type(self, value: dict[str, Any]) -> int:
        if "username" in value:
            return 6  # USER
        if "permissions" in value and "type" not in value:
            return 8  # ROLE
        return 7  # CHANNEL

    def _resolve_entity(
        self, resolved: dict[str, dict[str, Any]], opt_type: int, value: dict[str, Any]
    ) -> None:
        vid = str(value["id"])
        if opt_type in (6, 9) and "username" in value:
            resolved.setdefault("users", {})[vid] = value
            resolved.setdefault("members", {})[vid] = self.member_payload(
                value, DEFAULT_EVERYONE_PERMISSIONS
            )
        elif opt_type == 7:
            channel = {
                "id": vid,
                "name": value.get("name"),
                "type": value.get("type", CH_GUILD_TEXT),
                "permissions": str(DEFAULT_EVERYONE_PERMISSIONS),
            }
            if value.get("parent_id"):
                channel["parent_id"] = value["parent_id"]
            if value.get("thread_metadata"):
                channel["thread_metadata"] = value["thread_metadata"]
            resolved.setdefault("channels", {})[vid] = channel
        else:
            resolved.setdefault("roles", {})[vid] = value

    async def slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        subcommand: str | None = None,
        **kwargs: Any,
    ) -> FakeInteraction:
        """Dispatch ``/name [subcommand]`` with ``options`` (see :meth:`slash_command_data`)."""
        return await self.send_interaction(
            IT_APPLICATION_COMMAND,
            self.slash_command_data(name, options, subcommand=subcommand),
            **kwargs,
        )

    async def message_command(
        self, name: str, message: dict[str, Any], **kwargs: Any
    ) -> FakeInteraction:
        """Dispatch the message context-menu command ``name`` on a stored ``message``.

        ``data`` is a MESSAGE command (type 3) with ``target_id`` and
        ``resolved.messages`` carrying the message, as Discord sends it.
        """
        stored = self._message_index.get(str(message["id"]), message)
        cmd_id = next(
            (
                str(c["id"])
                for c in self.guild_commands.get(self.guild_id, []) + self.commands
                if c["name"] == name and c.get("type") == 3
            ),
            self.snowflake(),
        )
        data: dict[str, Any] = {
            "id": cmd_id,
            "name": name,
            "type": 3,
            "target_id": stored["id"],
            "resolved": {"messages": {stored["id"]: copy.deepcopy(stored)}},
        }
        cmd = next(
            (c for c in self.guild_commands.get(self.guild_id, []) if c["id"] == cmd_id), None
        )
        if cmd is not None:
            data["guild_id"] = cmd["guild_id"]
        kwargs.setdefault("channel_id", stored["channel_id"])
        return await self.send_interaction(IT_APPLICATION_COMMAND, data, **kwargs)

    async def press_button(
        self, message: dict[str, Any], custom_id: str, **kwargs: Any
    ) -> FakeInteraction:
        """Dispatch a MESSAGE_COMPONENT interaction for a button on a stored message.

        Raises ``ValueError`` if the message has no such button (a user could not press it).
        """
        stored = self._message_index.get(str(message["id"]), message)

        def custom_ids(nodes: Iterable[Any]) -> Iterable[str]:
            for node in nodes:
                if isinstance(node, dict):
                    if node.get("type") == 2 and "custom_id" in node:
                        yield node["custom_id"]
                    yield from custom_ids(node.get("components") or [])
                    if node.get("accessory"):
                        yield from custom_ids([node["accessory"]])

        if custom_id not in set(custom_ids(stored.get("components") or [])):
            raise ValueError(f"message {stored['id']} has no button with custom_id {custom_id!r}")
        return await self.send_interaction(
            IT_MESSAGE_COMPONENT,
            {"custom_id": custom_id, "component_type": 2},
            channel_id=stored["channel_id"],
            message=copy.deepcopy(stored),
            **kwargs,
        )

    async def submit_modal(
        self, custom_id: str, values: dict[str, str], **kwargs: Any
    ) -> FakeInteraction:
        """Dispatch a MODAL_SUBMIT with text inputs ``{custom_id: value}``."""
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]}
            for k, v in values.items()
        ]
        return await self.send_interaction(
            IT_MODAL_SUBMIT, {"custom_id": custom_id, "components": rows}, **kwargs
        )

    # ------------------------------------------------------------------ REST handlers

    async def _get_gateway(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        return _json({"url": self.gateway_url})

    async def _get_gateway_bot(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        return _json(
            {
                "url": self.gateway_url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_me(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        return _json({**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"})

    async def _get_user(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        user = self.users.get(p["user_id"])
        if user is None:
            self._refuse(rec, "unknown_user", 404, 10013, "Unknown User")
        return _json(user)

    async def _get_app(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        return _json(
            {
                "id": self.application_id,
                "name": self.bot_user["global_name"],
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": secrets.token_hex(32),
                "flags": 0,
                "owner": self.user,
                "bot": self.bot_user,
                "tags": [],
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
                "integration_types_config": {"0": {}},
                "flags_new": "0",
                "role_connections_verification_url": None,
                "approximate_guild_count": len(self.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "team": None,
                "eligible_oauth2_scopes": ["bot", "applications.commands"],
            }
        )

    def _check_app(self, rec: RecordedRequest, app: str) -> None:
        if app != self.application_id:
            self._refuse(rec, "wrong_application", 403, 50001, "Missing Access")

    def _command_store(self, p: dict[str, str]) -> list[dict[str, Any]]:
        if "guild" in p:
            return self.guild_commands.setdefault(p["guild"], [])
        return self.commands

    def _make_command(
        self, p: dict[str, str], body: dict[str, Any], existing: list[dict[str, Any]]
    ) -> dict[str, Any]:
        ctype = body.get("type") or 1
        old = next(
            (c for c in existing if c["name"] == body.get("name") and c["type"] == ctype), None
        )
        cmd: dict[str, Any] = {
            "id": old["id"] if old else self.snowflake(),
            "application_id": self.application_id,
            "version": self.snowflake(),
            "type": ctype,
            "name": body.get("name"),
            "description": body.get("description") or "",
            "default_member_permissions": body.get("default_member_permissions"),
            "dm_permission": body.get("dm_permission", True),
            "nsfw": bool(body.get("nsfw") or False),
            "options": body.get("options") or [],
            "integration_types": body.get("integration_types") or [0],
            "contexts": body.get("contexts"),
            "name_localizations": body.get("name_localizations"),
            "description_localizations": body.get("description_localizations"),
        }
        if "guild" in p:
            cmd["guild_id"] = p["guild"]
        return cmd

    async def _get_commands(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._check_app(rec, p["app"])
        return _json(self._command_store(p))

    async def _put_commands(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._check_app(rec, p["app"])
        if "guild" in p and p["guild"] not in self.guilds:
            self._refuse(rec, "unknown_guild", 404, 10004, "Unknown Guild")
        body = rec.json or []
        store = self._command_store(p)
        names = [(c.get("type") or 1, c.get("name")) for c in body]
        if len(names) != len(set(names)):
            self._refuse_form(
                rec,
                [
                    (
                        [],
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    )
                ],
            )
        new = [self._make_command(p, c, store) for c in body]
        store[:] = new
        self.command_syncs += 1
        return _json(new)

    async def _post_command(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._check_app(rec, p["app"])
        store = self._command_store(p)
        cmd = self._make_command(p, rec.json or {}, store)
        store[:] = [c for c in store if c["id"] != cmd["id"]] + [cmd]
        return _json(cmd, status=201)

    async def _interaction_callback(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        now = time.monotonic()
        inter = self.interactions.get(p["iid"])
        if inter is None or inter.token != p["token"]:
            self._refuse(rec, "unknown_interaction", 404, 10062, "Unknown interaction")
        latency = now - inter.dispatched_at
        if inter.callback is not None:
            self._refuse(
                rec, "double_ack", 400, 40060, "Interaction has already been acknowledged."
            )
        if latency > inter.ack_deadline:
            self.ack_latencies.setdefault(inter.id, latency)
            self._refuse(rec, "late_ack", 404, 10062, "Unknown interaction")
        body = rec.json or {}
        cb_type = body.get("type")
        data = body.get("data")
        itype = inter.payload["type"]
        if cb_type in (CB_DEFERRED_UPDATE, CB_UPDATE_MESSAGE) and itype not in (
            IT_MESSAGE_COMPONENT,
            IT_MODAL_SUBMIT,
        ):
            self._refuse_form(
                rec,
                [
                    (
                        ["type"],
                        "INTERACTION_CALLBACK_TYPE_INVALID",
                        "Invalid callback type for this interaction",
                    )
                ],
            )
        if cb_type == CB_MODAL and itype == IT_MODAL_SUBMIT:
            self._refuse_form(
                rec,
                [
                    (
                        ["type"],
                        "INTERACTION_CALLBACK_TYPE_INVALID",
                        "Invalid callback type for this interaction",
                    )
                ],
            )
        msg_body: dict[str, Any] = data if isinstance(data, dict) else {}
        if cb_type in (CB_MESSAGE, CB_UPDATE_MESSAGE):
            self._check_message_body(rec, msg_body, creating=cb_type == CB_MESSAGE)
            self._check_files(rec, int(inter.payload["attachment_size_limit"]))
        elif rec.files:
            self._refuse_form(
                rec,
                [(["files"], "BASE_TYPE_INVALID", "Files are not allowed for this callback type")],
            )

        cid = inter.channel_id
        message: dict[str, Any] | None = None
        flags = int(msg_body.get("flags") or 0) & FLAG_EPHEMERAL
        if cb_type == CB_MESSAGE:
            atts = self._store_files(rec, cid, msg_body)
            message = self._new_message(
                cid, msg_body, atts, msg_type=20, interaction=inter, flags=flags
            )
            inter.original_message_id = message["id"]
        elif cb_type == CB_DEFERRED_MESSAGE:
            message = self._new_message(
                cid, {}, [], msg_type=20, interaction=inter, flags=flags | FLAG_LOADING
            )
            inter.original_message_id = message["id"]
        elif cb_type == CB_UPDATE_MESSAGE and "message" in inter.payload:
            message = self._message_index.get(inter.payload["message"]["id"])
            if message is not None:
                self._apply_edit(rec, message, msg_body)
            inter.original_message_id = inter.payload["message"]["id"]
        elif cb_type == CB_DEFERRED_UPDATE and "message" in inter.payload:
            inter.original_message_id = inter.payload["message"]["id"]

        callback = InteractionCallback(inter.id, int(cb_type or 0), data, rec.files, latency, now)
        inter.callback = callback
        self.interaction_callbacks.append(callback)
        self.ack_latencies[inter.id] = latency
        if message is not None and cb_type in (CB_MESSAGE, CB_DEFERRED_MESSAGE) and not flags:
            await self._dispatch_message_create(message)

        if rec.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        response: dict[str, Any] = {
            "interaction": {
                "id": inter.id,
                "type": itype,
                "response_message_loading": cb_type == CB_DEFERRED_MESSAGE,
                "response_message_ephemeral": bool(flags),
            }
        }
        if message is not None:
            response["interaction"]["response_message_id"] = message["id"]
            response["resource"] = {"type": cb_type, "message": message}
        else:
            response["resource"] = {"type": cb_type}
        return _json(response)

    def _interaction_by_token(self, rec: RecordedRequest, app: str, token: str) -> FakeInteraction:
        inter = next((i for i in self.interactions.values() if i.token == token), None)
        if inter is None or app != self.application_id:
            self._refuse(rec, "unknown_webhook", 404, 10015, "Unknown Webhook")
        if inter.expired:
            self._refuse(rec, "token_expired", 401, 50027, "Invalid Webhook Token")
        return inter

    async def _webhook_execute(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        inter = self._interaction_by_token(rec, p["app"], p["token"])
        body = rec.json or {}
        self._check_message_body(rec, body, creating=True)
        self._check_files(rec, int(inter.payload["attachment_size_limit"]))
        cid = inter.channel_id
        if "thread_id" in rec.query:
            cid = rec.query["thread_id"]
            self._channel(rec, cid)
        flags = int(body.get("flags") or 0) & FLAG_EPHEMERAL
        atts = self._store_files(rec, cid, body)
        message = self._new_message(cid, body, atts, msg_type=0, interaction=inter, flags=flags)
        inter.followup_ids.append(message["id"])
        if not flags:
            await self._dispatch_message_create(message)
        if rec.query.get("wait") in ("1", "true", "True"):
            return _json(message)
        return web.Response(status=204)

    async def _webhook_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        inter = self._interaction_by_token(rec, p["app"], p["token"])
        mid = inter.original_message_id if p["mid"] == "@original" else p["mid"]
        if mid is None or mid not in self._message_index:
            self._refuse(rec, "unknown_message", 404, 10008, "Unknown Message")
        message = self._message_index[mid]
        if req.method == "GET":
            return _json(message)
        if req.method == "DELETE":
            self._remove_message(message)
            return web.Response(status=204)
        body = rec.json or {}
        self._check_message_body(rec, body, creating=False)
        self._check_files(rec, int(inter.payload["attachment_size_limit"]))
        self._apply_edit(rec, message, body)
        return _json(message)

    def _apply_edit(
        self, rec: RecordedRequest, message: dict[str, Any], body: dict[str, Any]
    ) -> None:
        new_atts = self._store_files(rec, message["channel_id"], body)
        if "attachments" in body and body["attachments"] is not None:
            keep = {str(a["id"]) for a in body["attachments"] if isinstance(a, dict) and "id" in a}
            message["attachments"] = [a for a in message["attachments"] if a["id"] in keep]
        message["attachments"] = message["attachments"] + new_atts
        for key in ("content", "components"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key == "components" else "")
                )
        if "embeds" in body:
            message["embeds"] = [self._embed_out(e) for e in body["embeds"] or []]
        if "flags" in body and body["flags"] is not None:
            message["flags"] = (message["flags"] & ~(1 << 2)) | (int(body["flags"]) & (1 << 2))
        message["flags"] &= ~FLAG_LOADING
        message["edited_timestamp"] = _now_iso()

    def _remove_message(self, message: dict[str, Any]) -> None:
        self._message_index.pop(message["id"], None)
        msgs = self._messages.get(message["channel_id"], [])
        msgs[:] = [m for m in msgs if m["id"] != message["id"]]

    async def _get_channel(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        return _json(self._channel(rec, p["cid"]))

    async def _list_messages(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._channel(rec, p["cid"])
        self._permission(rec, p["cid"], "history")
        try:
            limit = int(rec.query.get("limit", "50"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100:
            self._refuse_form(
                rec, [(["limit"], "NUMBER_TYPE_MAX", "int value should be between 1 and 100")]
            )
        # Newest first, as Discord answers; ephemeral messages are not part of history.
        msgs = [
            m for m in reversed(self._messages.get(p["cid"], [])) if not m["flags"] & FLAG_EPHEMERAL
        ]
        if "before" in rec.query:
            msgs = [m for m in msgs if int(m["id"]) < int(rec.query["before"])]
        if "after" in rec.query:
            msgs = [m for m in msgs if int(m["id"]) > int(rec.query["after"])][-limit:]
        return _json(msgs[:limit])

    async def _create_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        cid = p["cid"]
        self._channel(rec, cid)
        self._permission(rec, cid, "send")
        if rec.files:
            self._permission(rec, cid, "attach")
        body = rec.json or {}
        self._check_message_body(rec, body, creating=True)
        self._check_files(rec, self.upload_limit)
        if body.get("message_reference"):
            ref_id = str(body["message_reference"].get("message_id"))
            if ref_id not in self._message_index and body["message_reference"].get(
                "fail_if_not_exists", True
            ):
                self._refuse_form(
                    rec, [(["message_reference"], "REPLIES_UNKNOWN_MESSAGE", "Unknown message")]
                )
        atts = self._store_files(rec, cid, body)
        message = self._new_message(cid, body, atts)
        await self._dispatch_message_create(message)
        return _json(message)

    async def _get_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._channel(rec, p["cid"])
        return _json(self._stored_message(rec, p["cid"], p["mid"]))

    async def _edit_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._channel(rec, p["cid"])
        message = self._stored_message(rec, p["cid"], p["mid"])
        if message["author"]["id"] != self.bot_user["id"]:
            self._refuse(
                rec, "forbidden", 403, 50005, "Cannot edit a message authored by another user"
            )
        body = rec.json or {}
        self._check_message_body(rec, body, creating=False)
        self._check_files(rec, self.upload_limit)
        self._apply_edit(rec, message, body)
        return _json(message)

    async def _delete_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._channel(rec, p["cid"])
        self._remove_message(self._stored_message(rec, p["cid"], p["mid"]))
        return web.Response(status=204)

    def _new_thread(
        self, parent: dict[str, Any], thread_id: str, body: dict[str, Any], thread_type: int
    ) -> dict[str, Any]:
        thread = {
            "id": thread_id,
            "type": thread_type,
            "guild_id": parent.get("guild_id"),
            "parent_id": parent["id"],
            "owner_id": self.bot_user["id"],
            "name": body.get("name"),
            "last_message_id": None,
            "rate_limit_per_user": body.get("rate_limit_per_user") or 0,
            "message_count": 0,
            "total_message_sent": 0,
            "member_count": 1,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration")
                or parent.get("default_auto_archive_duration", 1440),
                "archive_timestamp": _now_iso(),
                "locked": False,
                "create_timestamp": _now_iso(),
            },
            "member": {
                "id": thread_id,
                "user_id": self.bot_user["id"],
                "join_timestamp": _now_iso(),
                "flags": 0,
            },
        }
        if thread_type == CH_PRIVATE_THREAD:
            thread["thread_metadata"]["invitable"] = bool(body.get("invitable", True))
        self.channels[thread_id] = thread
        self._messages.setdefault(thread_id, [])
        self.threads.append(thread)
        return thread

    def _thread_parent(self, rec: RecordedRequest, cid: str) -> dict[str, Any]:
        parent = self._channel(rec, cid)
        if parent.get("type") not in (CH_GUILD_TEXT, 5):
            self._refuse(
                rec, "wrong_channel_type", 400, 50024, "Cannot execute action on this channel type"
            )
        self._permission(rec, cid, "threads")
        return parent

    async def _thread_from_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        parent = self._thread_parent(rec, p["cid"])
        message = self._stored_message(rec, p["cid"], p["mid"])
        if p["mid"] in self.channels:
            self._refuse(
                rec,
                "thread_exists",
                400,
                160004,
                "A thread has already been created for this message",
            )
        body = rec.json or {}
        thread = self._new_thread(parent, p["mid"], body, CH_PUBLIC_THREAD)
        message["thread"] = thread
        message["flags"] = message.get("flags", 0) | FLAG_HAS_THREAD
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True}, INTENT_GUILDS)
        return _json(thread, status=201)

    async def _thread_without_message(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        parent = self._thread_parent(rec, p["cid"])
        body = rec.json or {}
        thread = self._new_thread(
            parent, self.snowflake(), body, int(body.get("type") or CH_PRIVATE_THREAD)
        )
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True}, INTENT_GUILDS)
        return _json(thread, status=201)

    async def _create_dm(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        body = rec.json or {}
        rid = str(body.get("recipient_id"))
        user = self.users.get(rid)
        if user is None:
            self._refuse_form(
                rec, [(["recipient_id"], "INVALID_RECIPIENT", "Invalid Recipient(s)")]
            )
        existing = next(
            (
                c
                for c in self.channels.values()
                if c["type"] == CH_DM and c["recipients"][0]["id"] == rid
            ),
            None,
        )
        if existing is None:
            existing = {
                "id": self.snowflake(),
                "type": CH_DM,
                "last_message_id": None,
                "flags": 0,
                "recipients": [user],
            }
            self.channels[existing["id"]] = existing
            self._messages[existing["id"]] = []
        return _json(existing)

    async def _cdn_get(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        rec = RecordedRequest(
            "GET", "/attachments/" + path, dict(request.query), None, [], time.monotonic()
        )
        self.requests.append(rec)
        item = self.cdn.get(path)
        if item is None:
            rec.status = 404
            self.unknown_requests.append(rec)
            await self._notify()
            return web.Response(status=404, text="Not Found")
        hold = self._take_hold(rec, effect_first=False)
        if hold is not None and not await self._wait_hold(hold, rec):
            rec.status = 503
            rec.dropped = True
            return web.Response(status=503, text="dropped by the test")
        rec.status = 200
        await self._notify()
        return web.Response(body=item[0], content_type=item[1])


@dataclass
class _Fault:
    """A scripted answer for the next matching requests (see ``FakeDiscord.inject_error``)."""

    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    times: int
    headers: dict[str, str]


@dataclass
class Hold:
    """Requests held by ``FakeDiscord.hold_next`` until the test releases or drops them."""

    method: str
    pattern: re.Pattern[str]
    times: int
    effect_first: bool
    match: Callable[[RecordedRequest], bool] | None
    held: list[RecordedRequest] = field(default_factory=list)
    gates: list[asyncio.Future[bool]] = field(default_factory=list)

    def release(self) -> None:
        """Let every held request go on (it takes effect now, if it hadn't yet)."""
        self._open(True)

    def drop(self) -> None:
        """Forget every held request: it never takes effect (and is never answered)."""
        self._open(False)

    def cancel(self) -> None:
        """Hold nothing more (what is held stays held)."""
        self.times = 0

    def _open(self, proceed: bool) -> None:
        self.times = 0
        for gate in self.gates:
            if not gate.done():
                gate.set_result(proceed)


@dataclass
class _Delay:
    """A late answer for the next matching requests (see ``FakeDiscord.delay_next``)."""

    method: str
    pattern: re.Pattern[str]
    seconds: float
    times: int
    with_files: bool


class _Refusal(Exception):
    """Raised inside handlers to answer with a Discord error (already recorded)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response
