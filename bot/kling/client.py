"""`KlingClient`: submit and query multi-image-to-video tasks through CometAPI.

Queries are retried on anything time can fix. A submit is never blindly repeated: when its
outcome is unknown (time-out, dropped connection, 5xx, junk answer) the client looks the
task up by its `external_task_id` first (the engine sends a task again at most once, and only
when the API clearly never got it), so one press can never create two paid tasks.

Every answer ends as a `KlingTask` or as one of the errors in `bot.kling.errors`, whatever
the peer sends: the body is read whole however it arrives (in pieces, chunked, gzip, with or
without a length) up to `MAX_BODY_BYTES`, JSON nested deeper than `MAX_JSON_DEPTH` is refused,
and a `Retry-After` that is neither seconds nor a valid date is ignored.

Each request is measured: the time to a whole answer (route `submit` or `query`) and every
error by its class name go to the `MetricsRecorder` (nothing, when metrics are off).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import aiohttp
from pydantic import SecretStr, ValidationError

from bot.config import Settings
from bot.kling.errors import (
    ApiTimeoutError,
    BaseUrlError,
    InvalidRequestError,
    KlingError,
    MalformedResponseError,
    RateLimitedError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskNotFoundError,
    TransientError,
    error_for,
    parse_error_body,
)
from bot.kling.models import Envelope, KlingTask, MultiImageRequest
from bot.kling.ratelimit import RateLimiter
from bot.metrics import MetricsRecorder, NullMetrics

log = logging.getLogger(__name__)

ROUTE = "/kling/v1/videos/multi-image2video"
MAX_BODY_BYTES = 2 * 1024 * 1024  # a task answer is a few kB; more is refused unread
MAX_JSON_DEPTH = 32  # an answer is 4 levels deep; far deeper is junk (or an attack)
READ_CHUNK = 64 * 1024
MAX_RETRY_AFTER = 120.0
DUPLICATE_VALUE_CODE = 1201  # "invalid key or value", also what a reused external id gets


@dataclass(frozen=True)
class ClientTimeouts:
    """Per-request time-outs in seconds."""

    connect: float = 10.0
    submit: float = 60.0
    query: float = 20.0


class KlingClient:
    """The CometAPI Kling multi-image-to-video API over one shared `aiohttp.ClientSession`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: SecretStr | str,
        timeouts: ClientTimeouts | None = None,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        limiter: RateLimiter | None = None,  # spaces every request of the process
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self._session = session
        self.metrics = metrics or NullMetrics()
        self.base_url = base_url.rstrip("/")
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.timeouts = timeouts or ClientTimeouts()
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.limiter = limiter
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        limiter: RateLimiter | None = None,
        metrics: MetricsRecorder | None = None,
    ) -> KlingClient:
        """Build the client the bot uses, from its settings."""
        return cls(
            session,
            base_url=settings.cometapi_base_url,
            api_key=settings.cometapi_key,
            timeouts=ClientTimeouts(
                connect=settings.api_connect_timeout_seconds,
                submit=settings.api_submit_timeout_seconds,
                query=settings.api_query_timeout_seconds,
            ),
            max_retries=settings.api_max_retries,
            limiter=limiter,
            metrics=metrics,
        )

    # --- public API -------------------------------------------------------------------

    async def submit_multi_image(
        self, request: MultiImageRequest, *, may_resend: bool = True, is_resend: bool = False
    ) -> KlingTask:
        """Create a task; on an ambiguous failure, find it by external id before re-sending.

        The request is sent again at most once, and only after a clear "not found" (never with
        `may_resend=False`); `is_resend` says the caller already sent it once. Raises a `UserFixableError` or `OperatorError` when the API refused
        the task, `ConcurrencyLimitError` when the account runs too many tasks (queue and retry
        later), and `SubmitOutcomeUnknownError` when it can't tell whether the task was created.
        """
        resent = False
        attempt = 0
        while True:
            try:
                return await self._request_task("POST", ROUTE, request.to_body(), submit=True)
            except _NotSent as error:
                # The connection never opened: nothing reached the API, so sending is safe.
                attempt += 1
                if attempt > self.max_retries:
                    raise error.cause from None
                await self._backoff(attempt, error.cause)
            except RateLimitedError as error:
                # A clear refusal before acceptance (1302 or a bare 429): slower, then again.
                attempt += 1
                if attempt > self.max_retries:
                    raise
                await self._backoff(attempt, error)
            except InvalidRequestError as error:
                if (resent or is_resend) and error.code == DUPLICATE_VALUE_CODE:
                    # Refused as a duplicate on the resend: the first one did create it.
                    raise SubmitOutcomeUnknownError(
                        f"the resend was refused as a duplicate ({error})", resent=True
                    ) from None
                raise
            except _Ambiguous as error:
                if request.external_task_id is None:
                    raise SubmitOutcomeUnknownError(str(error.cause), resent=resent) from None
                log.warning(
                    "Submit of %s ended ambiguously (%s); looking it up before anything else",
                    request.external_task_id,
                    error.cause,
                )
                try:
                    found = await self.find_by_external_id(request.external_task_id)
                except KlingError as lookup_error:
                    raise SubmitOutcomeUnknownError(
                        f"submit failed ({error.cause}); lookup failed ({lookup_error})",
                        resent=resent,
                    ) from None
                if found is not None:
                    return found
                if resent or not may_resend:
                    raise SubmitOutcomeUnknownError(
                        f"submit failed without creating the task ({error.cause})", resent=resent
                    ) from None
                resent = True

    async def get_task(self, task_id: str) -> KlingTask:
        """Query a task by its Kling id (or external id), retrying what time can fix."""
        attempt = 0
        while True:
            try:
                return await self._request_task("GET", f"{ROUTE}/{task_id}", None, submit=False)
            except (_NotSent, _Ambiguous) as wrapped:
                error: KlingError = wrapped.cause
            except TransientError as transient:
                error = transient
            attempt += 1
            if attempt > self.max_retries:
                raise error
            await self._backoff(attempt, error)

    async def find_by_external_id(self, external_task_id: str) -> KlingTask | None:
        """The task created with this external id, or None when the API clearly has none."""
        try:
            task = await self.get_task(external_task_id)
        except TaskNotFoundError:
            return None
        echoed = task.task_info.external_task_id
        if echoed is not None and echoed != external_task_id:
            raise MalformedResponseError(
                f"lookup of {external_task_id} answered task {task.task_id} of {echoed}"
            )
        return task

    # --- plumbing ---------------------------------------------------------------------

    async def _request_task(
        self, method: str, path: str, body: dict[str, Any] | None, *, submit: bool
    ) -> KlingTask:
        """One request, measured: its answer time (once an answer came) and its error's kind."""
        if self.limiter is not None:
            await self.limiter.acquire()
        started = time.monotonic()
        try:
            status, raw, retry_after = await self._exchange(method, path, body, submit=submit)
        except (_NotSent, _Ambiguous) as error:
            self.metrics.count_error(error.cause)
            raise
        self.metrics.observe_answer(time.monotonic() - started, "submit" if submit else "query")
        try:
            return self._parse(status, raw, retry_after, lookup=not submit)
        except (_NotSent, _Ambiguous) as error:
            self.metrics.count_error(error.cause)
            raise
        except KlingError as error:
            self.metrics.count_error(error)
            raise

    async def _exchange(
        self, method: str, path: str, body: dict[str, Any] | None, *, submit: bool
    ) -> tuple[int, bytes | None, float | None]:
        """Send the request; its status, its body (None when over the cap), its Retry-After."""
        total = self.timeouts.submit if submit else self.timeouts.query
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=self.timeouts.connect)
        headers = {
            "Authorization": f"Bearer {self._key.get_secret_value()}",
            "Accept": "application/json",
        }
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                json=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                retry_after_header = response.headers.get("Retry-After")
                raw = await _read_body(response)
        except aiohttp.ClientConnectorError as error:
            raise _NotSent(ApiTimeoutError(f"can't connect to {self.base_url}: {error}")) from None
        except TimeoutError:
            raise _Ambiguous(ApiTimeoutError(f"no answer within {total:g} s")) from None
        except aiohttp.ClientError as error:
            raise _Ambiguous(
                ApiTimeoutError(f"connection failed: {type(error).__name__}")
            ) from None
        return status, raw, _retry_after(retry_after_header)

    def _parse(
        self, status: int, raw: bytes | None, retry_after: float | None, *, lookup: bool
    ) -> KlingTask:
        """Turn one answer into its task or its error; `raw` is None for a body over the cap."""
        if raw is None:
            payload: Any = None
            unreadable = f"a body over the {MAX_BODY_BYTES:,}-byte cap (refused unread)"
        else:
            key = self._key.get_secret_value().encode()
            if key:
                raw = raw.replace(key, b"***")  # an echo of the key must never reach a log
            payload, unreadable = _decode_json(raw)
        if status != 200 or (isinstance(payload, dict) and payload.get("code") not in (0, None)):
            if status == 404 and (not lookup or not isinstance(payload, dict)):
                # Not an answer about a task: the route itself isn't there.
                raise BaseUrlError(f"HTTP 404 at {self.base_url}{ROUTE}", http_status=404)
            if lookup and status == 404:
                code, message, request_id = parse_error_body(payload)
                raise TaskNotFoundError(
                    message or "not found", code=code, http_status=404, request_id=request_id
                )
            error = error_for(status, payload, retry_after=retry_after)
            if isinstance(error, (ServiceUnavailableError, MalformedResponseError)):
                raise _Ambiguous(error)
            raise error
        if payload is None:
            raise _Ambiguous(MalformedResponseError(f"HTTP {status} with {unreadable}"))
        try:
            envelope = Envelope.model_validate(payload)
        except ValidationError as error:
            raise _Ambiguous(
                MalformedResponseError(f"unexpected answer: {error.error_count()} problems")
            ) from None
        if envelope.data is None:
            raise _Ambiguous(MalformedResponseError("answer without data"))
        return envelope.data

    async def _backoff(self, attempt: int, error: KlingError) -> None:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        delay += random.uniform(0, self.backoff_base)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        log.info("Kling API: %s; retry %d in %.1f s", error, attempt, delay)
        await self._sleep(delay)


class _Ambiguous(Exception):
    """The request may have reached the API; `cause` is the error to report."""

    def __init__(self, cause: KlingError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _NotSent(Exception):
    """The request never reached the API."""

    def __init__(self, cause: KlingError) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _read_body(response: aiohttp.ClientResponse) -> bytes | None:
    """The whole body, however it arrives; None when it is larger than `MAX_BODY_BYTES`.

    One `read(n)` returns only what has arrived so far, so the body is read to its end:
    in pieces, chunked or not, with or without a Content-Length, decompressed by aiohttp
    when it came gzipped (the cap counts the decompressed bytes).
    """
    declared = response.content_length
    if declared is not None and declared > MAX_BODY_BYTES and not _encoded(response):
        return None
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _encoded(response: aiohttp.ClientResponse) -> bool:
    """Whether the body came compressed (its Content-Length counts the compressed bytes)."""
    return response.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


def _decode_json(raw: bytes) -> tuple[Any, str]:
    """The JSON value of a body, or None and what was wrong with it."""
    try:
        payload = json.loads(raw)
    except RecursionError:  # json's decoder recurses once per level
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError:  # not JSON, not UTF-8, an integer too long to convert
        return None, "a body that isn't JSON"
    if _deeper_than(payload, MAX_JSON_DEPTH):
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    return payload, ""


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` levels (walked without recursion)."""
    stack: list[tuple[dict[str, Any] | list[Any], int]] = []
    if isinstance(value, (dict, list)):
        stack.append((value, 1))
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped.

    Anything else (`soon`, a malformed date, a year past 9999, `nan`) means no hint.
    """
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value.strip())
            if parsed.tzinfo is None:  # "-0000": a UTC time whose zone is unknown
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))
