"""One small picture of a task's input images: side by side, numbered in the order they were sent.

Made once at intake (call it in a worker thread: it decodes every image), kept with the task and
shown in the status message and under Details instead of only the file names. Any image intake
accepts is handled — very wide or tall (up to 2.5:1), transparent, 16-bit, palette, CMYK, an EXIF
rotation — and one that can't be decoded gets a plain numbered tile rather than an error. The
result is a JPEG or a PNG, whichever is smaller, at most `MAX_BYTES`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

TILE_HEIGHT = 256
MAX_WIDTH = 1536
GAP = 6
MAX_BYTES = 300 * 1024
JPEG_QUALITIES = (85, 75, 65, 50, 40)
BACKGROUND = (43, 45, 49)  # Discord's dark grey, so the tiles stand apart in either theme
CHECKER = ((236, 236, 236), (204, 204, 204))  # under transparent parts
CHECKER_SQUARE = 8
BADGE_FILL = (20, 20, 20)
BADGE_OUTLINE = (255, 255, 255)
BADGE_TEXT = (255, 255, 255)
# The badge's diameter: a share of the tile's height, but also of the whole picture's width, so
# the numbers stay readable when Discord shows a wide picture small (about 400 px across).
BADGE_HEIGHT_SHARE = 0.22
BADGE_WIDTH_SHARE = 0.05
BADGE_MIN = 18
PLACEHOLDER = (90, 90, 90)


@dataclass(frozen=True)
class Collage:
    """The picture, encoded."""

    data: bytes
    format: str  # "JPEG" or "PNG"
    width: int
    height: int

    @property
    def filename(self) -> str:
        """A file name for the picture as an attachment."""
        return "inputs.jpg" if self.format == "JPEG" else "inputs.png"


def make_collage(
    images: Sequence[bytes],
    *,
    tile_height: int = TILE_HEIGHT,
    max_width: int = MAX_WIDTH,
    max_bytes: int = MAX_BYTES,
) -> Collage:
    """The input images side by side, each numbered (1, 2, …) in the order given."""
    if not images:
        raise ValueError("a collage needs at least one image")
    tiles = [_open(data, tile_height) for data in images]
    ratios = [(tile.width / tile.height) if tile else 1.0 for tile in tiles]
    height = tile_height
    room = max_width - GAP * (len(tiles) + 1)
    if sum(ratios) * height > room:  # too wide side by side: every tile gets lower
        height = max(32, int(room / sum(ratios)))
    widths = [max(1, round(ratio * height)) for ratio in ratios]
    canvas = Image.new("RGB", (sum(widths) + GAP * (len(tiles) + 1), height + 2 * GAP), BACKGROUND)
    x = GAP
    for number, (tile, width) in enumerate(zip(tiles, widths, strict=True), start=1):
        if tile is None:
            canvas.paste(PLACEHOLDER, (x, GAP, x + width, GAP + height))
        else:
            resized = tile.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
            canvas.paste(_flatten(resized), (x, GAP))
        diameter = max(BADGE_HEIGHT_SHARE * height, BADGE_WIDTH_SHARE * canvas.width, BADGE_MIN)
        diameter = min(diameter, 0.5 * min(width, height))
        _badge(canvas, number, x, GAP, round(diameter))
        x += width + GAP
    return _encode(canvas, max_bytes)


def _open(data: bytes, tile_height: int) -> Image.Image | None:
    """The image upright in a mode that can be resized, or None if it can't be decoded."""
    try:
        with Image.open(io.BytesIO(data)) as source:
            if source.format == "JPEG":  # decode big photos at a reduced scale: much faster
                source.draft(source.mode, (tile_height, tile_height))
            source.load()
            image = ImageOps.exif_transpose(source)
            return _displayable(image)
    except Exception:  # a tile for an image we can't show, never a failed intake
        return None


def _displayable(image: Image.Image) -> Image.Image:
    """`image` as RGB or RGBA with 8 bits per channel."""
    if image.mode in ("RGB", "RGBA"):
        return image.copy()
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit (or wider) grey: scale the full 16-bit range down to 8 bits.
        high = image.getextrema()[1]
        scale = 1 / 257 if isinstance(high, (int, float)) and high > 255 else 1.0
        grey = image if image.mode in ("I", "F") else image.convert("I")
        return grey.point(lambda value: value * scale).convert("L").convert("RGB")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if "A" in image.getbands() or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


def _flatten(tile: Image.Image) -> Image.Image:
    """A tile with transparency on a checkerboard, so "transparent" reads as such."""
    if tile.mode != "RGBA":
        return tile
    board = Image.new("RGB", tile.size, CHECKER[0])
    draw = ImageDraw.Draw(board)
    for top in range(0, tile.height, CHECKER_SQUARE):
        for left in range(0, tile.width, CHECKER_SQUARE):
            if (top // CHECKER_SQUARE + left // CHECKER_SQUARE) % 2:
                draw.rectangle(
                    (left, top, left + CHECKER_SQUARE - 1, top + CHECKER_SQUARE - 1),
                    fill=CHECKER[1],
                )
    board.paste(tile, mask=tile.getchannel("A"))
    return board


def _badge(canvas: Image.Image, number: int, left: int, top: int, diameter: int) -> None:
    """A white number on a dark disc with a white ring, in the tile's top-left corner."""
    margin = max(3, diameter // 5)
    box = (left + margin, top + margin, left + margin + diameter, top + margin + diameter)
    draw = ImageDraw.Draw(canvas)
    draw.ellipse(box, fill=BADGE_FILL, outline=BADGE_OUTLINE, width=max(2, diameter // 12))
    font = _font(round(diameter * 0.62))
    label = str(number)
    bounds = draw.textbbox((0, 0), label, font=font)
    text_width, text_height = bounds[2] - bounds[0], bounds[3] - bounds[1]
    x = box[0] + (diameter - text_width) / 2 - bounds[0]
    y = box[1] + (diameter - text_height) / 2 - bounds[1]
    draw.text((x, y), label, font=font, fill=BADGE_TEXT)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _encode(canvas: Image.Image, max_bytes: int) -> Collage:
    """JPEG or PNG, whichever is smaller; lower quality, then smaller, until under the cap."""
    image = canvas
    while True:
        png = _save(image, "PNG")
        best = (png, "PNG")
        for quality in JPEG_QUALITIES:
            jpeg = _save(image, "JPEG", quality=quality, optimize=True)
            if len(jpeg) < len(best[0]):
                best = (jpeg, "JPEG")
            if len(best[0]) <= max_bytes:
                break
        if len(best[0]) <= max_bytes or image.width <= 64:
            data, image_format = best
            return Collage(data, image_format, image.width, image.height)
        image = image.resize(
            (max(64, int(image.width * 0.8)), max(16, int(image.height * 0.8))),
            Image.Resampling.LANCZOS,
        )


def _save(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()
