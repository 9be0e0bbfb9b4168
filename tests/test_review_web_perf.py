"""Adversarial review of the web layer's speed-up (issue 14): change detection, merge, Host cache.

Every test runs the real ASGI or aiohttp middleware against a real redis-server from
``tests/servers.py``: ASGI apps through ``httpx.ASGITransport``, aiohttp apps through
``aiohttp.test_utils.TestServer``/``TestClient``. Each ``test_*`` in the ``Findings`` classes
reproduced a defect (its docstring says what, and how bad) and passes since the fix; the
``Holds`` classes probe risky behaviour that was found correct.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import http.cookiejar
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from redis_session import aiohttp as rs_aiohttp
from redis_session._merge import merge, same, snapshot
from redis_session.asgi import SessionMiddleware

from .asgi_helpers import cookie_attributes, set_cookie_headers
from .servers import RedisProcess
from .test_review_web import cfg_for, seed, stored

pytestmark = pytest.mark.anyio

NAME = "authelia_session"
#: Held requests: the handler sets ARRIVED[name] and waits for GATES[name].
GATES: dict[str, asyncio.Event] = {}
ARRIVED: dict[str, asyncio.Event] = {}


def make_gate(name: str) -> None:
    GATES[name], ARRIVED[name] = asyncio.Event(), asyncio.Event()


# -- a Starlette app: each route makes one kind of change, in place as apps do --


async def set_value(request: Request) -> Response:
    """Write the value the test named (``CHANGES[name]``) under ``key``."""
    CHANGES[request.query_params["change"]](request.session)
    return PlainTextResponse("ok")


async def gated_change(request: Request) -> Response:
    """Loaded before the gate; makes its change after the gate opens."""
    name = request.query_params["gate"]
    ARRIVED[name].set()
    await GATES[name].wait()
    CHANGES[request.query_params["change"]](request.session)
    return PlainTextResponse("ok")


def _retype_key(session: Any) -> None:
    # The same pair under a key of another type: del and set, as an app rebuilding it would.
    inner = session["m"]
    del inner[1]
    inner[True] = "a"


CHANGES: dict[str, Any] = {
    "count": lambda s: s["stats"].__setitem__("n", s["stats"]["n"] + 1),
    "other": lambda s: s.__setitem__("other", "yes"),
    "negative-zero": lambda s: s.__setitem__("x", -0.0),
    "retype-key": _retype_key,
    "memoryview": lambda s: s.__setitem__("raw", memoryview(b"abc")),
    "memoryview-tuple": lambda s: s.__setitem__("raw", (memoryview(b"abc"), 1)),
}

ROUTES = [
    Route("/set", set_value, methods=["POST"]),
    Route("/gated", gated_change, methods=["POST"]),
]


def client(app: Any, base_url: str = "https://example.com") -> httpx.AsyncClient:
    refuse_all = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=base_url,
        cookies=http.cookiejar.CookieJar(policy=refuse_all),
    )


@contextlib.asynccontextmanager
async def asgi(cfg: Any) -> AsyncIterator[tuple[SessionMiddleware, httpx.AsyncClient]]:
    mw = SessionMiddleware(Starlette(routes=ROUTES), cfg)
    try:
        async with client(mw) as c:
            yield mw, c
    finally:
        await mw.aclose()


def cookie_of(response: httpx.Response) -> str:
    (header,) = set_cookie_headers(response)
    _, value, _ = cookie_attributes(header)
    assert value, header
    return value


@pytest.mark.anyio
class TestFindings:
    async def test_a_nan_in_a_key_is_no_conflict_with_a_request_that_never_touched_it(
        self, redis: RedisProcess
    ) -> None:
        """MEDIUM (false conflict, a 409 the user sees). ``same`` compared float leaves with
        ``==``, and ``nan != nan``: the merge took a freshly loaded NaN for a change by the
        other writer. A request that changed ``stats.n`` (beside ``stats.avg = nan``) while
        another changed an unrelated key got 409 and lost its change."""
        sid = await seed(redis, stats={"avg": math.nan, "n": 1})
        make_gate("nan")
        async with asgi(cfg_for(redis)) as (_, c):
            cookies = {"cookie": f"{NAME}={sid}"}
            held = asyncio.ensure_future(c.post("/gated?gate=nan&change=count", headers=cookies))
            await asyncio.wait_for(ARRIVED["nan"].wait(), 10)
            other = await c.post("/set?change=other", headers=cookies)
            assert other.status_code == 200
            GATES["nan"].set()
            response = await held
        assert response.status_code == 200, response.text
        data = await stored(redis, sid)
        assert data is not None
        assert data["other"] == "yes"
        assert data["stats"]["n"] == 2
        assert math.isnan(data["stats"]["avg"])

    async def test_negative_zero_over_zero_is_saved(self, redis: RedisProcess) -> None:
        """LOW (a write silently lost). ``0.0 == -0.0``, but the codec stores them apart
        (the sign bit): writing ``-0.0`` over ``0.0`` was not seen as a change."""
        sid = await seed(redis, x=0.0)
        async with asgi(cfg_for(redis)) as (_, c):
            response = await c.post(
                "/set?change=negative-zero", headers={"cookie": f"{NAME}={sid}"}
            )
        assert response.status_code == 200
        data = await stored(redis, sid)
        assert data is not None
        assert math.copysign(1.0, data["x"]) == -1.0

    async def test_a_map_key_of_another_type_is_saved(self, redis: RedisProcess) -> None:
        """LOW (a write silently lost). ``same`` looked keys up (``1`` finds ``True``), so a
        nested map whose key ``1`` became ``True`` compared as unchanged, though the codec
        stores the two keys apart (and ``same`` exists to tell ``True`` from ``1``)."""
        sid = await seed(redis, m={1: "a"})
        async with asgi(cfg_for(redis)) as (_, c):
            response = await c.post("/set?change=retype-key", headers={"cookie": f"{NAME}={sid}"})
        assert response.status_code == 200
        data = await stored(redis, sid)
        assert data is not None
        assert [type(k) for k in data["m"]] == [bool]

    @pytest.mark.parametrize("change", ["memoryview", "memoryview-tuple"])
    async def test_a_memoryview_is_stored_and_answered(
        self, redis: RedisProcess, change: str
    ) -> None:
        """MEDIUM (a 500 after the write went through). The codec stores a ``memoryview`` (as
        bytes), but the snapshot taken after a create or save deep-copied it, and
        ``deepcopy`` cannot copy a memoryview: the session was created (an orphan: its cookie
        never went out) or saved, and the request failed with a 500."""
        async with asgi(cfg_for(redis)) as (_, c):
            created = await c.post(f"/set?change={change}")
            assert created.status_code == 200, created.text
            sid = cookie_of(created)
            again = await c.post(f"/set?change={change}&v=2", headers={"cookie": f"{NAME}={sid}"})
            assert again.status_code == 200, again.text
        data = await stored(redis, sid)
        assert data is not None
        assert data["raw"] in (b"abc", [b"abc", 1])

    async def test_hostile_host_values_are_not_kept(self, redis: RedisProcess) -> None:
        """MEDIUM (memory). The cookie rules are cached per raw ``Host`` value, up to 256
        values; uvicorn with httptools takes a Host header of megabytes, so 256 requests with
        a huge Host each kept up to 256 of them alive (1 MiB hosts: 256 MiB) for as long as
        no other host emptied the cache. Before the cache, each was freed with its request."""
        async with asgi(cfg_for(redis)) as (mw, c):
            for i in range(300):
                host = f"{i}.{'a' * 60}." * 1000 + "example.com"
                response = await c.get("/", headers={"host": host})
                assert response.status_code == 404  # no such route; the session layer ran
            kept = sum(len(k or "") for k in mw.sessions._specs)
        assert kept < 300 * 300, kept


# -- probes that hold --


def aiohttp_app(cfg: Any) -> web.Application:
    async def set_(request: web.Request) -> web.Response:
        session = await rs_aiohttp.load_session(request)
        CHANGES[request.query["change"]](session)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/set", set_)
    rs_aiohttp.setup(app, cfg)
    return app


@pytest.mark.anyio
class TestHolds:
    async def test_cookie_domain_follows_each_host_through_the_cache(
        self, redis: RedisProcess
    ) -> None:
        """Hosts alike but for case, a final dot, a port or being another name each get their
        own rules, whatever came before them (the cache is keyed by the raw value)."""
        cfg = cfg_for(
            redis,
            cookies=[
                {"domain": "example.com", "authelia_url": "https://auth.example.com"},
                {"domain": "app.example.net", "authelia_url": "https://auth.app.example.net"},
            ],
        )
        cases = [
            ("example.com", "example.com"),
            ("APP.Example.NET.", "app.example.net"),
            ("app.example.net:8443", "app.example.net"),
            ("x.app.example.net", "app.example.net"),
            ("example.net", None),
            ("example.org", None),
            ("[::1]:8000", None),
            ("xn--bcher-kva.example.com", "example.com"),
            ("bücher.example.com", None),  # not what a browser sends: no Domain
            ("example.com", "example.com"),
        ]
        async with asgi(cfg) as (_, c):
            for _ in range(2):
                for host, domain in cases:
                    response = await c.post(
                        "/set?change=other", headers={"host": host.encode("utf-8")}
                    )
                    (header,) = set_cookie_headers(response)
                    assert cookie_attributes(header)[2].get("domain") == domain, (host, header)

    async def test_cookie_split_over_fields_and_host_from_server(self, redis: RedisProcess) -> None:
        """A Cookie split over several fields (HTTP/2) finds the session; without Host, the
        scope's ``server`` stands in; duplicate Host fields match no entry (no Domain)."""
        sid = await seed(redis, stats={"avg": 1.0, "n": 1})
        mw = SessionMiddleware(
            Starlette(routes=ROUTES),
            cfg_for(
                redis,
                cookies=[{"domain": "example.com", "authelia_url": "https://auth.example.com"}],
            ),
        )
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        def scope(
            headers: list[tuple[bytes, bytes]], server: Any, change: bytes = b"count"
        ) -> dict[str, Any]:
            return {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "2",
                "method": "POST",
                "scheme": "https",
                "path": "/set",
                "raw_path": b"/set",
                "query_string": b"change=" + change,
                "root_path": "",
                "headers": headers,
                "server": server,
            }

        try:
            await mw(
                scope(
                    [
                        (b"cookie", b"a=1"),
                        (b"Cookie", f"{NAME}={sid}".encode()),
                        (b"cookie", b"b=2"),
                    ],
                    ("app.example.com", 443),
                ),
                receive,
                send,
            )
            start = sent[0]
            assert start["status"] == 200
            assert not [v for k, v in start["headers"] if k == b"set-cookie"]  # saved, no cookie
            data = await stored(redis, sid)
            assert data is not None
            assert data["stats"]["n"] == 2
            sent.clear()
            hosts = [(b"host", b"a.example.com"), (b"host", b"b.example.com")]
            await mw(scope(hosts, None, b"other"), receive, send)
            (cookie,) = [v.decode() for k, v in sent[0]["headers"] if k == b"set-cookie"]
            assert "Domain=" not in cookie
        finally:
            await mw.aclose()

    async def test_aiohttp_saves_in_place_changes_and_memoryviews(
        self, redis: RedisProcess
    ) -> None:
        """The aiohttp path runs the same change detection: a nested change in place saves
        (beside a NaN); a memoryview is saved and answered (it was a 500 there too)."""
        sid = await seed(redis, stats={"avg": math.nan, "n": 1})
        server = TestServer(aiohttp_app(cfg_for(redis)))
        async with TestClient(server, cookie_jar=DummyCookieJar()) as c:
            response = await c.post("/set?change=count", headers={"cookie": f"{NAME}={sid}"})
            assert response.status == 200
            response = await c.post("/set?change=memoryview", headers={"cookie": f"{NAME}={sid}"})
            assert response.status == 200
        data = await stored(redis, sid)
        assert data is not None
        assert data["stats"]["n"] == 2
        assert data["raw"] == b"abc"

    async def test_types_the_codec_stores_apart_are_changes(self, redis: RedisProcess) -> None:
        """True over 1, 1.0 over 1, bytearray over bytes,
        an aware datetime moved by a microsecond: each saved (read back as stored)."""
        when = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
        sid = await seed(redis, t=1, f=1, b=b"x", when=when)
        CHANGES["types"] = lambda s: s.update(
            t=True, f=1.0, b=bytearray(b"x"), when=when + dt.timedelta(microseconds=1)
        )
        async with asgi(cfg_for(redis)) as (_, c):
            response = await c.post("/set?change=types", headers={"cookie": f"{NAME}={sid}"})
        assert response.status_code == 200
        data = await stored(redis, sid)
        assert data is not None
        assert type(data["t"]) is bool
        assert type(data["f"]) is float
        assert data["when"] == when + dt.timedelta(microseconds=1)


# -- the comparison and the copy, directly --


@pytest.mark.parametrize(
    ("a", "b", "alike"),
    [
        (math.nan, float("nan"), True),
        ({"s": [math.nan]}, {"s": [float("nan")]}, True),
        (0.0, -0.0, False),
        (math.inf, math.inf, True),
        ({1: "a"}, {True: "a"}, False),
        ({1: "a"}, {1.0: "a"}, False),
        ({(1, 2): "a"}, {(True, 2): "a"}, False),
        ({(1, 2): "a"}, {(1, 2): "a"}, True),
        ({0.0: "a"}, {-0.0: "a"}, False),
        ({math.nan: "a"}, {float("nan"): "a"}, True),
        ({1: "a", "b": 2}, {"b": 2, 1: "a"}, True),  # order alone: no change
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({"a": 1}, {"a": True}, False),
        (memoryview(b"ab"), memoryview(b"ab"), True),
        (bytearray(b"ab"), b"ab", False),
    ],
)
def test_same_tells_apart_what_the_codec_stores_apart(a: Any, b: Any, alike: bool) -> None:
    assert same(a, b) is alike
    assert same(b, a) is alike


def test_snapshot_copies_what_deepcopy_cannot() -> None:
    """A memoryview (alone, in a tuple, in a dict subclass): copied, never shared, never a
    TypeError; a subclass deepcopy refuses comes back as the type it is stored as."""
    raw = bytearray(b"abc")
    data: dict[str, Any] = {
        "mv": memoryview(raw),
        "pair": (memoryview(raw), [1]),
        "ordered": collections.OrderedDict(m=memoryview(raw)),
        "ints": memoryview(bytearray(8)).cast("i"),
    }
    copy = snapshot(data)
    assert same(copy["mv"], data["mv"])
    assert same(copy["pair"], data["pair"])
    assert same(copy["ints"], data["ints"])
    assert copy["ordered"] == {"m": b"abc"}
    raw[0] = ord("x")  # the live data changes in place; the copy does not
    assert not same(copy["mv"], data["mv"])
    data["pair"][1].append(2)
    assert not same(copy["pair"], data["pair"])


def test_merge_keeps_a_nan_the_other_writer_never_touched() -> None:
    base = {"stats": {"avg": math.nan, "n": 1}, "a": 0}
    ours = snapshot(base)
    ours["stats"]["n"] = 2
    theirs = {"stats": {"avg": float("nan"), "n": 1}, "a": 1}
    merged = merge(base, ours, theirs)
    assert merged["a"] == 1
    assert merged["stats"]["n"] == 2
