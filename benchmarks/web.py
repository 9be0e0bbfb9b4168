"""What the ASGI middleware costs per request, in process (no network, no HTTP parsing).

``python -m benchmarks.web [--requests N]``: one Starlette app called directly through the ASGI
interface, bare and wrapped in :class:`redis_session.asgi.SessionMiddleware`, on the in-memory
provider and on a throwaway redis-server (free loopback port). Each row is requests run one
after another; the figure that matters is client CPU per request (``time.process_time``), and
every row is reported as a ratio against the bare app measured in the same run, so a noisy,
shared machine moves all rows together. Rows:

* ``bare``: the app without sessions (the baseline);
* ``anonymous``: through the middleware, no cookie (no store call);
* ``excluded``: an excluded path with a cookie (no store call);
* ``read``: a cookie, the route reads the session (one load);
* ``write``: a cookie, the route changes the session (one load and one save).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from benchmarks._server import HOST, redis_server
from redis_session import SessionStore, open_session_store
from redis_session.asgi import SessionMiddleware

SECRET = "a benchmark secret that is long enough to be taken seriously"
Call = Callable[[dict[str, Any]], Awaitable[list[dict[str, Any]]]]


async def _plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _read(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.session.get("n", 0)))


async def _write(request: Request) -> PlainTextResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse("ok")


def _app() -> Starlette:
    return Starlette(
        routes=[
            Route("/", _plain),
            Route("/healthz", _plain),
            Route("/read", _read),
            Route("/write", _write),
        ]
    )


def _caller(app: Any) -> Call:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call(scope: dict[str, Any]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent

    return call


def _scope(path: str, cookie: bytes | None) -> dict[str, Any]:
    headers = [(b"host", b"app.example.com")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("app.example.com", 443),
    }


async def _measure(call: Call, scope: dict[str, Any], requests: int) -> float:
    """Return client CPU seconds per request over ``requests`` sequential calls."""
    for _ in range(min(200, requests)):  # warm caches, scripts, connections
        await call(dict(scope))
    started = time.process_time()
    for _ in range(requests):
        await call(dict(scope))
    return (time.process_time() - started) / requests


async def _session_cookie(call: Call) -> bytes:
    for message in await call(_scope("/write", None)):
        for name, value in message.get("headers", []):
            if name == b"set-cookie":
                pair: bytes = value.split(b";", 1)[0]
                return pair
    msg = "the middleware set no cookie on a write"
    raise RuntimeError(msg)


@contextlib.asynccontextmanager
async def _stores() -> AsyncIterator[list[tuple[str, SessionStore[Any]]]]:
    with redis_server() as port:
        redis = {"host": HOST, "port": port}
        async with (
            await open_session_store({"secret": SECRET}) as memory,
            await open_session_store({"secret": SECRET, "redis": redis}) as on_redis,
        ):
            yield [("memory", memory), ("redis", on_redis)]


async def run(requests: int) -> list[tuple[str, float]]:
    """Return ``(row, CPU seconds per request)``, the bare app first."""
    rows = [("bare", await _measure(_caller(_app()), _scope("/", None), requests))]
    async with _stores() as stores:
        for name, store in stores:
            wrapped = SessionMiddleware(_app(), store, exclude=["/healthz"])
            call = _caller(wrapped)
            cookie = await _session_cookie(call)
            if name == "memory":
                rows.append(("anonymous", await _measure(call, _scope("/", None), requests)))
                rows.append(
                    ("excluded", await _measure(call, _scope("/healthz", cookie), requests))
                )
            rows.append((f"read ({name})", await _measure(call, _scope("/read", cookie), requests)))
            rows.append(
                (f"write ({name})", await _measure(call, _scope("/write", cookie), requests))
            )
    return rows


def main() -> int:
    """Run the rows and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    rows = asyncio.run(run(args.requests))
    base = rows[0][1]
    print("| row | client CPU per request | vs bare |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e6:.1f} us | {seconds / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
