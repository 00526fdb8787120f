"""How the bot and its image workers talk: one message each way per image, over pipes.

A message is an 8-byte header (the JSON's length, the payload's length), a JSON object, then the
payload bytes (the image). The worker is `python -m bot.images.worker` (bot/images/worker.py).
"""

from __future__ import annotations

import json
import signal
import struct
from typing import IO, Any

HEADER = struct.Struct(">II")  # JSON bytes, payload bytes
MAX_JSON_BYTES = 1024 * 1024
# The signal that ends a worker over its CPU budget: ITIMER_PROF counts user + system time.
CPU_BUDGET_SIGNAL = signal.SIGPROF

Message = tuple[dict[str, Any], bytes]


def write_message(stream: IO[bytes], meta: dict[str, Any], payload: bytes = b"") -> None:
    """Send one message: header, JSON, payload (written as is, not copied)."""
    head = json.dumps(meta).encode()
    stream.write(HEADER.pack(len(head), len(payload)) + head)
    if payload:
        stream.write(payload)
    stream.flush()


def read_message(stream: IO[bytes], max_payload: int) -> Message | None:
    """Read one message; None at the end of the stream or when it breaks the framing."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    head_size, payload_size = HEADER.unpack(header)
    if head_size > MAX_JSON_BYTES or payload_size > max_payload:
        return None
    head = stream.read(head_size)
    payload = stream.read(payload_size) if payload_size else b""
    if len(head) < head_size or len(payload) < payload_size:
        return None
    meta = json.loads(head)
    return (meta, payload) if isinstance(meta, dict) else None
