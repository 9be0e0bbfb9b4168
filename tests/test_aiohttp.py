"""The aiohttp adapter, through a real aiohttp server (``aiohttp.test_utils``), on both stores.

The server and client are aiohttp's own ``TestServer`` and ``TestClient`` run from anyio
tests (pytest-aiohttp is not used: it breaks the suite). The client keeps no cookie jar:
each test sends the ``Cookie`` header it means and reads ``Set-Cookie`` itself, so what the
middleware sends is checked exactly (a jar would also hide ``Secure`` cookies over http).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import DummyCookieJar, ServerDisconnectedError, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from redis_session import SessionStore, StoreClosed, UsageError, open_session_store
from redis_session._web import WebSessions
from redis_session.aiohttp import (
    load_session,
    login,
    logout,
    session_public_id,
    session_state,
    session_store,
    setup,
)

from .servers import RedisProcess
from .store_helpers import SECRET, Backend

pytestmark = pytest.mark.anyio

NAME = "authelia_session"
#: Where build_app keeps what setup() returned: the session layer (its store, for tests).
LAYER = web.AppKey("test_layer", WebSessions)


# -- the app under test --


def build_app(cfg: Any, **options: Any) -> web.Application:
    """A small app: read, write, log in and out, an excluded path, a streamed response."""
    routes = web.RouteTableDef()

    @routes.get("/read")
    async def read(request: web.Request) -> web.Response:
        session = await load_session(request)
        return web.json_response({"state": session_state(request), "data": dict(session)})

    @routes.post("/set")
    async def set_(request: web.Request) -> web.Response:
        session = await load_session(request)
        for key, value in request.query.items():
            session[key] = value
        return web.Response(text="ok")

    @routes.post("/login")
    async def login_(request: web.Request) -> web.Response:
        session = await load_session(request)
        session["user"] = request.query.get("user", "ann")
        owner = request.query.get("owner")  # a login that attaches the session to a user
        await login(
            request,
            remember_me=request.query.get("remember") == "1",
            user=owner,
            metadata=None if owner is None else {"ua": request.headers.get("User-Agent", "")},
        )
        # The usual redirect after a login, raised: it must carry the new cookie.
        raise web.HTTPFound("/read")

    @routes.get("/mine")
    async def mine(request: web.Request) -> web.Response:
        store = await session_store(request)
        listed = await store.list_sessions(request.query.get("owner", "ann"))
        return web.json_response(
            {
                "public_id": session_public_id(request),
                "listed": [info.public_id for info in listed],
            }
        )

    @routes.post("/logout")
    async def logout_(request: web.Request) -> web.Response:
        await logout(request)
        return web.Response(text="bye")

    @routes.get("/static/app.css")
    async def static(request: web.Request) -> web.Response:
        return web.Response(text=session_state(request))

    @routes.get("/static/session")
    async def static_loaded(request: web.Request) -> web.Response:
        session = await load_session(request)
        return web.json_response(dict(session))

    @routes.get("/stream")
    async def stream(request: web.Request) -> web.StreamResponse:
        session = await load_session(request)
        session["streamed"] = True
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"chunk")
        return response

    @routes.get("/boom")
    async def boom(request: web.Request) -> web.Response:
        session = await load_session(request)
        session["half"] = "done"
        raise RuntimeError("handler failed")

    app = web.Application()
    app.add_routes(routes)
    app[LAYER] = setup(app, cfg, exclude=options.pop("exclude", ["/static"]), **options)
    return app


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The app on a loopback port, with a client that keeps no cookies of its own."""
    async with TestClient(TestServer(app), cookie_jar=DummyCookieJar()) as client:
        yield client


def cookie_of(response: Any) -> str | None:
    """The value our Set-Cookie gives (``""`` for a clear), or None if none was sent."""
    headers = response.headers.getall("Set-Cookie", [])
    assert len(headers) <= 1, headers
    if not headers:
        return None
    jar: SimpleCookie = SimpleCookie()
    jar.load(headers[0])
    return jar[NAME].value


def attributes(header: str) -> dict[str, str]:
    """``Set-Cookie`` attributes, lower-cased names (flags map to ``""``)."""
    _, _, rest = header.partition(";")
    found = {}
    for part in rest.split(";"):
        key, _, value = part.strip().partition("=")
        found[key.lower()] = value
    return found


def jar(sid: str) -> dict[str, str]:
    return {"Cookie": f"{NAME}={sid}"}


async def new_session(client: TestClient[Any, Any], **data: str) -> str:
    response = await client.post("/set", params=data)
    assert response.status == 200
    sid = cookie_of(response)
    assert sid
    return sid


# -- basics, on memory and Redis --


async def test_anonymous_visit_writes_nothing(backend: Backend) -> None:
    """No cookie: the session is empty and anonymous, no cookie is set, nothing is stored."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        response = await client.get("/read")
        assert response.status == 200
        assert await response.json() == {"state": "anonymous", "data": {}}
        assert cookie_of(response) is None
    assert backend.keys() == []


async def test_first_write_sets_a_cookie_from_the_config(backend: Backend) -> None:
    """Name, Path=/, HttpOnly, Secure, SameSite, and Expires/Max-Age of the deadline."""
    store = await backend.open(expiration="1h", same_site="strict")
    async with serve(build_app(store)) as client:
        response = await client.post("/set", params={"cart": "book"})
        (header,) = response.headers.getall("Set-Cookie")
        attrs = attributes(header)
        assert header.startswith(f"{NAME}=")
        assert attrs["path"] == "/"
        assert "httponly" in attrs
        assert "secure" in attrs
        assert attrs["samesite"] == "Strict"
        assert "domain" not in attrs  # no cookies[] entry serves 127.0.0.1: host-only
        assert 3590 <= int(attrs["max-age"]) <= 3600
        assert attrs["expires"].endswith("GMT")
        sid = cookie_of(response)
        assert sid is not None
        read = await client.get("/read", headers=jar(sid))
        assert await read.json() == {"state": "loaded", "data": {"cart": "book"}}
        assert cookie_of(read) is None  # read only: no save, no cookie


async def test_cookie_name_and_domain_from_the_matching_entry(backend: Backend) -> None:
    """A cookies[] entry serving the Host (a subdomain) gives the cookie's name and Domain."""
    store = await backend.open(
        cookies=[
            {
                "domain": "example.com",
                "name": "ex_session",
                # Not "none": SameSite=None without Secure is refused (browsers drop it).
                "same_site": "strict",
                "authelia_url": "https://auth.example.com",
            }
        ]
    )
    async with serve(build_app(store, secure=False)) as client:
        response = await client.post("/set", params={"a": "1"}, headers={"Host": "app.example.com"})
        (header,) = response.headers.getall("Set-Cookie")
        attrs = attributes(header)
        assert header.startswith("ex_session=")
        assert attrs["domain"] == "example.com"
        assert attrs["samesite"] == "Strict"
        assert "secure" not in attrs  # secure=False: plain-http development


async def test_login_regenerates_and_the_old_id_is_dead(backend: Backend) -> None:
    """login() moves the session to a new id (kept data, remember-me lifetime) in a redirect."""
    store = await backend.open(expiration="1h", remember_me="2d")
    async with serve(build_app(store)) as client:
        planted = await new_session(client, cart="book")
        response = await client.post(
            "/login", params={"remember": "1"}, headers=jar(planted), allow_redirects=False
        )
        assert response.status == 302
        fresh = cookie_of(response)
        assert fresh
        assert fresh != planted
        max_age = int(attributes(response.headers["Set-Cookie"])["max-age"])
        assert 2 * 86400 - 10 <= max_age <= 2 * 86400
        assert await store.load(planted) is None
        read = await client.get("/read", headers=jar(fresh))
        assert (await read.json())["data"] == {"cart": "book", "user": "ann"}
        # The fixated id is worthless now: anonymous. Not cleared just after the login (it
        # may be a request that raced it; a clear would drop the new cookie): no Set-Cookie.
        old = await client.get("/read", headers=jar(planted))
        assert (await old.json())["state"] == "anonymous"
        assert cookie_of(old) is None
    loaded = await store.load(fresh)
    assert loaded is not None
    assert loaded.remember_me


async def test_anonymous_login_creates_a_session(backend: Backend) -> None:
    """Logging in without a session creates one holding what the handler wrote."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        response = await client.post("/login", params={"user": "bob"}, allow_redirects=False)
        sid = cookie_of(response)
        assert sid
        loaded = await store.load(sid)
        assert loaded is not None
        assert loaded.data == {"user": "bob"}
        assert not loaded.remember_me


async def test_login_attaches_the_user(backend: Backend) -> None:
    """login(request, user=..., metadata=...): one atomic step; revocation ends the session."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        planted = await new_session(client, cart="book")
        response = await client.post(
            "/login",
            params={"owner": "ann"},
            headers={**jar(planted), "User-Agent": "UA1"},
            allow_redirects=False,
        )
        fresh = cookie_of(response)
        assert fresh
        [info] = await store.list_sessions("ann")
        assert info.metadata == {"ua": "UA1"}
        loaded = await store.load(fresh)
        assert loaded is not None
        assert loaded.public_id == info.public_id
        # session_store / session_public_id: what a "your sessions" page needs.
        mine = await (await client.get("/mine", headers=jar(fresh))).json()
        assert mine["public_id"] == info.public_id
        assert mine["listed"] == [info.public_id]
        mine = await (await client.get("/mine")).json()
        assert (mine["public_id"], mine["listed"]) == (None, [info.public_id])
        await store.revoke_user("ann")
        read = await client.get("/read", headers=jar(fresh))
        assert (await read.json())["state"] == "anonymous"


async def test_logout_deletes_and_expires_the_cookie(backend: Backend) -> None:
    """logout(): the session is gone, the cookie expires (same name and Path, Max-Age=0)."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        sid = await new_session(client, user="ann")
        response = await client.post("/logout", headers=jar(sid))
        assert response.status == 200
        assert cookie_of(response) == ""
        attrs = attributes(response.headers["Set-Cookie"])
        assert attrs["max-age"] == "0"
        assert attrs["path"] == "/"
        assert await store.load(sid) is None
    assert backend.keys() == []


@pytest.mark.parametrize("damage", ["revoked", "tampered", "garbage"])
async def test_a_cookie_that_does_not_load_is_cleared(backend: Backend, damage: str) -> None:
    """Revoked, tampered with or not an id: anonymous, cleared, never reused as an id."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        sid = await new_session(client, user="ann")
        if damage == "revoked":
            await store.delete(sid)
            sent = sid
        elif damage == "tampered":
            sent = sid[:-1] + ("A" if sid[-1] != "A" else "B")
        else:
            sent = "<not-an-id>"
        response = await client.get("/read", headers=jar(sent))
        assert response.status == 200
        assert (await response.json())["state"] == "anonymous"
        assert cookie_of(response) == ""
        write = await client.post("/set", params={"x": "1"}, headers=jar(sent))
        new = cookie_of(write)
        assert new
        assert new not in (sid, sent)


async def test_excluded_path_loads_only_on_demand(backend: Backend) -> None:
    """An excluded path leaves the session unloaded; load_session() loads it there."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        sid = await new_session(client, n="1")
        response = await client.get("/static/app.css", headers=jar(sid))
        assert await response.text() == "not loaded"
        assert cookie_of(response) is None
        response = await client.get("/static/session", headers=jar(sid))
        assert await response.json() == {"n": "1"}


async def test_streamed_response_carries_the_cookie(backend: Backend) -> None:
    """A response the handler prepares itself is saved just before its headers go out."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        response = await client.get("/stream")
        assert await response.read() == b"chunk"
        sid = cookie_of(response)
        assert sid
        loaded = await store.load(sid)
        assert loaded is not None
        assert loaded.data == {"streamed": True}


async def test_websocket_handshake_carries_the_session(backend: Backend) -> None:
    """A WebSocket handler reads the session; a change before the handshake sets the cookie."""

    async def socket(request: web.Request) -> web.WebSocketResponse:
        session = await load_session(request)
        session["seen"] = True
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json(dict(session))
        await ws.close()
        return ws

    store = await backend.open()
    app = build_app(store)
    app.router.add_get("/ws", socket)
    async with serve(app) as client:
        sid = await new_session(client, user="ann")
        async with client.ws_connect("/ws", headers=jar(sid)) as ws:
            assert await ws.receive_json() == {"user": "ann", "seen": True}
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data == {"user": "ann", "seen": True}


async def test_failed_handler_saves_nothing(backend: Backend) -> None:
    """A handler that raises gets a 500, and its half-made changes are not saved."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        sid = await new_session(client, n="1")
        response = await client.get("/boom", headers=jar(sid))
        assert response.status == 500
        assert cookie_of(response) is None
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data == {"n": "1"}


# -- concurrency --


async def test_100_concurrent_writers_lose_nothing(backend: Backend) -> None:
    """100 concurrent requests each setting its own key: 0 lost updates, 0 conflicts."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        sid = await new_session(client, start="1")

        async def one(i: int) -> int:
            response = await client.post("/set", params={f"k{i}": str(i)}, headers=jar(sid))
            await response.read()
            return response.status

        statuses = await asyncio.gather(*(one(i) for i in range(100)))
    assert statuses.count(200) == 100, sorted(set(statuses))
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data == {"start": "1", **{f"k{i}": str(i) for i in range(100)}}


def clash_app(store: SessionStore[Any], gates: dict[str, anyio.Event], **options: Any) -> Any:
    """Two requests that both change key ``k``; each waits at its gate before responding."""
    inside = {v: anyio.Event() for v in gates}

    async def clash(request: web.Request) -> web.Response:
        value = request.match_info["v"]
        session = await load_session(request)
        session["k"] = value
        inside[value].set()
        await gates[value].wait()
        return web.Response(text=value)

    app = web.Application()
    app.router.add_post("/clash/{v}", clash)
    setup(app, store, **options)
    return app, inside


@pytest.mark.parametrize("on_conflict", [None, "raise"])
async def test_same_key_clash_is_a_conflict(backend: Backend, on_conflict: Any) -> None:
    """Two requests set one key to different values: the later one is refused (409 or error)."""
    store = await backend.open()
    sid = (await store.create({"k": "0"})).id
    gates = {"a": anyio.Event(), "b": anyio.Event()}
    app, inside = clash_app(store, gates, on_conflict=on_conflict)
    async with serve(app) as client:
        first = asyncio.ensure_future(client.post("/clash/a", headers=jar(sid)))
        second = asyncio.ensure_future(client.post("/clash/b", headers=jar(sid)))
        await inside["a"].wait()
        await inside["b"].wait()
        gates["a"].set()
        assert (await first).status == 200
        gates["b"].set()
        response = await second
        # "raise": SessionConflict goes on to aiohttp, which answers 500.
        assert response.status == (409 if on_conflict is None else 500)
        assert cookie_of(response) is None
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data == {"k": "a"}


# -- costs, counted by the server --


def command_calls(proc: RedisProcess) -> dict[str, int]:
    """Calls per command since the last reset, without the harness's own INFO calls."""
    stats = proc.admin().info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")
    }


async def test_costs_in_redis_commands(redis: RedisProcess) -> None:
    """Anonymous: 0 commands; an excluded path with a cookie: 0; a read-only request: 1.

    ``INFO commandstats`` also counts the commands a script runs inside, so the read-only
    request is compared with one ``store.load`` (one EVALSHA) measured the same way.
    """
    cfg = {"secret": SECRET, "redis": redis.redis_section()}
    app = build_app(cfg)

    async def counted(action: Any) -> dict[str, int]:
        await anyio.to_thread.run_sync(redis.admin().config_resetstat)
        await action()
        return await anyio.to_thread.run_sync(command_calls, redis)

    async with serve(app) as client:
        sid = await new_session(client, n="1")

        def get(path: str, **kwargs: Any) -> Any:
            async def action() -> None:
                response = await client.get(path, **kwargs)
                assert response.status == 200
                await response.read()

            return action

        await get("/read", headers=jar(sid))()  # the load script is cached from now on
        store = await app[LAYER].store()
        one_load = await counted(lambda: store.load(sid))
        assert one_load["evalsha"] == 1
        assert "eval" not in one_load
        assert await counted(get("/read")) == {}
        assert await counted(get("/static/app.css", headers=jar(sid))) == {}
        assert await counted(get("/read", headers=jar(sid))) == one_load


# -- Redis down --


def down_config(proc: RedisProcess) -> dict[str, Any]:
    return {"secret": SECRET, "redis": proc.redis_section(timeout="1s")}


async def test_redis_down_answers_503_and_keeps_the_cookie(fresh_redis: RedisProcess) -> None:
    """Redis stopped: 503 (soon, not hung), no Set-Cookie; after a restart the same cookie works."""
    async with serve(build_app(down_config(fresh_redis))) as client:
        sid = await new_session(client, user="ann")
        # Persist, so the restarted server has the session (the harness runs without saves).
        await anyio.to_thread.run_sync(fresh_redis.admin().save)
        await anyio.to_thread.run_sync(fresh_redis.stop)
        for request in [
            client.get("/read", headers=jar(sid)),
            client.post("/set", headers=jar(sid)),
        ]:
            started = time.monotonic()
            response = await request
            # Bounded by redis.timeout (1 s) plus slack for a loaded machine: never a hang.
            assert time.monotonic() - started < 10
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert "Set-Cookie" not in response.headers
        # No cookie: no store needed, the app serves on.
        assert (await client.get("/read")).status == 200
        await anyio.to_thread.run_sync(fresh_redis.restart)
        response = await client.get("/read", headers=jar(sid))
        assert response.status == 200
        assert await response.json() == {"state": "loaded", "data": {"user": "ann"}}


async def test_paused_redis_answers_503_within_the_timeout(fresh_redis: RedisProcess) -> None:
    """Redis hung (SIGSTOP): 503, cookie untouched; once it answers, the session is intact."""
    async with serve(build_app(down_config(fresh_redis))) as client:
        sid = await new_session(client, user="ann")
        fresh_redis.pause()
        try:
            started = time.monotonic()
            response = await client.get("/read", headers=jar(sid))
            # redis.timeout is 1 s; the bound only rules out a hang on a loaded machine.
            assert time.monotonic() - started < 10
        finally:
            fresh_redis.resume()
        assert response.status == 503
        assert "Set-Cookie" not in response.headers
        response = await client.get("/read", headers=jar(sid))
        assert response.status == 200
        assert (await response.json())["data"] == {"user": "ann"}


async def test_redis_down_at_a_streamed_save_sends_nothing(fresh_redis: RedisProcess) -> None:
    """The save of a response the handler prepares fails: the connection closes, nothing sent.

    aiohttp sets the connection up for that response before the hook that saves runs, so no
    other response can take its place; the cookie is untouched and the next request is fine.
    """
    gate, inside = anyio.Event(), anyio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        session = await load_session(request)
        session["streamed"] = True
        inside.set()
        await gate.wait()
        response = web.StreamResponse()
        await response.prepare(request)  # the save runs here, and fails
        await response.write(b"never sent")
        return response

    app = build_app(down_config(fresh_redis))
    app.router.add_get("/gated", stream)
    async with serve(app) as client:
        sid = await new_session(client, user="ann")
        pending = asyncio.ensure_future(client.get("/gated", headers=jar(sid)))
        await inside.wait()
        await anyio.to_thread.run_sync(fresh_redis.stop)
        gate.set()
        with pytest.raises(ServerDisconnectedError):
            await pending
        response = await client.get("/read", headers=jar(sid))
        assert response.status == 503
        assert "Set-Cookie" not in response.headers


async def test_app_starts_while_redis_is_down(
    fresh_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up does not need Redis (one log line); sessions work once it is up."""
    cfg = down_config(fresh_redis)
    await anyio.to_thread.run_sync(fresh_redis.stop)
    async with serve(build_app(cfg)) as client:
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
        assert (await client.get("/read")).status == 200
        assert (await client.post("/set", params={"a": "1"})).status == 503
        await anyio.to_thread.run_sync(fresh_redis.restart)
        # It heals by itself: the layer may wait a moment before trying to open again.
        with anyio.fail_after(15):
            for _ in range(1000):
                response = await client.post("/set", params={"a": "1"})
                if response.status != 503:
                    break
                await anyio.sleep(0.2)
        assert response.status == 200
        sid = cookie_of(response)
        assert sid
        response = await client.get("/read", headers=jar(sid))
        assert await response.json() == {"state": "loaded", "data": {"a": "1"}}


async def test_continue_lets_the_handler_see_the_store_down(fresh_redis: RedisProcess) -> None:
    """on_unavailable="continue": the handler runs and session_state says "unavailable"."""
    routes = web.RouteTableDef()

    @routes.get("/")
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=session_state(request))

    app = web.Application()
    app.add_routes(routes)
    setup(app, down_config(fresh_redis), on_unavailable="continue")
    async with serve(app) as client:
        store = await open_session_store(down_config(fresh_redis))
        try:
            sid = (await store.create({"a": 1})).id
        finally:
            await store.aclose()
        assert await (await client.get("/", headers=jar(sid))).text() == "loaded"
        await anyio.to_thread.run_sync(fresh_redis.stop)
        response = await client.get("/", headers=jar(sid))
        assert await response.text() == "unavailable"
        assert "Set-Cookie" not in response.headers


# -- set-up --


async def test_store_passed_in_stays_open_and_config_store_closes(backend: Backend) -> None:
    """An open store given to setup() is the caller's; one opened from a config is closed."""
    store = await backend.open()
    async with serve(build_app(store)) as client:
        await new_session(client, a="1")
    assert await store.create({}) is not None  # still open
    app = web.Application()
    sessions = setup(app, backend.config())
    async with serve(app):
        opened = await sessions.store()
        assert await opened.create({}) is not None
    with pytest.raises(StoreClosed):
        await opened.create({})


def test_setup_twice_and_helpers_without_setup_are_refused() -> None:
    """One session layer per app; a helper on a request of an app without it says so."""
    app = web.Application()
    setup(app, {"secret": SECRET})
    with pytest.raises(UsageError, match="already"):
        setup(app, {"secret": SECRET})
    request = make_mocked_request("GET", "/")  # a request of an app without setup()
    with pytest.raises(UsageError, match="setup"):
        session_state(request)


def test_the_store_alone_imports_no_web_framework() -> None:
    """``import redis_session`` pulls in no aiohttp: the store installs no web framework."""
    code = "import sys, redis_session; assert 'aiohttp' not in sys.modules, 'aiohttp'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the documentation --


def docs_example() -> str:
    """The first ```python block under docs/web.md's "## aiohttp" heading."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "web.md").read_text("utf-8")
    section = text[text.index("## aiohttp") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/web.md's aiohttp example, as printed: log in with remember-me, visit, log out."""
    code = docs_example()
    (tmp_path / "config.yml").write_text(f"session:\n  secret: {SECRET}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__example__"}
    exec(compile(code, "docs/web.md", "exec"), namespace)
    async with serve(namespace["app"]) as client:
        response = await client.post(
            "/login", data={"user": "ann", "remember": "on"}, allow_redirects=False
        )
        assert response.status == 302
        sid = cookie_of(response)
        assert sid
        assert await (await client.get("/", headers=jar(sid))).text() == "ann: visit 1"
        assert await (await client.get("/", headers=jar(sid))).text() == "ann: visit 2"
        out = await client.post("/logout", headers=jar(sid), allow_redirects=False)
        assert cookie_of(out) == ""
        response = await client.get("/", headers=jar(sid))
        assert await response.text() == "guest: visit 1"


async def test_sub_apps_share_the_parents_sessions(backend: Backend) -> None:
    """Routes of a sub-app added with add_subapp see the session the parent's setup gives."""
    store = await backend.open()
    parent = build_app(store)
    sub = web.Application()

    async def page(request: web.Request) -> web.Response:
        session = await load_session(request)
        session["sub"] = "yes"
        return web.Response(text=session["user"])

    sub.router.add_get("/page", page)
    parent.add_subapp("/sub", sub)
    async with serve(parent) as client:
        sid = await new_session(client, user="ann")
        response = await client.get("/sub/page", headers=jar(sid))
        assert await response.text() == "ann"
    loaded = await store.load(sid)
    assert loaded is not None
    assert loaded.data == {"user": "ann", "sub": "yes"}


# -- start-up/cleanup cycles, 5xx, caching, option checks (issue 11 review) --


async def test_each_start_up_opens_a_fresh_store(backend: Backend) -> None:
    """The same app started and cleaned up three times: each run serves sessions."""
    app = build_app(backend.config())
    stores = []
    for n in range(3):
        async with serve(app) as client:
            sid = await new_session(client, a=str(n))
            response = await client.get("/read", headers=jar(sid))
            assert (await response.json())["data"] == {"a": str(n)}
            stores.append(await app[LAYER].store())
    assert len({id(s) for s in stores}) == 3  # never a closed store reused


async def test_a_store_passed_in_serves_every_run(backend: Backend) -> None:
    """A store given to setup() is never closed by a cleanup, so a later run still works."""
    store = await backend.open()
    try:
        app = build_app(store)
        for _ in range(2):
            async with serve(app) as client:
                await new_session(client, a="1")
    finally:
        await store.aclose()


async def test_a_failed_open_fails_the_start_up(redis: RedisProcess, tmp_path: Path) -> None:
    """A store that cannot open (its config file is gone) fails the start-up, not a hang."""
    path = tmp_path / "cfg.yml"
    section = {"secret": SECRET, "redis": redis.redis_section()}
    path.write_text(json.dumps({"session": section}), encoding="utf-8")  # YAML reads JSON
    app = build_app(str(path))
    path.unlink()
    with anyio.fail_after(10), pytest.raises(Exception, match=r"cfg\.yml"):
        async with TestServer(app):
            pass


async def test_a_5xx_response_saves_nothing(backend: Backend) -> None:
    """A 500 returned or raised as an HTTPException does not save the handler's changes."""
    routes = web.RouteTableDef()

    @routes.get("/returned")
    async def returned(request: web.Request) -> web.Response:
        (await load_session(request))["half"] = "done"
        return web.Response(status=500, text="failed")

    @routes.get("/raised")
    async def raised(request: web.Request) -> web.Response:
        (await load_session(request))["half"] = "done"
        raise web.HTTPServiceUnavailable

    @routes.post("/set")
    async def set_(request: web.Request) -> web.Response:
        (await load_session(request))["a"] = "1"
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes(routes)
    sessions = setup(app, backend.config())
    async with serve(app) as client:
        sid = await new_session(client)
        for path in ("/returned", "/raised"):
            response = await client.get(path, headers=jar(sid))
            assert response.status >= 500
            assert cookie_of(response) is None
        assert cookie_of(await client.get("/returned")) is None  # no session created
        session = await (await sessions.store()).load(sid)
    assert session is not None
    assert session.data == {"a": "1"}


async def test_a_response_with_the_session_cookie_is_private(backend: Backend) -> None:
    """Set-Cookie makes the response private (public, s-maxage gone); a read one varies."""
    routes = web.RouteTableDef()

    @routes.get("/cached")
    async def cached(request: web.Request) -> web.Response:
        if "w" in request.query:
            (await load_session(request))["seen"] = "1"
        headers = {"Cache-Control": "public, max-age=600, s-maxage=60", "Vary": "Accept"}
        return web.Response(text="page", headers=headers)

    app = web.Application()
    app.add_routes(routes)
    setup(app, backend.config())
    async with serve(app) as client:
        new = await client.get("/cached", params={"w": "1"})
        sid = cookie_of(new)
        assert sid
        assert new.headers["Cache-Control"] == "private, max-age=600"
        assert new.headers["Vary"] == "Accept, Cookie"
        read_only = await client.get("/cached", headers=jar(sid))
        assert cookie_of(read_only) is None
        assert read_only.headers["Cache-Control"] == "public, max-age=600, s-maxage=60"
        assert read_only.headers["Vary"] == "Accept, Cookie"
        assert (await client.get("/cached")).headers["Vary"] == "Accept"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"on_unavailable": "contniue"}, "on_unavailable"),
        ({"on_conflict": "continue"}, "on_conflict"),
        ({"exclude": None}, "exclude"),
        ({"exclude": ["/static/*"]}, "exclude"),
    ],
)
def test_bad_options_are_refused_by_setup(options: dict[str, Any], named: str) -> None:
    """setup() checks every option, naming it: a typo never silently means the default."""
    with pytest.raises(UsageError, match=named):
        setup(web.Application(), {"secret": SECRET}, **options)
