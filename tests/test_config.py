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
        m.group(1): m.group(2) for line in lines if (m := re.match(r"^([A-Z_]+)=(.*)$", line))
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
        if re.match(r"^[A-Z_]+=", line):
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
