"""When agents run: cron maths, the scheduler service, and their errors.

- ``scheduler.cron``: pure 5-field cron validation and fire times (no asyncio).
- ``scheduler.service``: ``SchedulerService``, APScheduler jobs per enabled agent plus
  the reconnect catch-up; imported on its own (it pulls in APScheduler).
- ``scheduler.errors``: ``SchedulerError`` and ``InvalidCron``.

Depends on ``protocol`` at most; never on ``daemon`` or ``agents``.
"""

from __future__ import annotations

from .cron import cron_error, is_overdue, local_tz, next_fire, prev_fire, validate_cron
from .errors import InvalidCron, SchedulerError

__all__ = [
    "InvalidCron",
    "SchedulerError",
    "cron_error",
    "is_overdue",
    "local_tz",
    "next_fire",
    "prev_fire",
    "validate_cron",
]
