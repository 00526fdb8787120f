"""Where a task's files live on disk: its input images and its video."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}
#: The picture of a task's inputs is `inputs.jpg` or `inputs.png` beside them (never read as
#: an input: those are named by their number).
PICTURE_STEM = "inputs"


class MediaStore:
    """Files under MEDIA_DIR: `inputs/<external id>/<n>.<ext>` (and the picture of them,
    `inputs.<ext>`) and `videos/<task id>.mp4`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def input_dir(self, external_task_id: str) -> Path:
        """The folder that keeps one task's input images."""
        return self.root / "inputs" / external_task_id

    def video_path(self, task_id: int) -> Path:
        """Where one task's video is kept."""
        return self.root / "videos" / f"{task_id}.mp4"

    async def save_inputs(self, external_task_id: str, images: Sequence[tuple[str, bytes]]) -> Path:
        """Write (format, bytes) images as 1.png, 2.jpg, …; return their folder."""
        folder = self.input_dir(external_task_id)
        await asyncio.to_thread(_write_inputs, folder, images)
        return folder

    @staticmethod
    async def load_inputs(folder: str | Path) -> list[bytes]:
        """The input images of a task, in their order."""
        return await asyncio.to_thread(_read_inputs, Path(folder))

    @staticmethod
    async def save_picture(folder: str | Path, filename: str, data: bytes) -> Path:
        """Keep the picture of a task's inputs (`bot.collage`) in its input folder."""
        return await asyncio.to_thread(_write_picture, Path(folder), filename, data)

    @staticmethod
    async def picture(folder: str | Path) -> Path | None:
        """The kept picture of a task's inputs, if there is one."""
        return await asyncio.to_thread(_find_picture, Path(folder))

    @staticmethod
    async def remove(path: str | Path) -> None:
        """Delete a file or a folder, if it is there."""
        await asyncio.to_thread(_remove, Path(path))


def _write_inputs(folder: Path, images: Sequence[tuple[str, bytes]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for position, (image_format, data) in enumerate(images, start=1):
        suffix = IMAGE_SUFFIX.get(image_format.upper(), ".img")
        temporary = folder / f".{position}{suffix}.part"
        temporary.write_bytes(data)
        temporary.replace(folder / f"{position}{suffix}")


def _write_picture(folder: Path, filename: str, data: bytes) -> Path:
    if Path(filename).stem != PICTURE_STEM:
        raise ValueError(f"a picture of the inputs is named {PICTURE_STEM}.<ext>, not {filename}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    temporary = folder / f".{filename}.part"
    temporary.write_bytes(data)
    temporary.replace(target)
    return target


def _find_picture(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.stem == PICTURE_STEM)
    return found[0] if found else None


def _read_inputs(folder: Path) -> list[bytes]:
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.stem.isdigit()),
        key=lambda p: int(p.stem),
    )
    return [p.read_bytes() for p in files]


def _remove(target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
    else:
        target.unlink(missing_ok=True)
