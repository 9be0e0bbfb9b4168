"""The ASGI middleware under Starlette (the example app), FastAPI and Litestar, through httpx.

Every behaviour runs on the in-memory provider and on a real redis-server; the costs are
counted with the server's ``INFO commandstats``, and the outage tests stop and restart a
server of their own on the same port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from litestar import Litestar, get, post
from litestar import Request as LitestarRequest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from examples.login_app import create_app
from redis_session import SessionConflict, SessionLimitReached, UsageError, open_session_store
from redis_session.asgi import (
    SessionMiddleware,
    load_session,
    login,
    logout,
    session_state,
)

from .asgi_helpers import (
    SCRIPT_COMMANDS,
    client,
    client_commands,
    command_calls,
    cookie_attributes,
    lifespan,
    reset_counts,
    set_cookie_headers,
)
from .servers import RedisProcess
from .store_helpers import SECRET

pytestmark = pytest.mark.anyio

NAME = "authelia_session"


@pytest.fixture(params=["memory", "redis"])
def cfg(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A session mapping: in memory, or on the flushed shared redis-server."""
    mapping: dict[str, Any] = {"secret": SECRET}
    if request.param == "redis":
        proc: RedisProcess = request.getfixturevalue("redis")
        mapping["redis"] = proc.redis_section()
    return mapping


def session_id(response: Any) -> str:
    """The session id a response's Set-Cookie gives."""
    (header,) = set_cookie_headers(response)
    name, value, _ = cookie_attributes(header)
    assert name == NAME
    assert value
    return value


def sent(value: str) -> dict[str, str]:
    """Headers sending ``value`` as the session cookie (httpx's own jar is not consulted)."""
    return {"cookie": f"{NAME}={value}"}


def is_clear(header: str) -> bool:
    _, value, attributes = cookie_attributes(header)
    return value == "" and attributes["max-age"] == "0"


# -- a plain Starlette app exercising the session --


async def read(request: Request) -> Response:
    return JSONResponse({"state": session_state(request), "data": dict(request.session)})


async def write(request: Request) -> Response:
    request.session[request.path_params["key"]] = request.query_params.get("v", "1")
    return PlainTextResponse("ok")


async def lazy(request: Request) -> Response:
    session = await load_session(request)
    return JSONResponse({"state": session_state(request), "data": dict(session)})


async def do_login(request: Request) -> Response:
    request.session["user"] = "ann"
    owner = request.query_params.get("owner")  # a login that attaches the session to a user
    metadata = None if owner is None else {"ua": request.headers.get("user-agent", "")}
    await login(
        request,
        remember_me=request.query_params.get("remember") == "1",
        user=owner,
        metadata=metadata,
    )
    return PlainTextResponse("ok")


async def do_logout(request: Request) -> Response:
    await logout(request)
    return PlainTextResponse("ok")


GATE: dict[str, asyncio.Event] = {}


async def slow_write(request: Request) -> Response:
    """Write after the test opens the gate: a request that loaded long before it saves."""
    GATE["loaded"].set()
    await GATE["go"].wait()
    request.session["late"] = True
    return PlainTextResponse("ok")


ROUTES = [
    Route("/read", read),
    Route("/set/{key}", write, methods=["POST"]),
    Route("/static/lazy", lazy),
    Route("/static/file", lambda request: PlainTextResponse("body {}")),
    Route("/login", do_login, methods=["POST"]),
    Route("/logout", do_logout, methods=["POST"]),
    Route("/static/logout", do_logout, methods=["POST"]),
    Route("/slow", slow_write, methods=["POST"]),
]


@pytest.fixture
async def mw(cfg: dict[str, Any]) -> AsyncIterator[SessionMiddleware]:
    """The middleware wrapping a Starlette app, without lifespan (closed by the test)."""
    middleware = SessionMiddleware(Starlette(routes=ROUTES), cfg, exclude=["/static"])
    try:
        yield middleware
    finally:
        await middleware.aclose()


# -- the example app: login, cookie, logout --


async def test_example_login_flow(cfg: dict[str, Any]) -> None:
    """Anonymous, log in (new id, old dead), count, remember-me, log out: the DOM contract."""
    app = create_app(cfg)
    async with lifespan(app), client(app) as http:
        page = (await http.get("/")).text
        assert '<p id="state">anonymous</p>' in page
        assert '<p id="count">0</p>' in page
        assert '<p id="remember">no</p>' in page
        form = (await http.get("/login")).text
        assert '<form method="post" action="/login">' in form
        assert '<input id="username" name="username">' in form
        assert '<input id="remember_me" name="remember_me" type="checkbox" value="1">' in form
        assert '<button id="login-submit" type="submit">' in form
        # A visit that writes first (the counter), then a login: the id must change.
        counted = await http.post("/count")
        assert counted.status_code == 303
        first = session_id(counted)
        logged = await http.post("/login", data={"username": "ann <b>", "remember_me": "1"})
        assert logged.status_code == 303
        assert logged.headers["location"] == "/"
        second = session_id(logged)
        assert second != first
        page = (await http.get("/")).text
        assert '<p id="state">logged in as ann &lt;b&gt;</p>' in page
        assert '<p id="count">1</p>' in page
        assert '<p id="remember">yes</p>' in page
        assert 'action="/count"><button id="count-submit"' in page
        assert 'action="/logout"><button id="logout-submit"' in page
        # The id from before the login no longer loads: anonymous. Not cleared: within a
        # minute of the login it is a request that raced it, and a clear would drop the new
        # cookie (issue 11 review; the regenerate's tombstone says "moved").
        stale = await http.get("/", headers=sent(first))
        assert '<p id="state">anonymous</p>' in stale.text
        assert set_cookie_headers(stale) == []
        http.cookies.set(NAME, second, domain="example.com")
        out = await http.post("/logout")
        assert out.status_code == 303
        (header,) = set_cookie_headers(out)
        assert is_clear(header)
        assert '<p id="state">anonymous</p>' in (await http.get("/")).text
        replay = await http.get("/", headers=sent(second))
        assert '<p id="state">anonymous</p>' in replay.text
        assert (await http.get("/healthz")).text == "ok"


async def test_example_your_sessions_and_log_out_everywhere_else(cfg: dict[str, Any]) -> None:
    """Two browsers of ann and one of bob: each of ann's lists both (its own marked, with the
    user agent); "log out everywhere else" ends the other one and leaves bob's alone."""
    app = create_app(cfg)
    async with (
        lifespan(app),
        client(app) as laptop,
        client(app) as phone,
        client(app) as bobs,
        client(app) as nobody,
    ):

        async def log_in(http: httpx.AsyncClient, user: str, agent: str, remember: str) -> str:
            form = {"username": user, "remember_me": remember}
            response = await http.post("/login", data=form, headers={"user-agent": agent})
            assert response.status_code == 303
            return session_id(response)

        laptop_id = await log_in(laptop, "ann", "Laptop <Firefox>", "1")
        phone_id = await log_in(phone, "ann", "Phone Safari", "")
        await log_in(bobs, "bob", "Bob's browser", "")
        assert (await nobody.get("/sessions")).status_code == 303  # anonymous: to log in

        page = (await laptop.get("/sessions")).text
        assert '<p id="state">logged in as ann</p>' in page
        assert '<p id="session-count">2</p>' in page
        # Oldest first; two logins within one millisecond may come in either order.
        rows = sorted(
            (line for line in page.splitlines() if line.startswith('<tr class="session')),
            key=lambda row: "Phone" in row,
        )
        assert len(rows) == 2
        assert rows[0].startswith('<tr class="session current"')
        assert "(this session)" in rows[0]
        assert "(this session)" not in rows[1]
        assert "<td>Laptop &lt;Firefox&gt;</td>" in rows[0]
        assert "<td>yes</td>" in rows[0]
        assert "<td>Phone Safari</td>" in rows[1]
        assert "<td>no</td>" in rows[1]
        assert " UTC</td>" in rows[1]
        assert laptop_id not in page
        assert phone_id not in page  # public ids only, never a session id
        assert 'id="logout-others-submit"' in page
        phone_page = (await phone.get("/sessions")).text
        phone_rows = [r for r in phone_page.splitlines() if r.startswith('<tr class="session')]
        assert {"(this session)" in r for r in phone_rows if "Phone" in r} == {True}
        assert {"(this session)" in r for r in phone_rows if "Laptop" in r} == {False}
        home = (await phone.get("/")).text
        assert '<a id="sessions-link" href="/sessions">' in home

        done = await laptop.post("/sessions/others")
        assert done.status_code == 303
        assert done.headers["location"] == "/sessions"
        page = (await laptop.get("/sessions")).text
        assert '<p id="session-count">1</p>' in page
        assert "(this session)" in page
        assert '<p id="state">anonymous</p>' in (await phone.get("/")).text
        bob_page = (await bobs.get("/sessions")).text
        assert '<p id="session-count">1</p>' in bob_page
        assert "<td>Bob&#x27;s browser</td>" in bob_page

        # The laptop logs in as bob: a fresh session of bob's; ann's laptop session ends.
        assert (await laptop.post("/login", data={"username": "bob"})).status_code == 303
        page = (await laptop.get("/sessions")).text
        assert '<p id="state">logged in as bob</p>' in page
        assert '<p id="session-count">2</p>' in page
        # Ann's laptop session ended with that login: ann logging in again has only this one.
        await log_in(phone, "ann", "Phone Safari", "")
        assert '<p id="session-count">1</p>' in (await phone.get("/sessions")).text


async def test_example_runs_on_memory_with_no_setup() -> None:
    """create_app() with no config: in-memory sessions, no secret, no Redis."""
    app = create_app(secure=False)
    async with lifespan(app), client(app, "http://localhost") as http:
        await http.post("/login", data={"username": "bob"})
        page = (await http.get("/")).text
        assert '<p id="state">logged in as bob</p>' in page
        assert '<p id="remember">no</p>' in page


# -- the cookie --

DOMAINS = {
    "name": "top",
    "same_site": "strict",
    "expiration": "2h",
    "remember_me": "3d",
    "cookies": [
        {"domain": "example.com", "authelia_url": "https://auth.example.com"},
        {
            "domain": "shop.example.org",
            "authelia_url": "https://auth.shop.example.org",
            "name": "shop_session",
            "same_site": "lax",
            "expiration": "30m",
            "remember_me": "1d",
        },
    ],
}


@pytest.mark.parametrize(
    ("host", "name", "domain", "same_site", "lifetime", "remember"),
    [
        ("example.com", "top", "example.com", "Strict", 2 * 3600, 3 * 86400),
        ("www.example.com", "top", "example.com", "Strict", 2 * 3600, 3 * 86400),
        ("a.shop.example.org", "shop_session", "shop.example.org", "Lax", 1800, 86400),
        ("localhost", "top", None, "Strict", 2 * 3600, 3 * 86400),
    ],
)
@pytest.mark.parametrize("remember_me", [False, True])
async def test_cookie_attributes_per_host(
    cfg: dict[str, Any],
    host: str,
    name: str,
    domain: str | None,
    same_site: str,
    lifetime: int,
    remember: int,
    remember_me: bool,
) -> None:
    """Name, Domain, SameSite and expiry from the entry serving the host; Path, HttpOnly, Secure."""
    mw = SessionMiddleware(Starlette(routes=ROUTES), {**cfg, **DOMAINS})
    try:
        async with client(mw, f"https://{host}") as http:
            response = await http.post("/login", params={"remember": "1" if remember_me else ""})
        (header,) = set_cookie_headers(response)
        got_name, value, attributes = cookie_attributes(header)
        assert got_name == name
        assert attributes.get("domain") == domain
        assert attributes["path"] == "/"
        assert attributes["samesite"] == same_site
        assert "httponly" in attributes
        assert "secure" in attributes
        # The cookie ends with the session's absolute deadline, as the store knows it.
        store = await mw.sessions.store()
        session = await store.load(value)
        assert session is not None
        assert session.remember_me is remember_me
        expires = parsedate_to_datetime(attributes["expires"])
        assert abs(expires - session.expires_at) < dt.timedelta(seconds=1)
        expected = remember if remember_me else lifetime
        assert expected - 5 <= int(attributes["max-age"]) <= expected
    finally:
        await mw.aclose()


async def test_insecure_option_drops_secure(cfg: dict[str, Any]) -> None:
    """secure=False: plain-http development, no Secure attribute."""
    mw = SessionMiddleware(Starlette(routes=ROUTES), cfg, secure=False)
    try:
        async with client(mw, "http://localhost") as http:
            (header,) = set_cookie_headers(await http.post("/set/a"))
        assert "secure" not in cookie_attributes(header)[2]
    finally:
        await mw.aclose()


async def test_revoked_and_tampered_cookies_are_cleared(mw: SessionMiddleware) -> None:
    """A deleted session's id, a tampered id, garbage: anonymous, cookie cleared, not reused."""
    async with client(mw) as http:
        sid = session_id(await http.post("/set/a"))
        store = await mw.sessions.store()
        tampered = sid[:-1] + ("A" if sid[-1] != "A" else "B")
        for value in [tampered, "<garbage>", sid]:
            if value == sid:
                await store.delete(sid)  # revoked
            http.cookies.clear()
            response = await http.get("/read", headers=sent(value))
            assert response.json() == {"state": "anonymous", "data": {}}
            (header,) = set_cookie_headers(response)
            assert is_clear(header)
            # A write after a bad cookie gets a fresh id, never the one the browser sent.
            fresh = session_id(await http.post("/set/b", headers=sent(value)))
            assert fresh != value


async def test_request_session_under_fastapi(cfg: dict[str, Any]) -> None:
    """FastAPI's request.session and the helpers work with app.add_middleware."""
    api = FastAPI()

    @api.post("/login")
    async def api_login(request: FastAPIRequest) -> dict[str, str]:
        request.session["user"] = "ann"
        await login(request)
        return {"ok": "yes"}

    @api.get("/me")
    async def me(request: FastAPIRequest) -> dict[str, Any]:
        return {"user": request.session.get("user"), "state": session_state(request)}

    api.add_middleware(SessionMiddleware, cfg=cfg)
    async with lifespan(api), client(api) as http:
        assert (await http.get("/me")).json() == {"user": None, "state": "anonymous"}
        session_id(await http.post("/login"))
        assert (await http.get("/me")).json() == {"user": "ann", "state": "loaded"}


async def test_litestar_app_wrapped(cfg: dict[str, Any]) -> None:
    """Around a Litestar app: request.session, set_session and clear_session all reach the store."""

    @get("/me")
    async def me(request: LitestarRequest[Any, Any, Any]) -> dict[str, Any]:
        return {"data": dict(request.session), "state": session_state(request)}

    @post("/visit")
    async def visit(request: LitestarRequest[Any, Any, Any]) -> str:
        request.session["visits"] = int(request.session.get("visits", 0)) + 1
        return "ok"

    @post("/replace")
    async def replace(request: LitestarRequest[Any, Any, Any]) -> str:
        request.set_session({"replaced": True})
        return "ok"

    @post("/clear")
    async def clear(request: LitestarRequest[Any, Any, Any]) -> str:
        request.clear_session()
        return "ok"

    @post("/login")
    async def do_login_ls(request: LitestarRequest[Any, Any, Any]) -> str:
        await login(request, remember_me=True)
        return "ok"

    app = SessionMiddleware(Litestar([me, visit, replace, clear, do_login_ls]), cfg)
    async with lifespan(app), client(app) as http:
        session_id(await http.post("/visit"))
        await http.post("/visit")
        assert (await http.get("/me")).json() == {"data": {"visits": 2}, "state": "loaded"}
        old = http.cookies[NAME]
        new = session_id(await http.post("/login"))
        assert new != old
        await http.post("/replace")
        assert (await http.get("/me")).json()["data"] == {"replaced": True}
        await http.post("/clear")
        assert (await http.get("/me")).json()["data"] == {}


# -- concurrency --


async def test_hundred_concurrent_requests_lose_nothing(mw: SessionMiddleware) -> None:
    """100 requests each setting its own key of one session: all 100 land, 0 conflicts."""
    async with client(mw) as http:
        sid = session_id(await http.post("/set/start"))
        responses = await asyncio.gather(
            *(http.post(f"/set/k{i}", headers=sent(sid)) for i in range(100))
        )
    assert [r.status_code for r in responses] == [200] * 100
    store = await mw.sessions.store()
    session = await store.load(sid)
    assert session is not None
    assert session.data == {"start": "1", **{f"k{i}": "1" for i in range(100)}}


async def test_hundred_concurrent_updates_count_to_hundred(cfg: dict[str, Any]) -> None:
    """store.update as the tool for counters: 100 concurrent increments give 100."""
    async with open_session_store(cfg) as store:
        session = await store.create({"n": 0})

        def bump(data: dict[str, Any]) -> None:
            data["n"] += 1

        await asyncio.gather(*(store.update(session.id, bump) for _ in range(100)))
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"n": 100}


async def test_same_key_clash_is_409_or_raised(cfg: dict[str, Any]) -> None:
    """Two requests setting one key differently: the later gets 409 (or the app an error)."""
    for on_conflict in [None, "raise"]:
        mw = SessionMiddleware(Starlette(routes=ROUTES), cfg, on_conflict=on_conflict)  # type: ignore[arg-type]
        GATE.update(loaded=asyncio.Event(), go=asyncio.Event())
        try:
            async with client(mw) as http:
                sid = session_id(await http.post("/set/late", params={"v": "0"}))
                slow = asyncio.ensure_future(http.post("/slow", headers=sent(sid)))
                await GATE["loaded"].wait()
                fast = await http.post("/set/late", params={"v": "x"}, headers=sent(sid))
                assert fast.status_code == 200
                GATE["go"].set()
                if on_conflict is None:
                    assert (await slow).status_code == 409
                    assert set_cookie_headers(await slow) == []
                else:
                    with pytest.raises(SessionConflict):
                        await slow
            store = await mw.sessions.store()
            session = await store.load(sid)
            assert session is not None
            assert session.data == {"late": "x"}
        finally:
            await mw.aclose()


async def test_logout_is_never_undone_by_a_late_save(mw: SessionMiddleware) -> None:
    """A request that loaded before a logout saves after it: refused, the session stays gone."""
    GATE.update(loaded=asyncio.Event(), go=asyncio.Event())
    async with client(mw) as http:
        sid = session_id(await http.post("/set/a"))
        slow = asyncio.ensure_future(http.post("/slow", headers=sent(sid)))
        await GATE["loaded"].wait()
        out = await http.post("/logout", headers=sent(sid))
        assert is_clear(set_cookie_headers(out)[0])
        GATE["go"].set()
        assert (await slow).status_code == 409
        store = await mw.sessions.store()
        assert await store.load(sid) is None
        response = await http.get("/read", headers=sent(sid))
        assert response.json()["state"] == "anonymous"


# -- excluded paths and lazy loading --


async def test_excluded_path_loads_on_demand(mw: SessionMiddleware) -> None:
    """An excluded path loads only when the app asks (load_session)."""
    async with client(mw) as http:
        await http.post("/set/a", params={"v": "x"})
        response = await http.get("/static/lazy")
        assert response.json() == {"state": "loaded", "data": {"a": "x"}}


async def test_logout_on_an_excluded_path_ends_every_session_the_browser_sent(
    mw: SessionMiddleware,
) -> None:
    """The cookie's name sent twice, the live id second: a logout that never loaded ends it."""
    async with client(mw) as http:
        sid = session_id(await http.post("/set/a", params={"v": "x"}))
        stale = "A" * 43  # id-shaped, names no session
        out = await http.post("/static/logout", headers={"cookie": f"{NAME}={stale}; {NAME}={sid}"})
        assert is_clear(set_cookie_headers(out)[0])
        store = await mw.sessions.store()
        assert await store.load(sid) is None


# -- costs, counted by the server --


async def test_costs_in_redis_commands(redis: RedisProcess) -> None:
    """Anonymous 0, excluded 0 even with a cookie, read 1, read + write 2 (load + save)."""
    cfg = {"secret": SECRET, "redis": redis.redis_section()}
    app = SessionMiddleware(Starlette(routes=ROUTES), cfg, exclude=["/static"])

    async def counted(method: str, path: str, **kwargs: Any) -> dict[str, int]:
        reset_counts(redis)
        response = await http.request(method, path, **kwargs)
        assert response.status_code == 200
        if not command_calls(redis):
            return {}  # nothing at all, not even inside a script
        return client_commands(redis)

    assert "evalsha" not in SCRIPT_COMMANDS
    async with lifespan(app), client(app) as http:
        await http.post("/set/a")  # creates; its connection stays open for the rest
        cookie = sent(http.cookies[NAME])
        http.cookies.clear()
        # Each script's first run loads it (EVAL); from then on EVALSHA, as in production.
        await http.post("/set/warm", headers=cookie)
        assert await counted("GET", "/read") == {}
        assert await counted("GET", "/static/file", headers=cookie) == {}
        # One round trip: one script run (load), however often the app reads.
        assert await counted("GET", "/read", headers=cookie) == {"evalsha": 1}
        assert await counted("POST", "/set/b", headers=cookie) == {"evalsha": 2}
        # An excluded route that asks for the session: the one load.
        assert await counted("GET", "/static/lazy", headers=cookie) == {"evalsha": 1}


# -- Redis down --


async def test_redis_down_gives_503_and_keeps_the_cookie(
    fresh_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped: 503 within redis.timeout, no Set-Cookie; it heals when Redis returns."""
    cfg = {"secret": SECRET, "redis": fresh_redis.redis_section(timeout="1s")}
    app = SessionMiddleware(Starlette(routes=ROUTES), cfg)
    async with lifespan(app), client(app) as http:
        sid = session_id(await http.post("/set/a", params={"v": "x"}))
        fresh_redis.admin().save()  # the server keeps no data across a restart otherwise
        fresh_redis.stop()
        for path, method in [("/read", "GET"), ("/set/b", "POST"), ("/login", "POST")]:
            with anyio.fail_after(5):  # redis.timeout is 1 s; this only proves no hang
                response = await http.request(method, path, headers=sent(sid))
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert set_cookie_headers(response) == []
        # An anonymous page needs no store and still works.
        http.cookies.clear()
        assert (await http.get("/read")).json()["state"] == "anonymous"
        fresh_redis.restart()
        # The pool reconnects on its own schedule; the first requests may still get 503.
        with anyio.fail_after(30):
            healed = await http.get("/read", headers=sent(sid))
            while healed.status_code == 503:
                await anyio.sleep(0.1)
                healed = await http.get("/read", headers=sent(sid))
        assert healed.json() == {"state": "loaded", "data": {"a": "x"}}


async def test_app_starts_while_redis_is_down(
    fresh_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Startup succeeds with Redis down (one log line); the store opens once Redis is up."""
    cfg = {"secret": SECRET, "redis": fresh_redis.redis_section(timeout="1s")}
    fresh_redis.stop()
    app = create_app(cfg)
    with caplog.at_level(logging.WARNING, logger="redis_session"):
        async with lifespan(app), client(app) as http:
            assert '<p id="state">anonymous</p>' in (await http.get("/")).text
            assert (await http.post("/count")).status_code == 503
            assert (await http.post("/count")).status_code == 503
            down = [r for r in caplog.records if "session store unavailable" in r.getMessage()]
            assert len(down) == 1
            fresh_redis.restart()
            # Within a second of the last failed attempt requests still get 503 at once.
            with anyio.fail_after(30):
                response = await http.post("/count")
                while response.status_code == 503:
                    await anyio.sleep(0.1)
                    response = await http.post("/count")
            assert response.status_code == 303
            session_id(response)
            assert '<p id="count">1</p>' in (await http.get("/")).text


async def test_continue_lets_the_app_tell_store_down(fresh_redis: RedisProcess) -> None:
    """on_unavailable='continue': the app runs and sees 'unavailable', not 'anonymous'."""
    cfg = {"secret": SECRET, "redis": fresh_redis.redis_section(timeout="1s")}

    async def page(request: Request) -> Response:
        return PlainTextResponse(session_state(request))

    # Installed inside Starlette (its error middleware outermost), so an error raised in a
    # route reaches the session middleware before Starlette turns it into a 500.
    app = Starlette(
        routes=[Route("/", page), *ROUTES],
        middleware=[Middleware(SessionMiddleware, cfg=cfg, on_unavailable="continue")],
    )
    async with lifespan(app), client(app) as http:
        sid = session_id(await http.post("/set/a"))
        fresh_redis.stop()
        response = await http.get("/", headers=sent(sid))
        assert response.text == "unavailable"
        assert set_cookie_headers(response) == []
        # Touching the session there raises StoreUnavailable: 503, never an empty session.
        assert (await http.get("/read", headers=sent(sid))).status_code == 503
    custom_app = SessionMiddleware(
        Starlette(routes=ROUTES),
        cfg,
        on_unavailable=lambda exc: PlainTextResponse("down for now", status_code=503),
    )
    async with client(custom_app) as http:
        response = await http.get("/read", headers=sent(sid))
        assert (response.status_code, response.text) == (503, "down for now")
    await custom_app.aclose()


async def test_a_given_store_is_left_open(cfg: dict[str, Any]) -> None:
    """An open store passed in is used as is and not closed at shutdown."""
    async with open_session_store(cfg) as store:
        app = SessionMiddleware(Starlette(routes=ROUTES), store)
        async with lifespan(app), client(app) as http:
            sid = session_id(await http.post("/set/a"))
        loaded = await store.load(sid)
        assert loaded is not None
        assert loaded.data == {"a": "1"}


async def test_helpers_refuse_a_request_without_the_middleware() -> None:
    """login() on a request that did not go through the middleware says so."""
    with pytest.raises(UsageError, match="SessionMiddleware"):
        await login({"type": "http"})


async def test_websocket_sees_the_handshake_session(cfg: dict[str, Any]) -> None:
    """A WebSocket connection gets the session of its handshake, loaded, read-only."""
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            seen.update(state=session_state(scope), data=dict(scope["session"]))
            with pytest.raises(UsageError, match="read-only"):  # never saved: refused
                scope["session"]["ignored"] = True
            for helper in (login, logout):
                with pytest.raises(UsageError, match="WebSocket"):  # no cookie can go out
                    await helper(scope)
        else:
            await Starlette(routes=ROUTES)(scope, receive, send)

    mw = SessionMiddleware(inner, cfg)
    try:
        async with client(mw) as http:
            sid = session_id(await http.post("/set/a", params={"v": "x"}))
        scope = {
            "type": "websocket",
            "path": "/ws",
            "headers": [(b"host", b"example.com"), (b"cookie", f"{NAME}={sid}".encode())],
        }
        await mw(scope, None, None)  # type: ignore[arg-type]
        assert seen == {"state": "loaded", "data": {"a": "x"}}
        store = await mw.sessions.store()
        session = await store.load(sid)
        assert session is not None
        assert session.data == {"a": "x"}
    finally:
        await mw.aclose()


async def test_example_on_redis_from_a_config_file(redis: RedisProcess, tmp_path: Path) -> None:
    """The example app reads a YAML config file (what --config and LOGIN_APP_CONFIG pass)."""
    path = tmp_path / "cfg.yml"
    path.write_text(
        yaml.safe_dump({"session": {"secret": SECRET, "redis": redis.redis_section()}}),
        encoding="utf-8",
    )
    app = create_app(str(path))
    async with lifespan(app), client(app) as http:
        await http.post("/login", data={"username": "cy"})
        assert '<p id="state">logged in as cy</p>' in (await http.get("/")).text
    # The session, and cy's state and index keys (the app logs in with user=, docs/users.md).
    keys = sorted(k if isinstance(k, str) else k.decode() for k in redis.admin().scan_iter())
    assert len(keys) == 3
    assert [k.endswith(":e") for k in keys if ":u:" in k] == [False, True]


def test_the_middleware_imports_no_framework() -> None:
    """Importing redis_session.asgi loads no web framework: it is pure ASGI."""
    code = (
        "import sys, redis_session, redis_session.asgi\n"
        "loaded = {'starlette', 'fastapi', 'litestar', 'aiohttp', 'httpx'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_inactivity_ends_a_plain_session_not_a_remember_me_one(cfg: dict[str, Any]) -> None:
    """After the idle limit a plain login is gone (cookie cleared); a remember-me one lives."""
    app = create_app({**cfg, "inactivity": "1s"})
    async with lifespan(app), client(app) as plain, client(app) as remembered:
        await plain.post("/login", data={"username": "pat"})
        await remembered.post("/login", data={"username": "rem", "remember_me": "1"})
        await anyio.sleep(1.5)
        idle = await plain.get("/")
        assert '<p id="state">anonymous</p>' in idle.text
        assert is_clear(set_cookie_headers(idle)[0])
        kept = (await remembered.get("/")).text
        assert '<p id="state">logged in as rem</p>' in kept
        assert '<p id="remember">yes</p>' in kept


async def test_change_after_the_response_started_is_not_saved(
    cfg: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A change made while streaming the body cannot be saved: it is dropped, and logged."""

    async def stream(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            request.session["late"] = True
            yield b"streamed"

        return StreamingResponse(body())

    mw = SessionMiddleware(Starlette(routes=[Route("/stream", stream), *ROUTES]), cfg)
    try:
        async with client(mw) as http:
            sid = session_id(await http.post("/set/a"))
            with caplog.at_level(logging.WARNING, logger="redis_session"):
                assert (await http.get("/stream", headers=sent(sid))).text == "streamed"
        assert any("after the response started" in r.getMessage() for r in caplog.records)
        store = await mw.sessions.store()
        session = await store.load(sid)
        assert session is not None
        assert session.data == {"a": "1"}
    finally:
        await mw.aclose()


# -- lifespan cycles, failed start-up, 5xx, caching, option checks (issue 11 review) --


async def lifespan_answer(app: Any) -> tuple[dict[str, Any], asyncio.Task[None]]:
    """Send ``lifespan.startup``; return the app's answer (bounded, never a hang) and its task."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    return await asyncio.wait_for(from_app.get(), 10), task


async def test_each_lifespan_cycle_opens_a_fresh_store(cfg: dict[str, Any]) -> None:
    """The same app through three lifespans (a test client per test): each serves sessions."""
    mw = SessionMiddleware(Starlette(routes=ROUTES), cfg)
    stores = []
    for n in range(3):
        async with lifespan(mw), client(mw) as http:
            sid = session_id(await http.post("/set/a", params={"v": str(n)}))
            assert (await http.get("/read", headers=sent(sid))).json()["data"] == {"a": str(n)}
            stores.append(await mw.sessions.store())
    assert len({id(s) for s in stores}) == 3  # never a closed store reused


async def test_a_failed_open_fails_the_startup_with_a_message(
    redis: RedisProcess, tmp_path: Path
) -> None:
    """A store that cannot open (here: its config file is gone) is lifespan.startup.failed."""
    path = tmp_path / "cfg.yml"
    path.write_text(
        yaml.safe_dump({"session": {"secret": SECRET, "redis": redis.redis_section()}}),
        encoding="utf-8",
    )
    mw = SessionMiddleware(Starlette(routes=ROUTES), str(path))
    path.unlink()
    answer, task = await lifespan_answer(mw)
    assert answer["type"] == "lifespan.startup.failed", answer
    assert "session store" in answer["message"]
    await asyncio.wait_for(task, 10)  # the middleware returns: nothing waits for ever


async def test_a_5xx_response_saves_nothing(cfg: dict[str, Any]) -> None:
    """A 500 the app returns (or a framework makes of an error) does not save its changes."""

    async def fail(request: Request) -> Response:
        request.session["half"] = "done"
        return PlainTextResponse("failed", status_code=500)

    async def crash(request: Request) -> Response:
        request.session["half"] = "done"
        raise RuntimeError("crashed")

    app = Starlette(routes=[Route("/fail", fail), Route("/crash", crash), *ROUTES])
    mw = SessionMiddleware(app, cfg)  # around Starlette: its 500 page comes through us
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mw, raise_app_exceptions=False),
            base_url="https://example.com",
        ) as http:
            sid = session_id(await http.post("/set/a"))
            for path in ("/fail", "/crash"):
                response = await http.get(path, headers=sent(sid))
                assert response.status_code == 500
                assert not set_cookie_headers(response)
            # An anonymous visitor's 500 creates no session either.
            assert not set_cookie_headers(await http.get("/fail"))
        session = await (await mw.sessions.store()).load(sid)
        assert session is not None
        assert session.data == {"a": "1"}
    finally:
        await mw.aclose()


async def test_a_response_with_the_session_cookie_is_private(cfg: dict[str, Any]) -> None:
    """Set-Cookie makes the response private (public, s-maxage gone); a read one varies."""

    async def cached(request: Request) -> Response:
        if "w" in request.query_params:
            request.session["seen"] = True
        return PlainTextResponse(
            "page",
            headers={"cache-control": "public, max-age=600, s-maxage=60", "vary": "Accept"},
        )

    mw = SessionMiddleware(Starlette(routes=[Route("/cached", cached), *ROUTES]), cfg)
    try:
        async with client(mw) as http:
            new = await http.get("/cached", params={"w": "1"})
            assert set_cookie_headers(new)
            assert new.headers["cache-control"] == "private, max-age=600"
            assert new.headers["vary"] == "Accept, Cookie"
            # Read with a cookie, no Set-Cookie: caching stays the app's, keyed by Cookie.
            read_only = await http.get("/cached", headers=sent(session_id(new)))
            assert not set_cookie_headers(read_only)
            assert read_only.headers["cache-control"] == "public, max-age=600, s-maxage=60"
            assert read_only.headers["vary"] == "Accept, Cookie"
        async with client(mw) as http:  # a fresh client: no cookie in its jar
            # No cookie and no write: nothing of ours, nothing changed.
            anonymous = await http.get("/cached")
            assert anonymous.headers["vary"] == "Accept"
            # No Cache-Control at all: private.
            assert (await http.post("/set/a")).headers["cache-control"] == "private"
    finally:
        await mw.aclose()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"on_unavailable": "contniue"}, "on_unavailable"),
        ({"on_unavailable": "raise"}, "on_unavailable"),
        ({"on_conflict": "continue"}, "on_conflict"),
        ({"on_conflict": 409}, "on_conflict"),
        ({"exclude": None}, "exclude"),
        ({"exclude": [1]}, "exclude"),
        ({"exclude": [b"/static"]}, "exclude"),
        ({"exclude": ["/static/*"]}, "exclude"),
        ({"exclude": "static"}, "exclude"),
        ({"secure": "no"}, "secure"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any], named: str) -> None:
    """Every option is checked when the middleware is made, naming the option."""
    with pytest.raises(UsageError, match=named):
        SessionMiddleware(Starlette(), {"secret": SECRET}, **options)


def test_same_site_none_needs_secure() -> None:
    """SameSite=None without Secure (browsers drop it) is refused, naming where it comes from."""
    with pytest.raises(UsageError, match=r"session\.same_site.*secure"):
        SessionMiddleware(Starlette(), {"secret": SECRET, "same_site": "none"}, secure=False)
    entry = {"secret": SECRET, "cookies": [{"domain": "example.com", "same_site": "none"}]}
    with pytest.raises(UsageError, match=r"session\.cookies\[0\]\.same_site"):
        SessionMiddleware(Starlette(), entry, secure=False)
    SessionMiddleware(Starlette(), {"secret": SECRET, "same_site": "none"})  # Secure: fine


async def test_login_attaches_the_user(cfg: dict[str, Any]) -> None:
    """login(request, user=..., metadata=...): the session is in the user's list, one step."""
    mw = SessionMiddleware(Starlette(routes=ROUTES), {**cfg, "max_sessions_per_user": 1})
    try:
        async with client(mw) as http:
            first = await http.post(
                "/login", params={"owner": "ann"}, headers={"user-agent": "UA1"}
            )
            sid = session_id(first)
            store = await mw.sessions.store()
            [info] = await store.list_sessions("ann")
            assert info.metadata == {"ua": "UA1"}
            session = await store.load(sid)
            assert session is not None
            assert session.public_id == info.public_id
        # Another browser: denied by the limit, which the app sees as the error it is.
        async with client(mw) as other:
            with pytest.raises(SessionLimitReached):
                await other.post("/login", params={"owner": "ann"})
    finally:
        await mw.aclose()


async def test_split_cookie_fields_and_a_missing_host_header(cfg: dict[str, Any]) -> None:
    """The session cookie is found in any Cookie field (HTTP/2 splits them), under a name a
    hand-built scope may not lower-case; without a Host header the cookie follows the
    server's name (a host-only cookie)."""
    async with await open_session_store(cfg) as store:
        sid = (await store.create({"user": "ann"})).id
        seen: list[Any] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(dict(scope["session"]))
            scope["session"]["n"] = 1
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        for headers in (
            [(b"cookie", b"a=b"), (b"cookie", f"{NAME}={sid}".encode())],
            [(b"Cookie", f"theme=dark; {NAME}={sid}".encode())],
        ):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "method": "GET",
                "path": "/",
                "raw_path": b"/",
                "query_string": b"",
                "root_path": "",
                "scheme": "https",
                "headers": headers,
                "server": ("app.example.com", 443),
            }
            await SessionMiddleware(app, store)(scope, receive, send)
        assert seen == [{"user": "ann"}, {"user": "ann", "n": 1}]
        session = await store.load(sid)
        assert session is not None
        assert session.data == {"user": "ann", "n": 1}
        assert all(m.get("status", 200) == 200 for m in sent)
        ws_cookie = scope["redis_session"].cookie
        assert ws_cookie.domain is None
        assert ws_cookie.name == NAME
