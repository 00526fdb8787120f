"""The image worker process: inspects one image at a time, each under a CPU and memory budget.

Started by `InspectionPool` as `python -m bot.images.worker CPU_SECONDS MEMORY_BYTES`, never by
hand. It reads jobs on stdin and answers on stdout, one message each (bot/images/protocol.py).
When an image runs over its CPU time the kernel ends the process (SIGPROF); when it runs over
its memory the process answers so and exits. Either way the pool starts a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
import warnings
from typing import Any

from bot.images.inspection import configure_pillow, inspect_image
from bot.images.protocol import Message, read_message, write_message
from bot.images.rules import ImageIntakeError

WORKER_NICENESS = 10


def run_job(meta: dict[str, Any], data: bytes, cpu_seconds: float) -> Message:
    """Inspect one image under the CPU budget; the answer and, if it changed, the new bytes."""
    _reset_peak_memory()
    start_bytes = _status_bytes("VmRSS")
    started = time.process_time()
    payload = b""
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    try:
        image = inspect_image(
            int(meta["position"]), str(meta["filename"]), data, autofix=bool(meta["autofix"])
        )
        answer: dict[str, Any] = {
            "kind": "image",
            "format": image.format,
            "width": image.width,
            "height": image.height,
            "changes": [[change.code, change.params] for change in image.changes],
            "changed": image.data is not data,
        }
        if image.data is not data:
            payload = image.data
    except ImageIntakeError as error:
        problems = [[problem.code, problem.params] for problem in error.problems]
        answer = {"kind": "problems", "problems": problems}
    except MemoryError:
        answer = {"kind": "memory"}
    except Exception:  # a bug of ours, not the user's file: the pool logs it
        answer = {"kind": "error", "detail": traceback.format_exc(limit=8)[-4000:]}
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    answer["cpu_seconds"] = time.process_time() - started
    answer["start_bytes"] = start_bytes
    answer["peak_bytes"] = _status_bytes("VmHWM")
    return answer, payload


def main(argv: list[str] | None = None) -> None:
    """Serve jobs from stdin until it closes (the bot exited) or a job ran out of memory."""
    cpu_text, memory_text = argv if argv is not None else sys.argv[1:3]
    cpu_seconds, memory_bytes = float(cpu_text), int(memory_text)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the bot, which ends us
    # Below the bot on a busy machine: answering Discord within its 3 s comes before decoding.
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    jobs = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print from a library goes to stderr, never into the answers
    configure_pillow()
    warnings.simplefilter("ignore")  # Pillow's notes on odd files; the answer says what matters
    _limit_memory(memory_bytes)
    while (message := read_message(jobs, max_payload=2**32 - 1)) is not None:
        answer, payload = run_job(*message, cpu_seconds)
        write_message(answers, answer, payload)
        if answer["kind"] == "memory":
            return  # after a MemoryError, a fresh process is the safe one


def _limit_memory(budget: int) -> None:
    """Cap this process's address space at its size now plus `budget` (Linux)."""
    size = _status_bytes("VmSize")
    if not size:
        return
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + budget
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _status_bytes(key: str) -> int:
    """A size from /proc/self/status (VmSize, VmRSS, VmHWM) in bytes; 0 where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _reset_peak_memory() -> None:
    """Start VmHWM (peak resident memory) again from now, so it tells this job's peak (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        pass


if __name__ == "__main__":
    main()
