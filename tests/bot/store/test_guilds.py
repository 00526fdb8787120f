"""What a guild's admins set, and the key-value table."""

from __future__ import annotations

import pytest

from bot.store import (
    TaskStore,
)

# --- guild settings and meta -------------------------------------------------------------------


async def test_guild_settings_roundtrip(store: TaskStore) -> None:
    empty = await store.get_guild_settings(100)
    assert empty.daily_per_user is None and empty.blocked_words == ()
    s = await store.set_guild_limits(100, daily_per_user=20, daily_per_guild=100)
    assert (s.daily_per_user, s.concurrent_per_user, s.daily_per_guild) == (20, None, 100)
    s = await store.set_guild_limits(100, daily_per_user=None, concurrent_per_user=3)
    assert (s.daily_per_user, s.concurrent_per_user, s.daily_per_guild) == (None, 3, 100)
    with pytest.raises(ValueError):
        await store.set_guild_limits(100, weekly=3)
    with pytest.raises(ValueError):
        await store.set_guild_limits(100, daily_per_user=-1)
    await store.set_override(100, "role", 7, daily=50)
    await store.set_override(100, "role", 8, exempt=True)
    await store.set_override(100, "user", 9, concurrent=4)
    await store.set_override(100, "user", 9, daily=1)  # replaces
    assert await store.add_blocked_word(100, "  Bad   Word ") is True
    assert await store.add_blocked_word(100, "bad word") is False
    await store.add_blocked_word(100, "alpha")
    await store.set_log_channel(100, 555)
    await store.block_user(100, 66)
    s = await store.get_guild_settings(100)
    assert s.role_overrides[7].daily == 50 and s.role_overrides[8].exempt
    assert s.user_overrides[9].daily == 1 and s.user_overrides[9].concurrent is None
    assert s.blocked_words == ("alpha", "bad word")
    assert s.log_channel_id == 555 and s.blocked_users == frozenset({66})
    assert s.daily_per_guild == 100  # log channel did not clear limits
    assert await store.remove_override(100, "role", 7) is True
    assert await store.remove_override(100, "role", 7) is False
    assert await store.remove_blocked_word(100, "BAD WORD") is True
    s = await store.get_guild_settings(100)
    assert 7 not in s.role_overrides and s.blocked_words == ("alpha",)
    assert (await store.get_guild_settings(101)).role_overrides == {}


async def test_meta(store: TaskStore) -> None:
    assert await store.get_meta("tree_hash") is None
    await store.set_meta("tree_hash", "abc")
    await store.set_meta("tree_hash", "def")
    assert await store.get_meta("tree_hash") == "def"
