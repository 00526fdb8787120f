"""The vocabulary every other module speaks: a task, its states, the moves between them.

This module imports nothing else from the project: the store, the quota rules, the engine and
the Discord side all import it, so a reader learns the words here first.

A task moves `queued → submitting → submitted → processing → succeeded → delivered`, with the
side exits `failed` and `timed_out`; `TRANSITIONS` lists, for each state, the states a task may
enter it from, and the store refuses any other move. A task's options are two typed values kept
in one JSON column: `TaskOptions`, what is sent to the API, and `TaskNotes`, what the bot noted
for its own later steps.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class TaskState(StrEnum):
    """Where a task is in its life; every change is written before the step it announces."""

    QUEUED = "queued"  # stored, waiting for a slot at the provider
    SUBMITTING = "submitting"  # being sent; after a crash it is looked up before a resend
    SUBMITTED = "submitted"  # the provider has it: its Kling task id is stored
    PROCESSING = "processing"  # the provider said it is being made
    SUCCEEDED = "succeeded"  # the video is made; it still has to reach the user
    DELIVERED = "delivered"  # the video (or its link) is posted: the user has it
    FAILED = "failed"  # ended without a video; `error_code` says why
    TIMED_OUT = "timed_out"  # not finished in time (TASK_TIMEOUT_SECONDS)


#: States that hold a concurrent-quota slot ("not yet finished").
ACTIVE: frozenset[TaskState] = frozenset(
    {TaskState.QUEUED, TaskState.SUBMITTING, TaskState.SUBMITTED, TaskState.PROCESSING}
)
#: States that free the concurrent slot; entering one sets the task's `finished_at`.
FINISHED: frozenset[TaskState] = frozenset(TaskState) - ACTIVE
#: States the engine never moves a task out of (succeeded still needs delivery).
TERMINAL: frozenset[TaskState] = frozenset(
    {TaskState.DELIVERED, TaskState.FAILED, TaskState.TIMED_OUT}
)

#: For each state, the states a task may enter it from; the store refuses every other move.
TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = MappingProxyType(
    {
        TaskState.QUEUED: frozenset({TaskState.SUBMITTING}),  # the provider didn't take it
        TaskState.SUBMITTING: frozenset({TaskState.QUEUED}),
        TaskState.SUBMITTED: frozenset({TaskState.SUBMITTING}),
        TaskState.PROCESSING: frozenset({TaskState.SUBMITTED}),
        TaskState.SUCCEEDED: frozenset({TaskState.SUBMITTED, TaskState.PROCESSING}),
        TaskState.DELIVERED: frozenset({TaskState.SUCCEEDED}),
        TaskState.FAILED: ACTIVE,
        TaskState.TIMED_OUT: ACTIVE,
    }
)


class FailureReason(StrEnum):
    """Our codes for why a task ended badly or was delivered without its file (`error_code`)."""

    CONTENT_POLICY = "content_policy"
    INVALID_REQUEST = "invalid_request"
    OPERATOR = "operator"
    PROVIDER_FAILED = "provider_failed"
    NO_VIDEO = "no_video"  # "succeeded", but without a video the bot can use
    NOT_SUBMITTED = "not_submitted"
    TIMED_OUT = "timed_out"
    INPUTS_MISSING = "inputs_missing"
    VIDEO_TOO_LARGE = "video_too_large"
    VIDEO_NOT_MP4 = "video_not_mp4"
    VIDEO_DOWNLOAD_FAILED = "video_download_failed"


class ResultWhere(StrEnum):
    """Where a task's result goes."""

    THREAD = "thread"  # a thread opened on the status message
    CHANNEL = "channel"  # the channel the request came from
    DM = "dm"  # the owner's DMs (the bot may not post in the channel)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """What is sent to the API besides the prompt and the images (None: the API's default)."""

    duration: str | None = None
    mode: str | None = None
    aspect_ratio: str | None = None
    negative_prompt: str | None = None
    cfg_scale: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The options that were set, by the API's field names: as stored, and as sent."""
        values = {
            "duration": self.duration,
            "mode": self.mode,
            "aspect_ratio": self.aspect_ratio,
            "negative_prompt": self.negative_prompt,
            "cfg_scale": self.cfg_scale,
        }
        return {name: value for name, value in values.items() if value not in (None, "")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskOptions:
        """The options back from the stored JSON (other keys are ignored)."""

        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        cfg_scale = data.get("cfg_scale")
        return cls(
            duration=text("duration"),
            mode=text("mode"),
            aspect_ratio=text("aspect_ratio"),
            negative_prompt=text("negative_prompt"),
            cfg_scale=None if cfg_scale is None else float(cfg_scale),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskNotes:
    """What the bot noted about a task for its own later steps (never sent as an option)."""

    result_where: ResultWhere | None = None
    #: The result or failure notice went to the owner's DMs (written before that post).
    dm_fallback: bool = False
    #: The owner's daily limit when the task was asked for (None: unlimited), for its status.
    quota_daily: int | None = None
    image_names: tuple[str, ...] = ()
    #: What auto-fix changed in the images, in the user's words.
    image_changes: tuple[str, ...] = ()
    #: Discord's links to the images, sent instead of the bytes when IMAGE_TRANSPORT=url.
    image_urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The notes as stored, beside the options in the same JSON object."""
        values: dict[str, Any] = {
            "result_where": None if self.result_where is None else self.result_where.value,
            "dm_fallback": self.dm_fallback or None,
            "quota_daily": self.quota_daily,
            "image_names": list(self.image_names) or None,
            "image_changes": list(self.image_changes) or None,
            "image_urls": list(self.image_urls) or None,
        }
        return {name: value for name, value in values.items() if value is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskNotes:
        """The notes back from the stored JSON (other keys are ignored)."""
        where = data.get("result_where")
        quota_daily = data.get("quota_daily")
        return cls(
            result_where=None if where is None else ResultWhere(where),
            dm_fallback=bool(data.get("dm_fallback")),
            quota_daily=None if quota_daily is None else int(quota_daily),
            image_names=tuple(str(name) for name in data.get("image_names") or ()),
            image_changes=tuple(str(change) for change in data.get("image_changes") or ()),
            image_urls=tuple(str(url) for url in data.get("image_urls") or ()),
        )


def new_external_task_id() -> str:
    """A fresh id for a task, ours, sent to the API so an interrupted submit can be found."""
    return f"kvb-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Task:
    """One task row, as stored (times are Unix seconds)."""

    id: int
    external_task_id: str
    kling_task_id: str | None
    user_id: int
    guild_id: int | None
    channel_id: int
    status_message_id: int | None
    thread_id: int | None
    result_message_id: int | None
    locale: str
    prompt: str
    options: TaskOptions
    image_count: int
    input_dir: str
    state: TaskState
    status_message: str | None
    error_code: str | None
    video_url: str | None
    video_path: str | None
    video_bytes: int | None
    attempts: int
    quota_refunded: bool
    callback_token: str | None
    upload_limit: int
    created_at: float
    updated_at: float
    submitted_at: float | None
    finished_at: float | None
    delivered_at: float | None
    quota_reset_at: float | None
    inputs_removed_at: float | None
    submit_posts: int = 0
    notified_at: float | None = None
    log_started_at: float | None = None
    log_message_id: int | None = None
    #: What the task costs in cents of a credit (`bot.pricing`), fixed when it was reserved;
    #: None only for a task from before prices existed that no price table has priced yet.
    price_cents: int | None = None
    #: What the provider said it deducted (`final_unit_deduction`), in its own units, as text.
    provider_deduction: str | None = None
    notes: TaskNotes = TaskNotes()

    @property
    def is_terminal(self) -> bool:
        """Whether the engine is done with the task (delivered, failed or timed out)."""
        return self.state in TERMINAL

    @property
    def is_told(self) -> bool:
        """Whether the user was told how the task ended (nothing left to do for it)."""
        return self.notified_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewTask:
    """What the Discord side knows when it asks for a task: the fields of the insert."""

    user_id: int
    guild_id: int | None
    channel_id: int
    locale: str
    prompt: str
    options: TaskOptions
    image_count: int
    input_dir: str
    upload_limit: int
    notes: TaskNotes = TaskNotes()
    #: Its price in cents of a credit from the price table of the moment; stored with the task.
    price_cents: int = 0
    callback_token: str | None = None
    status_message_id: int | None = None
    thread_id: int | None = None
    external_task_id: str = field(default_factory=new_external_task_id)


@dataclass(frozen=True, slots=True)
class QuotaOverride:
    """A per-role or per-user quota override in one guild (None = does not set that limit)."""

    daily: int | None = None
    concurrent: int | None = None
    exempt: bool = False
    #: Credits per 24 hours, in cents of a credit (0 = no limit).
    credits_daily: int | None = None


@dataclass(frozen=True, slots=True)
class GuildSettings:
    """Everything a guild's admins have set (limit None = use the global default)."""

    guild_id: int
    daily_per_user: int | None = None
    concurrent_per_user: int | None = None
    daily_per_guild: int | None = None
    log_channel_id: int | None = None
    #: Credit limits in cents of a credit (None = the bot's default, 0 = no limit).
    credits_daily_per_user: int | None = None
    credits_daily_per_guild: int | None = None
    role_overrides: Mapping[int, QuotaOverride] = field(default_factory=dict)
    user_overrides: Mapping[int, QuotaOverride] = field(default_factory=dict)
    blocked_users: frozenset[int] = frozenset()
    blocked_words: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """A guild's usage since a moment, for the admin command."""

    tasks: int
    by_state: dict[TaskState, int]
    distinct_users: int
