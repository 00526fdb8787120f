"""Image intake: fetch 2–4 attachments, inspect their real bytes and validate them for Kling.

The parts: `rules` (the limits and the values handed around), `fetching` (downloads),
`inspection` and `fixing` (Pillow, run in worker processes), `pool`, `protocol` and `worker`
(those processes and their budgets), `intake` (`prepare_images`, the whole of one request).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.images.inspection import inspect_image
    from bot.images.intake import prepare_images
    from bot.images.pool import InspectionPool, JobFigures, default_pool
    from bot.images.rules import (
        ACCEPTED_FORMATS,
        FIXABLE_FORMATS,
        IMAGE_CPU_SECONDS,
        IMAGE_MEMORY_BYTES,
        MAX_ASPECT,
        MAX_DECODE_PIXELS,
        MAX_DOWNLOAD_BYTES,
        MAX_DOWNLOAD_PIECES,
        MAX_IMAGE_BYTES,
        MAX_IMAGES,
        MAX_PIXELS,
        MIN_IMAGES,
        MIN_SIDE,
        PROBLEM_TEXT,
        AttachmentRef,
        ImageIntakeError,
        ImageProblem,
        PreparedImage,
        display_filename,
    )

# Loaded on first use, so that a worker process (which needs only Pillow and the rules) starts
# without aiohttp and asyncio: half the start time and memory.
_HOMES = {
    "inspect_image": "inspection",
    "prepare_images": "intake",
    "InspectionPool": "pool",
    "JobFigures": "pool",
    "default_pool": "pool",
}


def __getattr__(name: str) -> object:
    """A public name, imported from its module on first use."""
    home = _HOMES.get(name, "rules" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ACCEPTED_FORMATS",
    "FIXABLE_FORMATS",
    "IMAGE_CPU_SECONDS",
    "IMAGE_MEMORY_BYTES",
    "MAX_ASPECT",
    "MAX_DECODE_PIXELS",
    "MAX_DOWNLOAD_BYTES",
    "MAX_DOWNLOAD_PIECES",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MIN_IMAGES",
    "MIN_SIDE",
    "PROBLEM_TEXT",
    "AttachmentRef",
    "ImageIntakeError",
    "ImageProblem",
    "InspectionPool",
    "JobFigures",
    "PreparedImage",
    "default_pool",
    "display_filename",
    "inspect_image",
    "prepare_images",
]
