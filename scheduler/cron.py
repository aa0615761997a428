"""Cron maths: validate 5-field cron expressions and compute fire times.

Pure functions (no asyncio, no I/O except ``local_tz`` reading the environment).

Grammar (strict standard cron)
    Five fields separated by whitespace: ``minute hour day month weekday`` with
    ranges 0-59, 0-23, 1-31, 1-12 and 0-7. Each field is a comma list of ``*``,
    ``N``, ``A-B``, ``*/S`` or ``A-B/S``. Months may be written ``jan``..``dec``,
    weekdays ``sun``..``sat`` (any case, also as range ends: ``mon-fri``,
    ``fri-sun``). Weekdays 0 and 7 are both Sunday.
    Macros are aliases: ``@hourly``, ``@daily``/``@midnight``, ``@weekly``,
    ``@monthly``, ``@yearly``/``@annually``; ``@reboot`` is rejected (it is not a
    schedule).
    Rejected with a reason: a field count other than 5 (no seconds, no years),
    out-of-range values, reversed ranges (``5-1``), ``N/S`` without a range,
    a step of 0 or larger than the field has values, the non-standard extensions
    ``L W # ? H``, and day/month pairs that never occur (``0 0 30 2 *``).
    croniter alone accepts most of these, so the checks are ours.

Day of month and weekday (Vixie cron / cronie rule)
    If both fields are restricted, a day matches when *either* matches
    (``0 0 1 * mon``: the 1st and every Monday). A field that starts with ``*``
    counts as unrestricted, so then both must match (``0 0 */2 * mon``: odd days
    that are Mondays).

Time zones and daylight saving
    An expression is read in wall-clock time of the schedule's zone ``tz``
    (default ``local_tz()``). Fire times are real instants:

    - a wall-clock slot that does not exist (spring-forward gap) is skipped for
      that day: ``30 2 * * *`` on Europe/Berlin 2026-03-29 next fires 03-30 02:30;
    - a wall-clock slot that occurs twice (autumn fall-back) fires once, on its
      first occurrence: ``30 1 * * *`` on America/New_York 2026-11-01 fires at
      01:30 EDT only;
    - except when the hour field covers all 24 hours (``*``, ``*/1``, ``0-23``):
      such a schedule is about elapsed time, so it fires in both occurrences of
      the repeated hour. ``0 * * * *`` fires every real hour through fall-back
      (01:00 EDT, 01:00 EST, 02:00 EST) and, the gap hour having no instants,
      through spring-forward too.

    croniter 7.0 on aware datetimes does neither (it moves a gap slot to 03:00 and
    fires a repeated slot twice), so croniter only walks naive wall-clock times
    and the mapping to instants is done here with zoneinfo ``fold``.

Results are aware datetimes in ``tz`` (``fold`` set) and strictly increase when
``next_fire`` is iterated. Compare them and do arithmetic on them in UTC: between
two datetimes sharing a tzinfo Python ignores ``fold`` and works in wall-clock
time (01:00 EST compares below 01:30 EDT), and PEP 495 makes a time in a repeated
hour unequal to every datetime of another zone.
"""

from __future__ import annotations

import calendar
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .errors import InvalidCron, SchedulerError

__all__ = ["cron_error", "is_overdue", "local_tz", "next_fire", "prev_fire", "validate_cron"]

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()  # not locale-dependent
MONTH_NAMES = {name: number for number, name in enumerate(MONTHS, 1)}
WEEKDAY_NAMES = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

FIELD_COUNT_ERROR = "expected 5 fields (minute hour day month weekday), got {}"
NON_STANDARD = re.compile(r"[0-9]*[lw]|lw|[0-9]*#[0-9]*|\?|h(\(.*\))?(/[0-9]*)?", re.IGNORECASE)
NUMBER = re.compile(r"[0-9]+")
ALLOWED_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz*,-/")

# Walls skipped before giving up; real expressions skip a handful at most (an hour
# of minutes when a repeated hour is walked a second time).
MAX_STEPS = 10_000


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, MONTH_NAMES),
    _Field("weekday", 0, 7, WEEKDAY_NAMES),
)
MINUTE, HOUR, DOM, MONTH, DOW = FIELDS


@dataclass(frozen=True)
class _Cron:
    text: str  # normalized: lowercase, single spaces, macro expanded
    croniter_expr: str  # numeric lists (or "*"), weekday 7 folded into 0
    day_or: bool  # day of month OR weekday (both restricted), else AND
    every_hour: bool  # hour field covers 0-23: repeated hours fire twice


# -- validation ---------------------------------------------------------------


def cron_error(expr: str) -> str | None:
    """None if ``expr`` is a valid schedule, else the readable reason."""
    try:
        _parse(expr)
    except InvalidCron as exc:
        return exc.reason
    return None


def validate_cron(expr: str) -> str:
    """Return ``expr`` normalized (whitespace collapsed, lowercase, macro expanded).

    Raises ``InvalidCron`` with the reason when ``expr`` is not a valid schedule.
    """
    return _parse(expr).text


def _parse(expr: object) -> _Cron:
    if not isinstance(expr, str):
        raise InvalidCron(f"expected a string, got {type(expr).__name__}")
    return _parse_text(expr)


@lru_cache(maxsize=256)
def _parse_text(expr: str) -> _Cron:
    tokens = expr.split()
    if not tokens:
        raise InvalidCron("empty expression")
    if tokens[0].startswith("@"):
        tokens = _expand_macro([token.lower() for token in tokens])
    if len(tokens) != 5:
        raise InvalidCron(FIELD_COUNT_ERROR.format(len(tokens)))
    minutes, hours, doms, months, dows = (
        _parse_field(token, field) for token, field in zip(tokens, FIELDS, strict=True)
    )
    dows = {0 if d == 7 else d for d in dows}
    # Vixie rule: a field starting with "*" is unrestricted, and then both must match.
    day_or = not tokens[2].startswith("*") and not tokens[4].startswith("*")
    if not day_or:
        _check_some_date(tokens[2], doms, tokens[3], months)
    lists = [minutes, hours, doms, months, dows]
    croniter_expr = " ".join(
        "*" if token == "*" else ",".join(map(str, sorted(values)))
        for token, values in zip(tokens, lists, strict=True)
    )
    return _Cron(" ".join(tokens).lower(), croniter_expr, day_or, hours == set(range(24)))


def _expand_macro(tokens: list[str]) -> list[str]:
    macro = tokens[0]
    if macro == "@reboot":
        raise InvalidCron(
            "@reboot is not a schedule (it means once at start-up); use a time, e.g. @daily"
        )
    if macro not in MACROS:
        raise InvalidCron(f"unknown macro {macro!r}; known: {', '.join(MACROS)}")
    if len(tokens) > 1:
        raise InvalidCron(f"{macro} stands alone, found more after it")
    return MACROS[macro].split()


def _parse_field(token: str, field: _Field) -> set[int]:
    for char in token:
        if char.lower() not in ALLOWED_CHARS:
            if char in "#?()":
                raise _non_standard(field, token)
            raise InvalidCron(f"{field.name}: unexpected character {char!r} in {token!r}")
    values: set[int] = set()
    for item in token.split(","):
        if not item:
            raise InvalidCron(f"{field.name}: empty item in list {token!r}")
        values.update(_parse_item(item, field))
    return values


def _parse_item(item: str, field: _Field) -> range:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        size = field.high - field.low + 1 - (field is DOW)  # 0 and 7 are one day
        if not NUMBER.fullmatch(step_text):
            raise InvalidCron(f"{field.name}: step {step_text!r} in {item!r} is not a number")
        step = int(step_text)
        if not 1 <= step <= size:
            raise InvalidCron(f"{field.name}: step {step} in {item!r} is not within 1-{size}")
    if base == "*":
        return range(field.low, field.high + 1, step)
    start_text, dash, end_text = base.partition("-")
    start = _value(start_text, item, field)
    if not dash:
        if slash:
            raise InvalidCron(
                f"{field.name}: a step needs a range or *, write {start}-{field.high}/{step}"
                f" instead of {item!r}"
            )
        return range(start, start + 1)
    end = _value(end_text, item, field, range_end=True)
    if start > end:
        raise InvalidCron(f"{field.name}: range {base!r} goes backwards")
    return range(start, end + 1, step)


def _value(text: str, item: str, field: _Field, *, range_end: bool = False) -> int:
    if NUMBER.fullmatch(text):
        number = int(text)
        if not field.low <= number <= field.high:
            sunday = " (0 and 7 are Sunday)" if field is DOW else ""
            raise InvalidCron(
                f"{field.name}: {number} is out of range {field.low}-{field.high}{sunday}"
            )
        return number
    if text.lower() in field.names:
        number = field.names[text.lower()]
        # "fri-sun" means Friday to Sunday: Sunday as a range end is 7.
        return 7 if field is DOW and range_end and number == 0 else number
    if NON_STANDARD.fullmatch(text) or NON_STANDARD.fullmatch(item):
        raise _non_standard(field, item)
    if field is MONTH:
        expected = "a number 1-12 or a month name (jan-dec)"
    elif field is DOW:
        expected = "a number 0-7 or a weekday name (sun-sat)"
    else:
        expected = f"a number {field.low}-{field.high}"
    raise InvalidCron(f"{field.name}: {item!r} is not valid, expected {expected}")


def _non_standard(field: _Field, token: str) -> InvalidCron:
    unsupported = "L, W, #, ? and H are not supported"
    return InvalidCron(f"{field.name}: {token!r} is a non-standard extension ({unsupported})")


def _check_some_date(dom_token: str, doms: set[int], month_token: str, months: set[int]) -> None:
    # Feb 29 counts: it occurs, and on every weekday, within 28 years.
    if not any(day <= calendar.monthrange(2000, month)[1] for day in doms for month in months):
        raise InvalidCron(f"no date matches: day {dom_token} never occurs in month {month_token}")


# -- fire times ---------------------------------------------------------------


def next_fire(expr: str, after: datetime, tz: tzinfo | None = None) -> datetime:
    """The first fire time strictly after ``after`` (aware), aware in ``tz``.

    ``tz`` is the schedule's zone, default ``local_tz()``. Raises ``InvalidCron``
    for a bad expression and ``ValueError`` for a naive ``after``.
    """
    cron = _parse(expr)
    zone = tz if tz is not None else local_tz()
    start = _in_zone(after, "after", zone)
    bound = start.astimezone(UTC)
    wall = _naive(start)
    found: list[datetime] = []
    shift = _repeat_shift(start)
    if shift and start.fold == 0 and cron.every_hour:
        # `after` lies in the first pass of a repeated hour: the second pass of the
        # walls already behind it is still to come.
        for candidate in _walls(cron, wall - shift - timedelta(seconds=1)):
            if candidate > wall:
                break
            found += [i for i in _instants(candidate, zone, cron) if _utc(i) > bound]
    for candidate in _limited(_walls(cron, wall)):
        later = [i for i in _instants(candidate, zone, cron) if _utc(i) > bound]
        if later:
            found.append(later[0])
            break
    return min(found, key=_utc)


def prev_fire(expr: str, before: datetime, tz: tzinfo | None = None) -> datetime:
    """The last fire time at or before ``before`` (aware), aware in ``tz``.

    Same zone, DST and error rules as ``next_fire``.
    """
    cron = _parse(expr)
    zone = tz if tz is not None else local_tz()
    start = _in_zone(before, "before", zone)
    bound = start.astimezone(UTC)
    wall = _naive(start)
    found: list[datetime] = []
    shift = _repeat_shift(start)
    if shift and start.fold == 1:
        # `before` lies in the second pass of a repeated hour: the first pass of the
        # walls still ahead of it is already behind us.
        for candidate in _walls(cron, wall):
            if candidate >= wall + shift:
                break
            found += [i for i in _instants(candidate, zone, cron) if _utc(i) <= bound]
    minute = wall.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for candidate in _limited(_walls(cron, minute, backwards=True)):
        earlier = [i for i in _instants(candidate, zone, cron) if _utc(i) <= bound]
        if earlier:
            found.append(earlier[-1])
            break
    return max(found, key=_utc)


def is_overdue(
    expr: str, last_run_at: datetime | None, now: datetime, tz: tzinfo | None = None
) -> bool:
    """Whether a slot has come since ``last_run_at``: the run was missed.

    An invalid expression is never overdue (never raises for it); a schedule that
    never ran is overdue. A slot exactly at ``last_run_at`` counts as run. Naive
    datetimes are a caller bug: ``ValueError``.
    """
    if cron_error(expr) is not None:
        return False
    _require_aware(now, "now")
    if last_run_at is None:
        return True
    _require_aware(last_run_at, "last_run_at")
    return _utc(prev_fire(expr, now, tz)) > _utc(last_run_at)


def local_tz() -> tzinfo:
    """The user's local zone: a ZoneInfo when one can be named, so DST is right.

    Order: ``TZ`` (a zone name or a path to a tzfile), then ``/etc/localtime``,
    then the current fixed UTC offset (no DST) as a last resort.
    """
    name = os.environ.get("TZ", "").removeprefix(":")
    zone = _zone_from_path(name) if name.startswith("/") else _zone_named(name)
    if zone is None and not name:
        zone = _zone_from_path("/etc/localtime")
    if zone is not None:
        return zone
    fixed = datetime.now().astimezone().tzinfo
    if fixed is None:  # pragma: no cover - astimezone() always sets one
        raise SchedulerError("cannot determine the local time zone")
    return fixed


# -- helpers ------------------------------------------------------------------


def _require_aware(moment: datetime, name: str) -> None:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {moment.isoformat()}")


def _in_zone(moment: datetime, name: str, zone: tzinfo) -> datetime:
    _require_aware(moment, name)
    return moment.astimezone(UTC).astimezone(zone)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None, fold=0)


def _repeat_shift(local: datetime) -> timedelta:
    """How long the repeated hour around ``local`` is, or 0 if it is not in one."""
    first = local.replace(fold=0).utcoffset()
    second = local.replace(fold=1).utcoffset()
    if first is None or second is None:
        return timedelta(0)
    return abs(first - second)


def _instants(wall: datetime, zone: tzinfo, cron: _Cron) -> list[datetime]:
    """The real instants showing ``wall`` in ``zone`` that fire, ascending.

    None in a gap; two in a repeated hour, of which only the first fires unless
    the schedule is hourly.
    """
    by_utc: dict[datetime, datetime] = {}
    for fold in (0, 1):
        moment = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        local = moment.astimezone(zone)
        if _naive(local) == wall:
            by_utc[moment] = local
    ordered = [by_utc[key] for key in sorted(by_utc)]
    return ordered if cron.every_hour else ordered[:1]


def _walls(cron: _Cron, start: datetime, *, backwards: bool = False) -> Iterator[datetime]:
    """Matching naive wall-clock times strictly after (or before) ``start``."""
    walker: Any = croniter(cron.croniter_expr, start, day_or=cron.day_or)
    step = walker.get_prev if backwards else walker.get_next
    while True:
        try:
            wall: datetime = step(datetime)
        except (ValueError, OverflowError) as exc:  # CroniterError is a ValueError
            raise SchedulerError(f"no fire time for {cron.text!r} near {start}: {exc}") from exc
        yield wall


def _limited(walls: Iterator[datetime]) -> Iterator[datetime]:
    for count, wall in enumerate(walls):
        if count >= MAX_STEPS:
            raise SchedulerError(f"no fire time within {MAX_STEPS} candidates of {wall}")
        yield wall


def _zone_named(name: str) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone_from_path(path: str) -> ZoneInfo | None:
    real = os.path.realpath(path)
    _, marker, key = real.partition("/zoneinfo/")
    zone = _zone_named(key) if marker else None
    if zone is not None:
        return zone
    try:
        with open(real, "rb") as file:
            return ZoneInfo.from_file(file, key=os.path.basename(path))
    except (OSError, ValueError):
        return None
