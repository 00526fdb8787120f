"""Scripted faults: injected errors, late answers, and requests held until the test decides."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.discord.contract import error_response
from tests.fakes.discord.records import RecordedRequest
from tests.fakes.discord.state import DiscordState


@dataclass
class Fault:
    """A scripted answer for the next matching requests (see ``FakeDiscord.inject_error``)."""

    method: str
    pattern: re.Pattern[str]
    status: int
    body: Any
    times: int
    headers: dict[str, str]


@dataclass
class Delay:
    """A late answer for the next matching requests (see ``FakeDiscord.delay_next``)."""

    method: str
    pattern: re.Pattern[str]
    seconds: float
    times: int
    with_files: bool
    match: Callable[[RecordedRequest], bool] | None = None


@dataclass
class Hold:
    """Requests held by ``FakeDiscord.hold_next`` until the test releases or drops them."""

    method: str
    pattern: re.Pattern[str]
    times: int
    effect_first: bool
    match: Callable[[RecordedRequest], bool] | None
    held: list[RecordedRequest] = field(default_factory=list)
    gates: list[asyncio.Future[bool]] = field(default_factory=list)

    def release(self) -> None:
        """Let every held request go on (it takes effect now, if it hadn't yet)."""
        self._open(True)

    def drop(self) -> None:
        """Forget every held request: it never takes effect (and is never answered)."""
        self._open(False)

    def cancel(self) -> None:
        """Hold nothing more (what is held stays held)."""
        self.times = 0

    def _open(self, proceed: bool) -> None:
        self.times = 0
        for gate in self.gates:
            if not gate.done():
                gate.set_result(proceed)


class Faults:
    """The scripted faults of one fake, and how a request meets them."""

    def __init__(self, state: DiscordState) -> None:
        self.state = state
        self.faults: list[Fault] = []
        self.delays: list[Delay] = []
        self.holds: list[Hold] = []

    # ------------------------------------------------------------------ scripting

    def inject(
        self,
        method: str,
        path_pattern: str,
        status: int,
        body: Any,
        times: int,
        headers: dict[str, str],
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``/``body``."""
        self.faults.append(
            Fault(method.upper(), re.compile(path_pattern), status, body, times, headers)
        )

    def delay(
        self,
        method: str,
        path_pattern: str,
        seconds: float,
        times: int,
        with_files: bool,
        match: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests only after ``seconds``."""
        self.delays.append(
            Delay(method.upper(), re.compile(path_pattern), seconds, times, with_files, match)
        )

    def hold(
        self,
        method: str,
        path_pattern: str,
        times: int,
        effect_first: bool,
        match: Callable[[RecordedRequest], bool] | None,
    ) -> Hold:
        """Hold the next ``times`` matching requests until the test releases or drops them."""
        hold = Hold(method.upper(), re.compile(path_pattern), times, effect_first, match)
        self.holds.append(hold)
        return hold

    # ------------------------------------------------------------------ meeting a request

    def take_fault(self, rec: RecordedRequest) -> web.Response | None:
        """The injected answer for this request, if one is scripted (not a violation)."""
        for fault in self.faults:
            if fault.times > 0 and fault.method == rec.method and fault.pattern.search(rec.path):
                fault.times -= 1
                headers = {"Content-Type": "application/json", **fault.headers}
                body = b"" if fault.body is None else json.dumps(fault.body).encode()
                return web.Response(body=body, status=fault.status, headers=headers)
        return None

    def take_delay(self, rec: RecordedRequest) -> float:
        """Seconds to wait before answering this request (0: answer at once)."""
        for item in self.delays:
            if item.times > 0 and item.method == rec.method and item.pattern.search(rec.path):
                if item.with_files and not rec.files:
                    continue
                if item.match is not None and not item.match(rec):
                    continue
                item.times -= 1
                self.state.delayed.append(rec)
                return item.seconds
        return 0.0

    def take_hold(self, rec: RecordedRequest, *, effect_first: bool) -> Hold | None:
        """The hold this request falls into (before or after taking effect), if any."""
        for hold in self.holds:
            if (
                hold.times > 0
                and hold.effect_first == effect_first
                and hold.method == rec.method
                and hold.pattern.search(rec.path)
                and (hold.match is None or hold.match(rec))
            ):
                hold.times -= 1
                return hold
        return None

    async def wait_hold(self, hold: Hold, rec: RecordedRequest) -> bool:
        """Wait until the test releases (True) or drops (False) a held request."""
        gate: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        hold.held.append(rec)
        hold.gates.append(gate)
        await self.state.notify()
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self.state.stopping.wait())
        try:
            waiters: set[asyncio.Future[Any]] = {gate, stopping}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        return gate.done() and gate.result()

    async def sleep_delay(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the fake stops meanwhile."""
        # Interruptible, so stopping the fake never waits for a late answer.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.state.stopping.wait(), seconds)

    @staticmethod
    def drop(rec: RecordedRequest) -> web.Response:
        """Mark a held request dropped; the answer the (gone) client would get."""
        rec.dropped = True
        return error_response(503, 0, "dropped by the test (the client is gone)")
