"""Image files as hostile users and odd encoders make them, and a mutator for fuzzing intake.

Shared by the image tests and the image benchmarks. Every builder makes its file from scratch
(no files on disk); the mutator is deterministic for a given `random.Random`.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageCms

from bot.images import ImageIntakeError, PreparedImage, inspect_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    """`image` encoded in `image_format`."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


# --- PNG from parts ---


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a valid CRC."""
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, payload) of each chunk of a well-formed PNG."""
    chunks = []
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunks.append((kind, data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def png_from_chunks(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A PNG of these chunks, every CRC valid."""
    return PNG_SIGNATURE + b"".join(png_chunk(kind, payload) for kind, payload in chunks)


def noise_rows(width: int, height: int, seed: int = 1) -> bytes:
    """Unfiltered RGB scanlines of noise (each row: filter byte 0, then width×3 bytes)."""
    rng = random.Random(seed)
    return b"".join(b"\0" + rng.randbytes(width * 3) for _ in range(height))


def png_with_idat(width: int, height: int, idat: list[bytes]) -> bytes:
    """An 8-bit RGB PNG whose IDAT chunks hold exactly `idat`, with valid CRCs and IEND."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    parts = [(b"IHDR", header), *((b"IDAT", payload) for payload in idat), (b"IEND", b"")]
    return png_from_chunks(parts)


def broken_pixel_pngs(width: int = 400, height: int = 400) -> dict[str, bytes]:
    """PNGs with valid CRCs and an IEND whose pixel data doesn't decode."""
    stream = zlib.compress(noise_rows(width, height))
    half = len(stream) // 2
    return {
        "random IDAT": png_with_idat(width, height, [random.Random(2).randbytes(len(stream))]),
        "last IDAT missing": png_with_idat(width, height, [stream[:half]]),
        "zlib stream cut in half": png_with_idat(width, height, [stream[:half], b""]),
        "bad filter type": png_with_idat(
            width, height, [zlib.compress(b"\x07" + noise_rows(width, height)[1:])]
        ),
    }


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims width×height (a decompression-bomb header)."""
    return png_with_idat(width, height, [zlib.compress(b"\0" * 64)])


def flat_png_bomb(width: int, height: int) -> bytes:
    """A real decompression bomb: a flat width×height RGB PNG, a few hundred bytes per MP."""
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width * 3)
    parts = [compressor.compress(row) for _ in range(height)]
    return png_with_idat(width, height, [b"".join(parts) + compressor.flush()])


def png_chunk_flood(count: int, base: bytes | None = None) -> bytes:
    """A valid small PNG with `count` empty private chunks before its pixels."""
    chunks = png_chunks(base if base is not None else encode(picture(400, 400), "PNG"))
    return png_from_chunks([chunks[0], *([(b"zzZz", b"")] * count), *chunks[1:]])


def icc_profile(size: int) -> bytes:
    """A valid sRGB ICC profile padded to about `size` bytes with a private 'data' tag."""
    base = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    (count,) = struct.unpack(">I", base[128:132])
    table_end = 132 + 12 * count
    entries = []
    for index in range(count):
        signature, offset, length = struct.unpack(
            ">4sII", base[132 + 12 * index : 144 + 12 * index]
        )
        entries.append(struct.pack(">4sII", signature, offset + 12, length))
    body = base[table_end:]
    body += b"\0" * (-len(base) % 4)
    padding = max(0, size - len(base) - 24)
    tag = b"data" + b"\0" * 4 + struct.pack(">I", 1) + random.Random(size).randbytes(padding)
    tag_offset = table_end + 12 + len(body)
    entries.append(struct.pack(">4sII", b"zzzz", tag_offset, len(tag)))
    profile = bytearray(base[:128] + struct.pack(">I", count + 1) + b"".join(entries) + body + tag)
    profile[0:4] = struct.pack(">I", len(profile))
    return bytes(profile)


# --- JPEG ---


def jpeg_with_segments(count: int, base: bytes | None = None) -> bytes:
    """A valid small JPEG with `count` empty comment segments after SOI."""
    data = base if base is not None else encode(picture(400, 400), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def jpeg_with_fill(count: int, base: bytes | None = None) -> bytes:
    """A valid small JPEG with `count` bytes of FF fill before its first marker (item 5)."""
    data = base if base is not None else encode(picture(400, 400), "JPEG")
    return data[:2] + b"\xff" * count + data[2:]


# --- ordinary pictures ---


def picture(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A flat image with a contrasting corner: cheap to encode, not trivially uniform."""
    image = Image.new(mode, (width, height), "steelblue" if mode != "L" else 128)
    image.paste("orange" if mode != "L" else 30, (0, 0, width // 3, height // 4))
    return image


def noise(width: int, height: int, mode: str = "RGB", seed: int = 1) -> Image.Image:
    """Incompressible noise of a mode with 1 byte per band."""
    bands = len(mode)
    return Image.frombytes(
        mode, (width, height), random.Random(seed).randbytes(width * height * bands)
    )


def sixteen_bit_grey_png(width: int, height: int) -> bytes:
    """A 16-bit grey PNG of noise around mid-grey (mean ≈ 32768 of 65535), uncompressed."""
    raw = os.urandom(width * height * 2)
    return encode(Image.frombytes("I;16", (width, height), raw), "PNG", compress_level=0)


# --- fuzzing ---


def fuzz_seeds() -> list[bytes]:
    """Valid JPEGs and PNGs of every common kind, each passing every rule as it is."""
    base = noise(320, 320)
    tile = noise(320, 320, "L", seed=3)
    exif = Image.Exif()
    exif[274] = 6
    return [
        encode(base, "JPEG", quality=85),
        encode(base, "JPEG", quality=70, progressive=True),
        encode(base, "JPEG", quality=90, subsampling=0, exif=exif),
        encode(tile, "JPEG"),
        encode(base.convert("CMYK"), "JPEG"),
        encode(base, "PNG"),
        encode(base.convert("RGBA"), "PNG"),
        encode(base.convert("P"), "PNG", optimize=True),
        encode(tile, "PNG"),
        encode(
            Image.frombytes("I;16", (320, 320), random.Random(4).randbytes(320 * 320 * 2)), "PNG"
        ),
        encode(base, "PNG", exif=exif),
    ]


def _png_mutation(rng: random.Random, data: bytes) -> bytes:
    """Change one chunk (its payload, its presence, its order) and keep every CRC valid."""
    chunks = png_chunks(data)
    index = rng.randrange(len(chunks))
    kind, payload = chunks[index]
    action = rng.randrange(6)
    if action == 0 and payload:  # flip bits inside
        body = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        chunks[index] = (kind, bytes(body))
    elif action == 1:  # cut the payload short
        chunks[index] = (kind, payload[: rng.randint(0, len(payload))])
    elif action == 2:  # random bytes of the same length
        chunks[index] = (kind, rng.randbytes(len(payload)))
    elif action == 3 and len(chunks) > 2:  # drop a chunk
        del chunks[index]
    elif action == 4 and any(k == b"IDAT" for k, _ in chunks):  # cut an IDAT's stream in two
        # (an earlier mutation of the same file may have dropped every IDAT)
        idats = [i for i, (k, _) in enumerate(chunks) if k == b"IDAT"]
        target = rng.choice(idats)
        stream = chunks[target][1]
        cut = rng.randint(0, len(stream))
        chunks[target : target + 1] = [(b"IDAT", stream[:cut]), (b"IDAT", b"")]
    else:  # swap two chunks
        other = rng.randrange(len(chunks))
        chunks[index], chunks[other] = chunks[other], chunks[index]
    return png_from_chunks(chunks)


def _byte_mutation(rng: random.Random, data: bytes) -> bytes:
    """A format-blind change: flips, overwrites, cuts, splices, with the end marker kept or not."""
    body = bytearray(data)
    action = rng.randrange(6)
    if action == 0:
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif action == 1:
        start = rng.randrange(len(body))
        length = rng.randint(1, 64)
        body[start : start + length] = rng.randbytes(min(length, len(body) - start))
    elif action == 2:  # cut off, then give it its end marker back (fools an end-marker check)
        end = b"\xff\xd9" if data[:2] == b"\xff\xd8" else png_chunk(b"IEND", b"")
        body = body[: rng.randrange(len(body))] + bytearray(end)
    elif action == 3:
        body = body[: rng.randrange(len(body))]
    elif action == 4:  # delete a span
        start = rng.randrange(len(body))
        del body[start : start + rng.randint(1, 2048)]
    else:  # duplicate a span in place
        start = rng.randrange(len(body))
        span = body[start : start + rng.randint(1, 2048)]
        body[start:start] = span
    return bytes(body)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three mutations of `data` (PNG mutations keep valid CRCs half of the time)."""
    for _ in range(rng.randint(1, 3)):
        if data.startswith(PNG_SIGNATURE) and rng.random() < 0.5:
            try:
                data = _png_mutation(rng, data)
                continue
            except (ValueError, IndexError, struct.error):
                pass  # an earlier mutation broke the chunk layout: mutate blindly
        if data:
            data = _byte_mutation(rng, data)
    return data


def mutated_files(count: int, seed: int = 10) -> Iterator[bytes]:
    """`count` mutated seeds, deterministic for a given seed."""
    rng = random.Random(seed)
    seeds = fuzz_seeds()
    for _ in range(count):
        yield mutate(rng, rng.choice(seeds))


@dataclass
class FuzzTally:
    """What intake made of a batch of files."""

    accepted: int = 0
    refused: int = 0
    foreign: list[str] | None = None  # exceptions other than ImageIntakeError
    undecodable: list[str] | None = None  # accepted, but Pillow can't decode what we'd send

    def __post_init__(self) -> None:
        self.foreign = []
        self.undecodable = []


def undecodable_reason(image: PreparedImage) -> str | None:
    """Why the bytes intake would send don't fully decode (or don't match what it said)."""
    try:
        with Image.open(io.BytesIO(image.data)) as decoded:
            decoded.load()
            if decoded.size != (image.width, image.height):
                return f"size {decoded.size} != {(image.width, image.height)}"
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def judge(tally: FuzzTally, data: bytes, inspect: Callable[[bytes], PreparedImage]) -> None:
    """Run `inspect` on `data` and count the outcome into `tally`."""
    assert tally.foreign is not None and tally.undecodable is not None
    try:
        image = inspect(data)
    except ImageIntakeError as error:
        assert error.problems
        tally.refused += 1
        return
    except Exception as error:
        tally.foreign.append(f"{type(error).__name__}: {error}")
        return
    tally.accepted += 1
    reason = undecodable_reason(image)
    if reason is not None:
        tally.undecodable.append(reason)


def inspect_in_process(data: bytes) -> PreparedImage:
    """`inspect_image` with auto-fix, the bot's default."""
    return inspect_image(1, "fuzz", data)
