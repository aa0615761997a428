"""Cron maths (scheduler.cron): validation, fire times, DST, overdue checks.

Instants are injected; nothing sleeps. Fire times are compared in UTC because
datetime comparison ignores ``fold`` between two datetimes sharing a tzinfo.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler.cron import cron_error, is_overdue, local_tz, next_fire, prev_fire, validate_cron
from scheduler.errors import InvalidCron, SchedulerError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # half-hour DST shift
SYDNEY = ZoneInfo("Australia/Sydney")  # southern hemisphere

# (zone, first instant after the 2026 transition)
TRANSITIONS = [
    (NEW_YORK, datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    (NEW_YORK, datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),
    (BERLIN, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
    (BERLIN, datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),
    (LORD_HOWE, datetime(2026, 4, 4, 15, 0, tzinfo=UTC)),
    (LORD_HOWE, datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),
    (SYDNEY, datetime(2026, 4, 4, 16, 0, tzinfo=UTC)),
    (SYDNEY, datetime(2026, 10, 3, 16, 0, tzinfo=UTC)),
]

COUNT_6 = "expected 5 fields (minute hour day month weekday), got 6"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def fires(expr: str, start: datetime, tz: tzinfo, count: int) -> list[datetime]:
    """``count`` successive fire times after ``start``, in UTC."""
    out = []
    moment = start
    for _ in range(count):
        moment = next_fire(expr, moment, tz)
        out.append(moment.astimezone(UTC))
    return out


def next_utc(expr: str, moment: datetime, tz: tzinfo | None = None) -> datetime:
    return next_fire(expr, moment, tz).astimezone(UTC)


def prev_utc(expr: str, moment: datetime, tz: tzinfo | None = None) -> datetime:
    return prev_fire(expr, moment, tz).astimezone(UTC)


def walls(moments: list[datetime], tz: tzinfo) -> list[str]:
    """Wall clock with offset, e.g. '2026-11-01 01:30-05:00'."""
    return [m.astimezone(tz).isoformat(sep=" ", timespec="minutes") for m in moments]


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "normalized"),
    [
        ("0 */6 * * *", "0 */6 * * *"),
        ("  0   9\t* *  1-5 ", "0 9 * * 1-5"),
        ("0 9 * * MON-Fri", "0 9 * * mon-fri"),
        ("0 0 1 JAN,jul *", "0 0 1 jan,jul *"),
        ("*/15 9-17 * * 1,3,5", "*/15 9-17 * * 1,3,5"),
        ("0-30/10 */2 1-15/7 */3 *", "0-30/10 */2 1-15/7 */3 *"),
        ("59 23 31 12 7", "59 23 31 12 7"),
        ("0 0 * * fri-sun", "0 0 * * fri-sun"),
        ("0 0 29 2 *", "0 0 29 2 *"),
        ("0 0 31 2 mon", "0 0 31 2 mon"),  # OR: Mondays in February
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@Annually", "0 0 1 1 *"),
    ],
)
def test_valid_expressions_normalize(expr: str, normalized: str) -> None:
    assert cron_error(expr) is None
    assert validate_cron(expr) == normalized


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("* * * * * *", COUNT_6),
        ("0 0 12 * * ? 2026", "got 7"),
        ("0 12 * *", "got 4"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("0-60 * * * *", "minute: 60 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month: 0 is out of range 1-31"),
        ("0 0 32 * *", "day of month: 32 is out of range 1-31"),
        ("0 0 * 0 *", "month: 0 is out of range 1-12"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "weekday: 8 is out of range 0-7 (0 and 7 are Sunday)"),
        ("", "empty expression"),
        ("   \t ", "empty expression"),
        ("garbage", "got 1"),
        ("a b c d e", "minute: 'a' is not valid, expected a number 0-59"),
        ("0 0 * foo *", "month: 'foo' is not valid, expected a number 1-12 or a month name"),
        ("0 0 * * monday", "weekday: 'monday' is not valid"),
        ("0 0 * jan-mon *", "month: 'jan-mon' is not valid"),
        ("-1 * * * *", "minute: '-1' is not valid"),
        ("\u0663 * * * *", "minute: unexpected character"),
        ("0 0 * * 1;2", "weekday: unexpected character ';'"),
        ("1,,2 * * * *", "minute: empty item in list '1,,2'"),
        ("1, * * * *", "minute: empty item"),
        ("30-10 * * * *", "minute: range '30-10' goes backwards"),
        ("0 0 * * sat-mon", "weekday: range 'sat-mon' goes backwards"),
        ("*/0 * * * *", "minute: step 0 in '*/0' is not within 1-60"),
        ("*/61 * * * *", "minute: step 61"),
        ("0 0 * * */8", "weekday: step 8 in '*/8' is not within 1-7"),
        ("*/x * * * *", "minute: step 'x' in '*/x' is not a number"),
        ("5/15 * * * *", "a step needs a range or *, write 5-59/15"),
        ("0 0 L * *", "day of month: 'L' is a non-standard extension"),
        ("0 0 15W * *", "non-standard extension"),
        ("0 0 * * 5L", "non-standard extension"),
        ("0 0 * * 5#2", "weekday: '5#2' is a non-standard extension"),
        ("0 0 ? * *", "non-standard extension"),
        ("H * * * *", "minute: 'H' is a non-standard extension"),
        ("H(0-29) * * * *", "non-standard extension"),
        ("0 0 30 2 *", "no date matches: day 30 never occurs in month 2"),
        ("0 0 31 4,6,9,11 *", "no date matches: day 31 never occurs in month 4,6,9,11"),
        ("0 0 31 feb */2", "no date matches"),  # weekday starts with *: AND
        ("@reboot", "@reboot is not a schedule"),
        ("@often", "unknown macro '@often'"),
        ("@daily 5", "@daily stands alone"),
    ],
)
def test_invalid_expressions_say_why(expr: str, reason: str) -> None:
    error = cron_error(expr)
    assert error is not None and reason in error
    with pytest.raises(InvalidCron) as caught:
        validate_cron(expr)
    assert str(caught.value) == error == caught.value.reason
    assert isinstance(caught.value, SchedulerError)


def test_field_count_message_is_exact() -> None:
    assert cron_error("* * * * * *") == COUNT_6
    assert cron_error("0 0 * * * 2026 x") == (
        "expected 5 fields (minute hour day month weekday), got 7"
    )


@pytest.mark.parametrize("value", [None, 5, b"0 * * * *", ["0", "*", "*", "*", "*"]])
def test_non_string_is_invalid(value: Any) -> None:
    assert cron_error(value) == f"expected a string, got {type(value).__name__}"
    with pytest.raises(InvalidCron):
        validate_cron(value)
    with pytest.raises(InvalidCron):
        next_fire(value, utc(2026, 1, 1))


@pytest.mark.parametrize(
    "expr",
    ["* * * * * *", "* * * * * * *", "0 0 L * *", "0 0 ? * *", "5/15 * * * *", "*/100 * * * *"],
)
def test_strictness_is_ours_not_croniters(expr: str) -> None:
    # croniter 7.0 accepts all of these (seconds, years, Quartz extensions, ...).
    assert croniter.is_valid(expr)
    assert cron_error(expr) is not None


# -- plain schedules ----------------------------------------------------------


def test_every_six_hours() -> None:
    got = fires("0 */6 * * *", utc(2026, 1, 10, 5, 0), UTC, 5)
    assert got == [
        utc(2026, 1, 10, 6),
        utc(2026, 1, 10, 12),
        utc(2026, 1, 10, 18),
        utc(2026, 1, 11, 0),
        utc(2026, 1, 11, 6),
    ]


def test_strictly_after_even_on_a_slot() -> None:
    assert next_fire("0 */6 * * *", utc(2026, 1, 10, 6), UTC) == utc(2026, 1, 10, 12)
    assert next_fire("* * * * *", utc(2026, 1, 10, 6, 0, 59), UTC) == utc(2026, 1, 10, 6, 1)
    assert prev_fire("0 */6 * * *", utc(2026, 1, 10, 6), UTC) == utc(2026, 1, 10, 6)
    moment = utc(2026, 1, 10, 5, 59, 59, 999999)
    assert prev_fire("0 */6 * * *", moment, UTC) == utc(2026, 1, 10, 0)


def test_weekdays_by_number_and_name() -> None:
    start = datetime(2026, 1, 9, 10, 0, tzinfo=BERLIN)  # a Friday, after 09:00
    by_number = fires("0 9 * * 1-5", start, BERLIN, 6)
    assert walls(by_number, BERLIN) == [
        f"2026-01-{day} 09:00+01:00" for day in ("12", "13", "14", "15", "16", "19")
    ]
    assert fires("0 9 * * mon-fri", start, BERLIN, 6) == by_number


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN"])
def test_sunday_is_0_7_and_sun(sunday: str) -> None:
    got = fires(f"0 9 * * {sunday}", utc(2026, 1, 1), BERLIN, 3)
    assert walls(got, BERLIN) == [
        "2026-01-04 09:00+01:00",
        "2026-01-11 09:00+01:00",
        "2026-01-18 09:00+01:00",
    ]


def test_weekday_range_through_sunday() -> None:
    got = fires("0 9 * * fri-sun", utc(2026, 1, 5), UTC, 4)  # from a Monday
    assert [d.strftime("%a %d") for d in got] == ["Fri 09", "Sat 10", "Sun 11", "Fri 16"]
    assert fires("0 9 * * 5-7", utc(2026, 1, 5), UTC, 4) == got


def test_day_31_skips_short_months() -> None:
    got = fires("0 0 31 * *", utc(2026, 1, 1), UTC, 7)
    assert [(d.month, d.day) for d in got] == [
        (1, 31),
        (3, 31),
        (5, 31),
        (7, 31),
        (8, 31),
        (10, 31),
        (12, 31),
    ]


def test_feb_29_waits_for_a_leap_year() -> None:
    assert fires("0 0 29 2 *", utc(2026, 1, 1), UTC, 2) == [utc(2028, 2, 29), utc(2032, 2, 29)]
    assert prev_fire("0 0 29 2 *", utc(2028, 2, 28), UTC) == utc(2024, 2, 29)


def test_day_and_weekday_both_restricted_means_either() -> None:
    got = fires("0 0 1 * mon", utc(2026, 5, 20), UTC, 4)  # 2026-06-01 is a Monday
    assert [d.date().isoformat() for d in got] == [
        "2026-05-25",
        "2026-06-01",
        "2026-06-08",
        "2026-06-15",
    ]
    got = fires("0 0 1 * mon", utc(2026, 6, 20), UTC, 3)  # 2026-07-01 is a Wednesday
    assert [d.date().isoformat() for d in got] == ["2026-06-22", "2026-06-29", "2026-07-01"]


def test_day_starting_with_star_means_both() -> None:
    # Vixie/cronie: "*/2" counts as unrestricted, so odd days that are Mondays.
    got = fires("0 0 */2 * mon", utc(2026, 1, 1), UTC, 3)
    assert [d.date().isoformat() for d in got] == ["2026-01-05", "2026-01-19", "2026-02-09"]


# -- daylight saving ----------------------------------------------------------


def test_spring_gap_berlin_is_skipped_once() -> None:
    got = fires("30 2 * * *", datetime(2026, 3, 27, 12, tzinfo=BERLIN), BERLIN, 3)
    assert walls(got, BERLIN) == [
        "2026-03-28 02:30+01:00",
        "2026-03-30 02:30+02:00",
        "2026-03-31 02:30+02:00",
    ]
    before = datetime(2026, 3, 29, 12, tzinfo=BERLIN)
    assert walls([prev_fire("30 2 * * *", before, BERLIN)], BERLIN) == ["2026-03-28 02:30+01:00"]


def test_spring_gap_new_york_is_skipped_once() -> None:
    got = fires("30 2 * * *", datetime(2026, 3, 7, 12, tzinfo=NEW_YORK), NEW_YORK, 2)
    assert walls(got, NEW_YORK) == ["2026-03-09 02:30-04:00", "2026-03-10 02:30-04:00"]


def test_fall_back_new_york_fires_once() -> None:
    got = fires("30 1 * * *", datetime(2026, 10, 31, 12, tzinfo=NEW_YORK), NEW_YORK, 3)
    assert walls(got, NEW_YORK) == [
        "2026-11-01 01:30-04:00",
        "2026-11-02 01:30-05:00",
        "2026-11-03 01:30-05:00",
    ]
    # From inside the repeated hour, either pass: the second 01:30 does not fire.
    for moment in (utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 6, 15)):
        nxt = next_fire("30 1 * * *", moment, NEW_YORK)
        assert walls([nxt], NEW_YORK) == ["2026-11-02 01:30-05:00"]
        assert prev_utc("30 1 * * *", moment, NEW_YORK) == utc(2026, 11, 1, 5, 30)


def test_fall_back_berlin_fires_once() -> None:
    got = fires("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN), BERLIN, 2)
    assert walls(got, BERLIN) == ["2026-10-25 02:30+02:00", "2026-10-26 02:30+01:00"]


def test_fixed_slot_in_first_pass_still_due_from_second_pass() -> None:
    # 01:15 EST (second pass); 01:45 EDT already happened 30 real minutes earlier.
    before = utc(2026, 11, 1, 6, 15)
    assert prev_utc("45 1 * * *", before, NEW_YORK) == utc(2026, 11, 1, 5, 45)
    assert prev_utc("*/20 1 * * *", before, NEW_YORK) == utc(2026, 11, 1, 5, 40)


def test_hourly_fires_every_real_hour_through_fall_back() -> None:
    got = fires("0 * * * *", datetime(2026, 11, 1, 0, 30, tzinfo=NEW_YORK), NEW_YORK, 4)
    assert got == [utc(2026, 11, 1, hour) for hour in (5, 6, 7, 8)]
    assert walls(got, NEW_YORK) == [
        "2026-11-01 01:00-04:00",
        "2026-11-01 01:00-05:00",
        "2026-11-01 02:00-05:00",
        "2026-11-01 03:00-05:00",
    ]
    # From 01:30 EDT the next hour is the second 01:00.
    assert next_utc("0 * * * *", utc(2026, 11, 1, 5, 30), NEW_YORK) == utc(2026, 11, 1, 6)
    assert prev_utc("0 * * * *", utc(2026, 11, 1, 6, 30), NEW_YORK) == utc(2026, 11, 1, 6)


def test_hourly_fires_every_real_hour_through_spring_forward() -> None:
    got = fires("0 * * * *", datetime(2026, 3, 8, 0, 30, tzinfo=NEW_YORK), NEW_YORK, 3)
    assert got == [utc(2026, 3, 8, hour) for hour in (6, 7, 8)]
    assert walls(got, NEW_YORK)[1] == "2026-03-08 03:00-04:00"


def test_fixed_hour_schedule_does_not_repeat_its_minutes() -> None:
    got = fires("*/20 1 * * *", utc(2026, 11, 1, 4), NEW_YORK, 4)
    assert walls(got, NEW_YORK) == [
        "2026-11-01 01:00-04:00",
        "2026-11-01 01:20-04:00",
        "2026-11-01 01:40-04:00",
        "2026-11-02 01:00-05:00",
    ]


# Expressions with their minutes and hours spelled out, for a brute-force oracle.
AROUND = [
    ("*/20 * * * *", range(0, 60, 20), range(24)),
    ("0 * * * *", [0], range(24)),
    ("30 1 * * *", [30], [1]),
    ("30 2 * * *", [30], [2]),
    ("*/15 1-3 * * *", range(0, 60, 15), [1, 2, 3]),
]


def _expected_around(
    minutes: Any, hours: Any, zone: ZoneInfo, start: datetime, end: datetime
) -> list[datetime]:
    """Every real minute whose wall clock matches, the repeated hour's second pass
    only for schedules that run every hour (the rule of the module docstring)."""
    out = []
    moment = start
    while moment <= end:
        local = moment.astimezone(zone)
        if local.minute in minutes and local.hour in hours:
            if local.fold == 0 or len(hours) == 24:
                out.append(moment)
        moment += timedelta(minutes=1)
    return out


@pytest.mark.parametrize(("zone", "transition"), TRANSITIONS)
@pytest.mark.parametrize(("expr", "minutes", "hours"), AROUND)
def test_around_transitions_matches_brute_force(
    expr: str, minutes: Any, hours: Any, zone: ZoneInfo, transition: datetime
) -> None:
    start, end = transition - timedelta(hours=3), transition + timedelta(hours=3)
    expected = _expected_around(minutes, hours, zone, start, end)
    got = []
    moment = next_utc(expr, start - timedelta(seconds=1), zone)
    while moment <= end:
        got.append(moment)
        following = next_utc(expr, moment, zone)
        assert following > moment
        assert prev_utc(expr, following - timedelta(microseconds=1), zone) == moment
        moment = following
    assert got == expected


def test_transitions_table_is_right() -> None:
    for zone, moment in TRANSITIONS:
        before = (moment - timedelta(minutes=1)).astimezone(zone).utcoffset()
        assert before != moment.astimezone(zone).utcoffset()


def test_a_year_of_fires_strictly_increases() -> None:
    start = datetime(2026, 1, 1, tzinfo=NEW_YORK)
    got = fires("17 1,2 * * *", start, NEW_YORK, 2 * 365)
    assert all(a < b for a, b in pairwise(got))
    # 02:17 on 03-08 does not exist and 01:17 on 11-01 fires once: 729 in 2026.
    local = walls(got, NEW_YORK)
    assert local[-2:] == ["2026-12-31 02:17-05:00", "2027-01-01 01:17-05:00"]
    assert [w for w in local if w.startswith("2026-03-08")] == ["2026-03-08 01:17-05:00"]
    assert [w for w in local if w.startswith("2026-11-01")] == [
        "2026-11-01 01:17-04:00",
        "2026-11-01 02:17-05:00",
    ]


def test_results_are_aware_in_the_schedule_zone() -> None:
    got = next_fire("0 9 * * *", utc(2026, 6, 1), BERLIN)
    assert got.tzinfo is BERLIN
    assert got.isoformat() == "2026-06-01T09:00:00+02:00"
    second_pass = next_fire("0 * * * *", utc(2026, 11, 1, 5, 30), NEW_YORK)
    assert second_pass.fold == 1 and second_pass.utcoffset() == timedelta(hours=-5)


# -- symmetry and properties ----------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "zone", "moment"),
    [
        ("0 */6 * * *", UTC, utc(2026, 5, 5, 5, 5)),
        ("30 1 * * *", NEW_YORK, utc(2026, 11, 1, 5)),
        ("0 * * * *", NEW_YORK, utc(2026, 11, 1, 5, 30)),
        ("30 2 * * *", BERLIN, utc(2026, 3, 28, 3)),
        ("0 0 29 2 *", BERLIN, utc(2026, 1, 1)),
    ],
)
def test_prev_and_next_are_symmetric(expr: str, zone: tzinfo, moment: datetime) -> None:
    nxt = next_utc(expr, moment, zone)
    prv = prev_utc(expr, moment, zone)
    assert prv <= moment < nxt
    assert prev_utc(expr, nxt, zone) == nxt
    assert next_utc(expr, prv, zone) == nxt
    assert prev_utc(expr, nxt - timedelta(microseconds=1), zone) == prv


MINUTES = st.sampled_from(["0", "59", "*/15", "5,35", "0-30/10", "*"])
HOURS = st.sampled_from(["*", "0", "1", "2", "*/6", "1-3", "9-17", "0-23"])
DAYS = st.sampled_from(["*", "1", "15", "29", "31", "*/10", "1-7"])
MONTHS = st.sampled_from(["*", "2", "feb", "*/3", "jan-jun", "11,12"])
WEEKDAYS = st.sampled_from(["*", "0", "7", "sun", "mon-fri", "1,3,5", "*/2"])
EXPRESSIONS = st.tuples(MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS).map(" ".join)
ZONES = st.sampled_from([UTC, BERLIN, NEW_YORK, LORD_HOWE, SYDNEY])
ANYTIME = st.datetimes(datetime(2001, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC))
NEAR_TRANSITION = st.builds(
    lambda pair, delta: pair[1] + delta,
    st.sampled_from(TRANSITIONS),
    st.timedeltas(-timedelta(hours=3), timedelta(hours=3)),
)
INSTANTS = st.one_of(ANYTIME, NEAR_TRANSITION)


@settings(max_examples=150, deadline=None)
@given(expr=EXPRESSIONS, zone=ZONES, moment=INSTANTS)
def test_fire_times_are_consistent(expr: str, zone: tzinfo, moment: datetime) -> None:
    assume(cron_error(expr) is None)
    fire = next_fire(expr, moment, zone)
    nxt = fire.astimezone(UTC)
    assert nxt > moment
    again = prev_fire(expr, fire, zone)
    assert again.astimezone(UTC) == nxt
    assert (again.fold, again.utcoffset()) == (fire.fold, fire.utcoffset())
    # No fire in between: the last one before nxt is at or before moment.
    prv = prev_utc(expr, nxt - timedelta(microseconds=1), zone)
    assert prv <= moment
    assert next_utc(expr, prv, zone) == nxt


# -- naive datetimes ------------------------------------------------------------


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 1, 1, 12)
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        next_fire("0 * * * *", naive, UTC)
    with pytest.raises(ValueError, match="before must be an aware datetime"):
        prev_fire("0 * * * *", naive, UTC)
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        is_overdue("0 * * * *", utc(2026, 1, 1), naive, UTC)
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        is_overdue("0 * * * *", None, naive, UTC)
    with pytest.raises(ValueError, match="last_run_at must be an aware datetime"):
        is_overdue("0 * * * *", naive, utc(2026, 1, 1), UTC)


def test_invalid_expression_raises_in_fire_time_functions() -> None:
    with pytest.raises(InvalidCron, match="got 6"):
        next_fire("* * * * * *", utc(2026, 1, 1), UTC)
    with pytest.raises(InvalidCron, match="non-standard"):
        prev_fire("0 0 L * *", utc(2026, 1, 1), UTC)


# -- overdue --------------------------------------------------------------------


def test_never_run_is_overdue() -> None:
    assert is_overdue("0 */6 * * *", None, utc(2026, 1, 10, 7), UTC)


def test_just_ran_is_not_overdue() -> None:
    assert not is_overdue("0 */6 * * *", utc(2026, 1, 10, 6, 0, 5), utc(2026, 1, 10, 7), UTC)


def test_missed_slots_are_overdue_once() -> None:
    expr = "0 */6 * * *"
    last = utc(2026, 1, 10, 0, 1)
    now = utc(2026, 1, 10, 19)  # missed 06:00, 12:00 and 18:00
    assert is_overdue(expr, last, now, UTC)
    # Running the catch-up once settles all three.
    assert not is_overdue(expr, now, now + timedelta(minutes=5), UTC)


def test_slot_equal_to_last_run_is_not_overdue() -> None:
    slot = utc(2026, 1, 10, 6)
    assert not is_overdue("0 */6 * * *", slot, slot, UTC)
    assert not is_overdue("0 */6 * * *", slot, utc(2026, 1, 10, 11, 59), UTC)
    assert is_overdue("0 */6 * * *", slot - timedelta(microseconds=1), slot, UTC)


@pytest.mark.parametrize("expr", ["* * * * * *", "", "0 0 L * *", "@reboot"])
def test_invalid_is_never_overdue(expr: str) -> None:
    assert not is_overdue(expr, None, utc(2026, 1, 1), UTC)
    assert not is_overdue(expr, utc(2020, 1, 1), utc(2026, 1, 1), UTC)


def test_invalid_non_string_is_never_overdue() -> None:
    value: Any = None
    assert not is_overdue(value, None, utc(2026, 1, 1), UTC)


def test_overdue_uses_the_schedule_zone() -> None:
    # 09:00 in New York is 14:00 UTC in January.
    last = utc(2026, 1, 10, 13)
    assert not is_overdue("0 9 * * *", last, utc(2026, 1, 10, 13, 59), NEW_YORK)
    assert is_overdue("0 9 * * *", last, utc(2026, 1, 10, 14), NEW_YORK)


# -- local zone -----------------------------------------------------------------


def test_local_tz_prefers_the_named_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    assert local_tz() == ZoneInfo("America/New_York")
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    assert local_tz() == ZoneInfo("Europe/Berlin")


def test_local_tz_falls_back_to_an_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Not/A_Zone")
    zone = local_tz()
    assert datetime.now(zone).utcoffset() is not None
    monkeypatch.delenv("TZ")
    assert datetime.now(local_tz()).utcoffset() is not None


def test_default_zone_is_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    got = next_fire("0 9 * * *", utc(2025, 12, 31, 23))
    assert got.tzinfo == ZoneInfo("Asia/Tokyo")
    assert got.astimezone(UTC) == utc(2026, 1, 1, 0)  # 09:00 in Tokyo
    assert prev_utc("0 9 * * *", utc(2026, 1, 1, 23)) == utc(2026, 1, 1, 0)
