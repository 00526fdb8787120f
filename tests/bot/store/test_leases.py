"""The process registry and the tasks' leases: one process at a time works a task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.quota import QuotaExceeded, QuotaLimits
from bot.store import SlotRefused, TaskStore
from bot.tasks import TaskState
from tests.bot.store.helpers import UNLIMITED, Clock, new_interaction, new_task
from tests.helpers import advance

LEASE = 30.0


@pytest.fixture
async def other(database_url: str, clock: Clock) -> AsyncIterator[TaskStore]:
    """A second store (a second process's) on the same database as `shared_store`."""
    async with await TaskStore.open(database_url, now=clock) as s:
        yield s


async def test_register_heartbeat_and_end_a_process(store: TaskStore, clock: Clock) -> None:
    assert await store.register_process("a", LEASE) is None
    assert await store.live_processes() == ["a"]
    assert await store.register_process("a", LEASE) == clock.t + LEASE, "a twin, or a rerun"
    clock.t += LEASE + 1
    assert await store.live_processes() == []
    assert await store.register_process("a", LEASE) is None, "the earlier run is long dead"
    await store.register_process("b", LEASE)
    clock.t += LEASE - 1
    await store.heartbeat_process("a", LEASE)
    clock.t += 2
    assert await store.live_processes() == ["a"]
    await store.end_process("a")
    clock.t += 0.001
    assert await store.live_processes() == []


async def test_claim_takes_each_unfinished_task_once(store: TaskStore, clock: Clock) -> None:
    tasks = [await store.reserve(new_task(), UNLIMITED) for _ in range(4)]
    await advance(store, tasks[3].id, TaskState.FAILED)
    await store.update(tasks[3].id, notified_at=clock.t)  # told: done
    mine = await store.claim("a", LEASE)
    assert [t.id for t in mine] == [t.id for t in tasks[:3]]
    assert await store.claim("b", LEASE) == [], "every lease is held"
    assert await store.lease_of(tasks[0].id) == ("a", clock.t + LEASE)
    assert await store.claim("a", LEASE) == [], "it has them already"
    # A restarted process of the same name takes its own tasks back at once.
    assert [t.id for t in await store.claim("a", LEASE, own=True)] == [t.id for t in tasks[:3]]
    assert await store.claim("b", LEASE, own=True) == []


async def test_claim_limit_and_order(store: TaskStore) -> None:
    tasks = [await store.reserve(new_task(), UNLIMITED) for _ in range(5)]
    assert [t.id for t in await store.claim("a", LEASE, limit=2)] == [t.id for t in tasks[:2]]
    assert [t.id for t in await store.claim("b", LEASE)] == [t.id for t in tasks[2:]]


async def test_an_expired_lease_is_taken_over(store: TaskStore, clock: Clock) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    await store.claim("a", LEASE)
    clock.t += LEASE - 1
    assert await store.claim("b", LEASE) == []
    clock.t += 2
    assert [t.id for t in await store.claim("b", LEASE)] == [task.id]
    assert await store.renew("a", LEASE) == set(), "a lost it while it was away"
    assert await store.renew("b", LEASE) == {task.id}
    assert not await store.hold(task.id, "a", LEASE)
    assert await store.hold(task.id, "b", LEASE)


async def test_renew_keeps_a_lease_alive(store: TaskStore, clock: Clock) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    await store.claim("a", LEASE)
    for _ in range(3):
        clock.t += LEASE * 0.6
        assert await store.renew("a", LEASE) == {task.id}
        assert await store.claim("b", LEASE) == []


async def test_release_frees_a_task_at_once(store: TaskStore) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    await store.claim("a", LEASE)
    await store.release(task.id, "b")  # not b's to release
    assert await store.claim("b", LEASE) == []
    await store.release(task.id, "a")
    assert [t.id for t in await store.claim("b", LEASE)] == [task.id]


async def test_end_process_frees_its_leases(store: TaskStore) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    await store.register_process("a", LEASE)
    await store.claim("a", LEASE)
    await store.end_process("a")
    assert [t.id for t in await store.claim("b", LEASE)] == [task.id]


async def test_claim_leaves_tasks_in_their_intake(store: TaskStore) -> None:
    record = await store.open_interaction(new_interaction())
    task = await store.reserve(new_task(), UNLIMITED, interaction=record.id)
    assert await store.claim("a", LEASE) == []
    await store.hand_over(record.id, task.id, status_message_id=77)
    assert [t.id for t in await store.claim("a", LEASE)] == [task.id]


async def test_hold_takes_a_free_task_and_refuses_a_held_one(store: TaskStore) -> None:
    task = await store.reserve(new_task(), UNLIMITED)
    assert await store.hold(task.id, "a", LEASE)
    assert not await store.hold(task.id, "b", LEASE)
    assert await store.hold(task.id, "a", LEASE)
    assert not await store.hold(12345, "a", LEASE)


async def test_start_submit_counts_every_process_at_the_provider(
    store: TaskStore, clock: Clock
) -> None:
    tasks = [await store.reserve(new_task(), UNLIMITED) for _ in range(3)]
    first = await store.start_submit(tasks[0].id, "a", LEASE, 2, attempts=1, submit_posts=1)
    assert not isinstance(first, SlotRefused)
    assert first.state is TaskState.SUBMITTING and first.attempts == first.submit_posts == 1
    assert await store.lease_of(first.id) == ("a", clock.t + LEASE)
    assert await store.start_submit(tasks[0].id, "a", LEASE, 2) is SlotRefused.NOT_MINE
    assert await store.hold(tasks[1].id, "a", LEASE)
    assert await store.start_submit(tasks[1].id, "b", LEASE, 2) is SlotRefused.NOT_MINE
    second = await store.start_submit(tasks[2].id, "b", LEASE, 2)
    assert not isinstance(second, SlotRefused)
    assert await store.at_provider_count() == 2
    assert await store.start_submit(tasks[1].id, "a", LEASE, 2) is SlotRefused.FULL
    await advance(store, tasks[0].id, TaskState.SUCCEEDED)
    assert not isinstance(await store.start_submit(tasks[1].id, "a", LEASE, 2), SlotRefused)
    with pytest.raises(ValueError, match="only attempts"):
        await store.start_submit(tasks[1].id, "a", LEASE, 2, state="queued")


async def test_two_processes_claim_at_once_never_share_a_task(
    shared_store: TaskStore, other: TaskStore
) -> None:
    ids = {(await shared_store.reserve(new_task(), UNLIMITED)).id for _ in range(40)}
    got: dict[str, list[int]] = {"a": [], "b": []}

    async def claimer(store: TaskStore, name: str) -> None:
        for _ in range(10):
            got[name] += [t.id for t in await store.claim(name, LEASE, limit=3)]
            await asyncio.sleep(0)

    await asyncio.gather(claimer(shared_store, "a"), claimer(other, "b"))
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == sorted(ids)


async def test_the_last_slot_is_taken_once_across_processes(
    shared_store: TaskStore, other: TaskStore
) -> None:
    tasks = [await shared_store.reserve(new_task(), UNLIMITED) for _ in range(10)]
    results = await asyncio.gather(
        *(
            (shared_store if i % 2 else other).start_submit(t.id, "ab"[i % 2], LEASE, 3)
            for i, t in enumerate(tasks)
        )
    )
    started = [r for r in results if not isinstance(r, SlotRefused)]
    assert len(started) == 3
    assert results.count(SlotRefused.FULL) == 7
    assert await other.at_provider_count() == 3


async def test_reservations_split_over_two_processes_stop_exactly_at_the_limit(
    shared_store: TaskStore, other: TaskStore
) -> None:
    limits = QuotaLimits(daily_per_guild=37, daily_global=60)

    async def one(store: TaskStore, user: int) -> bool:
        try:
            await store.reserve(new_task(user_id=user), limits)
        except QuotaExceeded:
            return False
        return True

    made = await asyncio.gather(*(one(shared_store if i % 2 else other, i) for i in range(100)))
    assert sum(made) == 37
    summary = await other.usage_summary(100, since=0)
    assert summary.tasks == 37


async def test_start_up_answers_only_what_no_live_process_owns(
    store: TaskStore, clock: Clock
) -> None:
    old = await store.open_interaction(new_interaction(1))  # from before owners
    mine = await store.open_interaction(new_interaction(2, owner="a"))
    theirs = await store.open_interaction(new_interaction(3, owner="b"))
    dead = await store.open_interaction(new_interaction(4, owner="c"))
    assert mine.owner == "a" and old.owner is None
    await store.register_process("a", LEASE)
    await store.register_process("b", LEASE)
    await store.register_process("c", LEASE)
    await store.end_process("c")
    clock.t += 1
    assert [r.id for r in await store.left_open("a")] == [old.id, mine.id, dead.id]
    clock.t += LEASE
    assert [r.id for r in await store.left_open("a")] == [old.id, mine.id, theirs.id, dead.id]


async def test_held_by_others(store: TaskStore) -> None:
    tasks = [await store.reserve(new_task(), UNLIMITED) for _ in range(3)]
    await store.hold(tasks[0].id, "a", LEASE)
    await store.hold(tasks[1].id, "b", LEASE)
    ids = [t.id for t in tasks]
    assert await store.held_by_others(ids, "a") == {tasks[1].id}
    assert await store.held_by_others(ids, "b") == {tasks[0].id}
    assert await store.held_by_others([], "a") == set()
    assert await store.held_by_others(list(range(10_000, 11_200)), "a") == set()
