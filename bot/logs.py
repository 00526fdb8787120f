"""Logging for the bot: plain lines (never colour codes) or one JSON object per line.

`LOG_FORMAT=text` (the default) writes `time level logger: message`, with ` [task N]` when the
line is about a task; `LOG_FORMAT=json` writes one JSON object per line for log collectors,
with the keys `time`, `level`, `logger`, `message`, and `task_id` (when there is one) and
`exception` (when there is one).

The task id comes from `current_task_id`, a context variable: the engine sets it while it
works on a task, so every line logged during that step (by the engine, the client, the
notifier) carries it without passing it around.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO

#: The task the current asyncio task works on, or None.
current_task_id: ContextVar[int | None] = ContextVar("current_task_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s%(task_suffix)s"
TEXT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class TaskIdFilter(logging.Filter):
    """Adds `task_id` (or None) and `task_suffix` (` [task N]` or empty) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops one."""
        task_id = getattr(record, "task_id", None)
        if task_id is None:
            task_id = current_task_id.get()
        record.task_id = task_id
        record.task_suffix = f" [task {task_id}]" if task_id is not None else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, task_id."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id = getattr(record, "task_id", None)
        if task_id is not None:
            entry["task_id"] = task_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["exception"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(
    level: str = "INFO", log_format: str = "text", stream: IO[str] | None = None
) -> None:
    """Send every log line to `stream` (stderr) in the chosen format; replaces other handlers."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT, TEXT_DATE_FORMAT))
    handler.addFilter(TaskIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
