"""Operator tools that need no Discord: the engine's heartbeat (`python -m bot health`), a
backup taken while the bot runs (`python -m bot backup PATH`) and a plain DNS look-up.

The heartbeat is a row in the store's `meta` table that the engine's scheduler loop rewrites
every `HEARTBEAT_SECONDS` with the time; `health` fails when it is missing or older than its
allowed age, which catches a stalled or crashed engine as well as a dead process. It is read
from the SQLite file, or over a read-only PostgreSQL connection.

A backup copies the database with SQLite's online backup API in one step, a consistent
snapshot even while the bot writes (WAL readers never see half a transaction), and then
copies MEDIA_DIR file by file. The bot writes every file under a temporary name and renames
it into place, so a copied file is always whole; the temporary ones are skipped. A PostgreSQL
database is backed up with PostgreSQL's own `pg_dump`; `backup` says so and does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.config import redact_database_url
from bot.store.database import StoreError
from bot.store.postgres import is_postgres_url, read_meta
from bot.store.sqlite import parse_database_url

#: The `meta` key the engine writes its heartbeat (Unix time, text) to.
HEARTBEAT_KEY = "engine_heartbeat"
#: How often the engine's loop writes the heartbeat.
HEARTBEAT_SECONDS = 30.0
#: `health` fails when the heartbeat is older than this (a few missed beats).
HEARTBEAT_MAX_AGE_SECONDS = 120.0
#: Files the bot is still writing (renamed into place when whole); never backed up.
PARTIAL_SUFFIX = ".part"
BACKUP_DATABASE_NAME = "kling-bot.sqlite3"
BACKUP_MEDIA_NAME = "media"


class OpsError(Exception):
    """An operator command could not do its job; the text is one line for the operator."""


async def host_resolves(host: str) -> bool:
    """Whether the host name resolves (a DNS failure is told apart from a time-out)."""
    loop = asyncio.get_running_loop()
    try:
        await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return True


# --- health ---------------------------------------------------------------------------------


def read_heartbeat(database_url: str) -> float | None:
    """The engine's last heartbeat (Unix time), or None when it never wrote one.

    Reads the database read-only; never creates it, never migrates it.
    """
    if is_postgres_url(database_url):
        return _read_postgres_heartbeat(database_url)
    path = parse_database_url(database_url)
    if path == ":memory:":
        raise OpsError("DATABASE_URL is sqlite:///:memory:, which nothing outside the bot can read")
    if not Path(path).is_file():
        raise OpsError(f"there is no database at {path} (has the bot started here?)")
    try:
        with contextlib.closing(
            sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        ) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (HEARTBEAT_KEY,)).fetchone()
    except sqlite3.Error as error:
        raise OpsError(f"the database at {path} can't be read: {error}") from None
    return float(row[0]) if row else None


def _read_postgres_heartbeat(database_url: str) -> float | None:
    """The heartbeat from PostgreSQL, over a read-only connection."""
    try:
        value = asyncio.run(read_meta(database_url, HEARTBEAT_KEY))
    except (StoreError, OSError) as error:
        shown = redact_database_url(database_url)
        raise OpsError(f"the database at {shown} can't be read: {error}") from None
    return None if value is None else float(value)


def health(database_url: str, *, max_age: float = HEARTBEAT_MAX_AGE_SECONDS) -> str:
    """Say how fresh the engine's heartbeat is; raise `OpsError` when it is missing or stale."""
    beat = read_heartbeat(database_url)
    if beat is None:
        raise OpsError("the engine has never written a heartbeat (is the bot running?)")
    age = time.time() - beat
    if age > max_age:
        raise OpsError(
            f"the engine's last heartbeat is {age:.0f} s old (more than {max_age:g} s): "
            "it has stopped making progress"
        )
    return f"the engine's heartbeat is {max(age, 0):.0f} s old"


# --- backup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupReport:
    """What a backup wrote."""

    database: Path
    database_bytes: int
    media: Path
    files: int
    media_bytes: int


def backup(database_url: str, media_dir: Path, destination: Path) -> BackupReport:
    """Copy the database (online, consistent) and then MEDIA_DIR into `destination`.

    `destination` is a folder; it is created, and must not already hold a backup (an older
    backup is never overwritten by half of a new one). The database goes first: a video that
    finishes meanwhile is then at worst an extra file, never a row without its file.
    A PostgreSQL database is not copied here: the error says how to back it up.
    """
    if is_postgres_url(database_url):
        raise OpsError(
            "DATABASE_URL is PostgreSQL, which is backed up with PostgreSQL's own tool, not by "
            f"the bot: {pg_dump_command(database_url)} (a consistent snapshot while the bot "
            "writes; pg_restore puts it back), then copy MEDIA_DIR"
        )
    source = parse_database_url(database_url)
    if source == ":memory:":
        raise OpsError("DATABASE_URL is sqlite:///:memory:: there is nothing on disk to back up")
    if not Path(source).is_file():
        raise OpsError(f"there is no database at {source}")
    database = destination / BACKUP_DATABASE_NAME
    media = destination / BACKUP_MEDIA_NAME
    if database.exists() or media.exists():
        raise OpsError(f"{destination} already holds a backup; choose a new folder")
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OpsError(f"{destination} can't be created: {error.strerror}") from None
    partial = database.with_name(database.name + PARTIAL_SUFFIX)
    try:
        _backup_database(Path(source), partial)
        partial.replace(database)
    except sqlite3.Error as error:
        partial.unlink(missing_ok=True)
        raise OpsError(f"the database at {source} can't be backed up: {error}") from None
    files, media_bytes = _copy_media(media_dir, media)
    return BackupReport(database, database.stat().st_size, media, files, media_bytes)


def pg_dump_command(database_url: str) -> str:
    """The pg_dump command that backs up the bot's PostgreSQL database (password hidden; a
    `search_path` in the URL becomes pg_dump's `--schema`)."""
    parts = urlsplit(redact_database_url(database_url))
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "search_path"]
    rest = urlencode([(key, value) for key, value in query if key != "search_path"], safe="*/")
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
    schema = f" --schema={schemas[0]}" if schemas else ""
    return f"pg_dump --format=custom --file=kling-bot.dump{schema} '{url}'"


def _backup_database(source: Path, target: Path) -> None:
    """SQLite's online backup, all pages in one step: one consistent snapshot."""
    with (
        contextlib.closing(sqlite3.connect(source, timeout=30)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        check = dst.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its check: {check}")


def _copy_media(source: Path, target: Path) -> tuple[int, int]:
    """Copy every whole file under `source`; files removed meanwhile are skipped."""
    files = size = 0
    if not source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return files, size
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name.endswith(PARTIAL_SUFFIX):
            continue
        copy = target / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(path, copy)
        except FileNotFoundError:
            continue  # the retention sweep removed it meanwhile
        files += 1
        size += copy.stat().st_size
    target.mkdir(parents=True, exist_ok=True)
    return files, size


def why_not_listening(error: OSError, setting: str) -> str:
    """Why a port named by `setting` can't be listened on, in an operator's words."""
    if error.errno == errno.EADDRINUSE:
        return (
            f"the port is in use (another program, or another bot process with the same {setting})"
        )
    return error.strerror or str(error)
