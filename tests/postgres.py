"""The PostgreSQL server the tests run the store on: found, given a database of its own per run,
one schema per test, dropped afterwards.

`KVB_TEST_POSTGRES_URL` names the server and a database to connect to for the set-up
(default `postgresql://postgres@127.0.0.1:5432/test`). Each test run (each pytest process)
creates its own database `kvb_test_<host>_<pid>_<random>` there and drops it at the end, so parallel
runs and CI never meet; each test that asks for PostgreSQL gets a new schema in it, reached
through the URL's `search_path`.

Where no server answers, the PostgreSQL half of the suite is skipped, loudly (a line in the
summary names the reason) — unless `KVB_REQUIRE_POSTGRES=1` (`.ci/run` sets it): then every
test that needed the server fails, so a skip can never pass for green.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

URL_ENV = "KVB_TEST_POSTGRES_URL"
REQUIRE_ENV = "KVB_REQUIRE_POSTGRES"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
DATABASE_PREFIX = "kvb_test_"
CONNECT_TIMEOUT = 5.0
#: This machine, in the database names, so a run only ever drops another run's of this machine.
HOST_TAG = hashlib.blake2b(socket.gethostname().encode(), digest_size=3).hexdigest()

T = TypeVar("T")


def required() -> bool:
    """Whether a missing server is a failure (CI) rather than a skip."""
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}


def admin_url() -> str:
    """The URL the set-up connects with."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def with_database(url: str, database: str, **query: str) -> str:
    """The same server and user, another database (and these query parameters)."""
    parts = urlsplit(url)
    text = "&".join(f"{key}={value}" for key, value in query.items())
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", text, ""))


def run_sync(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end from synchronous code, even inside a running event loop
    (in a thread of its own with its own loop)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(work())  # type: ignore[arg-type]
        except BaseException as error:
            result["error"] = error

    thread = threading.Thread(target=target, name="postgres-setup")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


async def _connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)


class PostgresServer:
    """A database of this run's own on the server; a schema per test inside it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = f"{DATABASE_PREFIX}{HOST_TAG}_{os.getpid()}_{secrets.token_hex(4)}"
        self._schemas = 0

    @classmethod
    def start(cls) -> PostgresServer:
        """Reach the server and create this run's database; raises when it can't."""
        server = cls(admin_url())

        async def create() -> None:
            conn = await _connect(server.url)
            try:
                await _drop_abandoned(conn)
                await conn.execute(f'CREATE DATABASE "{server.database}"')
            finally:
                await conn.close()

        run_sync(create)
        return server

    def database_url(self, **query: str) -> str:
        """The URL of this run's database."""
        return with_database(self.url, self.database, **query)

    def new_schema(self) -> str:
        """A new, empty schema; returns the URL that puts the store's tables in it."""
        self._schemas += 1
        schema = f"t{self._schemas}_{secrets.token_hex(3)}"
        self.execute(f'CREATE SCHEMA "{schema}"')
        return self.database_url(search_path=schema)

    def drop_schema(self, url: str) -> None:
        """Drop a schema `new_schema` made (and everything in it)."""
        schema = re.search(r"search_path=(\w+)", url)
        assert schema is not None
        self.execute(f'DROP SCHEMA IF EXISTS "{schema.group(1)}" CASCADE')

    def execute(self, sql: str) -> None:
        """Run statements on this run's database."""

        async def work() -> None:
            conn = await _connect(self.database_url())
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        run_sync(work)

    def stop(self) -> None:
        """Drop this run's database (cutting any connection a test left behind)."""

        async def drop() -> None:
            conn = await _connect(self.url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            finally:
                await conn.close()

        run_sync(drop)


async def _drop_abandoned(conn: asyncpg.Connection) -> None:
    """Drop the databases of earlier runs on this machine whose process is gone (a run that was
    killed never dropped its own)."""
    names = await conn.fetch(
        "SELECT datname FROM pg_database WHERE datname LIKE $1", f"{DATABASE_PREFIX}{HOST_TAG}_%"
    )
    for (name,) in names:
        found = re.fullmatch(rf"{DATABASE_PREFIX}{HOST_TAG}_(\d+)_[0-9a-f]+", name)
        if found and not _alive(int(found.group(1))):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
