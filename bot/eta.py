"""What to tell a user about when their video will be ready, from the learned generation times.

Every figure comes from `bot.timing`'s distribution of the task's kind, and says what it rests
on (`EstimateBasis`): the tasks of this kind that finished, or — before there are any — the
prior, perhaps moved by what other kinds showed. No percentage is made up: the progress bar is
the time so far against the expected total (so far + the median of what is left, given that the
task is still running), and past the usual time (90 % of tasks of the kind are done by then)
there is no bar at all, only "taking longer than usual".
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.strings import text
from bot.timing import GenerationTime, GenerationTimeModel, TaskKind

#: Past this share of tasks of its kind, a task is "taking longer than usual".
USUAL_QUANTILE = 0.9
#: Below this many seconds, "less than a minute".
UNDER_A_MINUTE = 45.0
BAR_WIDTH = 10
BAR_DONE = "▰"
BAR_TO_GO = "▱"


class EstimateBasis(StrEnum):
    """What an estimate rests on, so the text can be honest about it."""

    HISTORY = "history"  # finished tasks of this kind
    OTHER_KINDS = "other"  # none of this kind yet: the prior, moved by other kinds' history
    PRIOR = "prior"  # nothing has finished yet: the prior alone


def _basis(distribution: GenerationTime) -> EstimateBasis:
    if distribution.history:
        return EstimateBasis.HISTORY
    if distribution.other_history:
        return EstimateBasis.OTHER_KINDS
    return EstimateBasis.PRIOR


@dataclass(frozen=True)
class RunningEstimate:
    """When a task at the provider will likely be done."""

    elapsed: float  # seconds since the submit
    remaining: float | None  # the median of what is left; None once it is late
    total: float | None  # elapsed + remaining: when it is likely done, in seconds since the submit
    progress: float | None  # elapsed / (elapsed + remaining), in [0, 1); None once late
    late: bool  # past the usual time of its kind
    usual: float  # seconds by which 90 % of tasks of this kind are done
    basis: EstimateBasis
    history: int  # finished tasks of this kind the estimate rests on


@dataclass(frozen=True)
class QueueEstimate:
    """When a waiting task will likely be sent to the provider, and be done."""

    position: int
    starts_in: float  # seconds from now
    ready_in: float  # seconds from now
    basis: EstimateBasis  # what the estimate of this task's kind rests on
    history: int  # finished tasks of this task's kind


def estimate_running(model: GenerationTimeModel, kind: TaskKind, elapsed: float) -> RunningEstimate:
    """The estimate for a task of `kind` that has been at the provider for `elapsed` seconds."""
    distribution = model.distribution(kind)
    elapsed = max(0.0, elapsed)
    usual = distribution.quantile(USUAL_QUANTILE)
    late = elapsed > usual
    remaining = total = progress = None
    if not late:
        total = distribution.quantile(0.5, given_elapsed=elapsed)
        remaining = total - elapsed
        progress = elapsed / total if total > 0 else 0.0
    return RunningEstimate(
        elapsed, remaining, total, progress, late, usual, _basis(distribution), distribution.history
    )


def remaining_median(model: GenerationTimeModel, kind: TaskKind, elapsed: float) -> float:
    """The median of the time left for a task of `kind` running for `elapsed` seconds."""
    distribution = model.distribution(kind)
    elapsed = max(0.0, elapsed)
    return distribution.quantile(0.5, given_elapsed=elapsed) - elapsed


def estimate_queued(
    model: GenerationTimeModel,
    kind: TaskKind,
    *,
    ahead: Sequence[TaskKind],
    running: Sequence[tuple[TaskKind, float]],
    slots: int,
) -> QueueEstimate:
    """When a waiting task of `kind` will likely start and be done.

    `ahead` are the kinds of the tasks before it in the queue (in order), `running` the kind and
    elapsed seconds of each task at the provider, `slots` how many tasks the provider may run at
    once. Every task is taken to need its median time (the running ones: the median of what is
    left), and the queue is played forward slot by slot.
    """
    slots = max(1, slots)
    finishes = [remaining_median(model, k, elapsed) for k, elapsed in running]
    heapq.heapify(finishes)
    now = 0.0
    for waiting_kind in ahead:
        now = _next_start(finishes, slots, now)
        heapq.heappush(finishes, now + model.distribution(waiting_kind).median)
    starts_in = _next_start(finishes, slots, now)
    own = model.distribution(kind)
    return QueueEstimate(
        len(ahead) + 1, starts_in, starts_in + own.median, _basis(own), own.history
    )


def next_finish(
    model: GenerationTimeModel, running: Sequence[tuple[TaskKind, float]]
) -> float | None:
    """Seconds until the first of these running tasks is likely done (the median of the
    earliest finish), or None when there are none."""
    if not running:
        return None
    tasks = [(model.distribution(kind), max(0.0, elapsed)) for kind, elapsed in running]
    starts = [d.survival(e) for d, e in tasks]

    def all_running(after: float) -> float:
        return math.prod(
            d.survival(e + after) / s if s > 0 else 0.0
            for (d, e), s in zip(tasks, starts, strict=True)
        )

    low, high = 0.0, min(remaining_median(model, kind, elapsed) for kind, elapsed in running)
    for _ in range(50):
        middle = 0.5 * (low + high)
        if all_running(middle) > 0.5:
            low = middle
        else:
            high = middle
    return high


def _next_start(finishes: list[float], slots: int, now: float) -> float:
    """Wait (pop finishes) until fewer than `slots` tasks run; return that moment."""
    while len(finishes) >= slots:
        now = max(now, heapq.heappop(finishes))
    return now


# --- words -----------------------------------------------------------------------------------


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A text bar for a fraction in [0, 1); it is never shown full before the task is done."""
    filled = min(width - 1, max(0, math.floor(fraction * width)))
    return BAR_DONE * filled + BAR_TO_GO * (width - filled)


def minutes(seconds: float) -> int:
    """Whole minutes for "about N min" (at least 1)."""
    return max(1, round(seconds / 60.0))


def basis_text(locale: str | None, basis: EstimateBasis, history: int = 0) -> str:
    """What the estimate rests on, in words."""
    if basis is EstimateBasis.HISTORY:
        if history == 1:
            return text(locale, "eta.basis_history_one")
        return text(locale, "eta.basis_history", count=history)
    return text(locale, f"eta.basis_{basis.value}")


def running_text(locale: str | None, estimate: RunningEstimate, *, when: str | None = None) -> str:
    """The status message's estimate: a bar and the time left, or "taking longer than usual";
    then, on its own line, what the estimate rests on.

    `when`, if given, is the likely finish already rendered as a live relative time by the
    caller (Discord's timestamp markup, `RunningEstimate.total` after the submit): then the
    words stay true between edits of the message.
    """
    if estimate.late or estimate.remaining is None or estimate.progress is None:
        line = text(locale, "eta.late", minutes=minutes(estimate.usual))
    else:
        if when is not None:
            words = text(locale, "eta.ready_at", when=when)
        elif estimate.remaining < UNDER_A_MINUTE:
            words = text(locale, "eta.left_under_minute")
        else:
            words = text(locale, "eta.left", minutes=minutes(estimate.remaining))
        line = f"{progress_bar(estimate.progress)} {words}"
    return f"{line}\n{basis_text(locale, estimate.basis, estimate.history)}"


def queued_text(locale: str | None, estimate: QueueEstimate, *, when: str | None = None) -> str:
    """The estimate for a waiting task: when it likely starts, then what that rests on.

    `when`, if given, is the likely start rendered as a live relative time by the caller.
    """
    if when is not None and estimate.starts_in >= UNDER_A_MINUTE:
        line = text(locale, "eta.queued_at", when=when)
    elif estimate.starts_in < UNDER_A_MINUTE:
        line = text(locale, "eta.queued_under_minute")
    else:
        line = text(locale, "eta.queued", minutes=minutes(estimate.starts_in))
    return f"{line}\n{basis_text(locale, estimate.basis, estimate.history)}"


def next_slot_text(locale: str | None, seconds: float) -> str:
    """ "in about N min" for /quota's next free slot."""
    if seconds < UNDER_A_MINUTE:
        return text(locale, "eta.next_slot_under_minute")
    return text(locale, "eta.next_slot", minutes=minutes(seconds))
