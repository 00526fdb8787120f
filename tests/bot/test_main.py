"""`python -m bot`: settings problems, `check`, `health`, `backup` and `--help`, as an operator
sees them. `check` runs through the e2e launcher against the fake Discord (REST only)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.cometapi import FakeCometAPI
from tests.fakes.discord import FakeDiscord

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "tests" / "e2e" / "launcher.py"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any of the bot's settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "COMETAPI_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


async def run_cli(
    *args: str, cwd: Path, env: dict[str, str], discord: str | None = None
) -> tuple[int, str, str]:
    """Run `python -m bot ARGS`; with `discord`, through the launcher pointed at that URL."""
    launch = (
        ["-m", "bot"] if discord is None else [str(LAUNCHER), "--discord", discord, "-m", "bot"]
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *launch,
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


async def test_a_negative_price_stops_the_start_in_one_line(tmp_path: Path) -> None:
    env = clean_env(DISCORD_TOKEN="t", COMETAPI_KEY="k", PRICE_PRO_10S="-7")
    code, out, err = await run_cli(cwd=tmp_path, env=env)
    assert code == 2
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1 and "PRICE_PRO_10S must be more than 0" in lines[0], lines


async def test_settings_are_read_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISCORD_TOKEN=t\nCOMETAPI_KEY=k\nDISCORD_GUILD_IDS=x\n")
    code, _, err = await run_cli("check", cwd=tmp_path, env=clean_env())
    assert code == 2 and "DISCORD_GUILD_IDS" in err


@dataclass
class Fakes:
    """A fake Discord and a fake CometAPI, and the environment that points the bot at both."""

    discord: FakeDiscord
    api: FakeCometAPI
    tmp: Path

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "DISCORD_TOKEN": self.discord.token,
            "COMETAPI_KEY": "good-key",
            "COMETAPI_BASE_URL": self.api.base_url,
            "DATABASE_URL": f"sqlite:///{self.tmp}/data/bot.sqlite3",
            "MEDIA_DIR": str(self.tmp / "data" / "media"),
        }
        values.update(extra)
        return clean_env(**values)

    async def check(self, **extra: str) -> tuple[int, str, str]:
        return await run_cli("check", cwd=self.tmp, env=self.env(**extra), discord=self.discord.url)


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    async with FakeDiscord() as discord, FakeCometAPI(api_key="good-key") as api:
        yield Fakes(discord, api, tmp_path)


async def test_check_says_who_the_bot_is_and_prints_the_invite_link(fakes: Fakes) -> None:
    code, out, err = await fakes.check()
    assert code == 0, out + err
    lines = out.strip().splitlines()
    assert lines[-1].startswith("OK"), out
    assert "kling-video-bot" in out and fakes.discord.application_id in out
    [link] = [word for word in out.split() if word.startswith("https://discord.com/oauth2/")]
    query = parse_qs(urlsplit(link).query)
    assert query["client_id"] == [fakes.discord.application_id]
    assert query["scope"] == ["bot applications.commands"]
    # View Channel, Send Messages, Embed Links, Attach Files, Read Message History,
    # Create Public Threads, Send Messages in Threads: the README's table, and nothing else.
    bits = (10, 11, 14, 15, 16, 35, 38)
    assert query["permissions"] == [str(sum(1 << bit for bit in bits))]
    # REST only: who the bot is and its application, and never the gateway.
    paths = [r.path for r in fakes.discord.requests]
    assert "/users/@me" in paths and "/oauth2/applications/@me" in paths
    assert fakes.discord.identifies == [] and "/gateway/bot" not in paths
    assert fakes.discord.violations == [] and fakes.discord.unknown_requests == []
    assert len(fakes.api.queries) == 1
    assert "voice" not in err.lower() and "Traceback" not in err


async def test_check_refuses_a_wrong_discord_token_in_one_line(fakes: Fakes) -> None:
    code, out, err = await fakes.check(DISCORD_TOKEN="abc")
    assert code == 1
    lines = (out + err).strip().splitlines()
    assert len(lines) == 1, lines
    assert "DISCORD_TOKEN" in lines[0] and not lines[0].startswith("OK")
    assert "abc" not in lines[0]
    [refused] = fakes.discord.violations  # Discord answered 401 with its error body
    assert refused.kind == "unauthorized" and refused.path == "/users/@me"
    [request] = fakes.discord.requests
    assert request.status == 401 and request.response == {"message": "401: Unauthorized", "code": 0}


async def test_check_says_discord_cant_be_resolved(fakes: Fakes) -> None:
    env = fakes.env()
    code, out, err = await run_cli(
        "check", cwd=fakes.tmp, env=env, discord="http://discord.example.invalid"
    )
    assert code == 1, out + err
    assert "Can't resolve the host discord.example.invalid" in out
    assert "time" not in out.lower() and "Traceback" not in out + err


async def test_check_says_the_api_host_cant_be_resolved(fakes: Fakes) -> None:
    code, out, _ = await fakes.check(COMETAPI_BASE_URL="https://api.example.invalid")
    assert code == 1
    [line] = out.strip().splitlines()
    assert "Can't resolve the host api.example.invalid" in line and "COMETAPI_BASE_URL" in line
    assert "time" not in line.lower()


async def test_check_says_the_key_is_wrong(fakes: Fakes) -> None:
    code, out, err = await fakes.check(COMETAPI_KEY="bad-key-123")
    assert code == 1
    assert "Wrong key" in out
    assert "bad-key-123" not in out + err


async def test_check_says_the_api_cant_be_reached(fakes: Fakes) -> None:
    code, out, _ = await fakes.check(COMETAPI_BASE_URL="http://127.0.0.1:9")
    assert code == 1
    assert "Can't reach the API at http://127.0.0.1:9" in out


async def test_help_names_every_command(tmp_path: Path) -> None:
    code, out, _ = await run_cli("--help", cwd=tmp_path, env=clean_env())
    assert code == 0
    for command in ("check", "sync", "health", "backup PATH", "run the bot"):
        assert command in out


async def test_check_says_the_base_url_is_wrong(fakes: Fakes) -> None:
    code, out, _ = await fakes.check(COMETAPI_BASE_URL=fakes.api.base_url + "/v1")
    assert code == 1, out
    assert "COMETAPI_BASE_URL" in out and not out.startswith("OK")


async def test_check_says_the_database_cant_be_opened(fakes: Fakes) -> None:
    (fakes.tmp / "not-a-folder").write_text("a file where a folder should be")
    code, out, err = await fakes.check(
        DATABASE_URL=f"sqlite:///{fakes.tmp}/not-a-folder/bot.sqlite3"
    )
    assert code == 1, out + err
    assert "database" in out and "Traceback" not in out + err


# --- health --------------------------------------------------------------------------------


def write_heartbeat(database: Path, at: float | None) -> None:
    """A database with the `meta` table, holding the engine's heartbeat (or none)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("DELETE FROM meta WHERE key = 'engine_heartbeat'")
        if at is not None:
            db.execute("INSERT INTO meta VALUES ('engine_heartbeat', ?)", (f"{at:.3f}",))
    db.close()


async def test_health_passes_on_a_fresh_heartbeat_and_fails_on_a_stale_or_missing_one(
    tmp_path: Path,
) -> None:
    database = tmp_path / "data" / "bot.sqlite3"
    env = clean_env(DISCORD_TOKEN="t", COMETAPI_KEY="k", DATABASE_URL=f"sqlite:///{database}")
    code, _, err = await run_cli("health", cwd=tmp_path, env=env)
    assert code == 1 and "no database" in err  # the bot never ran here

    write_heartbeat(database, None)
    code, _, err = await run_cli("health", cwd=tmp_path, env=env)
    assert code == 1 and "never written a heartbeat" in err

    write_heartbeat(database, time.time() - 10)
    code, out, err = await run_cli("health", cwd=tmp_path, env=env)
    assert code == 0, err
    assert out.startswith("healthy")

    write_heartbeat(database, time.time() - 600)
    code, _, err = await run_cli("health", cwd=tmp_path, env=env)
    assert code == 1 and "stopped making progress" in err
    code, _, _ = await run_cli("health", "--max-age", "900", cwd=tmp_path, env=env)
    assert code == 0
    # Docker reserves exit code 2 for health checks: a settings problem is plain "unhealthy".
    code, _, err = await run_cli("health", cwd=tmp_path, env=clean_env(COMETAPI_KEY="k"))
    assert code == 1 and "DISCORD_TOKEN" in err


async def test_the_bot_says_discord_cant_be_resolved(fakes: Fakes) -> None:
    code, out, err = await run_cli(
        cwd=fakes.tmp, env=fakes.env(), discord="http://discord.example.invalid"
    )
    assert code == 1, out + err
    assert "Can't resolve the host discord.example.invalid" in err
    assert "Traceback" not in out + err


# --- on PostgreSQL ---------------------------------------------------------------------------


async def test_check_on_postgresql_reads_the_schema_version_and_changes_nothing(
    fakes: Fakes, postgres_url: str
) -> None:
    from bot.store import POSTGRES_MIGRATIONS, TaskStore

    code, out, err = await fakes.check(DATABASE_URL=postgres_url)
    assert code == 0, out + err
    assert "no tables yet" in out and out.strip().splitlines()[-1].startswith("OK")
    async with await TaskStore.open(postgres_url) as store:  # check created nothing
        await store.set_meta("k", "v")
    code, out, _ = await fakes.check(DATABASE_URL=postgres_url)
    assert code == 0 and f"schema version {len(POSTGRES_MIGRATIONS)}, this code's" in out

    newer = postgres_url.replace("search_path=", "password=hunter2&search_path=")
    async with await TaskStore.open(postgres_url) as store, store._db.connection() as conn:
        await conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (999,))
    code, out, err = await fakes.check(DATABASE_URL=newer)
    assert code == 1 and "newer than this code" in out
    assert "hunter2" not in out + err and "password=***" in out


async def test_check_says_postgresql_cant_be_reached(fakes: Fakes) -> None:
    url = "postgresql://bot:hunter2@127.0.0.1:1/kling"
    code, out, err = await fakes.check(DATABASE_URL=url)
    assert code == 1, out + err
    [line] = out.strip().splitlines()
    assert "PostgreSQL database at postgresql://bot:***@127.0.0.1:1/kling can't be reached" in line
    assert "hunter2" not in out + err and "Traceback" not in out + err


async def test_health_reads_the_heartbeat_from_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    from bot.store import TaskStore

    env = clean_env(DISCORD_TOKEN="t", COMETAPI_KEY="k", DATABASE_URL=postgres_url)
    code, _, err = await run_cli("health", cwd=tmp_path, env=env)
    assert code == 1 and "no tables yet" in err  # the bot never ran on it
    async with await TaskStore.open(postgres_url) as store:
        code, _, err = await run_cli("health", cwd=tmp_path, env=env)
        assert code == 1 and "never written a heartbeat" in err
        await store.set_meta("engine_heartbeat", f"{time.time() - 10:.3f}")
        code, out, err = await run_cli("health", cwd=tmp_path, env=env)
        assert code == 0 and out.startswith("healthy"), err
        await store.set_meta("engine_heartbeat", f"{time.time() - 600:.3f}")
        code, _, err = await run_cli("health", cwd=tmp_path, env=env)
        assert code == 1 and "stopped making progress" in err
    env["DATABASE_URL"] = "postgresql://bot:hunter2@127.0.0.1:1/kling"
    code, _, err = await run_cli("health", cwd=tmp_path, env=env)
    assert code == 1 and err.startswith("unhealthy: the database at postgresql://bot:***@")
    assert "hunter2" not in err and "Traceback" not in err


async def test_backup_on_postgresql_says_pg_dump_and_exits_1(tmp_path: Path) -> None:
    url = "postgresql://bot:hunter2@db.internal:5432/kling?search_path=kvb"
    env = clean_env(DISCORD_TOKEN="t", COMETAPI_KEY="k", DATABASE_URL=url)
    code, out, err = await run_cli("backup", str(tmp_path / "b"), cwd=tmp_path, env=env)
    assert code == 1 and out == ""
    assert "pg_dump --format=custom --file=kling-bot.dump --schema=kvb " in err
    assert "'postgresql://bot:***@db.internal:5432/kling'" in err
    assert "hunter2" not in err and not (tmp_path / "b").exists()
