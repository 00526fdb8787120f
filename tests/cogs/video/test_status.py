"""The status message's estimate and how often it is shown again (cogs/video/status.py)."""

from __future__ import annotations

from dataclasses import replace

from bot.quota import QuotaLimits
from bot.tasks import NewTask, Task, TaskOptions, TaskState
from cogs.services import ServiceBot
from cogs.video.status import estimate_text, next_refresh
from tests.fakes.discord import FakeDiscord


async def a_task(bot: ServiceBot, **options: str) -> Task:
    return await bot.store.reserve(
        NewTask(
            user_id=1,
            guild_id=10,
            channel_id=100,
            locale="en-US",
            prompt="a cat walks",
            options=TaskOptions(**options),
            image_count=2,
            input_dir="",
            upload_limit=10 * 1024 * 1024,
        ),
        QuotaLimits(),
    )


async def at_the_provider(bot: ServiceBot, task: Task, submitted_at: float) -> Task:
    await bot.store.transition(task.id, TaskState.SUBMITTING)
    return await bot.store.transition(
        task.id, TaskState.SUBMITTED, kling_task_id=f"k-{task.id}", submitted_at=submitted_at
    )


async def test_a_queued_task_shows_when_it_likely_starts_and_that_it_is_a_guess(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    now = 1_800_000_000.0
    bot.engine.polls._clock = lambda: now
    for _ in range(2):  # the provider's two slots are taken, just now
        bot.engine.polls.track(await at_the_provider(bot, await a_task(bot), now))
    waiting = await a_task(bot)
    line = estimate_text(bot, waiting, 3)
    assert line is not None
    # Two ahead of it: it starts once three of the four before it are done (about 2 min each).
    assert "Likely to start <t:" in line and "A first guess: no video has finished yet." in line
    starts = int(line.split("<t:")[1].split(":")[0])
    assert now + 180 < starts < now + 600
    assert estimate_text(bot, replace(waiting, state=TaskState.FAILED), None) is None


async def test_a_running_task_is_shown_again_only_a_few_times(
    fake: FakeDiscord, bot: ServiceBot
) -> None:
    """Its bar at each quarter, then "taking longer than usual": never once per poll."""
    start = 1_800_000_000.0
    clock = [start]
    bot.engine.polls._clock = lambda: clock[0]
    task = await at_the_provider(bot, await a_task(bot, mode="pro"), start)
    refreshes = []
    at = next_refresh(bot, task, clock[0])
    while at is not None:
        refreshes.append(at - start)
        clock[0] = at
        at = next_refresh(bot, task, clock[0])
    assert 2 <= len(refreshes) <= 4, refreshes
    clock[0] = start + refreshes[-1]
    late = estimate_text(bot, task, None)
    assert late is not None and "Taking longer than usual" in late, late
    clock[0] = start + 1
    early = estimate_text(bot, task, None)
    assert early is not None and "▱▱▱▱▱▱▱▱▱▱ Likely ready <t:" in early, early


async def test_quota_says_when_a_slot_likely_frees(fake: FakeDiscord, bot: ServiceBot) -> None:
    """The first of the member's tasks to end: a running one, else the first waiting one."""
    now = 1_800_000_000.0
    bot.engine.polls._clock = lambda: now
    polls = bot.engine.polls
    assert polls.next_free([]) is None
    old = await at_the_provider(bot, await a_task(bot), now - 100)
    new = await at_the_provider(bot, await a_task(bot), now - 10)
    both = polls.next_free([old, new])
    alone = polls.next_free([new])
    assert both is not None and alone is not None
    assert now < both < alone, "the one running longer likely ends first"
    waiting = polls.next_free([await a_task(bot)])
    assert waiting is not None and waiting > now + 60, "a waiting one has all its time ahead"
