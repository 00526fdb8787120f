"""Image intake: every rule at its limit, every format, broken files, and real downloads."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import random
import struct
import warnings
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot import images
from bot.images import (
    MAX_IMAGE_BYTES,
    AttachmentRef,
    ImageIntakeError,
    ImageProblem,
    fetching,
    fixing,
    inspect_image,
    inspection,
    prepare_images,
)
from bot.images.fetching import fetch_all

# --- building images ---


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    """`image` encoded in `image_format`."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A flat image with a gradient corner, so encoders have something to do but stay small."""
    image = Image.new(mode, (width, height), "steelblue" if mode != "L" else 128)
    image.paste("orange" if mode != "L" else 30, (0, 0, width // 3, height // 4))
    return image


def png(width: int = 400, height: int = 400) -> bytes:
    """A valid PNG."""
    return encode(picture(width, height), "PNG")


def jpeg(width: int = 400, height: int = 400, orientation: int | None = None) -> bytes:
    """A valid JPEG, optionally with an EXIF orientation tag."""
    exif = Image.Exif()
    if orientation is not None:
        exif[274] = orientation
    return encode(picture(width, height), "JPEG", quality=85, exif=exif)


def noise_png(width: int, height: int) -> bytes:
    """An incompressible PNG of about width×height×3 bytes, made fast."""
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    return encode(image, "PNG", compress_level=0)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims width×height (a decompression-bomb header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


async def fetch_images_raising(
    session: aiohttp.ClientSession, refs: list[AttachmentRef], *, timeout: float
) -> list[bytes]:
    """Download the attachments as intake does (`fetch_all`); raise their problems together."""
    results = await fetch_all(session, refs, seconds=timeout, max_bytes=MAX_IMAGE_BYTES)
    problems = [result for result in results if isinstance(result, ImageProblem)]
    if problems:
        raise ImageIntakeError(problems)
    return [result for result in results if isinstance(result, bytes)]


def codes(error: ImageIntakeError) -> list[tuple[int, str]]:
    """(position, code) of each problem."""
    return [(problem.position, problem.code) for problem in error.problems]


def rejected(data: bytes, *, autofix: bool = True, name: str = "x.png") -> ImageIntakeError:
    """The error `inspect_image` raises for `data` (fails the test if it accepts)."""
    with pytest.raises(ImageIntakeError) as caught:
        inspect_image(1, name, data, autofix=autofix)
    return caught.value


SAMPLE_PNG = png(320, 320)
SAMPLE_JPEG = jpeg(320, 320, orientation=6)
SAMPLE_WEBP = encode(picture(320, 320), "WEBP")


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A valid noise PNG a little over 10 MB."""
    data = noise_png(2000, 1850)
    assert MAX_IMAGE_BYTES < len(data) < 11 * 1024 * 1024
    return data


# --- the rules at their limits ---


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (300, 300, None),
        (299, 300, "too_small"),
        (300, 299, "too_small"),
        (750, 300, None),  # exactly 2.5:1
        (300, 750, None),  # exactly 1:2.5
        (751, 300, "aspect"),
        (300, 751, "aspect"),
        (1000, 400, None),  # 2.5:1 again, both sides larger
        (1001, 400, "aspect"),
    ],
)
def test_side_and_aspect_limits(width: int, height: int, expected: str | None) -> None:
    data = png(width, height)
    if expected is None:
        image = inspect_image(1, "a.png", data)
        assert (image.format, image.width, image.height) == ("PNG", width, height)
        assert image.data is data and image.changes == ()
    else:
        assert codes(rejected(data)) == [(1, expected)]


def test_too_small_message_names_image_rule_value_and_hint() -> None:
    with pytest.raises(ImageIntakeError) as caught:
        inspect_image(2, "tiny.png", png(250, 250))
    (problem,) = caught.value.problems
    assert problem.params == {"width": 250, "height": 250, "min": 300}
    assert problem.english() == (
        "image 2 (tiny.png): 250×250 px, needs at least 300×300 — use a larger image"
    )


def test_aspect_message_and_both_problems_of_one_image() -> None:
    error = rejected(png(250, 1000), name="tall.png")
    assert codes(error) == [(1, "too_small"), (1, "aspect")]
    assert error.english().splitlines()[1] == (
        "image 1 (tall.png): 250×1000 px is 1:4.00, needs between 1:2.5 and 2.5:1"
        " — crop it closer to square"
    )


def test_size_limit_without_autofix(big_png: bytes) -> None:
    error = rejected(big_png, autofix=False, name="big.png")
    assert codes(error) == [(1, "too_big")]
    assert error.problems[0].params["max"] == MAX_IMAGE_BYTES
    assert "MB, must be at most 10 MB — use a smaller image" in error.english()


def test_exactly_max_bytes_is_accepted_without_autofix() -> None:
    data = png(400, 400)
    padded = data + b"\0" * (MAX_IMAGE_BYTES - len(data))  # bytes after IEND are ignored
    assert len(padded) == MAX_IMAGE_BYTES
    assert inspect_image(1, "a.png", padded, autofix=False).data is padded
    assert codes(rejected(padded + b"\0", autofix=False)) == [(1, "too_big")]


# --- formats ---


@pytest.mark.parametrize(("image_format", "name"), [("PNG", "a.png"), ("JPEG", "a.jpg")])
def test_accepted_formats_pass_unchanged(image_format: str, name: str) -> None:
    data = encode(picture(640, 480), image_format)
    for autofix in (True, False):
        image = inspect_image(1, name, data, autofix=autofix)
        assert (image.format, image.width, image.height) == (image_format, 640, 480)
        assert image.data is data and image.changes == ()


def test_phone_mpo_is_a_jpeg() -> None:
    data = encode(picture(640, 480), "MPO", save_all=True, append_images=[picture(640, 480)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    image = inspect_image(1, "phone.jpg", data, autofix=False)
    assert image.format == "JPEG" and image.data is data


def test_png_named_jpg_is_judged_by_content() -> None:
    image = inspect_image(1, "really-a-png.jpg", png(), autofix=False)
    assert image.format == "PNG"


FIXABLE: list[tuple[str, Callable[[], bytes]]] = [
    ("WEBP", lambda: encode(picture(500, 400), "WEBP")),
    ("GIF", lambda: encode(picture(500, 400), "GIF")),
    ("BMP", lambda: encode(picture(500, 400), "BMP")),
    ("TIFF", lambda: encode(picture(500, 400), "TIFF")),
]


@pytest.mark.parametrize(("image_format", "make"), FIXABLE)
def test_fixable_formats_become_png(image_format: str, make: Callable[[], bytes]) -> None:
    name = f"cat.{image_format.lower()}"
    image = inspect_image(3, name, make(), source_url="https://cdn/cat")
    assert (image.format, image.width, image.height) == ("PNG", 500, 400)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert (decoded.format, decoded.size) == ("PNG", (500, 400))
    (change,) = image.changes
    assert change.code == "converted"
    assert change.english() == f"image 3 ({name}): converted {image_format} to PNG"


@pytest.mark.parametrize(("image_format", "make"), FIXABLE)
def test_fixable_formats_rejected_without_autofix(
    image_format: str, make: Callable[[], bytes]
) -> None:
    with pytest.raises(ImageIntakeError) as caught:
        inspect_image(3, "cat.webp", make(), autofix=False)
    (problem,) = caught.value.problems
    assert (problem.code, problem.params) == ("format", {"format": image_format})
    assert problem.english() == (
        f"image 3 (cat.webp): {image_format} isn't accepted — use JPG or PNG"
    )


def test_animated_gif_keeps_the_first_frame() -> None:
    frames = [Image.new("RGB", (400, 400), colour) for colour in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    image = inspect_image(1, "anim.gif", data)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.convert("RGB").getpixel((10, 10)) == (255, 0, 0)


def test_transparent_webp_keeps_alpha_in_png() -> None:
    data = encode(Image.new("RGBA", (400, 400), (0, 0, 255, 0)), "WEBP", lossless=True)
    image = inspect_image(1, "clear.webp", data)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.mode == "RGBA"


def test_readable_but_unfixable_format_is_rejected_even_with_autofix() -> None:
    error = rejected(encode(picture(400, 400), "PPM"), name="a.ppm")
    assert codes(error) == [(1, "format")]
    assert error.problems[0].params == {"format": "PPM"}


def test_text_file_named_png_is_not_an_image() -> None:
    error = rejected(b"hello, this is not a picture\n" * 20, name="notes.png")
    assert codes(error) == [(1, "not_image")]
    assert error.english() == "image 1 (notes.png): not an image file — use JPG or PNG"


def test_random_bytes_are_not_an_image() -> None:
    data = random.Random(3).randbytes(50_000)
    assert codes(rejected(data)) == [(1, "not_image")]


def test_empty_file_is_not_an_image() -> None:
    assert codes(rejected(b"")) == [(1, "not_image")]


# --- broken files ---


@pytest.mark.parametrize("cut", [0.5, 0.9, -12, -1])
def test_truncated_png_is_corrupt(cut: float) -> None:
    data = encode(Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3)), "PNG")
    end = int(len(data) * cut) if cut > 0 else len(data) + int(cut)
    error = rejected(data[:end])
    assert codes(error) == [(1, "corrupt")]
    assert error.english().startswith("image 1 (x.png): the PNG file is damaged or incomplete")


def test_png_with_bad_crc_is_corrupt() -> None:
    data = bytearray(png())
    data[len(data) // 2] ^= 0xFF
    assert codes(rejected(bytes(data))) == [(1, "corrupt")]


@pytest.mark.parametrize("cut", [0.3, 0.8, -2])
def test_truncated_jpeg_is_corrupt(cut: float) -> None:
    data = encode(Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3)), "JPEG")
    end = int(len(data) * cut) if cut > 0 else len(data) + int(cut)
    error = rejected(data[:end], name="x.jpg")
    assert codes(error) == [(1, "corrupt")]
    assert error.problems[0].params["format"] == "JPEG"


def test_truncated_progressive_jpeg_with_exif_thumbnail_is_corrupt() -> None:
    # The EXIF thumbnail's own end marker sits before the scan; it must not count.
    thumbnail = encode(picture(100, 100), "JPEG")
    exif = Image.Exif()
    exif[274] = 1
    big = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))
    data = encode(big, "JPEG", progressive=True, exif=exif.tobytes() + thumbnail)
    assert inspect_image(1, "a.jpg", data).data is data
    assert codes(rejected(data[: len(data) // 2])) == [(1, "corrupt")]


def test_jpeg_with_bytes_after_the_end_marker_is_accepted() -> None:
    data = jpeg() + b"camera trailer"
    assert inspect_image(1, "a.jpg", data, autofix=False).data == data


def test_truncated_webp_is_corrupt_when_fixing() -> None:
    data = encode(Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3)), "WEBP")
    assert codes(rejected(data[: len(data) // 2], name="a.webp")) == [(1, "corrupt")]


@pytest.mark.parametrize(
    ("width", "height", "autofix", "limit", "example"),
    [
        (100_000, 100_000, True, 100, "10000×10000"),  # past Pillow's own error
        (10_001, 10_000, True, 100, "10000×10000"),  # just past what auto-fix can scale down
        (7_072, 7_072, False, 50, "7071×7071"),  # 50.01 MP, and no auto-fix to scale it down
    ],
)
def test_too_many_pixels_is_a_clear_error_not_a_warning(
    width: int, height: int, autofix: bool, limit: int, example: str
) -> None:
    data = png_claiming(width, height)
    assert len(data) < 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        error = rejected(data, name="bomb.png", autofix=autofix)
    (problem,) = error.problems
    assert problem.code == "bomb"
    assert problem.params["pixels"] == width * height
    assert problem.english() == (
        f"image 1 (bomb.png): {width}×{height} px is more than the {limit} megapixels allowed"
        f" (for example {example} px) — use a smaller image"
    )


# --- EXIF orientation ---


def test_exif_rotation_changes_the_aspect_ratio_reported() -> None:
    error = rejected(jpeg(800, 300, orientation=6), name="side.jpg")
    assert codes(error) == [(1, "aspect")]
    assert error.problems[0].params["width"] == 300
    assert "300×800 px is 1:2.67" in error.english()


def test_exif_rotation_is_applied_to_the_pixels() -> None:
    data = jpeg(750, 300, orientation=6)
    image = inspect_image(1, "side.jpg", data, source_url="https://cdn/side.jpg")
    assert (image.format, image.width, image.height) == ("JPEG", 300, 750)
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.size == (300, 750)
        assert decoded.getexif().get(274, 1) == 1
    assert [change.english() for change in image.changes] == [
        "image 1 (side.jpg): turned upright (EXIF orientation 6)"
    ]


def test_exif_rotation_without_autofix_reports_upright_size_keeps_bytes() -> None:
    data = jpeg(750, 300, orientation=8)
    image = inspect_image(1, "side.jpg", data, autofix=False)
    assert (image.width, image.height, image.changes) == (300, 750, ())
    assert image.data is data


def test_upside_down_keeps_size() -> None:
    image = inspect_image(1, "flip.jpg", jpeg(640, 480, orientation=3))
    assert (image.width, image.height) == (640, 480)
    assert [change.code for change in image.changes] == ["rotated"]


def test_png_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[274] = 6
    data = encode(picture(750, 300), "PNG", exif=exif)
    image = inspect_image(1, "side.png", data)
    assert (image.format, image.width, image.height) == ("PNG", 300, 750)
    assert [change.code for change in image.changes] == ["rotated"]


def test_orientation_one_is_left_alone() -> None:
    data = jpeg(640, 480, orientation=1)
    assert inspect_image(1, "a.jpg", data).data is data


# --- re-encoding over 10 MB ---


def limit_bytes(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """Make MAX_IMAGE_BYTES `limit` where inspection and auto-fix read it (in this process)."""
    for module in (inspection, fixing):
        monkeypatch.setattr(module, "MAX_IMAGE_BYTES", limit)


def test_big_png_is_reencoded_under_the_limit(big_png: bytes) -> None:
    image = inspect_image(2, "big.png", big_png)
    assert image.format == "JPEG" and len(image.data) <= MAX_IMAGE_BYTES
    assert (image.width, image.height) == (2000, 1850)
    assert [change.code for change in image.changes] == ["converted", "reencoded"]
    assert image.changes[1].english().startswith("image 2 (big.png): re-encoded from 10.")


def test_downscale_keeps_both_sides_at_least_300(monkeypatch: pytest.MonkeyPatch) -> None:
    data = noise_png(1200, 500)
    limit_bytes(monkeypatch, 100_000)
    image = inspect_image(1, "wide.png", data)
    assert len(image.data) <= 100_000 and image.format == "JPEG"
    assert min(image.width, image.height) >= 300
    assert [change.code for change in image.changes] == ["converted", "reencoded", "downscaled"]
    with Image.open(io.BytesIO(image.data)) as decoded:
        assert decoded.size == (image.width, image.height)


def test_big_jpeg_is_reencoded_at_lower_quality(monkeypatch: pytest.MonkeyPatch) -> None:
    noise = Image.frombytes("RGB", (600, 600), os.urandom(600 * 600 * 3))
    data = encode(noise, "JPEG", quality=100)
    limit = len(data) * 2 // 3
    limit_bytes(monkeypatch, limit)
    image = inspect_image(1, "big.jpg", data)
    assert (image.format, image.width, image.height) == ("JPEG", 600, 600)
    assert len(image.data) <= limit
    assert [change.code for change in image.changes] == ["reencoded"]


def test_cannot_fit_without_going_under_300_is_too_big(monkeypatch: pytest.MonkeyPatch) -> None:
    data = noise_png(750, 300)
    limit_bytes(monkeypatch, 5_000)
    assert codes(rejected(data)) == [(1, "too_big")]


# --- messages and API values ---


def test_long_markdown_filename_is_shortened_and_escaped() -> None:
    name = "**bold**_" + "x" * 80 + "_`code`.png"
    with pytest.raises(ImageIntakeError) as caught:
        inspect_image(1, name, png(250, 250))
    label = caught.value.english().split(":")[0]
    assert "…" in label and label.endswith("\\`.png)")
    assert label.startswith("image 1 (\\*\\*bold\\*\\*\\_xxx")
    shown = label.removeprefix("image 1 (").removesuffix(")").replace("\\", "")
    assert len(shown) <= 40


def test_messages_can_be_rendered_from_another_dictionary() -> None:
    problem = ImageProblem(2, "tiny.png", "too_small", {"width": 250, "height": 250, "min": 300})
    dutch = {
        "label": "afbeelding {position} ({filename})",
        "too_small": "{label}: {width}×{height} px, minstens {min}×{min} nodig",
    }
    assert problem.render(dutch) == "afbeelding 2 (tiny.png): 250×250 px, minstens 300×300 nodig"


def test_every_code_has_an_english_template() -> None:
    expected = {"count", "download", "too_big", "format", "not_image", "corrupt", "bomb"}
    expected |= {"too_small", "aspect", "converted", "reencoded", "downscaled", "rotated"}
    expected |= {"too_slow", "too_much_memory", "unavailable"}
    assert set(images.PROBLEM_TEXT) == expected | {"label"}


def test_prepared_image_repr_leaves_out_the_bytes() -> None:
    image = inspect_image(1, "a.png", png())
    assert "data=" not in repr(image) and len(repr(image)) < 300


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on broken metadata
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(
        [
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff",
            b"GIF89a",
            b"RIFF\0\0\0\0WEBP",
            b"BM",
            b"II*\0",
        ]
    ),
    body=st.binary(max_size=2048),
)
def test_any_bytes_give_an_image_or_an_intake_error(prefix: bytes, body: bytes) -> None:
    try:
        result = inspect_image(1, "fuzz", prefix + body)
    except ImageIntakeError as error:
        assert error.problems
        error.english()
    else:
        assert result.format in {"JPEG", "PNG"}


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0), flip=st.integers(min_value=0), bit=st.integers(0, 7))
def test_damaged_real_images_give_an_image_or_an_intake_error(
    cut: int, flip: int, bit: int
) -> None:
    for original in (SAMPLE_PNG, SAMPLE_JPEG, SAMPLE_WEBP):
        data = bytearray(original[: len(original) - cut % 64])
        data[flip % len(data)] ^= 1 << bit
        try:
            inspect_image(1, "fuzz", bytes(data))
        except ImageIntakeError as error:
            assert error.problems


# --- downloads from a loopback server ---


@dataclass
class Files:
    """What the loopback server serves, and what it saw."""

    bodies: dict[str, bytes] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, Files]]:
    """An aiohttp server on 127.0.0.1, a free port: /f/{name}, /stream, /slow, and 404s."""
    files = Files()
    release = asyncio.Event()

    async def file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        files.hits[name] = files.hits.get(name, 0) + 1
        if name not in files.bodies:
            raise web.HTTPNotFound()
        return web.Response(body=files.bodies[name])

    async def stream(request: web.Request) -> web.StreamResponse:
        # ?bytes=N[&length][&piece=P]: N zero bytes in writes of P (64 KiB), chunked unless
        # `length`.
        total = int(request.query["bytes"])
        piece = int(request.query.get("piece", 64 * 1024))
        files.hits["stream"] = files.hits.get("stream", 0) + 1
        response = web.StreamResponse()
        if "length" in request.query:
            response.content_length = total
        await response.prepare(request)
        sent = 0
        try:
            while sent < total:
                size = min(piece, total - sent)
                await response.write(b"\0" * size)
                sent += size
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            files.written["stream"] = sent
        return response

    async def gzipped(request: web.Request) -> web.StreamResponse:
        # A PNG sent gzip-compressed although the client asked for identity.
        body = gzip.compress(files.bodies["a.png"])
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=b"late")

    app = web.Application()
    app.router.add_get("/f/{name}", file)
    app.router.add_get("/stream", stream)
    app.router.add_get("/slow", slow)
    app.router.add_get("/gzip", gzipped)
    test_server = TestServer(app, host="127.0.0.1", port=0)
    await test_server.start_server()
    try:
        yield test_server, files
    finally:
        release.set()
        await test_server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session, as the bot has."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def bytes_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the pieces the client actually pulled out of response streams."""
    chunks: list[int] = []
    original = aiohttp.StreamReader.iter_chunks

    def counting(self: aiohttp.StreamReader) -> AsyncIterator[tuple[bytes, bool]]:
        async def pull() -> AsyncIterator[tuple[bytes, bool]]:
            async for chunk, end in original(self):
                chunks.append(len(chunk))
                yield chunk, end

        return pull()

    monkeypatch.setattr(aiohttp.StreamReader, "iter_chunks", counting)
    return chunks


def ref(test_server: TestServer, position: int, path: str, **extra: object) -> AttachmentRef:
    """An attachment served at `path`."""
    url = str(test_server.make_url(path))
    return AttachmentRef(position, path.rsplit("/", 1)[-1], url, **extra)  # type: ignore[arg-type]


async def test_prepare_images_happy_path(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession
) -> None:
    test_server, files = server
    files.bodies.update({"a.png": png(), "b.jpg": jpeg(640, 480), "c.webp": SAMPLE_WEBP})
    refs = [ref(test_server, i, f"/f/{name}") for i, name in enumerate(files.bodies, 1)]
    prepared = await prepare_images(session, refs, timeout=5)
    assert [(p.position, p.format, p.changes != ()) for p in prepared] == [
        (1, "PNG", False),
        (2, "JPEG", False),
        (3, "PNG", True),
    ]
    assert prepared[0].data == files.bodies["a.png"]
    assert prepared[0].source_url == refs[0].url and not prepared[0].changes, "sent as a link"


@pytest.mark.parametrize("count", [0, 1, 5])
async def test_wrong_count_is_refused_before_any_download(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession, count: int
) -> None:
    test_server, files = server
    files.bodies["a.png"] = png()
    with pytest.raises(ImageIntakeError) as caught:
        await prepare_images(session, [ref(test_server, 1, "/f/a.png")] * count)
    assert codes(caught.value) == [(0, "count")]
    assert caught.value.english() == f"attach 2 to 4 images — you attached {count}"
    assert files.hits == {}


@pytest.mark.parametrize("with_length", [True, False])
async def test_eleven_mb_download_stops_at_the_limit(
    server: tuple[TestServer, Files],
    session: aiohttp.ClientSession,
    bytes_read: list[int],
    with_length: bool,
) -> None:
    test_server, _ = server
    query = f"/stream?bytes={11 * 1024 * 1024}" + ("&length" if with_length else "")
    with pytest.raises(ImageIntakeError) as caught:
        await fetch_images_raising(session, [ref(test_server, 1, query)], timeout=5)
    assert codes(caught.value) == [(1, "too_big")]
    if with_length:
        assert sum(bytes_read) == 0  # refused on the Content-Length header
    else:
        # Counted on the client: what the download pulled from the stream; it stopped at the
        # first piece past the limit.
        assert sum(bytes_read[:-1]) <= MAX_IMAGE_BYTES < sum(bytes_read)


async def test_endless_download_is_abandoned(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession
) -> None:
    # Counted on the server: it writes until the client hangs up. Socket buffers let it get
    # a few MB past the client's 10 MB, so this shows only that the client stopped reading.
    test_server, files = server
    with pytest.raises(ImageIntakeError):
        await fetch_images_raising(
            session, [ref(test_server, 1, "/stream?bytes=200000000")], timeout=5
        )
    for _ in range(100):
        if "stream" in files.written:
            break
        await asyncio.sleep(0.02)
    assert files.written["stream"] < 200_000_000 // 2


async def test_a_body_in_too_many_pieces_is_refused(
    server: tuple[TestServer, Files],
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    bytes_read: list[int],
) -> None:
    # 1-byte chunks cost the event loop's process ~1 µs each: 25 MB of them, 20 s of CPU.
    monkeypatch.setattr(fetching, "MAX_DOWNLOAD_PIECES", 100)
    test_server, _ = server
    await fetch_images_raising(
        session, [ref(test_server, 1, "/stream?bytes=100&piece=1")], timeout=5
    )
    with pytest.raises(ImageIntakeError) as caught:
        await fetch_images_raising(
            session, [ref(test_server, 1, "/stream?bytes=500&piece=1")], timeout=5
        )
    (problem,) = caught.value.problems
    assert (problem.code, problem.params["reason"]) == ("download", "pieces")
    assert len(bytes_read) == 100 + 101  # the first download whole, the second up to the limit


async def test_a_compressed_body_is_refused(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession
) -> None:
    # We ask for identity; inflating would be work on the event loop, past any byte cap.
    test_server, files = server
    files.bodies["a.png"] = png()
    with pytest.raises(ImageIntakeError) as caught:
        await fetch_images_raising(session, [ref(test_server, 1, "/gzip")], timeout=5)
    (problem,) = caught.value.problems
    assert problem.params == {"reason": "encoding", "encoding": "gzip"}


async def test_declared_size_over_the_cap_is_never_requested(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession
) -> None:
    test_server, files = server
    files.bodies["a.png"] = png()
    refs = [
        ref(test_server, 1, "/f/a.png", size=MAX_IMAGE_BYTES + 1),
        ref(test_server, 2, "/f/a.png"),
    ]
    with pytest.raises(ImageIntakeError) as caught:
        await prepare_images(session, refs, autofix=False)
    assert codes(caught.value) == [(1, "too_big")]
    assert files.hits == {"a.png": 1}


async def test_big_png_is_downloaded_and_reencoded_with_autofix(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession, big_png: bytes
) -> None:
    test_server, files = server
    files.bodies.update({"big.png": big_png, "b.png": png()})
    refs = [
        ref(test_server, 1, "/f/big.png", size=len(big_png)),
        ref(test_server, 2, "/f/b.png"),
    ]
    with pytest.raises(ImageIntakeError) as caught:
        await prepare_images(session, refs, autofix=False)
    assert codes(caught.value) == [(1, "too_big")]
    assert files.hits == {"b.png": 1}
    prepared = await prepare_images(session, refs, autofix=True)
    assert len(prepared[0].data) <= MAX_IMAGE_BYTES
    assert prepared[0].changes, "changed: sent as bytes, never as the original's link"


async def test_timeout_404_and_refused_connection_are_download_problems(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession
) -> None:
    test_server, _ = server
    refs = [
        ref(test_server, 1, "/slow"),
        ref(test_server, 2, "/f/gone.png"),
        AttachmentRef(3, "closed.png", "http://127.0.0.1:9/closed.png"),
        AttachmentRef(4, "bad.png", "not a url"),
    ]
    with pytest.raises(ImageIntakeError) as caught:
        await fetch_images_raising(session, refs, timeout=0.3)
    problems = caught.value.problems
    assert [(p.position, p.code, p.params["reason"]) for p in problems] == [
        (1, "download", "timeout"),
        (2, "download", "http"),
        (3, "download", "connection"),
        (4, "download", "connection"),
    ]
    assert problems[1].params["status"] == 404
    assert problems[1].english() == "couldn't download image 2 (gone.png), try again"


async def test_every_problem_of_every_image_is_reported_together(
    server: tuple[TestServer, Files], session: aiohttp.ClientSession
) -> None:
    test_server, files = server
    files.bodies.update(
        {
            "tiny.png": png(250, 250),
            "cat.webp": SAMPLE_WEBP,
            "ok.jpg": jpeg(),
            "wide.png": png(1000, 300),
        }
    )
    refs = [
        ref(test_server, 1, "/f/missing.png"),
        ref(test_server, 2, "/f/tiny.png"),
        ref(test_server, 3, "/f/cat.webp"),
        ref(test_server, 4, "/f/wide.png"),
    ]
    with pytest.raises(ImageIntakeError) as caught:
        await prepare_images(session, refs, autofix=False, timeout=5)
    assert codes(caught.value) == [(1, "download"), (2, "too_small"), (3, "format"), (4, "aspect")]
    assert caught.value.english().splitlines() == [
        "couldn't download image 1 (missing.png), try again",
        "image 2 (tiny.png): 250×250 px, needs at least 300×300 — use a larger image",
        "image 3 (cat.webp): WEBP isn't accepted — use JPG or PNG",
        "image 4 (wide.png): 1000×300 px is 3.33:1, needs between 1:2.5 and 2.5:1"
        " — crop it closer to square",
    ]
