"""A hostile HTTP peer for the Kling client: it answers exactly the bytes a test scripts.

`RawAnswer` is one answer as it goes on the wire: any status, any headers, any body, framed
by a Content-Length (true or lying), chunked, or by closing the connection, optionally
gzipped, and cut into writes with pauses between them. `HostileServer` serves it to every
request on loopback. `ClientHarness` runs the server, an aiohttp session and a `KlingClient`
on a private event loop, so hypothesis can drive it from a plain (sync) test or a benchmark.
The strategies at the end generate answers: `raw_answers()` anything a peer could send,
`valid_answers()` a well-formed task answer framed and cut in every way.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import hypothesis
from hypothesis import strategies as st

from bot.kling.client import MAX_BODY_BYTES, ClientTimeouts, KlingClient
from bot.kling.errors import KlingError
from bot.kling.models import ImageItem, KlingTask, MultiImageRequest

Framing = Literal["length", "chunked", "close", "short", "long"]
KEY = "sk-hostile-peer-test-key-0123456789"


@dataclass(frozen=True)
class RawAnswer:
    """One HTTP answer, byte for byte, and how it is cut into writes."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    body: bytes = b""
    framing: Framing = "length"
    gzip: bool = False
    chunk_sizes: tuple[int, ...] = ()  # chunked framing: the sizes of the chunks, cycled
    cuts: tuple[int, ...] = ()  # offsets in the whole answer where one write ends
    delays: tuple[float, ...] = ()  # pause after each write, cycled
    version: str = "HTTP/1.1"

    def wire(self) -> bytes:
        """The answer as it goes on the wire: status line, headers, framed body."""
        payload = gzip.compress(self.body, compresslevel=1) if self.gzip else self.body
        lines = [f"{self.version} {self.status} Whatever"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.gzip:
            lines.append("Content-Encoding: gzip")
        if self.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
            payload = _chunk(payload, self.chunk_sizes or (len(payload) or 1,))
        elif self.framing == "length":
            lines.append(f"Content-Length: {len(payload)}")
        elif self.framing == "short":
            lines.append(f"Content-Length: {max(0, len(payload) - 7)}")
        elif self.framing == "long":
            lines.append(f"Content-Length: {len(payload) + 7}")
        lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        return head + payload

    def writes(self) -> list[bytes]:
        """The wire bytes cut at `cuts`."""
        wire = self.wire()
        edges = [0, *sorted({c % (len(wire) + 1) for c in self.cuts}), len(wire)]
        return [wire[a:b] for a, b in itertools.pairwise(edges) if b > a]


def _chunk(payload: bytes, sizes: Sequence[int]) -> bytes:
    """`payload` in chunked transfer-encoding, chunk sizes taken from `sizes` in turn."""
    out = bytearray()
    position = 0
    for size in itertools.cycle(sizes):
        if position >= len(payload):
            break
        piece = payload[position : position + max(1, size)]
        position += len(piece)
        out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    out += b"0\r\n\r\n"
    return bytes(out)


@dataclass
class HostileServer:
    """Serves `answer` to every request on 127.0.0.1, one answer per connection."""

    answer: RawAnswer = field(default_factory=RawAnswer)
    requests: int = 0

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, and stop answering (a client that gave up leaves a write pending)."""
        if self._server is not None:
            self._server.close()
        for serving in list(self._serving):
            serving.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        """The base URL to give the client."""
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        assert current is not None
        self._serving.add(current)
        current.add_done_callback(self._serving.discard)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            await reader.readexactly(length)
            self.requests += 1
            answer = self.answer
            delays = answer.delays or (0.0,)
            for piece, delay in zip(answer.writes(), itertools.cycle(delays), strict=False):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(delay)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:  # stop(): the client gave up on this answer long ago
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def _no_sleep(_: float) -> None:
    """The client's back-off, skipped."""


def submit_request() -> MultiImageRequest:
    """A valid submit (the hostile server never looks at it)."""
    image = ImageItem(image="aGVsbG8=")
    return MultiImageRequest(
        image_list=[image, image], prompt="a cat walks", external_task_id="ext-hostile"
    )


Operation = Literal["query", "submit"]


class ClientHarness:
    """A hostile server, a session and a client on a private event loop (for sync callers)."""

    def __init__(self, *, seconds: float = 2.0) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = HostileServer()
        self.seconds = seconds

    def __enter__(self) -> ClientHarness:
        self.loop.run_until_complete(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run_until_complete(self._stop())
        self.loop.close()

    async def _start(self) -> None:
        await self.server.start()
        # One connection per request: the server closes after each answer.
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        seconds = self.seconds
        self.client = KlingClient(
            self.session,
            base_url=self.server.url,
            api_key=KEY,
            timeouts=ClientTimeouts(connect=seconds, submit=seconds, query=seconds),
            max_retries=0,
            sleep=_no_sleep,
        )

    async def _stop(self) -> None:
        await self.session.close()
        await self.server.stop()

    def ask(self, answer: RawAnswer, operation: Operation = "query") -> KlingTask | Exception:
        """What the client makes of `answer`: the task, or the exception it raised."""
        self.server.answer = answer
        call = (
            self.client.get_task("861309198188019719")
            if operation == "query"
            else self.client.submit_multi_image(submit_request())
        )
        try:
            return self.loop.run_until_complete(call)
        except Exception as error:  # what the caller classifies: ours or foreign
            return error


def is_foreign(outcome: KlingTask | Exception) -> bool:
    """Whether an outcome is neither a task nor one of the client's own errors."""
    return not isinstance(outcome, (KlingTask, KlingError))


# --- strategies ------------------------------------------------------------------------------

HOSTILE_HEADER_VALUES = [
    "soon",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "Fri, 31 Dec 99999 23:59:59 GMT",
    "Mon, 32 Foo 2024 25:61:61 GMT",
    "Tue, 01 Jan 0001 00:00:00 -0000",
    "nan",
    "inf",
    "-inf",
    "-5",
    "1e309",
    "99999999999999999999999",
    "0",
    "3",
    "",
    " ",
    "gzip",
    "deflate",
    "br",
    "identity",
    "x-unknown",
    "application/json",
    "application/json; charset=latin-1",
    "text/html",
    "application/json; charset=does-not-exist",
    "\xff\xfe",
]
HEADER_NAMES = [
    "Retry-After",
    "Content-Type",
    "Content-Encoding",
    "Content-Length",
    "Transfer-Encoding",
    "Location",
    "Set-Cookie",
    "Date",
    "Vary",
    "X-Request-Id",
    "Connection",
]
STATUSES = [200, 200, 200, 200, 201, 204, 301, 302, 400, 401, 403, 404, 429, 500, 502, 503, 524]
KNOWN_STATUS_WORDS = ["submitted", "processing", "succeed", "failed", "SUCCEEDED", "error", "?"]

header_values = st.one_of(
    st.sampled_from(HOSTILE_HEADER_VALUES),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60),
)
headers = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(HEADER_NAMES), st.from_regex(r"X-[A-Za-z]{1,8}", fullmatch=True)),
        header_values,
    ),
    max_size=5,
).map(tuple)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

hostile_urls = st.one_of(
    st.sampled_from(
        [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "12345",
            "not a url",
            "http://",
            "https:///nohost",
            "http://[::1",
            "ftp://x.org/v.mp4",
            "https://cdn.example.org/v.mp4",
            "HTTPS://CDN.EXAMPLE.ORG/V.MP4",
            " https://cdn.example.org/v.mp4 ",
            "https://cdn.example.org/" + "a" * 3000,
        ]
    ),
    st.text(max_size=40),
    st.integers(),
    st.none(),
)
videos = st.lists(
    st.fixed_dictionaries(
        {"url": hostile_urls},
        optional={
            "id": json_values,
            "duration": st.one_of(
                st.sampled_from(["-5", "NaN", "inf", "0", "5.1", "10", ""]), json_values
            ),
        },
    ),
    max_size=3,
)
task_data = st.fixed_dictionaries(
    {},
    optional={
        "task_id": st.one_of(st.text(max_size=20), st.integers(), json_values),
        "task_status": st.one_of(st.sampled_from(KNOWN_STATUS_WORDS), json_values),
        "task_status_msg": json_values,
        "task_info": st.one_of(
            st.fixed_dictionaries({}, optional={"external_task_id": json_values}), json_values
        ),
        "task_result": st.one_of(
            st.fixed_dictionaries({}, optional={"videos": st.one_of(videos, json_values)}),
            json_values,
        ),
        "created_at": json_values,
    },
)
# A task answer that is right where it matters (so many of them end as a task) and odd elsewhere.
nearly_valid = st.fixed_dictionaries(
    {
        "code": st.sampled_from([0, 0, None]),
        "data": st.fixed_dictionaries(
            {
                "task_id": st.one_of(st.text(min_size=1, max_size=20), st.integers()),
                "task_status": st.sampled_from(KNOWN_STATUS_WORDS),
            },
            optional={
                "task_status_msg": st.one_of(st.none(), st.text(max_size=40)),
                "task_info": st.fixed_dictionaries(
                    {}, optional={"external_task_id": st.sampled_from(["ext-hostile", "other"])}
                ),
                "task_result": st.fixed_dictionaries({}, optional={"videos": videos}),
                "created_at": st.integers(0, 2**62),
                "final_unit_deduction": json_values,
            },
        ),
    },
    optional={"message": st.text(max_size=20), "request_id": st.text(max_size=20)},
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": st.one_of(st.sampled_from([0, "0", 1201, 1301, 1302, 1303, 5000, -1]), json_values),
        "message": json_values,
        "request_id": json_values,
        "data": st.one_of(task_data, json_values),
        "error": st.one_of(
            st.fixed_dictionaries({}, optional={"message": json_values, "code": json_values}),
            json_values,
        ),
    },
)


def _dump(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _nested(opening: int, closing: int) -> bytes:
    return b"[" * opening + b"]" * closing


def _oversized(extra: int) -> bytes:
    head = b'{"code": 0, "data": {"task_id": "1"}, "pad": "'
    return head + b"x" * (MAX_BODY_BYTES - len(head) - 2 + extra) + b'"}'


bodies = st.one_of(
    nearly_valid.map(_dump),
    nearly_valid.map(_dump),
    envelopes.map(_dump),
    json_values.map(_dump),
    st.binary(max_size=300),
    st.builds(_nested, st.integers(0, 200_000), st.integers(0, 200_000)),
    st.builds(_oversized, st.integers(-2, 2)),
    envelopes.map(lambda value: json.dumps(value).encode("utf-16")),
    envelopes.map(lambda value: b"\xef\xbb\xbf" + _dump(value)),
)
cuts = st.lists(st.integers(min_value=0, max_value=4_000_000), max_size=6).map(tuple)
delays = st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.005]), max_size=3).map(tuple)
chunk_sizes = st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=4).map(
    tuple
)


@st.composite
def raw_answers(draw: st.DrawFn) -> RawAnswer:
    """Anything a peer could answer: status, headers, body, framing, gzip, writes."""
    return RawAnswer(
        status=draw(st.one_of(st.just(200), st.sampled_from(STATUSES), st.integers(100, 999))),
        headers=draw(headers),
        body=draw(bodies),
        framing=draw(st.sampled_from(["length", "length", "chunked", "close", "short", "long"])),
        gzip=draw(st.booleans()),
        chunk_sizes=draw(chunk_sizes),
        cuts=draw(cuts),
        delays=draw(delays),
        version=draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])),
    )


def task_answer(task_id: str, padding: int) -> bytes:
    """A well-formed answer for a running task, made `padding` bytes longer by an extra field."""
    data = {"task_id": task_id, "task_status": "processing", "task_result": {}}
    return _dump({"code": 0, "message": "SUCCEED", "data": data, "padding": "p" * padding})


@st.composite
def valid_answers(draw: st.DrawFn) -> tuple[str, RawAnswer]:
    """A well-formed task answer of 100 B to 1.5 MB, framed, compressed and cut any way."""
    task_id = draw(st.from_regex(r"[0-9]{6,19}", fullmatch=True))
    padding = draw(
        st.one_of(st.integers(0, 4096), st.integers(4096, 300_000), st.integers(300_000, 1_500_000))
    )
    # Tiny chunks only for small bodies: a megabyte in 1-byte chunks is a slow-drip attack
    # (raw_answers has those; they end as a time-out), not a valid answer.
    smallest_chunk = 1 if padding < 16_384 else 512
    answer = RawAnswer(
        headers=draw(
            st.sampled_from(
                [
                    (("Content-Type", "application/json"),),
                    (
                        ("Content-Type", "application/json; charset=UTF-8"),
                        ("Vary", "Accept-Encoding"),
                    ),
                    (("content-type", "text/plain"), ("Retry-After", "soon")),
                    (),
                ]
            )
        ),
        body=task_answer(task_id, padding),
        framing=draw(st.sampled_from(["length", "chunked", "close"])),
        gzip=draw(st.booleans()),
        chunk_sizes=draw(
            st.lists(st.integers(smallest_chunk, 70_000), min_size=1, max_size=4).map(tuple)
        ),
        cuts=draw(cuts),
        delays=draw(delays),
    )
    return task_id, answer


@dataclass
class FuzzReport:
    """What a fuzz run saw: outcomes by type, and every foreign exception with its answer."""

    outcomes: dict[str, int] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)

    @property
    def answers(self) -> int:
        """How many answers the client was given."""
        return sum(self.outcomes.values())


def fuzz_client(harness: ClientHarness, examples: int, *, seed: int = 0) -> FuzzReport:
    """Give the client `examples` arbitrary answers (queries and submits); count the outcomes.

    Nothing is asserted here, so a run always finishes: the caller checks `report.foreign`.
    """
    report = FuzzReport()

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(raw_answers(), st.sampled_from(["query", "submit"]))
    def one(answer: RawAnswer, operation: Operation) -> None:
        outcome = harness.ask(answer, operation)
        name = type(outcome).__name__
        report.outcomes[name] = report.outcomes.get(name, 0) + 1
        if is_foreign(outcome):
            report.foreign.append(f"{outcome!r} for {answer!r:.300}")

    one()
    return report


def read_valid_answers(harness: ClientHarness, examples: int, seed: int) -> tuple[int, int]:
    """(answers given, answers read as their task) for valid answers however they arrive."""
    given = 0
    read = 0

    @hypothesis.seed(seed)
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(valid_answers(), st.sampled_from(["query", "submit"]))
    def one(case: tuple[str, RawAnswer], operation: Operation) -> None:
        nonlocal given, read
        task_id, answer = case
        outcome = harness.ask(answer, operation)
        given += 1
        read += isinstance(outcome, KlingTask) and outcome.task_id == task_id

    one()
    return given, read
