"""Settings: every one documented in .env.example, and parsed as an operator would write it."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import (
    ImageTransport,
    Settings,
    SettingsError,
    load_settings,
    redact_database_url,
)

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_every_setting_is_in_env_example_with_its_default() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    documented = {
        m.group(1): m.group(2)
        for line in lines
        if (m := re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line))
    }
    assert set(documented) == {name.upper() for name in Settings.model_fields}
    defaults = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    for name, value in documented.items():
        if value == "" or name in ("DISCORD_TOKEN", "COMETAPI_KEY"):
            continue
        current = getattr(defaults, name.lower())
        shown = str(current.value if isinstance(current, ImageTransport) else current)
        try:
            same = float(shown) == float(value)
        except ValueError:
            same = shown.lower() == value.lower()
        assert same, f"{name}: .env.example says {value}, the default is {shown}"
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            assert lines[index - 1].startswith("# "), f"{line} needs a line of explanation above it"


def test_guild_ids_accept_commas_and_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_GUILD_IDS", "123, 456 789")
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert settings.discord_guild_ids == [123, 456, 789]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COMETAPI_BASE_URL", "api.cometapi.com"),
        ("DATABASE_URL", "postgres://x"),
        ("DATABASE_URL", "mysql://u@h/db"),
        ("DATABASE_URL", "postgresql://u@h:port/db"),
        ("LOG_LEVEL", "LOUD"),
        ("IMAGE_TRANSPORT", "carrier-pigeon"),
        ("KLING_MAX_CONCURRENT_TASKS", "0"),
        ("METRICS_PORT", "0"),
        ("METRICS_PORT", "65536"),
        ("METRICS_PORT", "nine-one-hundred"),
    ],
)
def test_malformed_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    message = str(caught.value)
    assert name in message and "\n" not in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///data/kling-bot.sqlite3",
        "sqlite:///:memory:",
        "postgresql://bot@db.internal:5432/kling",
        "postgres://bot:pw@127.0.0.1/kling?search_path=kvb",
        "postgresql:///kling?host=/run/postgresql",
    ],
)
def test_database_url_is_sqlite_or_postgresql(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    assert load_settings(discord_token="t", cometapi_key="k", _env_file=None).database_url == url


def test_a_database_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:hunter2@db/kling")
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert "hunter2" not in repr(settings)
    assert redact_database_url(settings.database_url) == "postgresql://bot:***@db/kling"
    assert (
        redact_database_url("postgres://bot@db/kling?password=hunter2&search_path=s")
        == "postgres://bot@db/kling?password=***&search_path=s"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:hunter2@db:port/kling")
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert "DATABASE_URL" in str(caught.value) and "hunter2" not in str(caught.value)


def test_secrets_never_show_in_the_settings_repr() -> None:
    settings = load_settings(discord_token="tok-123", cometapi_key="key-456", _env_file=None)
    assert "tok-123" not in repr(settings) and "key-456" not in repr(settings)


def test_env_example_copied_as_the_readme_says_starts(tmp_path: Path) -> None:
    text = ENV_EXAMPLE.read_text()
    text = text.replace("DISCORD_TOKEN=\n", "DISCORD_TOKEN=t\n").replace(
        "COMETAPI_KEY=\n", "COMETAPI_KEY=k\n"
    )
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    settings = load_settings(_env_file=env_file)
    assert settings.callback_listen_port is None and settings.discord_guild_ids == []


def test_empty_values_mean_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMETAPI_BASE_URL", "")
    monkeypatch.setenv("CALLBACK_LISTEN_PORT", "")
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert settings.cometapi_base_url == "https://api.cometapi.com"


def test_callbacks_need_url_and_port_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_PUBLIC_URL", "https://bot.example.org")
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert "CALLBACK_LISTEN_PORT" in str(caught.value) and "\n" not in str(caught.value)


def test_metrics_are_off_unless_a_port_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(discord_token="t", cometapi_key="k", _env_file=None).metrics_port is None
    monkeypatch.setenv("METRICS_PORT", "9100")
    assert load_settings(discord_token="t", cometapi_key="k", _env_file=None).metrics_port == 9100


def test_metrics_and_callbacks_need_their_own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_PUBLIC_URL", "https://bot.example.org")
    monkeypatch.setenv("CALLBACK_LISTEN_PORT", "8080")
    monkeypatch.setenv("METRICS_PORT", "8080")
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    message = str(caught.value)
    assert "METRICS_PORT" in message and "CALLBACK_LISTEN_PORT" in message and "\n" not in message


def test_one_missing_setting_reads_naturally() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="t", _env_file=None)
    assert str(caught.value) == (
        "Settings problem: COMETAPI_KEY is not set. "
        "Set it in the environment or in .env (see .env.example)."
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None)
    assert "DISCORD_TOKEN and COMETAPI_KEY are not set. Set them" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("DISCORD_GUILD_IDS", "12a", "must be server ids (numbers) separated by commas"),
        ("KLING_MAX_CONCURRENT_TASKS", "two", "must be a whole number"),
        ("POLL_INTERVAL_SECONDS", "soon", "must be a number"),
        ("IMAGE_AUTOFIX", "maybe", "must be true or false"),
        ("QUOTA_DAILY_PER_USER", "-1", "must be at least 0"),
        ("IMAGE_TRANSPORT", "pigeon", "must be 'base64' or 'url'"),
        ("PRICE_PRO_10S", "-7", "must be more than 0"),
        ("PRICE_STD_5S", "0", "must be more than 0"),
        ("PRICE_PRO_5S", "3,5", "must be a number (with a dot for decimals)"),
        ("PRICE_PRO_5S", "3.505", "must have at most 2 decimals"),
        ("PRICE_PRO_5S", "NaN", "must be a finite number"),
        ("PRICE_PRO_10S", "2000000", "must be at most 1000000"),
        ("CREDITS_DAILY_PER_USER", "-1", "must be at least 0"),
        ("CREDITS_MONTHLY_GLOBAL", "lots", "must be a number (with a dot for decimals)"),
        ("CREDIT_PRICE", "0", "must be more than 0 (leave it empty to show no money)"),
        (
            "CREDIT_CURRENCY",
            "US dollar",
            "must be a short currency name without spaces, such as USD or €",
        ),
    ],
)
def test_malformed_settings_are_said_in_plain_words(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    message = str(caught.value)
    assert f"{name} {said} (it is {value!r})" in message
    assert "Fix it in the environment" in message
    for internal in ("invalid literal", "base 10", "Input should", "Value error", "[type="):
        assert internal not in message


def test_a_missing_env_file_is_said_first_with_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("COMETAPI_KEY", raising=False)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(
        f"No .env file in {tmp_path.resolve()} (the current directory). Settings problem: "
    )
    (tmp_path / ".env").write_text("DISCORD_TOKEN=t\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith("Settings problem: COMETAPI_KEY is not set.")


def test_the_price_table_and_credit_limits_default_to_the_documented_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRICE_PRO_5S", "")  # empty = the default, here too
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    prices = (
        settings.price_std_5s,
        settings.price_std_10s,
        settings.price_pro_5s,
        settings.price_pro_10s,
    )
    assert prices == (Decimal(1), Decimal(2), Decimal("3.5"), Decimal(7))
    assert settings.credit_price is None and settings.credit_currency == "USD"
    limits = (
        settings.credits_daily_per_user,
        settings.credits_daily_per_guild,
        settings.credits_daily_global,
        settings.credits_monthly_global,
    )
    assert limits == (0, 0, 0, 0)  # no credit limit: nothing changes until the operator says so


def test_prices_and_limits_are_read_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICE_STD_5S", "0.1")
    monkeypatch.setenv("PRICE_STD_10S", "0.2")
    monkeypatch.setenv("PRICE_PRO_5S", "0.35")
    monkeypatch.setenv("PRICE_PRO_10S", "0.7")
    monkeypatch.setenv("CREDITS_MONTHLY_GLOBAL", "12.5")
    monkeypatch.setenv("CREDIT_PRICE", "0.000125")
    monkeypatch.setenv("CREDIT_CURRENCY", " € ")
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert settings.price_std_5s + settings.price_std_10s == Decimal("0.3")  # 0.1 + 0.2, exactly
    assert settings.credits_monthly_global == Decimal("12.5")
    assert settings.credit_price == Decimal("0.000125") and settings.credit_currency == "€"


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"PRICE_STD_5S": "10"}, "PRICE_STD_10S (2) is less than PRICE_STD_5S (10)"),
        ({"PRICE_PRO_5S": "0.5"}, "PRICE_PRO_5S (0.5) is less than PRICE_STD_5S (1)"),
        ({"PRICE_PRO_10S": "3"}, "PRICE_PRO_10S (3) is less than PRICE_PRO_5S (3.5)"),
        (
            {"CREDITS_DAILY_PER_GUILD": "0.5"},
            "CREDITS_DAILY_PER_GUILD (0.5) is less than the cheapest video (PRICE_STD_5S = 1)",
        ),
    ],
)
def test_a_price_table_changed_in_part_or_a_limit_no_video_fits_is_refused(
    monkeypatch: pytest.MonkeyPatch, values: dict[str, str], said: str
) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    message = str(caught.value)
    assert said in message and "\n" not in message and "Value error" not in message


def test_a_credit_limit_may_be_less_than_the_dearest_video(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITS_DAILY_PER_USER", "5")  # pro 10 s (7) never fits: that's allowed
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert settings.credits_daily_per_user == 5


# --- several processes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "ids", "mine", "name"),
    [
        (None, None, None, "main"),
        ("2", None, [0, 1], "shards 0-1 of 2"),
        ("4", "0-1", [0, 1], "shards 0-1 of 4"),
        ("8", "0,2, 5-7", [0, 2, 5, 6, 7], "shards 0,2,5-7 of 8"),
        ("2", "1", [1], "shards 1 of 2"),
    ],
)
def test_shards_and_the_process_name(
    monkeypatch: pytest.MonkeyPatch,
    count: str | None,
    ids: str | None,
    mine: list[int] | None,
    name: str,
) -> None:
    if count is not None:
        monkeypatch.setenv("SHARD_COUNT", count)
    if ids is not None:
        monkeypatch.setenv("SHARD_IDS", ids)
    settings = load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert settings.my_shard_ids == mine
    assert settings.process_name == name
    assert settings.lease_seconds == 30


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SHARD_IDS": "0-1"}, "SHARD_IDS needs SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0-2"}, "the shards are 0 to 1"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "zero"}, "SHARD_IDS must look like 0-3 or 0,2"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "2,1"}, "SHARD_IDS must name each shard once"),
        ({"SHARD_COUNT": "4", "SHARD_IDS": "0-1,1"}, "SHARD_IDS must name each shard once"),
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT must be at least 1"),
        ({"LEASE_SECONDS": "1"}, "LEASE_SECONDS must be at least 3"),
    ],
)
def test_bad_shard_settings_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings(discord_token="t", cometapi_key="k", _env_file=None)
    assert says in str(info.value)
    assert "\n" not in str(info.value)
