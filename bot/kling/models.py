"""Request and response models of the multi-image-to-video route, with the documented limits."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

MIN_IMAGES = 2
MAX_IMAGES = 4
MAX_PROMPT = 500
MAX_NEGATIVE_PROMPT = 200
MAX_DYNAMIC_MASKS = 6
MAX_EXTERNAL_TASK_ID = 64
MAX_VIDEO_URL = 1900  # the link must fit in one Discord message (2,000 characters)

Mode = Literal["std", "pro"]
Duration = Literal["5", "10"]
AspectRatio = Literal["16:9", "9:16", "1:1"]
#: Every value the API takes for each option, in the order the commands offer them.
MODES: tuple[Mode, ...] = get_args(Mode)
DURATIONS: tuple[Duration, ...] = get_args(Duration)
ASPECT_RATIOS: tuple[AspectRatio, ...] = get_args(AspectRatio)
#: What the API makes when an option isn't sent.
DEFAULT_MODE: Mode = "std"
DEFAULT_DURATION: Duration = "5"
DEFAULT_ASPECT_RATIO: AspectRatio = "16:9"


class ImageItem(BaseModel):
    """One input image: a public URL or raw base64 (no `data:` prefix)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1)

    @field_validator("image")
    @classmethod
    def _no_data_prefix(cls, value: str) -> str:
        if value.startswith("data:"):
            raise ValueError("send raw base64 without a data: prefix")
        return value


class TrajectoryPoint(BaseModel):
    """One point of a dynamic mask's motion path, in pixels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: int
    y: int


class DynamicMask(BaseModel):
    """A masked area and the path it should move along."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mask: str = Field(min_length=1)
    trajectories: list[TrajectoryPoint] = Field(min_length=2, max_length=77)


class MultiImageRequest(BaseModel):
    """The body of `POST /kling/v1/videos/multi-image2video`, checked against the API's limits.

    Optional fields are sent only when set (`to_body`). The masks are modelled because the API
    documents them, but the bot's commands never send them (no command takes a mask).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str = "kling-v1-6"
    image_list: list[ImageItem] = Field(min_length=MIN_IMAGES, max_length=MAX_IMAGES)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    negative_prompt: str | None = Field(default=None, max_length=MAX_NEGATIVE_PROMPT)
    mode: Mode | None = None
    duration: Duration | None = None
    aspect_ratio: AspectRatio | None = None
    cfg_scale: float | None = Field(default=None, ge=0.0, le=1.0)
    callback_url: str | None = None
    external_task_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_EXTERNAL_TASK_ID
    )
    static_mask: str | None = None
    dynamic_masks: list[DynamicMask] | None = Field(default=None, max_length=MAX_DYNAMIC_MASKS)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt must not be blank")
        return value

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("callback_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _masks_need_static_or_dynamic(self) -> MultiImageRequest:
        if self.dynamic_masks is not None and len(self.dynamic_masks) == 0:
            raise ValueError("dynamic_masks, when sent, needs at least one mask")
        return self

    def to_body(self) -> dict[str, Any]:
        """The JSON body: every field that was set, none that wasn't."""
        return self.model_dump(exclude_none=True)


class TaskStatus(StrEnum):
    """A task's status as the API spells it (`succeed`, not `succeeded`)."""

    SUBMITTED = "submitted"
    PROCESSING = "processing"
    SUCCEED = "succeed"
    FAILED = "failed"


#: Spellings other gateways use for the two ends (the documented one is `succeed`).
STATUS_ALIASES = {
    "succeeded": "succeed",
    "success": "succeed",
    "failure": "failed",
    "error": "failed",
}


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)


def video_url_problem(url: str) -> str | None:
    """Why `url` can't be a video link the bot fetches and posts, or None when it can.

    Only an absolute http(s) URL with a host, without spaces or control characters, and short
    enough to post: never `javascript:`, `file:`, a bare number or free text.
    """
    if len(url) > MAX_VIDEO_URL:
        return f"a URL of {len(url):,} characters"
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        return "a URL with spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "a URL that can't be parsed"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL ({parts.scheme[:20] or 'no'} scheme)"
    if not host:
        return "a URL without a host"
    return None


class Video(_Tolerant):
    """One generated video: always an http(s) `url`; `duration` is finite and positive or None."""

    id: str = ""
    url: str
    duration: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_or_empty(cls, value: Any) -> Any:
        """The video's id is never used: junk there doesn't cost the user the video."""
        return value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip()
        problem = video_url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("duration", mode="before")
    @classmethod
    def _positive_seconds(cls, value: Any) -> str | None:
        """The provider's duration in seconds; anything but a finite positive number is
        dropped (the bot never needs it, so it doesn't cost the user the video)."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        try:
            seconds = float(value)
        except (ValueError, OverflowError):
            return None
        return str(value) if math.isfinite(seconds) and seconds > 0 else None


class TaskResult(_Tolerant):
    """The task's output; `{}` while the task runs.

    `videos` holds only videos the bot can use; `unusable_videos` says, for every listed video
    it left out, why (the bot fills it in; a field of that name in an answer is overwritten).
    """

    videos: list[Video] = Field(default_factory=list)
    unusable_videos: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _keep_usable_videos(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            what = f"task_result is a {type(data).__name__}, not an object"
            return {"videos": [], "unusable_videos": [what]}
        data = dict(data)
        listed = data.get("videos")
        usable: list[Video] = []
        unusable: list[str] = []
        if isinstance(listed, list):
            for item in listed:
                try:
                    usable.append(Video.model_validate(item))
                except ValidationError as error:
                    unusable.append(_first_problem(error))
        elif listed is not None:
            unusable.append(f"videos is a {type(listed).__name__}, not a list")
        data["videos"] = usable
        data["unusable_videos"] = unusable
        return data


class TaskInfo(_Tolerant):
    """Echo of what was sent, e.g. the external task id; often `{}`."""

    external_task_id: str | None = None


#: The most a provider deduction may say before it is taken as garbage rather than a charge.
MAX_DEDUCTION = Decimal(10) ** 12


def provider_deduction(value: object) -> str | None:
    """What the provider says it deducted (`final_unit_deduction`), as a plain decimal string.

    The field is undocumented in shape (a string in the schemas we read); whatever arrives is
    kept only when it is one finite, non-negative number (`"5"`, `5`, `" 0.50 "` → `"0.5"`).
    Anything else (missing, empty, text, a list, NaN) is None: it is shown, never relied on.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float):
        raw = str(value)
    elif isinstance(value, str) and len(value) <= 64:
        raw = value.strip()
    else:
        return None
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0 or amount > MAX_DEDUCTION:
        return None
    amount = amount.normalize()
    return f"{amount:.0f}" if amount == amount.to_integral_value() else f"{amount:f}"


class KlingTask(_Tolerant):
    """The `data` of a submit or query answer."""

    task_id: str = Field(min_length=1)
    task_status: TaskStatus = TaskStatus.SUBMITTED
    task_status_msg: str | None = None
    task_info: TaskInfo = Field(default_factory=TaskInfo)
    task_result: TaskResult = Field(default_factory=TaskResult)
    created_at: int | None = None
    updated_at: int | None = None
    #: What the provider says it deducted for the task, in its own units, when it says it.
    final_unit_deduction: str | None = None

    @field_validator("final_unit_deduction", mode="before")
    @classmethod
    def _plain_deduction(cls, value: Any) -> str | None:
        return provider_deduction(value)

    @field_validator("task_status", mode="before")
    @classmethod
    def _unknown_status_is_running(cls, value: Any) -> Any:
        """A status this code doesn't know (a newer API, a gateway's own word) means "still
        running": the task is polled on until a known end or its time-out."""
        if isinstance(value, str):
            word = value.strip().lower()
            word = STATUS_ALIASES.get(word, word)
            if word in TaskStatus.__members__.values():
                return word
        if value is None:
            return TaskStatus.SUBMITTED
        return TaskStatus.PROCESSING

    @field_validator("task_info", "task_result", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def finished(self) -> bool:
        """Whether the task has ended, well or badly."""
        return self.task_status in (TaskStatus.SUCCEED, TaskStatus.FAILED)

    @property
    def video(self) -> Video | None:
        """The first usable video of a successful task."""
        return self.task_result.videos[0] if self.task_result.videos else None

    def missing_video_reason(self) -> str:
        """Why a task has no usable video, in words for a log or the task's record."""
        unusable = self.task_result.unusable_videos
        if not unusable:
            return "the answer lists no video"
        return "the answer's video is unusable: " + "; ".join(unusable[:3])


class Envelope(_Tolerant):
    """The envelope every answer comes in: `{code, message, request_id, data}`."""

    code: int = 0
    message: str = ""
    request_id: str | None = None
    data: KlingTask | None = None


def _first_problem(error: ValidationError) -> str:
    """One short line for why a listed video was left out."""
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "video"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"
