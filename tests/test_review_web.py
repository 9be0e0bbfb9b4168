"""Adversarial review of the web layer (issue 11): reproducers of bugs, and probes that hold.

Every test runs the real middleware against a real redis-server from ``tests/servers.py`` (or
the in-memory provider where Redis plays no part): ASGI apps through ``httpx.ASGITransport``,
aiohttp apps through ``aiohttp.test_utils.TestServer``/``TestClient``.

- ``TestFindings*`` classes: each test reproduces a defect and FAILS until it is fixed; its
  docstring says what is wrong, why it matters, and its severity (HIGH/MEDIUM/LOW).
- ``TestHolds*`` classes: risky behaviour probed and found correct; kept as regression tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import redis_session._web as web_core
from redis_session import UsageError, open_session_store
from redis_session import aiohttp as rs_aiohttp
from redis_session.asgi import SessionMiddleware, load_session, login, logout, session_state

from .asgi_helpers import (
    client_commands,
    cookie_attributes,
    lifespan,
    reset_counts,
    set_cookie_headers,
)
from .servers import RedisProcess
from .store_helpers import SECRET

NAME = "authelia_session"
#: Events that hold a request inside its handler until the test lets it go on, and events
#: the handler sets when it got there (the session is loaded by then).
GATES: dict[str, asyncio.Event] = {}
ARRIVED: dict[str, asyncio.Event] = {}


def make_gate(name: str) -> None:
    GATES[name], ARRIVED[name] = asyncio.Event(), asyncio.Event()


async def gate(name: str) -> None:
    """In a handler: say it got here, then wait for the test to open the gate."""
    ARRIVED[name].set()
    await GATES[name].wait()


async def arrived(name: str) -> None:
    """In a test: wait (bounded) until the gated request is held at its gate."""
    await asyncio.wait_for(ARRIVED[name].wait(), 10)


def client(app: Any) -> httpx.AsyncClient:
    """An httpx client on ``app`` that keeps no cookies: every test sends what it means."""
    refuse_all = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="https://example.com",
        cookies=http.cookiejar.CookieJar(policy=refuse_all),
    )


async def lifespan_startup(app: Any) -> tuple[dict[str, Any], Any]:
    """Send ``lifespan.startup``; return the app's answer (bounded) and a function to stop it."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, to_app.get, from_app.put))
    await to_app.put({"type": "lifespan.startup"})
    getter = asyncio.ensure_future(from_app.get())
    await asyncio.wait({getter, task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        answer = getter.result()
    else:
        getter.cancel()
        answer = {"type": "(no answer)", "app": repr(task.exception()) if task.done() else "hangs"}

    async def stop() -> None:
        if not task.done():
            await to_app.put({"type": "lifespan.shutdown"})
            await asyncio.wait_for(from_app.get(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)

    return answer, stop


def cfg_for(proc: RedisProcess, **overrides: Any) -> dict[str, Any]:
    """A session mapping on ``proc``; ``overrides`` go into the session section."""
    return {"secret": SECRET, "redis": proc.redis_section(), **overrides}


def sent(value: str, name: str = NAME) -> dict[str, str]:
    """Headers sending ``value`` as the session cookie."""
    return {"cookie": f"{name}={value}"}


def new_id(response: httpx.Response) -> str:
    """The session id the response's only Set-Cookie gives."""
    (header,) = set_cookie_headers(response)
    _, value, attributes = cookie_attributes(header)
    assert value, header
    assert attributes.get("max-age") != "0", header
    return value


def clears(response: httpx.Response) -> bool:
    """Whether the response expires the session cookie."""
    return any(
        cookie_attributes(h)[1] == "" and cookie_attributes(h)[2].get("max-age") == "0"
        for h in set_cookie_headers(response)
    )


# -- a Starlette app for the probes --


async def read(request: Request) -> Response:
    return JSONResponse({"state": session_state(request), "data": dict(request.session)})


async def write(request: Request) -> Response:
    for key, value in request.query_params.items():
        request.session[key] = value
    return PlainTextResponse("ok")


async def write_true(request: Request) -> Response:
    request.session["flag"] = True
    return PlainTextResponse("ok")


async def write_one(request: Request) -> Response:
    request.session["flag"] = 1
    return PlainTextResponse("ok")


async def nested(request: Request) -> Response:
    # In place, as apps do with a cart: the top-level key is never reassigned.
    request.session.setdefault("cart", {"items": []})["items"].append(request.query_params["i"])
    return PlainTextResponse("ok")


async def do_login(request: Request) -> Response:
    request.session["user"] = "ann"
    await login(request, remember_me=request.query_params.get("remember") == "1")
    return PlainTextResponse("ok")


async def gated_login(request: Request) -> Response:
    """Loaded by the middleware before the gate; logs in after another request saved."""
    await gate(request.query_params["gate"])
    request.session["user"] = "ann"
    await login(request)
    return PlainTextResponse("ok")


async def gated_write(request: Request) -> Response:
    """Loaded before the gate; writes after a concurrent logout/login went through."""
    await gate(request.query_params["gate"])
    request.session["late"] = "write"
    return PlainTextResponse("ok")


async def do_logout(request: Request) -> Response:
    await logout(request)
    return PlainTextResponse("ok")


async def refuse(request: Request) -> Response:
    request.session["bad"] = object()  # no codec stores this
    return PlainTextResponse("ok")


async def crash(request: Request) -> Response:
    request.session["paid"] = "yes"
    raise RuntimeError("the payment provider failed")


async def health(request: Request) -> Response:
    return PlainTextResponse("up")


ROUTES = [
    Route("/read", read),
    Route("/write", write, methods=["POST"]),
    Route("/write-true", write_true, methods=["POST"]),
    Route("/write-one", write_one, methods=["POST"]),
    Route("/nested", nested, methods=["POST"]),
    Route("/login", do_login, methods=["POST"]),
    Route("/gated-login", gated_login, methods=["POST"]),
    Route("/gated-write", gated_write, methods=["POST"]),
    Route("/logout", do_logout, methods=["POST"]),
    Route("/refuse", refuse, methods=["POST"]),
    Route("/health", health),
    Route("/crash", crash, methods=["POST"]),
]


def asgi_app(cfg: Any, **options: Any) -> SessionMiddleware:
    return SessionMiddleware(Starlette(routes=ROUTES), cfg, **options)


@contextlib.asynccontextmanager
async def asgi(cfg: Any, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    mw = asgi_app(cfg, **options)
    try:
        async with client(mw) as c:
            yield c
    finally:
        await mw.aclose()


# -- an aiohttp app for the probes --


def aiohttp_app(cfg: Any, **options: Any) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/read")
    async def read_(request: web.Request) -> web.Response:
        session = await rs_aiohttp.load_session(request)
        return web.json_response({"data": dict(session)})

    @routes.post("/write")
    async def write_(request: web.Request) -> web.Response:
        session = await rs_aiohttp.load_session(request)
        for key, value in request.query.items():
            session[key] = value
        return web.Response(text="ok")

    @routes.post("/nested")
    async def nested_(request: web.Request) -> web.Response:
        session = await rs_aiohttp.load_session(request)
        session.setdefault("cart", {"items": []})["items"].append(request.query["i"])
        return web.Response(text="ok")

    @routes.get("/read-then-fail")
    async def read_then_fail(request: web.Request) -> web.Response:
        session = await rs_aiohttp.load_session(request)
        _ = dict(session)
        raise RuntimeError("the handler fails after reading the session")

    @routes.get("/static/x")
    async def static(request: web.Request) -> web.Response:
        return web.Response(text="static")

    app = web.Application()
    app.add_routes(routes)
    rs_aiohttp.setup(app, cfg, **options)
    return app


@contextlib.asynccontextmanager
async def aio(cfg: Any, **options: Any) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(
        TestServer(aiohttp_app(cfg, **options)), cookie_jar=DummyCookieJar()
    ) as c:
        yield c


def aio_cookie(response: Any) -> str | None:
    headers = response.headers.getall("Set-Cookie", [])
    if not headers:
        return None
    (header,) = headers
    return cookie_attributes(header)[1]


async def seed(proc: RedisProcess, **data: Any) -> str:
    """A session stored directly through the store; returns its id."""
    store = await open_session_store(cfg_for(proc))
    try:
        return (await store.create(data)).id
    finally:
        await store.aclose()


async def stored(proc: RedisProcess, sid: str) -> dict[str, Any] | None:
    """The data of session ``sid`` as the store loads it now (None: no session)."""
    store = await open_session_store(cfg_for(proc))
    try:
        session = await store.load(sid)
        return None if session is None else session.data
    finally:
        await store.aclose()


# ======================================================================================
# Findings: each test fails until the defect it describes is fixed.
# ======================================================================================


@pytest.mark.anyio
class TestFindings:
    async def test_a_foreign_cookie_of_the_same_name_logs_the_user_out(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM. Duplicate cookie names: the first id-shaped value is the only one tried.

        The default cookie name is Authelia's own (``authelia_session``). An app at
        ``app.example.com`` behind Authelia at ``auth.example.com`` receives Authelia's
        ``Domain=example.com`` cookie as well as its own host-only one; same path, so the
        browser lists the older first, i.e. Authelia's. ``session_cookie`` returns that one,
        the store does not know it, and the response CLEARS the host-only cookie, which is
        the app's real session: the user is logged out on every request, forever (the same
        happens with a sibling subdomain tossing a cookie of that name: a logout DoS). The
        valid session sent alongside must be found: try every id-shaped value (one lookup),
        and clear only when none loads.
        """
        good = await seed(redis, user="ann")
        foreign = "A" * 43  # id-shaped, unknown to this store (Authelia's cookie)
        async with asgi(cfg_for(redis)) as c:
            response = await c.get("/read", headers={"cookie": f"{NAME}={foreign}; {NAME}={good}"})
        assert response.json() == {"state": "loaded", "data": {"user": "ann"}}
        assert not clears(response)

    async def test_a_request_racing_the_login_clears_the_new_cookie(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM. Login racing a request on the old id logs the user out again.

        A browser sends the login POST and, concurrently, another request (an XHR, an image)
        with the old cookie. If that request reaches the server after the login regenerated
        the id, its load misses and its response carries ``Set-Cookie: <name>=; Max-Age=0``
        with the very name, Domain and Path of the cookie the login response just set. When
        it arrives after the login response (routine with parallel requests), the browser
        drops the NEW cookie: the user is logged out right after logging in. A miss on an id
        that was just regenerated should not clear the cookie (e.g. the regenerate leaves a
        short-lived marker under the old id, or the middleware only clears ids it can tell
        are dead for good); a revoked or tampered cookie is still cleared.
        """
        async with asgi(cfg_for(redis)) as c:
            old = new_id(await c.post("/write", params={"cart": "book"}))
            login_response = await c.post("/login", headers=sent(old))
            assert new_id(login_response) != old
            # The concurrent request, sent with the cookie the browser had when it left.
            racing = await c.get("/read", headers=sent(old))
        assert not clears(racing), set_cookie_headers(racing)

    async def test_login_fails_with_409_when_another_request_saved_meanwhile(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM. ``login`` does not merge: any concurrent save makes the login a 409.

        The end-of-request save merges a lost race (issue 11, Deliver 4: "concurrent requests
        lose nothing and fail rarely"), but ``WebSessions.login`` hands the request's data
        straight to ``store.regenerate``, whose compare-and-set fails if any other request of
        the browser saved the session since this one loaded it (a cart update, an analytics
        counter, a polling XHR). The user's correct password is then answered with 409 and
        they are not logged in. The login should reload, merge (as ``_save`` does) and
        regenerate again, failing only on a real clash.
        """
        app = Starlette(
            routes=ROUTES, middleware=[Middleware(SessionMiddleware, cfg=cfg_for(redis))]
        )
        async with lifespan(app), client(app) as c:
            sid = new_id(await c.post("/write", params={"cart": "book"}))
            make_gate("login")
            try:
                login_task = asyncio.ensure_future(
                    c.post("/gated-login", params={"gate": "login"}, headers=sent(sid))
                )
                await arrived("login")  # the login request has loaded the session
                other = await c.post("/write", params={"seen": "1"}, headers=sent(sid))
                assert other.status_code == 200
                GATES["login"].set()
                response = await asyncio.wait_for(login_task, 10)
            finally:
                GATES.pop("login", None)
        assert response.status_code == 200, response.text
        assert await stored(redis, new_id(response)) == {"cart": "book", "seen": "1", "user": "ann"}

    async def test_a_second_lifespan_cycle_never_starts(self, redis: RedisProcess) -> None:
        """MEDIUM. After one lifespan shutdown the middleware is dead for good, and the next
        startup HANGS.

        ``aclose`` sets ``_closed`` forever, so the next ``lifespan.startup`` runs ``start()``,
        which raises ``StoreClosed`` (only ``StoreUnavailable`` is suppressed) from inside the
        ``receive()`` the middleware hands the app. Starlette calls that first ``receive()``
        outside its try block, so it never answers ``lifespan.startup.failed``: the server
        waits forever (uvicorn in ``lifespan="auto"`` instead decides lifespan is unsupported
        and every session request then fails with ``StoreClosed``). Any other non-
        ``StoreUnavailable`` error of the open (a wrong password?) takes the same path. The same
        app object goes through several lifespan cycles in the most common test pattern
        (``with TestClient(app):`` per test with a module-level app, ``LifespanManager`` per
        test). Startup should reopen an owned store, and a failure of ``start()`` must be
        turned into ``lifespan.startup.failed`` by the middleware itself, not raised from
        ``receive()``.
        """
        mw = asgi_app(cfg_for(redis))
        try:
            for n in range(2):
                answer, stop = await lifespan_startup(mw)
                try:
                    assert answer["type"] == "lifespan.startup.complete", (n, answer)
                    async with client(mw) as c:
                        assert (await c.post("/write", params={"a": "1"})).status_code == 200
                finally:
                    await stop()
        finally:
            await mw.aclose()

    async def test_wrapped_around_starlette_a_crashed_request_saves_half_its_changes(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM. ``SessionMiddleware(Starlette(...))``: a handler that raises has its
        half-done session changes SAVED.

        Wrapping is the pattern the module docstring and docs/web.md show first ("any ASGI
        app", and the only one for Litestar). Starlette's outermost ``ServerErrorMiddleware``
        sends its 500 page through the middleware's ``send``, which takes it for the app's
        response and saves the session as the handler left it mid-way (``session["paid"] =
        True`` before the payment call that raised is now stored). The aiohttp adapter
        explicitly refuses this ("the error page made from it must not save them either"),
        and so does the ASGI middleware when installed inside Starlette: the same app gives
        different data depending on how the middleware was added. A 5xx response (or one
        sent after the app raised) should not save; at least the 500 from an exception.
        """
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/write", params={"paid": "no"}))
        mw = asgi_app(cfg_for(redis))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mw, raise_app_exceptions=False),
            base_url="https://example.com",
        ) as c:
            response = await c.post("/crash", headers=sent(sid))
        await mw.aclose()
        assert response.status_code == 500
        assert await stored(redis, sid) == {"paid": "no"}

    async def test_a_misspelled_on_unavailable_explodes_only_during_an_outage(
        self, fresh_redis: RedisProcess
    ) -> None:
        """MEDIUM. ``on_unavailable``/``on_conflict`` strings other than the documented ones
        are taken as handlers.

        ``SessionMiddleware(app, cfg, on_unavailable="contniue")`` is accepted; the string is
        stored as the error handler and called only when Redis goes down, where
        ``"contniue"(exc)`` raises ``TypeError``: instead of the promised 503 (or the app
        running on), every session request during the outage crashes with a 500, at the
        worst possible moment and never in development. A wrong value must be a
        ``UsageError`` naming the option at construction, as ``secure`` already is.
        """
        sid = await seed(fresh_redis, user="ann")
        try:
            mw = asgi_app(cfg_for(fresh_redis, redis=fresh_redis.redis_section(timeout="1s")),
                          on_unavailable="contniue")  # fmt: skip
        except UsageError:
            return  # refused at construction: fixed
        try:
            async with client(mw) as c:
                assert (await c.get("/read", headers=sent(sid))).status_code == 200
                fresh_redis.stop()
                response = await c.get("/read", headers=sent(sid))
            assert response.status_code == 503
        finally:
            await mw.aclose()

    async def test_aiohttp_setup_silently_ignores_a_misspelled_on_unavailable(self) -> None:
        """LOW. aiohttp ``setup(on_unavailable="contniue")`` silently means the default 503.

        ``on_unavailable if callable(on_unavailable) else _default_unavailable``: any
        non-callable value, a typo of ``"continue"`` included, falls back to the default, so
        the app that asked to render pages without a session during an outage serves 503s
        instead, and nothing says why. Should raise ``UsageError`` naming the option (same for
        ``on_conflict``).
        """
        app = web.Application()
        with pytest.raises(UsageError, match="on_unavailable"):
            rs_aiohttp.setup(app, {"secret": SECRET}, on_unavailable="contniue")  # type: ignore[arg-type]

    def test_exclude_of_the_wrong_type_is_not_a_usage_error(self) -> None:
        """LOW. ``exclude=None`` or ``exclude=[1]`` raise ``TypeError``/``AttributeError``.

        ``_exclusion`` iterates and calls ``.rstrip`` blindly, so a config-driven
        ``exclude=settings.get("exclude")`` (None) dies with "'NoneType' object is not
        iterable", which names no option. The rules ask for clear errors naming the option.
        """
        for bad in (None, [1], [b"/static"]):
            with pytest.raises(UsageError, match="exclude"):
                SessionMiddleware(Starlette(), {"secret": SECRET}, exclude=bad)  # type: ignore[arg-type]

    async def test_same_site_none_without_secure_is_a_cookie_browsers_reject(self) -> None:
        """LOW. ``same_site: none`` with ``secure=False`` emits ``SameSite=None`` without
        ``Secure``.

        Chromium and Firefox reject such a cookie outright ("SameSite=None requires
        Secure"): every login silently fails to stick, with no error on the server side. The
        combination should be refused (``UsageError`` naming ``secure``/``same_site``) or at
        least the cookie downgraded to ``Lax`` with a warning.
        """
        try:
            mw = asgi_app({"secret": SECRET, "same_site": "none"}, secure=False)
        except UsageError:
            return  # refused at construction: fixed
        async with client(mw) as c:
            response = await c.post("/write", params={"a": "1"})
        await mw.aclose()
        (header,) = set_cookie_headers(response)
        attributes = cookie_attributes(header)[2]
        # What reaches the browser must not be SameSite=None without Secure (it is dropped).
        assert attributes["samesite"] != "None" or "secure" in attributes, header

    async def test_a_write_that_compares_equal_is_lost(self, redis: RedisProcess) -> None:
        """LOW. Change detection by ``==`` drops writes that change only the type.

        ``session["flag"] = True`` over a stored ``1`` (or ``1.0`` over ``1``) compares equal
        to the loaded base, so ``changed`` is False and nothing is saved: the next request
        reads ``1``, not ``True``, although the codec stores the two differently. The same
        ``==`` in ``merge`` would let such a change be dropped from a merge. Compare by the
        encoded form (or type and value, recursively).
        """
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/write-one"))
            assert (await c.post("/write-true", headers=sent(sid))).status_code == 200
        assert (await stored(redis, sid)) == {"flag": True}
        assert (await stored(redis, sid) or {})["flag"] is True


# ======================================================================================
# Holds: risky behaviour probed and found correct (regression tests).
# ======================================================================================


@pytest.mark.anyio
class TestHolds:
    async def test_unknown_id_then_write_gets_a_fresh_id(self, redis: RedisProcess) -> None:
        """Fixation: a client-chosen (id-shaped, unknown) cookie never becomes the id."""
        planted = "P" * 43
        async with asgi(cfg_for(redis)) as c:
            response = await c.post("/write", params={"a": "1"}, headers=sent(planted))
        sid = new_id(response)
        assert sid != planted
        assert await stored(redis, planted) is None
        assert await stored(redis, sid) == {"a": "1"}

    async def test_login_with_a_planted_cookie_gets_a_fresh_id(self, redis: RedisProcess) -> None:
        """Fixation through the login helper: a planted unknown id is not adopted either."""
        planted = "Q" * 43
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/login", headers=sent(planted)))
        assert sid != planted
        assert await stored(redis, sid) == {"user": "ann"}

    async def test_malformed_cookie_cleared_without_a_command(self, redis: RedisProcess) -> None:
        """A cookie that is not id-shaped is cleared and never sent to Redis."""
        async with asgi(cfg_for(redis)) as c:
            await c.get("/read", headers=sent("W" * 43))  # the store opens, the script loads
            reset_counts(redis)
            response = await c.get("/read", headers=sent("x%0d%0aSet-Cookie:evil=1"))
        assert response.json()["state"] == "anonymous"
        assert clears(response)
        assert client_commands(redis) == {}

    async def test_request_header_content_never_reaches_set_cookie(
        self, redis: RedisProcess
    ) -> None:
        """Injection: Host with CR/LF or non-ASCII, cookie values with ';' reach no header."""
        async with asgi(cfg_for(redis)) as c:
            for host in ("evil.com\r\nSet-Cookie: pwn=1", "exämple.com", "a;Domain=com"):
                headers = [(b"host", host.encode()), (b"cookie", b"authelia_session=a;b=c")]
                response = await c.post("/write", params={"a": "1"}, headers=headers)
                (header,) = set_cookie_headers(response)
                assert "pwn" not in header, header
                assert "domain" not in header.lower(), header

    async def test_spoofed_host_gets_no_domain_the_app_does_not_own(
        self, redis: RedisProcess
    ) -> None:
        """Host spoofing: only a configured entry gives a Domain; other hosts get host-only."""
        cfg = cfg_for(redis, cookies=[{"domain": "example.com", "name": "ex"}])
        async with asgi(cfg) as c:
            for host in ("evil.com", "example.com.evil.com", "notexample.com", "com"):
                response = await c.post("/write", params={"a": "1"}, headers={"host": host})
                (header,) = set_cookie_headers(response)
                name, _, attributes = cookie_attributes(header)
                assert "domain" not in attributes, (host, header)
                assert name == NAME
            response = await c.post("/write", params={"a": "1"}, headers={"host": "A.Example.COM."})
            name, _, attributes = cookie_attributes(set_cookie_headers(response)[0])
            assert (name, attributes["domain"]) == ("ex", "example.com")

    async def test_logout_racing_a_save_is_never_resurrected(self, redis: RedisProcess) -> None:
        """starsessions #58 / aiohttp-session #272: a late save does not bring a session back."""
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/write", params={"user": "ann"}))
            make_gate("logout")
            try:
                late = asyncio.ensure_future(
                    c.post("/gated-write", params={"gate": "logout"}, headers=sent(sid))
                )
                await arrived("logout")
                out = await c.post("/logout", headers=sent(sid))
                assert clears(out)
                GATES["logout"].set()
                response = await asyncio.wait_for(late, 10)
            finally:
                GATES.pop("logout", None)
        assert response.status_code == 409
        assert set_cookie_headers(response) == []  # a 409 never touches the cookie
        assert await stored(redis, sid) is None
        assert redis.admin().dbsize() == 0

    async def test_regenerated_session_not_resurrected_by_a_late_save(
        self, redis: RedisProcess
    ) -> None:
        """A request on the old id saving after a login is refused (409), old id stays dead."""
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/write", params={"a": "1"}))
            make_gate("regen")
            try:
                late = asyncio.ensure_future(
                    c.post("/gated-write", params={"gate": "regen"}, headers=sent(sid))
                )
                await arrived("regen")
                new = new_id(await c.post("/login", headers=sent(sid)))
                GATES["regen"].set()
                response = await asyncio.wait_for(late, 10)
            finally:
                GATES.pop("regen", None)
        assert response.status_code == 409
        assert await stored(redis, sid) is None
        assert await stored(redis, new) == {"a": "1", "user": "ann"}

    async def test_nested_in_place_changes_saved_and_merged(self, redis: RedisProcess) -> None:
        """A nested dict mutated in place is noticed and saved; a read-only request is 1 command."""
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/nested", params={"i": "a"}))
            assert (
                set_cookie_headers(await c.post("/nested", params={"i": "b"}, headers=sent(sid)))
                == []
            )
            await c.get("/read", headers=sent(sid))  # the load script's first run (NOSCRIPT)
            reset_counts(redis)
            response = await c.get("/read", headers=sent(sid))
            assert sum(client_commands(redis).values()) == 1
        assert response.json()["data"] == {"cart": {"items": ["a", "b"]}}

    async def test_concurrent_writes_of_different_keys_merge(self, redis: RedisProcess) -> None:
        """Three-way merge with deletes: 30 writers + a delete of another key lose nothing."""
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/write", params={"gone": "x"}))
            responses = await asyncio.gather(
                *(c.post("/write", params={f"k{i}": str(i)}, headers=sent(sid)) for i in range(30))
            )
        assert {r.status_code for r in responses} == {200}
        data = await stored(redis, sid)
        assert data is not None
        assert {k: data[k] for k in data if k.startswith("k")} == {
            f"k{i}": str(i) for i in range(30)
        }

    async def test_costs_under_aiohttp(self, redis: RedisProcess) -> None:
        """aiohttp: anonymous 0, excluded with cookie 0, read-only 1, read then fail no write."""
        async with aio(cfg_for(redis), exclude=["/static"]) as c:
            first = await c.post("/nested", params={"i": "a"})
            sid = aio_cookie(first)
            assert sid
            await c.get("/read", headers=sent(sid))  # the load script's first run (NOSCRIPT)
            reset_counts(redis)
            assert (await c.get("/read")).status == 200
            assert client_commands(redis) == {}
            assert (await c.get("/static/x", headers=sent(sid))).status == 200
            assert client_commands(redis) == {}
            read_only = await c.get("/read", headers=sent(sid))
            assert aio_cookie(read_only) is None
            assert sum(client_commands(redis).values()) == 1
            reset_counts(redis)
            assert (await c.get("/read-then-fail", headers=sent(sid))).status == 500
            assert sum(client_commands(redis).values()) == 1  # the load; no save
        assert await stored(redis, sid) == {"cart": {"items": ["a"]}}

    async def test_paused_redis_gives_503_and_keeps_the_cookie_asgi(
        self, fresh_redis: RedisProcess
    ) -> None:
        """SIGSTOP: a session request gets 503 within redis.timeout, no Set-Cookie; recovers."""
        sid = await seed(fresh_redis, user="ann")
        cfg = cfg_for(fresh_redis, redis=fresh_redis.redis_section(timeout="1s"))
        async with asgi(cfg) as c:
            assert (await c.get("/read", headers=sent(sid))).status_code == 200
            fresh_redis.pause()
            try:
                started = time.monotonic()
                response = await asyncio.wait_for(c.get("/read", headers=sent(sid)), 3)
                assert time.monotonic() - started < 3  # hang guard: timeout 1 s + 2 s
                assert response.status_code == 503
                assert set_cookie_headers(response) == []
                anonymous = await c.get("/read")  # no cookie: needs no Redis
                assert anonymous.status_code == 200
            finally:
                fresh_redis.resume()
            response = await c.get("/read", headers=sent(sid))
        assert response.json() == {"state": "loaded", "data": {"user": "ann"}}

    async def test_paused_redis_gives_503_and_keeps_the_cookie_aiohttp(
        self, fresh_redis: RedisProcess
    ) -> None:
        """SIGSTOP under aiohttp: 503 within the timeout, no Set-Cookie; recovers."""
        sid = await seed(fresh_redis, user="ann")
        cfg = cfg_for(fresh_redis, redis=fresh_redis.redis_section(timeout="1s"))
        async with aio(cfg) as c:
            fresh_redis.pause()
            try:
                response = await asyncio.wait_for(
                    c.post("/write", params={"a": "1"}, headers=sent(sid)), 3
                )
                assert response.status == 503
                assert response.headers.getall("Set-Cookie", []) == []
            finally:
                fresh_redis.resume()
            response = await c.get("/read", headers=sent(sid))
            assert await response.json() == {"data": {"user": "ann"}}

    async def test_app_starts_while_redis_is_paused_and_heals(
        self, fresh_redis: RedisProcess
    ) -> None:
        """Lifespan startup with Redis paused completes (bounded), and the app heals."""
        sid = await seed(fresh_redis, user="ann")
        cfg = cfg_for(fresh_redis, redis=fresh_redis.redis_section(timeout="1s"))
        mw = asgi_app(cfg)
        fresh_redis.pause()
        resumed = False
        try:
            async with lifespan(mw), client(mw) as c:
                assert (await c.get("/read", headers=sent(sid))).status_code == 503
                fresh_redis.resume()
                resumed = True
                await asyncio.sleep(web_core._REOPEN_PAUSE + 0.1)
                response = await c.get("/read", headers=sent(sid))
                assert response.json() == {"state": "loaded", "data": {"user": "ann"}}
        finally:
            if not resumed:
                fresh_redis.resume()
            await mw.aclose()

    async def test_hundred_first_requests_open_one_store(
        self, redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The lazy opener: 100 concurrent first requests share one open_session_store."""
        opened = []
        real = web_core.open_session_store

        async def counting(source: Any) -> Any:
            opened.append(source)
            return await real(source)

        monkeypatch.setattr(web_core, "open_session_store", counting)
        sid = await seed(redis, user="ann")
        async with asgi(cfg_for(redis)) as c:
            responses = await asyncio.gather(
                *(c.get("/read", headers=sent(sid)) for _ in range(100))
            )
        assert {r.status_code for r in responses} == {200}
        assert len(opened) == 1

    async def test_store_passed_in_is_not_closed_by_the_lifespan(self, redis: RedisProcess) -> None:
        """An open store given to the middleware survives its shutdown."""
        store = await open_session_store(cfg_for(redis))
        try:
            mw = asgi_app(store)
            async with lifespan(mw), client(mw) as c:
                sid = new_id(await c.post("/write", params={"a": "1"}))
            assert (await store.load(sid)) is not None
        finally:
            await store.aclose()

    async def test_cancelled_save_leaks_nothing_and_corrupts_nothing(
        self, fresh_redis: RedisProcess
    ) -> None:
        """Client gone mid-save (Redis paused, request cancelled): no leak, session intact."""
        sid = await seed(fresh_redis, user="ann")
        store = await open_session_store(cfg_for(fresh_redis))
        try:
            mw = asgi_app(store)
            async with client(mw) as c:
                make_gate("cancel")
                try:
                    task = asyncio.ensure_future(
                        c.post("/gated-write", params={"gate": "cancel"}, headers=sent(sid))
                    )
                    await arrived("cancel")  # loaded; now the save will hang
                    fresh_redis.pause()
                    GATES["cancel"].set()
                    await asyncio.sleep(0.2)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                finally:
                    fresh_redis.resume()
                    GATES.pop("cancel", None)
                for _ in range(100):  # the cancelled call's connection is dropped, bounded
                    if store.statistics().in_use == 0:
                        break
                    await asyncio.sleep(0.05)
                assert store.statistics().in_use == 0, store.statistics()
                response = await c.post("/write", params={"after": "1"}, headers=sent(sid))
                assert response.status_code == 200
            data = (await store.load(sid)).data  # type: ignore[union-attr]
            assert data["user"] == "ann"
            assert data["after"] == "1"
        finally:
            await store.aclose()

    async def test_codec_refusal_is_a_500_and_the_session_survives(
        self, redis: RedisProcess
    ) -> None:
        """A value the codec refuses: the request fails (500), the stored session is intact."""
        async with asgi(cfg_for(redis)) as c:
            sid = new_id(await c.post("/write", params={"a": "1"}))
        mw = SessionMiddleware(
            Starlette(routes=ROUTES), cfg_for(redis)
        )  # Starlette's ServerErrorMiddleware turns the error into a 500
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=mw, raise_app_exceptions=False),
            base_url="https://example.com",
        ) as c:
            response = await c.post("/refuse", headers=sent(sid))
        await mw.aclose()
        assert response.status_code == 500
        assert set_cookie_headers(response) == []
        assert await stored(redis, sid) == {"a": "1"}

    async def test_helpers_outside_the_middleware_are_usage_errors(self) -> None:
        """login/logout/load_session/session_state on a bare request name the middleware."""
        scope = {"type": "http", "headers": [], "path": "/"}
        for helper in (login, logout, load_session):
            with pytest.raises(UsageError, match="SessionMiddleware"):
                await helper(scope)
        with pytest.raises(UsageError, match="SessionMiddleware"):
            session_state(scope)

    def test_exclude_cannot_exclude_everything_by_accident(self) -> None:
        """exclude="/" or a bare string: refused or taken as one prefix, never every path."""
        with pytest.raises(UsageError):
            SessionMiddleware(Starlette(), {"secret": SECRET}, exclude=["/"])
        mw = SessionMiddleware(Starlette(), {"secret": SECRET}, exclude="/static")
        assert mw.sessions.excluded("/static/a.css")
        assert not mw.sessions.excluded("/")
        assert not mw.sessions.excluded("/staticky")

    async def test_store_of_another_data_type_is_refused(self, redis: RedisProcess) -> None:
        """A store of non-dict data (attrs class) is refused with a UsageError."""

        @attrs.define
        class Data:
            user: str = ""

        store = await open_session_store(cfg_for(redis), data_type=Data)
        try:
            with pytest.raises(UsageError, match="dict"):
                SessionMiddleware(Starlette(), store)
        finally:
            await store.aclose()


# -- probes added in the second pass --


async def ws_writer(websocket: WebSocket) -> None:
    websocket.session["from_ws"] = "1"
    await websocket.accept()
    await websocket.close()


async def run_websocket(app: Any, cookie: str) -> list[dict[str, Any]]:
    """One WebSocket connection through ``app`` (raw ASGI): connect, let the app close it."""
    sent_by_app: list[dict[str, Any]] = []
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "websocket.connect"})

    async def send(message: dict[str, Any]) -> None:
        sent_by_app.append(message)
        if message["type"] == "websocket.close":
            await inbox.put({"type": "websocket.disconnect", "code": 1000})

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "scheme": "wss",
        "headers": [(b"host", b"example.com"), (b"cookie", f"{NAME}={cookie}".encode())],
        "subprotocols": [],
        "client": ("127.0.0.1", 1),
        "server": ("example.com", 443),
    }
    await asyncio.wait_for(app(scope, inbox.get, send), 5)
    return sent_by_app


@pytest.mark.anyio
class TestFindingsWebSocket:
    async def test_a_websocket_write_to_the_session_is_silently_lost(
        self, redis: RedisProcess
    ) -> None:
        """LOW. WebSocket sessions are "read-only" by documentation only: writes vanish.

        docs/web.md says a WebSocket sees its handshake's session read-only, but
        ``websocket.session["k"] = v`` succeeds and is never saved: the app believes it stored
        something (a "last seen" mark, a chat preference). Writing should raise (a read-only
        mapping, or a ``UsageError`` saying use ``store.update(id, fn)``), as touching an
        excluded path's session does.
        """
        sid = await seed(redis, user="ann")
        app = SessionMiddleware(
            Starlette(routes=[*ROUTES, WebSocketRoute("/ws", ws_writer)]), cfg_for(redis)
        )
        try:
            try:
                await run_websocket(app, sid)
            except (UsageError, TypeError):
                return  # the write was refused: fixed
        finally:
            await app.aclose()
        assert await stored(redis, sid) == {"user": "ann", "from_ws": "1"}


class TestHoldsMore:
    def test_the_middleware_survives_a_second_event_loop(self, redis: RedisProcess) -> None:
        """A store opened lazily in one event loop serves requests in a later one.

        Starlette's ``TestClient`` without ``with`` runs every request in a new event loop.
        """
        mw = asgi_app(cfg_for(redis))

        async def one(params: dict[str, str], cookie: str | None) -> httpx.Response:
            async with client(mw) as c:
                return await c.post("/write", params=params, headers=sent(cookie) if cookie else {})

        sid = new_id(asyncio.run(one({"a": "1"}, None)))
        assert asyncio.run(one({"b": "2"}, sid)).status_code == 200
        asyncio.run(mw.aclose())
        assert asyncio.run(stored(redis, sid)) == {"a": "1", "b": "2"}

    @pytest.mark.anyio
    async def test_concurrent_delete_and_set_of_other_keys_merge(self, redis: RedisProcess) -> None:
        """Merge with deletes: one request deletes a key while another sets one; both land."""

        async def drop(request: Request) -> Response:
            await gate("drop")
            del request.session["gone"]
            return PlainTextResponse("ok")

        app = SessionMiddleware(
            Starlette(routes=[*ROUTES, Route("/drop", drop, methods=["POST"])]), cfg_for(redis)
        )
        make_gate("drop")
        try:
            async with client(app) as c:
                sid = new_id(await c.post("/write", params={"gone": "x", "kept": "y"}))
                dropping = asyncio.ensure_future(c.post("/drop", headers=sent(sid)))
                await arrived("drop")
                assert (
                    await c.post("/write", params={"new": "z"}, headers=sent(sid))
                ).status_code == 200
                GATES["drop"].set()
                assert (await asyncio.wait_for(dropping, 10)).status_code == 200
        finally:
            GATES.pop("drop", None)
            await app.aclose()
        assert await stored(redis, sid) == {"kept": "y", "new": "z"}

    @pytest.mark.anyio
    async def test_remember_me_login_cookie_lasts_remember_me(self, redis: RedisProcess) -> None:
        """login(remember_me=True): the cookie's Max-Age is remember_me, not expiration."""
        cfg = cfg_for(redis, expiration="1h", remember_me="30d")
        async with asgi(cfg) as c:
            plain = await c.post("/login")
            remembered = await c.post("/login", params={"remember": "1"})
        plain_age = int(cookie_attributes(set_cookie_headers(plain)[0])[2]["max-age"])
        remembered_age = int(cookie_attributes(set_cookie_headers(remembered)[0])[2]["max-age"])
        assert 3500 <= plain_age <= 3600
        assert 30 * 86400 - 100 <= remembered_age <= 30 * 86400

    @pytest.mark.anyio
    async def test_cookie_per_host_with_several_entries(self, redis: RedisProcess) -> None:
        """Several cookies[] entries: each host gets its entry's name, Domain and expiration."""
        cfg = cfg_for(
            redis,
            cookies=[
                {"domain": "example.com", "name": "com_s", "expiration": "1h"},
                {"domain": "example.org", "name": "org_s", "expiration": "2h"},
            ],
        )
        async with asgi(cfg) as c:
            seen = {}
            for host in ("app.example.com", "x.y.example.org", "example.net"):
                response = await c.post("/write", params={"a": "1"}, headers={"host": host})
                name, _, attributes = cookie_attributes(set_cookie_headers(response)[0])
                seen[host] = (name, attributes.get("domain"), int(attributes["max-age"]) // 600)
        assert seen == {
            "app.example.com": ("com_s", "example.com", 5),
            "x.y.example.org": ("org_s", "example.org", 11),
            "example.net": (NAME, None, 5),
        }

    @pytest.mark.anyio
    async def test_hundred_requests_while_redis_is_down_share_one_attempt(
        self, fresh_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Redis stopped at start: 100 session requests get 503 from one open attempt."""
        opened = []
        real = web_core.open_session_store

        async def counting(source: Any) -> Any:
            opened.append(source)
            return await real(source)

        monkeypatch.setattr(web_core, "open_session_store", counting)
        sid = await seed(fresh_redis, user="ann")
        cfg = cfg_for(fresh_redis, redis=fresh_redis.redis_section(timeout="1s"))
        fresh_redis.stop()
        async with asgi(cfg) as c:
            responses = await asyncio.gather(
                *(c.get("/read", headers=sent(sid)) for _ in range(100))
            )
        assert {r.status_code for r in responses} == {503}
        assert all(set_cookie_headers(r) == [] for r in responses)
        assert len(opened) == 1


async def login_then_gate(request: Request) -> Response:
    """Logs in, then (Redis going away meanwhile) writes more before the response."""
    request.session["user"] = "ann"
    await login(request)
    await gate("after-login")
    request.session["greeted"] = "yes"
    return PlainTextResponse("ok")


@pytest.mark.anyio
class TestFindingsMore:
    async def test_an_outage_after_login_leaves_the_browser_with_a_dead_id(
        self, fresh_redis: RedisProcess
    ) -> None:
        """LOW. ``login()`` already moved the session; a 503 at the end save drops the new
        cookie.

        ``login`` regenerates at once (the old id is dead), but the ``Set-Cookie`` for the new
        id only goes out with the app's response. If the end-of-request save then fails
        (Redis paused or a blip; also a ``SessionDataError`` or any exception after
        ``login``), the middleware answers 503 without any ``Set-Cookie``: the browser keeps
        the dead old id, whose next request misses and is cleared. The user is logged out
        (and their pre-login data sits under an id nobody holds) although the outage rule
        says "never a logout". The error response should still carry the new id's cookie
        once ``login`` succeeded (or ``login`` should not kill the old id before the
        response commits).
        """
        cfg = cfg_for(fresh_redis, redis=fresh_redis.redis_section(timeout="1s"))
        app = SessionMiddleware(
            Starlette(routes=[*ROUTES, Route("/login-gate", login_then_gate, methods=["POST"])]),
            cfg,
        )
        make_gate("after-login")
        try:
            async with client(app) as c:
                old = new_id(await c.post("/write", params={"cart": "book"}))
                pending = asyncio.ensure_future(c.post("/login-gate", headers=sent(old)))
                await arrived("after-login")  # logged in: the old id is gone
                fresh_redis.pause()
                try:
                    GATES["after-login"].set()
                    response = await asyncio.wait_for(pending, 5)
                finally:
                    fresh_redis.resume()
                assert response.status_code == 503
                # What the browser holds now: the new id if the 503 carried it, else the old.
                held = (
                    cookie_attributes(set_cookie_headers(response)[0])[1]
                    if set_cookie_headers(response)
                    else old
                )
                after = await c.get("/read", headers=sent(held))
        finally:
            GATES.pop("after-login", None)
            await app.aclose()
        assert after.json()["state"] == "loaded", "the outage logged the user out"
        assert not clears(after)

    async def test_aiohttp_a_foreign_cookie_of_the_same_name_logs_the_user_out(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM. The duplicate-name defect (see the ASGI test above) under aiohttp too.

        The parsing is in the shared core (``_cookies.session_cookie``), so an aiohttp app
        behind Authelia loses its session the same way: the foreign cookie listed first is
        tried, misses, and the app's own cookie is cleared.
        """
        good = await seed(redis, user="ann")
        async with aio(cfg_for(redis)) as c:
            response = await c.get("/read", headers={"Cookie": f"{NAME}={'A' * 43}; {NAME}={good}"})
            assert await response.json() == {"data": {"user": "ann"}}
            assert aio_cookie(response) is None  # neither set nor cleared

    async def test_a_middleware_given_an_open_store_dies_after_one_lifespan(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM. Even with a store passed in (the caller's to close), one lifespan cycle
        disables the middleware.

        ``aclose`` (run at ``lifespan.shutdown``) drops ``_store`` and sets ``_closed`` even
        though it leaves the caller's store open, so every later request raises
        ``StoreClosed`` (a 500) although the store is open and healthy. Same root cause as
        ``test_a_second_lifespan_cycle_never_starts``; a passed-in store should stay usable.
        """
        store = await open_session_store(cfg_for(redis))
        mw = asgi_app(store)
        try:
            answer, stop = await lifespan_startup(mw)
            assert answer["type"] == "lifespan.startup.complete"
            await stop()
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=mw, raise_app_exceptions=False),
                base_url="https://example.com",
            ) as c:
                response = await c.post("/write", params={"a": "1"})
            assert response.status_code == 200
        finally:
            await store.aclose()

    def test_a_glob_in_exclude_silently_excludes_nothing(self) -> None:
        """LOW. ``exclude=["/static/*"]`` is taken as the literal prefix ``/static/*``.

        Exclusion is by path prefix, but nothing stops a glob (the form Starlette/aiohttp
        users and most config files use): ``/static/app.css`` is then not excluded, every
        static file with a cookie costs a Redis round trip and fails with 503 during an
        outage, silently. A ``*``, ``?`` or ``[`` in a prefix should be a ``UsageError``
        (or be honoured as a glob).
        """
        try:
            mw = SessionMiddleware(Starlette(), {"secret": SECRET}, exclude=["/static/*"])
        except UsageError:
            return  # refused: fixed
        assert mw.sessions.excluded("/static/app.css")

    async def test_a_new_session_cookie_goes_out_on_a_publicly_cacheable_response(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM. A response carrying a new session's ``Set-Cookie`` stays publicly cacheable.

        A page the app marks ``Cache-Control: public, max-age=600`` (a landing page that also
        counts visits, or sets a "seen banner" flag) writes to the session of an anonymous
        visitor: the middleware adds ``Set-Cookie`` with the new session id and leaves the
        caching headers alone. A shared cache or CDN in front then stores that response and
        hands the SAME session cookie to every later visitor: they all share one session and
        see and change each other's data (a login regenerates the id, but everything written
        before it is shared). Django and Flask guard against this (``Vary: Cookie``; Django
        refuses to cache responses that set cookies). A response that sets or clears the
        session cookie should be made non-shareable (``Cache-Control: private`` or
        ``no-store``, and ``Vary: Cookie`` on responses that read the session).
        """

        async def landing(request: Request) -> Response:
            request.session["seen_banner"] = True
            return PlainTextResponse("welcome", headers={"cache-control": "public, max-age=600"})

        app = SessionMiddleware(Starlette(routes=[Route("/", landing)]), cfg_for(redis))
        try:
            async with client(app) as c:
                response = await c.get("/")
        finally:
            await app.aclose()
        assert set_cookie_headers(response)  # a new session id went out
        directives = {d.strip().split("=")[0] for d in response.headers["cache-control"].split(",")}
        assert directives & {"private", "no-store"}, response.headers["cache-control"]
        assert "public" not in directives, response.headers["cache-control"]
