"""Intake against hostile and unusual files: broken pixels, pathological layouts,
large colour profiles, images past the pixel limit, 16-bit grey. In this process; the worker
pool and its budgets are tested in test_pool.py."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image, ImageCms, ImageStat

from bot.images import MAX_IMAGE_BYTES, ImageIntakeError, PreparedImage, inspect_image
from bot.images.inspection import MAX_JPEG_PADDING, MAX_JPEG_SEGMENTS, MAX_PNG_CHUNKS
from tests.bot.images.hostile_images import (
    broken_pixel_pngs,
    encode,
    flat_png_bomb,
    icc_profile,
    jpeg_with_fill,
    jpeg_with_segments,
    noise,
    picture,
    png_chunk_flood,
    sixteen_bit_grey_png,
)


def refusal(data: bytes, *, autofix: bool = True, name: str = "x.png") -> ImageIntakeError:
    """The error inspect_image raises (fails the test if it accepts)."""
    with pytest.raises(ImageIntakeError) as caught:
        inspect_image(1, name, data, autofix=autofix)
    return caught.value


def codes(error: ImageIntakeError) -> list[str]:
    """The code of each problem."""
    return [problem.code for problem in error.problems]


def decoded(image: PreparedImage) -> Image.Image:
    """The pixels intake would send, fully decoded."""
    with Image.open(io.BytesIO(image.data)) as opened:
        opened.load()
        return opened.copy()


# --- item 4: an image is accepted only when its pixels decode ---


@pytest.mark.parametrize("autofix", [True, False])
@pytest.mark.parametrize("name", list(broken_pixel_pngs(8, 8)))
def test_png_with_valid_chunks_but_broken_pixel_data_is_damaged(name: str, autofix: bool) -> None:
    data = broken_pixel_pngs()[name]
    with pytest.raises(OSError):  # what Pillow makes of it, so the file really is broken
        Image.open(io.BytesIO(data)).load()
    error = refusal(data, autofix=autofix)
    assert codes(error) == ["corrupt"]
    assert error.english().startswith("image 1 (x.png): the PNG file is damaged or incomplete")


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_with_garbage_in_its_image_data_is_damaged(progressive: bool) -> None:
    data = bytearray(encode(noise(400, 400), "JPEG", progressive=progressive))
    middle = len(data) // 2
    data[middle : middle + 2000] = random.Random(1).randbytes(2000)
    assert data.endswith(b"\xff\xd9")  # its structure is whole, only the pixels are not
    error = refusal(bytes(data), autofix=False, name="x.jpg")
    assert codes(error) == ["corrupt"]
    assert error.problems[0].params["format"] == "JPEG"


def test_accepted_unchanged_images_keep_their_bytes() -> None:
    data = encode(noise(400, 400), "PNG")
    assert inspect_image(1, "a.png", data).data is data


# --- item 5: layouts that make Pillow walk a file byte by byte are refused first ---


@pytest.mark.parametrize(
    ("make", "fine", "refused"),
    [
        (jpeg_with_segments, 100, MAX_JPEG_SEGMENTS + 1),
        (jpeg_with_fill, 1000, MAX_JPEG_PADDING + 2),
        (png_chunk_flood, 100, MAX_PNG_CHUNKS + 1),
    ],
    ids=["JPEG empty comments", "JPEG FF fill", "PNG empty chunks"],
)
def test_pathological_layouts_are_refused_before_pillow_walks_them(
    make: object, fine: int, refused: int
) -> None:
    assert callable(make)
    usual = make(fine)
    assert inspect_image(1, "a", usual).data is usual  # legal, and a little is normal
    error = refusal(make(refused), name="slow")
    assert codes(error) == ["corrupt"]
    assert "damaged or incomplete" in error.english()


def test_the_issues_comment_flood_is_refused() -> None:
    # 24 MB of empty comments: 12.8 s and 1 GB in Pillow's walk; refused at C speed instead.
    data = jpeg_with_segments(6_300_000)
    assert len(data) > 25_000_000
    assert codes(refusal(data, name="flood.jpg")) == ["corrupt"]


def test_fill_is_refused_in_one_go_not_byte_by_byte() -> None:
    data = jpeg_with_fill(10 * 1024 * 1024 - 20_000)
    assert codes(refusal(data, name="fill.jpg")) == ["corrupt"]


# --- item 6: wrong refusals ---


@pytest.mark.parametrize("size", [1_500_000, 5_000_000])
def test_png_with_a_large_valid_colour_profile_is_accepted(size: int) -> None:
    profile = icc_profile(size)
    assert abs(len(profile) - size) < 1000
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile)))
    for image_format in ("PNG", "JPEG"):
        data = encode(picture(400, 400), image_format, icc_profile=profile)
        for autofix in (True, False):
            image = inspect_image(1, "profiled", data, autofix=autofix)
            assert image.data is data and image.format == image_format


def test_a_kept_colour_profile_survives_reencoding() -> None:
    profile = icc_profile(1_500_000)
    data = encode(picture(400, 400), "WEBP", icc_profile=profile)
    image = inspect_image(1, "profiled.webp", data)
    assert decoded(image).info["icc_profile"] == profile


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_just_over_the_pixel_limit_is_scaled_down_with_autofix(image_format: str) -> None:
    data = encode(picture(7072, 7072), image_format)
    image = inspect_image(1, "huge", data)
    assert (image.width, image.height) == (3536, 3536)
    assert [change.english() for change in image.changes if change.code == "downscaled"] == [
        "image 1 (huge): scaled down from 7072×7072 to 3536×3536 px"
    ]
    pixels = decoded(image)
    assert pixels.size == (3536, 3536)
    assert pixels.convert("RGB").getpixel((3000, 3000)) == pytest.approx((70, 130, 180), abs=3)


def test_scaling_down_turns_upright_and_keeps_the_other_side_in_proportion() -> None:
    exif = Image.Exif()
    exif[274] = 6
    data = encode(picture(9000, 6000), "JPEG", exif=exif)
    image = inspect_image(1, "side.jpg", data)
    assert (image.width, image.height) == (3000, 4500)  # upright, halved
    assert [change.code for change in image.changes] == ["rotated", "downscaled"]


def test_just_over_the_pixel_limit_without_autofix_says_what_the_limit_is() -> None:
    error = refusal(encode(picture(7072, 7072), "JPEG"), autofix=False, name="huge.jpg")
    assert error.english() == (
        "image 1 (huge.jpg): 7072×7072 px is more than the 50 megapixels allowed"
        " (for example 7071×7071 px) — use a smaller image"
    )


def test_a_real_decompression_bomb_is_refused_before_decoding() -> None:
    data = flat_png_bomb(12_000, 12_000)  # 144 megapixels in a few hundred KB
    assert len(data) < 1024 * 1024
    error = refusal(data, name="bomb.png")
    assert error.english() == (
        "image 1 (bomb.png): 12000×12000 px is more than the 100 megapixels allowed"
        " (for example 10000×10000 px) — use a smaller image"
    )


# --- item 7: 16-bit grey keeps its brightness ---


def test_sixteen_bit_grey_png_over_the_size_limit_keeps_its_brightness() -> None:
    data = sixteen_bit_grey_png(2400, 2400)
    assert len(data) > MAX_IMAGE_BYTES
    image = inspect_image(1, "deep.png", data)
    assert image.format == "JPEG" and len(image.data) <= MAX_IMAGE_BYTES
    (brightness,) = ImageStat.Stat(decoded(image).convert("L")).mean
    assert 117 <= brightness <= 137  # noise around mid-grey stays mid-grey (was 254)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_wide_grey_modes_are_scaled_when_converted(mode: str) -> None:
    source = Image.new(mode, (400, 400), 40_000)
    data = encode(source, "TIFF")
    image = inspect_image(1, "deep.tif", data)
    assert decoded(image).convert("L").getpixel((5, 5)) == pytest.approx(156, abs=1)
