"""Task rows: inserts, moves between states (only those `TRANSITIONS` allows), fields, queries, retention."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.store import (
    ConstraintError,
    StaleTransition,
    TaskNotFound,
    TaskStore,
)
from bot.tasks import (
    FINISHED,
    TRANSITIONS,
    ResultWhere,
    TaskNotes,
    TaskOptions,
    TaskState,
)
from tests.bot.store.helpers import (
    UNLIMITED,
    Clock,
    new_task,
)
from tests.helpers import advance

# --- rows and transitions ----------------------------------------------------------------------


async def test_reserve_inserts_queued_row(store: TaskStore, clock: Clock) -> None:
    task = await store.reserve(new_task(callback_token="tok"), UNLIMITED)
    assert task.state is TaskState.QUEUED
    assert task.options == TaskOptions(duration="5", mode="std", aspect_ratio="16:9", cfg_scale=0.5)
    assert task.created_at == task.updated_at == clock.t
    assert task.external_task_id.startswith("kvb-")
    assert task.callback_token == "tok"
    assert task.kling_task_id is None and task.attempts == 0 and not task.quota_refunded
    assert task.quota_reset_at is None and task.state not in FINISHED
    assert await store.get(task.id) == task
    assert await store.get(999) is None


async def test_transition_sets_times_and_guards_state(store: TaskStore, clock: Clock) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    clock.t += 1
    t = await store.transition(task.id, TaskState.SUBMITTING)
    assert t.state is TaskState.SUBMITTING and t.updated_at == clock.t
    clock.t += 1
    t = await store.transition(task.id, TaskState.SUBMITTED, kling_task_id="k-1")
    assert t.submitted_at == clock.t and t.kling_task_id == "k-1"
    assert await store.get(task.id) == t
    with pytest.raises(StaleTransition) as info:
        await store.transition(task.id, TaskState.SUBMITTING)
    assert info.value.actual is TaskState.SUBMITTED
    assert (await store.get(task.id)) == t  # unchanged
    clock.t += 5
    t = await store.transition(task.id, TaskState.SUCCEEDED, video_url="https://v/x.mp4")
    assert t.finished_at == clock.t and t.state in FINISHED and not t.is_terminal
    clock.t += 2
    t = await store.transition(task.id, TaskState.DELIVERED, result_message_id=55)
    assert t.delivered_at == clock.t and t.finished_at == clock.t - 2 and t.is_terminal
    assert t.result_message_id == 55
    with pytest.raises(TaskNotFound):
        await store.transition(12345, TaskState.FAILED)


@pytest.mark.parametrize("start", list(TaskState))
async def test_only_the_moves_the_table_allows_are_made(store: TaskStore, start: TaskState) -> None:
    for to in TaskState:
        task = await store.reserve(new_task(), UNLIMITED)
        if start is not TaskState.QUEUED:
            task = await advance(store, task.id, start)
        if start in TRANSITIONS[to]:
            assert (await store.transition(task.id, to)).state is to
        else:
            with pytest.raises(StaleTransition) as info:
                await store.transition(task.id, to)
            assert info.value.actual is start and info.value.expected == TRANSITIONS[to]
            assert await store.get(task.id) == task


async def test_transition_and_update_validate_fields(store: TaskStore) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    with pytest.raises(ValueError):
        await store.transition(task.id, TaskState.FAILED, no_such_field=1)
    with pytest.raises(ValueError):
        await store.update(task.id, state="failed")
    with pytest.raises(ValueError):
        await store.update(task.id, quota_refunded=True)
    with pytest.raises(ValueError):
        await store.update(task.id, prompt=None)
    t = await store.update(task.id, thread_id=7, status_message_id=8, attempts=2)
    assert (t.thread_id, t.status_message_id, t.attempts) == (7, 8, 2)
    assert t.state is TaskState.QUEUED
    with pytest.raises(TaskNotFound):
        await store.update(999, attempts=1)


async def test_notes_are_written_beside_the_options_which_never_change(store: TaskStore) -> None:
    notes = TaskNotes(result_where=ResultWhere.THREAD, image_names=("a.png", "b.png"))
    task = await store.reserve(new_task(notes=notes), UNLIMITED)
    assert task.notes == notes
    fallback = replace(notes, dm_fallback=True)
    moved = await store.update(task.id, notes=fallback)
    assert (moved.options, moved.notes) == (task.options, fallback)
    assert await store.get(task.id) == moved
    with pytest.raises(ValueError):
        await store.update(task.id, options=TaskOptions(duration="10"))
    with pytest.raises(TaskNotFound):
        await store.update(999, notes=notes)


async def test_unique_ids_are_enforced(store: TaskStore) -> None:
    a = await store.reserve(new_task(), UNLIMITED)
    b = await store.reserve(new_task(), UNLIMITED)
    with pytest.raises(ConstraintError):  # the same error on every backend
        await store.reserve(new_task(external_task_id=a.external_task_id), UNLIMITED)
    await store.update(a.id, kling_task_id="same")
    with pytest.raises(ConstraintError):
        await store.update(b.id, kling_task_id="same")
    # the failed statement left no transaction open, and nothing of it was written
    await store.reserve(new_task(), UNLIMITED)
    assert await store.usage(since=0) == 3


async def test_queries(store: TaskStore, clock: Clock) -> None:
    ids = []
    for user in (1, 2, 1, 3, 1):
        clock.t += 1
        ids.append((await store.reserve(new_task(user_id=user), UNLIMITED)).id)
    await store.transition(ids[1], TaskState.SUBMITTING)
    await advance(store, ids[3], TaskState.SUCCEEDED)
    await advance(store, ids[4], TaskState.DELIVERED)
    queue = await store.queue()
    assert [(t.id, pos) for t, pos in queue] == [(ids[0], 1), (ids[2], 2)]
    assert [t.id for t in await store.unfinished()] == ids[:4]
    assert [t.id for t in await store.active_for_user(1)] == [ids[0], ids[2]]
    assert [t.id for t in await store.recent_for_user(1, limit=2)] == [ids[4], ids[2]]
    assert await store.recent_for_user(1, guild_id=999) == []
    counts = (await store.usage_summary(100, since=0)).by_state
    assert counts[TaskState.QUEUED] == 2 and counts[TaskState.TIMED_OUT] == 0
    assert sum(counts.values()) == 5


async def test_tasks_are_counted_by_state_for_the_metrics(store: TaskStore) -> None:
    assert await store.count_by_state() == dict.fromkeys(TaskState, 0)
    ids = [(await store.reserve(new_task(user_id=u), UNLIMITED)).id for u in (1, 2, 3, 4)]
    await store.transition(ids[0], TaskState.SUBMITTING)
    await advance(store, ids[1], TaskState.DELIVERED)
    await store.transition(ids[2], TaskState.FAILED)
    counts = await store.count_by_state()
    assert counts[TaskState.QUEUED] == 1 and counts[TaskState.SUBMITTING] == 1
    assert counts[TaskState.DELIVERED] == 1 and counts[TaskState.FAILED] == 1
    assert sum(counts.values()) == 4 and set(counts) == set(TaskState)
    assert all(type(n) is int for n in counts.values())


async def test_usage_summary_and_retention(store: TaskStore, clock: Clock) -> None:
    start = clock.t
    a = await store.reserve(new_task(user_id=1), UNLIMITED)
    b = await store.reserve(new_task(user_id=2), UNLIMITED)
    await store.reserve(new_task(user_id=2), UNLIMITED)
    await store.reserve(new_task(user_id=9, guild_id=None), UNLIMITED)
    await advance(store, a.id, TaskState.DELIVERED)
    await store.transition(b.id, TaskState.FAILED)
    await store.refund(b.id)
    summary = await store.usage_summary(100, since=start)
    assert summary.tasks == 3 and summary.distinct_users == 2
    assert summary.by_state[TaskState.QUEUED] == 1 and summary.by_state[TaskState.FAILED] == 1
    clock.t += 10
    assert [t.id for t in await store.expired_inputs(clock.t)] == [a.id, b.id]
    await store.update(a.id, inputs_removed_at=clock.t)
    assert [t.id for t in await store.expired_inputs(clock.t + 1)] == [b.id]
    assert await store.delete_older_than(start - 1) == 0
    assert await store.delete_older_than(clock.t + 1) == 2
    assert len(await store.unfinished()) == 2


async def test_endings_are_unfinished_until_told(store: TaskStore) -> None:
    """A failure counts as done for the engine only once its notice is out; a video at once."""
    failed = await store.reserve(new_task(), UNLIMITED)
    delivered = await store.reserve(new_task(), UNLIMITED)
    await store.transition(failed.id, TaskState.FAILED)
    moved = await advance(store, delivered.id, TaskState.DELIVERED)
    assert moved.is_told
    assert [t.id for t in await store.unfinished()] == [failed.id]
    await store.update(failed.id, notified_at=5.0)
    assert await store.unfinished() == []


async def test_the_same_values_come_back_on_every_backend(store: TaskStore, clock: Clock) -> None:
    """64-bit snowflakes, times to the last bit of a double, the options' JSON as written."""
    snowflake = 1_234_567_890_123_456_789
    clock.t = 1_700_000_000.123_456_7
    options = TaskOptions(
        duration="10", mode="pro", negative_prompt="blur \u0000 ünï 🎥", cfg_scale=0.1
    )
    notes = TaskNotes(image_names=("één.png", 'a"b.png'))
    task = await store.reserve(
        new_task(
            user_id=snowflake,
            guild_id=snowflake + 1,
            channel_id=2**63 - 1,
            options=options,
            notes=notes,
            prompt="a 'quoted' ? prompt",
        ),
        UNLIMITED,
    )
    again = await store.get(task.id)
    assert again == task
    assert (task.user_id, task.guild_id, task.channel_id) == (snowflake, snowflake + 1, 2**63 - 1)
    assert task.created_at == 1_700_000_000.123_456_7 and isinstance(task.created_at, float)
    assert (task.options, task.notes, task.prompt) == (options, notes, "a 'quoted' ? prompt")
    assert isinstance(task.id, int) and task.quota_refunded is False
    moved = await store.transition(task.id, TaskState.SUBMITTING, video_bytes=2**40)
    assert moved.video_bytes == 2**40 and moved.updated_at == clock.t
    assert await store.usage(user_id=snowflake, guild_id=snowflake + 1, since=clock.t - 1) == 1


async def test_a_nul_in_text_is_kept_alike_on_every_backend(store: TaskStore) -> None:
    """PostgreSQL can't store NUL in text; a prompt (a user's) or a provider's message holding
    one must neither fail there nor come back different elsewhere: U+FFFD on every backend."""
    task = await store.reserve(new_task(prompt="cat\x00dog"), UNLIMITED)
    assert task.prompt == "cat\ufffddog"
    moved = await store.transition(task.id, TaskState.FAILED, status_message="bad\x00news")
    assert moved.status_message == "bad\ufffdnews"
    await store.set_meta("k\x00", "v\x00")
    assert await store.get_meta("k\x00") == "v\ufffd"


async def test_generation_history_lists_tasks_finished_with_a_video(
    store: TaskStore, clock: Clock
) -> None:
    """Succeeded and delivered tasks, oldest first, the newest `limit`; failures never."""

    async def run(seconds: float, end: TaskState, mode: str = "std") -> None:
        options = TaskOptions(duration="10", mode=mode)
        task = await store.reserve(new_task(options=options), UNLIMITED)
        await store.transition(task.id, TaskState.SUBMITTING)
        await store.transition(task.id, TaskState.SUBMITTED, kling_task_id=f"k-{task.id}")
        clock.t += seconds
        if end is TaskState.FAILED:
            await store.transition(task.id, TaskState.FAILED, error_code="provider_failed")
            return
        await store.transition(task.id, TaskState.SUCCEEDED, finished_at=clock.t - 1)
        if end is TaskState.DELIVERED:
            await store.transition(task.id, TaskState.DELIVERED)

    start = clock.t
    await run(100, TaskState.SUCCEEDED)
    await run(50, TaskState.FAILED)
    await run(70, TaskState.DELIVERED, mode="pro")
    await run(90, TaskState.DELIVERED)
    unfinished = await store.reserve(new_task(), UNLIMITED)
    await store.transition(unfinished.id, TaskState.SUBMITTING)
    assert start < clock.t
    history = await store.generation_history(10)
    assert [(o.mode, o.duration, round(f - s)) for o, s, f in history] == [
        ("std", "10", 99),
        ("pro", "10", 69),
        ("std", "10", 89),
    ]
    assert [round(f - s) for _, s, f in await store.generation_history(2)] == [69, 89]
    assert await store.generation_history(0) == []
