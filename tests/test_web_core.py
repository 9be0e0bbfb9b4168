"""The framework-neutral web core: cookie headers, cookie parsing, the merge, the lifecycle.

The lifecycle runs on the memory provider and on a real Redis (the ``backend`` fixture), with
no web framework at all: the adapters (ASGI, aiohttp) only move headers in and out of it.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from typing import Any

import attrs
import pytest

from redis_session import SessionConflict, StoreUnavailable, UsageError, load_config
from redis_session._cookies import CookieSpec, cookie_spec, id_shaped, session_cookie
from redis_session._merge import MergeConflict, changed_keys, merge, same, snapshot
from redis_session._web import WebSessions, conflict_response, unavailable_response

from .store_helpers import SECRET, Backend

pytestmark = pytest.mark.anyio

NOW = dt.datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt.UTC)

COOKIES = {
    "secret": SECRET,
    "name": "top",
    "same_site": "strict",
    "cookies": [
        {"domain": "example.com", "authelia_url": "https://auth.example.com"},
        {
            "domain": "app.example.net",
            "authelia_url": "https://auth.app.example.net",
            "name": "app_session",
            "same_site": "none",
        },
    ],
}


# -- cookie headers --


def test_set_cookie_has_every_attribute() -> None:
    """Name, Domain, Path=/, Expires and Max-Age of the deadline, HttpOnly, Secure, SameSite."""
    spec = CookieSpec("sid", "example.com", "Lax", secure=True)
    header = spec.set("abc", NOW + dt.timedelta(hours=1), now=NOW)
    assert header == (
        "sid=abc; Domain=example.com; Path=/; Expires=Tue, 01 Dec 2026 11:00:00 GMT; "
        "Max-Age=3600; HttpOnly; Secure; SameSite=Lax"
    )


def test_host_only_cookie_without_secure() -> None:
    """No Domain for a host-only cookie; no Secure when the app runs on plain http."""
    spec = CookieSpec("sid", None, "Strict", secure=False)
    header = spec.set("abc", NOW + dt.timedelta(seconds=90), now=NOW)
    assert "Domain" not in header
    assert "Secure" not in header
    assert header.endswith("Max-Age=90; HttpOnly; SameSite=Strict")


def test_clearing_cookie_matches_the_set_one() -> None:
    """A clear names the same cookie (name, Domain, Path) with a past date and Max-Age=0."""
    spec = CookieSpec("sid", "example.com", "Lax", secure=True)
    assert spec.clear() == (
        "sid=; Domain=example.com; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; "
        "HttpOnly; Secure; SameSite=Lax"
    )


def test_past_deadline_gives_max_age_zero() -> None:
    """A deadline already past never yields a negative Max-Age."""
    spec = CookieSpec("sid", None, "Lax", secure=True)
    assert "Max-Age=0;" in spec.set("abc", NOW - dt.timedelta(seconds=5), now=NOW)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", CookieSpec("top", "example.com", "Strict", True)),
        ("www.example.com:8443", CookieSpec("top", "example.com", "Strict", True)),
        ("app.example.net", CookieSpec("app_session", "app.example.net", "None", True)),
        ("x.app.example.net", CookieSpec("app_session", "app.example.net", "None", True)),
        ("other.org", CookieSpec("top", None, "Strict", True)),
        (None, CookieSpec("top", None, "Strict", True)),
        ("bad host/path", CookieSpec("top", None, "Strict", True)),
    ],
)
def test_cookie_spec_picks_the_entry_for_the_host(host: str | None, expected: CookieSpec) -> None:
    """The entry serving the host or a parent of it; else a host-only cookie (session.name)."""
    assert cookie_spec(load_config(COOKIES), host) == expected


def test_cookie_spec_without_entries_is_host_only() -> None:
    """No ``cookies``: the top-level name and SameSite, no Domain."""
    cfg = load_config({"name": "n", "same_site": "lax"})
    assert cookie_spec(cfg, "example.com", secure=False) == CookieSpec("n", None, "Lax", False)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("sid=abc", "abc"),
        ("a=1; sid=abc; b=2", "abc"),
        ("  sid = abc  ", "abc"),
        ('sid="abc"', "abc"),
        ("sidx=abc; xsid=def", None),
        ("garbage;;;=;sid", None),
        ("sid=no way; sid=abc", "abc"),  # the first id-shaped value wins
        ("sid=abc; sid=def", "abc"),  # the browser lists the oldest first
        ("sid=<script>", "<script>"),  # returned so the caller clears it, never used as id
        ("sid=", ""),
    ],
)
def test_session_cookie_parsing(header: str | None, expected: str | None) -> None:
    """Duplicates, spaces, quotes and garbage are all handled without raising."""
    assert session_cookie(header, "sid") == expected


def test_id_shape() -> None:
    """Only what secrets.token_urlsafe could produce is ever sent to the store."""
    assert id_shaped("A-b_9")
    assert not id_shaped("")
    assert not id_shaped("a b")
    assert not id_shaped("x" * 101)


# -- merge --


def test_merge_applies_our_changes_onto_theirs() -> None:
    """Set, changed and deleted keys of ours land on theirs; their own changes stay."""
    base = {"a": 1, "b": 2, "c": 3}
    ours = {"a": 10, "b": 2, "new": 1}  # a changed, c deleted, new added
    theirs = {"a": 1, "b": 20, "c": 3, "their": 1}
    assert merge(base, ours, theirs) == {"a": 10, "b": 20, "new": 1, "their": 1}


def test_merge_conflicts_on_the_same_key() -> None:
    """Both changed one key to different values: a conflict naming the keys."""
    with pytest.raises(MergeConflict) as info:
        merge({"a": 1}, {"a": 2}, {"a": 3})
    assert info.value.keys == ["a"]


def test_merge_same_change_is_no_conflict() -> None:
    """Both set the key to the same value, or both deleted it: nothing to decide."""
    assert merge({"a": 1}, {"a": 2}, {"a": 2}) == {"a": 2}
    assert merge({"a": 1, "b": 1}, {"b": 1}, {"b": 1}) == {"b": 1}


def test_merge_their_delete_against_our_change_conflicts() -> None:
    """They deleted a key that we changed: a conflict, not a silent resurrection of it."""
    with pytest.raises(MergeConflict):
        merge({"a": 1}, {"a": 2}, {})


def test_changed_keys_sees_nested_changes() -> None:
    """A change inside a nested value is a change of its top-level key."""
    assert changed_keys({"a": [1], "b": 1}, {"a": [1, 2], "b": 1}) == {"a"}


def test_snapshot_shares_nothing_mutable() -> None:
    """The merge's base: a change in place anywhere in the data is seen against it; leaves
    nothing can change are shared; types the codec never decodes are deep-copied."""
    when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    data: dict[str, Any] = {
        "user": "ann",
        "n": 1,
        "ok": True,
        "f": 1.5,
        "none": None,
        "raw": b"\x00",
        "at": when,
        "groups": ["a", "b"],
        "history": [{"ip": "192.0.2.1", "tags": ["x"]}],
        "pair": ([1], 2),
        "seen": {1, 2},
        "ordered": collections.OrderedDict(a=[1]),
    }
    copy = snapshot(data)
    assert same(copy, data)
    assert copy["user"] is data["user"]
    assert copy["at"] is data["at"]
    assert copy["raw"] is data["raw"]
    assert type(copy["ordered"]) is collections.OrderedDict
    changes = [
        lambda d: d["groups"].append("c"),
        lambda d: d["history"][0]["tags"].append("y"),
        lambda d: d["history"][0].update(ip="192.0.2.2"),
        lambda d: d["pair"][0].append(3),
        lambda d: d["seen"].add(3),
        lambda d: d["ordered"]["a"].append(2),
        lambda d: d["history"][0].update(ok=True),
    ]
    for change in changes:
        fresh = snapshot(data)
        change(data)
        assert not same(fresh, data)
        assert not same(data, fresh)
        data = snapshot(fresh)  # back to before the change, for the next one


def test_same_needs_the_same_keys_and_types() -> None:
    """Same length but another key is a change; so is True over 1 deep inside a list."""
    assert not same({"a": 1, "b": 2}, {"a": 1, "c": 2})
    assert not same({"a": [{"x": 1}]}, {"a": [{"x": True}]})
    assert not same([1, 2], [1, 2, 3])
    assert same({"a": [{"x": 1}]}, {"a": [{"x": 1}]})


# -- the lifecycle --


async def test_anonymous_request_touches_no_store(backend: Backend) -> None:
    """No cookie: anonymous, nothing loaded, nothing created when nothing was written."""
    store = await backend.open()
    web = WebSessions(store, secure=False)
    ws = await web.begin("/", "localhost", None)
    assert ws.state == "anonymous"
    assert dict(ws) == {}
    assert await web.finish(ws) == []
    assert backend.keys() == []


async def test_first_write_creates_and_sets_the_cookie(backend: Backend) -> None:
    """Writing to an anonymous session creates it at the end and sets the cookie."""
    store = await backend.open()
    web = WebSessions(store, secure=False)
    ws = await web.begin("/", "localhost", None)
    ws["user"] = "ann"
    (header,) = await web.finish(ws)
    sid = session_cookie(header.partition(";")[0], store.config.name)
    assert sid is not None
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data == {"user": "ann"}


async def test_read_only_request_saves_nothing(backend: Backend) -> None:
    """A loaded, unchanged session is not saved and no cookie is sent."""
    store = await backend.open()
    s = await store.create({"n": 1})
    web = WebSessions(store)
    ws = await web.begin("/", "h", f"authelia_session={s.id}")
    assert ws.state == "loaded"
    assert ws["n"] == 1
    assert await web.finish(ws) == []
    assert await store.load(s.id) is not None


async def test_bad_cookie_is_cleared_and_never_reused(backend: Backend) -> None:
    """An unknown, malformed or deleted id: anonymous, cleared; a write gets a fresh id."""
    store = await backend.open()
    web = WebSessions(store)
    for value in ["A" * 43, "not an id!", ""]:
        ws = await web.begin("/", "h", f"authelia_session={value}")
        assert ws.state == "anonymous"
        assert await web.finish(ws) == [ws.cookie.clear()]
    ws = await web.begin("/", "h", "authelia_session=" + "B" * 43)
    ws["x"] = 1
    (header,) = await web.finish(ws)
    assert "B" * 43 not in header


async def test_excluded_path_does_not_load(backend: Backend) -> None:
    """An excluded path leaves the session unloaded; touching it says how to load it."""
    store = await backend.open()
    s = await store.create({"n": 1})
    web = WebSessions(store, exclude=["/static", "/healthz"])
    ws = await web.begin("/static/app.css", "h", f"authelia_session={s.id}")
    assert ws.state == "not loaded"
    with pytest.raises(UsageError, match="load_session"):
        ws["n"]
    await web.load(ws)
    assert ws["n"] == 1
    assert web.excluded("/healthz")
    assert not web.excluded("/healthzz")
    assert not web.excluded("/")


def test_exclude_takes_prefixes_or_a_function() -> None:
    """A lone string is one prefix, a function decides by itself, a relative prefix is refused."""
    cfg = load_config({})
    assert WebSessions(cfg, exclude="/static").excluded("/static/x")
    assert not WebSessions(cfg, exclude="/static").excluded("/")
    assert WebSessions(cfg, exclude=lambda p: p.startswith("/health")).excluded("/healthz")
    with pytest.raises(UsageError, match="exclude"):
        WebSessions(cfg, exclude=["static"])
    with pytest.raises(UsageError, match="secure"):
        WebSessions(cfg, secure="no")  # type: ignore[arg-type]


async def test_concurrent_writers_of_different_keys_all_land(backend: Backend) -> None:
    """Many requests changing their own key of one session: merged, none lost, no conflict."""
    store = await backend.open()
    s = await store.create({})
    web = WebSessions(store)

    async def request(i: int) -> None:
        ws = await web.begin("/", "h", f"authelia_session={s.id}")
        await asyncio.sleep(0)
        ws[f"k{i}"] = i
        await web.finish(ws)

    await asyncio.gather(*(request(i) for i in range(30)))
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == {f"k{i}": i for i in range(30)}


async def test_clash_on_one_key_is_a_conflict(backend: Backend) -> None:
    """Two requests set one key to different values: the second is told, nothing overwritten."""
    store = await backend.open()
    s = await store.create({"k": 0})
    web = WebSessions(store)
    first = await web.begin("/", "h", f"authelia_session={s.id}")
    second = await web.begin("/", "h", f"authelia_session={s.id}")
    first["k"] = 1
    second["k"] = 2
    await web.finish(first)
    with pytest.raises(SessionConflict, match="'k'"):
        await web.finish(second)
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == {"k": 1}


async def test_late_save_never_resurrects_a_deleted_session(backend: Backend) -> None:
    """A request that loaded before a logout cannot bring the session back by saving."""
    store = await backend.open()
    s = await store.create({"user": "ann"})
    web = WebSessions(store)
    late = await web.begin("/", "h", f"authelia_session={s.id}")
    out = await web.begin("/logout", "h", f"authelia_session={s.id}")
    await web.logout(out)
    assert await web.finish(out) == [out.cookie.clear()]
    late["cart"] = ["book"]
    with pytest.raises(SessionConflict, match="ended"):
        await web.finish(late)
    assert await store.load(s.id) is None
    assert backend.keys() == []


async def test_login_regenerates_and_switches_kind(backend: Backend) -> None:
    """login() moves the session to a new id (old one dead) and can make it remember-me."""
    store = await backend.open()
    s = await store.create({"cart": 1})
    web = WebSessions(store)
    ws = await web.begin("/login", "h", f"authelia_session={s.id}")
    ws["user"] = "ann"
    await web.login(ws, remember_me=True)
    (header,) = await web.finish(ws)
    new = ws.stored
    assert new is not None
    assert new.id != s.id
    assert new.remember_me
    assert f"authelia_session={new.id};" in header
    assert await store.load(s.id) is None
    loaded = await store.load(new.id)
    assert loaded is not None
    assert loaded.data == {"cart": 1, "user": "ann"}
    with pytest.raises(UsageError, match="after the response started"):
        await web.login(ws)


async def test_duplicate_cookie_values_are_tried_in_order(backend: Backend) -> None:
    """The name sent several times: each id-shaped value is tried (3 at most) until one loads;
    cleared only when none does, and a garbage value among them is skipped without a lookup."""
    store = await backend.open()
    s = await store.create({"user": "ann"})
    web = WebSessions(store)
    foreign = "A" * 43
    ws = await web.begin(
        "/", "h", f"authelia_session=<x>; authelia_session={foreign}; authelia_session={s.id}"
    )
    assert ws.state == "loaded"
    assert ws["user"] == "ann"
    assert await web.finish(ws) == []
    # A fourth value is not tried: three misses cost three round trips at most.
    four = "; ".join(f"authelia_session={c * 43}" for c in "BCD") + f"; authelia_session={s.id}"
    ws = await web.begin("/", "h", four)
    assert ws.state == "anonymous"
    assert await web.finish(ws) == [ws.cookie.clear()]
    ws = await web.begin("/", "h", f"authelia_session={foreign}; authelia_session={'B' * 43}")
    assert await web.finish(ws) == [ws.cookie.clear()]


async def test_a_request_that_raced_a_login_keeps_its_cookie(backend: Backend) -> None:
    """The old id right after login: anonymous, no Set-Cookie (a clear would drop the new
    cookie); a write from it is a conflict, not a new session replacing the login's."""
    store = await backend.open()
    s = await store.create({"cart": 1})
    web = WebSessions(store)
    login = await web.begin("/login", "h", f"authelia_session={s.id}")
    await web.login(login)
    await web.finish(login)
    racing = await web.begin("/", "h", f"authelia_session={s.id}")
    assert racing.state == "anonymous"
    assert await web.finish(racing) == []
    writing = await web.begin("/", "h", f"authelia_session={s.id}")
    writing["late"] = 1
    with pytest.raises(SessionConflict, match="regenerated"):
        await web.finish(writing)
    assert len(backend.keys()) == 2  # the new session and the old id's tombstone, nothing else
    # Once the old id is gone for good (deleted here), it is cleared as any unknown id.
    await store.delete(s.id)
    gone = await web.begin("/", "h", f"authelia_session={s.id}")
    assert await web.finish(gone) == [gone.cookie.clear()]


async def test_login_merges_a_save_that_won_the_race(backend: Backend) -> None:
    """Another request saved after the login request loaded: the login merges, no 409."""
    store = await backend.open()
    s = await store.create({"cart": 1})
    web = WebSessions(store)
    login = await web.begin("/login", "h", f"authelia_session={s.id}")
    other = await web.begin("/", "h", f"authelia_session={s.id}")
    other["seen"] = 1
    await web.finish(other)
    login["user"] = "ann"
    await web.login(login)
    new = login.stored
    assert new is not None
    loaded = await store.load(new.id)
    assert loaded is not None
    assert loaded.data == {"cart": 1, "seen": 1, "user": "ann"}
    # A real clash still fails the login, and the old id keeps working.
    s2 = await store.create({"role": "guest"})
    first = await web.begin("/login", "h", f"authelia_session={s2.id}")
    rival = await web.begin("/", "h", f"authelia_session={s2.id}")
    rival["role"] = "admin"
    await web.finish(rival)
    first["role"] = "user"
    with pytest.raises(SessionConflict, match="'role'"):
        await web.login(first)
    assert await store.load(s2.id) is not None


async def test_cookie_headers_after_a_failed_finish_carry_the_login(backend: Backend) -> None:
    """login() succeeded, the end save fails: the error response can still set the new id."""
    store = await backend.open()
    s = await store.create({"k": 0})
    web = WebSessions(store)
    ws = await web.begin("/login", "h", f"authelia_session={s.id}")
    await web.login(ws)
    new = ws.stored
    assert new is not None
    rival = await store.load(new.id)
    assert rival is not None
    rival.data = {"k": 1}
    await store.save(rival)
    ws["k"] = 2
    with pytest.raises(SessionConflict):
        await web.finish(ws)
    (header,) = web.cookie_headers(ws)
    assert header.startswith(f"authelia_session={new.id};")


def test_a_change_of_type_is_a_change() -> None:
    """True over 1, 1.0 over 1: changes (stored differently); a tuple over a list too (one
    save more at worst: it is stored as a list)."""
    assert changed_keys(
        {"a": 1, "b": 1, "c": [1], "d": {"x": 1}},
        {"a": True, "b": 1.0, "c": (1,), "d": {"x": True}},
    ) == {"a", "b", "c", "d"}
    assert changed_keys({"a": [1, {"x": "y"}]}, {"a": [1, {"x": "y"}]}) == set()
    nan = float("nan")
    assert changed_keys({"a": nan}, {"a": nan}) == set()  # the very object: unchanged
    with pytest.raises(MergeConflict):
        merge({"a": 1}, {"a": True}, {"a": 1.0})
    assert merge({"a": 1}, {"a": True}, {"a": 1}) == {"a": True}


async def test_login_of_anonymous_creates(backend: Backend) -> None:
    """An anonymous login creates a session of the requested kind."""
    store = await backend.open()
    web = WebSessions(store)
    ws = await web.begin("/login", "h", None)
    ws["user"] = "bob"
    await web.login(ws)
    await web.finish(ws)
    assert ws.stored is not None
    assert not ws.stored.remember_me
    with pytest.raises(UsageError, match="remember_me"):
        await web.login(await web.begin("/", "h", None), remember_me="1")  # type: ignore[arg-type]


async def test_logout_then_write_starts_a_new_session(backend: Backend) -> None:
    """After logout() the request is anonymous; a later write gets a brand-new id."""
    store = await backend.open()
    s = await store.create({"user": "ann"})
    web = WebSessions(store)
    ws = await web.begin("/", "h", f"authelia_session={s.id}")
    await web.logout(ws)
    ws["flash"] = "bye"
    (header,) = await web.finish(ws)
    assert ws.stored is not None
    assert ws.stored.id != s.id
    assert f"={ws.stored.id};" in header


async def test_logout_on_excluded_path_deletes_by_id(backend: Backend) -> None:
    """A session never loaded is still deleted by its id."""
    store = await backend.open()
    s = await store.create({"user": "ann"})
    web = WebSessions(store, exclude=["/out"])
    ws = await web.begin("/out", "h", f"authelia_session={s.id}")
    await web.logout(ws)
    assert await store.load(s.id) is None


async def test_cookie_expiry_follows_the_session_kind(backend: Backend) -> None:
    """Max-Age is the session's absolute lifetime: expiration, or remember_me."""
    store = await backend.open(expiration="1h", remember_me="2d")
    web = WebSessions(store)

    async def max_age(remember: bool) -> int:
        ws = await web.begin("/", "h", None)
        ws["u"] = 1
        await web.login(ws, remember_me=remember)
        (header,) = await web.finish(ws)
        return int(header.split("Max-Age=")[1].split(";")[0])

    assert 3590 <= await max_age(False) <= 3600
    assert 2 * 86400 - 10 <= await max_age(True) <= 2 * 86400


@attrs.define
class Profile:
    user: str = ""


async def test_store_of_another_data_type_is_refused(backend: Backend) -> None:
    """The web layer keeps dict data; a store of an attrs class is refused at once."""
    store = await backend.open(data_type=Profile)
    with pytest.raises(UsageError, match="Profile"):
        WebSessions(store)


async def test_unreachable_store_is_not_no_session(caplog: pytest.LogCaptureFixture) -> None:
    """Redis down: start() does not fail (one log line); a cookie request raises, not anonymous."""
    cfg: dict[str, Any] = {
        "secret": SECRET,
        "redis": {"host": "127.0.0.1", "port": 1, "timeout": "1s"},
    }
    web = WebSessions(cfg)
    await web.start()
    await web.start()
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    ws = await web.begin("/", "h", None)
    assert ws.state == "anonymous"  # no cookie: no store needed
    attempts = len(caplog.records)
    with pytest.raises(StoreUnavailable, match="retrying shortly"):
        await web.begin("/", "h", "authelia_session=" + "A" * 43)
    # Within the pause after a failed open, no new connection attempt (nothing more logged).
    assert len(caplog.records) == attempts
    ws = await web.begin("/", "h", "authelia_session=" + "A" * 43, unavailable_ok=True)
    assert ws.state == "unavailable"
    with pytest.raises(StoreUnavailable):
        ws["user"]
    await web.aclose()


def test_default_error_responses() -> None:
    """503 with Retry-After for a down store, 409 for a conflict; never cached."""
    down = unavailable_response()
    assert down.status == 503
    assert ("retry-after", "5") in down.headers
    assert conflict_response().status == 409
    assert ("cache-control", "no-store") in conflict_response().headers


@pytest.mark.parametrize("domain", ["127.0.0.1", "::1", "0:0::1"])
def test_an_address_entry_gives_a_host_only_cookie(domain: str) -> None:
    """An IP cookie entry serves that address only: the cookie carries no Domain attribute."""
    cfg = load_config({"cookies": [{"domain": domain, "name": "ip_session"}]})
    host = f"[{domain}]:8443" if ":" in domain else f"{domain}:8443"
    assert cookie_spec(cfg, host) == CookieSpec("ip_session", None, "Lax", True)


async def test_login_with_a_user(backend: Backend) -> None:
    """login(ws, user=..., metadata=...): the regenerate attaches the user in the same step; an
    anonymous request's login creates the session of the user."""
    store = await backend.open()
    s = await store.create({"cart": 1})
    web = WebSessions(store)
    ws = await web.begin("/login", "h", f"authelia_session={s.id}")
    await web.login(ws, user="ann", metadata={"ip": "10.1.2.3"})
    await web.finish(ws)
    fresh = await web.begin("/login", "h", None)
    await web.login(fresh, user="ann")
    await web.finish(fresh)
    assert ws.stored is not None
    assert fresh.stored is not None
    infos = await store.list_sessions("ann")
    assert {i.public_id for i in infos} == {ws.stored.public_id, fresh.stored.public_id}
    metadata = {i.public_id: i.metadata for i in infos}
    assert metadata == {ws.stored.public_id: {"ip": "10.1.2.3"}, fresh.stored.public_id: {}}
    assert await store.load(s.id) is None


async def test_cookie_rules_per_host_are_kept_within_bounds(backend: Backend) -> None:
    """Many distinct Host values (the client chooses them) never grow the kept rules past
    their bound, and each request still gets its host's cookie."""
    store = await backend.open(name="top", same_site="strict", cookies=COOKIES["cookies"])
    web = WebSessions(store)
    for i in range(600):
        ws = await web.begin("/", f"h{i}.example.com", None)
        assert ws.cookie == CookieSpec("top", "example.com", "Strict", True)
        assert len(web._specs) <= 256
    ws = await web.begin("/", "x.app.example.net", None)
    assert ws.cookie == CookieSpec("app_session", "app.example.net", "None", True)
    ws = await web.begin("/", "other.org", None)
    assert ws.cookie == CookieSpec("top", None, "Strict", True)
