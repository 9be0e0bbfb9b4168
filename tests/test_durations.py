"""Authelia's duration notation: parse_duration and format_duration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_session._durations import format_duration, parse_duration

DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", DAY),
        ("1w", 7 * DAY),
        ("1M", 30 * DAY),
        ("1y", 365 * DAY),
        ("1y2M3w4d5h6m7s", 365 * DAY + 60 * DAY + 21 * DAY + 4 * DAY + timedelta(seconds=18367)),
        ("9h60m", timedelta(hours=10)),
        ("5400", timedelta(seconds=5400)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("  45s  ", timedelta(seconds=45)),
        ("1 hour and 30 minutes", timedelta(hours=1, minutes=30)),
        ("2 weeks", 14 * DAY),
        ("1 Day", DAY),
        ("1month", 30 * DAY),
        ("3 years", 3 * 365 * DAY),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("250 milliseconds", timedelta(milliseconds=250)),
        ("7us", timedelta(microseconds=7)),
        ("7µs", timedelta(microseconds=7)),
        ("7μs", timedelta(microseconds=7)),
    ],
)
def test_parses_authelia_notation(text: str, expected: timedelta) -> None:
    """Every unit of Authelia's legend, combinations and written-out names parse."""
    assert parse_duration(text) == expected


def test_month_and_year_lengths_match_authelia() -> None:
    """A month is 30 days and a year 365 days, as Authelia's HoursInMonth/HoursInYear."""
    assert parse_duration("1M") == timedelta(hours=720)
    assert parse_duration("1y") == timedelta(hours=8760)
    assert parse_duration("12M") != parse_duration("1y")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, timedelta(0)),
        (3600, timedelta(hours=1)),
        (90.0, timedelta(seconds=90)),
        (timedelta(milliseconds=1), timedelta(milliseconds=1)),
    ],
)
def test_accepts_numbers_and_timedeltas(value: object, expected: timedelta) -> None:
    """Integers and whole floats are seconds; a timedelta is returned unchanged."""
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must not be negative"),
        ("-5m", "must not be negative"),
        (-2.0, "must not be negative"),
        (timedelta(seconds=-1), "must not be negative"),
        (1.5, "whole number of seconds"),
        (float("nan"), "whole number of seconds"),
        (float("inf"), "whole number of seconds"),
        (True, "boolean"),
        (False, "boolean"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("abc", "cannot read 'abc'"),
        ("1.5h", "cannot read"),
        ("h", "cannot read"),
        ("1h2", "cannot read"),
        ("1H", "unknown unit 'H'"),
        ("1 fortnight", "unknown unit 'fortnight'"),
        ("10ns", "unknown unit 'ns'"),
        ("1 and", "unknown unit 'and'"),
        ("1 hour and", "cannot read"),
        ("99999999999y", "too long"),
        (10**20, "too long"),
        (None, "got NoneType"),
        ([1], "got list"),
        ({"h": 1}, "got dict"),
    ],
)
def test_rejects_junk(value: object, message: str) -> None:
    """Negatives, fractions, booleans, junk and overflow raise a short ValueError."""
    with pytest.raises(ValueError, match=message) as info:
        parse_duration(value)
    assert "\n" not in str(info.value)


def test_long_junk_is_shortened_in_the_message() -> None:
    """A very long unreadable value is cut in the message."""
    with pytest.raises(ValueError, match=r"\.\.\.") as info:
        parse_duration("x" * 500)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=1, minutes=30), "90m"),
        (DAY, "1d"),
        (7 * DAY, "1w"),
        (14 * DAY, "2w"),
        (30 * DAY, "1M"),
        (31 * DAY, "31d"),
        (365 * DAY, "1y"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(microseconds=1), "1us"),
        (365 * DAY + timedelta(seconds=1), "1y1s"),
    ],
)
def test_formats_shortest_notation(value: timedelta, text: str) -> None:
    """format_duration picks the shortest notation, preferring larger units on a tie."""
    assert format_duration(value) == text


def test_format_rejects_negative() -> None:
    """A negative timedelta has no notation."""
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta.max)


@settings(max_examples=200, derandomize=True)
@given(durations)
def test_format_then_parse_round_trips(value: timedelta) -> None:
    """Any non-negative timedelta survives format_duration then parse_duration."""
    assert parse_duration(format_duration(value)) == value


@settings(max_examples=200, derandomize=True)
@given(st.integers(min_value=0, max_value=10**12))
def test_whole_seconds_round_trip_and_stay_short(seconds: int) -> None:
    """Whole seconds round-trip and never format longer than the plain seconds notation."""
    value = timedelta(seconds=seconds)
    text = format_duration(value)
    assert parse_duration(text) == value
    assert parse_duration(seconds) == value
    assert len(text) <= len(f"{seconds}s")


@settings(max_examples=200, derandomize=True)
@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.booleans(), st.none()))
def test_anything_either_parses_or_raises_value_error(value: object) -> None:
    """Arbitrary input gives a non-negative timedelta or a ValueError, never another error."""
    try:
        result = parse_duration(value)
    except ValueError:
        return
    assert result >= timedelta(0)
