"""Downloading attachments: in parallel, streamed, each capped in bytes and in time."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

import aiohttp

from bot.images.rules import (
    DOWNLOAD_CHUNK_BYTES,
    MAX_IMAGE_BYTES,
    AttachmentRef,
    ImageIntakeError,
    ImageProblem,
    too_big,
)


async def fetch_images(
    session: aiohttp.ClientSession,
    refs: Sequence[AttachmentRef],
    *,
    timeout: float,  # noqa: ASYNC109 - the per-download limit, passed on to aiohttp
    max_bytes: int = MAX_IMAGE_BYTES,
) -> list[bytes]:
    """Download every attachment in parallel, streamed and capped at `max_bytes` each."""
    results = await fetch_all(session, refs, seconds=timeout, max_bytes=max_bytes)
    problems = [result for result in results if isinstance(result, ImageProblem)]
    if problems:
        raise ImageIntakeError(problems)
    return [result for result in results if isinstance(result, bytes)]


async def fetch_all(
    session: aiohttp.ClientSession,
    refs: Sequence[AttachmentRef],
    *,
    seconds: float,
    max_bytes: int,
) -> list[bytes | ImageProblem]:
    """Fetch all refs in parallel; each result is the bytes or the problem."""
    return list(
        await asyncio.gather(
            *(_fetch_one(session, ref, seconds=seconds, max_bytes=max_bytes) for ref in refs)
        )
    )


async def _fetch_one(
    session: aiohttp.ClientSession, ref: AttachmentRef, *, seconds: float, max_bytes: int
) -> bytes | ImageProblem:
    """Stream one attachment, holding at most `max_bytes` plus one chunk.

    Bounded however the server sends it: `seconds` for the whole download, `max_bytes` counted
    after any content decoding, so neither a trickle nor a compressed or finely chunked body
    can keep the event loop busy for longer or with more.
    """
    if ref.size is not None and ref.size > max_bytes:
        return too_big(ref.position, ref.filename, ref.size)

    def failed(reason: str, **params: object) -> ImageProblem:
        return ImageProblem(ref.position, ref.filename, "download", {"reason": reason, **params})

    try:
        async with session.get(
            ref.url,
            timeout=aiohttp.ClientTimeout(total=seconds),
            headers={"Accept-Encoding": "identity"},
        ) as response:
            if response.status != 200:
                return failed("http", status=response.status)
            if response.content_length is not None and response.content_length > max_bytes:
                return too_big(ref.position, ref.filename, response.content_length)
            buffer = io.BytesIO()
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
                if buffer.tell() + len(chunk) > max_bytes:
                    return too_big(ref.position, ref.filename, buffer.tell() + len(chunk))
                buffer.write(chunk)
            return buffer.getvalue()  # shares BytesIO's buffer, no copy
    except TimeoutError:
        return failed("timeout", seconds=seconds)
    except aiohttp.ClientError as error:  # refused, reset, DNS, a malformed URL, ...
        return failed("connection", error=type(error).__name__)
