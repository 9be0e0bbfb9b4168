"""Cancelling ``open_session_store`` at any point leaves no connection behind on the server.

anyio cancel scopes are level-triggered: once a scope is cancelled, every await inside it is
cancelled again, cleanup awaits included. An open cancelled that way must still log out every
connection it made before it returns, without waiting for the garbage collector. Plain
``asyncio.timeout`` (edge-triggered) is checked the same way.

Every connection object the store makes is kept alive by the test (and the cycle collector is
off), so a socket that only a finaliser would have closed stays open on the server and is
counted.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis.asyncio.connection import Connection

import redis_session._spec
import redis_session._wire
from redis_session import SessionStore, StoreUnavailable, open_session_store
from redis_session._wire import TLSConnection

from .servers import RedisProcess

pytestmark = pytest.mark.anyio

SECRET = "cancel-open: a secret long enough to be taken seriously"
#: Connections each store opens at once: several, so cleanup has several sockets to close.
FLOOR = 4
#: How long the server may take to notice a socket we closed (it is closed before we return).
SERVER_NOTICES_WITHIN = 2.0


@pytest.fixture
async def no_gc(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Connection]]:
    """Nothing is closed by a finaliser: every connection is kept, the cycle collector is off.

    Yields the list of every connection the stores made (all must end closed).
    """
    made: list[Connection] = []

    class KeptConnection(redis_session._wire.TCPConnection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    class KeptTLSConnection(TLSConnection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    monkeypatch.setattr(redis_session._spec, "TCPConnection", KeptConnection)
    monkeypatch.setattr(redis_session._spec, "TLSConnection", KeptTLSConnection)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield made
    finally:
        for conn in made:
            # Whatever a failing test left open: close it here, in the loop, not in a finaliser.
            conn._close()  # type: ignore[no-untyped-call]
        if was_enabled:
            gc.enable()


def store_config(proc: RedisProcess) -> dict[str, Any]:
    return {
        "secret": SECRET,
        "redis": proc.redis_section(
            minimum_idle_connections=FLOOR, maximum_active_connections=FLOOR
        ),
    }


def clients_of(proc: RedisProcess) -> int:
    """Every client but the harness's: also connections cancelled before CLIENT SETNAME."""
    return len(proc.our_clients())


async def server_has_none(proc: RedisProcess) -> None:
    """Fail unless the server drops to zero of our clients shortly (closing is asynchronous)."""
    deadline = time.monotonic() + SERVER_NOTICES_WITHIN
    while True:
        count = await anyio.to_thread.run_sync(clients_of, proc)
        if count == 0:
            return
        if time.monotonic() > deadline:
            listed = await anyio.to_thread.run_sync(proc.our_clients)
            pytest.fail(f"{count} of our connections still on the server: {listed}")
        await anyio.sleep(0.02)


async def open_or_none(cfg: dict[str, Any]) -> SessionStore[Any] | None:
    """Open a store; ``None`` if the open raised (it was cancelled, or failed because of it)."""
    try:
        return await open_session_store(cfg)
    except StoreUnavailable:
        return None


async def sweep(
    proc: RedisProcess,
    made: list[Connection],
    cancel_open: Callable[[int], Awaitable[SessionStore[Any] | None]],
) -> int:
    """Cancel the open at step 0, 1, 2... until one completes; check the server after each.

    Returns how many opens were cancelled. Each must have closed every connection it made
    by the time it returned, and the server must then count none of ours.
    """
    for step in range(500):
        store = await cancel_open(step)
        if store is not None:
            await store.aclose()
            await server_has_none(proc)
            assert step > 0, "the very first step completed the open: nothing was cancelled"
            assert made, "the connections were not the kept kind: the test checked nothing"
            return step
        still_open = [c for c in made if c._writer is not None]
        assert not still_open, f"step {step}: {len(still_open)} connections left open"
        await server_has_none(proc)
    pytest.fail("500 steps and the open never completed")


@pytest.fixture(params=["tcp", "tls"])
def server(request: pytest.FixtureRequest) -> RedisProcess:
    """A plain server of the test's own, or the shared TLS one (a handshake: more awaits)."""
    name = "fresh_redis" if request.param == "tcp" else "tls_redis"
    proc: RedisProcess = request.getfixturevalue(name)
    return proc


async def test_cancel_scope_at_each_checkpoint(
    server: RedisProcess, no_gc: list[Connection]
) -> None:
    """``CancelScope.cancel()`` after 0, 1, 2... loop iterations of the open: nothing left."""
    cfg = store_config(server)

    async def cancel_open(step: int) -> SessionStore[Any] | None:
        result: list[SessionStore[Any] | None] = [None]
        with anyio.CancelScope() as scope:

            async def canceller() -> None:
                for _ in range(step):
                    await asyncio.sleep(0)
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(canceller)
                result[0] = await open_or_none(cfg)
        # An open that finished before the cancel hands back a store; the sweep closes it.
        return result[0]

    assert await sweep(server, no_gc, cancel_open) > 0


async def test_move_on_after_at_many_delays(
    fresh_redis: RedisProcess, no_gc: list[Connection]
) -> None:
    """``anyio.move_on_after`` with deadlines from 0 up through the whole open: nothing left."""
    cfg = store_config(fresh_redis)

    async def cancel_open(step: int) -> SessionStore[Any] | None:
        with anyio.move_on_after(step * 0.0001):
            return await open_or_none(cfg)
        return None

    assert await sweep(fresh_redis, no_gc, cancel_open) > 0


async def test_asyncio_timeout_at_many_delays(
    fresh_redis: RedisProcess, no_gc: list[Connection]
) -> None:
    """``asyncio.timeout`` with deadlines from 0 up through the whole open: nothing left."""
    cfg = store_config(fresh_redis)

    async def cancel_open(step: int) -> SessionStore[Any] | None:
        try:
            async with asyncio.timeout(step * 0.0001):
                return await open_or_none(cfg)
        except TimeoutError:
            return None

    assert await sweep(fresh_redis, no_gc, cancel_open) > 0
