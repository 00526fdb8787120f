"""Every setting of the bot, read once from the environment and `.env`, validated at start."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ImageTransport(StrEnum):
    """How input images are handed to the API."""

    BASE64 = "base64"
    URL = "url"


class Settings(BaseSettings):
    """The bot's settings; names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # `NAME=` (as in .env.example) means "use the default"
    )

    # --- secrets (required) ---
    discord_token: SecretStr = Field(description="the bot token from the Discord developer portal")
    cometapi_key: SecretStr = Field(description="your CometAPI key")

    # --- the API ---
    cometapi_base_url: str = "https://api.cometapi.com"
    kling_model: str = "kling-v1-6"
    kling_max_concurrent_tasks: int = Field(default=2, ge=1, le=100)
    api_max_queries_per_second: float = Field(default=5.0, gt=0, le=1000)
    api_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    api_submit_timeout_seconds: float = Field(default=60.0, gt=0)
    api_query_timeout_seconds: float = Field(default=20.0, gt=0)
    api_max_retries: int = Field(default=4, ge=0, le=10)

    # --- storage ---
    database_url: str = "sqlite:///data/kling-bot.sqlite3"
    media_dir: Path = Path("data/media")
    retention_days: int = Field(default=7, ge=0)

    # --- Discord ---
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # --- tasks ---
    poll_interval_seconds: float = Field(default=10.0, gt=0, le=600)
    poll_max_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    task_timeout_seconds: float = Field(default=1800.0, gt=0)
    video_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)

    # --- quotas ---
    quota_daily_per_user: int = Field(default=10, ge=0)
    quota_concurrent_per_user: int = Field(default=2, ge=0)
    quota_daily_per_guild: int = Field(default=0, ge=0)
    quota_daily_global: int = Field(default=0, ge=0)

    # --- images ---
    image_autofix: bool = True
    image_transport: ImageTransport = ImageTransport.BASE64
    image_download_timeout_seconds: float = Field(default=30.0, gt=0)

    # --- callbacks (optional) ---
    callback_public_url: str | None = None
    callback_listen_port: int | None = Field(default=None, ge=1, le=65535)

    # --- logging ---
    log_level: str = "INFO"

    @field_validator("discord_guild_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `123,456` or `123 456` as well as a list."""
        if isinstance(value, str):
            parts = value.replace(",", " ").split()
            return [int(p) for p in parts]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("cometapi_base_url", "callback_public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        """Require an http(s) URL without a trailing slash."""
        if value is None or value == "":
            return None if value == "" else value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _sqlite(cls, value: str) -> str:
        """Only SQLite is supported: `sqlite:///path` or `sqlite:///:memory:`."""
        if not value.startswith("sqlite:///") or len(value) == len("sqlite:///"):
            raise ValueError(
                "must look like sqlite:///data/kling-bot.sqlite3 or sqlite:///:memory:"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        """Accept the standard logging level names."""
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _callbacks_need_both(self) -> Settings:
        """Callbacks need a public URL and a port to listen on, or neither."""
        if (self.callback_public_url is None) != (self.callback_listen_port is None):
            raise ValueError(
                "CALLBACK_PUBLIC_URL and CALLBACK_LISTEN_PORT go together: set both, or neither"
            )
        return self


class SettingsError(Exception):
    """Raised when settings are missing or malformed; the text is one line for the operator."""


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error into one line naming each variable and what to do."""
    parts: list[str] = []
    for item in error.errors():
        if not item["loc"]:  # a rule across settings; its message names them
            parts.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        name = str(item["loc"][0]).upper()
        if item["type"] == "missing":
            parts.append(f"{name} is not set")
        else:
            parts.append(f"{name} is invalid ({item['msg']})")
    return (
        "Settings problem: "
        + "; ".join(parts)
        + ". Set them in the environment or in .env (see .env.example)."
    )


def load_settings(**overrides: object) -> Settings:
    """Read the settings, raising `SettingsError` with one clear line when they are wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(describe_validation_error(error)) from None
