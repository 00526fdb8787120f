"""Hostile images and downloads: what each costs, and what another user's request notices.

Run: `python benchmarks/bench_images_hostile.py`. Prints figures; asserts nothing. Three parts:

1. Per image (the hostile cases of tests/hostile_images.py and the heaviest legitimate ones), through a worker pool with
   the bot's budgets: the outcome, wall time, the worker's CPU and its peak memory growth
   (VmHWM reset before each image, minus its resident size then), and the longest stall of
   this process's event loop meanwhile (a 5 ms ticker).
2. The extra wait of an ordinary request (two ~1.5 MB photos, prepare_images from a loopback
   server in a child process) started 0.3 s after another user's request of four pathological
   images, against the same request alone (target ≤ 1 s). Also for two such users at once,
   which is more than the pool's two workers can shield.
3. Downloads that try to hog the loop: a body in 1-byte chunks, a gzip body that inflates past
   the cap, a trickle; the time each takes and the longest event-loop stall.
"""

from __future__ import annotations

import asyncio
import gzip
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Awaitable
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from PIL import Image

from bot.images import (
    MAX_DOWNLOAD_BYTES,
    AttachmentRef,
    ImageIntakeError,
    ImageProblem,
    InspectionPool,
    prepare_images,
)
from bot.images.fetching import fetch_all
from tests.bot.images.hostile_images import (
    broken_pixel_pngs,
    encode,
    flat_png_bomb,
    icc_profile,
    jpeg_with_fill,
    jpeg_with_segments,
    noise,
    picture,
    png_chunk_flood,
    sixteen_bit_grey_png,
)

EXTRA_WAIT_TARGET = 1.0
MiB = 2**20


def smooth(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A large image with gradients (compresses like a photo of the sky, not like noise)."""
    small = noise(64, 64, mode if mode in {"RGB", "L"} else "RGB")
    return small.resize((width, height), Image.Resampling.BILINEAR).convert(mode)


def cases() -> list[tuple[str, bytes]]:
    """(label, file) of every hostile or heavy case."""
    print("making the files…", flush=True)
    return [
        ("JPEG of 6.3 M empty comments (24 MB)", jpeg_with_segments(6_300_000)),
        ("JPEG after 10 MB of FF fill", jpeg_with_fill(10 * MiB)),
        ("PNG with 2 M empty chunks (24 MB)", png_chunk_flood(2_000_000)),
        ("PNG, valid CRCs, random IDAT", broken_pixel_pngs()["random IDAT"]),
        ("PNG, valid CRCs, zlib cut in half", broken_pixel_pngs()["zlib stream cut in half"]),
        (
            "PNG with a 5 MB colour profile",
            encode(picture(400, 400), "PNG", icc_profile=icc_profile(5_000_000)),
        ),
        ("7072×7072 PNG, scaled down", encode(picture(7072, 7072), "PNG")),
        ("7072×7072 JPEG, scaled down", encode(smooth(7072, 7072), "JPEG", quality=90)),
        (
            "10000×10000 RGBA PNG, scaled down",
            encode(picture(10_000, 10_000, "RGBA"), "PNG"),
        ),
        ("10000×10000 JPEG, scaled down", encode(smooth(10_000, 10_000), "JPEG", quality=95)),
        ("12000×12000 PNG bomb (refused)", flat_png_bomb(12_000, 12_000)),
        ("16-bit grey PNG, 11 MB, re-encoded", sixteen_bit_grey_png(2400, 2400)),
        (
            "noise PNG, 25 MB, re-encoded",
            encode(noise(2900, 2900), "PNG", compress_level=0),
        ),
        ("noise JPEG q100, 23 MB, re-encoded", encode(noise(4000, 3000), "JPEG", quality=100)),
    ]


async def max_stall_while(work: Awaitable[object]) -> tuple[object, float]:
    """Await `work` while a 5 ms ticker runs; its result (or error) and the loop's longest stall."""
    stall = 0.0
    done = False

    async def tick() -> None:
        nonlocal stall
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            stall = max(stall, now - last - 0.005)
            last = now

    ticker = asyncio.ensure_future(tick())
    try:
        result: object = await work
    except Exception as error:
        result = error
    done = True
    await ticker
    return result, stall


async def per_image(files: list[tuple[str, bytes]]) -> None:
    """Part 1: each file through a pool with the bot's budgets."""
    pool = InspectionPool()
    pool.start()
    await asyncio.sleep(1.0)  # workers loaded
    print(
        "\n-- 1. per image, a pool of 2 with the bot's budgets "
        f"({pool.cpu_seconds:g} s CPU, {pool.memory_bytes // MiB} MiB over the idle worker)"
    )
    print(
        f"   {'case':<38} {'size':>8} {'outcome':<24} {'wall':>7} {'CPU':>7}"
        f" {'memory':>9} {'loop stall':>10}"
    )
    worst_wall = worst_memory = 0.0
    for label, data in files:
        result, stall = await max_stall_while(pool.inspect(1, "x", data))
        figures = pool.figures[-1]
        if isinstance(result, ImageIntakeError):
            outcome = "refused: " + result.problems[0].code
        elif isinstance(result, Exception):
            outcome = f"!! {type(result).__name__}"
        else:
            outcome = "accepted" + (" (changed)" if getattr(result, "changes", ()) else "")
        growth = max(0, figures.peak_bytes - figures.start_bytes)
        worst_wall = max(worst_wall, figures.wall_seconds)
        worst_memory = max(worst_memory, growth)
        print(
            f"   {label:<38} {len(data) / MiB:6.1f}MB {outcome:<24} {figures.wall_seconds:6.2f}s"
            f" {figures.cpu_seconds:6.2f}s {growth / MiB:7.0f}MiB {stall * 1000:8.1f}ms"
        )
    print(f"   worst: {worst_wall:.2f} s wall, {worst_memory / MiB:.0f} MiB of worker memory")

    tight = InspectionPool(1, cpu_seconds=1.0)
    tight.start()
    await asyncio.sleep(1.0)
    label, data = files[8]
    started = time.perf_counter()
    result, stall = await max_stall_while(tight.inspect(1, "x", data))
    refused = time.perf_counter() - started
    started = time.perf_counter()
    await tight.inspect(2, "small", encode(picture(400, 400), "PNG"))
    after = time.perf_counter() - started
    tight.close()
    pool.close()
    print(
        f"   the budget at work: {label} with a 1 s CPU budget → {result}"
        f"\n     refused after {refused:.2f} s; the next image, on a fresh worker: {after:.2f} s"
    )


def serve(conn: Connection) -> None:
    """Child process: serve /photo-N, /patho-KIND, and the hostile downloads on 127.0.0.1."""
    photos = {f"photo-{i}": encode(noise(1400, 1000, seed=i), "JPEG", quality=92) for i in range(2)}
    pathological = {
        "patho-rgba": encode(picture(10_000, 10_000, "RGBA"), "PNG"),
        "patho-flood": jpeg_with_segments(6_300_000),
        "patho-noise": encode(noise(2900, 2900), "PNG", compress_level=0),
    }
    bodies = {**photos, **pathological}
    one_byte_chunks = b"1\r\nx\r\n" * (8 * MiB)  # 8 MiB of payload, one byte per chunk
    zeros = gzip.compress(b"\0" * (40 * MiB), 9)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ")[1].decode().strip("/")
        if path in bodies:
            body = bodies[path]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        elif path == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(one_byte_chunks + b"0\r\n\r\n")
        elif path == "gzip":
            head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
            writer.write(head % len(zeros) + zeros)
        elif path == "trickle":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n")
            try:
                for _ in range(500):  # 5 s at most; the client gives up after 3
                    writer.write(b"x")
                    await writer.drain()
                    await asyncio.sleep(0.01)
            except ConnectionError:
                pass
        try:
            await writer.drain()
            writer.close()
        except ConnectionError:
            pass

    async def handle_quietly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handle(reader, writer)
        except asyncio.CancelledError:  # stopped mid-trickle: nothing left to tell
            pass

    async def main() -> None:
        server = await asyncio.start_server(handle_quietly, "127.0.0.1", 0)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        server.close()

    asyncio.run(main())


async def request(port: int, names: list[str], pool: InspectionPool) -> float:
    """One /video's intake of these served files; its wall seconds (refusals count as done)."""
    refs = [
        AttachmentRef(i, name, f"http://127.0.0.1:{port}/{name}") for i, name in enumerate(names, 1)
    ]
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        try:
            await prepare_images(session, refs, timeout=30, pool=pool)
        except ImageIntakeError:
            pass
    return time.perf_counter() - started


async def extra_wait(port: int) -> None:
    """Part 2: an ordinary request while others' pathological requests run."""
    pool = InspectionPool()
    pool.start()
    await asyncio.sleep(1.0)
    ordinary = ["photo-0", "photo-1"]
    alone = [await request(port, ordinary, pool) for _ in range(5)]
    baseline = statistics.median(alone)
    print(f"\n-- 2. an ordinary request (2 photos of ~1.5 MB) alone: median {baseline:.3f} s")

    async def beside(kind: str, users: int) -> tuple[float, float]:
        others = [
            asyncio.ensure_future(request(port, [f"patho-{kind}"] * 4, pool)) for _ in range(users)
        ]
        await asyncio.sleep(0.3)
        mine = await request(port, ordinary, pool)
        theirs = max(await asyncio.gather(*others))
        return mine, theirs

    for kind, what, users in [
        ("flood", "4 × the 24 MB comment-flood JPEG", 1),
        ("noise", "4 × a 25 MB noise PNG (re-encoded)", 1),
        ("rgba", "4 × a 10000×10000 RGBA PNG (scaled down)", 1),
        ("rgba", "4 × a 10000×10000 RGBA PNG, two users at once", 2),
    ]:
        mine, theirs = await beside(kind, users)
        extra = mine - baseline
        verdict = "met" if extra <= EXTRA_WAIT_TARGET else "MISSED"
        print(
            f"   beside {what}: {mine:.3f} s, extra wait {extra:+.3f} s"
            f" (target ≤ {EXTRA_WAIT_TARGET:g} s: {verdict}); theirs took {theirs:.1f} s"
        )
    pool.close()


async def downloads(port: int) -> None:
    """Part 3: downloads that try to hog the loop."""
    print("\n-- 3. hostile downloads (cap 25 MiB after decoding, 30 s per download)")
    async with aiohttp.ClientSession() as session:
        for path, what, seconds in [
            ("chunked", "8 MiB in 1-byte chunks (48 MiB on the wire)", 30.0),
            ("gzip", "gzip that inflates to 40 MiB (past the cap)", 30.0),
            ("trickle", "a byte every 10 ms, with a 3 s time-out", 3.0),
        ]:
            ref = AttachmentRef(1, path, f"http://127.0.0.1:{port}/{path}")
            started = time.perf_counter()
            cpu = time.process_time()
            fetch = fetch_all(session, [ref], seconds=seconds, max_bytes=MAX_DOWNLOAD_BYTES)
            result, stall = await max_stall_while(fetch)
            if isinstance(result, list) and isinstance(result[0], ImageProblem):
                problem = result[0]
                outcome = f"refused: {problem.code} {problem.params.get('reason', '')}"
            elif isinstance(result, list):
                outcome = f"{len(result[0]) / MiB:.1f} MiB downloaded"
            else:
                outcome = repr(result)
            print(
                f"   {what:<46} {outcome:<28} {time.perf_counter() - started:6.2f} s,"
                f" CPU {time.process_time() - cpu:5.2f} s,"
                f" longest loop stall {stall * 1000:6.1f} ms"
            )


def main() -> None:
    """All three parts."""
    random.seed(1)
    files = cases()
    asyncio.run(per_image(files))
    del files
    print("\nstarting the file server…", flush=True)
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(child,), daemon=True)
    server.start()
    port = parent.recv()
    try:
        asyncio.run(extra_wait(port))
        asyncio.run(downloads(port))
    finally:
        parent.send("stop")
        server.join(timeout=10)


if __name__ == "__main__":
    main()
