"""Downloading attachments: in parallel, streamed, each capped in bytes and in time."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

import aiohttp

from bot.images.rules import (
    MAX_DOWNLOAD_PIECES,
    AttachmentRef,
    ImageProblem,
    too_big,
)


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
    """Stream one attachment, holding at most `max_bytes` plus the piece that went past it.

    Bounded however the server sends it: `seconds` for the whole download, `max_bytes` of
    body, and MAX_DOWNLOAD_PIECES pieces (a body cut into 1-byte chunks costs the event loop's
    process ~1 µs of CPU per piece: 25 MB of them would be 20 s). A compressed body is refused
    (we ask for none: images don't shrink, and inflating is work done on the loop).
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
            auto_decompress=False,
        ) as response:
            if response.status != 200:
                return failed("http", status=response.status)
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in {"", "identity"}:
                return failed("encoding", encoding=encoding[:40])
            if response.content_length is not None and response.content_length > max_bytes:
                return too_big(ref.position, ref.filename, response.content_length)
            buffer = io.BytesIO()
            pieces = 0
            async for piece, _ in response.content.iter_chunks():
                pieces += 1
                if pieces > MAX_DOWNLOAD_PIECES:
                    return failed("pieces", pieces=pieces)
                if buffer.tell() + len(piece) > max_bytes:
                    return too_big(ref.position, ref.filename, buffer.tell() + len(piece))
                buffer.write(piece)
            return buffer.getvalue()  # shares BytesIO's buffer, no copy
    except TimeoutError:
        return failed("timeout", seconds=seconds)
    except aiohttp.ClientError as error:  # refused, reset, DNS, a malformed URL, ...
        return failed("connection", error=type(error).__name__)
