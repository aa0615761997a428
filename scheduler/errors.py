"""Errors of the scheduler.

The tree::

    SchedulerError                a schedule cannot be computed or honoured
    └── InvalidCron               a cron expression that is not strict 5-field cron;
                                  str(exc) is the readable reason, e.g.
                                  "expected 5 fields (minute hour day month weekday), got 6"

Whose fault: ``InvalidCron`` is the user's (a bad ``schedule_cron``) and its message
is meant to be shown to them as is; any other ``SchedulerError`` is ours.
"""

from __future__ import annotations

__all__ = ["InvalidCron", "SchedulerError"]


class SchedulerError(Exception):
    """Base class of every error raised by the scheduler package."""


class InvalidCron(SchedulerError):
    """A cron expression was rejected; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
