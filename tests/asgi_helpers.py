"""Driving ASGI apps in tests: the lifespan protocol, an httpx client, Redis command counts."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from .servers import RedisProcess


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan: startup on entry, shutdown on exit (as uvicorn does)."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def receive() -> dict[str, Any]:
        return await to_app.get()

    async def send(message: dict[str, Any]) -> None:
        await from_app.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, receive, send))
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        stopped = await from_app.get()
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await task


def client(app: Any, base_url: str = "https://example.com") -> httpx.AsyncClient:
    """An httpx client calling ``app`` in process; https so that Secure cookies are sent."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base_url, follow_redirects=False
    )


#: Commands our Lua scripts run: commandstats counts them as well as the EVALSHA that ran
#: them, so they are told apart from what the client sent.
SCRIPT_COMMANDS = frozenset(
    name.lower()
    for path in (Path(__file__).resolve().parent.parent / "redis_session").glob("*.py")
    for name in re.findall(r"redis\.p?call\('([A-Za-z]+)'", path.read_text(encoding="utf-8"))
)


def command_calls(proc: RedisProcess) -> dict[str, int]:
    """Commands the server ran since its stats were reset, by name (the harness's own left out).

    Includes the commands run inside scripts; see :func:`client_commands`.
    """
    stats = proc.admin().info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {
        name: n
        for name, n in calls.items()
        if not name.startswith(("info", "config"))  # the admin client's own
    }


def client_commands(proc: RedisProcess) -> dict[str, int]:
    """The commands a client sent: the counts minus what ran inside our scripts.

    Exact for a client that sends nothing but scripts and commands the scripts never use.
    """
    return {n: c for n, c in command_calls(proc).items() if n not in SCRIPT_COMMANDS}


def reset_counts(proc: RedisProcess) -> None:
    """Start counting commands from zero."""
    proc.admin().config_resetstat()


def set_cookie_headers(response: httpx.Response) -> list[str]:
    """Every ``Set-Cookie`` value of a response."""
    return response.headers.get_list("set-cookie")


def cookie_attributes(header: str) -> tuple[str, str, dict[str, str]]:
    """``(name, value, {attribute: value})`` of one ``Set-Cookie`` value; keys lower-cased."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attributes = {}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.lower()] = val
    return name, value, attributes
