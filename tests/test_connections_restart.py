"""A single Redis server restarting briefly is ridden out within each command's deadline.

A restart used to show up as thousands of fast failures: a connect refused was retried twice
at once and then reported. The manager now waits for the server (a shared, short backoff)
until the command's deadline, and only for commands that surely did not run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest

from redis_session import RedisSessionError, StoreUnavailable, open_session_store

from .pool_helpers import config, opened
from .servers import RedisProcess

pytestmark = pytest.mark.anyio

SECRET = "restart: a secret long enough to be taken seriously"
TIMEOUT = 3
#: Scheduling slack on a busy 2-core machine: a hang guard, not a speed figure.
SLACK = 2.0
#: How long the server stays down between stop and start.
DOWN_FOR = 0.3
TASKS = 40


def durable_server(redis_factory: Callable[..., RedisProcess]) -> RedisProcess:
    """A server that keeps its data across a restart (AOF, fsync on every write)."""
    return redis_factory(extra_conf=["appendonly yes", "appendfsync always"])


def quick_restart(proc: RedisProcess) -> float:
    """Stop the server (SIGTERM), wait ``DOWN_FOR``, start it on the same port; time down."""
    began = time.monotonic()
    proc.stop()
    time.sleep(DOWN_FOR)
    proc.restart()
    return time.monotonic() - began


async def test_store_rides_out_a_quick_restart(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    """Steady load/save from many tasks across a 0.3 s restart: no failure, nothing lost."""
    proc = durable_server(redis_factory)
    cfg = {
        "secret": SECRET,
        "redis": proc.redis_section(timeout=TIMEOUT, maximum_active_connections=4),
    }
    failures: list[str] = []
    slowest = 0.0
    calls = 0
    async with open_session_store(cfg) as store:
        stop = anyio.Event()

        async def timed(op: Any) -> Any:
            nonlocal slowest, calls
            began = time.monotonic()
            try:
                return await op
            finally:
                slowest = max(slowest, time.monotonic() - began)
                calls += 1

        async def worker(n: int) -> None:
            session = await timed(store.create({"worker": n, "count": 0}))
            count = 0
            while not stop.is_set():
                try:
                    loaded = await timed(store.load(session.id))
                    # Every save of this worker was acknowledged: the last one must be there.
                    assert loaded is not None, f"worker {n}: session lost"
                    assert loaded.data == {"worker": n, "count": count}, loaded.data
                    count += 1
                    loaded.data["count"] = count
                    await timed(store.save(loaded))
                except RedisSessionError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            for n in range(TASKS):
                tg.start_soon(worker, n)
            await anyio.sleep(0.5)  # steady state first
            down = await anyio.to_thread.run_sync(quick_restart, proc)
            await anyio.sleep(0.5)  # and a while after
            stop.set()
    assert not failures, f"{len(failures)} failed calls across the restart: {failures[:5]}"
    assert calls > TASKS * 10, f"only {calls} calls: the load did not run"
    # Down for `down` seconds, every call ended within its deadline (plus scheduling slack).
    assert slowest <= TIMEOUT + SLACK, f"a call took {slowest:.2f}s (server down {down:.2f}s)"


async def test_down_past_the_deadline_fails_at_the_deadline(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    """A server that stays down: the command waits out its deadline, no longer, and says why."""
    proc = redis_factory()
    cfg = config(proc, timeout=timedelta(seconds=1))
    async with opened(cfg) as manager:
        assert await manager.execute("PING") == b"PONG"
        await anyio.to_thread.run_sync(proc.stop)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable) as info:
            await manager.execute("PING")
        took = time.monotonic() - began
    assert f"cannot connect to {proc.host}:{proc.port}" in str(info.value)
    # It waited for the server (a refusal used to fail in milliseconds), within the deadline.
    assert 0.5 <= took <= 1.0 + SLACK, took


async def test_a_server_down_for_good_fails_fast_after_the_restart_window(
    redis_factory: Callable[..., RedisProcess],
) -> None:
    """Past the restart window a dead server is not waited for: each call fails at once.

    With a 30 s timeout, twenty calls after the first would take ten minutes if each waited.
    Once the server is back, the next scheduled try finds it.
    """
    proc = redis_factory()
    cfg = config(proc, timeout=timedelta(seconds=30))
    async with opened(cfg) as manager:
        await anyio.to_thread.run_sync(proc.stop)
        with anyio.fail_after(30), pytest.raises(StoreUnavailable) as first:
            await manager.execute("PING")  # waits out the restart window, then fails
        with anyio.fail_after(20):
            for _ in range(20):
                with pytest.raises(StoreUnavailable) as info:
                    await manager.execute("PING")
                assert f"cannot connect to {proc.host}:{proc.port}" in str(info.value)
        assert f"cannot connect to {proc.host}:{proc.port}" in str(first.value)
        await anyio.to_thread.run_sync(proc.restart)
        with anyio.fail_after(10):
            while True:
                try:
                    assert await manager.execute("PING") == b"PONG"
                    break
                except StoreUnavailable:
                    await anyio.sleep(0.05)
