"""The record of acknowledged interactions: recorded once, linked to its task, closed."""

from __future__ import annotations

import pytest

from bot.store import (
    IntakeStage,
    StoreError,
    TaskStore,
)
from bot.tasks import (
    TaskState,
)
from tests.bot.store.helpers import (
    UNLIMITED,
    new_interaction,
    new_task,
)


async def test_an_interaction_is_recorded_once_and_its_token_never_printed(
    store: TaskStore,
) -> None:
    first = await store.open_interaction(new_interaction())
    again = await store.open_interaction(new_interaction(payload={"other": True}))
    assert again == first and first.stage is IntakeStage.RECEIVED and first.task_id is None
    assert first.payload == {"request": {"prompt": "p"}}
    assert "secret-interaction-token" not in repr(first)
    assert [i.id for i in await store.open_interactions()] == [first.id]


async def test_a_reservation_links_its_interaction_and_the_engine_waits_for_the_hand_over(
    store: TaskStore,
) -> None:
    entry = await store.open_interaction(new_interaction())
    task = await store.reserve(new_task(), UNLIMITED, interaction=entry.id)
    [reserved] = await store.open_interactions()
    assert reserved.stage is IntakeStage.RESERVED
    assert reserved.task_id == task.id
    assert await store.unfinished() == [], "the intake owns its task until the hand-over"
    with pytest.raises(StoreError):  # one request never reserves twice
        await store.reserve(new_task(), UNLIMITED, interaction=entry.id)
    summary = await store.usage_summary(100, since=0)
    assert summary.by_state == {**dict.fromkeys(TaskState, 0), TaskState.QUEUED: 1}
    started = await store.hand_over(entry.id, task.id, status_message_id=77, thread_id=77)
    assert (started.status_message_id, started.thread_id) == (77, 77)
    [moved] = await store.open_interactions()
    assert moved.id == entry.id and moved.stage is IntakeStage.STARTED
    assert [t.id for t in await store.unfinished()] == [task.id]
    with pytest.raises(StoreError):
        await store.hand_over(entry.id, task.id, status_message_id=78)
    await store.close_interaction(entry.id)
    assert await store.open_interactions() == []
    after = await store.get(task.id)
    assert after is not None and not after.is_told, "the engine still has to tell it"


async def test_a_task_failed_in_its_intake_is_told_by_the_intakes_answer(
    store: TaskStore,
) -> None:
    entry = await store.open_interaction(new_interaction())
    task = await store.reserve(new_task(), UNLIMITED, interaction=entry.id)
    await store.transition(task.id, TaskState.FAILED, error_code="not_submitted")
    assert await store.unfinished() == []
    await store.close_interaction(entry.id)
    told = await store.get(task.id)
    assert told is not None and told.is_told
    assert await store.unfinished() == []
