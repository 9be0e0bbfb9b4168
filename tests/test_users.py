"""Sessions that belong to a user (issue 13): public ids, lists, revocation and limits.

Every test runs on each backend (memory, one Redis server, a real three-master cluster): the
memory provider and the Lua scripts must agree. Command counts come from the servers' own
``INFO commandstats``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from redis_session import (
    SessionConflict,
    SessionDataError,
    SessionInfo,
    SessionLimitReached,
    UsageError,
    open_session_store,
)
from redis_session import _redis_provider as redis_provider
from redis_session._ids import key_slot
from redis_session._redis_provider import REVOKE_ALL
from redis_session._scripts import Script
from redis_session._store import SessionStore

from .store_helpers import Backend, make_backend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(backend: Backend) -> SessionStore[Any]:
    return await backend.open()


def _ids(infos: list[SessionInfo]) -> set[str]:
    return {info.public_id for info in infos}


def _script_calls(backend: Backend) -> int:
    """EVALSHA and EVAL calls the Redis servers ran since their stats were reset."""
    assert backend.raw is not None
    nodes = backend.raw.get_primaries() if backend.kind == "cluster" else None  # type: ignore[union-attr]
    total = 0
    clients = [backend.raw.get_redis_connection(n) for n in nodes] if nodes else [backend.raw]  # type: ignore[union-attr]
    for client in clients:
        stats = client.info("commandstats")
        total += sum(
            int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval")
        )
    return total


def _reset_stats(backend: Backend) -> None:
    assert backend.raw is not None
    if backend.kind == "cluster":
        for node in backend.raw.get_primaries():  # type: ignore[union-attr]
            backend.raw.get_redis_connection(node).config_resetstat()  # type: ignore[union-attr]
    else:
        backend.raw.config_resetstat()


# -- step 1: public ids, users attached at login ---------------------------------------------------


async def test_create_with_user(store: SessionStore[Any], backend: Backend) -> None:
    session = await store.create(
        {"n": 1}, user="alice", metadata={"ua": "Firefox", "ip": "10.0.0.9"}
    )
    assert session.public_id is not None
    assert len(session.public_id) == 38
    assert session.public_id != session.id
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"n": 1}
    assert loaded.public_id == session.public_id
    [info] = await store.list_sessions("alice")
    assert info.public_id == session.public_id
    assert info.metadata == {"ua": "Firefox", "ip": "10.0.0.9"}
    assert info.created_at == session.created_at
    assert info.remember_me is False
    assert info.created_at <= info.last_active_at <= info.expires_at <= session.expires_at
    assert await store.list_sessions("bob") == []
    # The user and the metadata are stored only hashed and encrypted.
    dump = backend.dump()
    assert b"alice" not in dump
    assert b"Firefox" not in dump
    assert b"10.0.0.9" not in dump
    # A public id never loads.
    assert await store.load(session.public_id) is None


async def test_user_session_without_user_unchanged(store: SessionStore[Any]) -> None:
    session = await store.create({"n": 1})
    assert session.public_id is None
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.public_id is None


async def test_login_by_regenerate(store: SessionStore[Any]) -> None:
    anonymous = await store.create({"cart": [1]})
    session = await store.regenerate(anonymous, user="alice", metadata={"method": "password"})
    assert session.public_id is not None
    assert session.id != anonymous.id
    assert session.created_at == anonymous.created_at
    assert session.expires_at == anonymous.expires_at
    assert (await store.lookup(anonymous.id)).moved
    loaded = await store.load(session.id)
    assert loaded is not None
    assert loaded.data == {"cart": [1]}
    assert loaded.public_id == session.public_id
    [info] = await store.list_sessions("alice")
    assert info.public_id == session.public_id
    assert info.metadata == {"method": "password"}
    # The old handle lost the race: a second login from it is a conflict.
    with pytest.raises(SessionConflict):
        await store.regenerate(anonymous, user="alice")
    assert _ids(await store.list_sessions("alice")) == {session.public_id}


async def test_login_switching_to_remember_me(store: SessionStore[Any]) -> None:
    anonymous = await store.create({})
    session = await store.regenerate(anonymous, user="alice", remember_me=True)
    assert session.remember_me
    [info] = await store.list_sessions("alice")
    assert info.remember_me
    assert info.created_at == session.created_at


async def test_user_session_keeps_its_user(store: SessionStore[Any]) -> None:
    first = await store.create({"n": 1}, user="alice", metadata={"ua": "a"})
    first.data["n"] = 2
    await store.save(first)
    second = await store.regenerate(first)
    assert second.public_id == first.public_id
    third = await store.regenerate(second, user="alice", metadata={"ua": "b"}, remember_me=True)
    assert third.public_id == first.public_id
    loaded = await store.load(third.id)
    assert loaded is not None
    assert loaded.data == {"n": 2}
    assert loaded.public_id == first.public_id
    [info] = await store.list_sessions("alice")
    assert info.metadata == {"ua": "b"}
    assert info.remember_me
    with pytest.raises(UsageError, match="another user"):
        await store.regenerate(loaded, user="bob")


async def test_bad_arguments(store: SessionStore[Any]) -> None:
    with pytest.raises(UsageError, match="user"):
        await store.create({}, user="")
    with pytest.raises(UsageError, match="user"):
        await store.create({}, user=3)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="needs user"):
        await store.create({}, metadata={"a": 1})
    with pytest.raises(UsageError, match="mapping"):
        await store.create({}, user="alice", metadata=[1])  # type: ignore[arg-type]
    with pytest.raises(SessionDataError, match="JSON"):
        await store.create({}, user="alice", metadata={"when": dt.datetime.now(dt.UTC)})
    with pytest.raises(UsageError, match="str"):
        await store.revoke(5)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        await store.list_sessions(None)  # type: ignore[arg-type]
    assert await store.list_sessions("alice") == []


async def test_index_secret_survives_rotation(backend: Backend) -> None:
    old = await backend.open(secret="the old secret, long enough to count as one")
    session = await old.create({}, user="alice", metadata={"ua": "x"})
    rotated = await backend.open(
        secret="the new secret, long enough to count as one",
        previous_secrets=["the old secret, long enough to count as one"],
        index_secret="the old secret, long enough to count as one",
    )
    [info] = await rotated.list_sessions("alice")
    assert info.public_id == session.public_id
    assert info.metadata == {"ua": "x"}
    loaded = await rotated.load(session.id)
    assert loaded is not None
    await rotated.save(loaded)  # moves it to the new secret's key name, entry included
    assert _ids(await rotated.list_sessions("alice")) == {session.public_id}
    await rotated.revoke_user("alice")
    assert await rotated.load(session.id) is None
    # Without index_secret the rotated store sees another index: nothing listed.
    other = await backend.open(secret="the new secret, long enough to count as one")
    assert await other.list_sessions("alice") == []


# -- step 2: listing and pruning ------------------------------------------------------------


async def test_list_drops_deleted_and_expired(backend: Backend) -> None:
    store = await backend.open(inactivity="1s")
    gone = await store.create({}, user="alice")
    kept = await store.create({}, user="alice", remember_me=True)
    deleted = await store.create({}, user="alice")
    await store.delete(deleted)
    assert _ids(await store.list_sessions("alice")) == {gone.public_id, kept.public_id}
    await anyio.sleep(1.3)
    assert _ids(await store.list_sessions("alice")) == {kept.public_id}
    # The index holds no member for the expired or deleted sessions.
    assert kept.public_id is not None
    if backend.raw is not None:
        stored = backend.keys()
        index = [k for k in stored if k.endswith(b":e")]
        assert len(index) == 1
        assert set(backend.raw.hkeys(index[0])) == {kept.public_id.encode()}  # type: ignore[arg-type]
    else:
        assert backend._memory is not None
        [user] = backend._memory._users.values()
        assert set(user.entries) == {kept.public_id.encode()}
        assert set(user.metadata) <= {kept.public_id.encode()}


async def test_index_disappears_with_last_session(backend: Backend) -> None:
    store = await backend.open(expiration="1s", inactivity="1s")
    await store.create({}, user="alice", metadata={"ua": "x"})
    await anyio.sleep(1.3)
    assert await store.list_sessions("alice") == []
    # (The memory provider drops expired entries at its next operation, as here.)
    assert await store.load("x" * 43) is None
    assert backend.keys() == []
    if backend.kind == "memory":
        assert backend._memory is not None
        assert backend._memory._users == {}


# -- step 3: revoke ---------------------------------------------------------------------------


async def test_revoke_one(store: SessionStore[Any]) -> None:
    a = await store.create({}, user="alice")
    b = await store.create({}, user="alice")
    assert a.public_id is not None
    assert await store.revoke(a.public_id)
    assert not await store.revoke(a.public_id)
    assert await store.load(a.id) is None
    assert await store.load(b.id) is not None
    assert _ids(await store.list_sessions("alice")) == {b.public_id}
    with pytest.raises(SessionConflict):
        await store.save(a)
    for bogus in ("", "x" * 38, a.public_id[:-1], a.id):
        assert not await store.revoke(bogus)


async def test_revoke_user_and_keep(store: SessionStore[Any]) -> None:
    sessions = [await store.create({"n": n}, user="alice") for n in range(5)]
    other = await store.create({}, user="bob")
    here = sessions[2]
    assert here.public_id is not None
    loaded_before = await store.load(sessions[0].id)
    assert loaded_before is not None
    await store.revoke_user("alice", keep=here.public_id)
    for s in sessions:
        assert (await store.load(s.id) is None) == (s is not here)
    assert _ids(await store.list_sessions("alice")) == {here.public_id}
    assert await store.load(other.id) is not None
    # A handle loaded before the revocation cannot bring its session back.
    with pytest.raises(SessionConflict):
        await store.save(loaded_before)
    with pytest.raises(SessionConflict):
        await store.regenerate(loaded_before)
    # The kept session still works, moves and can be revoked later.
    kept = await store.load(here.id)
    assert kept is not None
    moved = await store.regenerate(kept)
    await store.save(moved)
    # A login after the revocation lives.
    fresh = await store.create({}, user="alice")
    assert _ids(await store.list_sessions("alice")) == {here.public_id, fresh.public_id}
    await store.revoke_user("alice")
    assert await store.load(moved.id) is None
    assert await store.load(fresh.id) is None
    assert await store.list_sessions("alice") == []
    with pytest.raises(UsageError, match="keep"):
        await store.revoke_user("bob", keep=here.public_id)
    await store.revoke_user("nobody")


async def test_revoke_user_thousand_sessions_one_round_trip(backend: Backend) -> None:
    store = await backend.open()
    sessions = [await store.create({}, user="alice") for _ in range(1000)]
    assert len(await store.list_sessions("alice")) == 1000
    # The script in every master's cache, so the count below has no NOSCRIPT fallback (on a
    # cluster another user's revoke could have warmed another master than alice's).
    if backend.raw is not None:
        clients = (
            [backend.raw.get_redis_connection(n) for n in backend.raw.get_primaries()]  # type: ignore[union-attr]
            if backend.kind == "cluster"
            else [backend.raw]
        )
        for client in clients:
            client.script_load(REVOKE_ALL.source)
        _reset_stats(backend)
    await store.revoke_user("alice")
    if backend.raw is not None:
        assert _script_calls(backend) == 1
    for s in sessions:
        assert await store.load(s.id) is None
    assert await store.list_sessions("alice") == []


async def test_revoke_races_saves_and_regenerates(backend: Backend) -> None:
    """Saves, loads and regenerates running while revoke_user runs never revive a session."""
    stores = [await backend.open() for _ in range(3)]
    handles = [await stores[n % 3].create({"n": n}, user="alice") for n in range(12)]

    async def churn(n: int) -> None:
        store = stores[n % 3]
        session = handles[n]
        for step in range(6):
            try:
                if step % 2:
                    session = await store.regenerate(session)
                else:
                    session.data["n"] += 1
                    await store.save(session)
            except SessionConflict:
                return  # the revocation won the race
            handles[n] = session

    async def revoke() -> None:
        await stores[0].revoke_user("alice")

    async with anyio.create_task_group() as group:
        for n in range(12):
            group.start_soon(churn, n)
        group.start_soon(revoke)
    for n, session in enumerate(handles):
        assert await stores[1].load(session.id) is None
        with pytest.raises(SessionConflict):
            await stores[n % 3].save(session)
    assert await stores[0].list_sessions("alice") == []


# -- step 4: limits ---------------------------------------------------------------------------


async def test_limit_deny(backend: Backend) -> None:
    store = await backend.open(max_sessions_per_user=2)
    a = await store.create({}, user="alice")
    await store.create({}, user="alice")
    anonymous = await store.create({"x": 1})
    with pytest.raises(SessionLimitReached, match="max_sessions_per_user"):
        await store.create({}, user="alice")
    with pytest.raises(SessionLimitReached):
        await store.regenerate(anonymous, user="alice")
    # Nothing changed: the anonymous session still works under its id.
    assert await store.load(anonymous.id) is not None
    assert len(await store.list_sessions("alice")) == 2
    await store.create({}, user="bob")
    await store.delete(a)
    await store.regenerate(anonymous, user="alice")
    assert len(await store.list_sessions("alice")) == 2


async def test_limit_evict_oldest(backend: Backend) -> None:
    store = await backend.open(max_sessions_per_user=2, session_limit_action="evict_oldest")
    first = await store.create({}, user="alice")
    second = await store.create({}, user="alice")
    third = await store.create({}, user="alice")
    assert await store.load(first.id) is None
    assert await store.load(second.id) is not None
    assert _ids(await store.list_sessions("alice")) == {second.public_id, third.public_id}


async def test_limit_concurrent_logins(backend: Backend) -> None:
    stores = [await backend.open(max_sessions_per_user=3) for _ in range(2)]
    won: list[str] = []

    async def login(n: int) -> None:
        try:
            session = await stores[n % 2].create({}, user="alice")
        except SessionLimitReached:
            return
        assert session.public_id is not None
        won.append(session.public_id)

    async with anyio.create_task_group() as group:
        for n in range(10):
            group.start_soon(login, n)
    assert len(won) == 3
    assert _ids(await stores[0].list_sessions("alice")) == set(won)


async def test_login_loses_to_a_concurrent_save(store: SessionStore[Any]) -> None:
    """A login from a stale handle writes nothing (on a cluster: the PLACE is undone)."""
    anonymous = await store.create({"n": 0})
    stale = await store.load(anonymous.id)
    assert stale is not None
    anonymous.data["n"] = 1
    await store.save(anonymous)
    with pytest.raises(SessionConflict):
        await store.regenerate(stale, user="alice")
    assert await store.list_sessions("alice") == []
    loaded = await store.load(anonymous.id)
    assert loaded is not None
    assert loaded.data == {"n": 1}


async def test_users_sessions_share_the_users_slot(backend: Backend) -> None:
    """On a cluster every session of a user, and its index, live in the user's slot."""
    store = await backend.open()
    logins = [await store.regenerate(await store.create({}), user="alice") for _ in range(4)]
    logins.append(await store.create({}, user="alice"))
    if backend.kind != "cluster":
        assert all(len(s.id) == 43 for s in logins)
        return
    assert len({s.id[:3] for s in logins}) == 1
    stored = backend.keys()
    slots = {key_slot(k) for k in stored}
    # The anonymous sessions' tombstones are elsewhere; the user's keys all in one slot.
    user_keys = [k for k in stored if b":u:" in k]
    assert len(user_keys) == 2
    assert {key_slot(k) for k in user_keys} == {key_slot(b"{%s}" % logins[0].id[:3].encode())}
    assert len(slots) > 1


async def test_routed_reads_keep_the_user_and_see_revocation(redis_cluster: Any) -> None:
    """With reads from replicas (route_randomly) the master's half decides: owner and mark."""
    backend = make_backend("cluster", redis_cluster)
    try:
        assert backend.redis_section is not None
        cluster = dict(backend.redis_section["cluster"], route_randomly=True)
        store = await backend.open(redis={"cluster": cluster})
        assert store._provider.manager.routes_reads  # type: ignore[attr-defined]
        session = await store.regenerate(await store.create({"n": 1}), user="alice")
        for _ in range(5):
            loaded = await store.load(session.id)
            assert loaded is not None
            assert loaded.public_id == session.public_id
            await store.save(loaded)
        await store.revoke_user("alice")
        for _ in range(5):
            assert await store.load(session.id) is None
    finally:
        await backend.aclose()
        backend.close_raw()


@pytest.mark.parametrize("routing", [False, True])
async def test_sentinel(sentinel_cluster: Any, routing: bool) -> None:
    """Under Sentinel (the single-server scripts; reads from replicas with route_randomly)."""
    section = sentinel_cluster.redis_section()
    if routing:
        section["high_availability"] = {**section["high_availability"], "route_randomly": True}
    async with open_session_store(
        {"secret": "s" * 32, "redis": section, "max_sessions_per_user": 2}
    ) as store:
        first = await store.regenerate(await store.create({}), user="alice", metadata={"a": 1})
        second = await store.create({}, user="alice")
        with pytest.raises(SessionLimitReached):
            await store.create({}, user="alice")
        loaded = await store.load(first.id)
        assert loaded is not None
        assert loaded.public_id == first.public_id
        infos = await store.list_sessions("alice")
        assert _ids(infos) == {first.public_id, second.public_id}
        assert second.public_id is not None
        await store.revoke_user("alice", keep=second.public_id)
        assert await store.load(first.id) is None
        assert await store.load(second.id) is not None
        assert await store.revoke(second.public_id)
        assert await store.load(second.id) is None
        assert await store.list_sessions("alice") == []


@pytest.fixture(params=["redis", "cluster"])
async def server_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The Redis backends only: round trips are counted on the servers."""
    fixture = {"redis": "redis", "cluster": "redis_cluster"}[request.param]
    b = make_backend(request.param, request.getfixturevalue(fixture))
    try:
        yield b
    finally:
        await b.aclose()
        b.close_raw()


async def test_round_trips(server_backend: Backend) -> None:
    """User-less sessions: one script per operation, as before; a login: one (two across slots)."""
    backend = server_backend
    assert backend.raw is not None
    store = await backend.open()
    # Every script cached on every master, so none is counted twice (EVALSHA, NOSCRIPT, EVAL).
    scripts = [v for v in vars(redis_provider).values() if isinstance(v, Script)]
    clients = (
        [backend.raw.get_redis_connection(n) for n in backend.raw.get_primaries()]  # type: ignore[union-attr]
        if backend.kind == "cluster"
        else [backend.raw]
    )
    for client in clients:
        for script in scripts:
            client.script_load(script.source)
    _reset_stats(backend)
    session = await store.create({"n": 1})
    session = await store.regenerate(session)
    await store.save(session)
    assert await store.load(session.id) is not None
    assert _script_calls(backend) == 4
    _reset_stats(backend)
    owned = await store.regenerate(session, user="alice")
    across = 2 if backend.kind == "cluster" else 1  # PLACE, then FENCE in the old slot
    assert _script_calls(backend) == across
    _reset_stats(backend)
    await store.save(owned)
    assert await store.load(owned.id) is not None
    await store.list_sessions("alice")
    assert _script_calls(backend) == 3
