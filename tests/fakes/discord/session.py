"""A gateway session: what it identified as, every event sent to it, the websocket carrying it."""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from typing import Any

from aiohttp import web

from tests.fakes.discord.snowflakes import shard_for


class GatewaySession:
    """One gateway session, as a test reads it, and the websocket currently carrying it.

    Tests read :attr:`number`, :attr:`shard`, :attr:`events` and the helpers below (which shard
    got which guild, interaction, message); ``tests/fakes/discord/gateway.py`` drives the rest.
    A session outlives its connection while it can be resumed (``ws`` is then ``None``).
    """

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        #: Its index in ``FakeDiscord.sessions`` once identified (``None`` before READY).
        self.number: int | None = None
        #: ``[shard_id, shard_count]`` from IDENTIFY; ``None`` when it did not shard.
        self.shard: tuple[int, int] | None = None
        self.intents: int | None = None
        self.session_id = secrets.token_hex(16)
        self.ready = False
        self.seq = 0
        self.ws: web.WebSocketResponse | None = None
        self.buffer: list[dict[str, Any]] = []  # the last DISPATCHes, replayed on RESUME
        #: Every DISPATCH sent to this session (or buffered while it was disconnected).
        self.events: list[dict[str, Any]] = []
        self._zlib: Any = None
        self.lock = asyncio.Lock()
        self.attach(ws, compress)

    def __repr__(self) -> str:
        return f"<GatewaySession #{self.number} shard={self.shard} ready={self.ready}>"

    # ------------------------------------------------------------------ what tests read

    @property
    def shard_id(self) -> int:
        """The shard this session carries (0 when it did not shard)."""
        return self.shard[0] if self.shard else 0

    @property
    def shard_count(self) -> int:
        """How many shards it said there are (1 when it did not shard)."""
        return self.shard[1] if self.shard else 1

    def handles(self, guild_id: str | int) -> bool:
        """Whether Discord routes this guild's events to this session's shard."""
        return shard_for(guild_id, self.shard_count) == self.shard_id

    def event_names(self) -> list[str]:
        """The names of the events sent to it, in order (``READY``, ``GUILD_CREATE``...)."""
        return [str(e["t"]) for e in self.events]

    def received(self, event: str) -> list[dict[str, Any]]:
        """The ``d`` of every ``event`` sent to it, in order."""
        return [e["d"] for e in self.events if e["t"] == event]

    def guild_ids(self) -> list[str]:
        """Ids of the guilds it got a GUILD_CREATE for."""
        return [str(d["id"]) for d in self.received("GUILD_CREATE")]

    def interaction_ids(self) -> list[str]:
        """Ids of the interactions it got an INTERACTION_CREATE for."""
        return [str(d["id"]) for d in self.received("INTERACTION_CREATE")]

    # ------------------------------------------------------------------ transport

    def attach(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        """Carry the session over ``ws`` (a fresh compression context per connection)."""
        self.ws = ws
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None

    def take_over(self, other: GatewaySession) -> None:
        """Continue on ``other``'s connection (RESUME), keeping its compression stream."""
        self.ws, self._zlib = other.ws, other._zlib
        other.ws = None

    @property
    def open(self) -> bool:
        """Whether a websocket carries this session now."""
        return self.ws is not None and not self.ws.closed

    async def send(self, payload: dict[str, Any]) -> None:
        """Send one payload over the current websocket (nothing while disconnected)."""
        text = json.dumps(payload)
        async with self.lock:
            if self.ws is None or self.ws.closed:
                return
            if self._zlib is not None:
                data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(text)
