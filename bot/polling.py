"""When to ask the provider about a task again: polls placed where a finish is likely.

The rule (an optimal-inspection result): to minimise E[delay] + λ·E[polls], where the delay is
from "the provider is done" to "the bot noticed" and λ (`PollPolicy.poll_cost`) is how many
seconds of a user's wait one query is worth, poll at the rate

    n(t) = sqrt(w(t) · h(t) / (2 λ))      polls per second, between 1/max_gap and 1/min_gap,

where h(t) is the hazard of the task's kind (the chance per second that it finishes now, given
it hasn't yet; from `bot.timing`). Each poll then covers about the same expected delay: sparse
while a finish is unlikely, dense across the window where most tasks finish. Past the usual time
(the `late_quantile`, 95 %), a second of delay counts for less and less: w(t) = (q / t)²,
so polls thin out again towards `max_gap` in the long tail. The next poll is where the
integral of n from now reaches one.

Many active tasks share one query budget (`queries_per_second`, less some headroom). When
their wanted rates add up to more, λ is raised for all of them until they fit — which keeps
each task's rate proportional to sqrt(h): the delay-optimal way to share a budget, so queries
go to the tasks most likely to be finishing. If even the slowest allowed rate doesn't fit,
every task gets an equal share (gaps longer than `max_gap`: the budget wins).

With callbacks configured, the provider tells the bot when a task ends and polling is only the
safety net: one poll once the task is `callback_confidence` (99 %) likely to be done, then
further ones as the tail goes on, at most `callback_max_gap` apart.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from bot.timing import GenerationTime, GenerationTimeModel, Observation, TaskKind

_STEP = 0.25  # integrate the poll rate in steps of a quarter of the local gap
_BUDGET_REFRESH = 1.0  # seconds a computed budget share stays valid
_LAMBDA_CEILING = 1e9
#: Tasks in a row found done by a safety poll before their callback: then callbacks are lost.
CALLBACK_MISSES = 3


@dataclass(frozen=True)
class PollPolicy:
    """The planner's knobs (the engine builds it from the settings)."""

    min_gap: float = 2.0
    max_gap: float = 60.0  # POLL_MAX_INTERVAL_SECONDS
    poll_cost: float = 0.9  # λ: seconds of waiting one query is worth
    late_quantile: float = 0.95
    queries_per_second: float | None = None  # API_MAX_QUERIES_PER_SECOND
    rate_headroom: float = 1.25  # keep polls this far under the rate, so a backlog drains
    callbacks: bool = False
    callback_confidence: float = 0.99
    callback_max_gap: float = 600.0
    jitter: float = 0.02  # ± this fraction on every gap, so polls of alike tasks spread

    def __post_init__(self) -> None:
        """Refuse knobs that can't make a schedule."""
        if not 0 < self.min_gap <= self.max_gap:
            raise ValueError("need 0 < min_gap <= max_gap")
        if self.poll_cost <= 0:
            raise ValueError("poll_cost must be positive")
        if not 0 < self.late_quantile < 1 or not 0 < self.callback_confidence < 1:
            raise ValueError("quantiles must be between 0 and 1")
        if self.queries_per_second is not None and self.queries_per_second <= 0:
            raise ValueError("queries_per_second must be positive")
        if not 0 <= self.jitter < 0.5:
            raise ValueError("jitter must be in [0, 0.5)")

    @property
    def budget(self) -> float | None:
        """Polls per second all tracked tasks may share, or None for no limit."""
        if self.queries_per_second is None:
            return None
        return self.queries_per_second / max(1.0, self.rate_headroom)


@dataclass
class _Tracked:
    kind: TaskKind
    submitted_at: float
    running_at: float | None = None  # the last answer that said "still running"


@dataclass(frozen=True)
class _Share:
    """The budget's answer at one moment: the λ to use and the slowest rate allowed."""

    poll_cost: float
    min_rate: float


class PollPlanner:
    """Decides each tracked task's next poll; see the module docstring.

    The engine calls `track` when a task reaches the provider (or is resumed), `next_poll`
    after every answer that says it still runs, `finished` when it succeeded (which also
    feeds the model), and `forget` when it ends otherwise.
    """

    def __init__(
        self,
        model: GenerationTimeModel,
        policy: PollPolicy | None = None,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.model = model
        self.policy = policy or PollPolicy()
        self._uniform = uniform
        self._tasks: dict[int, _Tracked] = {}
        self._share: _Share | None = None
        self._share_at = -math.inf
        self._late: dict[GenerationTime, float] = {}
        self._callbacks_missed = 0

    def set_policy(self, policy: PollPolicy) -> None:
        """Plan with `policy` from now on (e.g. a new share of the query rate)."""
        self.policy = policy
        self._share = None  # the budget's share is worked out again with the next poll

    @property
    def callbacks_trusted(self) -> bool:
        """Whether polls are only the safety net: callbacks are configured and arrive.

        After `CALLBACK_MISSES` tasks in a row that a safety poll found done before their
        callback came, callbacks are taken to be lost (a wrong public URL, a firewall) and
        tasks are polled as without them, until a callback arrives again.
        """
        return self.policy.callbacks and self._callbacks_missed < CALLBACK_MISSES

    # --- the tasks --------------------------------------------------------------------------

    def track(self, task_id: int, kind: TaskKind, submitted_at: float) -> None:
        """Plan polls for a task that is at the provider since `submitted_at` (unix seconds)."""
        self._tasks[task_id] = _Tracked(kind, submitted_at)
        self._share = None

    def finished(
        self, task_id: int, noticed_at: float, *, callback_at: float | None = None
    ) -> Observation | None:
        """A tracked task succeeded: learn its generation time, then stop planning for it.

        `noticed_at` is when the answer said it was done; `callback_at` when its callback
        arrived, if one did (the finish is then known to the second). Without a callback the
        finish lies between the last "still running" answer and `noticed_at`: the midpoint is
        learned, unless that span is wider than the midpoint itself (a restart, a lost callback
        found by a late safety poll), which would teach the model the poll schedule instead.
        """
        tracked = self._tasks.get(task_id)
        self.forget(task_id)
        if tracked is None:
            return None
        if self.policy.callbacks:
            self._callbacks_missed = 0 if callback_at is not None else self._callbacks_missed + 1
        if callback_at is not None:
            finished_at = min(callback_at, noticed_at)
        else:
            running_at = (
                tracked.running_at if tracked.running_at is not None else tracked.submitted_at
            )
            finished_at = 0.5 * (running_at + noticed_at)
            if noticed_at - running_at > finished_at - tracked.submitted_at:
                return None
        observation = Observation.from_times(tracked.kind, tracked.submitted_at, finished_at)
        if observation is not None:
            self.model.observe(observation)
        return observation

    def forget(self, task_id: int) -> None:
        """Stop planning for a task (it failed, timed out or went back to the queue)."""
        if self._tasks.pop(task_id, None) is not None:
            self._share = None

    def tracked(self, now: float) -> list[tuple[TaskKind, float]]:
        """The kind and elapsed seconds of every tracked task (for the queue estimate)."""
        return [(t.kind, max(0.0, now - t.submitted_at)) for t in self._tasks.values()]

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks

    # --- the plan ---------------------------------------------------------------------------

    def next_poll(self, task_id: int, now: float) -> float:
        """Seconds from `now` (unix seconds, just after an answer) until the task's next poll."""
        tracked = self._tasks.get(task_id)
        policy = self.policy
        if tracked is None:  # not tracked: behave like a task of the default kind just sent
            tracked = _Tracked(TaskKind(), now)
        tracked.running_at = now
        callbacks = self.callbacks_trusted
        elapsed = max(0.0, now - tracked.submitted_at)
        distribution = self.model.distribution(tracked.kind)
        share = self._budget_share(now)
        if callbacks:
            gap = self._safety_gap(distribution, elapsed)
            if share.min_rate < 1.0 / policy.max_gap:  # over budget: an equal share at most
                gap = max(gap, 1.0 / share.min_rate)
        else:
            gap = self._gap(distribution, elapsed, share.poll_cost, share.min_rate)
        if policy.jitter:
            gap *= self._uniform(1.0 - policy.jitter, 1.0 + policy.jitter)
        longest = policy.callback_max_gap if callbacks else policy.max_gap
        longest = max(longest, 1.0 / share.min_rate)
        return min(max(gap, policy.min_gap), longest)

    def schedule(self, kind: TaskKind, until: float) -> list[float]:
        """The poll times (seconds since the submit, no jitter, no budget) a task of `kind`
        would get up to `until`: for tests, the benchmark and explanations."""
        distribution = self.model.distribution(kind)
        times: list[float] = []
        elapsed = 0.0
        while True:
            if self.callbacks_trusted:
                gap = self._safety_gap(distribution, elapsed)
            else:
                gap = self._gap(
                    distribution, elapsed, self.policy.poll_cost, 1 / self.policy.max_gap
                )
            elapsed += max(gap, self.policy.min_gap)
            if elapsed > until:
                return times
            times.append(elapsed)

    # --- inside -----------------------------------------------------------------------------

    def _late_time(self, distribution: GenerationTime) -> float:
        late = self._late.get(distribution)
        if late is None:
            if len(self._late) > 256:
                self._late.clear()
            late = self._late[distribution] = distribution.quantile(self.policy.late_quantile)
        return late

    def _want(self, distribution: GenerationTime, elapsed: float) -> float:
        """w(t) · h(t) / 2: the wanted poll rate is sqrt(this / λ)."""
        t = max(elapsed, 1e-3)
        late = self._late_time(distribution)
        weight = 1.0 if t <= late else (late / t) ** 2
        return 0.5 * weight * distribution.hazard(t)

    def _rate(
        self, distribution: GenerationTime, elapsed: float, poll_cost: float, min_rate: float
    ) -> float:
        wanted = math.sqrt(self._want(distribution, elapsed) / poll_cost)
        return min(max(wanted, min_rate), 1.0 / self.policy.min_gap)

    def _gap(
        self, distribution: GenerationTime, elapsed: float, poll_cost: float, min_rate: float
    ) -> float:
        """How long until the integral of the poll rate from `elapsed` reaches one poll."""
        at = elapsed
        covered = 0.0
        rate = self._rate(distribution, at, poll_cost, min_rate)
        longest = 1.0 / min_rate
        while at - elapsed < longest:
            step = _STEP / rate
            next_rate = self._rate(distribution, at + step, poll_cost, min_rate)
            gained = step * 0.5 * (rate + next_rate)
            if covered + gained >= 1.0:
                return at + step * (1.0 - covered) / gained - elapsed
            covered += gained
            at += step
            rate = next_rate
        return longest

    def _safety_gap(self, distribution: GenerationTime, elapsed: float) -> float:
        """With callbacks: wait until the task is very likely done, then look once."""
        confident = distribution.quantile(self.policy.callback_confidence, given_elapsed=elapsed)
        return min(max(confident - elapsed, self.policy.max_gap), self.policy.callback_max_gap)

    def _budget_share(self, now: float) -> _Share:
        """The λ and the slowest rate that keep every tracked task's polls within the budget."""
        policy = self.policy
        budget = policy.budget
        unlimited = _Share(policy.poll_cost, 1.0 / policy.max_gap)
        if budget is None or not self._tasks:
            return unlimited
        if self._share is not None and now - self._share_at < _BUDGET_REFRESH:
            return self._share
        self._share_at = now
        count = len(self._tasks)
        if count / policy.max_gap >= budget:  # even the slowest allowed rate is too much
            self._share = _Share(_LAMBDA_CEILING, budget / count)
            return self._share
        if self.callbacks_trusted:  # safety polls are few; only the equal-share floor matters
            self._share = unlimited
            return self._share
        # Each task wants sqrt(a / λ) polls per second, clipped to [lowest, highest].
        lowest, highest = 1.0 / policy.max_gap, 1.0 / policy.min_gap
        wants = [
            self._want(self.model.distribution(t.kind), now - t.submitted_at)
            for t in self._tasks.values()
        ]

        def demand(poll_cost: float) -> float:
            return sum(min(max(math.sqrt(a / poll_cost), lowest), highest) for a in wants)

        if demand(policy.poll_cost) <= budget:
            self._share = unlimited
            return self._share
        low, high = math.log(policy.poll_cost), math.log(_LAMBDA_CEILING)
        for _ in range(40):
            middle = 0.5 * (low + high)
            if demand(math.exp(middle)) > budget:
                low = middle
            else:
                high = middle
        self._share = _Share(math.exp(high), 1.0 / policy.max_gap)
        return self._share
