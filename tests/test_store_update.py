"""The store's additions for web apps: update(), the remember-me switch at regenerate, cookie
entries' durations, and host matching. On both providers (memory and a real redis-server)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from redis_session import (
    REMEMBER_ME_DISABLED,
    ConnectionLost,
    CookieConfig,
    SessionConfig,
    SessionConflict,
    StoreUnavailable,
    UsageError,
    open_session_store,
)
from redis_session._domains import cookie_for, domain_matches, normalize_host

from .chaos.proxy import FaultProxy
from .store_helpers import SECRET, Backend

pytestmark = pytest.mark.anyio

HOUR = dt.timedelta(hours=1)


def _near(when: dt.datetime, expected: dt.datetime, slack: float = 5.0) -> bool:
    return abs((when - expected).total_seconds()) <= slack


async def test_update_applies_a_function_and_saves(backend: Backend) -> None:
    store = await backend.open()
    s = await store.create({"n": 1})
    saved = await store.update(s.id, lambda d: {**d, "n": d["n"] + 1})
    assert saved is not None
    assert saved.data == {"n": 2}
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == {"n": 2}


async def test_update_in_place_and_async_functions(backend: Backend) -> None:
    store = await backend.open()
    s = await store.create({"n": 0})
    await store.update(s.id, lambda d: d.update(n=d["n"] + 1))

    async def bump(d: dict[str, Any]) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {**d, "n": d["n"] + 10}

    await store.update(s.id, bump)
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == {"n": 11}


async def test_update_of_no_session_creates_nothing(backend: Backend) -> None:
    store = await backend.open()
    calls: list[object] = []
    assert await store.update("x" * 43, calls.append) is None
    s = await store.create({})
    await store.delete(s)
    assert await store.update(s.id, calls.append) is None
    assert calls == []
    assert backend.keys() == []


async def test_a_hundred_concurrent_increments_all_count(backend: Backend) -> None:
    """Issue 11 acceptance: 100 concurrent increments through update() end at 100."""
    store = await backend.open()
    s = await store.create({"count": 0})

    async def increment() -> None:
        await store.update(s.id, lambda d: d.update(count=d["count"] + 1))

    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(increment)
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == {"count": 100}


async def test_update_gives_up_after_its_attempts(backend: Backend) -> None:
    """A writer that always wins makes update() raise after ``attempts`` tries, not loop."""
    store = await backend.open()
    s = await store.create({"n": 0})
    tries = 0

    async def meddle(d: dict[str, Any]) -> dict[str, Any]:
        nonlocal tries
        tries += 1
        # Another writer saves between our load and our save, every time.
        other = await store.load(s.id)
        assert other is not None
        other.data = {"n": -tries}
        await store.save(other)
        return {"n": d["n"] + 1}

    with pytest.raises(SessionConflict):
        await store.update(s.id, meddle, attempts=3)
    assert tries == 3
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == {"n": -3}


@pytest.mark.parametrize("attempts", [0, -1, 1.5, True])
async def test_update_refuses_bad_arguments(backend: Backend, attempts: Any) -> None:
    store = await backend.open()
    s = await store.create({})
    with pytest.raises(UsageError, match="attempts"):
        await store.update(s.id, lambda d: d, attempts=attempts)
    with pytest.raises(UsageError, match="function"):
        await store.update(s.id, "not callable")  # type: ignore[arg-type]


async def test_regenerate_switches_to_remember_me_atomically(backend: Backend) -> None:
    store = await backend.open(expiration="1h", inactivity="5m", remember_me="30d")
    s = await store.create({"user": "john"})
    assert not s.remember_me
    fresh = await store.regenerate(s, remember_me=True)
    assert fresh.id != s.id
    assert fresh.remember_me
    now = dt.datetime.now(dt.UTC)
    assert _near(fresh.expires_at, now + dt.timedelta(days=30))
    assert _near(fresh.created_at, now)
    assert await store.load(s.id) is None
    loaded = await store.load(fresh.id)
    assert loaded is not None
    assert loaded.remember_me
    assert loaded.data == {"user": "john"}
    assert loaded.expires_at == fresh.expires_at
    # No idle limit any more: the stored record says so, and the TTL is the absolute one.
    key = fresh._key
    assert backend.fields(key)[b"i"] == b"0"
    # The session still saves (the blob is bound to the new clocks).
    loaded.data["x"] = 1
    await store.save(loaded)
    # And back: a plain session again, its clocks restarted with the plain durations.
    plain = await store.regenerate(loaded, remember_me=False)
    assert not plain.remember_me
    assert _near(plain.expires_at, dt.datetime.now(dt.UTC) + HOUR)
    assert backend.fields(plain._key)[b"i"] == b"300000"


async def test_regenerate_keeps_the_clocks_when_the_kind_stays(backend: Backend) -> None:
    store = await backend.open()
    s = await store.create({}, remember_me=True)
    same = await store.regenerate(s, remember_me=True)
    assert same.expires_at == s.expires_at
    assert same.created_at == s.created_at
    plain = await store.regenerate(same)
    assert plain.expires_at == s.expires_at


async def test_a_stale_regenerate_with_a_switch_is_a_conflict(backend: Backend) -> None:
    """The switch still compares against the clocks the loaded copy had: a save in between
    makes it fail, and the old id keeps working."""
    store = await backend.open()
    s = await store.create({"n": 1})
    other = await store.load(s.id)
    assert other is not None
    other.data = {"n": 2}
    await store.save(other)
    with pytest.raises(SessionConflict):
        await store.regenerate(s, remember_me=True)
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == {"n": 2}
    assert not loaded.remember_me


async def test_remember_me_disabled_is_refused(backend: Backend) -> None:
    store = await backend.open(remember_me=-1)
    with pytest.raises(UsageError, match=r"session\.remember_me is negative"):
        await store.create({}, remember_me=True)
    s = await store.create({})
    with pytest.raises(UsageError, match="disabled"):
        await store.regenerate(s, remember_me=True)
    assert await store.load(s.id) is not None


async def test_cookie_entries_give_their_durations(backend: Backend) -> None:
    store = await backend.open(
        expiration="1h",
        remember_me="30d",
        cookies=[
            {"domain": "example.com", "expiration": "2h", "remember_me": "7d"},
            {"domain": "other.org", "remember_me": -1},
        ],
    )
    now = dt.datetime.now(dt.UTC)
    a = await store.create({}, domain="app.example.com")
    assert _near(a.expires_at, now + 2 * HOUR)
    b = await store.create({}, remember_me=True, domain="example.com:8443")
    assert _near(b.expires_at, now + dt.timedelta(days=7))
    c = await store.create({}, domain="www.other.org")
    assert _near(c.expires_at, now + HOUR)
    with pytest.raises(UsageError, match=r"session\.cookies\[1\]\.remember_me is negative"):
        await store.create({}, remember_me=True, domain="other.org")
    with pytest.raises(UsageError, match=r"no session\.cookies entry serves 'evil\.net'"):
        await store.create({}, domain="evil.net")
    with pytest.raises(UsageError, match=r"no session\.cookies entry"):
        await store.create({}, domain="notexample.com")
    switched = await store.regenerate(a, remember_me=True, domain="app.example.com")
    assert _near(switched.expires_at, now + dt.timedelta(days=7))


def test_hosts_are_normalised() -> None:
    assert normalize_host("Example.COM:8443") == "example.com"
    assert normalize_host("example.com.") == "example.com"
    assert normalize_host("[::1]:8080") == "::1"
    assert normalize_host("127.0.0.1") == "127.0.0.1"
    bad = ["", None, "a b", "user@host", "host/path", ".example.com", "a..b", "[zz]"]
    # Brackets hold IPv6 only; non-ASCII never folds into ASCII ("K" KELVIN SIGN lowers to
    # "k"); DNS limits: 63 a label, 253 a name.
    bad += ["[1.2.3.4]", "[example.com]", "\u212aexample.com", "exa\u0301mple.com"]
    bad += ["a" * 64 + ".com", ".".join(["a" * 60] * 5)]
    for host in bad:
        assert normalize_host(host) is None, host
    assert normalize_host("a" * 63 + ".com") == "a" * 63 + ".com"


def test_the_most_specific_cookie_entry_wins() -> None:
    cfg = SessionConfig(
        cookies=(
            CookieConfig(domain="example.com", name="outer"),
            CookieConfig(domain="app.example.com", name="inner"),
        )
    )
    assert cookie_for(cfg, "example.com") is cfg.cookies[0]
    assert cookie_for(cfg, "www.example.com") is cfg.cookies[0]
    assert cookie_for(cfg, "app.example.com") is cfg.cookies[1]
    assert cookie_for(cfg, "x.app.example.com:443") is cfg.cookies[1]
    assert cookie_for(cfg, "badexample.com") is None
    assert cookie_for(SessionConfig(), "example.com") is None


def test_addresses_match_only_themselves() -> None:
    cfg = SessionConfig(cookies=(CookieConfig(domain="1.2.3.4"),))
    assert cookie_for(cfg, "1.2.3.4:8080") is cfg.cookies[0]
    assert cookie_for(cfg, "5.1.2.3.4") is None
    assert cookie_for(cfg, "x.1.2.3.4") is None
    assert not domain_matches("2.3.4", "1.2.3.4")
    assert domain_matches("example.com", "a.example.com")
    assert dt.timedelta(0) > REMEMBER_ME_DISABLED


async def test_a_store_in_memory_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="redis_session"):
        async with open_session_store({}) as store:
            await store.create({})
    said = [r for r in caplog.records if "process's memory" in r.getMessage()]
    assert len(said) == 1
    assert "session.redis is not configured" in said[0].getMessage()


async def _cut_then_interleave(redis: Any, operation: str) -> None:
    """Cut the reply of A's write, let B change the session, then let A's resend through.

    A's first try was applied; its resend finds a version it never wrote. Reporting that as a
    conflict would make update() apply ``fn`` a second time: it must be "outcome unknown".
    """
    proxy = await FaultProxy(redis.host, redis.port, seed=7).start()
    section = {**redis.redis_section(), "host": proxy.host, "port": proxy.port}
    cfg = {"secret": "a test secret that is long enough", "redis": section}
    direct_cfg = {**cfg, "redis": redis.redis_section()}
    try:
        async with (
            await open_session_store(cfg) as a,
            await open_session_store(direct_cfg) as b,
        ):
            s = await b.create({"n": 0})
            # Cache the save script first: otherwise the reply cut is NOSCRIPT (nothing ran).
            await b.update(s.id, lambda d: d)
            proxy.after_cut = "blackhole"
            calls = 0

            def bump(data: dict[str, int]) -> dict[str, int]:
                nonlocal calls
                calls += 1
                proxy.set_mode("cut")  # the load's reply is through: cut the save's
                return {"n": data["n"] + 1}

            async def interfere() -> None:
                while proxy.cuts == 0:  # noqa: ASYNC110 - the proxy has no event to wait on
                    await anyio.sleep(0.001)
                # A's first try ran; its resend is held. B increments on top of it.
                await b.update(s.id, lambda d: {"n": d["n"] + 1})
                proxy.set_mode("pass")

            async with anyio.create_task_group() as tg:
                tg.start_soon(interfere)
                if operation == "update":
                    with pytest.raises(ConnectionLost, match="may have been applied"):
                        await a.update(s.id, bump)
                else:
                    loaded = await a.load(s.id)
                    assert loaded is not None
                    loaded.data = bump(loaded.data)
                    with pytest.raises(ConnectionLost, match="may have been applied"):
                        await a.save(loaded)
            assert calls == 1
            final = await b.load(s.id)
            assert final is not None
            # Both increments, each once: A's (first try) and B's on top of it.
            assert final.data == {"n": 2}
    finally:
        await proxy.aclose()


@pytest.mark.parametrize("operation", ["save", "update"])
async def test_a_resent_write_that_finds_a_change_is_outcome_unknown(
    redis: Any, operation: str
) -> None:
    await _cut_then_interleave(redis, operation)


async def test_a_refused_switch_keeps_the_old_session(backend: Backend) -> None:
    """A remember-me switch whose stamp the provider refuses restamps; nothing is lost."""
    store = await backend.open(expiration=3600, remember_me=7 * 86400)
    s = await store.create({"a": 1})
    provider = store._provider
    real = provider.clock
    # This host's clock runs 10 minutes slow: the first stamp is refused (CLOCK) before any
    # write, the provider learns the offset, and the second stamp goes through.
    provider.clock = lambda: real() - 600_000  # type: ignore[method-assign]
    if backend.kind == "memory":
        # Memory's clock is the provider's own: skew the stamp, not the judge.
        provider.now_ms = lambda: real() - 600_000  # type: ignore[method-assign]
        provider.clock = real  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable, match="could not stamp"):
            await store.regenerate(s, remember_me=True)
        loaded = await store.load(s.id)
        assert loaded is not None, "a refused switch must leave the old session intact"
        return
    switched = await store.regenerate(s, remember_me=True)
    assert switched.remember_me is True
    assert _near(switched.expires_at, dt.datetime.now(dt.UTC) + dt.timedelta(days=7))
    assert await store.load(s.id) is None
    assert await store.load(switched.id) is not None


# -- the tombstone a regenerate leaves under the old id (issue 11 review: a request racing a
# login must be able to tell "moved" from "dead", so the web layer leaves the new cookie alone)


async def test_regenerate_leaves_a_tombstone_that_never_loads(backend: Backend) -> None:
    store = await backend.open()
    old = await store.create({"cart": "book"})
    new = await store.regenerate(old)
    assert await store.load(old.id) is None
    found = await store.lookup(old.id)
    assert found.session is None
    assert found.moved
    assert backend.fields(old._key) == {b"m": b"1"}  # a marker only: no version, no data
    fresh = await store.lookup(new.id)
    assert fresh.session is not None
    assert fresh.session.data == {"cart": "book"}
    assert not fresh.moved


async def test_unknown_and_deleted_ids_are_not_moved(backend: Backend) -> None:
    store = await backend.open()
    gone = await store.create({"a": 1})
    await store.delete(gone)
    for sid in (gone.id, "A" * 43, "not an id!", None):
        found = await store.lookup(sid)
        assert found.session is None
        assert not found.moved


async def test_a_save_on_the_old_id_conflicts_and_never_revives_it(backend: Backend) -> None:
    store = await backend.open()
    old = await store.create({"n": 1})
    stale = await store.load(old.id)
    assert stale is not None
    await store.regenerate(old)
    stale.data = {"n": 2}
    with pytest.raises(SessionConflict):
        await store.save(stale)
    with pytest.raises(SessionConflict):
        await store.regenerate(stale)
    assert await store.update(old.id, lambda d: d.update(n=3)) is None
    assert await store.load(old.id) is None
    assert backend.fields(old._key) == {b"m": b"1"}


async def test_delete_removes_the_tombstone(backend: Backend) -> None:
    store = await backend.open()
    old = await store.create({"n": 1})
    await store.regenerate(old)
    await store.delete(old.id)
    assert backend.fields(old._key) == {}
    assert not (await store.lookup(old.id)).moved


async def test_the_tombstone_lives_a_minute_at_most_and_expires(backend: Backend) -> None:
    store = await backend.open()
    old = await store.create({"n": 1})
    await store.regenerate(old)
    assert 0 < backend.pttl(old._key) <= 60_000
    # Never longer than the old session had left: with a one-second idle limit, it is gone
    # once that second has passed (polled, bounded: no timed assertion).
    short = await backend.open(expiration=10, inactivity=1)
    brief = await short.create({"n": 1})
    await short.regenerate(brief)
    assert 0 < backend.pttl(brief._key) <= 1_000
    with anyio.fail_after(10):
        while (await short.lookup(brief.id)).moved:  # noqa: ASYNC110 - polls the store
            await anyio.sleep(0.1)
    assert backend.fields(brief._key) == {}


async def test_a_tombstone_under_rotation(backend: Backend) -> None:
    """previous_secrets: a session under the old secret's key still loads, moves on save, and
    its regenerated id reads as moved under every key name."""
    before = await backend.open()
    s = await before.create({"n": 1})
    rotated = await backend.open(secret="a-new-secret-" + "x" * 40, previous_secrets=[SECRET])
    loaded = await rotated.load(s.id)
    assert loaded is not None
    assert loaded.data == {"n": 1}
    loaded.data = {"n": 2}
    await rotated.save(loaded)  # moves it to the new secret's key name
    again = await rotated.load(s.id)
    assert again is not None
    assert again.data == {"n": 2}
    new = await rotated.regenerate(again)
    found = await rotated.lookup(s.id)
    assert found.session is None
    assert found.moved
    loaded_new = await rotated.load(new.id)
    assert loaded_new is not None
    assert loaded_new.data == {"n": 2}
    await rotated.delete(s.id)
    assert not (await rotated.lookup(s.id)).moved
