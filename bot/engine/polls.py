"""The engine's polls and estimates, planned from the learned generation times.

Adapts the pure `bot.polling.PollPlanner` (and `bot.timing`'s model under it) to the engine:

- a task's kind is the engine's model, the task's mode and its duration (`TaskKind`);
- at start the model learns from the store's last finished tasks (`load`), then from every
  task that succeeds (`finished`, which also says when the provider most likely finished:
  the callback's time, or the middle of the last gap between polls — stored as the task's
  `finished_at`, so the next start learns the same figure);
- the query budget is the client's rate limiter's rate; with callbacks configured the planner
  is in its callback mode (polls are only the safety net) and a callback's arrival is noted
  (`called_back`);
- `time_scale` is how many model seconds one real second stands for: 1 in the bot, more in the
  benchmark, which speeds the whole world up. Everything here takes and returns real seconds.

The same model gives the estimates the status message and /quota show (`running`, `queued`,
`next_free`), so what the user reads and when the bot looks agree.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from bot.engine.config import EngineConfig
from bot.eta import QueueEstimate, RunningEstimate, estimate_queued, estimate_running, next_finish
from bot.kling.client import KlingClient
from bot.polling import PollPlanner, PollPolicy
from bot.store import TaskStore
from bot.tasks import Task, TaskOptions
from bot.timing import MAX_HISTORY, GenerationTimeModel, Observation, TaskKind


class EnginePolls:
    """When to poll each task at the provider, and what to expect of it; see the module."""

    def __init__(
        self,
        config: EngineConfig,
        client: KlingClient,
        *,
        clock: Callable[[], float] = time.time,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.config = config
        self.scale = config.time_scale
        self._limiter = client.limiter
        self.rate = self._limiter.rate if self._limiter is not None else None
        self.policy = PollPolicy(
            min_gap=config.poll_interval * self.scale,
            max_gap=max(config.poll_max_interval, config.poll_interval) * self.scale,
            queries_per_second=None if self.rate is None else self.rate / self.scale,
            callbacks=config.callbacks,
        )
        self.model = GenerationTimeModel()
        self.planner = PollPlanner(self.model, self.policy, uniform=uniform)
        self._clock = clock
        self._uniform = uniform
        self._callbacks: dict[int, float] = {}

    # --- history ---------------------------------------------------------------------------

    async def load(self, store: TaskStore) -> int:
        """Learn from the store's last finished tasks; return how many were usable."""
        learned = 0
        for options, submitted_at, finished_at in await store.generation_history(MAX_HISTORY):
            observation = Observation.from_times(
                self.kind_of(options), submitted_at * self.scale, finished_at * self.scale
            )
            if observation is not None:
                self.model.observe(observation)
                learned += 1
        return learned

    def kind_of(self, options: TaskOptions) -> TaskKind:
        """The kind of a task with these options, sent to the engine's model."""
        return TaskKind.of(self.config.model, options.to_json())

    # --- the planner ----------------------------------------------------------------------

    def track(self, task: Task) -> None:
        """The task is at the provider (since its `submitted_at`): plan its polls."""
        submitted = task.submitted_at if task.submitted_at is not None else self._clock()
        self.planner.track(task.id, self.kind_of(task.options), submitted * self.scale)

    def ensure(self, task: Task) -> None:
        """Plan the task's polls unless they are planned already."""
        if task.id not in self.planner:
            self.track(task)

    def next(self, task_id: int) -> float:
        """Seconds until the task's next poll (just after an answer that says it still runs)."""
        self._follow_rate()
        return self.planner.next_poll(task_id, self._clock() * self.scale) / self.scale

    def first(self) -> float:
        """A random first delay for a task picked up after a restart (no stampede)."""
        floor = 0.0 if self.rate is None else len(self.planner) / self.rate * 1.25
        return self._uniform(0.0, max(self.config.poll_interval, floor))

    def without_callbacks(self) -> None:
        """The callback listener couldn't start: polls are the only way to see an ending."""
        self._set_policy(replace(self.policy, callbacks=False))

    def _follow_rate(self) -> None:
        """Plan within the query rate the limiter has now: with several processes, each has
        its share of it (the lease keeper sets it as processes come and go)."""
        if self._limiter is not None and self._limiter.rate != self.rate:
            self.rate = self._limiter.rate
            self._set_policy(replace(self.policy, queries_per_second=self.rate / self.scale))

    def _set_policy(self, policy: PollPolicy) -> None:
        self.policy = policy
        self.planner.set_policy(policy)

    def called_back(self, task_id: int) -> None:
        """A callback for the task arrived now (the finish is then known to the second)."""
        self._callbacks.setdefault(task_id, self._clock())

    def finished(self, task: Task) -> float | None:
        """The task succeeded: learn from it; return when the provider most likely finished
        (unix seconds), or None when that isn't known well enough to learn from."""
        callback = self._callbacks.pop(task.id, None)
        observation = self.planner.finished(
            task.id,
            self._clock() * self.scale,
            callback_at=None if callback is None else callback * self.scale,
        )
        if observation is None or task.submitted_at is None:
            return None
        return task.submitted_at + observation.seconds / self.scale

    def forget(self, task_id: int) -> None:
        """The task is no longer polled (it ended, or went back to the queue)."""
        self.planner.forget(task_id)
        self._callbacks.pop(task_id, None)

    # --- estimates (model seconds inside, shown as minutes) ---------------------------------

    def running(self, task: Task) -> tuple[RunningEstimate, float | None]:
        """The estimate of a task at the provider, and when it is likely done (unix seconds)."""
        submitted = task.submitted_at if task.submitted_at is not None else self._clock()
        elapsed = (self._clock() - submitted) * self.scale
        estimate = estimate_running(self.model, self.kind_of(task.options), elapsed)
        ready = None if estimate.total is None else submitted + estimate.total / self.scale
        return estimate, ready

    def queued(self, task: Task, position: int) -> tuple[QueueEstimate, float]:
        """The estimate of a waiting task at `position` (those ahead taken to be of its
        kind), and when it likely starts (unix seconds)."""
        kind = self.kind_of(task.options)
        estimate = estimate_queued(
            self.model,
            kind,
            ahead=[kind] * max(0, position - 1),
            running=self.planner.tracked(self._clock() * self.scale),
            slots=self.config.max_concurrent,
        )
        return estimate, self._clock() + estimate.starts_in / self.scale

    def next_free(self, tasks: Sequence[Task]) -> float | None:
        """When the first of these tasks (queued or running) likely ends (unix seconds)."""
        now = self._clock()
        running = [
            (self.kind_of(t.options), (now - t.submitted_at) * self.scale)
            for t in tasks
            if t.submitted_at is not None
        ]
        seconds = next_finish(self.model, running)
        if seconds is None:
            if not tasks:
                return None
            first = min(tasks, key=lambda t: t.id)
            _, starts = self.queued(first, 1)
            seconds = (starts - now) * self.scale + self.model.distribution(
                self.kind_of(first.options)
            ).median
        return now + seconds / self.scale
