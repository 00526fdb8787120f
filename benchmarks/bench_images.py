"""Image intake figures: four ~10 MB images from a loopback server through prepare_images.

Run: `python benchmarks/bench_images.py`. Prints figures and compares them with the targets;
asserts nothing. The server runs in a child process so its copies of the images don't count
against the intake.

The images are read in worker processes (bot/images/pool.py) and every pixel is
decoded, so the figures are split by process:

- CPU: the target (≤ 100 ms for four images) is the bot process's CPU for inspection — what
  competes with every other request on the event loop's process. The workers' CPU (the full
  decode) is printed beside it; it runs on other cores, one image at a time per request.
- memory: the target (peak ≤ 3× the image bytes) is for the bot process and the worker
  together. The bot process is measured with tracemalloc over the whole intake (download,
  inspection, base64 of all four); a worker by its peak growth during one image (VmHWM in
  /proc, reset before each image, minus its resident size when the image arrived; the idle
  worker's ~30 MB of interpreter and Pillow isn't intake memory). A request's images go to
  the workers one after another, so the intake's peak is the larger of the bot process's own
  peak and, for each image, what the bot process held when it sent the image plus that
  image's worker growth. The plain sum of both peaks, which never happen at once (the bot's
  comes at the end, with the base64 of all four), is printed as an upper bound.
"""

from __future__ import annotations

import asyncio
import base64
import io
import multiprocessing
import os
import resource
import sys
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from PIL import Image

from bot.images import MAX_IMAGE_BYTES, AttachmentRef, InspectionPool, prepare_images

INSPECT_CPU_TARGET_SECONDS = 0.100
MEMORY_TARGET_FACTOR = 3.0
NAMES = ("noise-1.png", "noise-2.jpg", "noise-3.png", "noise-4.jpg")


def noise_image(image_format: str) -> bytes:
    """An incompressible image of the format, as close under MAX_IMAGE_BYTES as a search gets."""
    bytes_per_pixel = 3.0 if image_format == "PNG" else 2.0
    pixels = MAX_IMAGE_BYTES / bytes_per_pixel
    while True:
        width = int((pixels * 1.2) ** 0.5)
        height = int(pixels / width)
        image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
        buffer = io.BytesIO()
        if image_format == "PNG":
            image.save(buffer, "PNG", compress_level=0)
        else:
            image.save(buffer, "JPEG", quality=100)
        size = len(buffer.getvalue())
        if 0.97 * MAX_IMAGE_BYTES <= size <= MAX_IMAGE_BYTES:
            return buffer.getvalue()
        pixels *= 0.985 * MAX_IMAGE_BYTES / size


def serve(conn: Connection) -> None:
    """Child process: make the images, serve them on 127.0.0.1, send back the port and sizes."""
    bodies = {name: noise_image("PNG" if name.endswith(".png") else "JPEG") for name in NAMES}

    async def file(request: web.Request) -> web.Response:
        return web.Response(body=bodies[request.match_info["name"]])

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{name}", file)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        conn.send((port, {name: len(body) for name, body in bodies.items()}))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # wait for "stop"
        await runner.cleanup()

    asyncio.run(main())


async def intake(
    port: int, sizes: dict[str, int], pool: InspectionPool
) -> tuple[list[bytes], float]:
    """One full intake (fetch, inspect, base64 of all four); returns the data and wall seconds."""
    refs = [
        AttachmentRef(i, name, f"http://127.0.0.1:{port}/{name}", size=sizes[name])
        for i, name in enumerate(NAMES, 1)
    ]
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        prepared = await prepare_images(session, refs, timeout=30, pool=pool)
        values = [base64.b64encode(image.data).decode("ascii") for image in prepared]
        wall = time.perf_counter() - start
    assert all(not image.changes for image in prepared), "benchmark images should pass as-is"
    assert sum(len(value) for value in values) > 0
    return [image.data for image in prepared], wall


class TracedPool(InspectionPool):
    """A pool that notes the bot process's traced memory each time it sends an image."""

    held: list[int]

    async def inspect(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self.held.append(tracemalloc.get_traced_memory()[0])
        return await super().inspect(*args, **kwargs)  # type: ignore[arg-type]


async def inspect_all(pool: InspectionPool, datas: list[bytes]) -> None:
    """Inspect the four downloaded images as prepare_images does: one after another."""
    for position, (name, data) in enumerate(zip(NAMES, datas, strict=True), 1):
        await pool.inspect(position, name, data)


def main() -> None:
    """Start the server, run the intake, print the figures."""
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(child,), daemon=True)
    server.start()
    port, sizes = parent.recv()
    total = sum(sizes.values())
    print(f"images: {', '.join(f'{n} {s / 2**20:.2f} MiB' for n, s in sizes.items())}")
    print(f"total image bytes: {total / 2**20:.1f} MiB")

    pool = TracedPool()
    pool.held = []
    try:
        started = time.perf_counter()
        pool.start()
        rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        datas, cold_wall = asyncio.run(intake(port, sizes, pool))
        rss_delta = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) * 1024
        cold_total = time.perf_counter() - started
        _, warm_wall = asyncio.run(intake(port, sizes, pool))

        pool.figures.clear()
        cpu_start = time.process_time()
        asyncio.run(inspect_all(pool, datas))
        inspect_cpu = time.process_time() - cpu_start
        worker_cpu = sum(figures.cpu_seconds for figures in pool.figures)
        per_image = ", ".join(f"{f.cpu_seconds * 1000:.0f}" for f in pool.figures)
        del datas

        pool.figures.clear()
        pool.held.clear()
        tracemalloc.start()
        asyncio.run(intake(port, sizes, pool))
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        growths = [f.peak_bytes - f.start_bytes for f in pool.figures]
        worker_peak = max(growths)
        worker_resident = max(f.start_bytes for f in pool.figures)
    finally:
        pool.close()
        parent.send("stop")
        server.join(timeout=10)

    def verdict(ok: bool) -> str:
        return "OK" if ok else "OVER TARGET"

    limit = MEMORY_TARGET_FACTOR * total
    coincident = max(traced_peak, *(held + g for held, g in zip(pool.held, growths, strict=True)))
    upper = traced_peak + worker_peak
    print(f"worker pool of {len(pool._workers)}")
    print(
        f"wall time, prepare_images + base64 of 4: cold {cold_wall * 1000:.0f} ms"
        f" (workers starting; {cold_total * 1000:.0f} ms from pool.start()),"
        f" warm {warm_wall * 1000:.0f} ms"
    )
    print(
        f"inspection CPU for 4 in the bot process (process_time): {inspect_cpu * 1000:.1f} ms"
        f" (target ≤ {INSPECT_CPU_TARGET_SECONDS * 1000:.0f} ms)"
        f" {verdict(inspect_cpu <= INSPECT_CPU_TARGET_SECONDS)}"
    )
    print(
        f"  + in the workers (full decode, other cores): {worker_cpu * 1000:.0f} ms"
        f" ({per_image} ms per image)"
    )
    print(
        f"peak memory of the intake: {coincident / 2**20:.1f} MiB ="
        f" {coincident / total:.2f}× image bytes (target ≤ {MEMORY_TARGET_FACTOR:.0f}×)"
        f" {verdict(coincident <= limit)}"
    )
    print(
        f"  bot process {traced_peak / 2**20:.1f} MiB (tracemalloc peak; while sending images"
        f" {', '.join(f'{h / 2**20:.0f}' for h in pool.held)} MiB)"
    )
    print(
        f"  upper bound, both peaks added: {upper / 2**20:.1f} MiB = {upper / total:.2f}×"
        f" {verdict(upper <= limit)}"
    )
    print(
        f"  worker growth per image: {', '.join(f'{g / 2**20:.1f}' for g in growths)} MiB;"
        f" an idle worker is resident at ~{worker_resident / 2**20:.0f} MiB (not counted)"
    )
    print(
        f"  bot process ru_maxrss delta over the cold intake: {rss_delta / 2**20:.1f} MiB ="
        f" {rss_delta / total:.2f}× image bytes (includes library warm-up)"
    )


if __name__ == "__main__":
    main()
