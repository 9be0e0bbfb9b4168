"""Authelia's duration notation: ``90s``, ``5m``, ``1h30m``, ``1M``, or an integer of seconds.

The unit lengths are Authelia's own (``internal/utils/const.go``, used by ``ParseDurationString``
in ``internal/utils/time.go``): a day is 24 hours, a week 7 days, a month **30 days** and a year
**365 days**, with no calendar arithmetic. A plain integer, or a string of digits, is a number of
seconds. Blocks combine (``1h30m``) and may be written out (``1 hour and 30 minutes``), as in
Authelia; ``ms`` and ``us`` (``µs``) are accepted for sub-second values.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import timedelta

__all__ = ["format_duration", "parse_duration"]

_US = 1
_MS = 1_000 * _US
_SECOND = 1_000 * _MS
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
_MONTH = 30 * _DAY
_YEAR = 365 * _DAY

# Symbols are case-sensitive (``M`` is a month, ``m`` a minute), largest first: format_duration
# relies on this order.
_SYMBOLS: dict[str, int] = {
    "y": _YEAR,
    "M": _MONTH,
    "w": _WEEK,
    "d": _DAY,
    "h": _HOUR,
    "m": _MINUTE,
    "s": _SECOND,
    "ms": _MS,
    "us": _US,
}
_ALIASES: dict[str, int] = {"µs": _US, "μs": _US}  # micro sign and Greek mu, as Go accepts
# Written-out names cannot be mistaken for each other, so they are matched case-insensitively.
_NAMES: dict[str, int] = {
    "year": _YEAR,
    "month": _MONTH,
    "week": _WEEK,
    "day": _DAY,
    "hour": _HOUR,
    "minute": _MINUTE,
    "second": _SECOND,
    "millisecond": _MS,
}

_MAX_US = timedelta.max // timedelta(microseconds=1)
_DIGITS = re.compile(r"[0-9]+")
_AND = re.compile(r"\s+and\s+")
_WHOLE = re.compile(r"(?:[0-9]+\s*[^\W\d_]+\s*)+")
_BLOCK = re.compile(r"([0-9]+)\s*([^\W\d_]+)")
_HINT = "write e.g. 90s, 5m, 1h30m, 1d, 1M or an integer of seconds"


def parse_duration(value: object) -> timedelta:
    """Turn Authelia duration notation into a :class:`~datetime.timedelta`.

    Accepts a non-negative integer (seconds), a whole non-negative float, a string of digits
    (seconds), a string of number+unit blocks (``90s``, ``5m``, ``1h30m``, ``2 weeks``), or a
    ``timedelta`` (returned unchanged). Units: ``y`` (365 days), ``M`` (30 days), ``w``, ``d``,
    ``h``, ``m``, ``s``, ``ms``, ``us``.

    Raises:
        ValueError: for negative values, fractions of a second given as numbers, booleans,
            unknown units, values beyond ``timedelta.max`` and anything else, with a short
            message meant for a person.

    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            msg = "must not be negative"
            raise ValueError(msg)
        return value
    if isinstance(value, bool):
        msg = f"expected a duration, got a boolean; {_HINT}"
        raise ValueError(msg)  # noqa: TRY004 - callers catch one type for any unusable value
    if isinstance(value, int):
        return _seconds(value)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            msg = f"must be a whole number of seconds, got {value!r}; {_HINT}"
            raise ValueError(msg)
        return _seconds(int(value))
    if isinstance(value, str):
        return _parse_text(value)
    msg = f"expected a duration, got {type(value).__name__}; {_HINT}"
    raise ValueError(msg)


def _seconds(count: int) -> timedelta:
    if count < 0:
        msg = f"must not be negative, got {count}"
        raise ValueError(msg)
    return _from_us(count * _SECOND)


def _from_us(total: int) -> timedelta:
    if total > _MAX_US:
        msg = "is too long (more than 999999999 days)"
        raise ValueError(msg)
    return timedelta(microseconds=total)


def _parse_text(value: str) -> timedelta:
    text = value.strip()
    if not text:
        msg = f"is empty; {_HINT}"
        raise ValueError(msg)
    if text.startswith("-"):
        msg = f"must not be negative, got {_show(value)}"
        raise ValueError(msg)
    if _DIGITS.fullmatch(text):
        return _seconds(int(text))
    text = _AND.sub(" ", text)
    if not _WHOLE.fullmatch(text):
        msg = f"cannot read {_show(value)} as a duration; {_HINT}"
        raise ValueError(msg)
    total = 0
    for number, unit in _BLOCK.findall(text):
        name = unit.lower()
        size = (
            _SYMBOLS.get(unit)
            or _ALIASES.get(unit)
            or _NAMES.get(name)
            or _NAMES.get(name.removesuffix("s"))
        )
        if size is None:
            msg = f"unknown unit {unit!r} in {_show(value)}; {_HINT}"
            raise ValueError(msg)
        total += int(number) * size
    return _from_us(total)


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def format_duration(value: timedelta) -> str:
    """Write a ``timedelta`` in the shortest duration notation that reads back to it.

    The result is canonical: among greedy decompositions over every subset of the units
    (``y M w d h m s ms us``) it picks the shortest string, then the one with fewer blocks, then
    the one with larger units. So ``1h`` not ``60m``, ``1M`` not ``30d``, ``90s`` not ``1m30s``,
    ``1w`` not ``7d``, and zero is ``0s``. ``parse_duration(format_duration(td)) == td`` always.

    Raises:
        ValueError: if ``value`` is negative.

    """
    total = value // timedelta(microseconds=1)
    if total < 0:
        msg = "cannot format a negative duration"
        raise ValueError(msg)
    if total == 0:
        return "0s"
    best: tuple[int, int, tuple[int, ...], str] | None = None
    for chosen in itertools.product((True, False), repeat=len(_UNITS) - 1):
        parts = _greedy(total, [u for u, keep in zip(_UNITS, (*chosen, True), strict=True) if keep])
        text = "".join(f"{count}{symbol}" for symbol, count in parts)
        key = (len(text), len(parts), tuple(-_SYMBOLS[symbol] for symbol, _ in parts), text)
        if best is None or key < best:
            best = key
    assert best is not None
    return best[3]


_UNITS = tuple(_SYMBOLS)  # largest first, "us" last so that every remainder is expressible


def _greedy(total: int, units: list[str]) -> list[tuple[str, int]]:
    parts = []
    for symbol in units:
        count, total = divmod(total, _SYMBOLS[symbol])
        if count:
            parts.append((symbol, count))
    return parts
