"""Command line: `python -m bot` runs the bot; `check` and `sync` help the operator."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import uuid

import aiohttp

from bot.config import Settings, SettingsError, load_settings
from bot.kling.client import KlingClient
from bot.kling.errors import (
    ApiTimeoutError,
    AuthenticationError,
    KlingError,
    OperatorError,
    TaskNotFoundError,
)
from bot.store import StoreError, TaskStore

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_SETTINGS = 2

DESCRIPTION = """\
Kling Video Bot: turn 2–4 images and a prompt into a video, in Discord.

commands:
  (none)   run the bot with the settings from the environment and .env
  check    validate the settings and reach the API with the key, then say OK or what is wrong
  sync     run the bot once to sync its slash commands with Discord now, then exit
"""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and do what it says; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["run", "check", "sync"], default="run")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return EXIT_SETTINGS
    if args.command == "check":
        return asyncio.run(check(settings))
    from bot.app import run_bot  # discord is only imported when the bot really runs

    syncing = args.command == "sync"
    return run_bot(settings, force_sync=syncing, sync_only=syncing)


async def check(settings: Settings) -> int:
    """Reach the API with the key by asking for a task that can't exist."""
    url = settings.cometapi_base_url
    async with aiohttp.ClientSession() as session:
        client = KlingClient.from_settings(session, settings)
        client.max_retries = 0
        try:
            await client.get_task(f"kling-bot-check-{uuid.uuid4().hex}")
        except TaskNotFoundError:
            pass  # the key was accepted and the route answered
        except AuthenticationError:
            print(f"Wrong key: the API at {url} refused COMETAPI_KEY. Check the key in .env.")
            return EXIT_PROBLEM
        except ApiTimeoutError as error:
            print(
                f"Can't reach the API at {url} ({error}). Check COMETAPI_BASE_URL and the network."
            )
            return EXIT_PROBLEM
        except OperatorError as error:
            print(f"The API at {url} refused the account: {error}. Hint: {error.hint}.")
            return EXIT_PROBLEM
        except KlingError as error:
            print(f"The API at {url} answered unexpectedly: {error}.")
            return EXIT_PROBLEM
    try:
        settings.media_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"MEDIA_DIR {settings.media_dir} can't be created: {error.strerror}.")
        return EXIT_PROBLEM
    try:
        store = await TaskStore.open(settings.database_url)
        await store.close()
    except (StoreError, OSError, sqlite3.Error) as error:
        print(f"The database at {settings.database_url} can't be opened: {error}.")
        return EXIT_PROBLEM
    print(f"OK: settings are valid, the database opens and the API at {url} accepts the key.")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
