"""What Discord accepts: the OpenAPI description plus the limits it does not express.

A refused request is answered exactly as Discord would (status code and error body) and
recorded in ``FakeDiscord.violations``. Handlers call :class:`Contract`'s checks, which raise
:class:`Refusal` carrying the answer.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from aiohttp import web

from tests.fakes.discord.constants import (
    CH_DM,
    CH_PRIVATE_THREAD,
    CH_PUBLIC_THREAD,
    PERM_ATTACH_FILES,
    PERM_CREATE_PUBLIC_THREADS,
    PERM_READ_MESSAGE_HISTORY,
    PERM_SEND_MESSAGES,
    PERM_SEND_MESSAGES_IN_THREADS,
    PERM_VIEW_CHANNEL,
)
from tests.fakes.discord.openapi import FormError, OpenAPI, form_errors, schema_errors
from tests.fakes.discord.records import RecordedRequest, Violation
from tests.fakes.discord.state import DiscordState

#: Routes whose answers the fake checks against the description's response schema too: who the
#: bot is, its application (what `python -m bot check` reads) and the gateway/shard advice.
RESPONSES_CHECKED = {
    ("GET", "/users/@me"),
    ("GET", "/oauth2/applications/@me"),
    ("GET", "/gateway/bot"),
}


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response with exactly ``Content-Type: application/json``.

    discord.py compares the header verbatim: a ``; charset=utf-8`` suffix makes it treat the
    body as text.
    """
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def error_response(
    status: int, code: int, message: str, errors: dict[str, Any] | None = None
) -> web.Response:
    """Discord's error body: ``{"message", "code"[, "errors"]}``."""
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status=status)


class Refusal(Exception):
    """Raised inside handlers to answer with a Discord error (already recorded)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class Contract:
    """Checks requests against Discord's rules; records and raises what Discord would refuse."""

    def __init__(self, state: DiscordState, openapi: OpenAPI) -> None:
        self.state = state
        self.openapi = openapi

    # ------------------------------------------------------------------ refusing

    def violation(self, kind: str, rec: RecordedRequest, detail: str, errors: Any = None) -> None:
        """Record a request Discord would refuse (or a bug in the fake)."""
        self.state.violations.append(Violation(kind, rec.method, rec.path, detail, errors))

    def refuse_form(
        self, rec: RecordedRequest, errors: list[FormError], kind: str = "limit"
    ) -> NoReturn:
        """Refuse with 400 ``50035 Invalid Form Body`` and the per-field errors."""
        body = form_errors(errors)
        self.violation(kind, rec, "; ".join(f"{p}: {m}" for p, _, m in errors), body)
        raise Refusal(error_response(400, 50035, "Invalid Form Body", body))

    def refuse(
        self, rec: RecordedRequest, kind: str, status: int, code: int, message: str
    ) -> NoReturn:
        """Refuse with ``status`` and Discord's JSON error ``code``/``message``."""
        self.violation(kind, rec, f"{status} {code} {message}")
        raise Refusal(error_response(status, code, message))

    # ------------------------------------------------------------------ the description

    def validate_schema(self, rec: RecordedRequest) -> None:
        """Refuse a JSON body the description does not allow for this route."""
        if rec.json is None:
            return
        template = self.openapi.match(rec.path)
        if template is None:
            return
        validator = self.openapi.validator(rec.method, template)
        if validator is None:
            return
        errors = schema_errors(validator.iter_errors(rec.json))
        if errors:
            self.refuse_form(rec, errors, kind="schema")

    def check_own_response(self, rec: RecordedRequest, response: web.Response) -> None:
        """The fake's own answer must match what the description documents (a fake bug else)."""
        template = self.openapi.match(rec.path)
        assert template is not None and isinstance(response.body, bytes)
        validator = self.openapi.response_validator(rec.method, template, response.status)
        errors = schema_errors(validator.iter_errors(json.loads(response.body)))
        if errors:
            self.violation("fake_response", rec, "the fake's answer breaks the description", errors)

    # ------------------------------------------------------------------ limits Discord enforces

    def check_message_body(
        self, rec: RecordedRequest, body: dict[str, Any], *, creating: bool
    ) -> None:
        """Content, embed, component and file limits of a message (created or edited)."""
        if not isinstance(body, dict):
            self.refuse_form(rec, [([], "MODEL_TYPE_CONVERT", "Must be an object.")])
        errors: list[FormError] = []
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
        errors.extend(self.check_components(body.get("components")))
        if len(rec.files) > 10:
            errors.append((["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))
        if errors:
            self.refuse_form(rec, errors)
        if creating and not (
            content
            or embeds
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
            or rec.files
        ):
            self.refuse(rec, "empty_message", 400, 50006, "Cannot send an empty message")

    @staticmethod
    def check_components(components: Any) -> list[FormError]:
        """Custom-id length and uniqueness, row width, button fields."""
        errors: list[FormError] = []
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

    def check_files(self, rec: RecordedRequest, limit: int) -> None:
        """Refuse an upload over ``limit`` bytes with 413 ``40005``."""
        for f in rec.files:
            if len(f.data) > limit:
                self.refuse(rec, "upload_too_large", 413, 40005, "Request entity too large")

    # ------------------------------------------------------------------ access and existence

    def permission(self, rec: RecordedRequest, channel_id: str, what: str) -> None:
        """Refuse what the bot may not do in a channel (``send``/``threads``/``history``/
        ``attach``): 403 50001 when it cannot even see it, 50013 when it lacks the right,
        50007 for a DM to a user who blocks them."""
        state = self.state
        channel = state.channels.get(channel_id, {})
        parent = str(channel.get("parent_id") or "")
        if channel.get("type") != CH_DM:
            granted = state.app_permissions(parent or channel_id)
            thread = channel.get("type") in (CH_PUBLIC_THREAD, CH_PRIVATE_THREAD)
            if not granted & PERM_VIEW_CHANNEL:
                self.refuse(rec, "forbidden", 403, 50001, "Missing Access")
            needed = {
                "send": PERM_SEND_MESSAGES_IN_THREADS if thread else PERM_SEND_MESSAGES,
                "threads": PERM_CREATE_PUBLIC_THREADS,
                "history": PERM_READ_MESSAGE_HISTORY,
                "attach": PERM_ATTACH_FILES,
            }[what]
            if not granted & needed:
                self.refuse(rec, "forbidden", 403, 50013, "Missing Permissions")
        if what in state.denied.get(channel_id, set()) or (
            what == "send"
            and channel.get("type") in (CH_PUBLIC_THREAD, CH_PRIVATE_THREAD)
            and "send" in state.denied.get(parent, set())
        ):
            self.refuse(rec, "forbidden", 403, 50013, "Missing Permissions")
        if channel.get("type") == CH_DM and what == "send":
            for r in channel.get("recipients", []):
                if r["id"] in state.blocked_dm_users:
                    self.refuse(rec, "forbidden", 403, 50007, "Cannot send messages to this user")

    def channel(self, rec: RecordedRequest, channel_id: str) -> dict[str, Any]:
        """The stored channel, or 404 ``10003 Unknown Channel``."""
        channel = self.state.channels.get(channel_id)
        if channel is None:
            self.refuse(rec, "unknown_channel", 404, 10003, "Unknown Channel")
        return channel

    def stored_message(
        self, rec: RecordedRequest, channel_id: str, message_id: str
    ) -> dict[str, Any]:
        """The stored message in that channel, or 404 ``10008 Unknown Message``."""
        msg = self.state.message_index.get(message_id)
        if msg is None or msg["channel_id"] != channel_id:
            self.refuse(rec, "unknown_message", 404, 10008, "Unknown Message")
        return msg
