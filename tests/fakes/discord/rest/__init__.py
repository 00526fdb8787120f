"""The fake's REST routes, one module per resource; each class lists its ``routes()``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from tests.fakes.discord.records import RecordedRequest

#: A route handler: the request, its record (body parsed) and the path's ``{params}``.
Handler = Callable[[web.Request, RecordedRequest, dict[str, str]], Awaitable[web.Response]]
#: ``(method, path template as in the OpenAPI description, handler)``.
Route = tuple[str, str, Handler]
