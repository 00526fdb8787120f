"""The HTTP front: one aiohttp server for REST, gateway and CDN; how every REST request is met.

A request is recorded, routed, authenticated, its body parsed, then met by the scripted faults
(injected answer, hold), checked against the contract, and only then handed to its route.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import BodyPartReader, web

from tests.fakes.discord.cdn import Cdn
from tests.fakes.discord.constants import API_PREFIX, MIB
from tests.fakes.discord.contract import RESPONSES_CHECKED, Contract, Refusal, error_response
from tests.fakes.discord.faults import Faults
from tests.fakes.discord.gateway import Gateway
from tests.fakes.discord.records import RecordedRequest, UploadedFile
from tests.fakes.discord.rest import Handler, Route
from tests.fakes.discord.state import DiscordState


class Server:
    """Listens on 127.0.0.1 and answers REST (``/api/v10/...``), ``/gateway`` and the CDN."""

    def __init__(
        self,
        state: DiscordState,
        contract: Contract,
        faults: Faults,
        gateway: Gateway,
        cdn: Cdn,
        routes: Iterable[Route],
    ) -> None:
        self.state = state
        self.contract = contract
        self.faults = faults
        self.gateway = gateway
        self.cdn = cdn
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for method, template, handler in routes:
            self._add(method, template, handler)
        self._runner: web.AppRunner | None = None

    def _add(self, method: str, template: str, handler: Handler) -> None:
        openapi = self.contract.openapi
        documented = openapi.match(re.sub(r"\{\w+\}", "1", template))
        if template != "/gateway" and (
            documented is None or not openapi.has_operation(method, documented)
        ):
            raise AssertionError(f"{method} {template} is not in Discord's OpenAPI description")
        regex = re.compile(
            "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
        )
        self._routes.append((method, regex, handler))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; return the port."""
        app = web.Application(client_max_size=200 * MIB)
        app.router.add_get("/gateway", self.gateway.serve)
        app.router.add_get("/gateway/", self.gateway.serve)
        app.router.add_get("/attachments/{path:.+}", self.cdn.serve)
        app.router.add_route("*", "/{tail:.*}", self._dispatch_http)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop answering (gateway connections are closed by the caller first)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ one request

    @staticmethod
    def _is_token_route(path: str) -> bool:
        return path.startswith("/interactions/") or bool(re.match(r"^/webhooks/[^/]+/[^/]+", path))

    async def _dispatch_http(self, request: web.Request) -> web.Response:
        state = self.state
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
        state.requests.append(rec)
        try:
            response = await self._handle(request, rec, raw_path.startswith(API_PREFIX))
        except Refusal as refusal:
            response = refusal.response
        except Exception as exc:  # a bug in the fake: make it loud, never a silent retry loop
            self.contract.violation("fake_error", rec, f"{type(exc).__name__}: {exc}")
            response = error_response(500, 0, "500: Internal Server Error (fake)")
        rec.status = response.status
        with contextlib.suppress(Exception):
            rec.response = json.loads(response.text or "null")
        delay = self.faults.take_delay(rec)
        await state.notify()
        hold = self.faults.take_hold(rec, effect_first=True) if not rec.dropped else None
        if hold is not None:  # done; the answer waits for the test (and dies with the client)
            await self.faults.wait_hold(hold, rec)
            return response
        if delay:
            await self.faults.sleep_delay(delay)
        return response

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
            self.state.unknown_requests.append(rec)
            return error_response(404, 0, "404: Not Found")

        if not self._is_token_route(rec.path) and rec.path != "/gateway":
            if request.headers.get("Authorization") != f"Bot {self.state.token}":
                self.contract.violation(
                    "unauthorized", rec, "missing or wrong Authorization header"
                )
                return error_response(401, 0, "401: Unauthorized")

        await self._read_body(request, rec)
        injected = self.faults.take_fault(rec)
        if injected is not None:
            return injected
        self.contract.validate_schema(rec)
        hold = self.faults.take_hold(rec, effect_first=False)
        if hold is not None and not await self.faults.wait_hold(hold, rec):
            return self.faults.drop(rec)
        response = await handler(request, rec, params)
        if response.status == 200 and (rec.method, rec.path) in RESPONSES_CHECKED:
            self.contract.check_own_response(rec, response)
        return response

    async def _read_body(self, request: web.Request, rec: RecordedRequest) -> None:
        if not request.body_exists:
            return
        if request.content_type == "multipart/form-data":
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
                    self.contract.violation(
                        "bad_multipart", rec, f"unexpected multipart field {name!r}"
                    )
                    raise Refusal(error_response(400, 50035, "Invalid Form Body", {}))
        else:
            data = await request.read()
            if data:
                rec.json = self._parse_json(rec, data)

    def _parse_json(self, rec: RecordedRequest, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            self.contract.violation("bad_json", rec, "body is not valid JSON")
            raise Refusal(
                error_response(400, 50109, "The request body contains invalid JSON.")
            ) from None
