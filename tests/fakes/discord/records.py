"""What the fake records: requests, uploads, violations, interactions and their callbacks."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tests.fakes.discord.session import GatewaySession


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


class Waitable(Protocol):
    """What an interaction handle needs from the fake: waiting, and stored messages."""

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy."""
        ...

    def message(self, message_id: str) -> dict[str, Any]:
        """A stored message by id."""
        ...


@dataclass
class FakeInteraction:
    """An interaction the fake dispatched; await :meth:`wait_callback` for the bot's answer."""

    fake: Waitable
    payload: dict[str, Any]
    dispatched_at: float
    ack_deadline: float
    token_ttl: float
    callback: InteractionCallback | None = None
    original_message_id: str | None = None
    followup_ids: list[str] = field(default_factory=list)
    #: The gateway sessions its INTERACTION_CREATE was sent to (open or buffered for RESUME).
    sessions: list[GatewaySession] = field(default_factory=list)

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
