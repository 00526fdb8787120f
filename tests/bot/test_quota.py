"""Tests of bot.quota: the order in which limits are resolved, and the small rule helpers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import bot.quota
from bot.quota import (
    QuotaExceeded,
    QuotaKind,
    QuotaLimits,
    find_blocked_word,
    refund_due,
    resolve_limits,
)
from bot.tasks import GuildSettings, QuotaOverride, TaskState


@dataclass
class Defaults:
    """Stands in for Settings' quota fields."""

    quota_daily_per_user: int = 10
    quota_concurrent_per_user: int = 2
    quota_daily_per_guild: int = 0
    quota_daily_global: int = 0


def test_defaults_only_and_zero_means_unlimited_for_guild_and_global() -> None:
    limits = resolve_limits(Defaults(), None, [], 1)
    assert limits == QuotaLimits(10, 2, None, None, False)
    limits = resolve_limits(Defaults(quota_daily_per_guild=50, quota_daily_global=500), None, [], 1)
    assert (limits.daily_per_guild, limits.daily_global) == (50, 500)


def test_zero_means_no_limit_for_every_limit() -> None:
    """One meaning of 0 everywhere: settings, a guild's limits, a role's, a member's."""
    limits = resolve_limits(
        Defaults(quota_daily_per_user=0, quota_concurrent_per_user=0), None, [], 1
    )
    assert limits == QuotaLimits(None, None, None, None, False)
    assert limits.checks(in_guild=True) == []
    guild = GuildSettings(guild_id=1, daily_per_user=0, concurrent_per_user=0)
    assert resolve_limits(Defaults(), guild, [], 1) == QuotaLimits(None, None, None, None, False)
    # A role with 0 (no limit) is more generous than any number.
    roles = GuildSettings(
        guild_id=1, role_overrides={10: QuotaOverride(daily=0), 11: QuotaOverride(daily=50)}
    )
    assert resolve_limits(Defaults(), roles, [10, 11], 1).daily_per_user is None
    members = GuildSettings(
        guild_id=1, daily_per_user=3, user_overrides={1: QuotaOverride(daily=0, concurrent=0)}
    )
    limits = resolve_limits(Defaults(), members, [], 1)
    assert (limits.daily_per_user, limits.concurrent_per_user) == (None, None)
    assert resolve_limits(Defaults(), members, [], 2).daily_per_user == 3


def test_settings_object_satisfies_defaults() -> None:
    from bot.config import Settings

    settings = Settings(discord_token="x", cometapi_key="y", quota_daily_global=7)
    assert resolve_limits(settings, None, [], 1).daily_global == 7


def test_guild_limits_replace_defaults_where_set() -> None:
    guild = GuildSettings(guild_id=1, daily_per_user=3, daily_per_guild=0)
    limits = resolve_limits(Defaults(quota_daily_per_guild=40), guild, [], 1)
    assert limits.daily_per_user == 3  # replaced
    assert limits.concurrent_per_user == 2  # NULL keeps the default
    assert limits.daily_per_guild is None  # the guild set 0 = unlimited


def test_most_generous_role_wins_and_replaces_guild_value() -> None:
    guild = GuildSettings(
        guild_id=1,
        daily_per_user=20,
        role_overrides={
            10: QuotaOverride(daily=5),
            11: QuotaOverride(daily=8, concurrent=1),
            12: QuotaOverride(concurrent=4),
            13: QuotaOverride(daily=100),  # the user does not have this role
        },
    )
    limits = resolve_limits(Defaults(), guild, [10, 11, 12, 99], 1)
    assert (limits.daily_per_user, limits.concurrent_per_user, limits.exempt) == (8, 4, False)


def test_exempt_role_and_user_override_order() -> None:
    guild = GuildSettings(
        guild_id=1,
        role_overrides={10: QuotaOverride(exempt=True), 11: QuotaOverride(daily=50)},
        user_overrides={7: QuotaOverride(daily=1), 8: QuotaOverride(exempt=True)},
    )
    assert resolve_limits(Defaults(), guild, [10], 1).exempt
    # a user override wins over roles, including an exempt role
    limits = resolve_limits(Defaults(), guild, [10, 11], 7)
    assert (limits.daily_per_user, limits.exempt) == (1, False)
    assert resolve_limits(Defaults(), guild, [], 8).exempt
    # the global cap is the operator's and no guild setting changes it
    assert resolve_limits(Defaults(quota_daily_global=3), guild, [10], 8).daily_global == 3


def test_checks_order_and_exemption() -> None:
    limits = QuotaLimits(daily_per_user=1, concurrent_per_user=2, daily_per_guild=3, daily_global=4)
    assert [k for k, _ in limits.checks(in_guild=True)] == [
        "concurrent_user",
        "daily_user",
        "daily_guild",
        "daily_global",
    ]
    assert [k for k, _ in limits.checks(in_guild=False)] == [
        "concurrent_user",
        "daily_user",
        "daily_global",
    ]
    exempt = QuotaLimits(1, 2, 3, 4, exempt=True)
    assert exempt.checks(in_guild=True) == [(QuotaKind.DAILY_GLOBAL, 4)]
    assert QuotaLimits(daily_per_guild=0, daily_global=0).checks(in_guild=True) == []
    assert QuotaLimits(daily_per_user=0, concurrent_per_user=0).checks(in_guild=True) == []


def test_quota_exceeded_carries_the_figures() -> None:
    error = QuotaExceeded("daily_user", 10, 10, 123.0)
    assert error.kind is QuotaKind.DAILY_USER and error.kind == "daily_user"
    assert (error.used, error.limit, error.next_free_at) == (10, 10, 123.0)
    with pytest.raises(ValueError):
        QuotaExceeded("weekly", 1, 1)


def test_refund_policy() -> None:
    assert refund_due(TaskState.FAILED)
    for state in (TaskState.DELIVERED, TaskState.TIMED_OUT, TaskState.SUCCEEDED):
        assert not refund_due(state)
    assert refund_due(TaskState.TIMED_OUT, reached_provider=False)
    assert not refund_due(TaskState.DELIVERED, reached_provider=False)
    doc = bot.quota.__doc__ or ""
    assert "Refund policy" in doc and "Validation errors never reserve" in doc


@pytest.mark.parametrize(
    ("prompt", "found"),
    [
        ("A BadWord here", "badword"),
        ("badwords are fine", None),
        ("a very   Bad\nphrase!", "very bad phrase"),
        ("a very bad phrases", None),
        ("a very bad phrase!", "very bad phrase"),
        ("nothing", None),
    ],
)
def test_find_blocked_word(prompt: str, found: str | None) -> None:
    assert find_blocked_word(prompt, ["badword", "very bad phrase", ""]) == found
