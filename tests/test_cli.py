"""`python -m bot`: settings problems, `check` and `--help`, as an operator sees them."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes.cometapi import FakeCometAPI

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any of the bot's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "COMETAPI_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


async def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_missing_settings_give_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    code, out, err = await run_cli(cwd=tmp_path, env=clean_env())
    assert code == 2
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1, lines
    assert "DISCORD_TOKEN" in lines[0] and "COMETAPI_KEY" in lines[0]
    assert "Traceback" not in out + err


async def test_malformed_setting_names_the_variable(tmp_path: Path) -> None:
    env = clean_env(DISCORD_TOKEN="t", COMETAPI_KEY="k", POLL_INTERVAL_SECONDS="soon")
    code, _, err = await run_cli("check", cwd=tmp_path, env=env)
    assert code == 2
    assert "POLL_INTERVAL_SECONDS" in err and "Traceback" not in err


async def test_settings_are_read_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=t\nCOMETAPI_KEY=k\nDISCORD_GUILD_IDS=x\n")
    code, _, err = await run_cli("check", cwd=tmp_path, env=clean_env())
    assert code == 2 and "DISCORD_GUILD_IDS" in err


async def test_check_says_ok_against_the_api(tmp_path: Path) -> None:
    async with FakeCometAPI(api_key="good-key") as api:
        env = clean_env(DISCORD_TOKEN="t", COMETAPI_KEY="good-key", COMETAPI_BASE_URL=api.base_url)
        code, out, _ = await run_cli("check", cwd=tmp_path, env=env)
        assert code == 0, out
        assert out.startswith("OK")
        assert len(api.queries) == 1


async def test_check_says_the_key_is_wrong(tmp_path: Path) -> None:
    async with FakeCometAPI(api_key="good-key") as api:
        env = clean_env(
            DISCORD_TOKEN="t", COMETAPI_KEY="bad-key-123", COMETAPI_BASE_URL=api.base_url
        )
        code, out, err = await run_cli("check", cwd=tmp_path, env=env)
        assert code == 1
        assert "Wrong key" in out
        assert "bad-key-123" not in out + err


async def test_check_says_the_api_cant_be_reached(tmp_path: Path) -> None:
    env = clean_env(DISCORD_TOKEN="t", COMETAPI_KEY="k", COMETAPI_BASE_URL="http://127.0.0.1:9")
    code, out, _ = await run_cli("check", cwd=tmp_path, env=env)
    assert code == 1
    assert "Can't reach the API at http://127.0.0.1:9" in out


async def test_help_names_both_commands(tmp_path: Path) -> None:
    code, out, _ = await run_cli("--help", cwd=tmp_path, env=clean_env())
    assert code == 0
    assert "check" in out and "run the bot" in out


async def test_check_says_the_base_url_is_wrong(tmp_path: Path) -> None:
    async with FakeCometAPI(api_key="good-key") as api:
        env = clean_env(
            DISCORD_TOKEN="t", COMETAPI_KEY="good-key", COMETAPI_BASE_URL=api.base_url + "/v1"
        )
        code, out, _ = await run_cli("check", cwd=tmp_path, env=env)
    assert code == 1, out
    assert "COMETAPI_BASE_URL" in out and not out.startswith("OK")


async def test_check_says_the_database_cant_be_opened(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("a file where a folder should be")
    async with FakeCometAPI(api_key="good-key") as api:
        env = clean_env(
            DISCORD_TOKEN="t",
            COMETAPI_KEY="good-key",
            COMETAPI_BASE_URL=api.base_url,
            DATABASE_URL=f"sqlite:///{tmp_path}/not-a-folder/bot.sqlite3",
        )
        code, out, err = await run_cli("check", cwd=tmp_path, env=env)
    assert code == 1, out + err
    assert "database" in out and "Traceback" not in out + err
