"""The worker pool: images read in worker processes, each under a CPU, memory
and wall-clock budget; over budget a clear refusal naming the image, and the pool goes on."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
from collections.abc import Iterator

import pytest
from PIL import Image

from bot.images import (
    ImageIntakeError,
    ImageProblem,
    InspectionPool,
    PreparedImage,
    default_pool,
    inspect_image,
)
from bot.images import pool as pool_module
from tests.bot.images.hostile_images import encode, jpeg_with_segments, noise, picture

SMALL = encode(picture(400, 400), "PNG")


@pytest.fixture(scope="module")
def heavy() -> bytes:
    """A flat 7072×7072 PNG: auto-fix decodes 50 megapixels and scales them down (≥ 1 s CPU)."""
    return encode(picture(7072, 7072), "PNG")


@pytest.fixture
def make_pool() -> Iterator[type[InspectionPool]]:
    """InspectionPool, every one made here closed after the test."""
    made: list[InspectionPool] = []

    class ClosingPool(InspectionPool):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    yield ClosingPool
    for pool in made:
        pool.close()


def worker_pids(pool: InspectionPool) -> set[int]:
    """The process ids of the pool's running workers."""
    return {
        worker.process.pid
        for worker in pool._workers
        if worker.process is not None and worker.process.poll() is None
    }


def refusal_of(pool: InspectionPool, position: int, name: str, data: bytes) -> ImageIntakeError:
    """The error the pool raises for the image (fails the test if it is accepted)."""
    with pytest.raises(ImageIntakeError) as caught:
        pool.inspect_blocking(position, name, data)
    return caught.value


# --- answers are the same as in this process ---


def result_or_problems(
    run: object, data: bytes, autofix: bool
) -> PreparedImage | tuple[ImageProblem, ...]:
    """What `run(position, name, data, autofix=…)` gives: the image, or its problems."""
    assert callable(run)
    try:
        return run(3, "same.img", data, autofix=autofix, source_url="https://cdn/x")
    except ImageIntakeError as error:
        return error.problems


@pytest.mark.parametrize("autofix", [True, False])
def test_the_pool_answers_what_inspect_image_answers(
    make_pool: type[InspectionPool], autofix: bool
) -> None:
    exif = Image.Exif()
    exif[274] = 6
    cases = [
        SMALL,
        encode(noise(640, 480), "JPEG", exif=exif),  # turned upright
        encode(picture(500, 400), "WEBP"),  # converted
        encode(noise(1200, 1000), "PNG", compress_level=0)[:-5000],  # damaged
        encode(picture(250, 1000), "PNG"),  # two problems
        b"not an image",
    ]
    pool = make_pool(1)
    for data in cases:
        expected = result_or_problems(inspect_image, data, autofix)
        actual = result_or_problems(pool.inspect_blocking, data, autofix)
        assert actual == expected
        if isinstance(actual, PreparedImage):
            assert (actual.data is data) == (not actual.changes)  # unchanged bytes aren't sent back


async def test_inspect_runs_off_the_event_loop(make_pool: type[InspectionPool]) -> None:
    pool = make_pool(2)
    images = await asyncio.gather(*(pool.inspect(i, f"{i}.png", SMALL) for i in range(1, 5)))
    assert [image.position for image in images] == [1, 2, 3, 4]
    assert {figures.outcome for figures in pool.figures} == {"image"}
    assert all(figures.peak_bytes > 0 for figures in pool.figures)


# --- budgets ---


def test_over_the_cpu_budget_is_refused_by_name_and_a_fresh_worker_goes_on(
    make_pool: type[InspectionPool], heavy: bytes
) -> None:
    pool = make_pool(1, cpu_seconds=0.3)
    pool.inspect_blocking(1, "warm-up.png", SMALL)
    (before,) = worker_pids(pool)
    error = refusal_of(pool, 2, "huge.png", heavy)
    assert error.english() == (
        "image 2 (huge.png): reading it took more than 0.3 seconds of work"
        " — save it again as JPG or PNG, or use a smaller image"
    )
    assert pool.figures[-1].outcome == "too_slow"
    assert pool.inspect_blocking(3, "next.png", SMALL).data is SMALL
    assert worker_pids(pool) and before not in worker_pids(pool)


def test_over_the_memory_budget_is_refused_by_name(
    make_pool: type[InspectionPool], heavy: bytes
) -> None:
    pool = make_pool(1, memory_bytes=64 * 1024 * 1024)  # 50 megapixels need 200 MB and more
    error = refusal_of(pool, 2, "huge.png", heavy)
    assert error.english() == (
        "image 2 (huge.png): reading it needs more than 64 MB of memory — use a smaller image"
    )
    assert pool.inspect_blocking(3, "next.png", SMALL).data is SMALL


def test_over_the_wall_clock_deadline_is_refused_as_too_slow(
    make_pool: type[InspectionPool], heavy: bytes
) -> None:
    pool = make_pool(1, wall_seconds=0.2)
    pool.start()
    assert [problem.code for problem in refusal_of(pool, 1, "huge.png", heavy).problems] == [
        "too_slow"
    ]


@pytest.mark.parametrize(
    ("sent", "code"), [(signal.SIGSEGV, "corrupt"), (signal.SIGKILL, "too_much_memory")]
)
async def test_a_worker_that_dies_mid_image_refuses_that_image_only(
    make_pool: type[InspectionPool], heavy: bytes, sent: signal.Signals, code: str
) -> None:
    # A decoder crash (SIGSEGV) and the system's out-of-memory killer (SIGKILL), played by hand.
    pool = make_pool(1)
    pool.inspect_blocking(1, "warm-up.png", SMALL)
    (pid,) = worker_pids(pool)
    job = asyncio.ensure_future(pool.inspect(2, "huge.png", heavy))
    await asyncio.sleep(0.2)
    os.kill(pid, sent)
    with pytest.raises(ImageIntakeError) as caught:
        await job
    assert [(p.position, p.code) for p in caught.value.problems] == [(2, code)]
    assert (await pool.inspect(3, "next.png", SMALL)).data is SMALL


def test_a_worker_that_cannot_start_is_logged_for_the_operator(
    make_pool: type[InspectionPool],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(pool_module.sys, "executable", "/bin/false")
    pool = make_pool(1)
    with caplog.at_level(logging.ERROR, logger="bot.images.pool"):
        error = refusal_of(pool, 1, "a.png", SMALL)
    assert (
        error.english() == "image 1 (a.png): couldn't be checked just now — try again in a minute"
    )
    assert "Hint" in caplog.text


# --- nobody waits for another's file ---


async def test_a_small_request_is_not_held_up_by_a_heavy_one(
    make_pool: type[InspectionPool], heavy: bytes
) -> None:
    pool = make_pool(2)
    pool.start()
    slow = asyncio.ensure_future(pool.inspect(1, "huge.png", heavy))
    await asyncio.sleep(0.05)
    for position in range(2, 6):  # one after another, as one request's images go
        assert (await pool.inspect(position, "small.png", SMALL)).data is SMALL
    assert not slow.done()
    assert (await slow).width == 3536


async def test_the_flood_from_the_issue_costs_a_worker_little(
    make_pool: type[InspectionPool],
) -> None:
    pool = make_pool(1)
    with pytest.raises(ImageIntakeError) as caught:
        await pool.inspect(1, "flood.jpg", jpeg_with_segments(6_300_000))
    assert [p.code for p in caught.value.problems] == ["corrupt"]
    assert pool.figures[-1].outcome == "problems"


def test_close_ends_every_worker(make_pool: type[InspectionPool]) -> None:
    pool = make_pool(2)
    pool.start()
    processes = [worker.process for worker in pool._workers]
    pool.close()
    assert all(process is not None and process.poll() is not None for process in processes)


def test_the_default_pool_is_shared_and_renewed_after_close() -> None:
    pool = default_pool()
    assert default_pool() is pool
    assert pool.inspect_blocking(1, "a.png", SMALL).data is SMALL
    pool.close()
    assert default_pool() is not pool


def test_worker_replies_never_exceed_the_image_limit() -> None:
    # The parent reads at most MAX_IMAGE_BYTES of payload from a worker; a worker's answer
    # can't make the bot allocate more (framing is checked before reading).
    from bot.images.protocol import HEADER, read_message

    forged = io.BytesIO(HEADER.pack(2, 2**31) + b"{}")
    assert read_message(forged, max_payload=10 * 1024 * 1024) is None
