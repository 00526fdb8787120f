"""The picture of a task's inputs: order, numbers, size, and every kind of image intake accepts."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from bot.collage import (
    BACKGROUND,
    GAP,
    MAX_BYTES,
    MAX_WIDTH,
    PLACEHOLDER,
    TILE_HEIGHT,
    Collage,
    make_collage,
)

COLOURS = [(220, 20, 60), (34, 139, 34), (30, 144, 255), (255, 215, 0)]


def encode(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    """`image` as file bytes."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (400, 400)) -> bytes:
    """A PNG of one colour."""
    return encode(Image.new("RGB", size, colour))


def decode(collage: Collage) -> Image.Image:
    """The collage as an RGB image, checking its bytes say what the format says."""
    image = Image.open(io.BytesIO(collage.data))
    assert image.format == collage.format
    assert image.size == (collage.width, collage.height)
    return image.convert("RGB")


def tile_boxes(collage: Image.Image, sizes: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(left, right, height) of each tile, from the input sizes (the layout rule)."""
    height = collage.height - 2 * GAP
    boxes, left = [], GAP
    for width, tall in sizes:
        tile_width = round(width / tall * height)
        boxes.append((left, left + tile_width, height))
        left += tile_width + GAP
    return boxes


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 12) -> bool:
    """Colours equal up to compression noise."""
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def png_16bit_rgb(width: int, height: int, value: tuple[int, int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow can't write one)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" + struct.pack(">HHH", *value) * width
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


# --- order and numbers ---


@pytest.mark.parametrize("count", [2, 3, 4])
def test_tiles_land_left_to_right_in_the_order_sent(count: int) -> None:
    inputs = [solid(colour) for colour in COLOURS[:count]]
    collage = decode(make_collage(inputs))
    boxes = tile_boxes(collage, [(400, 400)] * count)
    for (_left, right, height), colour in zip(boxes, COLOURS, strict=False):
        # The lower right of each tile: away from the number in its top-left corner.
        sample = collage.getpixel((right - 10, GAP + height - 10))
        assert close(sample, colour), (sample, colour)
    assert close(collage.getpixel((1, 1)), BACKGROUND)


def badge(collage: Image.Image, left: int, height: int) -> Image.Image:
    """The top-left corner of a tile, where its number is drawn."""
    size = round(height * 0.3)
    return collage.crop((left, GAP, left + size, GAP + size))


def test_each_tile_carries_its_own_number_whatever_the_image() -> None:
    forward = decode(make_collage([solid(c) for c in COLOURS]))
    backward = decode(make_collage([solid(c) for c in reversed(COLOURS)]))
    boxes = tile_boxes(forward, [(400, 400)] * 4)
    corners = []
    for left, _, height in boxes:
        front, back = badge(forward, left, height), badge(backward, left, height)
        # Inside the badge the pixels are the badge's own (a dark disc, a white digit and ring),
        # so position k shows the same number whichever image lies there.
        centre = (front.width // 2 - 2, front.height // 2 - 2)
        inner = front.crop((centre[0] - 6, centre[1] - 6, centre[0] + 6, centre[1] + 6))
        back_inner = back.crop((centre[0] - 6, centre[1] - 6, centre[0] + 6, centre[1] + 6))
        assert inner.tobytes() == back_inner.tobytes()
        colours = inner.getcolors(maxcolors=4096) or []
        assert any(sum(c) < 120 for _, c in colours), "the dark disc"
        assert any(min(c) > 200 for _, c in colours), "the white digit"
        corners.append(inner.tobytes())
    # Four different numbers: no two badges look alike.
    assert len(set(corners)) == 4


# --- size ---


def noise(size: tuple[int, int]) -> bytes:
    """An image JPEG can hardly compress (big ones: a camera-sized JPEG, quicker to make)."""
    width, height = size
    if width * height <= 1_000_000:
        return encode(Image.effect_noise(size, 120).convert("RGB"), "PNG")
    small = Image.effect_noise((width // 8, height // 8), 120).convert("RGB")
    return encode(small.resize(size, Image.Resampling.NEAREST), "JPEG", quality=92)


@pytest.mark.parametrize(
    "sizes",
    [
        [(400, 400)] * 4,
        [(1000, 400)] * 4,  # 2.5:1, four of them: wider than MAX_WIDTH at full height
        [(400, 1000)] * 4,  # 1:2.5
        [(1000, 400), (400, 1000)],
        [(4000, 3000), (3000, 4000), (2500, 1000)],  # photos straight from a camera
    ],
)
def test_the_picture_stays_small_and_bounded(sizes: list[tuple[int, int]]) -> None:
    collage = make_collage([noise(size) for size in sizes])
    assert len(collage.data) <= MAX_BYTES
    assert collage.height <= TILE_HEIGHT + 2 * GAP
    assert collage.width <= MAX_WIDTH
    image = decode(collage)
    # Every tile keeps its shape (no stretching): widths follow the aspect ratios.
    boxes = tile_boxes(image, sizes)
    assert boxes[-1][1] + GAP == pytest.approx(image.width, abs=len(sizes))


def test_flat_images_come_out_as_png_and_photos_as_jpeg() -> None:
    assert make_collage([solid(c) for c in COLOURS]).format == "PNG"
    photo_like = make_collage([noise((600, 400)), noise((400, 600))])
    assert photo_like.format == "JPEG" and photo_like.filename == "inputs.jpg"


def test_a_tight_byte_cap_is_met_by_lowering_quality_and_size() -> None:
    collage = make_collage([noise((1000, 400))] * 4, max_bytes=40 * 1024)
    assert len(collage.data) <= 40 * 1024


# --- every input intake accepts ---


def mode_image(mode: str) -> bytes:
    """A 400×400 image in `mode`, encoded as intake could hand it over."""
    if mode == "I;16":
        return encode(Image.new("I", (400, 400), 40000).convert("I;16"))
    if mode == "RGB;16":
        return png_16bit_rgb(400, 400, (65535, 0, 0))
    if mode == "P+transparency":
        image = Image.new("P", (400, 400), 1)
        image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        return encode(image, transparency=1)
    if mode == "CMYK":
        return encode(Image.new("CMYK", (400, 400), (0, 255, 255, 0)), "JPEG")
    if mode == "RGBA":
        return encode(Image.new("RGBA", (400, 400), (255, 0, 0, 0)))
    if mode == "LA":
        return encode(Image.new("LA", (400, 400), (200, 255)))
    if mode == "1":
        return encode(Image.new("1", (400, 400), 1))
    if mode == "L":
        return encode(Image.new("L", (400, 400), 200), "JPEG")
    if mode == "P":
        image = Image.new("P", (400, 400), 1)
        image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
        return encode(image)
    return encode(Image.new(mode, (400, 400), "red"), "JPEG")


#: What the lower right of each mode's tile should look like.
EXPECTED = {
    "RGB": (254, 0, 0),
    "RGB;16": (255, 0, 0),
    "I;16": (155, 155, 155),  # 40000 of 65535
    "P+transparency": None,  # fully transparent: the checkerboard
    "CMYK": (255, 0, 0),  # no cyan, full magenta and yellow
    "RGBA": None,  # fully transparent
    "LA": (200, 200, 200),
    "1": (255, 255, 255),
    "L": (200, 200, 200),
    "P": (0, 0, 255),
}


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_every_image_mode_is_shown_faithfully(mode: str) -> None:
    collage = decode(make_collage([mode_image(mode), solid((0, 0, 0))]))
    _left, right, height = tile_boxes(collage, [(400, 400), (400, 400)])[0]
    sample = collage.getpixel((right - 12, GAP + height - 12))
    expected = EXPECTED[mode]
    if expected is None:  # transparent: a light grey checkerboard, never black
        assert min(sample) > 180 and close(sample[:1] * 3, sample)
    else:
        assert close(sample, expected, tolerance=24), (mode, sample)


def test_an_exif_rotated_photo_is_shown_upright() -> None:
    image = Image.new("RGB", (800, 400), "navy")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° when shown: the photo is really 400 wide, 800 tall
    data = encode(image, "JPEG", exif=exif)
    collage = decode(make_collage([data, solid((0, 0, 0))]))
    first, _ = tile_boxes(collage, [(400, 800), (400, 400)])
    assert first[1] - first[0] == round(collage.height - 2 * GAP) // 2


def test_an_image_that_cannot_be_decoded_gets_a_plain_numbered_tile() -> None:
    collage = decode(make_collage([b"not an image at all", solid(COLOURS[0])]))
    _left, right, height = tile_boxes(collage, [(1, 1), (400, 400)])[0]
    assert close(collage.getpixel((right - 10, GAP + height - 10)), PLACEHOLDER)


def test_no_images_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        make_collage([])
