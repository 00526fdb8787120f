"""The metrics server as the bot runs it (METRICS_PORT): which process it speaks for, the
gauges it reads from the store before each scrape, and `/healthz` from the engine's heartbeat.

`/healthz` answers for this process: it reads when this process's engine last wrote its
heartbeat (in memory), not the stored heartbeat, which with several processes on one database
any of them may have written. A loop that stalls, or a database that refuses the writes,
makes it 503 after `HEARTBEAT_MAX_AGE_SECONDS`.

`bot.metrics` holds the facade and the HTTP server; this module ties them to the settings and
the store, so `bot/app.py` only asks for a recorder and starts (and stops) the server.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable

from bot.config import Settings
from bot.metrics import (
    Metrics,
    MetricsRecorder,
    MetricsServer,
    heartbeat_check,
    metrics_for,
)
from bot.ops import HEARTBEAT_MAX_AGE_SECONDS, why_not_listening
from bot.store import TaskStore
from bot.tasks import TaskState

log = logging.getLogger(__name__)

#: Where the metrics server listens: every interface, as a scraper calls in from elsewhere.
METRICS_HOST = "0.0.0.0"
DEFAULT_PROCESS_NAME = "bot"
_NOT_IN_A_LABEL = re.compile(r"[^A-Za-z0-9_.:-]+")


def process_name(settings: Settings) -> str:
    """The `process` label on this process's metrics: the host's name (in Docker the
    container's, so each bot process of a compose file has its own), else `bot`.

    The one place that names a process: a process that serves part of the bot (a shard range)
    is named here from its settings.
    """
    name = _NOT_IN_A_LABEL.sub("-", socket.gethostname()).strip("-")[:64]
    return name or DEFAULT_PROCESS_NAME


def recorder_for(settings: Settings) -> MetricsRecorder:
    """`Metrics` named after this process when METRICS_PORT is set, else `NullMetrics`."""
    return metrics_for(settings.metrics_port, process_name(settings))


async def refresh_task_gauges(store: TaskStore, metrics: MetricsRecorder) -> None:
    """Tasks by state, and the queue's length (tasks `queued`), as the store has them now.

    One GROUP BY over the state index; with several processes on one database every process
    reports the same (the database's) numbers.
    """
    counts = await store.count_by_state()
    metrics.set_tasks_by_state({state.value: n for state, n in counts.items()})
    metrics.set_queue_length(counts[TaskState.QUEUED])


async def start_metrics_server(
    settings: Settings,
    store: TaskStore,
    metrics: MetricsRecorder,
    heartbeat: Callable[[], float | None],
    *,
    host: str = METRICS_HOST,
) -> MetricsServer | None:
    """Serve `/metrics` and `/healthz` on METRICS_PORT; None when it is unset or can't be had.

    `heartbeat` says when this process's engine last wrote its heartbeat (Unix time), or None.

    A port that can't be had (in use, or not allowed) is one error line for the operator; the
    bot runs on without metrics rather than leave its users without videos.
    """
    port = settings.metrics_port
    if port is None or not isinstance(metrics, Metrics):
        return None

    async def own_heartbeat() -> float | None:
        return heartbeat()

    health = heartbeat_check(own_heartbeat, max_age=HEARTBEAT_MAX_AGE_SECONDS)
    server = MetricsServer(
        metrics,
        health,
        host=host,
        port=port,
        before_scrape=lambda: refresh_task_gauges(store, metrics),
    )
    try:
        await server.start()
    except OSError as error:
        await server.stop()
        log.error(
            "Can't serve metrics on port %d: %s. Set METRICS_PORT to a free port, or leave it "
            "empty; the bot runs on without /metrics and /healthz.",
            port,
            why_not_listening(error, "METRICS_PORT"),
        )
        return None
    return server
