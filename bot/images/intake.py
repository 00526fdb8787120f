"""The whole intake of one request: count, download, inspect (in the worker pool)."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp

from bot.images.fetching import fetch_all
from bot.images.pool import InspectionPool, default_pool
from bot.images.rules import (
    MAX_DOWNLOAD_BYTES,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    MIN_IMAGES,
    AttachmentRef,
    ImageIntakeError,
    ImageProblem,
    PreparedImage,
)


async def prepare_images(
    session: aiohttp.ClientSession,
    refs: Sequence[AttachmentRef],
    *,
    autofix: bool = True,
    timeout: float = 30.0,  # noqa: ASYNC109 - the per-download limit, passed on to aiohttp
    pool: InspectionPool | None = None,
) -> list[PreparedImage]:
    """Count, fetch and inspect the attachments; raise one error listing every problem found.

    The images of one request are inspected one after another, so a request holds at most one
    of the pool's workers: another user's request always finds the others.
    """
    if not MIN_IMAGES <= len(refs) <= MAX_IMAGES:
        count = ImageProblem(
            0, "", "count", {"min": MIN_IMAGES, "max": MAX_IMAGES, "count": len(refs)}
        )
        raise ImageIntakeError([count])
    max_bytes = MAX_DOWNLOAD_BYTES if autofix else MAX_IMAGE_BYTES
    results = await fetch_all(session, refs, seconds=timeout, max_bytes=max_bytes)
    inspector = pool if pool is not None else default_pool()

    prepared: list[PreparedImage] = []
    problems: list[ImageProblem] = []
    for ref, result in zip(refs, results, strict=True):
        if isinstance(result, ImageProblem):
            problems.append(result)
            continue
        try:
            prepared.append(
                await inspector.inspect(
                    ref.position, ref.filename, result, autofix=autofix, source_url=ref.url
                )
            )
        except ImageIntakeError as error:
            problems.extend(error.problems)
    if problems:
        raise ImageIntakeError(problems)
    return prepared
