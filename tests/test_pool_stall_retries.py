"""A loop stall longer than ``redis.timeout`` in the first step of a two-step call.

The pool excuses a stall of the event loop (a slow handler, a GC pause) for the commands it
holds: that time is ours, not the node's. A call made of two commands (EVALSHA, then EVAL
after NOSCRIPT; a create restamped by the server's clock) used to get the excuse for its first
command only: the second inherited a deadline the stall had already used up, and failed with
no fault at the server at all. Real server, real stalls of this test's event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from redis_session import open_session_store
from redis_session._config_loading import load_config
from redis_session._connections import ConnectionManager
from redis_session._redis_provider import LOAD
from redis_session._stalls import StallLedger

from .servers import RedisProcess
from .store_helpers import SECRET, raw_client

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5
#: Longer than the timeout: without the excuse, the second command has no time left.
STALL = 0.9


def _section(redis: RedisProcess) -> dict[str, Any]:
    return redis.redis_section(timeout=f"{int(TIMEOUT * 1000)}ms")


# Keeps the server busy (single-threaded) for about 0.3 s, from another client.
_BUSY = """
local start = redis.call('TIME')
local t0 = start[1] * 1000000 + start[2]
while true do
  local now = redis.call('TIME')
  if now[1] * 1000000 + now[2] - t0 > 300000 then return 1 end
end
"""


def _block_the_loop(redis: RedisProcess) -> threading.Thread:
    """Block the event loop for ``STALL`` (the point, as a slow handler would); busy the server."""
    busy = threading.Thread(target=raw_client(redis).eval, args=(_BUSY, 0))
    time.sleep(STALL - 0.05)
    busy.start()
    time.sleep(0.05)  # the busy script is running when the loop resumes
    return busy


async def _stall_during(redis: RedisProcess, call: Any) -> Any:
    """Start ``call``, let it send its first command, then block the loop for ``STALL``.

    As the loop resumes, the server is kept busy a moment by another client: the call's
    second command (sent once the first one's reply is read) then waits long enough for the
    pool's deadline check to look at it, as it would behind other work on a loaded server.
    """
    task = asyncio.ensure_future(call)
    for _ in range(3):
        await asyncio.sleep(0)  # the command is queued and written
    busy = _block_the_loop(redis)
    try:
        return await task
    finally:
        await asyncio.to_thread(busy.join)


async def test_noscript_fallback_after_a_stall(redis: RedisProcess) -> None:
    """EVALSHA meets NOSCRIPT after the stall: the EVAL that follows still gets its time."""
    cfg = load_config({"secret": SECRET, "redis": _section(redis)}).redis
    assert cfg is not None
    manager = await ConnectionManager.open(cfg)
    try:
        raw_client(redis).script_flush()
        reply = await _stall_during(redis, manager.run_script(LOAD, [b"missing"], ()))
        assert reply is None or reply == [] or isinstance(reply, list)
        assert raw_client(redis).script_exists(LOAD.sha) == [True]
    finally:
        await manager.aclose()


@pytest.mark.parametrize("stalls", [1, 2])
async def test_store_calls_survive_stalls_in_their_first_step(
    redis: RedisProcess, stalls: int
) -> None:
    """Through the store: after SCRIPT FLUSH, each call's first command meets a stall."""
    store = await open_session_store({"secret": SECRET, "redis": _section(redis)})
    try:
        session = await store.create({"n": 0})
        for n in range(stalls):
            raw_client(redis).script_flush()
            loaded = await _stall_during(redis, store.load(session.id))
            assert loaded is not None
            assert loaded.data == {"n": n}
            loaded.data = {"n": n + 1}
            raw_client(redis).script_flush()
            await _stall_during(redis, store.save(loaded))
            session = loaded
        final = await store.load(session.id)
        assert final is not None
        assert final.data == {"n": stalls}
    finally:
        await store.aclose()


def test_the_ledger_merges_reports_of_one_stall_and_counts_the_newest_few() -> None:
    """Each pool reports the same stall with its own edges; a deadline is excused twice at most."""
    ledger = StallLedger()
    ledger.record(1.0, 2.0)
    ledger.record(1.9, 2.5)  # the same stall, seen by a second pool a moment later
    assert ledger.since(0.0) == pytest.approx(1.5)
    assert ledger.since(2.0) == pytest.approx(0.5)  # only the part after the call began
    assert ledger.since(3.0) == 0.0
    ledger.record(5.0, 6.0)
    ledger.record(7.0, 7.5)
    assert ledger.since(0.0) == pytest.approx(1.5)  # the newest MAX_EXCUSED (2) stalls only
    assert ledger.since(5.5) == pytest.approx(1.0)


def _block(seconds: float) -> None:
    time.sleep(seconds)  # the point: block the event loop, as a slow handler would


async def test_a_reconnect_caught_in_a_stall_is_tried_again(redis: RedisProcess) -> None:
    """CLIENT KILL, a call that must reconnect, and a stall while it connects: it succeeds.

    The connect's timeout ran out while the loop was blocked; that says nothing about the
    (healthy) server, so the pool tries again instead of failing every queued call.
    """
    store = await open_session_store({"secret": SECRET, "redis": _section(redis)})
    try:
        pool = next(iter(store._provider.manager._topology.pools()))  # type: ignore[attr-defined]
        session = await store.create({"n": 1})
        for _ in range(3):
            raw_client(redis).client_kill_filter(_type="normal", skipme=True)
            task = asyncio.ensure_future(store.load(session.id))
            for _ in range(1000):  # until a reconnect is under way
                await asyncio.sleep(0)
                if any(not c.connected for c in pool._conns):
                    break
            await asyncio.sleep(0)
            _block(STALL)
            loaded = await task
            assert loaded is not None
            assert loaded.data == {"n": 1}
    finally:
        await store.aclose()
