"""KlingClient against the fake CometAPI: the happy path and every fault path."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest
from PIL import Image
from pydantic import ValidationError

from bot.kling.client import MAX_BODY_BYTES, ClientTimeouts, KlingClient
from bot.kling.errors import (
    AccountError,
    ApiTimeoutError,
    AuthenticationError,
    BaseUrlError,
    ConcurrencyLimitError,
    ContentPolicyError,
    Fixer,
    InvalidRequestError,
    MalformedResponseError,
    RateLimitedError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    error_for,
)
from bot.kling.models import KlingTask, MultiImageRequest, TaskStatus
from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.hostile_http import KEY, HostileServer, RawAnswer, task_answer


def png_b64(size: tuple[int, int] = (320, 320)) -> str:
    """A small valid PNG, base64 without prefix."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


IMAGE = png_b64()


def request(external: str | None = "ext-1", **extra: object) -> MultiImageRequest:
    """A valid two-image request."""
    return MultiImageRequest(
        image_list=[{"image": IMAGE}, {"image": IMAGE}],  # type: ignore[list-item]
        prompt="a cat walks",
        external_task_id=external,
        **extra,  # type: ignore[arg-type]
    )


class Sleeps:
    """Records back-off sleeps instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def api() -> AsyncIterator[FakeCometAPI]:
    async with FakeCometAPI() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make_client(
    session: aiohttp.ClientSession, api: FakeCometAPI, sleeps: Sleeps, **kwargs: object
) -> KlingClient:
    options: dict[str, object] = {
        "base_url": api.base_url,
        "api_key": api.api_key,
        "timeouts": ClientTimeouts(connect=2, submit=1, query=1),
        "sleep": sleeps,
    }
    options.update(kwargs)
    return KlingClient(session, **options)  # type: ignore[arg-type]


# --- models ---------------------------------------------------------------------------


def test_request_sends_only_fields_that_were_set() -> None:
    body = request(duration="10", mode="pro").to_body()
    assert body == {
        "model_name": "kling-v1-6",
        "image_list": [{"image": IMAGE}, {"image": IMAGE}],
        "prompt": "a cat walks",
        "external_task_id": "ext-1",
        "duration": "10",
        "mode": "pro",
    }


@pytest.mark.parametrize(
    "change",
    [
        {"image_list": [{"image": IMAGE}]},
        {"image_list": [{"image": IMAGE}] * 5},
        {"image_list": [{"image": "data:image/png;base64," + IMAGE}] * 2},
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": "x" * 501},
        {"negative_prompt": "x" * 201},
        {"duration": "7"},
        {"duration": 5},
        {"mode": "fast"},
        {"aspect_ratio": "4:3"},
        {"cfg_scale": 1.01},
        {"cfg_scale": -0.1},
        {"callback_url": "ftp://x"},
        {"dynamic_masks": [{"mask": "m", "trajectories": [{"x": 1, "y": 1}]}]},
        {"dynamic_masks": [{"mask": "m", "trajectories": [{"x": 1, "y": 1}] * 2}] * 7},
        {"unknown": 1},
    ],
)
def test_request_refuses_what_the_api_would(change: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "image_list": [{"image": IMAGE}, {"image": IMAGE}],
        "prompt": "p",
        **change,
    }
    with pytest.raises(ValidationError):
        MultiImageRequest(**fields)  # type: ignore[arg-type]


def test_request_accepts_the_limits() -> None:
    MultiImageRequest(
        image_list=[{"image": IMAGE}] * 4,  # type: ignore[list-item]
        prompt="x" * 500,
        negative_prompt="y" * 200,
        cfg_scale=0,
        static_mask="m",
        dynamic_masks=[{"mask": "m", "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}] * 6,  # type: ignore[list-item]
    )


def test_task_tolerates_empty_result_and_extra_fields() -> None:
    task = KlingTask.model_validate(
        {
            "task_id": 878106242831892487,
            "task_status": "processing",
            "task_result": {},
            "task_info": {},
            "final_unit_deduction": "1",
        }
    )
    assert task.task_id == "878106242831892487"
    assert task.video is None and not task.finished


# --- error taxonomy -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "fixer"),
    [
        (401, {"code": 1000, "message": "auth"}, AuthenticationError, Fixer.OPERATOR),
        (401, {"code": 1004, "message": "expired"}, AuthenticationError, Fixer.OPERATOR),
        (429, {"code": 1100, "message": "abnormal"}, AccountError, Fixer.OPERATOR),
        (429, {"code": 1102, "message": "used up"}, AccountError, Fixer.OPERATOR),
        (429, {"code": 1302, "message": "too fast"}, RateLimitedError, Fixer.TIME),
        (429, {"code": 1303, "message": "parallel"}, ConcurrencyLimitError, Fixer.TIME),
        (429, {"code": 1304, "message": "ip"}, Exception, Fixer.OPERATOR),
        (400, {"code": 1201, "message": "bad value"}, InvalidRequestError, Fixer.USER),
        (400, {"code": 1301, "message": "policy"}, ContentPolicyError, Fixer.USER),
        (500, {"code": 5000, "message": "x"}, ServiceUnavailableError, Fixer.TIME),
        (503, {"code": 5001, "message": "x"}, ServiceUnavailableError, Fixer.TIME),
        (524, None, ServiceUnavailableError, Fixer.TIME),
        (429, None, RateLimitedError, Fixer.TIME),
        (
            401,
            {"error": {"message": "Invalid token", "type": "comet_api_error", "code": ""}},
            AuthenticationError,
            Fixer.OPERATOR,
        ),
        (
            400,
            {"error": {"message": "bad", "type": "comet_api_error", "code": "invalid_request"}},
            InvalidRequestError,
            Fixer.USER,
        ),
        (301, None, BaseUrlError, Fixer.OPERATOR),
    ],
)
def test_errors_say_who_can_fix_them(
    status: int, body: object, kind: type[Exception], fixer: Fixer
) -> None:
    error = error_for(status, body)
    assert isinstance(error, kind)
    assert error.fixer is fixer


def test_user_text_never_carries_the_raw_answer() -> None:
    error = error_for(
        400, {"code": 1301, "message": "secret-ish detail <html>", "request_id": "r1"}
    )
    assert "secret-ish" not in error.user_text
    assert "r1" in str(error) and "1301" in str(error)


# --- the client against the fake --------------------------------------------------------


async def test_submit_then_query_until_success(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps)
    task = await client.submit_multi_image(request())
    assert task.task_status is TaskStatus.SUBMITTED
    assert api.submits[0].headers["Authorization"] == "Bearer test-key"
    api.finish(task.task_id)
    done = await client.get_task(task.task_id)
    assert done.task_status is TaskStatus.SUCCEED
    assert done.video is not None and done.video.url.endswith(f"/videos/{task.task_id}.mp4")
    assert api.violations == []


async def test_failed_task_carries_its_reason(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps)
    task = await client.submit_multi_image(request())
    api.finish(task.task_id, "failed")
    failed = await client.get_task(task.task_id)
    assert failed.task_status is TaskStatus.FAILED
    assert failed.task_status_msg == api.failure_message


async def test_find_by_external_id(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps)
    task = await client.submit_multi_image(request("ext-find"))
    found = await client.find_by_external_id("ext-find")
    assert found is not None and found.task_id == task.task_id
    assert await client.find_by_external_id("ext-never-sent") is None


async def test_wrong_key_is_an_operator_problem(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps, api_key="sk-wrong-key")
    with pytest.raises(AuthenticationError) as caught:
        await client.get_task("1")
    assert "sk-wrong-key" not in str(caught.value)
    assert len(api.requests) == 1, "a wrong key is not retried"


async def test_balance_exhausted_is_not_retried(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.add_fault("balance", on="submit")
    client = make_client(session, api, sleeps)
    with pytest.raises(AccountError):
        await client.submit_multi_image(request())
    assert len(api.submits) == 1 and api.tasks == {}


async def test_content_policy_is_the_users_to_fix(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.add_fault("content_policy", on="submit")
    client = make_client(session, api, sleeps)
    with pytest.raises(ContentPolicyError) as caught:
        await client.submit_multi_image(request())
    assert caught.value.fixer is Fixer.USER
    assert len(api.submits) == 1


async def test_rate_limit_honours_retry_after(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.add_fault("rate_limit", on="query", retry_after=7)
    client = make_client(session, api, sleeps, backoff_base=0.01)
    task = await client.submit_multi_image(request())
    await client.get_task(task.task_id)
    assert sleeps.delays and sleeps.delays[0] >= 7


async def test_rate_limited_submit_is_resent_after_backoff(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.add_fault("rate_limit", on="submit", retry_after=2)
    client = make_client(session, api, sleeps)
    await client.submit_multi_image(request())
    assert len(api.submits) == 2 and len(api.tasks) == 1
    assert sleeps.delays[0] >= 2


async def test_concurrency_limit_reaches_the_caller(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.add_fault("concurrency", on="submit")
    client = make_client(session, api, sleeps)
    with pytest.raises(ConcurrencyLimitError):
        await client.submit_multi_image(request())
    assert api.tasks == {}


async def test_query_survives_a_500_burst_with_growing_backoff(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps, backoff_base=1.0)
    task = await client.submit_multi_image(request())
    api.add_fault("server_error", on="query", times=3)
    assert (await client.get_task(task.task_id)).task_id == task.task_id
    assert len(sleeps.delays) == 3
    assert sleeps.delays[0] < sleeps.delays[2], "back-off grows"
    assert len(api.queries) == 4


async def test_query_gives_up_after_max_retries(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps, max_retries=2)
    api.add_fault("bad_gateway", on="query", times=10)
    with pytest.raises(ServiceUnavailableError):
        await client.get_task("1")
    assert len(api.queries) == 3


async def test_malformed_answer_is_retried(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps)
    task = await client.submit_multi_image(request())
    api.add_fault("malformed", on="query")
    assert (await client.get_task(task.task_id)).task_id == task.task_id
    assert len(api.queries) == 2


async def test_malformed_answers_end_as_malformed(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps, max_retries=1)
    api.add_fault("malformed", on="query", times=2)
    with pytest.raises(MalformedResponseError):
        await client.get_task("1")


async def test_slow_query_times_out_then_succeeds(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.rough = None  # the time-outs here are tight: answers come in one piece
    client = make_client(
        session, api, sleeps, timeouts=ClientTimeouts(connect=1, submit=1, query=0.2)
    )
    task = await client.submit_multi_image(request())
    api.add_fault("slow", on="query", delay=0.6)
    assert (await client.get_task(task.task_id)).task_id == task.task_id
    assert len(sleeps.delays) == 1


async def test_slow_query_ends_as_a_timeout(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.rough = None  # the time-outs here are tight: answers come in one piece
    client = make_client(session, api, sleeps, max_retries=0, timeouts=ClientTimeouts(1, 1, 0.2))
    api.add_fault("slow", on="query", delay=0.6)
    with pytest.raises(ApiTimeoutError):
        await client.get_task("1")


async def test_submit_that_times_out_after_creating_returns_that_task(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.rough = None  # the time-outs here are tight: answers come in one piece
    client = make_client(
        session, api, sleeps, timeouts=ClientTimeouts(connect=1, submit=0.3, query=1)
    )
    api.add_fault("slow", on="submit", delay=0.8)
    task = await client.submit_multi_image(request("ext-slow"))
    await api_settle()
    assert len(api.tasks) == 1, "exactly one task exists at the provider"
    assert task.task_id in api.tasks
    assert len(api.submits) == 1, "the submit was not repeated"


async def test_submit_dropped_after_create_returns_that_task(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps)
    api.add_fault("drop_after_create", on="submit")
    task = await client.submit_multi_image(request("ext-drop"))
    assert list(api.tasks) == [task.task_id]
    assert len(api.submits) == 1


async def test_submit_500_that_did_not_create_is_sent_once_more(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps)
    api.add_fault("server_error", on="submit")
    task = await client.submit_multi_image(request("ext-500"))
    assert list(api.tasks) == [task.task_id]
    assert len(api.submits) == 2, "looked up (not found), then sent again once"


async def test_submit_is_never_sent_a_third_time(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps)
    api.add_fault("server_error", on="submit", times=5)
    with pytest.raises(SubmitOutcomeUnknownError):
        await client.submit_multi_image(request("ext-500s"))
    assert len(api.submits) == 2


async def test_unknown_outcome_when_the_lookup_fails_too(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = make_client(session, api, sleeps, max_retries=1)
    api.add_fault("server_error", on="submit")
    api.add_fault("server_error", on="query", times=5)
    with pytest.raises(SubmitOutcomeUnknownError):
        await client.submit_multi_image(request("ext-unknown"))
    assert len(api.submits) == 1, "never resubmitted blindly"


async def test_unreachable_api_is_a_clear_error(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    client = KlingClient(
        session, base_url="http://127.0.0.1:9", api_key="k", max_retries=1, sleep=sleeps
    )
    with pytest.raises(ApiTimeoutError) as caught:
        await client.get_task("1")
    assert "127.0.0.1:9" in str(caught.value)


async def test_fake_refuses_what_the_contract_forbids(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": "Bearer test-key"}
    body = {"image_list": [{"image": IMAGE}], "prompt": "p"}
    async with session.post(
        api.base_url + "/kling/v1/videos/multi-image2video", json=body, headers=headers
    ) as r:
        assert r.status == 400
        assert (await r.json())["code"] == 1201
    body = {"image_list": [{"image": IMAGE}] * 2, "prompt": "p", "static_mask": "x"}
    async with session.post(
        api.base_url + "/kling/v1/videos/multi-image2video", json=body, headers=headers
    ) as r:
        assert r.status == 400
    assert len(api.violations) == 2


async def api_settle() -> None:
    """Let the fake's slow handler finish creating its task."""
    import asyncio

    await asyncio.sleep(0.6)


async def test_resend_refused_as_a_duplicate_is_an_unknown_outcome(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.external_lookup = False  # the lookup can't see the task the dropped submit created
    api.add_fault("drop_after_create", on="submit")
    client = make_client(session, api, sleeps)
    with pytest.raises(SubmitOutcomeUnknownError) as caught:
        await client.submit_multi_image(request("ext-dup"))
    assert caught.value.resent
    assert len(api.tasks) == 1, "the duplicate was refused, not billed twice"


async def test_no_resend_when_the_caller_keeps_count(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.add_fault("server_error", on="submit")
    client = make_client(session, api, sleeps)
    with pytest.raises(SubmitOutcomeUnknownError):
        await client.submit_multi_image(request("ext-once"), may_resend=False)
    assert len(api.submits) == 1


@pytest.mark.parametrize(
    ("sent", "read"),
    [
        ("succeed", TaskStatus.SUCCEED),
        ("SUCCEED", TaskStatus.SUCCEED),
        ("succeeded", TaskStatus.SUCCEED),
        ("failed", TaskStatus.FAILED),
        ("queued", TaskStatus.PROCESSING),
        (None, TaskStatus.SUBMITTED),
    ],
)
def test_statuses_are_read_tolerantly(sent: str | None, read: TaskStatus) -> None:
    task = KlingTask.model_validate({"task_id": "1", "task_status": sent})
    assert task.task_status is read


# --- answers however they arrive --------------------------------------------------------


@pytest.fixture
async def peer() -> AsyncIterator[HostileServer]:
    """A peer that answers exactly the bytes a test scripts."""
    server = HostileServer()
    await server.start()
    yield server
    await server.stop()


def peer_client(session: aiohttp.ClientSession, peer: HostileServer, sleeps: Sleeps) -> KlingClient:
    return KlingClient(
        session,
        base_url=peer.url,
        api_key=KEY,
        timeouts=ClientTimeouts(connect=2, submit=2, query=2),
        max_retries=0,
        sleep=sleeps,
    )


def cut_in_half(answer: RawAnswer) -> RawAnswer:
    """The same answer in two writes, the second one the last half of the body."""
    return dataclasses.replace(answer, cuts=(len(answer.wire()) - len(answer.body) // 2,))


@pytest.mark.parametrize("size", [500, 64 * 1024, 140 * 1024, 1024 * 1024])
@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_an_answer_in_two_writes_5_ms_apart_is_read_whole(
    peer: HostileServer,
    session: aiohttp.ClientSession,
    sleeps: Sleeps,
    size: int,
    framing: str,
) -> None:
    answer = RawAnswer(body=task_answer("861", size), framing=framing, delays=(0.005,))  # type: ignore[arg-type]
    peer.answer = cut_in_half(answer)
    task = await peer_client(session, peer, sleeps).get_task("861")
    assert task.task_id == "861"


@pytest.mark.parametrize("size", [140 * 1024, 1024 * 1024, MAX_BODY_BYTES - 200])
async def test_a_large_answer_in_one_write_is_read_whole(
    peer: HostileServer, session: aiohttp.ClientSession, sleeps: Sleeps, size: int
) -> None:
    peer.answer = RawAnswer(body=task_answer("862", size))
    assert (await peer_client(session, peer, sleeps).get_task("862")).task_id == "862"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_a_gzipped_answer_in_pieces_is_read_whole(
    peer: HostileServer, session: aiohttp.ClientSession, sleeps: Sleeps, framing: str
) -> None:
    peer.answer = RawAnswer(
        body=task_answer("863", 300_000),
        framing=framing,  # type: ignore[arg-type]
        gzip=True,
        chunk_sizes=(7, 1000, 3),
        cuts=(50, 200, 201, 900),
        delays=(0.002, 0.0),
    )
    assert (await peer_client(session, peer, sleeps).get_task("863")).task_id == "863"


async def test_a_submit_whose_answer_arrives_in_pieces_returns_its_task(
    peer: HostileServer, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    peer.answer = cut_in_half(RawAnswer(body=task_answer("864", 2000), delays=(0.005,)))
    task = await peer_client(session, peer, sleeps).submit_multi_image(request("ext-pieces"))
    assert task.task_id == "864"
    assert peer.requests == 1, "no lookup: the answer was read, not called unknown"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("compressed", [False, True])
async def test_an_answer_over_the_cap_is_refused_clearly(
    peer: HostileServer,
    session: aiohttp.ClientSession,
    sleeps: Sleeps,
    framing: str,
    compressed: bool,
) -> None:
    client = peer_client(session, peer, sleeps)
    body = task_answer("865", MAX_BODY_BYTES)
    peer.answer = RawAnswer(body=body, framing=framing, gzip=compressed, cuts=(9000,))  # type: ignore[arg-type]
    with pytest.raises(MalformedResponseError) as caught:
        await client.get_task("865")
    assert "cap" in str(caught.value)


async def test_a_gzip_bomb_is_refused_at_the_cap(
    peer: HostileServer, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    body = b'{"code": 0, "data": {"task_id": "1"}, "pad": "' + b"0" * (8 * MAX_BODY_BYTES) + b'"}'
    assert len(gzip.compress(body)) < MAX_BODY_BYTES // 20
    peer.answer = RawAnswer(body=body, gzip=True)
    with pytest.raises(MalformedResponseError, match="cap"):
        await peer_client(session, peer, sleeps).get_task("1")


async def test_an_error_page_over_the_cap_keeps_its_status(
    peer: HostileServer, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    peer.answer = RawAnswer(status=502, body=b"<html>" + b"x" * MAX_BODY_BYTES)
    with pytest.raises(ServiceUnavailableError):
        await peer_client(session, peer, sleeps).get_task("1")


@pytest.mark.parametrize(
    "value",
    [
        "soon",
        "Mon, 32 Foo 2024 25:61:61 GMT",
        "Fri, 31 Dec 99999 23:59:59 GMT",
        "Thu, 01 Jan 1970",
        "nan",
        "inf",
        "1e309",
        "   ",
    ],
)
async def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_no_hint(
    peer: HostileServer, session: aiohttp.ClientSession, sleeps: Sleeps, value: str
) -> None:
    body = b'{"code": 1302, "message": "too many requests"}'
    peer.answer = RawAnswer(status=429, headers=(("Retry-After", value),), body=body)
    with pytest.raises(RateLimitedError) as caught:
        await peer_client(session, peer, sleeps).get_task("1")
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("-5", 0.0), ("100000", 120.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
async def test_a_retry_after_is_read_and_capped(
    peer: HostileServer, session: aiohttp.ClientSession, sleeps: Sleeps, value: str, seconds: float
) -> None:
    body = b'{"code": 1302, "message": "too many requests"}'
    peer.answer = RawAnswer(status=429, headers=(("Retry-After", value),), body=body)
    with pytest.raises(RateLimitedError) as caught:
        await peer_client(session, peer, sleeps).get_task("1")
    assert caught.value.retry_after == seconds


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"[" * 100_000 + b"]" * 100_000, MalformedResponseError),
        (
            200,
            b'{"code": 0, "data": ' + b'{"a": ' * 600 + b"1" + b"}" * 601,
            MalformedResponseError,
        ),
        (500, b"[" * 100_000 + b"]" * 100_000, ServiceUnavailableError),
        (
            500,
            b'{"code": 5000, "message": ' + b"[" * 900 + b"]" * 900 + b"}",
            ServiceUnavailableError,
        ),
    ],
)
async def test_deeply_nested_json_is_a_malformed_answer(
    peer: HostileServer,
    session: aiohttp.ClientSession,
    sleeps: Sleeps,
    status: int,
    body: bytes,
    error: type[Exception],
) -> None:
    peer.answer = RawAnswer(status=status, body=body)
    with pytest.raises(error):
        await peer_client(session, peer, sleeps).get_task("1")


# --- only usable videos ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "file:///etc/passwd",
        12345,
        "not a url",
        "http://",
        "https:///no-host",
        "http://[::1",
        "ftp://cdn.example.org/v.mp4",
        "https://cdn.example.org/v.mp4\n<script>",
        "https://cdn.example.org/" + "a" * 2000,
        None,
    ],
)
def test_a_video_without_an_http_url_is_not_usable(url: object) -> None:
    task = KlingTask.model_validate(
        {"task_id": "1", "task_status": "succeed", "task_result": {"videos": [{"url": url}]}}
    )
    assert task.video is None
    assert task.task_result.videos == []
    assert "unusable" in task.missing_video_reason()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("-5", None),
        ("NaN", None),
        ("inf", None),
        ("0", None),
        ("", None),
        ([], None),
        ("5.1", "5.1"),
        (10, "10"),
    ],
)
def test_a_video_keeps_only_a_finite_positive_duration(sent: object, kept: str | None) -> None:
    url = "https://cdn.example.org/v.mp4"
    task = KlingTask.model_validate(
        {
            "task_id": "1",
            "task_status": "succeed",
            "task_result": {"videos": [{"url": url, "duration": sent}]},
        }
    )
    assert task.video is not None and task.video.url == url
    assert task.video.duration == kept


@pytest.mark.parametrize("result", [{}, {"videos": []}, {"videos": "x"}, "junk", None])
def test_a_success_without_videos_says_so(result: object) -> None:
    task = KlingTask.model_validate(
        {"task_id": "1", "task_status": "succeed", "task_result": result}
    )
    assert task.task_status is TaskStatus.SUCCEED and task.video is None
    assert task.missing_video_reason()


def test_the_first_usable_video_is_the_one() -> None:
    good = "https://cdn.example.org/good.mp4"
    task = KlingTask.model_validate(
        {
            "task_id": "1",
            "task_status": "succeed",
            "task_result": {"videos": [{"url": "javascript:alert(1)"}, {"url": good, "id": {}}]},
        }
    )
    assert task.video is not None and task.video.url == good
    assert len(task.task_result.unusable_videos) == 1


async def test_the_client_hands_over_no_unusable_video(
    api: FakeCometAPI, session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    api.videos = [{"url": "javascript:alert(1)", "duration": "NaN"}]
    client = make_client(session, api, sleeps)
    task = await client.submit_multi_image(request())
    api.finish(task.task_id)
    done = await client.get_task(task.task_id)
    assert done.task_status is TaskStatus.SUCCEED and done.video is None


async def test_the_fake_sends_answers_roughly(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    """The default fake really does chunk and gzip (so every suite reads rough answers)."""
    seen: set[tuple[bool, str]] = set()
    headers = {"Authorization": "Bearer test-key"}
    for _ in range(40):
        async with session.get(
            f"{api.base_url}/kling/v1/videos/multi-image2video/x", headers=headers
        ) as r:
            await r.read()
            seen.add(
                (
                    r.headers.get("Transfer-Encoding") == "chunked",
                    r.headers.get("Content-Encoding", ""),
                )
            )
    assert {(True, "gzip"), (False, "gzip"), (True, ""), (False, "")} <= seen
    api.rough = None
    async with session.get(
        f"{api.base_url}/kling/v1/videos/multi-image2video/x", headers=headers
    ) as r:
        assert r.headers.get("Content-Length") and "Content-Encoding" not in r.headers
