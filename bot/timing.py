"""How long a generation takes: a distribution per kind of task, learned from finished tasks.

A *kind* (`TaskKind`) is the model, mode and duration: Kling's times cluster by them. For each
kind the model keeps a distribution of the time from submit to finish, on the log scale:

- **the body** is a log-normal whose centre is the weighted median of the log-times and whose
  spread is the weighted MAD (×1.4826), so a few stuck or oddly fast tasks move neither;
- **the tail** is a wide log-normal (twice the body's median, spread `TAIL_SIGMA`) that carries
  the share of tasks that were much slower than the body (at least `TAIL_PRIOR` before any);
  it keeps the chance of a very late finish honest and makes the poll planner back off there;
- **weights** halve every `HALF_LIFE` tasks back (the newest counts 1, the 30th-newest ½), so a
  provider that gets faster or slower is followed within a few dozen tasks;
- **the prior** (no history): a median of 2 min for std 5 s, ×1.75 for pro and ×1.6 for 10 s,
  with a wide spread (σ = 0.5 on the log scale: half the tasks within ×/÷1.4 of the median).
  The first observations are shrunk towards it: the centre counts the prior as one task, the
  spread as one task on the log scale, and a provider-wide factor learned from *every* kind
  moves the prior of kinds not seen yet (if std 5 s runs 2× faster than assumed, so probably
  does pro 10 s).

Pure and synchronous: it imports nothing from the rest of the bot, so the engine, the status
message and the benchmark all use the same numbers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The prior median of std, 5 s (seconds from submit to finish).
PRIOR_BASE_SECONDS = 120.0
#: How much longer each option makes a task in the prior.
PRIOR_MODE_FACTOR = {"std": 1.0, "pro": 1.75}
PRIOR_DURATION_FACTOR = {"5": 1.0, "10": 1.6}
#: The prior spread of the body on the log scale (σ of ln seconds).
PRIOR_SIGMA = 0.5
#: How many tasks the prior is worth for the centre and for the spread.
PRIOR_CENTRE_WEIGHT = 1.0
PRIOR_SPREAD_WEIGHT = 1.0
#: The provider-wide factor is shrunk towards 1 as if this many tasks had shown no change.
SHIFT_PRIOR_WEIGHT = 2.0
#: The tail: its share before any history and how many tasks that share is worth.
TAIL_PRIOR = 0.05
TAIL_PRIOR_WEIGHT = 20.0
TAIL_MIN = 0.01
TAIL_OFFSET = math.log(2.0)  # the tail's median is twice the body's
TAIL_SIGMA = 0.8
#: A task is counted in the tail when it is this much slower than the body (log scale)...
OUTLIER_SIGMAS = 3.0
OUTLIER_MIN_LOG = math.log(1.25)  # ...and at least 25 % slower.
#: The narrowest spread the body is given, however alike the tasks (about ±3 %).
SIGMA_FLOOR = 0.03
#: Weights halve every this many tasks back (per kind; across kinds for the provider factor).
HALF_LIFE = 30.0
#: How many finished tasks are kept (the store should hand over at most this many).
MAX_HISTORY = 600
#: Times outside this range are not generation times (clock trouble, a task resumed after days).
MIN_SECONDS = 1.0
MAX_SECONDS = 86_400.0

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class TaskKind:
    """What a task's generation time depends on: the model, the mode and the video's length."""

    model: str = "kling-v1-6"
    mode: str = "std"
    duration: str = "5"

    @classmethod
    def of(cls, model: str, options: Mapping[str, Any]) -> TaskKind:
        """The kind of a task from its model and stored options (absent options: the defaults)."""
        return cls(
            model=model or "kling-v1-6",
            mode=str(options.get("mode") or "std"),
            duration=str(options.get("duration") or "5"),
        )

    def prior_median(self) -> float:
        """The median generation time assumed before any task of any kind has finished."""
        mode = PRIOR_MODE_FACTOR.get(self.mode, max(PRIOR_MODE_FACTOR.values()))
        duration = PRIOR_DURATION_FACTOR.get(self.duration)
        if duration is None:  # a length the prior doesn't know: scale with the seconds
            try:
                duration = max(1.0, float(self.duration) / 5.0)
            except ValueError:
                duration = max(PRIOR_DURATION_FACTOR.values())
        return PRIOR_BASE_SECONDS * mode * duration


@dataclass(frozen=True)
class Observation:
    """One finished task: its kind and how long it took from submit to finish."""

    kind: TaskKind
    seconds: float

    @classmethod
    def from_times(
        cls, kind: TaskKind, submitted_at: float | None, finished_at: float | None
    ) -> Observation | None:
        """The observation of a task row, or None when its times can't be a generation time."""
        if submitted_at is None or finished_at is None:
            return None
        seconds = finished_at - submitted_at
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:  # also rejects NaN
            return None
        return cls(kind, seconds)


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / _SQRT2)


def _normal_pdf(z: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * z * z)


@dataclass(frozen=True)
class GenerationTime:
    """The distribution of one kind's generation time: a log-normal body and a wide tail.

    `history` is how many finished tasks of this kind it rests on (0: the prior, perhaps moved
    by what other kinds showed: see `other_history`).
    """

    body_mu: float  # ln seconds
    body_sigma: float
    tail_share: float
    history: int = 0
    other_history: int = 0

    @property
    def tail_mu(self) -> float:
        """The centre of the tail component (ln seconds)."""
        return self.body_mu + TAIL_OFFSET

    @property
    def median(self) -> float:
        """The median of the whole distribution, in seconds."""
        return self.quantile(0.5)

    def survival(self, seconds: float) -> float:
        """P(not finished after `seconds`)."""
        if seconds <= 0:
            return 1.0
        x = math.log(seconds)
        body = _normal_sf((x - self.body_mu) / self.body_sigma)
        tail = _normal_sf((x - self.tail_mu) / TAIL_SIGMA)
        return (1.0 - self.tail_share) * body + self.tail_share * tail

    def cdf(self, seconds: float) -> float:
        """P(finished within `seconds`)."""
        return 1.0 - self.survival(seconds)

    def density(self, seconds: float) -> float:
        """The probability density of finishing at `seconds` (per second)."""
        if seconds <= 0:
            return 0.0
        x = math.log(seconds)
        body = _normal_pdf((x - self.body_mu) / self.body_sigma) / self.body_sigma
        tail = _normal_pdf((x - self.tail_mu) / TAIL_SIGMA) / TAIL_SIGMA
        return ((1.0 - self.tail_share) * body + self.tail_share * tail) / seconds

    def hazard(self, seconds: float) -> float:
        """The finishing rate at `seconds` given not finished yet (per second)."""
        if seconds <= 0:
            return 0.0
        survival = self.survival(seconds)
        if survival > 1e-12:
            return self.density(seconds) / survival
        # Far out, only the tail is left; its hazard tends to z / (σ t) (Mills' ratio).
        z = (math.log(seconds) - self.tail_mu) / TAIL_SIGMA
        return max(z, 1.0) / (TAIL_SIGMA * seconds)

    def quantile(self, p: float, *, given_elapsed: float = 0.0) -> float:
        """The time by which a fraction `p` of tasks has finished (of those still running at
        `given_elapsed`), in seconds since the submit."""
        if not 0.0 < p < 1.0:
            raise ValueError("p must be between 0 and 1")
        start = self.survival(given_elapsed)
        target = start * (1.0 - p)
        low = max(given_elapsed, MIN_SECONDS * 0.01)
        high = max(low * 2.0, math.exp(self.tail_mu + 9.0 * TAIL_SIGMA))
        if self.survival(low) <= target:
            return low
        log_low, log_high = math.log(low), math.log(high)
        for _ in range(60):  # bisection on the log scale: well under a millisecond
            middle = 0.5 * (log_low + log_high)
            if self.survival(math.exp(middle)) > target:
                log_low = middle
            else:
                log_high = middle
        return math.exp(0.5 * (log_low + log_high))


def prior_distribution(kind: TaskKind) -> GenerationTime:
    """The distribution assumed for `kind` before anything has finished."""
    return GenerationTime(math.log(kind.prior_median()), PRIOR_SIGMA, TAIL_PRIOR)


class GenerationTimeModel:
    """Learns `GenerationTime` per kind from finished tasks; see the module docstring.

    Build it from the store's last finished tasks (`from_observations`) at start, then
    `observe` each task that finishes. `distribution(kind)` is cached until the next change.
    """

    def __init__(self, *, half_life: float = HALF_LIFE, max_history: int = MAX_HISTORY) -> None:
        if half_life <= 0 or max_history < 1:
            raise ValueError("half_life must be positive and max_history at least 1")
        self._decay = 0.5 ** (1.0 / half_life)
        self._history: deque[tuple[TaskKind, float]] = deque(maxlen=max_history)
        self._cache: dict[TaskKind, GenerationTime] = {}
        self._shift: tuple[float, int] | None = None

    @classmethod
    def from_observations(
        cls,
        observations: Iterable[Observation | None],
        *,
        half_life: float = HALF_LIFE,
        max_history: int = MAX_HISTORY,
    ) -> GenerationTimeModel:
        """A model fed with `observations`, oldest first (None entries are skipped)."""
        model = cls(half_life=half_life, max_history=max_history)
        for observation in observations:
            if observation is not None:
                model.observe(observation)
        return model

    def observe(self, observation: Observation) -> None:
        """Learn from one more finished task (the newest)."""
        if not MIN_SECONDS <= observation.seconds <= MAX_SECONDS:
            return
        self._history.append((observation.kind, math.log(observation.seconds)))
        self._cache.clear()
        self._shift = None

    def count(self, kind: TaskKind | None = None) -> int:
        """How many finished tasks (of `kind`, or of every kind) the model remembers."""
        if kind is None:
            return len(self._history)
        return sum(1 for seen, _ in self._history if seen == kind)

    def distribution(self, kind: TaskKind) -> GenerationTime:
        """The current distribution of `kind`'s generation time."""
        cached = self._cache.get(kind)
        if cached is None:
            cached = self._cache[kind] = self._fit(kind)
        return cached

    # --- fitting ---------------------------------------------------------------------------

    def _provider_shift(self) -> tuple[float, int]:
        """How far (log scale) every kind runs from its prior, from all history; and its size."""
        if self._shift is None:
            residuals = [
                (x - math.log(kind.prior_median()), self._decay**age)
                for age, (kind, x) in enumerate(reversed(self._history))
            ]
            if not residuals:
                self._shift = (0.0, 0)
            else:
                weight = _effective_count([w for _, w in residuals])
                centre = _weighted_median(residuals)
                self._shift = (centre * weight / (weight + SHIFT_PRIOR_WEIGHT), len(residuals))
        return self._shift

    def _fit(self, kind: TaskKind) -> GenerationTime:
        shift, seen_anywhere = self._provider_shift()
        prior_mu = math.log(kind.prior_median()) + shift
        own = [x for seen, x in reversed(self._history) if seen == kind]  # newest first
        if not own:
            return GenerationTime(prior_mu, PRIOR_SIGMA, TAIL_PRIOR, 0, seen_anywhere)
        weighted = [(x, self._decay**age) for age, x in enumerate(own)]
        weights = [w for _, w in weighted]
        n = _effective_count(weights)
        centre = _weighted_median(weighted)
        mu = (PRIOR_CENTRE_WEIGHT * prior_mu + n * centre) / (PRIOR_CENTRE_WEIGHT + n)
        # The spread: weighted MAD, shrunk towards the prior on the log scale. A single task
        # says nothing about the spread, so the data count as n − 1 there.
        spread = max(
            SIGMA_FLOOR,
            _MAD_TO_SIGMA * _weighted_median([(abs(x - centre), w) for x, w in weighted]),
        )
        spread_weight = max(0.0, n - 1.0)
        log_sigma = (
            PRIOR_SPREAD_WEIGHT * math.log(PRIOR_SIGMA) + spread_weight * math.log(spread)
        ) / (PRIOR_SPREAD_WEIGHT + spread_weight)
        # What we don't know about the centre widens what we expect of the next task.
        sigma = max(
            SIGMA_FLOOR, math.exp(log_sigma) * math.sqrt(1.0 + 1.0 / (PRIOR_CENTRE_WEIGHT + n))
        )
        limit = centre + max(OUTLIER_SIGMAS * spread, OUTLIER_MIN_LOG)
        slow = sum(w for x, w in weighted if x > limit) * n / sum(weights)
        tail = max(TAIL_MIN, (TAIL_PRIOR * TAIL_PRIOR_WEIGHT + slow) / (TAIL_PRIOR_WEIGHT + n))
        return GenerationTime(mu, sigma, tail, len(own), seen_anywhere - len(own))


def _effective_count(weights: list[float]) -> float:
    """Kish's effective sample size of weighted data."""
    total = sum(weights)
    squares = sum(w * w for w in weights)
    return total * total / squares if squares > 0 else 0.0


def _weighted_median(values: list[tuple[float, float]]) -> float:
    """The weighted median of (value, weight) pairs (midpoint when it falls between two)."""
    ordered = sorted(values)
    half = sum(w for _, w in ordered) / 2.0
    running = 0.0
    for index, (value, weight) in enumerate(ordered):
        running += weight
        if running > half + 1e-12:
            return value
        if abs(running - half) <= 1e-12 and index + 1 < len(ordered):
            return 0.5 * (value + ordered[index + 1][0])
    return ordered[-1][0]
