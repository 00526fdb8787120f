"""REST: the gateway address and shard advice, users, the application and its commands."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from tests.fakes.discord.contract import Contract, json_response
from tests.fakes.discord.records import RecordedRequest
from tests.fakes.discord.rest import Route
from tests.fakes.discord.state import DiscordState

SESSION_STARTS_PER_DAY = 1000


class ApplicationRoutes:
    """``/gateway``, ``/gateway/bot``, ``/users``, ``/applications`` (+ commands)."""

    def __init__(self, state: DiscordState, contract: Contract) -> None:
        self.state = state
        self.contract = contract

    def routes(self) -> list[Route]:
        """The routes this module answers."""
        return [
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_app),
            ("GET", "/applications/@me", self._get_app),
            ("GET", "/applications/{app}/commands", self._get_commands),
            ("PUT", "/applications/{app}/commands", self._put_commands),
            ("POST", "/applications/{app}/commands", self._post_command),
            ("GET", "/applications/{app}/guilds/{guild}/commands", self._get_commands),
            ("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands),
            ("POST", "/applications/{app}/guilds/{guild}/commands", self._post_command),
        ]

    async def _get_gateway(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        return json_response({"url": self.state.gateway_url})

    async def _get_gateway_bot(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        # ``shards`` is the recommended shard count (what AutoShardedClient uses); every
        # IDENTIFY uses up one of the day's session starts.
        used = len(self.state.identifies)
        return json_response(
            {
                "url": self.state.gateway_url,
                "shards": self.state.recommended_shards,
                "session_start_limit": {
                    "total": SESSION_STARTS_PER_DAY,
                    "remaining": max(0, SESSION_STARTS_PER_DAY - used),
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    async def _get_me(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        bot_user = self.state.bot_user
        return json_response(
            {**bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"}
        )

    async def _get_user(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        user = self.state.users.get(p["user_id"])
        if user is None:
            self.contract.refuse(rec, "unknown_user", 404, 10013, "Unknown User")
        return json_response(user)

    async def _get_app(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        state = self.state
        return json_response(
            {
                "id": state.application_id,
                "name": state.bot_user["global_name"],
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": secrets.token_hex(32),
                "flags": 0,
                "owner": state.user,
                "bot": state.bot_user,
                "tags": [],
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
                "integration_types_config": {"0": {}},
                "flags_new": "0",
                "role_connections_verification_url": None,
                "approximate_guild_count": len(state.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "team": None,
                "eligible_oauth2_scopes": ["bot", "applications.commands"],
            }
        )

    # ------------------------------------------------------------------ commands

    def _check_app(self, rec: RecordedRequest, app: str) -> None:
        if app != self.state.application_id:
            self.contract.refuse(rec, "wrong_application", 403, 50001, "Missing Access")

    def _command_store(self, p: dict[str, str]) -> list[dict[str, Any]]:
        if "guild" in p:
            return self.state.guild_commands.setdefault(p["guild"], [])
        return self.state.commands

    def _make_command(
        self, p: dict[str, str], body: dict[str, Any], existing: list[dict[str, Any]]
    ) -> dict[str, Any]:
        state = self.state
        ctype = body.get("type") or 1
        old = next(
            (c for c in existing if c["name"] == body.get("name") and c["type"] == ctype), None
        )
        cmd: dict[str, Any] = {
            "id": old["id"] if old else state.snowflake(),
            "application_id": state.application_id,
            "version": state.snowflake(),
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
        return json_response(self._command_store(p))

    async def _put_commands(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._check_app(rec, p["app"])
        if "guild" in p and p["guild"] not in self.state.guilds:
            self.contract.refuse(rec, "unknown_guild", 404, 10004, "Unknown Guild")
        body = rec.json or []
        store = self._command_store(p)
        names = [(c.get("type") or 1, c.get("name")) for c in body]
        if len(names) != len(set(names)):
            self.contract.refuse_form(
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
        self.state.command_syncs += 1
        return json_response(new)

    async def _post_command(
        self, req: web.Request, rec: RecordedRequest, p: dict[str, str]
    ) -> web.Response:
        self._check_app(rec, p["app"])
        store = self._command_store(p)
        cmd = self._make_command(p, rec.json or {}, store)
        store[:] = [c for c in store if c["id"] != cmd["id"]] + [cmd]
        return json_response(cmd, status=201)
