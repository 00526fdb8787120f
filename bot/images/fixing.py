"""Auto-fix: decode an image fully, scale it down to fit, turn it upright, encode it to fit."""

from __future__ import annotations

import io
import math

from PIL import Image

from bot.images.rules import (
    ACCEPTED_FORMATS,
    MAX_IMAGE_BYTES,
    MAX_PIXELS,
    MIN_SIDE,
    ImageIntakeError,
    ImageProblem,
    PreparedImage,
    too_big,
)

JPEG_QUALITIES = (95, 90, 80, 70)
# A second, slower PNG attempt only when the fast one was at most this much over the limit, for
# images of at most this many pixels (level 9 takes ~0.3 s per megapixel).
PNG_RETRY_FACTOR = 1.3
PNG_RETRY_PIXELS = 20_000_000
# EXIF orientation → the transpose that makes the pixels upright.
UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})


def autofix_image(
    position: int, filename: str, data: bytes, orientation: int, source_url: str
) -> PreparedImage:
    """Decode fully, scale down to MAX_PIXELS, turn upright, encode as PNG or JPEG that fits.

    The caller has checked the header: the image has at most MAX_DECODE_PIXELS and passes the
    side and aspect rules. Pillow's errors on broken pixel data propagate.
    """

    def change(code: str, **params: object) -> ImageProblem:
        return ImageProblem(position, filename, code, params)

    changes: list[ImageProblem] = []
    with Image.open(io.BytesIO(data)) as source:
        source_format = source.format or "?"
        accepted = ACCEPTED_FORMATS.get(source_format)
        stored_size = source.size
        image = _load_within_limit(source)
        if orientation in UPRIGHT:
            unturned, image = image, image.transpose(UPRIGHT[orientation])
            unturned.close()  # one copy of the pixels at a time
            changes.append(change("rotated", orientation=orientation))
        if orientation in {5, 6, 7, 8}:
            stored_size = stored_size[::-1]
        if min(image.size) < MIN_SIDE:  # not expected: only images over 50 megapixels shrink
            raise ImageIntakeError([too_big(position, filename, len(data))])
        encoded = _encode_under_limit(image, png_first=accepted != "JPEG")
    if encoded is None:  # not expected: a 300 px wide JPEG is far below the limit
        raise ImageIntakeError([too_big(position, filename, len(data))])
    new_data, new_format, new_size = encoded

    if new_format != accepted:
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
    if new_size != stored_size:
        changes.append(
            change(
                "downscaled",
                width=stored_size[0],
                height=stored_size[1],
                new_width=new_size[0],
                new_height=new_size[1],
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


def reduction_factor(width: int, height: int) -> int:
    """The smallest whole factor that brings width×height to at most MAX_PIXELS."""
    factor = 1
    while math.ceil(width / factor) * math.ceil(height / factor) > MAX_PIXELS:
        factor += 1
    return factor


def _load_within_limit(source: Image.Image) -> Image.Image:
    """`source`'s pixels (first frame), reduced by a whole factor to at most MAX_PIXELS.

    A JPEG is reduced while decoding (by 2, 4 or 8), so its full size is never in memory; other
    formats are decoded, reduced a band of rows at a time, and the full-size pixels let go.
    """
    width, height = source.size
    factor = reduction_factor(width, height)
    if factor > 1 and source.format in {"JPEG", "MPO"}:
        source.draft(source.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    source.load()  # for GIF and other animations: the first frame
    factor = reduction_factor(*source.size)
    if factor == 1:
        return source
    reduced = _reduce(source, factor)
    source.close()  # frees the full-size pixels
    return reduced


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """`image` `factor` times smaller (box average), a band of rows at a time.

    Pillow's own reduce copies a whole image with alpha (to premultiply it) or of a mode it
    can't average (palette, 1-bit, 16-bit) first; by bands, that copy is a band's.
    """
    mode = image.mode
    if mode == "P":
        working = "RGBA" if "transparency" in image.info else "RGB"
    else:
        working = {"1": "L"}.get(mode, "I" if mode in SIXTEEN_BIT_MODES else mode)
    result_mode = mode if mode in SIXTEEN_BIT_MODES else working
    width, height = image.size
    result = Image.new(result_mode, (math.ceil(width / factor), math.ceil(height / factor)))
    band = factor * 128
    for top in range(0, height, band):
        part = image.crop((0, top, width, min(height, top + band)))
        if part.mode != working:
            part = part.convert(working)
        part = part.reduce(factor)
        if part.mode != result_mode:
            part = part.convert(result_mode)
        result.paste(part, (0, top // factor))
    result.info = {key: value for key, value in image.info.items() if key != "transparency"}
    return result


def _encode_under_limit(
    image: Image.Image, *, png_first: bool
) -> tuple[bytes, str, tuple[int, int]] | None:
    """PNG if asked and it fits, else JPEG at falling quality, then smaller (sides stay ≥ 300).

    PNG is tried fast first (zlib level 1: 0.07 s per megapixel, level 6 takes up to 0.27),
    and packed harder only when that came close and the image is small enough to afford it.
    """
    if png_first:
        png = _png_ready(image)
        data = _save(png, "PNG", compress_level=1)
        if len(data) <= MAX_IMAGE_BYTES:
            return data, "PNG", image.size
        width, height = image.size
        if len(data) <= PNG_RETRY_FACTOR * MAX_IMAGE_BYTES and width * height <= PNG_RETRY_PIXELS:
            data = _save(png, "PNG", compress_level=9)
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
    """`image` in a mode PNG can store without losing its look."""
    if image.mode in PNG_MODES:
        return image
    if image.mode in SIXTEEN_BIT_MODES or image.mode in {"I", "F"}:
        return _eight_bit(image)
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def _flatten(image: Image.Image) -> Image.Image:
    """`image` as RGB, transparent parts on white (JPEG has no alpha)."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES or image.mode in {"I", "F"}:
        return _eight_bit(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float grey image as 8-bit "L", scaled (Pillow's convert clips).

    16-bit modes map 0–65535 onto 0–255; "I" and "F" by their range: as is up to 255, as 16-bit
    up to 65535, else by their maximum (a float image in 0–1 is stretched to 0–255).
    """
    if image.mode in SIXTEEN_BIT_MODES:
        wide, scale = image.convert("I"), 1 / 256
    else:
        wide = image
        extrema = image.getextrema()
        low, high = float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
        if image.mode == "F" and 0 <= low and high <= 1:
            scale = 255.0
        elif high <= 255:
            scale = 1.0
        elif high <= 65535:
            scale = 1 / 256
        else:
            scale = 255 / high
    return wide.point(lambda value: value * scale).convert("L")


def _save(image: Image.Image, image_format: str, **options: object) -> bytes:
    """Encode `image`, keeping its colour profile but no other metadata."""
    buffer = io.BytesIO()
    icc_profile = image.info.get("icc_profile")
    if icc_profile:
        options["icc_profile"] = icc_profile
    image.save(buffer, image_format, **options)
    return buffer.getvalue()
