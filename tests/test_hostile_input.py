"""Hostile input: junk session ids, tampered records, unstorable data and hostile configs.

Everything runs against a real redis-server and, where the input can reach it, the in-memory
provider too. The promises under test: ``load`` of any string an attacker controls returns
``None`` (or, for a replayed whole record, that record's data) and never raises; ``delete`` of
junk does nothing; an id that is not a string at all is a bug in the app (``UsageError``);
unreadable records are left in place and logged without the session id or its Redis key; data
the serializer cannot take is a ``SessionDataError`` naming the type; a hostile configuration
is a ``ConfigError``. An autouse fixture captures every log record at DEBUG and fails the test
if a secret shows up in one.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import fractions
import logging
import string
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from redis_session import (
    ConfigError,
    RedisSessionError,
    SessionConflict,
    SessionDataError,
    UsageError,
    load_config,
)
from redis_session._store import Session, SessionStore

from .store_helpers import SECRET, Backend, make_backend

pytestmark = pytest.mark.anyio

ID_ALPHABET = string.ascii_letters + string.digits + "-_"
#: Unique markers: none of them may ever appear in a log record or an error message.
CONFIG_SECRET = "hostile-session-secret-marker"
SECRETS = (SECRET, CONFIG_SECRET)

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    # One storage for all examples of a test; each example creates its own sessions.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record_texts(record: logging.LogRecord) -> list[str]:
    """Every text a log record carries: message, raw args, formatted traceback."""
    texts = [str(record.msg), record.getMessage(), repr(record.args)]
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        texts.append(record.exc_text)
    if record.stack_info:
        texts.append(record.stack_info)
    return texts


def assert_not_logged(records: list[logging.LogRecord], *needles: str) -> None:
    """No record's message, args or traceback contains any of ``needles``."""
    for record in records:
        for text in _record_texts(record):
            for needle in needles:
                assert needle not in text, f"{needle[:12]}… leaked into a log record"


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture every log record at DEBUG; after the test, none may hold a secret."""
    caplog.set_level(logging.DEBUG)
    yield
    assert_not_logged(caplog.records, *SECRETS)


@pytest.fixture
async def redis_backend(redis: Any) -> AsyncIterator[Backend]:
    """The Redis backend alone, for attacks only a Redis writer can make."""
    b = make_backend("redis", redis)
    try:
        yield b
    finally:
        await b.aclose()
        b.close_raw()


@pytest.fixture
async def redis_store(redis_backend: Backend) -> SessionStore[Any]:
    """A store on the Redis backend with the default durations."""
    return await redis_backend.open()


@pytest.fixture
async def store(backend: Backend) -> SessionStore[Any]:
    """A store on ``backend`` with the default durations."""
    return await backend.open()


# --- session ids -------------------------------------------------------------------------------

JUNK_IDS = st.one_of(
    st.text(max_size=200),  # any unicode, lone surrogates included
    st.text(alphabet=ID_ALPHABET, max_size=130),  # well-formed, so a real lookup happens
    st.text(alphabet=ID_ALPHABET, min_size=43, max_size=43),  # exactly the shape of a real id
    st.binary(max_size=64),
    st.none(),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@FUZZ
@given(junk=JUNK_IDS)
async def test_junk_ids_load_none_and_delete_nothing(
    backend: Backend, store: SessionStore[Any], caplog: pytest.LogCaptureFixture, junk: Any
) -> None:
    """Any junk id loads as None without raising, and deleting it leaves real sessions alone.

    Junk that is not a string at all is refused with UsageError, before any storage access;
    ``None`` (no cookie) loads as no session, but deleting it is refused.
    """
    real = await store.create({"user": "alice"})
    keys = backend.keys()
    start = len(caplog.records)
    if isinstance(junk, str):
        assert await store.load(junk) is None
        await store.delete(junk)
    elif junk is None:
        assert await store.load(junk) is None
        with pytest.raises(UsageError):
            await store.delete(junk)
    else:
        with pytest.raises(UsageError):
            await store.load(junk)
        with pytest.raises(UsageError):
            await store.delete(junk)
    assert backend.keys() == keys
    loaded = await store.load(real.id)
    assert loaded is not None
    assert loaded.data == {"user": "alice"}
    # An unknown id is no event worth a warning.
    assert not [r for r in caplog.records[start:] if r.levelno >= logging.WARNING]
    await store.delete(real)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda _: "", id="empty"),
        pytest.param(lambda _: "A" * 1_000_000, id="one-megabyte"),
        pytest.param(lambda _: "A" * 100, id="longest-well-formed"),
        pytest.param(lambda _: "A" * 101, id="too-long"),
        pytest.param(lambda sid: sid + "=", id="padded"),
        pytest.param(lambda sid: " " + sid, id="leading-space"),
        pytest.param(lambda sid: sid + "\n", id="trailing-newline"),
        pytest.param(lambda sid: sid + "\x00", id="nul"),
        pytest.param(lambda sid: sid[:-1] + "\u0430", id="cyrillic-a"),
        pytest.param(lambda sid: "+/" + sid[2:], id="std-base64-chars"),
        pytest.param(lambda sid: "\uff21" + sid[1:], id="fullwidth"),
        pytest.param(lambda sid: sid + "\ud800", id="lone-surrogate"),
        pytest.param(lambda sid: sid.swapcase(), id="swapcase"),
        pytest.param(lambda sid: "%41" + sid[1:], id="percent-escape"),
    ],
)
async def test_edge_ids_load_none(backend: Backend, store: SessionStore[Any], make: Any) -> None:
    """Huge, empty, non-ASCII or re-encoded ids load as None; delete is a no-op."""
    real = await store.create({"user": "alice"})
    junk = make(real.id)
    assert await store.load(junk) is None
    await store.delete(junk)
    assert await store.load(real.id) is not None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda sid: sid.encode(), id="bytes"),
        pytest.param(lambda sid: bytearray(sid.encode()), id="bytearray"),
        pytest.param(lambda sid: memoryview(sid.encode()), id="memoryview"),
        pytest.param(lambda sid: [sid], id="list"),
    ],
)
async def test_wrongly_typed_ids_are_usage_errors(
    backend: Backend, store: SessionStore[Any], make: Any
) -> None:
    """An id of another type (the right bytes, even) is refused with UsageError, not ignored."""
    real = await store.create({"user": "alice"})
    junk = make(real.id)
    with pytest.raises(UsageError):
        await store.load(junk)
    with pytest.raises(UsageError):
        await store.delete(junk)
    assert await store.load(real.id) is not None


@FUZZ
@given(
    edit=st.sampled_from(["replace", "drop", "insert"]),
    index=st.integers(0, 42),
    char=st.sampled_from(ID_ALPHABET),
)
async def test_neighbour_ids_load_none(
    backend: Backend, store: SessionStore[Any], edit: str, index: int, char: str
) -> None:
    """Another session's id with one character changed, dropped or added loads as None."""
    real = await store.create({"user": "alice"})
    sid = real.id
    if edit == "replace":
        # Never the same character: rotate through the alphabet instead.
        if sid[index] == char:
            char = ID_ALPHABET[(ID_ALPHABET.index(char) + 1) % len(ID_ALPHABET)]
        neighbour = sid[:index] + char + sid[index + 1 :]
    elif edit == "drop":
        neighbour = sid[:index] + sid[index + 1 :]
    else:
        neighbour = sid[:index] + char + sid[index:]
    assert neighbour != sid
    assert await store.load(neighbour) is None
    await store.delete(neighbour)
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data == {"user": "alice"}
    await store.delete(real)


# --- tampered records --------------------------------------------------------------------------


def _unreadable_logged(
    records: list[logging.LogRecord], session: Session[Any], backend: Backend
) -> None:
    """One warning says the record does not decrypt; no record holds the id or its key."""
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert any("does not decrypt" in r.getMessage() for r in warnings)
    key = session._key.decode()
    assert_not_logged(records, session.id, key, key.partition(":")[2])
    if backend.raw is not None:
        assert backend.raw.exists(session._key) == 1


#: How to damage a blob; positions are taken modulo its length, so any draw applies.
BLOB_MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 2**16)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("flip"), st.lists(st.integers(0, 2**16), min_size=1, max_size=4)),
    st.tuples(st.just("overwrite"), st.integers(0, 2**16), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("replace"), st.binary(max_size=200)),
)


def mutate(blob: bytes, mutation: tuple[Any, ...]) -> bytes:
    """Apply one of ``BLOB_MUTATIONS`` to ``blob``."""
    kind, *args = mutation
    if kind == "truncate":
        return blob[: args[0] % len(blob)]
    if kind == "extend":
        return blob + args[0]
    if kind == "flip":
        out = bytearray(blob)
        for position in args[0]:
            bit = position % (len(blob) * 8)
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    if kind == "overwrite":
        start = args[0] % len(blob)
        return blob[:start] + args[1] + blob[start + len(args[1]) :]
    return bytes(args[0])


@FUZZ
@given(mutation=BLOB_MUTATIONS)
async def test_mutated_blob_is_none_kept_and_logged(
    backend: Backend,
    store: SessionStore[Any],
    caplog: pytest.LogCaptureFixture,
    mutation: tuple[Any, ...],
) -> None:
    """A truncated, extended or bit-flipped blob loads as None, stays stored, and is logged."""
    session = await store.create({"user": "alice", "groups": ["admins"]})
    blob = backend.fields(session._key)[b"d"]
    mutated = mutate(blob, mutation)
    assume(mutated != blob)  # an even number of flips of one bit, an identical overwrite
    backend.set_fields(session._key, {b"d": mutated})
    start = len(caplog.records)
    assert await store.load(session.id) is None
    _unreadable_logged(caplog.records[start:], session, backend)
    assert backend.fields(session._key)[b"d"] == mutated
    await store.delete(session)


def _as_int(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


#: Values for the clear fields ``e`` and ``i``: integers of any size written the usual way or
#: oddly (sign, zeros, spaces), and text that is no number at all. Non-integer *numbers*
#: ("1.5", "nan", "inf") are the subject of test_non_integer_clock_fields_load_none.
CLOCK_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(lambda n: b"%d" % n),
    st.integers(0, 2**50).map(lambda n: b"+%d" % n),
    st.integers(0, 2**50).map(lambda n: b" 00%d " % n),
    st.binary(max_size=24).map(lambda b: b"z" + b),
)


@FUZZ
@given(
    field=st.sampled_from([b"v", b"e", b"i"]), version=st.binary(max_size=40), clock=CLOCK_VALUES
)
async def test_mutated_clear_field_is_none(
    redis_backend: Backend,
    redis_store: SessionStore[Any],
    caplog: pytest.LogCaptureFixture,
    field: bytes,
    version: bytes,
    clock: bytes,
) -> None:
    """Edited v/e/i fields load as None and are kept, unless they end the record outright."""
    backend, store = redis_backend, redis_store
    session = await store.create({"user": "alice"})
    before = backend.fields(session._key)
    value = version if field == b"v" else clock
    number = None if field == b"v" else _as_int(value)
    # Written differently but the same number (" 007" for 7) is no tampering at all.
    assume(value != before[field] and (number is None or number != int(before[field])))
    backend.set_fields(session._key, {field: value})
    start = len(caplog.records)
    assert await store.load(session.id) is None
    records = caplog.records[start:]
    assert_not_logged(records, session.id, session._key.decode())
    now = _now_ms()
    if number is not None and field == b"e" and number <= now + 5_000:
        # The record's own deadline says it is over (or nearly): LOAD deletes it, or Redis
        # expires it. A writer could DEL it anyway; the point is that nothing raised.
        if number <= now - 5_000:
            assert backend.fields(session._key) == {}
    elif number is not None and field == b"i" and 0 < number <= 5_000:
        pass  # an idle limit of a few milliseconds: Redis may already have expired it
    else:
        _unreadable_logged(records, session, backend)
        assert backend.fields(session._key) == {**before, field: value}
    await store.delete(session)


@pytest.mark.parametrize(
    ("field", "value", "remember_me"),
    [
        (b"e", b"nan", False),
        (b"i", b"1.5", False),
        (b"e", b"inf", True),
        (b"e", b"1e18", True),
        (b"e", b"%d" % 2**63, True),
    ],
)
async def test_non_integer_clock_fields_load_none(
    redis_backend: Backend, field: bytes, value: bytes, remember_me: bool
) -> None:
    """A deadline or idle limit edited to a non-integer number loads as None, not an error."""
    store = await redis_backend.open()
    session = await store.create({"a": 1}, remember_me=remember_me)
    redis_backend.set_fields(session._key, {field: value})
    assert await store.load(session.id) is None
    assert redis_backend.fields(session._key)[field] == value


@pytest.mark.parametrize(
    ("remove", "warns"),
    [
        ([b"d"], True),
        ([b"e"], True),
        ([b"i"], True),
        ([b"e", b"i", b"d"], True),
        ([b"v"], False),  # without a version the hash is not a session record at all
    ],
)
async def test_record_with_missing_fields_is_none(
    redis_backend: Backend,
    caplog: pytest.LogCaptureFixture,
    remove: list[bytes],
    warns: bool,
) -> None:
    """A session hash with fields removed loads as None and is kept."""
    store = await redis_backend.open()
    session = await store.create({"a": 1})
    assert redis_backend.raw is not None
    redis_backend.raw.hdel(session._key, *remove)
    before = redis_backend.fields(session._key)
    start = len(caplog.records)
    assert await store.load(session.id) is None
    assert redis_backend.fields(session._key) == before
    if warns:
        _unreadable_logged(caplog.records[start:], session, redis_backend)
    assert_not_logged(caplog.records[start:], session.id, session._key.decode())


async def test_extra_hash_fields_are_ignored(redis_backend: Backend) -> None:
    """Fields a writer adds beside v/e/i/d change nothing: the session still loads."""
    store = await redis_backend.open()
    session = await store.create({"a": 1})
    assert redis_backend.raw is not None
    redis_backend.raw.hset(session._key, mapping={b"x": b"1", b"data": b"junk"})
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"a": 1}


def _replace_with(raw: Any, key: bytes, kind: str) -> Any:
    raw.delete(key)
    if kind == "string":
        raw.set(key, b"\x01" + b"x" * 60)
    elif kind == "list":
        raw.rpush(key, b"v", b"e", b"i", b"d")
    elif kind == "set":
        raw.sadd(key, b"v", b"d")
    elif kind == "zset":
        raw.zadd(key, {b"v": 1.0})
    else:
        raw.xadd(key, {b"v": b"1"})
    raw.pexpire(key, 60_000)
    return raw.dump(key)


@pytest.mark.parametrize("kind", ["string", "list", "set", "zset", "stream"])
async def test_key_of_another_type_is_none_and_kept(
    redis_backend: Backend, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A session key replaced by a string, list, set, zset or stream loads as None, untouched.

    The load logs a warning naming the type (never the id or key); ``save`` and ``regenerate``
    on it raise ``SessionConflict`` saying the key holds that type (never a bare redis-py
    error, never WRONGTYPE) and change nothing; ``delete`` of the id removes it.
    """
    store = await redis_backend.open()
    raw = redis_backend.raw
    assert raw is not None
    session = await store.create({"a": 1})
    dumped = _replace_with(raw, session._key, kind)
    start = len(caplog.records)
    assert await store.load(session.id) is None
    assert raw.dump(session._key) == dumped
    warnings = [r for r in caplog.records[start:] if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"ignoring a key that holds a Redis {kind} where a session's hash should be: not "
        "written by this library (left in place; the session reads as missing)"
    ]
    for operation in (store.save, store.regenerate):
        with pytest.raises(SessionConflict, match=f"^the session's key holds a Redis {kind}, "):
            await operation(session)
        assert raw.dump(session._key) == dumped
    assert_not_logged(caplog.records[start:], session.id, session._key.decode())
    await store.delete(session.id)
    assert raw.exists(session._key) == 0


async def test_records_swapped_between_sessions(
    backend: Backend, store: SessionStore[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Two sessions' records swapped with each other both load as None, and both stay."""
    alice = await store.create({"user": "alice"})
    mallory = await store.create({"user": "mallory"})
    a, m = backend.fields(alice._key), backend.fields(mallory._key)
    backend.set_fields(alice._key, m)
    backend.set_fields(mallory._key, a)
    start = len(caplog.records)
    assert await store.load(alice.id) is None
    assert await store.load(mallory.id) is None
    for session in (alice, mallory):
        _unreadable_logged(caplog.records[start:], session, backend)
    assert backend.fields(alice._key) == m
    assert backend.fields(mallory._key) == a


@FUZZ
@given(fields=st.lists(st.sampled_from([b"v", b"e", b"i", b"d"]), min_size=1, unique=True))
async def test_record_spliced_from_two_versions(
    backend: Backend, store: SessionStore[Any], fields: list[bytes]
) -> None:
    """Some fields of an older version of the same session, mixed with newer ones: None.

    Only the whole old record decrypts (the replay case): any strict subset of its fields
    differs from the current record in ``v`` or ``d``, which are bound together.
    """
    session = await store.create({"n": 1})
    old = backend.fields(session._key)
    session.data["n"] = 2
    await store.save(session)
    new = backend.fields(session._key)
    spliced = {**new, **{f: old[f] for f in fields}}
    backend.set_fields(session._key, spliced)
    loaded = await store.load(session.id)
    if spliced == old:
        assert loaded is not None
        assert loaded.data == {"n": 1}
    elif spliced == new:
        assert loaded is not None
        assert loaded.data == {"n": 2}
    else:
        assert loaded is None
        assert backend.fields(session._key) == spliced


async def test_replayed_whole_record_reads_old_data(
    backend: Backend, store: SessionStore[Any]
) -> None:
    """A whole earlier record written back decrypts: a replay by a writer is not detected.

    The replayed session is a real, authentic earlier state of the same session, so it loads
    with the old data. A handle saved since then no longer matches its version and conflicts
    rather than overwriting the replay silently.
    """
    session = await store.create({"role": "admin"})
    first = backend.fields(session._key)
    session.data["role"] = "guest"
    await store.save(session)
    backend.set_fields(session._key, first)
    replayed = await store.load(session.id)
    assert replayed is not None
    assert replayed.data == {"role": "admin"}
    session.data["role"] = "nobody"
    with pytest.raises(RedisSessionError):
        await store.save(session)


# --- session data the serializer cannot take -------------------------------------------------


class Colour(enum.Enum):
    """A plain (non-int) enum: not a msgpack type."""

    RED = "red"


class Opaque:
    """An arbitrary object."""


def _self_referencing_dict() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["self"] = d
    return d


def _self_referencing_list() -> dict[str, Any]:
    items: list[Any] = []
    items.append(items)
    return {"items": items}


def _deep(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(levels):
        node["x"] = {}
        node = node["x"]
    return root


UNSTORABLE = [
    pytest.param({"v": {1, 2}}, "set", id="set"),
    pytest.param({"v": frozenset({1})}, "frozenset", id="frozenset"),
    pytest.param({"v": Opaque()}, "Opaque", id="object"),
    pytest.param({"v": 1 + 2j}, "complex", id="complex"),
    pytest.param({"v": dt.datetime(2024, 1, 1)}, "naive datetime", id="naive-datetime"),
    pytest.param({"v": dt.date(2024, 1, 1)}, "date", id="date"),
    pytest.param({"v": dt.time(12)}, "time", id="time"),
    pytest.param({"v": dt.timedelta(1)}, "timedelta", id="timedelta"),
    pytest.param({"v": decimal.Decimal("1.5")}, "Decimal", id="decimal"),
    pytest.param({"v": fractions.Fraction(1, 3)}, "Fraction", id="fraction"),
    pytest.param({"v": uuid.UUID(int=1)}, "UUID", id="uuid"),
    pytest.param({"v": Colour.RED}, "Colour", id="enum"),
    pytest.param({"v": range(3)}, "range", id="range"),
    pytest.param({"v": (i for i in range(3))}, "generator", id="generator"),
    pytest.param({"v": len}, "builtin_function_or_method", id="function"),
    pytest.param({"v": Opaque}, "type", id="class"),
    pytest.param({"v": ...}, "ellipsis", id="ellipsis"),
    pytest.param({"v": collections.deque([1])}, "deque", id="deque"),
    pytest.param({Opaque(): 1}, "Opaque", id="object-key"),
    pytest.param({frozenset(): 1}, "frozenset", id="frozenset-key"),
    pytest.param(_self_referencing_dict(), "recursion", id="self-referencing-dict"),
    pytest.param(_self_referencing_list(), "recursion", id="self-referencing-list"),
    pytest.param(_deep(5_000), "recursion", id="deeply-nested"),
    pytest.param({"v": 2**64}, "out of range", id="int-2**64"),
    pytest.param({"v": -(2**63) - 1}, "out of range", id="int-below-int64"),
    pytest.param({"v": 10**5000}, "out of range", id="int-5000-digits"),
    pytest.param({"v": "\ud800"}, "surrogates", id="lone-surrogate"),
    pytest.param({"\udc80": 1}, "surrogates", id="lone-surrogate-key"),
    pytest.param({"v": "x" * 100_000}, "maximum_data_size", id="too-large"),
    pytest.param([1, 2], "must be a dict", id="list-not-dict"),
    pytest.param(collections.UserDict({"a": 1}), "must be a dict", id="userdict"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("data", "named"), UNSTORABLE)
async def test_unstorable_data_is_session_data_error(
    backend: Backend, store: SessionStore[Any], data: Any, named: str
) -> None:
    """create and save refuse what cannot be stored, naming it, and write nothing.

    The store stays fully usable: the next session round-trips exactly (no half-packed bytes
    left in the codec), and no connection is left in use.
    """
    with pytest.raises(SessionDataError, match=named) as info:
        await store.create(data)
    assert "session" in str(info.value)
    assert backend.keys() == []

    session = await store.create({"ok": True})
    before = backend.fields(session._key)
    session.data = data
    with pytest.raises(SessionDataError, match=named):
        await store.save(session)
    with pytest.raises(SessionDataError, match=named):
        await store.regenerate(session)
    assert backend.keys() == [session._key]
    assert backend.fields(session._key) == before

    session.data = {"ok": "again", "n": [1, 2]}
    await store.save(session)
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"ok": "again", "n": [1, 2]}
    stats = store.statistics()
    assert (stats.in_use, stats.waiting) == (0, 0)


@attrs.define
class Holder:
    """An attrs data type whose field is typed loosely."""

    value: Any


async def test_attrs_data_with_unstorable_field(backend: Backend) -> None:
    """An attrs session whose field holds an unstorable value is a SessionDataError."""
    store = await backend.open(data_type=Holder)
    with pytest.raises(SessionDataError, match="Opaque"):
        await store.create(Holder(Opaque()))
    with pytest.raises(SessionDataError, match="must be a Holder"):
        await store.create({"value": 1})
    assert backend.keys() == []


async def test_tuple_key_is_refused_or_round_trips(backend: Backend) -> None:
    """A tuple dict key is either refused on create or read back: never stored unreadable."""
    store = await backend.open()
    try:
        session = await store.create({"k": {(1, 2): "v"}})
    except SessionDataError:
        return
    loaded = await store.load(session.id)
    assert loaded is not None


LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(9000, 1, 1),
        timezones=st.just(dt.UTC)
        | st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
    ),
)
#: Map keys that the codec documents (str, int, float, bool, None, bytes); tuple keys are the
#: subject of test_tuple_key_is_refused_or_round_trips.
MAP_KEYS = st.one_of(
    st.text(max_size=8), st.integers(-(2**63), 2**64 - 1), st.binary(max_size=8), st.none()
)
VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(MAP_KEYS, children, max_size=4)
    ),
    max_leaves=20,
)
#: Values the codec refuses wherever they appear.
POISON = st.sampled_from(
    [{1}, Opaque(), 1j, dt.datetime(2024, 1, 1), 2**64, -(2**63) - 1, "\ud800"]
)


def _expected(value: Any) -> Any:
    """What a stored value reads back as: tuples become lists, datetimes move to UTC."""
    if isinstance(value, tuple | list):
        return [_expected(v) for v in value]
    if isinstance(value, dict):
        return {k: _expected(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return value


def _contains_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, tuple | list):
        return any(_contains_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_surrogate(k) or _contains_surrogate(v) for k, v in value.items())
    return False


@FUZZ
@given(
    data=st.dictionaries(st.text(max_size=8), VALUES, max_size=5),
    poison=st.none() | POISON,
    where=st.text(max_size=4),
)
async def test_data_round_trips_or_is_refused(
    backend: Backend, store: SessionStore[Any], data: dict[str, Any], poison: Any, where: str
) -> None:
    """Any nesting of storable values round-trips exactly; one unstorable value anywhere is a
    SessionDataError and nothing is written."""
    if poison is not None:
        data = {**data, where: [poison]}
    keys = backend.keys()
    if poison is not None or _contains_surrogate(data):
        with pytest.raises(SessionDataError):
            await store.create(data)
        assert backend.keys() == keys
        return
    session = await store.create(data)
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == _expected(data)
    await store.delete(session)


# --- hostile configurations ------------------------------------------------------------------


def assert_config_error_without_secrets(source: Any) -> None:
    """``load_config(source)`` loads, or raises ConfigError whose text holds no secret.

    Any other exception is turned into an AssertionError naming it (so an expected failure
    can say exactly what it expects).
    """
    try:
        load_config(source)
    except ConfigError as exc:
        texts = [str(exc), repr(exc), *map(str, exc.problems), *map(repr, exc.problems)]
        for text in texts:
            for secret in SECRETS:
                assert secret not in text, "a secret leaked into a ConfigError"
    except Exception as exc:
        leaked = any(secret in str(exc) for secret in SECRETS)
        msg = f"load_config raised {type(exc).__name__}, not ConfigError (secret shown: {leaked})"
        raise AssertionError(msg) from None


SECRET_SLOTS = st.sampled_from(
    [
        ("secret",),
        ("previous_secrets",),
        ("redis", "password"),
        ("redis", "high_availability", "sentinel_password"),
    ]
)
#: Where a secret can sit and how wrongly: right type, wrong type, nested in junk.
SECRET_SHAPES = st.sampled_from(
    [
        CONFIG_SECRET,
        [CONFIG_SECRET],
        [CONFIG_SECRET, 1, None, ""],
        {"value": CONFIG_SECRET},
        {CONFIG_SECRET: CONFIG_SECRET},
        {"nested": [CONFIG_SECRET]},
        (CONFIG_SECRET,),
        CONFIG_SECRET.encode(),
    ]
)
JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["1h", "0", "-1", "TLS1.0", "SSLv3", "[::1]", "/tmp/s", "", "h:1"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
OPTIONS = st.sampled_from(
    [
        ("name",),
        ("expiration",),
        ("inactivity",),
        ("domain",),
        ("maximum_data_size",),
        ("redis",),
        ("redis", "host"),
        ("redis", "port"),
        ("redis", "username"),
        ("redis", "tls"),
        ("redis", "tls", "minimum_version"),
        ("redis", "high_availability"),
        ("redis", "high_availability", "nodes"),
        ("redis", "bogus"),
        ("bogus",),
    ]
)


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = doc
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


@settings(max_examples=150, derandomize=True, deadline=None)
@given(
    secrets=st.lists(st.tuples(SECRET_SLOTS, SECRET_SHAPES), min_size=1, max_size=4),
    junk=st.lists(st.tuples(OPTIONS, JUNK), max_size=3),
)
def test_secrets_never_in_config_errors(
    secrets: list[tuple[tuple[str, ...], Any]], junk: list[tuple[tuple[str, ...], Any]]
) -> None:
    """However wrong the document around them, secrets never appear in a ConfigError."""
    doc: dict[str, Any] = {"redis": {"host": "127.0.0.1"}}
    for path, value in junk:
        _put(doc, path, value)
    for path, value in secrets:
        _put(doc, path, value)
    assert_config_error_without_secrets(doc)
    assert_config_error_without_secrets({"session": doc})


HOSTILE_YAML = {
    "recursive-alias": "session:\n  previous_secrets: &a [*a]\n",
    "recursive-mapping": "session: &a\n  redis: *a\n",
    "billion-laughs": (
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        f"session:\n  secret: {CONFIG_SECRET}\n  previous_secrets: *f\n"
    ),
    "python-object-tag": f"session:\n  secret: !!python/object:os.system {CONFIG_SECRET}\n",
    "python-name-tag": f"session:\n  secret: !!python/name:os.system {CONFIG_SECRET}\n",
    "set-tag": f"session:\n  secret: !!set {{{CONFIG_SECRET}}}\n",
    "binary-tag": f"session:\n  secret: !!binary {CONFIG_SECRET}\n",
    "str-tag-on-mapping": f"session:\n  secret: !!str {{a: {CONFIG_SECRET}}}\n",
    "unknown-tag": f"session:\n  secret: !vault {CONFIG_SECRET}\n",
    "unhashable-key": f"session:\n  ? [a, b]\n  : {CONFIG_SECRET}\n",
    "binary-key": "session:\n  ? !!binary aGVsbG8=\n  : 1\n",
    "bad-merge": f"session:\n  <<: 5\n  secret: {CONFIG_SECRET}\n",
    "tab-indent": f"session:\n\tsecret: {CONFIG_SECRET}\n",
    "bad-escape": f'session:\n  secret: "{CONFIG_SECRET}\\q"\n',
    "unterminated-quote": f'session:\n  secret: "{CONFIG_SECRET}\n',
    "duplicate-key": f"session:\n  secret: {CONFIG_SECRET}\n  secret: {CONFIG_SECRET}\n",
    "not-utf8": b"session:\n  secret: " + CONFIG_SECRET.encode() + b"\xff\xfe\n",
    "nul-byte": b"session:\n  secret: " + CONFIG_SECRET.encode() + b"\x00\n",
    "secret-is-a-mapping": f"session:\n  secret: {{{CONFIG_SECRET}: 1}}\n",
    "port-not-a-number": f"session:\n  secret: {CONFIG_SECRET}\n  redis: {{host: h, port: x}}\n",
    "empty": "",
    "only-comment": "# nothing\n",
    "scalar-document": f"{CONFIG_SECRET}\n",
    "multi-document": f"session: {{}}\n---\nsession:\n  secret: {CONFIG_SECRET}\n",
}


@pytest.mark.parametrize("text", list(HOSTILE_YAML.values()), ids=list(HOSTILE_YAML))
def test_hostile_yaml_is_config_error(tmp_path: Path, text: str | bytes) -> None:
    """A hostile YAML file loads or is a ConfigError, in bounded time, showing no secret."""
    path = tmp_path / "config.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_config_error_without_secrets(path)


YAML_BUGS = {
    "int-tag": f"session:\n  secret: !!int {CONFIG_SECRET}\n",
    "float-tag": f"session:\n  secret: !!float {CONFIG_SECRET}\n",
    "bool-tag": f"session:\n  secret: !!bool {CONFIG_SECRET}\n",
    "timestamp-tag": "session:\n  secret: !!timestamp 2024-13-45x\n",
    "impossible-date": "session:\n  secret: !!timestamp 2024-02-30\n",
    "deep-nesting": "session:\n  previous_secrets: " + "[" * 5000 + "]" * 5000 + "\n",
    "5000-digit-integer": "session:\n  redis: {host: h, port: " + "9" * 5000 + "}\n",
}


@pytest.mark.parametrize("text", list(YAML_BUGS.values()), ids=list(YAML_BUGS))
def test_yaml_constructor_errors_are_config_errors(tmp_path: Path, text: str) -> None:
    """Explicitly tagged scalars that do not parse, and absurd nesting, are ConfigErrors."""
    path = tmp_path / "config.yml"
    path.write_text(text)
    assert_config_error_without_secrets(path)


def test_unprintable_unknown_key_is_config_error() -> None:
    """An unknown option named by a 5000-digit integer is reported as a ConfigError."""
    assert_config_error_without_secrets({10**5000: 1})


def test_yaml_module_is_the_safe_loader() -> None:
    """The loader is a SafeLoader: python/* tags are refused, never executed."""
    from redis_session._config_loading import _yaml_loader  # noqa: PLC0415

    assert issubclass(_yaml_loader(), yaml.SafeLoader)
