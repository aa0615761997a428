"""Dates between the model and the store.

Rules:

- The model speaks ISO 8601; the store speaks Unix milliseconds.
- A date without a time is local midnight in ``tz``; a date-time without an offset
  is local time in ``tz``; an explicit offset wins.
- Back to the model: ``2025-03-14`` for local midnight, else ``2025-03-14T17:00``
  (seconds only when not 0).
- Years outside 1900..2200 are refused (a model's typo, not a plan).

``tz`` is always given: the daemon passes the user's zone (``scheduler.cron.local_tz``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo

__all__ = ["check_iso", "iso_from_ms", "ms_from_iso"]


def _parse_iso(text: str) -> date | datetime:
    value = text.strip()
    if len(value) <= 10 and "T" not in value:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("z", "Z"))


def ms_from_iso(text: str, tz: tzinfo) -> int:
    """Unix ms of an ISO 8601 date (local midnight in ``tz``) or date-time (local in ``tz``
    unless it has an offset)."""
    parsed = _parse_iso(text)
    if not isinstance(parsed, datetime):
        parsed = datetime(parsed.year, parsed.month, parsed.day)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return int(parsed.timestamp() * 1000)


def iso_from_ms(ms: int, tz: tzinfo) -> str:
    """``2025-03-14`` for local midnight, else ``2025-03-14T17:00`` (seconds when not 0)."""
    local = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return local.date().isoformat()
    return local.replace(tzinfo=None).isoformat(
        timespec="minutes" if not local.second else "seconds"
    )


def check_iso(value: str) -> str:
    """``value`` stripped, if it is an ISO 8601 date or date-time in a sane year."""
    try:
        parsed = _parse_iso(value)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 date: {value!r}; use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    if not 1900 <= parsed.year <= 2200:
        raise ValueError(f"year {parsed.year} is out of range in {value!r}")
    return value.strip()
