"""What a guild's admins set (limits, overrides, blocked members and words, the log channel),
and a small key-value table for the bot's own facts (the command hash, the heartbeat)."""

from __future__ import annotations

from typing import Literal

from bot.store.rows import Rows
from bot.tasks import GuildSettings, QuotaOverride

_GUILD_LIMITS: frozenset[str] = frozenset(
    {
        "daily_per_user",
        "concurrent_per_user",
        "daily_per_guild",
        "credits_daily_per_user",  # cents of a credit
        "credits_daily_per_guild",
    }
)


class GuildRows(Rows):
    """Per-guild settings and the key-value table."""

    async def get_guild_settings(self, guild_id: int) -> GuildSettings:
        """Everything the guild's admins set (defaults when nothing is set)."""
        async with self._db.connection() as conn:
            limits = await conn.fetch(
                "SELECT daily_per_user, concurrent_per_user, daily_per_guild, log_channel_id, "
                "credits_daily_per_user, credits_daily_per_guild "
                "FROM guild_settings WHERE guild_id = ?",
                (guild_id,),
            )
            overrides = await conn.fetch(
                "SELECT kind, target_id, daily, concurrent, exempt, credits_daily "
                "FROM quota_overrides WHERE guild_id = ?",
                (guild_id,),
            )
            blocked = await conn.fetch(
                "SELECT user_id FROM blocked_users WHERE guild_id = ?", (guild_id,)
            )
            words = await conn.fetch(
                "SELECT word FROM blocked_words WHERE guild_id = ? ORDER BY word", (guild_id,)
            )
        roles: dict[int, QuotaOverride] = {}
        users: dict[int, QuotaOverride] = {}
        for kind, target_id, daily, concurrent, exempt, credits_daily in overrides:
            target = roles if kind == "role" else users
            target[int(target_id)] = QuotaOverride(daily, concurrent, bool(exempt), credits_daily)
        row = limits[0] if limits else (None,) * 6
        return GuildSettings(
            guild_id=guild_id,
            daily_per_user=row[0],
            concurrent_per_user=row[1],
            daily_per_guild=row[2],
            log_channel_id=row[3],
            credits_daily_per_user=row[4],
            credits_daily_per_guild=row[5],
            role_overrides=roles,
            user_overrides=users,
            blocked_users=frozenset(int(r[0]) for r in blocked),
            blocked_words=tuple(str(r[0]) for r in words),
        )

    async def set_guild_limits(self, guild_id: int, **limits: int | None) -> GuildSettings:
        """Set some of daily_per_user, concurrent_per_user, daily_per_guild,
        credits_daily_per_user, credits_daily_per_guild (cents of a credit); None = default."""
        unknown = set(limits) - _GUILD_LIMITS
        if unknown:
            raise ValueError(f"unknown guild limit(s): {', '.join(sorted(unknown))}")
        checked = {name: _check_limit(name, value) for name, value in limits.items()}
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id) VALUES (?) ON CONFLICT DO NOTHING",
                (guild_id,),
            )
            if checked:
                names = sorted(checked)
                await conn.execute(
                    f"UPDATE guild_settings SET {', '.join(f'{n} = ?' for n in names)} "
                    "WHERE guild_id = ?",
                    [*(checked[n] for n in names), guild_id],
                )
        return await self.get_guild_settings(guild_id)

    async def set_log_channel(self, guild_id: int, channel_id: int | None) -> None:
        """Set (or with None clear) the guild's log channel."""
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO guild_settings (guild_id, log_channel_id) VALUES (?, ?) "
                "ON CONFLICT (guild_id) DO UPDATE SET log_channel_id = excluded.log_channel_id",
                (guild_id, channel_id),
            )

    async def set_override(
        self,
        guild_id: int,
        kind: Literal["role", "user"],
        target_id: int,
        daily: int | None = None,
        concurrent: int | None = None,
        exempt: bool = False,
        credits_daily: int | None = None,
    ) -> QuotaOverride:
        """Create or replace a role's or user's quota override in a guild (`credits_daily` in
        cents of a credit)."""
        if kind not in ("role", "user"):
            raise ValueError("kind must be 'role' or 'user'")
        override = QuotaOverride(
            _check_limit("daily", daily),
            _check_limit("concurrent", concurrent),
            bool(exempt),
            _check_limit("credits_daily", credits_daily),
        )
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO quota_overrides "
                "(guild_id, kind, target_id, daily, concurrent, exempt, credits_daily) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id, kind, target_id) DO UPDATE SET "
                "daily = excluded.daily, concurrent = excluded.concurrent, "
                "exempt = excluded.exempt, credits_daily = excluded.credits_daily",
                (guild_id, kind, target_id, daily, concurrent, int(exempt), credits_daily),
            )
        return override

    async def remove_override(
        self, guild_id: int, kind: Literal["role", "user"], target_id: int
    ) -> bool:
        """Remove an override; True when there was one."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "DELETE FROM quota_overrides WHERE guild_id = ? AND kind = ? AND target_id = ? "
                "RETURNING 1",
                (guild_id, kind, target_id),
            )
        return bool(rows)

    async def block_user(self, guild_id: int, user_id: int, *, reason: str | None = None) -> bool:
        """Block a user from starting videos in a guild; True when newly blocked."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "INSERT INTO blocked_users (guild_id, user_id, reason, blocked_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                (guild_id, user_id, reason, self._now()),
            )
        return bool(rows)

    async def unblock_user(self, guild_id: int, user_id: int) -> bool:
        """Lift a block; True when the user was blocked."""
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "DELETE FROM blocked_users WHERE guild_id = ? AND user_id = ? RETURNING 1",
                (guild_id, user_id),
            )
        return bool(rows)

    async def add_blocked_word(self, guild_id: int, word: str) -> bool:
        """Add a blocked word/phrase (stored trimmed and lower-cased); True when new."""
        normalized = " ".join(word.split()).casefold()
        if not normalized:
            raise ValueError("a blocked word cannot be empty")
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "INSERT INTO blocked_words (guild_id, word) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (guild_id, normalized),
            )
        return bool(rows)

    async def remove_blocked_word(self, guild_id: int, word: str) -> bool:
        """Remove a blocked word/phrase; True when it was there."""
        normalized = " ".join(word.split()).casefold()
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "DELETE FROM blocked_words WHERE guild_id = ? AND word = ? RETURNING 1",
                (guild_id, normalized),
            )
        return bool(rows)

    # --- key-value ---------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value from the key-value table, or None."""
        async with self._db.connection() as conn:
            rows = list(await conn.fetch("SELECT value FROM meta WHERE key = ?", (key,)))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        """Set a value in the key-value table."""
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _check_limit(name: str, value: object) -> int | None:
    """Accept None or a non-negative int for a limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or None")
    return value
