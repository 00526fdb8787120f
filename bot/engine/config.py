"""The engine's knobs, usually read from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config import ImageTransport, Settings
from bot.quota import DAY_SECONDS


@dataclass(frozen=True)
class EngineConfig:
    """The knobs of the engine, usually from `Settings`."""

    max_concurrent: int = 2
    poll_interval: float = 2.0  # the shortest gap between two polls of a task
    poll_max_interval: float = 60.0  # the longest (unless the shared query rate needs more)
    task_timeout: float = 1800.0
    video_max_bytes: int = 200 * 1024 * 1024
    model: str = "kling-v1-6"
    image_transport: ImageTransport = ImageTransport.BASE64
    callback_public_url: str | None = None
    callback_listen_port: int | None = None
    retention_seconds: float = 7 * DAY_SECONDS
    submit_backoff: float = 2.0
    download_backoff: float = 2.0
    process_name: str = "main"  # the same across restarts; one per process sharing a database
    lease_seconds: float = 30.0
    #: Model seconds per real second for the poll planner and the estimates: 1 in the bot;
    #: the benchmark speeds the world up and says so here.
    time_scale: float = 1.0

    @property
    def callbacks(self) -> bool:
        """Whether the provider's callbacks are configured (polls are then the safety net)."""
        return self.callback_listen_port is not None and bool(self.callback_public_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        """The engine's knobs as the operator set them."""
        return cls(
            max_concurrent=settings.kling_max_concurrent_tasks,
            poll_interval=settings.poll_interval_seconds,
            poll_max_interval=max(
                settings.poll_max_interval_seconds, settings.poll_interval_seconds
            ),
            task_timeout=settings.task_timeout_seconds,
            video_max_bytes=settings.video_max_bytes,
            model=settings.kling_model,
            image_transport=settings.image_transport,
            callback_public_url=settings.callback_public_url,
            callback_listen_port=settings.callback_listen_port,
            retention_seconds=settings.retention_days * DAY_SECONDS,
            process_name=settings.process_name,
            lease_seconds=settings.lease_seconds,
        )
