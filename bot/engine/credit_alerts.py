"""The monthly cap's alerts: when the bot's spend this calendar month (UTC) reaches 80 % of
CREDITS_MONTHLY_GLOBAL, and when not even the cheapest video fits any more (100 %), every
server's log channel is told, and the process log gets one WARNING line; each threshold exactly
once per month and place, whatever crashes in between.

The question is asked from the month's total (`TaskStore.month_spent`), never from one
reservation, so it is the same question after a restart. Each alert is claimed in the store
before it is posted (`started_at`) and completed after (`message_id`): a claim a crash left
without its message id is looked for in its channel before it is posted again. When several
thresholds are reached at once (a jump past 80 % straight to the end), only the highest is
posted; the others are recorded as left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from bot.credits import CreditAlert, month_key, monthly_alert_text, monthly_alerts_due
from bot.pricing import PriceTable
from bot.store import TaskStore

log = logging.getLogger(__name__)

#: The channel id of the process log, which every alert also goes to.
PROCESS_LOG = 0
#: How often the month's spend is looked at when nothing nudged the watch (seconds).
CHECK_SECONDS = 60.0


class AlertPoster(Protocol):
    """Posts the monthly cap's alerts in Discord (the Discord side implements it)."""

    async def post_credit_alert(self, alert: CreditAlert, *, look_first: bool) -> int:
        """Post `alert` in its channel, first looking for an earlier post of it when
        `look_first` (a crash may have hidden one); return the message's id, or 0 when the
        channel doesn't take it (it is not tried again)."""
        ...


def _utc_date(unix: float, style: str) -> str:
    """A moment for the process log: its UTC date."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d")


class CreditCapWatch:
    """Checks the month's spend against the cap and announces each threshold once."""

    def __init__(
        self,
        store: TaskStore,
        *,
        cap: int | None,
        prices: PriceTable,
        poster: AlertPoster | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`cap` in cents of a credit (None: no cap, nothing to watch)."""
        self.store = store
        self.cap = cap
        self.prices = prices
        self.poster = poster
        self._clock = clock
        self._nudged = True  # look once at start: a restart finishes what a crash left
        self._running = False
        self._last_check = float("-inf")

    def nudge(self) -> None:
        """The spend may have changed (a task was reserved): look at the next turn."""
        self._nudged = True

    def wants_check(self, monotonic_now: float) -> bool:
        """Whether the engine's loop should run `run_check` now (never two at once)."""
        if not self.cap or self._running:
            return False
        return self._nudged or monotonic_now - self._last_check >= CHECK_SECONDS

    async def run_check(self) -> None:
        """`check`, as the engine runs it: one at a time, an error logged, never raised."""
        self._running, self._nudged = True, False
        self._last_check = time.monotonic()
        try:
            await self.check()
        except Exception:
            log.exception("Checking the month's spend against CREDITS_MONTHLY_GLOBAL failed")
        finally:
            self._running = False

    async def check(self) -> list[CreditAlert]:
        """Claim and post what is due (and finish what a crash left); returns what went out."""
        if not self.cap:
            return []
        now = self._clock()
        month = month_key(now)
        spent = await self.store.month_spent()
        reached = monthly_alerts_due(spent, self.cap, self.prices.cheapest)
        claimed = await self.store.credit_alerts(now)
        known = {(alert.percent, alert.channel_id) for alert in claimed}
        places: list[tuple[int | None, int]] = [(None, PROCESS_LOG)]
        if self.poster is not None:
            places += [(g, c) for g, c in await self.store.log_channels()]
        fresh: list[CreditAlert] = []
        for guild_id, channel_id in places:
            for percent in reached:
                if (percent, channel_id) in known:
                    continue
                alert = CreditAlert(
                    month, percent, channel_id, guild_id, spent, self.cap, started_at=now
                )
                if await self.store.claim_credit_alert(alert):
                    fresh.append(alert)
        out: list[CreditAlert] = []
        pending = [a for a in claimed if a.message_id is None] + fresh
        for alert in pending:
            if any(a.channel_id == alert.channel_id and a.percent > alert.percent for a in pending):
                await self.store.complete_credit_alert(alert, 0)  # the higher one says it all
                continue
            message_id = await self._post(alert, look_first=alert not in fresh)
            if message_id is not None:
                await self.store.complete_credit_alert(alert, message_id)
                out.append(alert)
        return out

    async def _post(self, alert: CreditAlert, *, look_first: bool) -> int | None:
        """Post one alert: in the process log, or through the poster; 0 when refused, None
        when it can't be said now (the next check tries again, looking first)."""
        if alert.channel_id == PROCESS_LOG:
            line = monthly_alert_text(
                "en",
                alert.percent,
                spent=alert.spent,
                cap=alert.cap,
                now=alert.started_at,
                table=self.prices,
                when=_utc_date,
            )
            log.warning("%s Hint: raise CREDITS_MONTHLY_GLOBAL to allow more.", line)
            return 0
        assert self.poster is not None
        try:
            return await self.poster.post_credit_alert(alert, look_first=look_first)
        except Exception:
            log.warning(
                "The monthly cap's %d %% alert couldn't be posted in channel %d now; "
                "it is tried again at the next check",
                alert.percent,
                alert.channel_id,
                exc_info=True,
            )
            return None
