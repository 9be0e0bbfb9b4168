"""The session payload codec (``redis_session._codec``)."""

from __future__ import annotations

import collections
import datetime as dt
import enum

import attrs
import msgpack
import pytest

from redis_session import SessionDataError
from redis_session._codec import Codec


class Level(enum.IntEnum):
    ONE = 1


class Colour(enum.StrEnum):
    RED = "red"


@attrs.define
class Profile:
    name: str
    groups: list[str]
    seen: dt.datetime
    tags: set[str] = attrs.Factory(set)
    level: Level = Level.ONE
    nested: dict[str, int] = attrs.Factory(dict)


NESTED = {
    "username": "john",
    "groups": ["admins", "dev"],
    "auth": {"level": 2, "factors": [{"kind": "totp", "ok": True}], "none": None},
    "ratio": 0.25,
    "raw": b"\x00\xff",
    "big": 2**63 - 1,
    "neg": -(2**63),
    "unicode": "żółć 🎉",
}


def test_dict_round_trip() -> None:
    """Nested plain data comes back equal, with created_at and remember_me."""
    codec = Codec(dict)
    assert codec.decode(codec.encode(1_700_000_000_123, True, NESTED)) == (
        1_700_000_000_123,
        True,
        NESTED,
    )


def test_dict_coercions() -> None:
    """Tuples become lists, enum and mapping subclasses become their base type."""
    codec = Codec(dict)
    data = {
        "t": (1, (2, 3)),
        "e": Level.ONE,
        "s": Colour.RED,
        "o": collections.OrderedDict(a=1),
        1: "int key",
        "ba": bytearray(b"xy"),
    }
    decoded = codec.decode(codec.encode(0, False, data))
    assert decoded is not None
    out = decoded[2]
    assert out == {"t": [1, [2, 3]], "e": 1, "s": "red", "o": {"a": 1}, 1: "int key", "ba": b"xy"}
    assert type(out["e"]) is int
    assert type(out["s"]) is str
    assert type(out["o"]) is dict


def test_tuple_keys_come_back_as_tuples() -> None:
    """A tuple map key (nested too) reads back as the same tuple, not an unhashable list."""
    codec = Codec(dict)
    data = {"k": {(1, 2): "a", (3, (4, "x")): [(5, 6)]}, "plain": 1}
    decoded = codec.decode(codec.encode(0, False, data))
    assert decoded is not None
    assert decoded[2] == {"k": {(1, 2): "a", (3, (4, "x")): [[5, 6]]}, "plain": 1}


def test_aware_datetime_round_trips_exactly() -> None:
    """An aware datetime comes back as the same instant in UTC, microseconds included."""
    codec = Codec(dict)
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    decoded = codec.decode(codec.encode(0, False, {"when": when}))
    assert decoded is not None
    assert decoded[2]["when"] == when
    assert decoded[2]["when"].tzinfo == dt.UTC


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (object(), "object"),
        (dt.date(2024, 1, 1), "date"),
        (Profile("x", [], dt.datetime.now(dt.UTC)), "Profile"),
    ],
)
def test_unserializable_names_the_type(value: object, type_name: str) -> None:
    """Data msgpack cannot store raises SessionDataError naming the type, not the value."""
    with pytest.raises(SessionDataError, match=type_name):
        Codec(dict).encode(0, False, {"key": value})


def test_naive_datetime_refused() -> None:
    """A naive datetime is refused rather than stored with a guessed timezone."""
    with pytest.raises(SessionDataError, match="naive datetime"):
        Codec(dict).encode(0, False, {"when": dt.datetime(2024, 1, 1)})


def test_out_of_range_int_refused() -> None:
    """Integers beyond 64 bits raise SessionDataError."""
    with pytest.raises(SessionDataError, match="OverflowError"):
        Codec(dict).encode(0, False, {"n": 2**64})


def test_wrong_top_level_type_refused() -> None:
    """The data must be an instance of the store's data_type."""
    with pytest.raises(SessionDataError, match="must be a dict, got list"):
        Codec(dict).encode(0, False, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(SessionDataError, match="must be a Profile, got dict"):
        Codec(Profile).encode(0, False, {"name": "x"})  # type: ignore[arg-type]


def test_attrs_round_trip() -> None:
    """An attrs class goes through the converter and comes back equal."""
    codec = Codec(Profile)
    value = Profile(
        "john",
        ["admins"],
        dt.datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=dt.UTC),
        {"a", "b"},
        Level.ONE,
        {"x": 1},
    )
    assert codec.decode(codec.encode(5, False, value)) == (5, False, value)


def test_attrs_accepts_float_timestamps() -> None:
    """A datetime field also structures from a float timestamp (the cattrs preset's format)."""
    payload = msgpack.packb([0, False, {"name": "x", "groups": [], "seen": 86400.5}])
    decoded = Codec(Profile).decode(payload)
    assert decoded is not None
    assert decoded[2].seen == dt.datetime(1970, 1, 2, 0, 0, 0, 500000, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, False]),
        msgpack.packb([1, False, {}, 4]),
        msgpack.packb(["1", False, {}]),
        msgpack.packb([1, 0, {}]),
        msgpack.packb([1, False, [1]]),
        msgpack.packb({"a": 1, "b": 2, "c": 3}),
        msgpack.packb("abc"),
        msgpack.packb([1.0, False, {}]),
        msgpack.packb([True, False, {}]),
    ],
)
def test_malformed_dict_payload_is_none(payload: bytes) -> None:
    """Any payload of the wrong shape decodes to None rather than raising."""
    assert Codec(dict).decode(payload) is None


@pytest.mark.parametrize(
    "raw",
    [{}, {"name": "x", "groups": 5, "seen": 0}, {"name": "x", "groups": [], "seen": "soon"}, []],
)
def test_attrs_payload_of_another_shape_is_none(raw: object) -> None:
    """A payload that no longer structures into the attrs class decodes to None."""
    assert Codec(Profile).decode(msgpack.packb([1, False, raw])) is None


def test_data_type_must_be_dict_or_attrs() -> None:
    """Only dict and attrs classes are accepted as data_type."""
    with pytest.raises(TypeError, match="data_type"):
        Codec(list)


def test_extension_values_read_back_as_stored() -> None:
    # The packer stores a msgpack ExtType as is; reading it back must give the same value
    # (not msgspec's own Ext), so that saving the loaded session again works.
    codec = Codec(dict)
    data = {"a": msgpack.ExtType(5, b"x"), "b": [msgpack.ExtType(127, b"")]}
    decoded = codec.decode(codec.encode(1, False, data))
    assert decoded == (1, False, data)
    assert codec.decode(codec.encode(*decoded)) == decoded


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def _call_deep(frames: int, fn: object) -> object:
    # Runs fn() under `frames` extra Python frames: a load called deep in an app's stack.
    if frames == 0:
        return fn()  # type: ignore[operator]
    return _call_deep(frames - 1, fn)


@pytest.mark.parametrize("depth", [400, 1000])
def test_deep_data_that_saved_loads_again_anywhere_in_the_stack(depth: int) -> None:
    # msgspec bounds nesting by the interpreter's recursion limit minus the caller's stack
    # depth; msgpack by a fixed stack. Whatever encode() accepted must decode, however deep
    # the caller is.
    codec = Codec(dict)
    data = {"a": _nested(depth)}
    payload = codec.encode(1, True, data)
    # Compared re-encoded: == on the nested lists would itself hit the recursion limit.
    decoded = codec.decode(payload)
    assert decoded is not None
    assert codec.encode(*decoded) == payload
    decoded = _call_deep(700, lambda: codec.decode(payload))  # type: ignore[assignment]
    assert decoded is not None
    assert codec.encode(*decoded) == payload
