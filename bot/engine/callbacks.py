"""The callback listener: the provider's notice that a task changed makes its next poll now.

The URL is `CALLBACK_PUBLIC_URL` + `/kling/callback/{task id}/{token}`, the token random per
task (stored in its row) and compared in constant time; anything else is 404. A notice is never
trusted as a status: its body is validated, then it only wakes the task, whose state the next
query confirms. The listener speaks plain HTTP on all interfaces: a TLS proxy in front serves
the public https address.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable

from aiohttp import web

from bot.kling.models import KlingTask
from bot.ops import why_not_listening
from bot.store import TaskStore
from bot.tasks import Task

log = logging.getLogger(__name__)

CALLBACK_PATH = "/kling/callback/{task_id}/{token}"
MAX_BODY_BYTES = 1024 * 1024


def new_callback_token() -> str:
    """An unguessable per-task token for the callback URL."""
    return secrets.token_urlsafe(24)


def callback_url(public_url: str | None, task: Task) -> str | None:
    """The URL the provider should call for this task, when callbacks are configured."""
    if not public_url or not task.callback_token:
        return None
    return public_url + CALLBACK_PATH.format(task_id=task.id, token=task.callback_token)


class CallbackServer:
    """Listens for the provider's notices and wakes the task each one names."""

    def __init__(self, store: TaskStore, wake: Callable[[int], None]) -> None:
        self.store = store
        self.wake = wake
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, port: int) -> bool:
        """Listen on `port` (0: any free port; `self.port` says which); whether it could.

        A port that can't be had (in use, or not allowed) is one error line for the operator;
        the engine then runs on without callbacks (polling finds every ending anyway).
        """
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(CALLBACK_PATH, self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "0.0.0.0", port)  # the provider calls in from outside
        try:
            await site.start()
        except OSError as error:
            await self.stop()
            log.error(
                "Can't listen for the provider's callbacks on port %d: %s. The bot runs on "
                "without callbacks (it polls). Hint: set CALLBACK_LISTEN_PORT to a free port.",
                port,
                why_not_listening(error, "CALLBACK_LISTEN_PORT"),
            )
            return False
        addresses = self._runner.addresses
        if addresses:
            self.port = addresses[0][1]
        log.info("Callback listener on port %s", self.port)
        return True

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.Response:
        """A provider notice: check the token, validate the body, then look at the task now."""
        not_found = web.json_response({"error": "not found"}, status=404)
        try:
            task_id = int(request.match_info["task_id"])
        except ValueError:
            return not_found
        task = await self.store.get(task_id)
        token = request.match_info["token"].encode()
        expected = (task.callback_token or "").encode() if task else b""
        if task is None or not expected or not hmac.compare_digest(token, expected):
            return not_found
        try:
            body = await request.json()
            remote = KlingTask.model_validate(body)
        except (ValueError, TypeError, RecursionError):  # RecursionError: JSON nested too deep
            return web.json_response({"error": "invalid body"}, status=400)
        if task.kling_task_id is not None and remote.task_id != task.kling_task_id:
            return web.json_response({"error": "task id does not match"}, status=400)
        if not task.is_terminal:
            self.wake(task.id)  # confirmed by a query, never trusted as is
        return web.json_response({"ok": True})
