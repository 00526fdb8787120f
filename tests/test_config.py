"""Settings: every one documented in .env.example, and parsed as an operator would write it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import ImageTransport, Settings, SettingsError, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


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
        ("LOG_LEVEL", "LOUD"),
        ("IMAGE_TRANSPORT", "carrier-pigeon"),
        ("KLING_MAX_CONCURRENT_TASKS", "0"),
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
