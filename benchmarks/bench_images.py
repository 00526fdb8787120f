"""Image intake figures: four ~10 MB images from a loopback server through prepare_images.

Run: `python benchmarks/bench_images.py`. Prints figures and compares them with the targets
(inspection ≤ 100 ms CPU for four images; peak memory ≤ 3× the image bytes); asserts nothing.
The server runs in a child process so its copies of the images don't count against the intake.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import resource
import time
import tracemalloc
from multiprocessing.connection import Connection

import aiohttp
from aiohttp import web
from PIL import Image

from bot.config import ImageTransport
from bot.images import MAX_IMAGE_BYTES, AttachmentRef, inspect_image, prepare_images

INSPECT_CPU_TARGET_SECONDS = 0.100
MEMORY_TARGET_FACTOR = 3.0
NAMES = ("noise-1.png", "noise-2.jpg", "noise-3.png", "noise-4.jpg")


def noise_image(image_format: str) -> bytes:
    """An incompressible image of the format, as close under MAX_IMAGE_BYTES as a quick search gets."""
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


async def intake(port: int, sizes: dict[str, int]) -> tuple[list[bytes], float]:
    """One full intake (fetch, inspect, base64 of all four); returns the data and wall seconds."""
    refs = [
        AttachmentRef(i, name, f"http://127.0.0.1:{port}/{name}", size=sizes[name])
        for i, name in enumerate(NAMES, 1)
    ]
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        prepared = await prepare_images(session, refs, timeout=30)
        values = [image.api_value(ImageTransport.BASE64) for image in prepared]
        wall = time.perf_counter() - start
    assert all(not image.changes for image in prepared), "benchmark images should pass as-is"
    assert sum(len(value) for value in values) > 0
    return [image.data for image in prepared], wall


def main() -> None:
    """Start the server, run the intake, print the figures."""
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(child,), daemon=True)
    server.start()
    port, sizes = parent.recv()
    total = sum(sizes.values())
    print(f"images: {', '.join(f'{n} {s / 2**20:.2f} MiB' for n, s in sizes.items())}")
    print(f"total image bytes: {total / 2**20:.1f} MiB")

    try:
        rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        datas, wall = asyncio.run(intake(port, sizes))
        rss_delta = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) * 1024

        cpu_start = time.process_time()
        for position, (name, data) in enumerate(zip(NAMES, datas, strict=True), 1):
            inspect_image(position, name, data)
        inspect_cpu = time.process_time() - cpu_start
        del datas

        tracemalloc.start()
        asyncio.run(intake(port, sizes))
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        parent.send("stop")
        server.join(timeout=10)

    def verdict(ok: bool) -> str:
        return "OK" if ok else "OVER TARGET"

    limit = MEMORY_TARGET_FACTOR * total
    print(f"wall time, prepare_images + base64 of 4: {wall * 1000:.0f} ms")
    print(
        f"inspection CPU for 4 (process_time): {inspect_cpu * 1000:.1f} ms"
        f" (target ≤ {INSPECT_CPU_TARGET_SECONDS * 1000:.0f} ms)"
        f" {verdict(inspect_cpu <= INSPECT_CPU_TARGET_SECONDS)}"
    )
    print(
        f"peak memory, tracemalloc: {traced_peak / 2**20:.1f} MiB ="
        f" {traced_peak / total:.2f}× image bytes (target ≤ {MEMORY_TARGET_FACTOR:.0f}×)"
        f" {verdict(traced_peak <= limit)}"
    )
    print(
        f"peak memory, ru_maxrss delta: {rss_delta / 2**20:.1f} MiB ="
        f" {rss_delta / total:.2f}× image bytes (includes interpreter/library warm-up)"
        f" {verdict(rss_delta <= limit)}"
    )


if __name__ == "__main__":
    main()
