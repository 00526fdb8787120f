"""One error taxonomy for the Kling API, sorted by who can fix the problem.

- The **user** can: invalid parameters (1200–1203), content policy (1300–1301).
- The **operator** can: authentication (1000–1004), account or balance (1100–1102),
  permission (1103), IP whitelist (1304).
- **Time** can: rate and concurrency limits (1302–1303), provider trouble (5000–5002),
  HTTP 429/5xx/524, time-outs, dropped connections and malformed bodies.

`str(error)` is for logs: it carries the code, HTTP status, request id and the provider's
message, never the key. `user_text` is for a Discord user: plain words, nothing raw.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

MAX_LOG_MESSAGE = 300


class Fixer(StrEnum):
    """Who can make the request succeed."""

    USER = "user"
    OPERATOR = "operator"
    TIME = "time"


class KlingError(Exception):
    """Base of every error the Kling client raises."""

    fixer: Fixer = Fixer.TIME
    kind: str = "unavailable"
    user_text: str = "The video service is having trouble right now. Please try again later."

    def __init__(
        self,
        message: str = "",
        *,
        code: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.api_message = _clip(message)
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [type(self).__name__]
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.request_id:
            parts.append(f"request {self.request_id}")
        text = ", ".join(parts)
        return f"{text}: {self.api_message}" if self.api_message else text


class UserFixableError(KlingError):
    """The request itself was refused; the person who sent it can change it."""

    fixer = Fixer.USER


class InvalidRequestError(UserFixableError):
    """Invalid parameters (1200–1203)."""

    kind = "invalid_request"
    user_text = (
        "The video service refused these settings or images. Please check them and try again."
    )


class ContentPolicyError(UserFixableError):
    """The prompt or images triggered the provider's content policy (1300–1301)."""

    kind = "content_policy"
    user_text = (
        "The video service refused this request under its content policy. "
        "Please change the prompt or the images."
    )


class OperatorError(KlingError):
    """A problem with the bot's account at the provider; only its operator can fix it."""

    fixer = Fixer.OPERATOR
    kind = "operator"
    hint = "check the bot's settings and the CometAPI account"
    user_text = (
        "The bot can't reach the video service with its current account. "
        "The bot's operator has been told; please try again later."
    )


class AuthenticationError(OperatorError):
    """The API key was refused (1000–1004, HTTP 401)."""

    hint = "check COMETAPI_KEY"


class AccountError(OperatorError):
    """The account is suspended, in arrears or out of balance (1100–1102)."""

    hint = "top up or check the CometAPI account"


class PermissionDeniedError(OperatorError):
    """The key may not use this API or model (1103, HTTP 403)."""

    hint = "check the key's permissions and KLING_MODEL"


class IpWhitelistError(OperatorError):
    """The provider's IP whitelist refused this machine (1304)."""

    hint = "allow this machine's IP address at the provider"


class BaseUrlError(OperatorError):
    """The API answered with a redirect or a page that is not the API."""

    hint = "check COMETAPI_BASE_URL (it should be https://api.cometapi.com)"


class TransientError(KlingError):
    """A problem that time fixes: try again later."""

    fixer = Fixer.TIME


class RateLimitedError(TransientError):
    """Too many requests (1302, or HTTP 429 without a code)."""

    kind = "busy"


class ConcurrencyLimitError(TransientError):
    """The account runs as many tasks as it may (1303); wait for one to finish."""

    kind = "busy"


class ServiceUnavailableError(TransientError):
    """The provider failed or is down (5000–5002, HTTP 5xx/524)."""


class ApiTimeoutError(TransientError):
    """No answer within the time-out, or the connection dropped."""


class MalformedResponseError(TransientError):
    """The answer was not the documented JSON."""


class SubmitOutcomeUnknownError(TransientError):
    """A submit may or may not have created a task; it must be looked up, never re-sent."""

    def __init__(self, message: str = "", *, resent: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.resent = resent  # the request was already sent a second time


class TaskNotFoundError(KlingError):
    """No task has this id (a clear "not found" from the API)."""

    fixer = Fixer.USER
    kind = "not_found"


_BY_CODE: dict[int, type[KlingError]] = {
    **dict.fromkeys(range(1000, 1005), AuthenticationError),
    **dict.fromkeys(range(1100, 1103), AccountError),
    1103: PermissionDeniedError,
    **dict.fromkeys(range(1200, 1204), InvalidRequestError),
    1300: ContentPolicyError,
    1301: ContentPolicyError,
    1302: RateLimitedError,
    1303: ConcurrencyLimitError,
    1304: IpWhitelistError,
    **dict.fromkeys(range(5000, 5003), ServiceUnavailableError),
}


def error_for(http_status: int, body: Any, *, retry_after: float | None = None) -> KlingError:
    """Build the error for a non-success answer: Kling's code first, then the HTTP status.

    Both documented bodies are understood: Kling's `{code, message, request_id}` and
    CometAPI's `{"error": {message, type, code}}`.
    """
    code, message, request_id = parse_error_body(body)
    kwargs: dict[str, Any] = {
        "code": code,
        "http_status": http_status,
        "request_id": request_id,
        "retry_after": retry_after,
    }
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code](message, **kwargs)
    if 300 <= http_status < 400:
        return BaseUrlError(message or f"HTTP {http_status} redirect", **kwargs)
    if http_status == 401:
        return AuthenticationError(message, **kwargs)
    if http_status == 403:
        return PermissionDeniedError(message, **kwargs)
    if http_status == 404:
        return TaskNotFoundError(message, **kwargs)
    if http_status == 429:
        return RateLimitedError(message, **kwargs)
    if http_status >= 500:
        return ServiceUnavailableError(message, **kwargs)
    if 400 <= http_status < 500:
        return InvalidRequestError(message, **kwargs)
    return MalformedResponseError(message or f"unexpected HTTP {http_status}", **kwargs)


def parse_error_body(body: Any) -> tuple[int | None, str, str | None]:
    """Return (Kling code, message, request id) from either error body, tolerating junk."""
    if not isinstance(body, dict):
        return None, "", None
    nested = body.get("error")
    if isinstance(nested, dict):
        message = str(nested.get("message") or "")
        return _as_int(nested.get("code")), message, _as_str(body.get("request_id"))
    return (
        _as_int(body.get("code")),
        str(body.get("message") or ""),
        _as_str(body.get("request_id")),
    )


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _as_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _clip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_LOG_MESSAGE else text[: MAX_LOG_MESSAGE - 1] + "…"
