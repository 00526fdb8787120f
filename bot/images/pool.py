"""A few worker processes that inspect images off the event loop, each image under a budget.

Why processes and not threads: a thread can't be stopped, and its memory is the bot's; a worker
process can be killed, and runs under its own limits. Each image gets `cpu_seconds` of CPU (the
kernel ends the worker past it) and `memory_bytes` on top of the idle worker (its address space
is capped, so a larger allocation fails inside it); a wall-clock deadline catches anything
else. Over budget, the image is refused by name and a fresh worker takes the old one's place:
nothing is shared, so no request waits for another's file beyond a free worker.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.images.protocol import CPU_BUDGET_SIGNAL, Message, read_message, write_message
from bot.images.rules import (
    IMAGE_CPU_SECONDS,
    IMAGE_MEMORY_BYTES,
    MAX_IMAGE_BYTES,
    ImageIntakeError,
    ImageProblem,
    PreparedImage,
    too_much_memory,
    too_slow,
)

log = logging.getLogger(__name__)

DEFAULT_WORKERS = max(2, min(4, os.cpu_count() or 2))
# A worker is replaced after this many images, so whatever its heap keeps can't pile up.
MAX_JOBS_PER_WORKER = 200
# glibc's malloc otherwise keeps large freed blocks in its heap, which would count against the
# next image's address-space budget; with a fixed threshold they go back to the system at once.
WORKER_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE})


@dataclass(frozen=True)
class JobFigures:
    """What one image cost in its worker (for benchmarks and logs)."""

    position: int
    outcome: str  # "image", "problems", "too_slow", "too_much_memory", "crashed", ...
    wall_seconds: float
    cpu_seconds: float  # in the worker, 0 when it died
    start_bytes: int  # the worker's resident memory when the job began
    peak_bytes: int  # its peak resident memory during the job (0 when unknown)


class _Worker:
    """One worker process, started on first use."""

    def __init__(self, cpu_seconds: float, memory_bytes: int) -> None:
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.process: subprocess.Popen[bytes] | None = None
        self.jobs = 0
        self.over_time = False  # killed by the wall-clock deadline

    def ensure_started(self) -> subprocess.Popen[bytes]:
        """The running process, started now if there is none (raises OSError if it can't be)."""
        if self.process is None:
            path = os.environ.get("PYTHONPATH")
            environment = {
                **os.environ,
                **WORKER_ENVIRONMENT,
                "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, *([path] if path else [])]),
            }
            command = [sys.executable, "-m", "bot.images.worker"]
            self.process = subprocess.Popen(
                [*command, repr(self.cpu_seconds), str(self.memory_bytes)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=environment,
            )
        return self.process

    def kill_for_time(self) -> None:
        """The wall-clock deadline passed: end the process (its reader sees the pipe close)."""
        self.over_time = True
        if self.process is not None:
            self.process.kill()

    def stop(self) -> None:
        """End the process, if any, and close its pipes."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # unsent bytes of a job it died on
                    pipe.close()


class InspectionPool:
    """Inspect images in `workers` worker processes, one image per worker at a time."""

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        *,
        cpu_seconds: float = IMAGE_CPU_SECONDS,
        memory_bytes: int = IMAGE_MEMORY_BYTES,
        wall_seconds: float | None = None,
    ) -> None:
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        # CPU time is the budget; the wall clock only catches a worker that is stuck or starved.
        self.wall_seconds = wall_seconds if wall_seconds is not None else 3 * cpu_seconds + 10
        self.figures: collections.deque[JobFigures] = collections.deque(maxlen=1000)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="image-inspection")
        # At most `workers` jobs run at once (the executor's threads), so get() never waits.
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: set[_Worker] = set()
        self._closed = False
        for _ in range(workers):
            self._put_back(_Worker(cpu_seconds, memory_bytes))

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def start(self) -> None:
        """Start every worker process now, so the first images don't wait for one to start."""
        for worker in list(self._workers):
            try:
                worker.ensure_started()
            except OSError as error:
                log.error(
                    "Couldn't start an image worker: %s (is the system out of processes?)", error
                )

    async def inspect(
        self,
        position: int,
        filename: str,
        data: bytes,
        *,
        autofix: bool = True,
        source_url: str = "",
    ) -> PreparedImage:
        """`inspect_image` in a worker process, within budget; raises ImageIntakeError."""
        call = functools.partial(
            self.inspect_blocking, position, filename, data, autofix=autofix, source_url=source_url
        )
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def inspect_blocking(
        self,
        position: int,
        filename: str,
        data: bytes,
        *,
        autofix: bool = True,
        source_url: str = "",
    ) -> PreparedImage:
        """`inspect` for a caller that may block (a thread of its own)."""
        meta = {"position": position, "filename": filename, "autofix": autofix}
        worker = self._idle.get()
        started = time.monotonic()
        answer: Message | None = None
        try:
            answer = self._exchange(worker, meta, data)
        finally:
            # No answer, or "out of memory" (the worker then exits): it is done for, whether
            # or not the system has noticed its exit yet.
            done_for = answer is None or answer[0].get("kind") == "memory"
            self._return_or_replace(worker, done_for=done_for)
        figures = self._figures(position, worker, answer, time.monotonic() - started)
        self.figures.append(figures)
        return self._result(position, filename, data, source_url, worker, answer, figures)

    def close(self) -> None:
        """Stop every worker; images still being inspected fail. Safe to call twice."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        for worker in list(self._workers):
            worker.stop()

    # --- one job ---

    def _exchange(self, worker: _Worker, meta: dict[str, Any], data: bytes) -> Message | None:
        """Send the job, wait for the answer; None when the worker died or was killed."""
        try:
            process = worker.ensure_started()
        except OSError as error:
            log.error("Couldn't start an image worker: %s (is the system out of processes?)", error)
            return None
        assert process.stdin is not None and process.stdout is not None
        deadline = threading.Timer(self.wall_seconds, worker.kill_for_time)
        deadline.daemon = True
        deadline.start()
        worker.jobs += 1
        try:
            write_message(process.stdin, meta, data)
            return read_message(process.stdout, max_payload=MAX_IMAGE_BYTES)
        except (OSError, ValueError):  # a closed pipe, or an answer that isn't JSON
            return None
        finally:
            deadline.cancel()

    def _return_or_replace(self, worker: _Worker, *, done_for: bool) -> None:
        """Put a healthy worker back; replace a dead, killed or well-used one."""
        process = worker.process
        healthy = (
            process is not None
            and not done_for
            and process.poll() is None
            and not worker.over_time
            and worker.jobs < MAX_JOBS_PER_WORKER
        )
        if healthy or process is None:
            self._put_back(worker)
            return
        self._workers.discard(worker)
        worker.stop()
        replacement = _Worker(self.cpu_seconds, self.memory_bytes)
        self._put_back(replacement)
        if not self._closed:
            try:
                replacement.ensure_started()  # it loads while this request goes on
            except OSError:
                pass  # tried again, and logged, on its first job

    def _put_back(self, worker: _Worker) -> None:
        self._workers.add(worker)
        self._idle.put(worker)

    # --- what the answer means ---

    def _figures(
        self, position: int, worker: _Worker, answer: Message | None, wall: float
    ) -> JobFigures:
        """The job's costs, and its outcome in one word."""
        if answer is None:
            return JobFigures(position, self._death(worker), wall, 0.0, 0, 0)
        meta = answer[0]
        return JobFigures(
            position,
            str(meta.get("kind")),
            wall,
            float(meta.get("cpu_seconds") or 0.0),
            int(meta.get("start_bytes") or 0),
            int(meta.get("peak_bytes") or 0),
        )

    def _death(self, worker: _Worker) -> str:
        """Why a worker gave no answer."""
        process = worker.process
        code = process.wait() if process is not None else None
        if worker.over_time or code == -CPU_BUDGET_SIGNAL:
            return "too_slow"
        if code == -signal.SIGKILL:  # not ours: the system's out-of-memory killer
            return "too_much_memory"
        if code is not None and code < 0 and -code in CRASH_SIGNALS:
            return "crashed"
        return "unavailable"

    def _result(
        self,
        position: int,
        filename: str,
        data: bytes,
        source_url: str,
        worker: _Worker,
        answer: Message | None,
        figures: JobFigures,
    ) -> PreparedImage:
        """The prepared image an answer describes, or the error it stands for."""

        def refuse(problem: ImageProblem) -> ImageIntakeError:
            return ImageIntakeError([problem])

        outcome = figures.outcome
        if outcome == "too_slow":
            raise refuse(too_slow(position, filename, self.cpu_seconds))
        if outcome in {"too_much_memory", "memory"}:
            raise refuse(too_much_memory(position, filename, self.memory_bytes))
        if outcome == "crashed":
            code = worker.process.returncode if worker.process else None
            log.warning(
                "Image %d (%r) crashed its image worker (exit %s)", position, filename, code
            )
            params: dict[str, object] = {"format": "image", "detail": f"decoder crash ({code})"}
            raise refuse(ImageProblem(position, filename, "corrupt", params))
        if answer is None or outcome == "unavailable":
            code = worker.process.returncode if worker.process else None
            log.error(
                "An image worker ended without an answer (exit %s); its error is above."
                " Hint: `python -m bot.images.worker` must be able to import the bot",
                code,
            )
            raise refuse(ImageProblem(position, filename, "unavailable", {}))
        meta, payload = answer
        if outcome == "problems":
            problems = [
                ImageProblem(position, filename, str(code), dict(params))
                for code, params in meta["problems"]
            ]
            raise ImageIntakeError(problems)
        if outcome != "image":
            log.error("The image worker failed on image %d:\n%s", position, meta.get("detail"))
            raise refuse(ImageProblem(position, filename, "unavailable", {}))
        changes = tuple(
            ImageProblem(position, filename, str(code), dict(params))
            for code, params in meta["changes"]
        )
        return PreparedImage(
            position,
            filename,
            str(meta["format"]),
            int(meta["width"]),
            int(meta["height"]),
            payload if meta["changed"] else data,
            source_url,
            changes,
        )


_default: InspectionPool | None = None


def default_pool() -> InspectionPool:
    """The process's shared pool, started on first use and stopped at exit."""
    global _default
    if _default is None or _default.closed:
        _default = InspectionPool()
        _default.start()
        atexit.register(_default.close)
    return _default
