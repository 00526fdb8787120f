"""The gateway: websocket sessions, IDENTIFY/RESUME, and events routed to shards.

Several sessions may be connected at once (one per shard, from one or several processes).
As on Discord, a session identified with ``shard: [k, n]`` gets a guild's events only when
``(guild_id >> 22) % n == k`` (its READY lists, and GUILD_CREATE is sent for, those guilds
only); events without a guild (DMs) go to shard 0 only. A session without ``shard`` is
shard 0 of 1 and gets everything.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord import payloads
from tests.fakes.discord.constants import (
    CLOSE_ALREADY_AUTHENTICATED,
    CLOSE_AUTHENTICATION_FAILED,
    CLOSE_DECODE_ERROR,
    CLOSE_DISALLOWED_INTENTS,
    CLOSE_INVALID_INTENTS,
    CLOSE_INVALID_SHARD,
    CLOSE_SHARDING_REQUIRED,
    CLOSE_UNKNOWN_OPCODE,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE,
    OP_RESUME,
    PRIVILEGED_INTENTS,
)
from tests.fakes.discord.session import GatewaySession
from tests.fakes.discord.snowflakes import shard_for
from tests.fakes.discord.state import DiscordState


def _valid_shard(shard: Any) -> bool:
    """``[shard_id, shard_count]`` with ``0 <= shard_id < shard_count``."""
    return (
        isinstance(shard, list)
        and len(shard) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
        and 0 <= shard[0] < shard[1]
    )


class Gateway:
    """Serves ``/gateway`` websockets and sends events to the sessions that should get them."""

    def __init__(self, state: DiscordState) -> None:
        self.state = state
        # Sessions with a connection, or without one but resumable (replaced on RESUME).
        self.live: list[GatewaySession] = []
        self._closed_by_fake: set[int] = set()

    # ------------------------------------------------------------------ sending

    def routes_to(self, session: GatewaySession, guild_id: str | None) -> bool:
        """Whether an event of ``guild_id`` (None: no guild) goes to ``session``."""
        if guild_id is None:
            return session.shard_id == 0
        return session.handles(guild_id)

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        intent: int | None = None,
        *,
        guild_id: str | None = None,
    ) -> tuple[int, list[GatewaySession]]:
        """Send a DISPATCH to every identified session of the event's shard (and ``intent``).

        The guild is ``guild_id``, else ``data["guild_id"]``. Sessions that are disconnected
        but resumable only buffer it (replayed on RESUME, as Discord does). Returns how many
        open connections it was sent over, and every session it went to.
        """
        gid = guild_id if guild_id is not None else data.get("guild_id")
        gid = str(gid) if gid else None
        sent = 0
        reached: list[GatewaySession] = []
        for session in list(self.live):
            if not session.ready or not self.routes_to(session, gid):
                continue
            if intent is not None and not (session.intents or 0) & intent:
                continue
            was_open = session.open
            await self.send_event(session, event, data)
            sent += was_open
            reached.append(session)
        await self.state.notify()
        return sent, reached

    async def dispatch_message_create(self, message: dict[str, Any]) -> None:
        """MESSAGE_CREATE for a stored message the bot posted (with its member in a guild)."""
        guild_id = message.get("guild_id")
        intent = INTENT_GUILD_MESSAGES if guild_id else INTENT_DIRECT_MESSAGES
        data = dict(message)
        if guild_id:
            member = payloads.member_payload(
                self.state.bot_user, [self.state.bot_role_of(guild_id)]
            )
            data["member"] = {k: v for k, v in member.items() if k != "user"}
        await self.dispatch("MESSAGE_CREATE", data, intent)

    async def send_event(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        """Send one DISPATCH to one session (buffered for replay on RESUME)."""
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.buffer = [*session.buffer[-499:], payload]
        session.events.append(payload)
        self.state.gateway_sent.append(payload)
        await session.send(payload)

    # ------------------------------------------------------------------ connections

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """Handle one websocket: HELLO, then the client's payloads until it closes."""
        state = self.state
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress")
        compress = compress if compress == "zlib-stream" else None  # else: plain text frames
        session = GatewaySession(ws, compress)
        self.live.append(session)
        try:
            hello = {"heartbeat_interval": state.heartbeat_interval_ms}
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
                    await self.close(session, CLOSE_DECODE_ERROR, "Error while decoding payload.")
                    break
                state.gateway_received.append(payload)
                session = await self._op(session, payload)
                if ws.closed:
                    break
        finally:
            if session.ws is ws:
                session.ws = None
                # A clean close by the client (1000/1001) ends the session, as on Discord;
                # otherwise it stays resumable (unless resumes are disabled).
                clean = ws.close_code in (1000, 1001) and id(ws) not in self._closed_by_fake
                if not session.ready or clean or not state.resume_supported:
                    self.forget(session)
            await state.notify()
        return ws

    def forget(self, session: GatewaySession) -> None:
        """End a session: it gets no more events and cannot be resumed."""
        session.ready = False
        if session in self.live:
            self.live.remove(session)

    async def close(self, session: GatewaySession, code: int, reason: str) -> None:
        """Close the session's websocket with ``code`` (recorded in ``gateway_closes``)."""
        self.state.gateway_closes.append(code)
        if session.ws is not None:
            self._closed_by_fake.add(id(session.ws))
            await session.ws.close(code=code, message=reason.encode())

    async def close_all(self) -> None:
        """Close every websocket as a server going away (1001)."""
        for session in list(self.live):
            if session.ws is not None:
                with contextlib.suppress(Exception):
                    await session.ws.close(code=1001)

    async def _op(self, session: GatewaySession, payload: dict[str, Any]) -> GatewaySession:
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
            await self.close(session, CLOSE_UNKNOWN_OPCODE, "Unknown opcode.")
        return session

    async def _resume(self, conn: GatewaySession, data: dict[str, Any]) -> GatewaySession:
        state = self.state
        state.resume_attempts += 1
        await state.notify()
        if data.get("token") != state.token:
            await self.close(conn, CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return conn
        old = next(
            (s for s in self.live if s.ready and s.session_id == data.get("session_id")),
            None,
        )
        if old is None or old.open or not state.resume_supported:
            await conn.send({"op": OP_INVALID_SESSION, "s": None, "t": None, "d": False})
            return conn
        self.forget(conn)
        old.take_over(conn)
        seq = int(data.get("seq") or 0)
        for missed in old.buffer:
            if missed["s"] > seq:
                await old.send(missed)
        await self.send_event(old, "RESUMED", {"_trace": ["fake-discord"]})
        state.resumes += 1
        await state.notify()
        return old

    async def _identify(self, session: GatewaySession, data: dict[str, Any]) -> None:
        state = self.state
        recorded = {k: v for k, v in data.items() if k != "token"}
        recorded["token_ok"] = data.get("token") == state.token
        state.identifies.append(recorded)
        await state.notify()
        if session.ready:
            await self.close(session, CLOSE_ALREADY_AUTHENTICATED, "Already authenticated.")
            return
        if data.get("token") != state.token:
            await self.close(session, CLOSE_AUTHENTICATION_FAILED, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0:
            await self.close(session, CLOSE_INVALID_INTENTS, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~state.privileged_intents_enabled:
            await self.close(session, CLOSE_DISALLOWED_INTENTS, "Disallowed intent(s).")
            return
        shard = data.get("shard")
        if shard is not None and not _valid_shard(shard):
            await self.close(session, CLOSE_INVALID_SHARD, "Invalid shard.")
            return
        shard_id, shard_count = shard if shard is not None else (0, 1)
        carried = [gid for gid in state.guilds if shard_for(gid, shard_count) == shard_id]
        if len(carried) > state.max_guilds_per_shard:
            await self.close(session, CLOSE_SHARDING_REQUIRED, "Sharding required.")
            return
        session.intents = intents
        session.shard = (shard_id, shard_count) if shard is not None else None
        session.ready = True
        session.number = len(state.sessions)
        state.sessions.append(session)
        ready = {
            "v": 10,
            "user": state.bot_user,
            "guilds": [{"id": gid, "unavailable": True} for gid in carried],
            "session_id": session.session_id,
            "resume_gateway_url": state.gateway_url,
            "shard": data.get("shard", [0, 1]),
            "application": {"id": state.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "guild_join_requests": [],
            "_trace": ["fake-discord"],
        }
        await self.send_event(session, "READY", ready)
        for gid in carried:
            if intents & INTENT_GUILDS:
                await self.send_event(session, "GUILD_CREATE", state.guild_create_payload(gid))
        state.ready_count += 1
        await state.notify()

    # ------------------------------------------------------------------ test controls

    async def drop(self, code: int, shard_id: int | None) -> None:
        """Close every open connection (of ``shard_id`` only, if given) with ``code``."""
        for session in list(self.live):
            if session.open and (shard_id is None or session.shard_id == shard_id):
                await self.close(session, code, "dropped by test")

    def invalidate(self) -> None:
        """Forget every session: the next RESUME gets INVALID_SESSION, forcing an IDENTIFY."""
        for session in list(self.live):
            if not session.open:
                self.forget(session)
            session.session_id = "invalidated-" + session.session_id

    def has_session_for(self, guild_id: str | None) -> bool:
        """Whether an identified, open session would get events of ``guild_id``."""
        return any(s.ready and s.open and self.routes_to(s, guild_id) for s in self.live)

    @property
    def connected(self) -> bool:
        """Whether at least one identified gateway session is open."""
        return any(s.ready and s.open for s in self.live)
