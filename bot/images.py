"""Image intake: fetch 2–4 attachments, inspect their real bytes and validate them for Kling."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from bot.config import ImageTransport

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
DOWNLOAD_CHUNK_BYTES = 64 * 1024
# More pixels than this is refused before any decode (Pillow's own warning starts at ~89 MP).
MAX_PIXELS = 50_000_000
MAX_FILENAME_CHARS = 40

ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}  # MPO is a phone JPEG
FIXABLE_FORMATS = frozenset({"WEBP", "GIF", "BMP", "TIFF"})
JPEG_QUALITIES = (95, 90, 80, 70)
EXIF_ORIENTATION = 274
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
PNG_END_CHUNK = b"\0\0\0\0IEND\xaeB`\x82"  # always these 12 bytes
JPEG_END_MARKER = b"\xff\xd9"

# One English template per code; the Discord side may pass another dict with the same keys.
PROBLEM_TEXT: dict[str, str] = {
    "label": "image {position} ({filename})",
    "count": "attach {min} to {max} images — you attached {count}",
    "download": "couldn't download {label}, try again",
    "too_big": "{label}: {size_mb:.1f} MB, must be at most {max_mb} MB — use a smaller image",
    "format": "{label}: {format} isn't accepted — use JPG or PNG",
    "not_image": "{label}: not an image file — use JPG or PNG",
    "corrupt": "{label}: the {format} file is damaged or incomplete — save it again as JPG or PNG",
    "bomb": (
        "{label}: {megapixels:.1f} megapixels, more than the {max_megapixels} allowed"
        " — use a smaller image"
    ),
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
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
# warnings.catch_warnings() changes process-wide state; keep our own threads from interleaving.
_OPEN_LOCK = threading.Lock()


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

    def api_value(self, transport: ImageTransport) -> str:
        """The `image` value for the API: the source URL if asked and unchanged, else raw base64."""
        if transport is ImageTransport.URL and self.source_url and not self.changes:
            return self.source_url
        return base64.b64encode(self.data).decode("ascii")


def inspect_image(
    position: int, filename: str, data: bytes, *, autofix: bool = True, source_url: str = ""
) -> PreparedImage:
    """Check one image's real bytes against every rule, auto-fixing what can be fixed."""

    def problem(code: str, **params: object) -> ImageProblem:
        return ImageProblem(position, filename, code, params)

    if len(data) > (MAX_DOWNLOAD_BYTES if autofix else MAX_IMAGE_BYTES):
        raise ImageIntakeError([_too_big(position, filename, len(data))])
    try:
        image, orientation = _open_header(data)
    except UnidentifiedImageError:
        raise ImageIntakeError([problem("not_image")]) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        match = _BOMB_PIXELS.search(str(error))
        pixels = int(match.group(1)) if match else MAX_PIXELS + 1
        raise ImageIntakeError([_bomb(position, filename, pixels)]) from None
    except Exception as error:  # any parser failure on untrusted bytes
        raise ImageIntakeError([problem("corrupt", format="image", detail=str(error))]) from None

    with image:
        source_format = image.format or "?"
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageIntakeError([_bomb(position, filename, width * height)])
        if orientation in SWAPPING_ORIENTATIONS:
            width, height = height, width

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

    needs_fix = accepted is None or len(data) > MAX_IMAGE_BYTES or orientation != 1
    if accepted is not None and not (autofix and needs_fix):
        return PreparedImage(position, filename, accepted, width, height, data, source_url)
    try:
        return _autofix(position, filename, data, source_format, orientation, source_url)
    except ImageIntakeError:
        raise
    except Exception as error:  # a full decode of untrusted bytes failed
        detail = str(error)
        raise ImageIntakeError([problem("corrupt", format=source_format, detail=detail)]) from None


async def fetch_images(
    session: aiohttp.ClientSession,
    refs: Sequence[AttachmentRef],
    *,
    timeout: float,  # noqa: ASYNC109 - the per-download limit, passed on to aiohttp
    max_bytes: int = MAX_IMAGE_BYTES,
) -> list[bytes]:
    """Download every attachment in parallel, streamed and capped at `max_bytes` each."""
    results = await _fetch_all(session, refs, seconds=timeout, max_bytes=max_bytes)
    problems = [result for result in results if isinstance(result, ImageProblem)]
    if problems:
        raise ImageIntakeError(problems)
    return [result for result in results if isinstance(result, bytes)]


async def prepare_images(
    session: aiohttp.ClientSession,
    refs: Sequence[AttachmentRef],
    *,
    autofix: bool = True,
    timeout: float = 30.0,  # noqa: ASYNC109 - the per-download limit, passed on to aiohttp
) -> list[PreparedImage]:
    """Count, fetch and inspect the attachments; raise one error listing every problem found."""
    if not MIN_IMAGES <= len(refs) <= MAX_IMAGES:
        count = ImageProblem(
            0, "", "count", {"min": MIN_IMAGES, "max": MAX_IMAGES, "count": len(refs)}
        )
        raise ImageIntakeError([count])
    max_bytes = MAX_DOWNLOAD_BYTES if autofix else MAX_IMAGE_BYTES
    results = await _fetch_all(session, refs, seconds=timeout, max_bytes=max_bytes)

    prepared: list[PreparedImage] = []
    problems: list[ImageProblem] = []
    for ref, result in zip(refs, results, strict=True):
        if isinstance(result, ImageProblem):
            problems.append(result)
            continue
        # One image at a time, off the event loop: auto-fix may decode and encode for seconds.
        try:
            prepared.append(
                await asyncio.to_thread(
                    inspect_image,
                    ref.position,
                    ref.filename,
                    result,
                    autofix=autofix,
                    source_url=ref.url,
                )
            )
        except ImageIntakeError as error:
            problems.extend(error.problems)
    if problems:
        raise ImageIntakeError(problems)
    return prepared


# --- fetching ---


async def _fetch_all(
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
    """Stream one attachment, holding at most `max_bytes` plus one chunk."""
    if ref.size is not None and ref.size > max_bytes:
        return _too_big(ref.position, ref.filename, ref.size)

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
                return _too_big(ref.position, ref.filename, response.content_length)
            buffer = io.BytesIO()
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
                if buffer.tell() + len(chunk) > max_bytes:
                    return _too_big(ref.position, ref.filename, buffer.tell() + len(chunk))
                buffer.write(chunk)
            return buffer.getvalue()  # shares BytesIO's buffer, no copy
    except TimeoutError:
        return failed("timeout", seconds=seconds)
    except aiohttp.ClientError as error:  # refused, reset, DNS, a malformed URL, ...
        return failed("connection", error=type(error).__name__)


# --- inspecting ---


def _open_header(data: bytes) -> tuple[ImageFile.ImageFile, int]:
    """Open `data` and read its EXIF orientation, header only; too many pixels raises."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow's notes on damaged metadata
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        return image, _orientation(image)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8), 1 when absent or unreadable; never decodes pixels."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1  # PngImageFile.getexif() would decode the whole image to look further
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
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


def _structure_error(image: ImageFile.ImageFile, data: bytes) -> str:
    """Why a JPEG or PNG is cut off or broken ("" when sound), without decoding pixels."""
    if image.format == "PNG":
        try:
            image.verify()  # walks every chunk up to IEND and checks each CRC
        except Exception as error:  # Pillow raises several types here
            return str(error) or type(error).__name__
        return "" if data.rfind(PNG_END_CHUNK) != -1 else "incomplete IEND chunk"
    # JPEG: FF D9 can't occur inside entropy-coded data, so an end marker after the first scan's
    # start means the file wasn't cut off (bytes after it, as some cameras add, are fine).
    scan_start = _jpeg_scan_start(data)
    if scan_start < 0:
        return "no image data"
    return "" if data.rfind(JPEG_END_MARKER) > scan_start else "no end-of-image marker"


def _jpeg_scan_start(data: bytes) -> int:
    """Offset of the first start-of-scan marker, walking the segments; -1 if there is none."""
    position = 2  # after SOI
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:
            return position
        if marker == 0xFF:  # fill byte
            position += 1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            position += 2
        else:
            position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return -1


def _too_big(position: int, filename: str, size: int) -> ImageProblem:
    """The problem of a file of `size` bytes."""
    params: dict[str, object] = {
        "size": size,
        "max": MAX_IMAGE_BYTES,
        "size_mb": size / 1024 / 1024,
        "max_mb": MAX_IMAGE_BYTES // 1024 // 1024,
    }
    return ImageProblem(position, filename, "too_big", params)


def _bomb(position: int, filename: str, pixels: int) -> ImageProblem:
    """The problem of an image claiming `pixels` pixels."""
    params: dict[str, object] = {
        "pixels": pixels,
        "max": MAX_PIXELS,
        "megapixels": pixels / 1_000_000,
        "max_megapixels": MAX_PIXELS // 1_000_000,
    }
    return ImageProblem(position, filename, "bomb", params)


# --- auto-fix ---


def _autofix(
    position: int,
    filename: str,
    data: bytes,
    source_format: str,
    orientation: int,
    source_url: str,
) -> PreparedImage:
    """Decode fully, turn upright, and encode as PNG or JPEG under MAX_IMAGE_BYTES."""

    def change(code: str, **params: object) -> ImageProblem:
        return ImageProblem(position, filename, code, params)

    changes: list[ImageProblem] = []
    with Image.open(io.BytesIO(data)) as source:
        source.load()  # for GIF and other animations: the first frame
        image: Image.Image = source
        if orientation != 1:
            image = ImageOps.exif_transpose(source)
            changes.append(change("rotated", orientation=orientation))
        original_size = image.size
        png_first = ACCEPTED_FORMATS.get(source_format) != "JPEG"
        encoded = _encode_under_limit(image, png_first=png_first)
    if encoded is None:  # not expected: a 300 px wide JPEG is far below the limit
        raise ImageIntakeError([_too_big(position, filename, len(data))])
    new_data, new_format, new_size = encoded

    if new_format != ACCEPTED_FORMATS.get(source_format):
        changes.append(change("converted", source=source_format, target=new_format))
    if len(data) > MAX_IMAGE_BYTES:
        changes.append(
            change(
                "reencoded",
                size_mb=len(data) / 1024 / 1024,
                new_size_mb=len(new_data) / 1024 / 1024,
                max_mb=MAX_IMAGE_BYTES // 1024 // 1024,
            )
        )
    if new_size != original_size:
        width, height = original_size
        new_width, new_height = new_size
        changes.append(
            change(
                "downscaled",
                width=width,
                height=height,
                new_width=new_width,
                new_height=new_height,
            )
        )
    return PreparedImage(
        position,
        filename,
        new_format,
        new_size[0],
        new_size[1],
        new_data,
        source_url,
        tuple(changes),
    )


def _encode_under_limit(
    image: Image.Image, *, png_first: bool
) -> tuple[bytes, str, tuple[int, int]] | None:
    """PNG if asked and it fits, else JPEG at falling quality, then smaller (sides stay ≥ 300)."""
    if png_first:
        data = _save(_png_ready(image), "PNG")
        if len(data) <= MAX_IMAGE_BYTES:
            return data, "PNG", image.size
    rgb = _flatten(image)
    for quality in JPEG_QUALITIES:
        data = _save(rgb, "JPEG", quality=quality)
        if len(data) <= MAX_IMAGE_BYTES:
            return data, "JPEG", rgb.size
    while True:
        width, height = rgb.size
        scale = max(math.sqrt(MAX_IMAGE_BYTES / len(data)) * 0.9, MIN_SIDE / min(width, height))
        size = (max(MIN_SIDE, math.ceil(width * scale)), max(MIN_SIDE, math.ceil(height * scale)))
        if size == rgb.size:  # can't shrink further without breaking the 300 px rule
            return None
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        data = _save(rgb, "JPEG", quality=JPEG_QUALITIES[-1])
        if len(data) <= MAX_IMAGE_BYTES:
            return data, "JPEG", rgb.size


def _png_ready(image: Image.Image) -> Image.Image:
    """`image` in a mode PNG can store."""
    if image.mode in {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}:
        return image
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """`image` as RGB, transparent parts on white (JPEG has no alpha)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _save(image: Image.Image, image_format: str, **options: object) -> bytes:
    """Encode `image`, keeping its colour profile but no other metadata."""
    buffer = io.BytesIO()
    icc_profile = image.info.get("icc_profile")
    if icc_profile:
        options["icc_profile"] = icc_profile
    image.save(buffer, image_format, **options)
    return buffer.getvalue()
