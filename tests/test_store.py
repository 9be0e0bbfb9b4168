"""The session store, run against both providers: the in-memory one and a real redis-server."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import time
from typing import Any

import anyio
import attrs
import pytest

from redis_session import (
    ConfigError,
    SessionConflict,
    SessionDataError,
    StoreClosed,
    StoreUnavailable,
)
from redis_session._config_loading import load_config
from redis_session._crypto import KeyRing
from redis_session._opener import open_session_store
from redis_session._provider import CLOCK, CREATED, TAKEN
from redis_session._redis_provider import (
    _LOAD_ONE,
    _SAVE_PACKED,
    LOAD,
    SAVE,
    RedisProvider,
    _found,
    _found_slowly,
)
from redis_session._store import Session, SessionStore
from redis_session._wire import pack

from .pool_helpers import eventually
from .store_helpers import SECRET, Backend, raw_client

pytestmark = pytest.mark.anyio

NESTED = {
    "username": "john",
    "groups": ["admins", "dev"],
    "auth": {"level": 2, "factors": [{"kind": "totp", "ok": True}], "nothing": None},
    "ratio": 0.5,
    "raw": b"\x00\x01",
    "when": dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
}


@attrs.define
class Profile:
    username: str
    groups: list[str]
    level: int = 1
    last_seen: dt.datetime | None = None


@pytest.fixture
async def store(backend: Backend) -> SessionStore[Any]:
    """A store with the default durations."""
    return await backend.open()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- round trips -------------------------------------------------------------------------------


async def test_create_load_round_trip(store: SessionStore[Any]) -> None:
    """Nested data comes back equal from a load, with its timestamps."""
    before = _now()
    created = await store.create(NESTED)
    # On a cluster the id starts with a public three-character slot tag.
    assert len(created.id) == (46 if store._ids.tagged else 43)
    assert before - dt.timedelta(seconds=1) <= created.created_at <= _now()
    assert created.expires_at == created.created_at + dt.timedelta(hours=1)
    assert created.remember_me is False
    loaded = await store.load(created.id)
    assert loaded is not None
    assert loaded.id == created.id
    assert loaded.data == NESTED
    assert loaded.created_at == created.created_at
    assert loaded.expires_at == created.expires_at
    assert loaded.remember_me is False


async def test_attrs_data_type(backend: Backend) -> None:
    """An attrs data_type is stored through the converter and comes back as an instance."""
    store = await backend.open(data_type=Profile)
    value = Profile("john", ["admins"], 2, dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    created = await store.create(value)
    loaded = await store.load(created.id)
    assert loaded is not None
    assert loaded.data == value
    loaded.data.level = 3
    await store.save(loaded)
    again = await store.load(created.id)
    assert again is not None
    assert again.data.level == 3


async def test_attrs_payload_read_as_another_type_is_none(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """A payload that does not fit the data_type reads as None with a warning, not an error."""
    writer = await backend.open()
    reader = await backend.open(data_type=Profile)
    created = await writer.create({"not": "a profile"})
    with caplog.at_level(logging.WARNING, logger="redis_session"):
        assert await reader.load(created.id) is None
    assert "does not decode as Profile" in caplog.text
    assert await writer.load(created.id) is not None


async def test_save_persists_and_can_repeat(store: SessionStore[Any]) -> None:
    """A saved change is visible to the next load, and the same object can be saved again."""
    session = await store.create({"n": 0})
    for n in range(1, 4):
        session.data["n"] = n
        await store.save(session)
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"n": n}


async def test_unknown_id_is_none(store: SessionStore[Any]) -> None:
    """A well-formed id that was never issued reads as None."""
    assert await store.load("A" * 43) is None


@pytest.mark.parametrize(
    "session_id",
    ["", "a" * 101, "ünïcode", "has space", "semi;colon", "a/b", "a+b", "a=", "\x00", "a\n"],
)
async def test_garbage_id_is_none_without_round_trip(
    store: SessionStore[Any], session_id: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids that we could never have issued read as None before any storage access."""

    async def fail(*args: Any) -> None:
        raise AssertionError("storage was asked")

    monkeypatch.setattr(store._provider, "load", fail)
    monkeypatch.setattr(store._provider, "delete", fail)
    assert await store.load(session_id) is None
    await store.delete(session_id)


async def test_unserializable_data(store: SessionStore[Any]) -> None:
    """Data msgpack cannot take raises SessionDataError naming the type, on create and save."""
    with pytest.raises(SessionDataError, match="set"):
        await store.create({"s": {1, 2}})
    session = await store.create({})
    session.data["o"] = object()
    with pytest.raises(SessionDataError, match=r"builtins\.object"):
        await store.save(session)


async def test_oversized_data(backend: Backend) -> None:
    """Data above maximum_data_size is refused on create and save, naming the option."""
    store = await backend.open(maximum_data_size=200)
    with pytest.raises(SessionDataError, match=r"session\.maximum_data_size \(200 bytes\)"):
        await store.create({"x": "y" * 300})
    session = await store.create({"x": "small"})
    session.data["x"] = "y" * 300
    with pytest.raises(SessionDataError, match=r"is 3\d\d bytes serialized"):
        await store.save(session)
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"x": "small"}


# --- clocks ------------------------------------------------------------------------------------


async def test_idle_session_expires(backend: Backend) -> None:
    """A session not used for `inactivity` is gone."""
    store = await backend.open(expiration=10, inactivity=1)
    session = await store.create({"a": 1})
    await anyio.sleep(1.2)
    assert await store.load(session.id) is None


async def test_sliding_inactivity_then_absolute_end(backend: Backend) -> None:
    """Loads keep an active session alive past `inactivity`, but not past `expiration`."""
    store = await backend.open(expiration=3, inactivity=1)
    session = await store.create({"a": 1})
    start = time.monotonic()
    # Used every 0.3 s: idle never reaches 1 s, so it lives on past the first second.
    while time.monotonic() - start < 2.5:
        await anyio.sleep(0.3)
        assert await store.load(session.id) is not None, time.monotonic() - start
    deadline = session.expires_at.timestamp()
    await anyio.sleep(max(0.0, deadline - time.time()) + 0.1)
    assert await store.load(session.id) is None


async def test_save_slides_inactivity(backend: Backend) -> None:
    """A save counts as activity too."""
    store = await backend.open(expiration=10, inactivity=1)
    session = await store.create({"n": 0})
    for n in range(3):
        await anyio.sleep(0.6)
        session.data["n"] = n
        await store.save(session)
    assert await store.load(session.id) is not None


async def test_remember_me_ignores_inactivity(backend: Backend) -> None:
    """A remember-me session outlives `inactivity` and ends at `remember_me`."""
    store = await backend.open(expiration=1, inactivity=1, remember_me=2)
    session = await store.create({"a": 1}, remember_me=True)
    assert session.remember_me is True
    assert session.expires_at == session.created_at + dt.timedelta(seconds=2)
    await anyio.sleep(1.3)
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.remember_me is True
    assert loaded.expires_at == session.expires_at
    await anyio.sleep(max(0.0, session.expires_at.timestamp() - time.time()) + 0.1)
    assert await store.load(session.id) is None


async def test_ttl_never_above_either_limit(backend: Backend) -> None:
    """The stored TTL is min(absolute remaining, inactivity) after create, load and save."""
    store = await backend.open(expiration=2, inactivity="1500ms")
    started = time.time()
    session = await store.create({"a": 1})
    key = session._key

    def check(op_started: float) -> None:
        # The TTL is computed from the app's clock when the operation began; measured from that
        # instant (not from now, later), the key may not outlive either limit.
        remaining_ms = (session.expires_at.timestamp() - op_started) * 1000
        ttl = backend.pttl(key)
        assert 0 < ttl <= min(remaining_ms, 1500) + 1, (ttl, remaining_ms)

    check(started)
    assert backend.pttl(key) > 1300  # inactivity bounds it right after create
    await anyio.sleep(0.8)
    started = time.time()
    assert await store.load(session.id) is not None
    check(started)
    await anyio.sleep(0.5)
    started = time.time()
    await store.save(session)
    check(started)
    # Now less than 1.5 s of absolute life remain: the deadline bounds the TTL.
    assert backend.pttl(key) < 800


async def test_expired_session_cannot_be_saved(backend: Backend) -> None:
    """Saving a session that expired meanwhile is a conflict and writes nothing."""
    store = await backend.open(expiration=10, inactivity=1)
    session = await store.create({"a": 1})
    await anyio.sleep(1.2)
    with pytest.raises(SessionConflict):
        await store.save(session)
    assert backend.keys() == []


# --- what the storage holds --------------------------------------------------------------------


async def test_storage_holds_no_ids_and_no_plaintext(
    backend: Backend, store: SessionStore[Any]
) -> None:
    """No key holds a session id and no stored byte holds the plaintext."""
    marker = "plaintext-marker-0123456789"
    sessions = [await store.create({"user": marker, "n": n}) for n in range(5)]
    keys = backend.keys()
    assert len(keys) == 5
    dump = backend.dump()
    for s in sessions:
        assert s.id.encode() not in dump
        assert base64.urlsafe_b64decode(s.id[-43:] + "=") not in dump
    assert marker.encode() not in dump
    assert b"user" not in dump
    for key in keys:
        assert key.startswith(b"authelia_session:")
        assert set(backend.fields(key)) == {b"v", b"e", b"i", b"d"}
    if store._ids.tagged:
        # The slot tag is the id's public part: the key shows it, and nothing more of the id.
        assert sorted(key.split(b":")[1] for key in keys) == sorted(
            b"{%s}" % s.id[:3].encode() for s in sessions
        )


async def test_name_namespaces_keys(backend: Backend) -> None:
    """The cookie name is the key prefix."""
    store = await backend.open(name="myapp")
    await store.create({})
    (key,) = backend.keys()
    assert key.startswith(b"myapp:")


# --- tampering ---------------------------------------------------------------------------------


async def _assert_unreadable_and_kept(
    backend: Backend,
    store: SessionStore[Any],
    session: Session[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = session._key
    before = backend.fields(key)
    with caplog.at_level(logging.WARNING, logger="redis_session"):
        assert await store.load(session.id) is None
    assert "does not decrypt" in caplog.text
    assert session.id not in caplog.text
    assert key.decode() not in caplog.text
    assert backend.fields(key) == before


async def test_flipped_byte_in_blob(
    backend: Backend, store: SessionStore[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A flipped byte in the stored blob reads as None, is logged, and is not deleted."""
    session = await store.create({"a": 1})
    blob = bytearray(backend.fields(session._key)[b"d"])
    blob[-20] ^= 0x40
    backend.set_fields(session._key, {b"d": bytes(blob)})
    await _assert_unreadable_and_kept(backend, store, session, caplog)


async def test_blob_moved_to_another_key(
    backend: Backend, store: SessionStore[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A record copied onto another session's key does not decrypt there."""
    victim = await store.create({"user": "alice"})
    attacker = await store.create({"user": "mallory"})
    backend.set_fields(attacker._key, backend.fields(victim._key))
    await _assert_unreadable_and_kept(backend, store, attacker, caplog)
    loaded = await store.load(victim.id)
    assert loaded is not None
    assert loaded.data == {"user": "alice"}


async def test_record_from_another_secret(
    backend: Backend, store: SessionStore[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A record written under a secret this store does not know reads as None."""
    other = await backend.open(secret="some other secret entirely")
    foreign = await other.create({"user": "eve"})
    mine = await store.create({"user": "bob"})
    backend.set_fields(mine._key, backend.fields(foreign._key))
    await _assert_unreadable_and_kept(backend, store, mine, caplog)
    # And without copying, the other secret's sessions are simply not found.
    assert await store.load(foreign.id) is None


@pytest.mark.parametrize("field", [b"e", b"i", b"v"])
async def test_edited_clear_field(
    backend: Backend, store: SessionStore[Any], caplog: pytest.LogCaptureFixture, field: bytes
) -> None:
    """Extending the deadline, lifting the idle limit or changing the version breaks the blob."""
    session = await store.create({"a": 1})
    edits = {b"e": b"%d" % (time.time_ns() // 1_000_000 + 10**9), b"i": b"0", b"v": b"0" * 16}
    backend.set_fields(session._key, {field: edits[field]})
    await _assert_unreadable_and_kept(backend, store, session, caplog)


async def test_future_format_is_none(
    backend: Backend, store: SessionStore[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A blob in a format this version does not know reads as None."""
    session = await store.create({"a": 1})
    blob = backend.fields(session._key)[b"d"]
    backend.set_fields(session._key, {b"d": b"\x02" + blob[1:]})
    await _assert_unreadable_and_kept(backend, store, session, caplog)


# --- compare-and-set ---------------------------------------------------------------------------


async def test_concurrent_saves_conflict(backend: Backend) -> None:
    """Two loads then two saves: the second save raises and the first one's data stays."""
    a, b = await backend.open(), await backend.open()
    created = await a.create({"n": 0})
    first = await a.load(created.id)
    second = await b.load(created.id)
    assert first is not None
    assert second is not None
    first.data["n"] = 1
    second.data["n"] = 2
    await a.save(first)
    with pytest.raises(SessionConflict):
        await b.save(second)
    loaded = await b.load(created.id)
    assert loaded is not None
    assert loaded.data == {"n": 1}
    # Reloaded, the loser can apply its change.
    loaded.data["n"] = 2
    await b.save(loaded)


async def test_truly_concurrent_saves(backend: Backend) -> None:
    """Of many saves racing from the same version, exactly one wins."""
    store = await backend.open()
    created = await store.create({"n": -1})
    handles = [await store.load(created.id) for _ in range(8)]
    outcomes: list[int] = []

    async def save(n: int, session: Session[Any] | None) -> None:
        assert session is not None
        session.data["n"] = n
        try:
            await store.save(session)
        except SessionConflict:
            return
        outcomes.append(n)

    async with anyio.create_task_group() as group:
        for n, handle in enumerate(handles):
            group.start_soon(save, n, handle)
    assert len(outcomes) == 1
    loaded = await store.load(created.id)
    assert loaded is not None
    assert loaded.data == {"n": outcomes[0]}


async def test_save_after_delete_raises(store: SessionStore[Any], backend: Backend) -> None:
    """Delete then save cannot resurrect the session."""
    session = await store.create({"a": 1})
    loaded = await store.load(session.id)
    assert loaded is not None
    await store.delete(session.id)
    assert await store.load(session.id) is None
    with pytest.raises(SessionConflict):
        await store.save(loaded)
    assert await store.load(session.id) is None
    assert backend.keys() == []


async def test_delete_by_session_and_unknown(store: SessionStore[Any]) -> None:
    """Delete takes a Session or an id; unknown ids are fine."""
    session = await store.create({"a": 1})
    await store.delete(session)
    assert await store.load(session.id) is None
    await store.delete(session)
    await store.delete("A" * 43)


async def test_regenerate(store: SessionStore[Any], backend: Backend) -> None:
    """Regenerate moves the data to a new id; the old id and old handles die at once."""
    session = await store.create({"role": "guest"}, remember_me=True)
    other_handle = await store.load(session.id)
    assert other_handle is not None
    session.data["role"] = "admin"
    fresh = await store.regenerate(session)
    assert fresh.id != session.id
    assert fresh.data == {"role": "admin"}
    assert fresh.created_at == session.created_at
    assert fresh.expires_at == session.expires_at
    assert fresh.remember_me is True
    assert await store.load(session.id) is None
    loaded = await store.load(fresh.id)
    assert loaded is not None
    assert loaded.data == {"role": "admin"}
    assert loaded.remember_me is True
    # The old key holds only a short-lived tombstone (no version, no data): "moved".
    assert backend.keys() == sorted([session._key, fresh._key])
    assert backend.fields(session._key) == {b"m": b"1"}
    for stale in (session, other_handle):
        with pytest.raises(SessionConflict):
            await store.save(stale)
        with pytest.raises(SessionConflict):
            await store.regenerate(stale)
    fresh.data["role"] = "root"
    await store.save(fresh)


async def test_write_scripts_are_idempotent(backend: Backend, store: SessionStore[Any]) -> None:
    """Replaying a write that already applied (a retry after a lost reply) reports success."""
    provider = store._provider
    session = await store.create({"a": 1})
    payload = store._encode(session._created_ms, False, {"a": 2})
    record = store._seal(session._key, payload, session._deadline_ms, session._inactivity_ms)
    assert await provider.save(session._key, session._version, record)
    assert await provider.save(session._key, session._version, record)
    assert not await provider.save(session._key, b"f" * 16, attrs.evolve(record, version=b"1" * 16))
    new_key = session._key + b"x"
    moved = attrs.evolve(record, version=b"2" * 16)
    assert await provider.regenerate(session._key, new_key, record.version, moved)
    assert await provider.regenerate(session._key, new_key, record.version, moved)
    now = provider.now_ms()
    # Taken by this very record: a retry, so created.
    assert await provider.create(new_key, moved, now) == CREATED
    assert await provider.create(new_key, attrs.evolve(moved, version=b"3" * 16), now) == TAKEN


async def test_provider_expired_records(backend: Backend, store: SessionStore[Any]) -> None:
    """A record born past its deadline is refused (stamp again); moving one that expired fails.

    Reporting a born-dead record as created would let create() return a session that never
    loads.
    """
    provider = store._provider
    now = provider.now_ms()
    payload = store._encode(0, False, {})
    # One hash tag for every key: a move between two keys must stay in one slot on a cluster.
    dead = store._seal(b"authelia_session:{t}:dead", payload, now - 1, 0)
    assert await provider.create(b"authelia_session:{t}:dead", dead, now) == CLOCK
    assert await provider.load([b"authelia_session:{t}:dead"]) is None
    # Moving a session whose deadline passed (by the provider's clock) fails and ends it.
    key = b"authelia_session:{t}:brief"
    brief = store._seal(key, payload, now + 300, 0)
    assert await provider.create(key, brief, now) == CREATED
    assert await provider.load([key]) is not None
    moved = store._seal(b"authelia_session:{t}:moved", payload, now + 300, 0)
    await anyio.sleep(0.4)
    assert not await provider.regenerate(key, b"authelia_session:{t}:moved", brief.version, moved)
    assert await provider.load([key]) is None
    assert backend.keys() == []


async def test_save_refuses_other_clock_fields(store: SessionStore[Any]) -> None:
    """A save or move whose deadline or idle limit differs from the stored one is refused."""
    provider = store._provider
    session = await store.create({"a": 1})
    payload = store._encode(session._created_ms, False, {"a": 2})
    for deadline, inactivity in (
        (session._deadline_ms + 1, session._inactivity_ms),
        (session._deadline_ms, 0),
    ):
        record = store._seal(session._key, payload, deadline, inactivity)
        assert not await provider.save(session._key, session._version, record)
        assert not await provider.regenerate(
            session._key, session._key + b"x", session._version, record
        )
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"a": 1}


async def test_deleted_then_purged(backend: Backend) -> None:
    """Deleting, recreating and expiring many sessions leaves only the live ones behind."""
    store = await backend.open(expiration=10, inactivity=1)
    doomed = [await store.create({}) for _ in range(3)]
    await store.delete(doomed[0])
    regenerated = await store.regenerate(doomed[1])
    await anyio.sleep(1.1)
    survivor = await store.create({})
    assert backend.keys() == [survivor._key]
    assert await store.load(regenerated.id) is None


# --- rotation ----------------------------------------------------------------------------------


async def test_secret_rotation(backend: Backend) -> None:
    """With previous_secrets, old sessions still load; a save moves them to the new secret."""
    old = await backend.open(secret="the old secret")
    session = await old.create({"user": "john"})
    untouched = await old.create({"user": "jane"})
    rotated = await backend.open(secret="the new secret", previous_secrets=["the old secret"])
    loaded = await rotated.load(session.id)
    assert loaded is not None
    assert loaded.data == {"user": "john"}
    loaded.data["seen"] = True
    await rotated.save(loaded)
    # Saved under the new secret: a store that dropped the old one reads it, the old cannot.
    new_only = await backend.open(secret="the new secret")
    again = await new_only.load(session.id)
    assert again is not None
    assert again.data == {"user": "john", "seen": True}
    assert await old.load(session.id) is None
    assert len(backend.keys()) == 2
    assert await rotated.load(untouched.id) is not None
    assert await new_only.load(untouched.id) is None
    # A stale handle from before the move conflicts instead of writing the old key back.
    stale = await old.load(untouched.id)
    assert stale is not None
    await rotated.delete(untouched.id)
    with pytest.raises(SessionConflict):
        await old.save(stale)
    assert len(backend.keys()) == 1


async def test_rotation_through_several_secrets(backend: Backend) -> None:
    """A session written two rotations ago loads while its secret is still listed."""
    oldest = await backend.open(secret="secret one")
    session = await oldest.create({"v": 1})
    current = await backend.open(
        secret="secret three", previous_secrets=["secret two", "secret one"]
    )
    loaded = await current.load(session.id)
    assert loaded is not None
    assert loaded.data == {"v": 1}
    await current.delete(session.id)
    assert backend.keys() == []


# --- lifecycle ---------------------------------------------------------------------------------


async def test_closed_store_refuses(backend: Backend) -> None:
    """After aclose every operation raises StoreClosed; aclose twice is fine."""
    store = await backend.open()
    session = await store.create({})
    await store.aclose()
    await store.aclose()
    assert "closed" in repr(store)
    with pytest.raises(StoreClosed):
        await store.load(session.id)
    with pytest.raises(StoreClosed):
        await store.create({})
    with pytest.raises(StoreClosed):
        await store.save(session)
    with pytest.raises(StoreClosed):
        await store.delete(session)
    with pytest.raises(StoreClosed):
        await store.regenerate(session)


async def test_statistics_and_repr(backend: Backend, store: SessionStore[Any]) -> None:
    """Statistics are pool figures (zeros in memory); the repr summarises them."""
    await store.create({})
    stats = store.statistics()
    if backend.kind == "memory":
        assert (stats.max_connections, stats.open, stats.in_use, stats.waiting) == (0, 0, 0, 0)
        assert repr(store).startswith("<SessionStore memory, open [Connections: 0 open")
    else:
        assert stats.max_connections == 8
        assert stats.open >= 1
        assert repr(store).startswith("<SessionStore redis, open [Connections: ")
    assert "max | Commands: 0 waiting]>" in repr(store)


async def test_session_repr_hides_id(store: SessionStore[Any]) -> None:
    """A Session's repr shows four characters of the id and nothing private."""
    session = await store.create({"a": 1})
    text = repr(session)
    assert session.id not in text
    assert repr(session.id[:4] + "…") in text
    assert "_version" not in text
    assert "_key" not in text


async def test_session_fields_are_read_only(store: SessionStore[Any]) -> None:
    """Only data may be assigned on a Session."""
    session = await store.create({"a": 1})
    session.data = {"b": 2}
    with pytest.raises(AttributeError):
        session.id = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        session.expires_at = _now()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        session.other = 1  # type: ignore[attr-defined]
    await store.save(session)


async def test_cancelled_load_leaves_store_usable(store: SessionStore[Any]) -> None:
    """A load cancelled at its await does not break the next operations."""
    session = await store.create({"a": 1})
    for _ in range(20):
        with anyio.move_on_after(0):
            await store.load(session.id)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await store.save(session)
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"a": 1}


async def test_open_session_store_forms(backend: Backend, tmp_path: Any) -> None:
    """open_session_store can be awaited or entered, from a mapping, a document or a file."""
    mapping = backend.config()
    async with open_session_store({"session": mapping}) as store:
        s = await store.create({"a": 1})
        assert await store.load(s.id) is not None
    assert "closed" in repr(store)
    store = await open_session_store(mapping)
    try:
        # Memory sessions belong to their store; Redis ones outlive it.
        assert (await store.load(s.id) is None) is (backend.kind == "memory")
    finally:
        await store.aclose()
    async with open_session_store(load_config(mapping)) as from_object:
        assert (await from_object.load(s.id) is None) is (backend.kind == "memory")
    if backend.kind == "memory":
        path = tmp_path / "config.yml"
        path.write_text("session:\n  name: fromfile\n  expiration: 1h\n")
        async with open_session_store(path) as from_file:
            s = await from_file.create({})
            assert s.expires_at - s.created_at == dt.timedelta(hours=1)
            assert from_file._ids.prefix(s.id) == b"fromfile:"


async def test_store_as_context_manager_and_opener_reuse(backend: Backend) -> None:
    """A store closes at the end of `async with store`; an entered opener cannot be re-entered."""
    async with await open_session_store(backend.config()) as store:
        await store.create({})
    with pytest.raises(StoreClosed):
        await store.create({})
    opener = open_session_store(backend.config())
    async with opener:
        with pytest.raises(RuntimeError, match="already in use"):
            await opener.__aenter__()


async def test_invalid_config_refused() -> None:
    """An invalid configuration raises ConfigError naming the option, before any connection."""
    with pytest.raises(ConfigError, match=r"session\.redis\.port"):
        await open_session_store({"secret": SECRET, "redis": {"host": "127.0.0.1", "port": 0}})
    with pytest.raises(ConfigError, match=r"session\.secret"):
        await open_session_store({"redis": {"host": "127.0.0.1"}})


async def test_memory_store_without_secret() -> None:
    """Without redis and without a secret, the in-memory store works with a random key."""
    async with open_session_store({}) as store:
        s = await store.create({"a": 1})
        loaded = await store.load(s.id)
        assert loaded is not None
        assert loaded.data == {"a": 1}


async def test_bad_data_type_refused() -> None:
    """A data_type that is neither dict nor an attrs class is refused when opening."""
    with pytest.raises(TypeError, match="data_type"):
        await open_session_store({}, data_type=list)


async def test_memory_purges_untouched_expired_sessions(backend: Backend) -> None:
    """Expired sessions disappear from storage even if nobody loads them again."""
    store = await backend.open(expiration=10, inactivity=1)
    for _ in range(5):
        await store.create({})
    await anyio.sleep(1.1)
    await store.create({})
    assert len(backend.keys()) == 1


# --- Redis only --------------------------------------------------------------------------------


async def test_database_index_honoured(redis: Any) -> None:
    """Sessions land in the configured database, not in db 0."""
    cfg = {"secret": SECRET, "redis": redis.redis_section(database_index=3)}
    raw0, raw3 = raw_client(redis, 0), raw_client(redis, 3)
    try:
        async with open_session_store(cfg) as store:
            s = await store.create({"a": 1})
            assert raw0.dbsize() == 0
            assert raw3.dbsize() == 1
            assert raw3.exists(s._key)
            assert await store.load(s.id) is not None
    finally:
        raw0.close()
        raw3.close()


async def test_acl_credentials(acl_redis: Any) -> None:
    """An ACL user and password from the config are used end to end."""
    section = acl_redis.redis_section()
    assert section["username"] == "app"
    async with open_session_store({"secret": SECRET, "redis": section}) as store:
        s = await store.create({"a": 1})
        s.data["a"] = 2
        await store.save(s)
        loaded = await store.load(s.id)
        assert loaded is not None
        assert loaded.data == {"a": 2}
        await store.delete(s)
    bad = acl_redis.redis_section(password="wrong-password")
    with pytest.raises(StoreUnavailable):
        await open_session_store({"secret": SECRET, "redis": bad})


@pytest.mark.parametrize(
    ("field", "value"),
    [("e", "nan"), ("e", "inf"), ("e", "1e18"), ("e", "1.5"), ("i", "1.5"), ("i", "-1")],
)
async def test_non_integer_clock_fields(redis: Any, field: str, value: str) -> None:
    """Clock fields edited into non-integers read as None, block saves, and are kept."""
    raw = raw_client(redis)
    try:
        async with open_session_store({"secret": SECRET, "redis": redis.redis_section()}) as store:
            s = await store.create({"a": 1}, remember_me=True)
            raw.hset(s._key, field, value)
            assert await store.load(s.id) is None
            with pytest.raises(SessionConflict):
                await store.save(s)
            with pytest.raises(SessionConflict):
                await store.regenerate(s)
            assert raw.hget(s._key, field) == value.encode()
    finally:
        raw.close()


async def test_unreadable_hashes_are_none_and_kept(
    redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Non-numeric fields, or a key of another type, read as None; nothing is deleted."""
    raw = raw_client(redis)
    try:
        async with open_session_store({"secret": SECRET, "redis": redis.redis_section()}) as store:
            s = await store.create({"a": 1})
            raw.hset(s._key, "e", "soon")
            with caplog.at_level(logging.WARNING, logger="redis_session"):
                assert await store.load(s.id) is None
            assert "does not decrypt" in caplog.text
            assert raw.hget(s._key, "e") == b"soon"
            raw.delete(s._key)
            raw.set(s._key, "a string")
            assert await store.load(s.id) is None
            with pytest.raises(SessionConflict):
                await store.save(s)
            with pytest.raises(SessionConflict):
                await store.regenerate(s)
            assert raw.get(s._key) == b"a string"
    finally:
        raw.close()


async def test_load_raises_when_redis_is_down(fresh_redis: Any) -> None:
    """Load tells "store down" (StoreUnavailable) apart from "no session" (None)."""
    cfg = {"secret": SECRET, "redis": fresh_redis.redis_section(timeout=1)}
    async with open_session_store(cfg) as store:
        s = await store.create({"a": 1})
        fresh_redis.stop()
        with pytest.raises(StoreUnavailable):
            await store.load(s.id)


class _ReplicaRouting:
    """A manager whose reads are routed "to a replica": the same server, or a lagging copy."""

    def __init__(self, manager: Any, *, lagging: bool = False) -> None:
        self._manager = manager
        self.lagging = lagging
        self.failing = False
        self.read_only_calls = 0
        self.routes_reads = True
        self.sharded = False

    def slot_of(self, key: bytes) -> int:
        return int(self._manager.slot_of(key))

    def deadline(self) -> float:
        return float(self._manager.deadline())

    async def execute(self, *args: Any, read_only: bool = False, **kwargs: Any) -> Any:
        if read_only:
            self.read_only_calls += 1
            if self.failing:
                raise StoreUnavailable("replica down")
            if self.lagging:
                return [None, None, None, None]
        return await self._manager.execute(*args, read_only=read_only, **kwargs)

    async def run_script(self, *args: Any, read_only: bool = False, **kwargs: Any) -> Any:
        if read_only:
            self.read_only_calls += 1
            if self.failing:
                raise StoreUnavailable("replica down")
            if self.lagging:
                return None
        return await self._manager.run_script(*args, read_only=read_only, **kwargs)

    async def execute_packed(self, packed: bytes, **kwargs: Any) -> Any:
        # What the provider sends itself (a save): never read-only.
        assert not kwargs.get("read_only")
        return await self._manager.execute_packed(packed, **kwargs)

    def statistics(self) -> Any:
        return self._manager.statistics()

    def check_caller(self) -> None:
        self._manager.check_caller()

    async def aclose(self) -> None:
        await self._manager.aclose()


@pytest.mark.parametrize("lagging", [False, True])
async def test_replica_reads_during_rotation(redis: Any, lagging: bool) -> None:
    """With read routing and previous secrets, a load reads every key name on the "replica".

    A session found under the old name, moved by a save, then found under the new one; a key
    of another type is skipped with a warning (the replica's error does not escape).
    """
    old_cfg = {"secret": "the old secret", "redis": redis.redis_section()}
    cfg = {**old_cfg, "secret": SECRET, "previous_secrets": ["the old secret"]}
    async with open_session_store(old_cfg) as old, open_session_store(cfg) as store:
        provider = store._provider
        assert isinstance(provider, RedisProvider)
        routed = _ReplicaRouting(provider.manager, lagging=lagging)
        provider._manager = routed  # type: ignore[assignment]
        s = await old.create({"a": 1})
        loaded = await store.load(s.id)
        assert loaded is not None
        assert loaded._key == s._key
        await store.save(loaded)
        assert loaded._key != s._key
        again = await store.load(s.id)
        assert again is not None
        assert again.data == {"a": 1}
        assert routed.read_only_calls == 2
        assert await store.load("A" * 43) is None
        admin = redis.admin()
        admin.delete(again._key)
        admin.rpush(again._key, b"x")
        assert await store.load(s.id) is None


@pytest.mark.parametrize("lagging", [False, True])
async def test_replica_reads(redis: Any, lagging: bool) -> None:
    """With read routing, load reads on the replica and slides on the master; lag falls back."""
    cfg = {"secret": SECRET, "redis": redis.redis_section(), "inactivity": 2}
    async with open_session_store(cfg) as store:
        provider = store._provider
        assert isinstance(provider, RedisProvider)
        routed = _ReplicaRouting(provider.manager, lagging=lagging)
        provider._manager = routed  # type: ignore[assignment]
        s = await store.create({"a": 1})
        await anyio.sleep(0.5)
        loaded = await store.load(s.id)
        assert loaded is not None
        assert loaded.data == {"a": 1}
        assert routed.read_only_calls == 1
        # Slid by the master: back near 2 s, after 0.5 s of idling.
        assert 1600 < redis.admin().pttl(s._key) <= 2000
        await store.delete(s)
        assert await store.load(s.id) is None
        # A failing replica surfaces as the library's own error, not an exception group.
        s = await store.create({"a": 1})
        routed.failing = True
        with pytest.raises(StoreUnavailable, match="replica down"):
            await store.load(s.id)


async def test_load_script_on_expired_record_deletes(redis: Any) -> None:
    """The LOAD script deletes a record whose deadline passed by the server's clock."""
    async with open_session_store({"secret": SECRET, "redis": redis.redis_section()}) as store:
        s = await store.create({"a": 1})
        provider = store._provider
        assert isinstance(provider, RedisProvider)
        seconds, micros = redis.admin().time()
        redis.admin().hset(s._key, "e", seconds * 1000 + micros // 1000 - 1)
        assert await provider.manager.run_script(LOAD, (s._key,), ()) is None
        assert redis.admin().exists(s._key) == 0


@pytest.mark.parametrize("clock", [(0, 0), (1_732_340_000_000, 3_600_000), (2**63 - 1, 1)])
def test_hot_path_commands_pack_as_hiredis(clock: tuple[int, int]) -> None:
    """The provider's own packing of LOAD and SAVE gives the bytes hiredis packs."""
    key = b"rs:" + base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=")
    assert _LOAD_ONE % (len(key), key) == pack("EVALSHA", LOAD.sha, 1, key)
    expected, version, blob = b"0123456789abcdef", b"fedcba9876543210", bytes(range(256)) * 5
    e, i = (b"%d" % n for n in clock)
    mine = _SAVE_PACKED % (
        len(key), key, len(expected), expected, len(version), version,
        len(blob), blob, len(e), e, len(i), i,
    )  # fmt: skip
    assert mine == pack("EVALSHA", SAVE.sha, 1, key, expected, version, blob, *clock)


_V, _BLOB = b"0123456789abcdef", b"\x01" + bytes(40)


@pytest.mark.parametrize(
    "reply",
    [
        [_V, b"1700000000000", b"3600000", _BLOB, 1, None],
        [_V, b"1700000000000", b"0", _BLOB, 2, None],
        [_V, b"1700000000000", b"0", _BLOB, 1, b"rs:u:x"],
        [_V, b"1700000000000", b"3600000", _BLOB, 1],
        [_V, b"1700000000000", b"3600000", _BLOB, 1, b"rs:u:x", b"pid"],
        [_V, b"soon", b"3600000", _BLOB, 1, None],
        [_V, b"1700000000000", None, _BLOB, 1, None],
        [_V, b"1700000000000", b"0", None, 1, None],
        [_V, b"1700000000000", b"0", 7, 1, None],
        [_V, b"1700000000000", b"0", _BLOB, b"1", None],
        [_V, b"1700000000000", b"0", _BLOB, None, None],
        [None, None, None, None, None, None],
        None,
        0,
        b"list",
        [],
    ],
)
def test_load_reply_fast_path_agrees(reply: Any) -> None:
    """The one-step reading of the usual LOAD reply gives what the general one gives."""
    assert _found(reply) == _found_slowly(reply)


def test_keyring_of_store_hides_secret() -> None:
    """The store's key ring never shows the secret."""
    ring = KeyRing.from_secrets(SECRET)
    assert SECRET not in repr(ring)


async def test_replica_reads_on_a_real_replica(sentinel_cluster: Any) -> None:
    """Under Sentinel with route_randomly, loads read replicas yet always see the latest save."""
    cluster = sentinel_cluster
    section = cluster.redis_section(
        high_availability={
            **cluster.redis_section()["high_availability"],
            "route_randomly": True,
        }
    )
    cfg = {"secret": SECRET, "redis": section, "inactivity": 5}
    async with open_session_store(cfg) as store:
        await anyio.to_thread.run_sync(cluster.replica.admin().config_resetstat)
        for n in range(40):
            session = await store.create({"n": n})
            # Read straight after the write: a lagging replica must not hide it.
            loaded = await store.load(session.id)
            assert loaded is not None
            assert loaded.data == {"n": n}
            loaded.data["n"] = -n
            await store.save(loaded)
            again = await store.load(session.id)
            assert again is not None
            assert again.data == {"n": -n}
        stats = await anyio.to_thread.run_sync(cluster.replica.admin().info, "commandstats")
        assert stats.get("cmdstat_hmget", {}).get("calls", 0) > 0
        assert "cmdstat_evalsha" not in stats
        # After a rotation a load looks under two key names: the replica runs the read-only
        # READ script, and a session moved a moment ago is found under its new name.
        rotated_cfg = {**cfg, "secret": "the next secret", "previous_secrets": [SECRET]}
        async with open_session_store(rotated_cfg) as rotated:
            for n in range(20):
                session = await store.create({"n": n})
                loaded = await rotated.load(session.id)
                assert loaded is not None
                assert loaded.data == {"n": n}
                await rotated.save(loaded)
                again = await rotated.load(session.id)
                assert again is not None
                assert again._key != session._key
        stats = await anyio.to_thread.run_sync(cluster.replica.admin().info, "commandstats")
        errors = await anyio.to_thread.run_sync(cluster.replica.admin().info, "errorstats")
    assert stats.get("cmdstat_evalsha", {}).get("calls", 0) > 0
    # The replica learns the script from the first EVALSHA's NOSCRIPT; nothing else failed.
    assert set(errors) <= {"errorstat_NOSCRIPT"}, errors


async def test_aclose_cancelled_midway_still_closes_everything(redis: Any) -> None:
    """Cancelling aclose does not stop the cleanup half-way; a second aclose waits for it."""
    section = redis.redis_section(minimum_idle_connections=3, maximum_active_connections=4)
    store = await open_session_store({"secret": SECRET, "redis": section})
    assert len(redis.our_clients("redis_session")) == 3
    with anyio.CancelScope() as scope:
        scope.cancel()  # cancelled at its very first await
        await store.aclose()
    await store.aclose()
    assert store.statistics().open == 0

    async def none_left() -> bool:
        return not redis.our_clients("redis_session")

    await eventually(none_left, within=5.0)
