"""The task engine: moves every task from `queued` to its end and tells a `Notifier`.

- `machine`: `TaskEngine`, the state machine (one scheduler loop over the parts below)
- `schedule`: when each task is looked at next (a heap of due actions)
- `steps`: the engine's steps in flight, and which of them `stop` may cancel
- `submit_queue`: the tasks waiting for a slot at the provider, and their places
- `leases`: which tasks this process works, renewed; a dead process's taken over
- `polls`: when to poll each task (planned from the learned generation times), and estimates
- `request`: what is POSTed for a task
- `callbacks`: the listener for the provider's notices
- `chores`: the periodic jobs (heartbeat, retention sweep, the cap's check)
- `troubles`: operator problems told once per kind, endings asked again
- `download`: the video, fetched once into MEDIA_DIR
- `retention`: old files and rows removed
- `credit_alerts`: the monthly cap's alerts, each exactly once per month and place
- `config`, `notifier`: the engine's knobs, and what it tells the Discord side
"""

from __future__ import annotations

from bot.engine.callbacks import new_callback_token
from bot.engine.config import EngineConfig
from bot.engine.credit_alerts import CreditCapWatch
from bot.engine.machine import TaskEngine
from bot.engine.notifier import Delivered, Notifier
from bot.engine.retention import ROW_RETENTION_FLOOR_SECONDS

__all__ = [
    "ROW_RETENTION_FLOOR_SECONDS",
    "CreditCapWatch",
    "Delivered",
    "EngineConfig",
    "Notifier",
    "TaskEngine",
    "new_callback_token",
]
