"""The endpoint's image rules, our own limits and budgets, and the values intake hands around."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MIN_IMAGES = 2
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_SIDE = 300
MAX_ASPECT = 2.5
# MAX_ASPECT as a fraction, for exact integer comparison: 2 * long side <= 5 * short side.
ASPECT_NUMERATOR = 5
ASPECT_DENOMINATOR = 2

# With auto-fix on, an image over MAX_IMAGE_BYTES can still be re-encoded, up to this hard cap.
MAX_DOWNLOAD_BYTES = 25 * 1024 * 1024
# A download arrives in pieces (what one socket read or one HTTP chunk brought): a real one in
# a few hundred, 25 MB in 1-byte chunks in 25 million. Past this many it is refused.
MAX_DOWNLOAD_PIECES = 65_536
# The largest image sent on (7071×7071); with auto-fix a larger one is scaled down to fit, if it
# has at most MAX_DECODE_PIXELS (10000×10000). Both are checked on the header, before any decode.
MAX_PIXELS = 50_000_000
MAX_DECODE_PIXELS = 100_000_000
MAX_FILENAME_CHARS = 40

# What reading one image may cost, in a worker process of its own (see bot.images.pool): CPU
# seconds, and memory on top of the idle worker. The heaviest legitimate image measured, a
# 100-megapixel RGBA PNG scaled down to fit, takes ~3 s and ~500 MB; a ~10 MB photo 0.05 s and
# 15 MB (benchmarks/bench_images.py, bench_images_hostile.py).
IMAGE_CPU_SECONDS = 10.0
IMAGE_MEMORY_BYTES = 768 * 1024 * 1024

ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}  # MPO is a phone JPEG
FIXABLE_FORMATS = frozenset({"WEBP", "GIF", "BMP", "TIFF"})

# One English template per code; the Discord side may pass another dict with the same keys
# (bot/strings.py has the Dutch ones).
PROBLEM_TEXT: dict[str, str] = {
    "label": "image {position} ({filename})",
    "count": "attach {min} to {max} images — you attached {count}",
    "download": "couldn't download {label}, try again",
    "too_big": "{label}: {size_mb:.1f} MB, must be at most {max_mb} MB — use a smaller image",
    "format": "{label}: {format} isn't accepted — use JPG or PNG",
    "not_image": "{label}: not an image file — use JPG or PNG",
    "corrupt": "{label}: the {format} file is damaged or incomplete — save it again as JPG or PNG",
    "bomb": (
        "{label}: {width}×{height} px is more than the {max_megapixels} megapixels allowed"
        " (for example {max_side}×{max_side} px) — use a smaller image"
    ),
    "too_slow": (
        "{label}: reading it took more than {seconds:g} seconds of work"
        " — save it again as JPG or PNG, or use a smaller image"
    ),
    "too_much_memory": (
        "{label}: reading it needs more than {memory_mb} MB of memory — use a smaller image"
    ),
    "unavailable": "{label}: couldn't be checked just now — try again in a minute",
    "too_small": "{label}: {width}×{height} px, needs at least {min}×{min} — use a larger image",
    "aspect": (
        "{label}: {width}×{height} px is {ratio}, needs between 1:{max} and {max}:1"
        " — crop it closer to square"
    ),
    "converted": "{label}: converted {source} to {target}",
    "reencoded": (
        "{label}: re-encoded from {size_mb:.1f} MB to {new_size_mb:.1f} MB"
        " to fit the {max_mb} MB limit"
    ),
    "downscaled": "{label}: scaled down from {width}×{height} to {new_width}×{new_height} px",
    "rotated": "{label}: turned upright (EXIF orientation {orientation})",
}

_MARKDOWN = re.compile(r"[\\*_~`|\[\]<>#]")


def display_filename(filename: str) -> str:
    """A user's filename made safe for a message: one line, at most ~40 chars, markdown escaped."""
    name = "".join(ch for ch in " ".join(filename.split()) if ch.isprintable()) or "?"
    if len(name) > MAX_FILENAME_CHARS:
        name = name[: MAX_FILENAME_CHARS - 9] + "…" + name[-8:]
    return _MARKDOWN.sub(r"\\\g<0>", name)


@dataclass(frozen=True)
class AttachmentRef:
    """What Discord tells us of one attachment."""

    position: int  # 1-based
    filename: str
    url: str
    size: int | None = None  # declared bytes
    content_type: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class ImageProblem:
    """One rule an image broke (or one change auto-fix made), as a code plus named values."""

    position: int
    filename: str
    code: str
    params: dict[str, object]

    def render(self, templates: Mapping[str, str] = PROBLEM_TEXT) -> str:
        """The message from `templates` (keyed by code, plus "label")."""
        label = templates["label"].format(
            position=self.position, filename=display_filename(self.filename)
        )
        return templates[self.code].format(label=label, **self.params)

    def english(self) -> str:
        """The message in English, e.g. "image 2 (tiny.png): 250×250 px, needs at least 300×300"."""
        return self.render(PROBLEM_TEXT)


class ImageIntakeError(Exception):
    """The images can't be used; carries every problem found, across all images."""

    def __init__(self, problems: Sequence[ImageProblem]) -> None:
        self.problems: tuple[ImageProblem, ...] = tuple(problems)
        super().__init__(self.english())

    def english(self) -> str:
        """Every problem in English, one per line."""
        return "\n".join(problem.english() for problem in self.problems)


@dataclass(frozen=True)
class PreparedImage:
    """An image that satisfies the endpoint's rules, ready to send."""

    position: int
    filename: str
    format: str  # "JPEG" or "PNG", of `data`
    width: int  # after EXIF orientation
    height: int
    data: bytes = field(repr=False)
    source_url: str
    changes: tuple[ImageProblem, ...] = ()


def too_big(position: int, filename: str, size: int) -> ImageProblem:
    """The problem of a file of `size` bytes."""
    params: dict[str, object] = {
        "size": size,
        "max": MAX_IMAGE_BYTES,
        "size_mb": size / 1024 / 1024,
        "max_mb": MAX_IMAGE_BYTES // 1024 // 1024,
    }
    return ImageProblem(position, filename, "too_big", params)


def too_many_pixels(
    position: int, filename: str, width: int, height: int, limit: int
) -> ImageProblem:
    """The problem of a width×height image over `limit` pixels (named with an example size)."""
    params: dict[str, object] = {
        "width": width,
        "height": height,
        "pixels": width * height,
        "max": limit,
        "max_megapixels": limit // 1_000_000,
        "max_side": math.isqrt(limit),
    }
    return ImageProblem(position, filename, "bomb", params)


def too_slow(position: int, filename: str, seconds: float) -> ImageProblem:
    """The problem of an image whose reading ran over its time budget."""
    return ImageProblem(position, filename, "too_slow", {"seconds": seconds})


def too_much_memory(position: int, filename: str, memory_bytes: int) -> ImageProblem:
    """The problem of an image whose reading ran over its memory budget."""
    params: dict[str, object] = {"memory_bytes": memory_bytes, "memory_mb": memory_bytes >> 20}
    return ImageProblem(position, filename, "too_much_memory", params)
