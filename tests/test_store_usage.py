"""Calls the store cannot honour are refused with ``UsageError``, on both providers.

Issue 9, findings 3, 4 and 11: a ``remember_me`` that is not a bool made a session that never
loaded; a session of one store was written, moved or deleted by another; a ``str`` subclass id
was silently ignored (a logout that did nothing); wrong argument types raised a bare
``AttributeError``. Each refusal happens before any storage access and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from redis_session import RedisSessionError, UsageError
from redis_session._store import SessionStore

from .store_helpers import Backend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(backend: Backend) -> SessionStore[Any]:
    """A store with the default durations."""
    return await backend.open()


@pytest.mark.parametrize("flag", [None, "on", "", 1, 0, 1.0, [True]], ids=repr)
async def test_create_refuses_remember_me_that_is_not_a_bool(
    backend: Backend, store: SessionStore[Any], flag: Any
) -> None:
    """create(remember_me=<not a bool>) raises UsageError and stores nothing.

    Before the fix ``None``, ``"on"`` or ``1`` were stored, and every later load of the
    session returned None ("does not decode").
    """
    with pytest.raises(UsageError, match=r"remember_me.*True or False, got " + type(flag).__name__):
        await store.create({"user": "alice"}, remember_me=flag)
    assert backend.keys() == []
    for real in (True, False):
        session = await store.create({"user": "alice"}, remember_me=real)
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.remember_me is real


async def test_session_of_another_store_is_refused(backend: Backend) -> None:
    """B.save/regenerate/delete of A's Session raise UsageError and leave A's session alone.

    Two apps on one Redis: before the fix B wrote A's key under B's secret (A then read it as
    tampered), moved it out of A, or deleted it. An id is only an id: B may delete by id.
    """
    a = await backend.open(name="app_a", secret="secret of app a")
    b = await backend.open(name="app_b", secret="secret of app b")
    session = await a.create({"user": "alice"})
    stored = backend.fields(session._key)
    session.data["user"] = "mallory"
    for name, call in (("save", b.save), ("regenerate", b.regenerate), ("delete", b.delete)):
        with pytest.raises(UsageError, match=rf"^{name}\(\): .*another SessionStore"):
            await call(session)
    assert backend.keys() == [session._key]
    assert backend.fields(session._key) == stored
    loaded = await a.load(session.id)
    assert loaded is not None
    assert loaded.data == {"user": "alice"}
    # Another store object on the same configuration is another store, too.
    twin = await backend.open(name="app_a", secret="secret of app a")
    with pytest.raises(UsageError):
        await twin.save(loaded)
    twin_copy = await twin.load(session.id)
    assert twin_copy is not None
    await twin.save(twin_copy)
    # Deleting by id is fine from any store: B has no session under that id.
    await b.delete(session.id)
    assert await a.load(session.id) is not None
    await a.delete(session)
    assert backend.keys() == []


class _Id(str):
    """A str subclass, as frameworks hand out (markupsafe.Markup, a cookie value type)."""

    __slots__ = ()

    def __str__(self) -> str:
        return "not the id"


async def test_str_subclass_ids_work(backend: Backend, store: SessionStore[Any]) -> None:
    """A str subclass id loads and deletes the session (before the fix: None, and no logout)."""
    session = await store.create({"user": "alice"})
    loaded = await store.load(_Id(session.id))
    assert loaded is not None
    assert type(loaded.id) is str
    assert loaded.id == session.id
    assert loaded.data == {"user": "alice"}
    await store.delete(_Id(session.id))
    assert await store.load(session.id) is None
    assert backend.keys() == []


@pytest.mark.parametrize(
    "junk",
    [b"id", bytearray(b"id"), 5, 1.5, ["id"], {"id": 1}, object()],
    ids=lambda j: type(j).__name__,
)
async def test_ids_that_are_not_str_are_usage_errors(
    backend: Backend, store: SessionStore[Any], junk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load and delete of something that is not a str raise UsageError, before any storage."""
    real = await store.create({"user": "alice"})

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("storage was asked")

    monkeypatch.setattr(store._provider, "load", fail)
    monkeypatch.setattr(store._provider, "delete", fail)
    name = type(junk).__qualname__
    with pytest.raises(UsageError, match=rf"^load\(\) takes a session id \(str\), got {name}$"):
        await store.load(junk)
    with pytest.raises(UsageError, match=rf"^delete\(\) takes a session id \(str\), got {name}$"):
        await store.delete(junk)
    monkeypatch.undo()
    assert await store.load(real.id) is not None


@pytest.mark.parametrize(
    "junk", [None, {"user": "alice"}, "an id", 5], ids=lambda j: type(j).__name__
)
@pytest.mark.parametrize("method", ["save", "regenerate"])
async def test_save_and_regenerate_take_only_sessions(
    backend: Backend, store: SessionStore[Any], junk: Any, method: str
) -> None:
    """save(None), save(dict), regenerate("id")...: UsageError, not a bare AttributeError."""
    session = await store.create({"user": "alice"})
    keys = backend.keys()
    with pytest.raises(UsageError, match=rf"^{method}\(\) takes a Session .*, got ") as info:
        await getattr(store, method)(junk)
    assert isinstance(info.value, RedisSessionError)
    assert backend.keys() == keys
    assert await store.load(session.id) is not None


async def test_load_of_none_is_no_session_but_delete_of_none_is_an_error(
    backend: Backend, store: SessionStore[Any]
) -> None:
    """A request without a cookie loads no session; a logout without an id is a caller bug."""
    real = await store.create({"user": "alice"})
    assert await store.load(None) is None
    with pytest.raises(UsageError, match=r"^delete\(\) takes a session id \(str\), got NoneType$"):
        await store.delete(None)  # type: ignore[arg-type]
    assert await store.load(real.id) is not None
