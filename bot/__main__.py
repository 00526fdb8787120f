"""Command line: `python -m bot` runs the bot; `check`, `sync`, `health` and `backup` help the
operator."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bot.config import Settings, SettingsError, load_settings, redact_database_url
from bot.kling.client import KlingClient
from bot.kling.errors import (
    ApiTimeoutError,
    AuthenticationError,
    KlingError,
    OperatorError,
    TaskNotFoundError,
)
from bot.ops import HEARTBEAT_MAX_AGE_SECONDS, OpsError, backup, health, host_resolves
from bot.store import POSTGRES_MIGRATIONS, StoreError, TaskStore, is_postgres_url
from bot.store.postgres import read_schema_version

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_SETTINGS = 2

DESCRIPTION = """\
Kling Video Bot: turn 2–4 images and a prompt into a video, in Discord.

commands:
  (none)       run the bot with the settings from the environment and .env
  check        check everything the bot needs (Discord and the token, the API and the key,
               the database, the media folder); print the bot's name and its invite link
  sync         run the bot once to sync its slash commands with Discord now, then exit
  health       exit 0 when the running bot's engine wrote its heartbeat lately, 1 when not
               (for Docker's HEALTHCHECK or a supervisor)
  backup PATH  copy the database (SQLite's online backup: never torn) and then MEDIA_DIR
               into the new folder PATH, while the bot runs (a PostgreSQL database is backed
               up with pg_dump: backup says how, and exits 1)
"""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and do what it says; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "check", "sync", "health", "backup"],
        default="run",
    )
    parser.add_argument("path", nargs="?", type=Path, help="backup: the folder to create")
    parser.add_argument(
        "--max-age",
        type=float,
        default=HEARTBEAT_MAX_AGE_SECONDS,
        help=f"health: the oldest heartbeat (seconds) that still counts (default {HEARTBEAT_MAX_AGE_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    if args.command == "backup" and args.path is None:
        parser.error("backup needs the folder to write to: python -m bot backup PATH")
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        # Docker reserves a health check's exit code 2: there, any problem is "unhealthy" (1).
        return EXIT_PROBLEM if args.command == "health" else EXIT_SETTINGS
    if args.command == "check":
        return asyncio.run(check(settings))
    if args.command == "health":
        return run_health(settings, args.max_age)
    if args.command == "backup":
        return run_backup(settings, args.path)
    from bot.app import run_bot  # discord is only imported when the bot really runs

    syncing = args.command == "sync"
    return run_bot(settings, force_sync=syncing, sync_only=syncing)


def run_health(settings: Settings, max_age: float) -> int:
    """`health`: one line, exit 0 when the engine's heartbeat is fresh, 1 when not."""
    try:
        print(f"healthy: {health(settings.database_url, max_age=max_age)}")
    except OpsError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK


def run_backup(settings: Settings, destination: Path) -> int:
    """`backup PATH`: copy the database and the media; say what was written."""
    try:
        report = backup(settings.database_url, settings.media_dir, destination)
    except OpsError as error:
        print(f"Backup failed: {error}.", file=sys.stderr)
        return EXIT_PROBLEM
    print(
        f"Backed up the database to {report.database} ({report.database_bytes} bytes) and "
        f"{report.files} file(s) of {settings.media_dir} to {report.media} "
        f"({report.media_bytes} bytes)."
    )
    return EXIT_OK


async def check(settings: Settings) -> int:
    """Check everything the bot needs; print one line per problem, or who the bot is and OK."""
    from bot.app import DiscordCheckError, discord_identity  # imports discord

    problems: list[str] = []
    identity = None
    try:
        identity = await discord_identity(settings.discord_token.get_secret_value())
    except DiscordCheckError as error:
        problems.append(str(error))
    api_problem = await check_api(settings)
    if api_problem:
        problems.append(api_problem)
    try:
        settings.media_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        problems.append(f"MEDIA_DIR {settings.media_dir} can't be created: {error.strerror}.")
    database_problem, database_note = await check_database(settings.database_url)
    if database_problem:
        problems.append(database_problem)
    if problems or identity is None:
        for problem in problems:
            print(problem)
        return EXIT_PROBLEM
    if database_note:
        print(database_note)
    print(
        f"Discord: the token belongs to {identity.name} (application id {identity.application_id})."
    )
    print(f"Invite it with exactly the permissions it uses: {identity.invite}")
    print(
        f"OK: settings are valid, Discord accepts the token, the API at "
        f"{settings.cometapi_base_url} accepts the key and the database opens."
    )
    return EXIT_OK


async def check_database(database_url: str) -> tuple[str | None, str | None]:
    """Open the database (SQLite: create and migrate it, as the bot would; PostgreSQL: connect
    read-only and read its schema version). Returns (a problem, a note), either may be None."""
    shown = redact_database_url(database_url)
    if not is_postgres_url(database_url):
        try:
            store = await TaskStore.open(database_url)
            await store.close()
        except (StoreError, OSError, sqlite3.Error) as error:
            return f"The database at {shown} can't be opened: {error}.", None
        return None, None
    try:
        version = await read_schema_version(database_url)
    except (StoreError, OSError) as error:
        return f"The PostgreSQL database at {shown} can't be reached: {error}.", None
    target = len(POSTGRES_MIGRATIONS)
    if version is not None and version > target:
        return (
            f"The PostgreSQL database at {shown} is at schema version {version}, newer than "
            f"this code ({target}): upgrade the bot.",
            None,
        )
    if version is None:
        state = "no tables yet; the bot creates them when it starts"
    elif version < target:
        state = f"schema version {version}; the bot migrates it to {target} when it starts"
    else:
        state = f"schema version {version}, this code's"
    return None, f"Database: PostgreSQL at {shown} ({state})."


async def check_api(settings: Settings) -> str | None:
    """Reach the API with the key by asking for a task that can't exist; a problem, or None."""
    url = settings.cometapi_base_url
    host = urlsplit(url).hostname or url
    if not await host_resolves(host):
        return f"Can't resolve the host {host} (COMETAPI_BASE_URL): check it and the network."
    async with aiohttp.ClientSession() as session:
        client = KlingClient.from_settings(session, settings)
        client.max_retries = 0
        try:
            await client.get_task(f"kling-bot-check-{uuid.uuid4().hex}")
        except TaskNotFoundError:
            return None  # the key was accepted and the route answered
        except AuthenticationError:
            return f"Wrong key: the API at {url} refused COMETAPI_KEY. Check the key in .env."
        except ApiTimeoutError as error:
            return (
                f"Can't reach the API at {url} ({error}). Check COMETAPI_BASE_URL and the network."
            )
        except OperatorError as error:
            return f"The API at {url} refused the account: {error}. Hint: {error.hint}."
        except KlingError as error:
            return f"The API at {url} answered unexpectedly: {error}."
    return None


if __name__ == "__main__":
    sys.exit(main())
