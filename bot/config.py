"""Every setting of the bot, read once from the environment and `.env`, validated at start."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.pricing import PriceTable


class ImageTransport(StrEnum):
    """How input images are handed to the API."""

    BASE64 = "base64"
    URL = "url"


class LogFormat(StrEnum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


ENV_FILE = ".env"
#: The URL schemes of a PostgreSQL DATABASE_URL.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: Bounds that keep every sum of cents of a credit far inside SQLite's 64-bit integers.
MAX_PRICE_CREDITS = Decimal(1_000_000)
MAX_LIMIT_CREDITS = Decimal(1_000_000_000)
#: (setting, the one it may never cost less than): a longer or a pro video never costs less.
_PRICE_ORDER = (
    ("price_std_10s", "price_std_5s"),
    ("price_pro_5s", "price_std_5s"),
    ("price_pro_10s", "price_std_10s"),
    ("price_pro_10s", "price_pro_5s"),
)
_CREDIT_LIMITS = (
    "credits_daily_per_user",
    "credits_daily_per_guild",
    "credits_daily_global",
    "credits_monthly_global",
)


class Settings(BaseSettings):
    """The bot's settings; names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
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
    # sqlite:///path (the default) or postgresql://user@host:port/db; may hold a password, so
    # it is left out of repr and shown through `redact_database_url`
    database_url: str = Field(default="sqlite:///data/kling-bot.sqlite3", repr=False)
    media_dir: Path = Path("data/media")
    retention_days: int = Field(default=7, ge=0)

    # --- Discord ---
    discord_guild_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)

    # --- several processes, one bot (unset: one process runs everything) ---
    # SHARD_COUNT: the total of Discord shards; SHARD_IDS: this process's (`0-3`, `0,2`; unset:
    # all of them). Processes on one DATABASE_URL share the tasks; each needs its own SHARD_IDS.
    shard_count: int | None = Field(default=None, ge=1, le=4096)
    shard_ids: Annotated[list[int] | None, NoDecode] = None
    # how long a task's lease lasts: a dead process's tasks are taken over within about this
    lease_seconds: float = Field(default=30.0, ge=3, le=3600)

    # --- tasks ---
    poll_interval_seconds: float = Field(default=2.0, gt=0, le=600)
    poll_max_interval_seconds: float = Field(default=60.0, gt=0, le=3600)
    task_timeout_seconds: float = Field(default=1800.0, gt=0)
    video_max_bytes: int = Field(default=200 * 1024 * 1024, gt=0)

    # --- quotas (0 = no limit, for every one of them) ---
    quota_daily_per_user: int = Field(default=10, ge=0)
    quota_concurrent_per_user: int = Field(default=2, ge=0)
    quota_daily_per_guild: int = Field(default=0, ge=0)
    quota_daily_global: int = Field(default=0, ge=0)

    # --- credits: prices in credits for KLING_MODEL (1 credit = a 5 s std video by default) ---
    price_std_5s: Decimal = Field(
        default=Decimal("1"), gt=0, le=MAX_PRICE_CREDITS, decimal_places=2
    )
    price_std_10s: Decimal = Field(
        default=Decimal("2"), gt=0, le=MAX_PRICE_CREDITS, decimal_places=2
    )
    price_pro_5s: Decimal = Field(
        default=Decimal("3.5"), gt=0, le=MAX_PRICE_CREDITS, decimal_places=2
    )
    price_pro_10s: Decimal = Field(
        default=Decimal("7"), gt=0, le=MAX_PRICE_CREDITS, decimal_places=2
    )
    credit_price: Decimal | None = Field(default=None, decimal_places=6)
    credit_currency: str = "USD"
    # credit limits (0 = no limit, for every one of them); the month is the calendar month in UTC
    credits_daily_per_user: Decimal = Field(
        default=Decimal(0), ge=0, le=MAX_LIMIT_CREDITS, decimal_places=2
    )
    credits_daily_per_guild: Decimal = Field(
        default=Decimal(0), ge=0, le=MAX_LIMIT_CREDITS, decimal_places=2
    )
    credits_daily_global: Decimal = Field(
        default=Decimal(0), ge=0, le=MAX_LIMIT_CREDITS, decimal_places=2
    )
    credits_monthly_global: Decimal = Field(
        default=Decimal(0), ge=0, le=MAX_LIMIT_CREDITS, decimal_places=2
    )

    # --- images ---
    image_autofix: bool = True
    image_transport: ImageTransport = ImageTransport.BASE64
    image_download_timeout_seconds: float = Field(default=30.0, gt=0)

    # --- callbacks (optional) ---
    callback_public_url: str | None = None
    callback_listen_port: int | None = Field(default=None, ge=1, le=65535)

    # --- metrics (optional): /metrics and /healthz ---
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # --- logging ---
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT

    @field_validator("discord_guild_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `123,456` or `123 456` as well as a list."""
        if isinstance(value, str):
            parts = value.replace(",", " ").split()
            if not all(p.isdigit() for p in parts):
                raise ValueError("must be server ids (numbers) separated by commas")
            return [int(p) for p in parts]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _shard_ids(cls, value: object) -> object:
        """`0-3`, `0,2` or `0-1,4` (ranges include both ends), in order, each once."""
        if not isinstance(value, str):
            return value
        ids: list[int] = []
        try:
            for part in value.replace(" ", "").split(","):
                first, _, last = part.partition("-")
                ids.extend(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ValueError("must look like 0-3 or 0,2 (shard numbers from 0)") from None
        if not ids or ids != sorted(set(ids)):
            raise ValueError("must name each shard once, in order, like 0-3 or 0,2")
        return ids

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
    def _database(cls, value: str) -> str:
        """SQLite (`sqlite:///path`, `sqlite:///:memory:`) or PostgreSQL
        (`postgresql://user@host:port/db`, also `postgres://`)."""
        if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
            return value
        if value.startswith(POSTGRES_SCHEMES):
            parts = urlsplit(value)
            try:
                parts.port  # noqa: B018 - reading it checks it
            except ValueError:
                raise ValueError("has a port that is not a number") from None
            if parts.path.strip("/"):
                return value
            raise ValueError("must name the database: postgresql://user@host:5432/dbname")
        raise ValueError(
            "must look like sqlite:///data/kling-bot.sqlite3 (the default), "
            "sqlite:///:memory: or postgresql://user@host:5432/dbname"
        )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        """Accept the standard logging level names."""
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("credit_price")
    @classmethod
    def _credit_price(cls, value: Decimal | None) -> Decimal | None:
        """What one credit costs, for display: more than 0, or empty to show no money."""
        if value is not None and value <= 0:
            raise ValueError("must be more than 0 (leave it empty to show no money)")
        return value

    @field_validator("credit_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        """A short currency name as it is shown after an amount: USD, EUR, €."""
        value = value.strip()
        if not 1 <= len(value) <= 10 or not value.isprintable() or " " in value:
            raise ValueError("must be a short currency name without spaces, such as USD or €")
        return value

    @model_validator(mode="after")
    def _prices_never_fall(self) -> Settings:
        """A longer or a pro video never costs less: catches a table changed only in part."""
        for dearer, cheaper in _PRICE_ORDER:
            high, low = getattr(self, dearer), getattr(self, cheaper)
            if high < low:
                raise ValueError(
                    f"{dearer.upper()} ({high}) is less than {cheaper.upper()} ({low}), but a "
                    "longer or a pro video never costs less: when you change the unit, set "
                    "all four PRICE_ lines"
                )
        return self

    @model_validator(mode="after")
    def _price_table_complete(self) -> Settings:
        """Every option the API takes has a price more than 0 (checked once, at start)."""
        self.price_table()
        return self

    def price_table(self) -> PriceTable:
        """The prices as configured (PRICE_*, CREDIT_PRICE, CREDIT_CURRENCY)."""
        return PriceTable.from_settings(self)

    @model_validator(mode="after")
    def _credit_limits_fit_a_video(self) -> Settings:
        """A credit limit below the cheapest video would refuse every request."""
        cheapest = self.price_std_5s  # the order rule makes it the lowest
        for name in _CREDIT_LIMITS:
            limit = getattr(self, name)
            if 0 < limit < cheapest:
                raise ValueError(
                    f"{name.upper()} ({limit}) is less than the cheapest video "
                    f"(PRICE_STD_5S = {cheapest}), so no video would ever fit: limits are in "
                    "credits, not money, and 0 means no limit"
                )
        return self

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        """SHARD_IDS needs SHARD_COUNT, and names shards below it."""
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError(
                "SHARD_IDS needs SHARD_COUNT (the total of shards over all processes): set it "
                "too, or unset both to run one process"
            )
        if self.shard_ids[-1] >= self.shard_count:
            raise ValueError(
                f"SHARD_IDS names shard {self.shard_ids[-1]}, but with SHARD_COUNT="
                f"{self.shard_count} the shards are 0 to {self.shard_count - 1}"
            )
        return self

    @property
    def my_shard_ids(self) -> list[int] | None:
        """This process's shards (None: not sharded; SHARD_IDS unset: all of them)."""
        if self.shard_count is None:
            return None
        return self.shard_ids if self.shard_ids is not None else list(range(self.shard_count))

    @property
    def process_name(self) -> str:
        """This process's name among those sharing the database: from its shards, so it stays
        the same across restarts (`main` when not sharded)."""
        ids = self.my_shard_ids
        if ids is None:
            return "main"
        ranges: list[str] = []
        start = prev = ids[0]
        for shard in [*ids[1:], None]:
            if shard is not None and shard == prev + 1:
                prev = shard
                continue
            ranges.append(str(start) if start == prev else f"{start}-{prev}")
            if shard is not None:
                start = prev = shard
        return f"shards {','.join(ranges)} of {self.shard_count}"

    @model_validator(mode="after")
    def _callbacks_need_both(self) -> Settings:
        """Callbacks need a public URL and a port to listen on, or neither."""
        if (self.callback_public_url is None) != (self.callback_listen_port is None):
            raise ValueError(
                "CALLBACK_PUBLIC_URL and CALLBACK_LISTEN_PORT go together: set both, or neither"
            )
        return self

    @model_validator(mode="after")
    def _one_port_each(self) -> Settings:
        """The metrics and the callbacks can't listen on the same port."""
        if self.metrics_port is not None and self.metrics_port == self.callback_listen_port:
            raise ValueError(
                "METRICS_PORT and CALLBACK_LISTEN_PORT are the same port: give each its own"
            )
        return self


def redact_database_url(url: str) -> str:
    """A DATABASE_URL as it may be shown: a password (in the address or as `password=`) is
    replaced by `***`."""
    if not url.startswith(POSTGRES_SCHEMES):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = [
        (key, "***" if key == "password" else value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*/"), ""))


class SettingsError(Exception):
    """Raised when settings are missing or malformed; the text is one line for the operator."""


#: Pydantic's error types, said the way an operator would say them.
_PLAIN_TYPES = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "decimal_parsing": "must be a number (with a dot for decimals)",
    "decimal_type": "must be a number",
    "finite_number": "must be a finite number",
}
_BOUNDS = {
    "greater_than": "must be more than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
}
_SECRETS = {"DISCORD_TOKEN", "COMETAPI_KEY"}


def _problem(name: str, item: ErrorDetails) -> str:
    """What is wrong with one setting, in plain words (never Python's own messages)."""
    kind = item["type"]
    context = item.get("ctx") or {}
    if kind in _PLAIN_TYPES:
        what = _PLAIN_TYPES[kind]
    elif kind == "decimal_max_places":
        places = context.get("decimal_places", 2)
        what = f"must have at most {places} decimal{'s' if places != 1 else ''}"
    elif kind in _BOUNDS:
        what = _BOUNDS[kind].format(**{k: f"{v:g}" for k, v in context.items()})
    elif kind in ("enum", "literal_error"):
        what = f"must be {context.get('expected', 'one of the documented values')}"
    elif kind == "value_error":
        what = str(item["msg"]).removeprefix("Value error, ")
    else:
        what = "is not valid"
    shown = item.get("input")
    if name in _SECRETS or not isinstance(shown, str | int | float):
        return f"{name} {what}"
    if name == "DATABASE_URL":
        shown = redact_database_url(str(shown))
    return f"{name} {what} (it is {str(shown)!r})"


def _joined(names: list[str]) -> str:
    """`A`, `A and B`, `A, B and C`."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe_validation_error(error: ValidationError, *, no_env_file_in: str | None = None) -> str:
    """Turn pydantic's error into one line: what is missing, what is wrong, what to do.

    `no_env_file_in` names the folder where `.env` was looked for and not found; the line then
    starts by saying so.
    """
    missing: list[str] = []
    wrong: list[str] = []
    for item in error.errors():
        if not item["loc"]:  # a rule across settings; its message names them
            wrong.append(str(item["msg"]).removeprefix("Value error, "))
        elif item["type"] == "missing":
            missing.append(str(item["loc"][0]).upper())
        else:
            wrong.append(_problem(str(item["loc"][0]).upper(), item))
    parts = []
    if missing:
        parts.append(f"{_joined(missing)} {'is' if len(missing) == 1 else 'are'} not set")
    parts.extend(wrong)
    several = len(missing) + len(wrong) > 1
    verb = "Set" if not wrong else "Fix" if not missing else "Set or fix"
    line = (
        "Settings problem: "
        + "; ".join(parts)
        + f". {verb} {'them' if several else 'it'} in the environment or in .env"
        " (see .env.example)."
    )
    if no_env_file_in is not None:
        line = f"No .env file in {no_env_file_in}. " + line
    return line


def load_settings(**overrides: object) -> Settings:
    """Read the settings, raising `SettingsError` with one clear line when they are wrong."""
    env_file = overrides.get("_env_file", ENV_FILE)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        where = None
        if isinstance(env_file, str | Path) and not Path(env_file).is_file():
            folder = Path(env_file).resolve().parent
            relative = not Path(env_file).is_absolute()
            where = f"{folder} (the current directory)" if relative else str(folder)
        raise SettingsError(describe_validation_error(error, no_env_file_in=where)) from None
