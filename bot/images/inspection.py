"""Inspecting one image's real bytes: the rules, the file's structure, and a full decode.

`inspect_image` is plain, synchronous and CPU-heavy; the bot runs it in a worker process of
`InspectionPool` (bot/images/pool.py), which gives each image its time and memory budget.
"""

from __future__ import annotations

import io
import math
import re

from PIL import Image, ImageFile, PngImagePlugin, UnidentifiedImageError

from bot.images.fixing import autofix_image
from bot.images.rules import (
    ACCEPTED_FORMATS,
    ASPECT_DENOMINATOR,
    ASPECT_NUMERATOR,
    FIXABLE_FORMATS,
    MAX_ASPECT,
    MAX_DECODE_PIXELS,
    MAX_DOWNLOAD_BYTES,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    MIN_SIDE,
    ImageIntakeError,
    ImageProblem,
    PreparedImage,
    too_big,
    too_many_pixels,
)

EXIF_ORIENTATION = 274
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END_CHUNK = b"\0\0\0\0IEND\xaeB`\x82"  # always these 12 bytes
JPEG_START = b"\xff\xd8\xff"
JPEG_END_MARKER = b"\xff\xd9"

# Pillow walks a file's structure in Python, a byte or a chunk at a time, before any decode;
# past these counts no real encoder goes, and the walk would take seconds (a 24 MB JPEG of
# 6.3 million empty comments: 12.8 s). Checked first, at C speed, and refused as damaged.
MAX_JPEG_SEGMENTS = 2_000  # markers and stray runs before the first scan (a photo has ~15)
MAX_JPEG_PADDING = 64 * 1024  # fill (FF) and stray bytes before the first scan (normally 0)
MAX_PNG_CHUNKS = 50_000  # even one IDAT per row of a 7071×7071 image is far fewer
# A PNG's colour profile may be this large once decompressed (Pillow's own cap is 1 MB, which
# refused valid 1.5 MB profiles that a JPEG may carry).
MAX_ICC_PROFILE_BYTES = 16 * 1024 * 1024

_FILL = re.compile(rb"\xff+")


def configure_pillow() -> None:
    """Set Pillow's process-wide limits as intake needs them (idempotent, cheap).

    Pixels are checked by intake itself, on the header and before any decode, against
    MAX_PIXELS / MAX_DECODE_PIXELS, so Pillow's own check (a warning at 89 MP) is off.
    """
    Image.MAX_IMAGE_PIXELS = None
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    PngImagePlugin.MAX_TEXT_CHUNK = max(PngImagePlugin.MAX_TEXT_CHUNK, MAX_ICC_PROFILE_BYTES)


def inspect_image(
    position: int, filename: str, data: bytes, *, autofix: bool = True, source_url: str = ""
) -> PreparedImage:
    """Check one image's real bytes against every rule, auto-fixing what can be fixed.

    An image is accepted only when all of its pixels decode; everything else raises
    ImageIntakeError (MemoryError is left to the caller, which owns the memory budget).
    """

    def problem(code: str, **params: object) -> ImageProblem:
        return ImageProblem(position, filename, code, params)

    if len(data) > (MAX_DOWNLOAD_BYTES if autofix else MAX_IMAGE_BYTES):
        raise ImageIntakeError([too_big(position, filename, len(data))])
    configure_pillow()
    layout = _layout_problem(data)
    if layout is not None:
        raise ImageIntakeError([problem("corrupt", format=layout[0], detail=layout[1])])
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageIntakeError([problem("not_image")]) from None
    except MemoryError:
        raise
    except Exception as error:  # any parser failure on untrusted bytes
        raise ImageIntakeError([problem("corrupt", format="image", detail=str(error))]) from None

    with image:
        source_format = image.format or "?"
        orientation = _orientation(image)
        width, height = image.size
        if orientation in SWAPPING_ORIENTATIONS:
            width, height = height, width
        limit = MAX_DECODE_PIXELS if autofix else MAX_PIXELS
        if width * height > limit:
            raise ImageIntakeError([too_many_pixels(position, filename, width, height, limit)])

        problems = _size_problems(position, filename, width, height)
        accepted = ACCEPTED_FORMATS.get(source_format)
        if accepted is None and not (autofix and source_format in FIXABLE_FORMATS):
            problems.append(problem("format", format=source_format))
        if accepted is not None:
            detail = _structure_error(image, data)
            if detail:
                problems.append(problem("corrupt", format=accepted, detail=detail))
        if problems:
            raise ImageIntakeError(problems)

    needs_fix = (
        accepted is None
        or len(data) > MAX_IMAGE_BYTES
        or orientation != 1
        or width * height > MAX_PIXELS
    )
    try:
        if accepted is not None and not (autofix and needs_fix):
            _decode_fully(data)
            return PreparedImage(position, filename, accepted, width, height, data, source_url)
        return autofix_image(position, filename, data, orientation, source_url)
    except (ImageIntakeError, MemoryError):
        raise
    except Exception as error:  # a full decode of untrusted bytes failed
        detail = str(error) or type(error).__name__
        corrupt = problem("corrupt", format=accepted or source_format, detail=detail)
        raise ImageIntakeError([corrupt]) from None


# --- the file's structure, before Pillow ---


def _layout_problem(data: bytes) -> tuple[str, str] | None:
    """(format, why) when a JPEG's or PNG's layout is past what any encoder writes, else None."""
    if data.startswith(JPEG_START):
        detail = _jpeg_layout(data)[1]
        return ("JPEG", detail) if detail else None
    if data.startswith(PNG_SIGNATURE):
        chunks = 0
        position = len(PNG_SIGNATURE)
        while position + 8 <= len(data) and data[position + 4 : position + 8] != b"IEND":
            chunks += 1
            if chunks > MAX_PNG_CHUNKS:
                return "PNG", f"more than {MAX_PNG_CHUNKS} chunks"
            position += 12 + int.from_bytes(data[position : position + 4], "big")
    return None


def _jpeg_layout(data: bytes) -> tuple[int, str]:
    """(offset of the first start-of-scan marker or -1, why the layout is refused or "").

    Walks the segments before the first scan as decoders do: runs of FF fill and stray bytes
    are skipped (found with C-speed searches, not byte by byte), and both are counted.
    """
    position = 2  # after SOI
    events = padding = 0
    while position < len(data):
        events += 1
        if events > MAX_JPEG_SEGMENTS:
            return -1, f"more than {MAX_JPEG_SEGMENTS} segments before the image data"
        if padding > MAX_JPEG_PADDING:
            return -1, f"more than {MAX_JPEG_PADDING} bytes of padding before the image data"
        if data[position] != 0xFF:  # stray bytes: on to the next FF
            next_marker = data.find(b"\xff", position)
            if next_marker < 0:
                break
            padding += next_marker - position
            position = next_marker
            continue
        fill = _FILL.match(data, position)
        assert fill is not None  # data[position] is FF
        marker_at = fill.end()  # the byte after the last FF of the run
        padding += marker_at - position - 1
        if marker_at >= len(data):
            break
        marker = data[marker_at]
        if marker == 0xDA:
            return marker_at - 1, ""
        if marker == 0x00:  # an escaped FF outside a scan: stray
            padding += 2
            position = marker_at + 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            position = marker_at + 1
        else:
            position = marker_at + 1 + int.from_bytes(data[marker_at + 1 : marker_at + 3], "big")
    return -1, ""


def _structure_error(image: ImageFile.ImageFile, data: bytes) -> str:
    """Why a JPEG or PNG is cut off or broken ("" when sound), without decoding pixels."""
    if image.format == "PNG":
        try:
            image.verify()  # walks every chunk up to IEND and checks each CRC
        except MemoryError:
            raise
        except Exception as error:  # Pillow raises several types here
            return str(error) or type(error).__name__
        return "" if data.rfind(PNG_END_CHUNK) != -1 else "incomplete IEND chunk"
    # JPEG: FF D9 can't occur inside entropy-coded data, so an end marker after the first scan's
    # start means the file wasn't cut off (bytes after it, as some cameras add, are fine).
    scan_start = _jpeg_layout(data)[0]
    if scan_start < 0:
        return "no image data"
    return "" if data.rfind(JPEG_END_MARKER) > scan_start else "no end-of-image marker"


def _decode_fully(data: bytes) -> None:
    """Decode every pixel and throw them away; raises what Pillow raises on broken pixel data.

    A JPEG is decoded at 1/8 scale: all of its entropy-coded data is still read and checked,
    in 1/64 of the memory.
    """
    with Image.open(io.BytesIO(data)) as image:
        if image.format in {"JPEG", "MPO"}:
            width, height = image.size
            image.draft(image.mode, (math.ceil(width / 8), math.ceil(height / 8)))
        image.load()


# --- what the header tells ---


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8), 1 when absent or unreadable; never decodes pixels."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # PngImageFile.getexif() would decode the whole image to look further
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except MemoryError:
        raise
    except Exception:  # broken EXIF is ignored, like browsers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _size_problems(position: int, filename: str, width: int, height: int) -> list[ImageProblem]:
    """The side-length and aspect-ratio problems of an upright width×height."""
    problems = []
    if width < MIN_SIDE or height < MIN_SIDE:
        params: dict[str, object] = {"width": width, "height": height, "min": MIN_SIDE}
        problems.append(ImageProblem(position, filename, "too_small", params))
    long_side, short_side = max(width, height), min(width, height)
    if ASPECT_DENOMINATOR * long_side > ASPECT_NUMERATOR * short_side:
        ratio = (
            f"{width / max(height, 1):.2f}:1"
            if width >= height
            else f"1:{height / max(width, 1):.2f}"
        )
        params = {"width": width, "height": height, "ratio": ratio, "max": MAX_ASPECT}
        problems.append(ImageProblem(position, filename, "aspect", params))
    return problems
