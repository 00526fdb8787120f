"""A fake CometAPI (Kling multi-image-to-video routes) on loopback that enforces the contract.

It checks what the real API documents: the Bearer key, the JSON body
and its limits, unique external ids; it answers in the documented envelopes; tasks move
through `submitted → processing → succeed|failed` on a schedule; and scripted faults
reproduce what goes wrong in production.

Its answers arrive the way real networks deliver them (`Roughness`, on by default, seeded):
in random pieces a few milliseconds apart, with a Content-Length or chunked, sometimes
gzipped (when the client accepts it), with odd but legal headers. `rough=None` sends every
answer in one piece, for a test whose timing must not move.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

ROUTE = "/kling/v1/videos/multi-image2video"
ALLOWED_FIELDS = {
    "model_name",
    "image_list",
    "prompt",
    "negative_prompt",
    "mode",
    "duration",
    "aspect_ratio",
    "cfg_scale",
    "callback_url",
    "external_task_id",
}
FORBIDDEN_FIELDS = {"static_mask", "dynamic_masks"}  # the newer doc: don't send them here

# A small but real MP4 header: an `ftyp` box, then filler.
MP4_BYTES = (
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00\x00\x00\x08free" + b"\x00" * 2048
)

FaultKind = Literal[
    "balance",  # 429 code 1102 (Kling body)
    "content_policy",  # 400 code 1301 (Kling body)
    "invalid",  # 400 CometAPI envelope
    "rate_limit",  # 429 code 1302 with Retry-After
    "concurrency",  # 429 code 1303
    "server_error",  # 500 CometAPI envelope
    "bad_gateway",  # 524 HTML
    "slow",  # answer after `delay` seconds (a submit creates its task first)
    "malformed",  # 200 with a body that isn't JSON
    "drop_after_create",  # create the task, then drop the connection
]


@dataclass
class Fault:
    """One scripted fault, applied to the next `times` matching requests."""

    kind: FaultKind
    on: Literal["submit", "query", "any"] = "any"
    times: int = 1
    delay: float = 0.0
    retry_after: float | None = None


@dataclass
class Roughness:
    """How roughly the fake delivers its answers; every choice comes from `seed`."""

    seed: int = 0
    max_pieces: int = 6  # a body goes out in 1 to this many writes
    max_delay: float = 0.003  # seconds between two writes, at most
    chunked: float = 0.4  # share of answers sent with chunked transfer-encoding
    gzip: float = 0.3  # share gzipped (only when the request accepts gzip)
    odd_headers: float = 0.5  # share with unusual but legal headers

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pieces(self, body: bytes) -> list[bytes]:
        """The body cut at random places into up to `max_pieces` writes."""
        count = self.rng.randint(1, self.max_pieces)
        cuts = sorted(self.rng.randint(0, len(body)) for _ in range(count - 1))
        edges = [0, *cuts, len(body)]
        return [body[a:b] for a, b in itertools.pairwise(edges) if b > a] or [body]

    def headers(self, status: int) -> dict[str, str]:
        """A few odd but legal headers (none that changes what the answer means)."""
        if self.rng.random() >= self.odd_headers:
            return {}
        choices = {
            "Cache-Control": "no-cache, no-store, must-revalidate, max-age=0",
            "Vary": "Accept-Encoding, Origin, Access-Control-Request-Method",
            "X-Request-Id": uuid.uuid4().hex,
            "x-kling-TRACE": " spaced-value\t",
            "Server": "gateway/1.0 (+proxy; comment)",
            "Set-Cookie": "acw_tc=0a1b2c; path=/; HttpOnly; Max-Age=1800",
            "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
            "X-Padding": "p" * self.rng.randint(100, 4000),
            "Connection": "keep-alive",
            "Keep-Alive": "timeout=5, max=100",
            "Date": "Sun, 06 Nov 1994 08:49:37 GMT",
        }
        if 200 <= status < 300:  # a hint there means nothing; on a refusal it would
            choices["Retry-After"] = self.rng.choice(["0", "120", "Wed, 21 Oct 2015 07:28:00 GMT"])
        names = self.rng.sample(sorted(choices), self.rng.randint(1, 4))
        return {name: choices[name] for name in names}


async def send_roughly(
    request: web.Request, answer: web.Response, rough: Roughness
) -> web.StreamResponse:
    """Send `answer` as `rough` says: in pieces, maybe chunked, maybe gzipped, odd headers."""
    rng = rough.rng
    body = answer.body or b""
    assert isinstance(body, bytes), "the fake's answers carry their body as bytes"
    out = web.StreamResponse(status=answer.status, reason=answer.reason)
    for name, value in answer.headers.items():
        if name.lower() not in ("content-length", "transfer-encoding"):
            out.headers.add(name, value)
    if rng.random() < 0.2 and "Content-Type" in out.headers:
        content_type = out.headers["Content-Type"]
        out.headers["Content-Type"] = content_type.replace("charset=utf-8", "charset=UTF-8")
    out.headers.update(rough.headers(answer.status))
    accepts = request.headers.get("Accept-Encoding", "").lower()
    if body and "gzip" in accepts and rng.random() < rough.gzip:
        body = gzip.compress(body, compresslevel=rng.choice([1, 6, 9]))
        out.headers["Content-Encoding"] = "gzip"
    if rng.random() < rough.chunked:
        out.enable_chunked_encoding()
    else:
        out.content_length = len(body)
    pieces = rough.pieces(body)
    delays = [rng.uniform(0, rough.max_delay) for _ in pieces]
    try:
        await out.prepare(request)
        for piece, delay in zip(pieces, delays, strict=True):
            await out.write(piece)
            await asyncio.sleep(delay)
        await out.write_eof()
    except ConnectionError:  # the client gave up (its time-out): nothing more to send
        pass
    return out


@dataclass
class FakeTask:
    """A task the fake holds."""

    task_id: str
    external_task_id: str | None
    body: dict[str, Any]
    created: float
    processing_after: float
    finish_after: float
    outcome: Literal["succeed", "failed"]
    failure_message: str
    video_bytes: bytes
    queries: int = 0
    forced_status: str | None = None

    def status(self, now: float) -> str:
        """The status at `now`, by the schedule (or as forced by a test)."""
        if self.forced_status is not None:
            return self.forced_status
        elapsed = now - self.created
        if elapsed >= self.finish_after:
            return self.outcome
        if elapsed >= self.processing_after:
            return "processing"
        return "submitted"


@dataclass
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class FakeCometAPI:
    """The fake server; use `async with FakeCometAPI() as api:` and `api.base_url`."""

    api_key: str = "test-key"
    processing_after: float = 0.0
    finish_after: float = 0.2
    outcome: Literal["succeed", "failed"] = "succeed"
    failure_message: str = "Failure to pass the risk control system"
    video_bytes: bytes = MP4_BYTES
    max_concurrent: int | None = None  # the account's task concurrency (1303 past it)
    external_lookup: bool = True  # False: querying by external_task_id finds nothing (undocumented)
    #: decides each new task's outcome from its submit body (instead of `outcome` for all)
    outcome_for: Callable[[dict[str, Any]], Literal["succeed", "failed"]] | None = None
    #: decides each new task's `finish_after` from its submit body (instead of one for all)
    finish_after_for: Callable[[dict[str, Any]], float] | None = None
    clock: Callable[[], float] = time.monotonic
    rough: Roughness | None = field(default_factory=Roughness)  # None: every answer in one piece
    videos: list[Any] | None = None  # what a succeeded task lists (None: its one real video)
    #: what a finished task says was deducted (`final_unit_deduction`, Kling's string), from its
    #: submit body; None: the field is left out, as CometAPI's examples leave it out
    deduction_for: Callable[[dict[str, Any]], Any] | None = None
    faults: list[Fault] = field(default_factory=list)
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ids = itertools.count(861309198188019719)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> FakeCometAPI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._roughen])
        app.router.add_post(ROUTE, self._submit)
        app.router.add_get(ROUTE + "/{id}", self._query)
        app.router.add_get("/videos/{task_id}.mp4", self._video)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """What COMETAPI_BASE_URL should be."""
        return f"http://127.0.0.1:{self.port}"

    @web.middleware
    async def _roughen(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        answer = await handler(request)
        if self.rough is None or type(answer) is not web.Response or answer.prepared:
            return answer
        return await send_roughly(request, answer, self.rough)

    # --- what tests look at ------------------------------------------------------------

    def add_fault(self, kind: FaultKind, **kwargs: Any) -> Fault:
        """Script a fault for the next matching request(s)."""
        fault = Fault(kind, **kwargs)
        self.faults.append(fault)
        return fault

    @property
    def submits(self) -> list[RecordedRequest]:
        """Every submit received, accepted or not."""
        return [r for r in self.requests if r.method == "POST"]

    @property
    def queries(self) -> list[RecordedRequest]:
        """Every query received."""
        return [r for r in self.requests if r.method == "GET" and r.path.startswith(ROUTE)]

    def running(self) -> int:
        """Tasks that hold one of the account's concurrency slots now."""
        now = self.clock()
        return sum(t.status(now) in ("submitted", "processing") for t in self.tasks.values())

    def finish(self, task_id: str, status: str = "succeed") -> None:
        """Force a task's status now."""
        self.tasks[task_id].forced_status = status

    # --- handlers ----------------------------------------------------------------------

    def _take_fault(self, on: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.on in (on, "any"):
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(request, body)
        if not self._authorized(request):
            return _comet_error(401, "Invalid token")
        fault = self._take_fault("submit")
        if fault is not None and fault.kind not in ("drop_after_create", "slow"):
            answer = await self._apply(fault)
            if answer is not None:
                return answer
        if request.content_type != "application/json" or not isinstance(body, dict):
            return _kling_error(400, 1200, "request body must be JSON")
        problem = self._check_body(body)
        if problem is not None:
            self.violations.append(problem)
            return _kling_error(400, 1201, problem)
        external = body.get("external_task_id")
        if external is not None and any(
            t.external_task_id == external for t in self.tasks.values()
        ):
            return _kling_error(400, 1201, f"external_task_id {external} already exists")
        if self.max_concurrent is not None and self.running() >= self.max_concurrent:
            return _kling_error(429, 1303, "parallel task over resource pack limit")
        task = FakeTask(
            task_id=str(next(self._ids)),
            external_task_id=external,
            body=body,
            created=self.clock(),
            processing_after=self.processing_after,
            finish_after=self.finish_after_for(body)
            if self.finish_after_for
            else self.finish_after,
            outcome=self.outcome_for(body) if self.outcome_for else self.outcome,
            failure_message=self.failure_message,
            video_bytes=self.video_bytes,
        )
        self.tasks[task.task_id] = task
        if fault is not None and fault.kind == "slow":  # created, but the answer comes late
            await asyncio.sleep(fault.delay)
        elif fault is not None:  # drop_after_create: the task exists, the answer never comes
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        data = {
            "task_id": task.task_id,
            "task_status": "submitted",
            "task_info": {"external_task_id": external} if external else {},
            "created_at": int(time.time() * 1000),
            "updated_at": int(time.time() * 1000),
        }
        return web.json_response({"code": 0, "message": "SUCCEED", "data": data})

    async def _query(self, request: web.Request) -> web.StreamResponse:
        self._record(request, None)
        if not self._authorized(request):
            return _comet_error(401, "Invalid token")
        fault = self._take_fault("query")
        if fault is not None:
            answer = await self._apply(fault)
            if answer is not None:
                return answer
        wanted = request.match_info["id"]
        task = self.tasks.get(wanted)
        if task is None and self.external_lookup:
            task = next((t for t in self.tasks.values() if t.external_task_id == wanted), None)
        if task is None:
            return _kling_error(404, 1203, "task not found")
        task.queries += 1
        status = task.status(self.clock())
        data: dict[str, Any] = {
            "task_id": task.task_id,
            "task_status": status,
            "task_info": {"external_task_id": task.external_task_id}
            if task.external_task_id
            else {},
            "task_result": {},
            "created_at": int(time.time() * 1000),
            "updated_at": int(time.time() * 1000),
        }
        if status == "succeed":
            url = f"{self.base_url}/videos/{task.task_id}.mp4"
            videos = [{"id": f"v{task.task_id}", "url": url, "duration": "5.1"}]
            data["task_result"] = {"videos": videos if self.videos is None else self.videos}
        elif status == "failed":
            data["task_status_msg"] = task.failure_message
        if status in ("succeed", "failed") and self.deduction_for is not None:
            data["final_unit_deduction"] = self.deduction_for(task.body)
        return web.json_response(
            {"code": 0, "message": "SUCCEED", "request_id": str(uuid.uuid4()), "data": data}
        )

    async def _video(self, request: web.Request) -> web.StreamResponse:
        self._record(request, None)
        task = self.tasks.get(request.match_info["task_id"])
        if task is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=task.video_bytes, content_type="video/mp4")

    async def _apply(self, fault: Fault) -> web.StreamResponse | None:
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "balance":
            return _kling_error(429, 1102, "prepaid resource pack used up")
        if fault.kind == "content_policy":
            return _kling_error(400, 1301, "content security policy triggered")
        if fault.kind == "invalid":
            return _comet_error(400, "invalid request", code="invalid_request")
        if fault.kind == "rate_limit":
            headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after else {}
            return _kling_error(429, 1302, "too many requests", headers=headers)
        if fault.kind == "concurrency":
            return _kling_error(429, 1303, "parallel task over resource pack limit")
        if fault.kind == "server_error":
            return _comet_error(500, "internal server error")
        if fault.kind == "bad_gateway":
            return web.Response(status=524, text="<html>timeout</html>", content_type="text/html")
        if fault.kind == "malformed":
            return web.Response(
                status=200, text='{"code": 0, "data": {', content_type="application/json"
            )
        raise AssertionError(f"unknown fault {fault.kind}")

    def _record(self, request: web.Request, body: Any) -> None:
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body, self.clock())
        )

    def _check_body(self, body: dict[str, Any]) -> str | None:
        """The documented contract of the submit body; None when it holds."""
        unknown = set(body) - ALLOWED_FIELDS
        if unknown & FORBIDDEN_FIELDS:
            return f"do not send {sorted(unknown & FORBIDDEN_FIELDS)} on this route"
        if unknown:
            return f"unknown fields {sorted(unknown)}"
        if body.get("model_name", "kling-v1-6") != "kling-v1-6":
            return "model_name must be kling-v1-6"
        images = body.get("image_list")
        if not isinstance(images, list) or not 2 <= len(images) <= 4:
            return "image_list must hold 2 to 4 images"
        for item in images:
            if (
                not isinstance(item, dict)
                or set(item) != {"image"}
                or not isinstance(item["image"], str)
            ):
                return "each image_list item is {image: string}"
            problem = _check_image_value(item["image"])
            if problem:
                return problem
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 500:
            return "prompt is required, at most 500 characters"
        negative = body.get("negative_prompt")
        if negative is not None and (not isinstance(negative, str) or len(negative) > 200):
            return "negative_prompt is at most 200 characters"
        if body.get("mode", "std") not in ("std", "pro"):
            return "mode is std or pro"
        if body.get("duration", "5") not in ("5", "10"):
            return 'duration is the string "5" or "10"'
        if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
            return "aspect_ratio is 16:9, 9:16 or 1:1"
        cfg = body.get("cfg_scale")
        if cfg is not None and (
            isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not 0 <= cfg <= 1
        ):
            return "cfg_scale is a number from 0 to 1"
        callback = body.get("callback_url")
        if callback is not None and (
            not isinstance(callback, str) or not callback.startswith(("http://", "https://"))
        ):
            return "callback_url must be an http(s) URL"
        external = body.get("external_task_id")
        if external is not None and (not isinstance(external, str) or not external):
            return "external_task_id must be a non-empty string"
        return None


def _check_image_value(value: str) -> str | None:
    if value.startswith(("http://", "https://")):
        return None
    if value.startswith("data:"):
        return "image must be raw base64 without a data: prefix"
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return "image is neither a URL nor valid base64"
    if len(data) > 10 * 1024 * 1024:
        return "image is over 10 MB"
    if not (data.startswith(b"\xff\xd8\xff") or data.startswith(b"\x89PNG\r\n\x1a\n")):
        return "image must be JPG or PNG"
    return None


def _kling_error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"code": code, "message": message, "request_id": str(uuid.uuid4())}
    return web.json_response(body, status=status, headers=headers)


def _comet_error(status: int, message: str, code: str = "") -> web.Response:
    body = {
        "error": {
            "message": f"{message} (request id: {uuid.uuid4().hex})",
            "type": "comet_api_error",
            "param": "",
            "code": code,
        }
    }
    return web.json_response(body, status=status)
