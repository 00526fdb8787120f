"""Snowflake ids, and the rule that routes a guild's events to a gateway shard."""

from __future__ import annotations

import itertools
import time

DISCORD_EPOCH_MS = 1_420_070_400_000


def shard_for(guild_id: str | int, shard_count: int) -> int:
    """The shard Discord sends a guild's events to: ``(guild_id >> 22) % shard_count``."""
    return (int(guild_id) >> 22) % shard_count


class Snowflakes:
    """Makes fresh snowflakes (strings) carrying the current timestamp, increasing."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def _make(self, ms: int) -> str:
        return str((ms << 22) | (next(self._counter) & 0x3FFFFF))

    def next(self) -> str:
        """A fresh snowflake with the current timestamp."""
        return self._make(int(time.time() * 1000) - DISCORD_EPOCH_MS)

    def on_shard(self, shard_id: int, shard_count: int) -> str:
        """A fresh snowflake that :func:`shard_for` puts on ``shard_id`` of ``shard_count``.

        The shard depends only on the timestamp bits, so the timestamp is moved forward by
        less than ``shard_count`` milliseconds until it lands there.
        """
        if not 0 <= shard_id < shard_count:
            raise ValueError(f"shard {shard_id} does not exist among {shard_count}")
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return self._make(ms + (shard_id - ms) % shard_count)
