"""What the bot is doing, for Prometheus: `/metrics` and `/healthz` on a small HTTP port.

The engine and the client call a small facade (`Metrics`), never prometheus objects; with
METRICS_PORT unset they get `NullMetrics`, which does nothing. Each `Metrics` has its own
registry, so several can live in one test run, and labels every sample with `process` (a name
for this process, e.g. its shard range): with several bot processes, each reports its own.

The registry also carries the standard process collector (CPU seconds, resident memory, open
files, start time) and the Python platform collector. Every label value comes from a bounded
set (task states, the client's error class names, a few delivery kinds); one the code doesn't
know is folded into `other` beyond `MAX_LABEL_VALUES` per label, so a bug can't flood the
series.

`/healthz` answers 200 only while a supplied check passes (in the bot: the engine heartbeat in
the store is fresh) and 503 with the reason otherwise; a check that raises or hangs is a 503.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger(__name__)

NAMESPACE = "kling_bot"
#: Provider answer times (seconds): a quick status query up to a slow submit with images.
ANSWER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
#: Distinct values one label may take before new ones are counted as `other`.
MAX_LABEL_VALUES = 64
OTHER = "other"
#: How long /healthz waits for its check before it answers 503.
HEALTH_CHECK_TIMEOUT_SECONDS = 5.0
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class MetricsRecorder(Protocol):
    """What the engine and the client may record; `Metrics` and `NullMetrics` implement it."""

    def observe_answer(self, seconds: float, route: str) -> None:
        """One provider answer took `seconds` (route: `submit` or `query`)."""
        ...

    def count_poll(self) -> None:
        """One status query of a task was made."""
        ...

    def count_error(self, kind: BaseException | str) -> None:
        """One error, by the client's error class name (or the exception itself)."""
        ...

    def count_delivery(self, how: str) -> None:
        """One result handed over (`upload`, `link`, `dm`, …)."""
        ...

    def set_tasks_by_state(self, counts: Mapping[str, int]) -> None:
        """How many tasks are in each state now."""
        ...

    def set_queue_length(self, length: int) -> None:
        """How many tasks wait in the bot's own queue now."""
        ...

    def count_takeover(self) -> None:
        """This process took over a task whose lease another process let expire."""
        ...


class NullMetrics:
    """Metrics off: every call does nothing."""

    def observe_answer(self, seconds: float, route: str) -> None:
        """Do nothing."""

    def count_poll(self) -> None:
        """Do nothing."""

    def count_error(self, kind: BaseException | str) -> None:
        """Do nothing."""

    def count_delivery(self, how: str) -> None:
        """Do nothing."""

    def set_tasks_by_state(self, counts: Mapping[str, int]) -> None:
        """Do nothing."""

    def set_queue_length(self, length: int) -> None:
        """Do nothing."""

    def count_takeover(self) -> None:
        """Do nothing."""


class _Bounded:
    """Keeps one label's values few and well-formed (anything else becomes `other`)."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str) -> str:
        if not _LABEL_VALUE.fullmatch(value):
            return OTHER
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


class Metrics:
    """The bot's metrics in a registry of their own, every sample labelled with `process`."""

    def __init__(self, process: str = "bot", *, system: bool = True) -> None:
        """`process` names this process (e.g. `shards-0-3`); `system` adds the process and
        platform collectors (CPU, memory, open files, Python version)."""
        self.process = process if _LABEL_VALUE.fullmatch(process) else OTHER
        self.registry = CollectorRegistry(auto_describe=True)
        if system:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        reg = self.registry
        self._tasks = Gauge(
            "tasks", "Tasks in each state.", ["process", "state"], namespace=NAMESPACE, registry=reg
        )
        self._queue = Gauge(
            "queue_length",
            "Tasks waiting in the bot's own queue.",
            ["process"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self._answers = Histogram(
            "provider_answer_seconds",
            "How long the provider took to answer, by route.",
            ["process", "route"],
            namespace=NAMESPACE,
            registry=reg,
            buckets=ANSWER_BUCKETS,
        )
        self._polls = Counter(
            "polls", "Status queries made.", ["process"], namespace=NAMESPACE, registry=reg
        )
        self._errors = Counter(
            "errors",
            "Errors, by the client's error class name.",
            ["process", "kind"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self._deliveries = Counter(
            "deliveries",
            "Results handed over, by how.",
            ["process", "how"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self._takeovers = Counter(
            "lease_takeovers",
            "Tasks taken over from a process whose lease expired.",
            ["process"],
            namespace=NAMESPACE,
            registry=reg,
        )
        self._routes, self._kinds, self._hows, self._states = (_Bounded() for _ in range(4))
        self._known_states: set[str] = set()
        # Series that exist from the start read 0 rather than missing.
        self._queue.labels(self.process).set(0)
        self._polls.labels(self.process)
        self._takeovers.labels(self.process)

    def observe_answer(self, seconds: float, route: str) -> None:
        """One provider answer took `seconds` (route: `submit` or `query`)."""
        if seconds >= 0:
            self._answers.labels(self.process, self._routes(route)).observe(seconds)

    def count_poll(self) -> None:
        """One status query of a task was made."""
        self._polls.labels(self.process).inc()

    def count_error(self, kind: BaseException | str) -> None:
        """One error, by the client's error class name (or the exception itself)."""
        name = type(kind).__name__ if isinstance(kind, BaseException) else kind
        self._errors.labels(self.process, self._kinds(name)).inc()

    def count_delivery(self, how: str) -> None:
        """One result handed over (`upload`, `link`, `dm`, …)."""
        self._deliveries.labels(self.process, self._hows(how)).inc()

    def set_tasks_by_state(self, counts: Mapping[str, int]) -> None:
        """How many tasks are in each state now; a state left out reads 0."""
        given = {self._states(str(state)): int(n) for state, n in counts.items()}
        for state in self._known_states - set(given):
            self._tasks.labels(self.process, state).set(0)
        for state, n in given.items():
            self._tasks.labels(self.process, state).set(n)
        self._known_states |= set(given)

    def set_queue_length(self, length: int) -> None:
        """How many tasks wait in the bot's own queue now."""
        self._queue.labels(self.process).set(length)

    def count_takeover(self) -> None:
        """This process took over a task whose lease another process let expire."""
        self._takeovers.labels(self.process).inc()

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format."""
        return generate_latest(self.registry)


def metrics_for(port: int | None, process: str = "bot") -> MetricsRecorder:
    """`Metrics` when METRICS_PORT is set, else `NullMetrics`."""
    return NullMetrics() if port is None else Metrics(process)


# --- health ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """What a health check found: healthy or not, and why, in one line."""

    ok: bool
    detail: str


HealthCheck = Callable[[], Awaitable[Health]]


def heartbeat_check(
    read_heartbeat: Callable[[], Awaitable[str | float | None]],
    *,
    max_age: float,
    clock: Callable[[], float] = time.time,
) -> HealthCheck:
    """A check that passes while the engine's heartbeat (Unix time) is at most `max_age` old.

    `read_heartbeat` is e.g. `lambda: store.get_meta(HEARTBEAT_KEY)` (see `bot.ops`).
    """

    async def check() -> Health:
        raw = await read_heartbeat()
        if raw is None:
            return Health(False, "the engine has never written a heartbeat")
        try:
            beat = float(raw)
        except ValueError:
            return Health(False, "the engine's heartbeat is unreadable")
        age = clock() - beat
        if age > max_age:
            return Health(False, f"the engine's heartbeat is {age:.0f} s old (over {max_age:g} s)")
        return Health(True, f"the engine's heartbeat is {max(age, 0):.0f} s old")

    return check


# --- the HTTP server -------------------------------------------------------------------------


class MetricsServer:
    """`/metrics` and `/healthz` over plain HTTP (aiohttp), started and stopped with the bot."""

    def __init__(
        self,
        metrics: Metrics,
        health: HealthCheck,
        *,
        host: str = "0.0.0.0",  # a scraper usually calls in from another container or host
        port: int = 0,
        before_scrape: Callable[[], Awaitable[None]] | None = None,
        health_timeout: float = HEALTH_CHECK_TIMEOUT_SECONDS,
    ) -> None:
        """`before_scrape` refreshes the gauges (tasks by state, queue length) from the store
        just before each scrape; if it fails or takes over `health_timeout`, the last values
        are served and the problem logged.
        """
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self.before_scrape = before_scrape
        self.health_timeout = health_timeout
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen; returns the port (the one the system chose when asked for port 0)."""
        app = web.Application()
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break
        log.info("Metrics on port %s (/metrics, /healthz)", self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening (idempotent)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """Every metric in Prometheus' text format, after refreshing the gauges."""
        if self.before_scrape is not None:
            try:
                async with asyncio.timeout(self.health_timeout):
                    await self.before_scrape()
            except TimeoutError:
                log.warning("Refreshing the metrics took too long; serving the last values")
            except Exception:
                log.exception("Refreshing the metrics failed; serving the last values")
        body = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_health(self, request: web.Request) -> web.Response:
        """200 `ok: …` while the check passes, else 503 with the reason."""
        try:
            async with asyncio.timeout(self.health_timeout):
                result = await self.health()
        except TimeoutError:
            result = Health(False, f"the health check took over {self.health_timeout:g} s")
        except Exception as error:
            log.exception("The health check failed")
            result = Health(False, f"the health check failed ({type(error).__name__})")
        status = 200 if result.ok else 503
        word = "ok" if result.ok else "unhealthy"
        return web.Response(status=status, text=f"{word}: {result.detail}\n")
