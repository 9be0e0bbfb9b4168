"""Cancelling callers at every await of a command never desynchronises a connection.

The CVE-2023-28859 class of bug: a caller cancelled after its command was written leaves the
reply unread, and the next caller on that connection receives it. Each test cancels at one
named point (while queued, while its connection opens, during the write, during the read,
after the reply), then proves every connection still answers each caller with its own reply.
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import time
from datetime import timedelta

import anyio
import anyio.to_thread
import pytest

from redis_session import RedisSessionError, StoreClosed, StoreUnavailable
from redis_session._connections import ConnectionManager, make_pool_factory
from redis_session._wire import pack

from .pool_helpers import config, eventually, kill_ours_sync, only_pool, opened, ours
from .servers import RedisProcess

pytestmark = pytest.mark.anyio


async def assert_in_sync(manager: ConnectionManager, proc: RedisProcess, calls: int = 200) -> None:
    """``calls`` concurrent ECHOs each get their own value; nothing is left waiting or leaked."""
    replies: dict[int, bytes] = {}

    async def echo(i: int) -> None:
        replies[i] = await manager.execute("ECHO", f"sync-{i}")

    async with anyio.create_task_group() as tg:
        for i in range(calls):
            tg.start_soon(echo, i)
    assert replies == {i: f"sync-{i}".encode() for i in range(calls)}
    stats = manager.statistics()
    assert stats.waiting == 0
    assert stats.in_use == 0
    assert not only_pool(manager)._queue  # no abandoned entries left behind either
    assert stats.open <= stats.max_connections
    assert len(await ours(proc)) <= stats.max_connections


def write_buffer_size(manager: ConnectionManager) -> int:
    """Bytes our connections have queued in their transports but not yet handed to the kernel."""
    total = 0
    for c in only_pool(manager)._conns:
        writer = c.conn._writer
        if writer is not None:
            total += writer.transport.get_write_buffer_size()
    return total


async def test_cancel_while_queued(fresh_redis: RedisProcess) -> None:
    """A caller cancelled while queued behind a full pool is never sent at all."""
    cfg = config(fresh_redis, maximum_active_connections=1, timeout=timedelta(seconds=5))
    async with opened(cfg) as manager:
        results: dict[str, bytes] = {}
        fresh_redis.pause()
        try:
            async with anyio.create_task_group() as tg:

                async def first() -> None:
                    results["a"] = await manager.execute("ECHO", "a")

                tg.start_soon(first)
                await anyio.sleep(0.1)  # "a" is on the only connection, waiting for its reply
                with anyio.move_on_after(0.2) as scope:
                    await manager.execute("SET", "never-sent", "1")
                assert scope.cancelled_caught
                stats = manager.statistics()
                assert stats.waiting == 0
                assert stats.in_use == 1
                fresh_redis.resume()
        finally:
            fresh_redis.resume()
        assert results == {"a": b"a"}
        await assert_in_sync(manager, fresh_redis)
        assert await manager.execute("EXISTS", "never-sent") == 0


async def test_cancel_while_its_connection_opens(fresh_redis: RedisProcess) -> None:
    """A caller cancelled while the pool opens a connection for it leaves a usable connection."""
    cfg = config(fresh_redis, maximum_active_connections=2, timeout=timedelta(seconds=5))
    async with opened(cfg) as manager:
        before = {c["id"] for c in await ours(fresh_redis)}
        fresh_redis.pause()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(manager.execute, "ECHO", "occupies the first connection")
                await anyio.sleep(0.1)
                with anyio.move_on_after(0.2) as scope:
                    # No idle connection: the pool opens a second one, which the paused
                    # server does not finish (CLIENT SETNAME is not answered).
                    await manager.execute("SET", "never-sent", "1")
                assert scope.cancelled_caught
                assert manager.statistics().open == 2
                fresh_redis.resume()
        finally:
            fresh_redis.resume()
        await eventually(lambda: _idle_count(manager, 2), within=2.0)
        after = {c["id"] for c in await ours(fresh_redis)}
        assert len(after - before) == 1  # the connection opened for it, kept and usable
        await assert_in_sync(manager, fresh_redis)
        assert await manager.execute("EXISTS", "never-sent") == 0


async def _idle_count(manager: ConnectionManager, n: int) -> bool:
    return manager.statistics().idle == n


async def test_cancel_during_send(fresh_redis: RedisProcess) -> None:
    """A caller cancelled while its big command is being written leaves the stream intact."""
    cfg = config(fresh_redis, maximum_active_connections=1, timeout=timedelta(seconds=5))
    big = b"x" * (24 * 1024 * 1024)  # more than the kernel buffers of a loopback socket
    async with opened(cfg) as manager:
        (before,) = await ours(fresh_redis)
        fresh_redis.pause()
        try:
            with anyio.move_on_after(0.3) as scope:
                await manager.execute("SET", "big", big)
            assert scope.cancelled_caught
            # Still writing: the paused server reads nothing, so the transport holds the rest.
            assert write_buffer_size(manager) > 0
            assert manager.statistics().in_use == 1
        finally:
            fresh_redis.resume()
        assert await manager.execute("ECHO", "after the big one") == b"after the big one"
        (after,) = await ours(fresh_redis)
        assert after["id"] == before["id"]  # same connection: it was drained, not dropped
        assert await manager.execute("STRLEN", "big") == len(big)
        await assert_in_sync(manager, fresh_redis)


async def test_cancel_during_read(fresh_redis: RedisProcess) -> None:
    """A caller cancelled while awaiting its reply: the reply is read and dropped, not passed on."""
    cfg = config(fresh_redis, maximum_active_connections=1, timeout=timedelta(seconds=5))
    async with opened(cfg) as manager:
        (before,) = await ours(fresh_redis)
        fresh_redis.pause()
        try:
            with anyio.move_on_after(0.2) as scope:
                await manager.execute("INCR", "counter")
            assert scope.cancelled_caught
            assert write_buffer_size(manager) == 0  # fully written: only the reply is pending
            assert manager.statistics().in_use == 1
        finally:
            fresh_redis.resume()
        # The next caller on the same connection gets its own reply, not "1" from INCR.
        assert await manager.execute("ECHO", "mine") == b"mine"
        assert await manager.execute("GET", "counter") == b"1"  # executed exactly once
        (after,) = await ours(fresh_redis)
        assert after["id"] == before["id"]
        await assert_in_sync(manager, fresh_redis)


async def test_cancel_after_reply(fresh_redis: RedisProcess) -> None:
    """A caller cancelled after its reply was delivered, or after it returned, disturbs nothing."""
    cfg = config(fresh_redis, maximum_active_connections=1, timeout=timedelta(seconds=5))
    async with opened(cfg) as manager:
        # After it returned: the scope is cancelled right after the reply.
        with anyio.CancelScope() as scope:
            assert await manager.execute("ECHO", "done") == b"done"
            scope.cancel()
            await anyio.sleep(1)
        assert scope.cancelled_caught

        # Delivered but not yet seen: a and b share one batch; when a resumes, b's reply is
        # already set on its future, and a cancels b's task before it runs again. (anyio's
        # cancel scopes hold back in that state and let b have its reply; a bare
        # ``Task.cancel()`` does not, and throws the delivered reply away.)
        got: dict[str, bytes] = {}
        batch_done_when_a_resumed: list[bool] = []

        async def a() -> None:
            got["a"] = await manager.execute("ECHO", "a")
            batch_done_when_a_resumed.append(manager.statistics().in_use == 0)
            b_task.cancel()

        async def b() -> None:
            got["b"] = await manager.execute("ECHO", "b")

        fresh_redis.pause()
        try:
            # The first command on a quiet pool is written by its caller, alone
            # (NodePool._write_now): one in flight first, so a and b share the next batch.
            first = asyncio.ensure_future(manager.execute("ECHO", "first"))
            await anyio.sleep(0.05)
            a_task = asyncio.ensure_future(a())
            b_task = asyncio.ensure_future(b())
            await anyio.sleep(0.1)  # queued behind it, then written in one batch
            assert manager.statistics().in_use == 1
        finally:
            fresh_redis.resume()
        await asyncio.wait([first, a_task, b_task], timeout=5)
        assert first.result() == b"first"
        assert a_task.result() is None
        assert b_task.cancelled()
        assert got == {"a": b"a"}
        assert batch_done_when_a_resumed == [True]
        await assert_in_sync(manager, fresh_redis)


async def test_random_cancellation_of_500_concurrent_callers(redis: RedisProcess) -> None:
    """Cancelling random callers at random moments never hands anyone a reply that is not theirs."""
    rng = random.Random(28859)
    # 0 cancels before the command is queued; tiny values hit queued, written and read states;
    # 1 s lets the command finish.
    delays = [0, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 1.0]
    outcomes = {"ok": 0, "cancelled": 0}
    wrong: list[tuple[str, object]] = []

    async def caller(i: int, delay: float) -> None:
        token = f"c{i}-{rng.random()}"
        with anyio.move_on_after(delay) as scope:
            if i % 2:
                reply = await manager.execute("ECHO", token)
            else:
                await manager.execute("SET", f"k{i}", token)
                reply = await manager.execute("GET", f"k{i}")
            if reply != token.encode():
                wrong.append((token, reply))
            outcomes["ok"] += 1
        if scope.cancelled_caught:
            outcomes["cancelled"] += 1

    cfg = config(redis, maximum_active_connections=4, minimum_idle_connections=1)
    async with opened(cfg) as manager:
        for round_ in range(4):
            async with anyio.create_task_group() as tg:
                for i in range(500):
                    tg.start_soon(caller, round_ * 1000 + i, rng.choice(delays))
        # Whole task groups cancelled from outside, mid-flight.
        for _ in range(3):
            with anyio.move_on_after(rng.uniform(0.001, 0.01)):
                async with anyio.create_task_group() as tg:
                    for i in range(500):
                        tg.start_soon(caller, 10_000 + i, 1.0)
        assert wrong == []
        assert outcomes["ok"] > 200
        assert outcomes["cancelled"] > 200
        await assert_in_sync(manager, redis)


async def test_connection_drops_mid_batch(redis: RedisProcess) -> None:
    """CLIENT KILL mid-storm: callers get their own reply or StoreUnavailable, never another's."""
    stop = threading.Event()
    kills: list[str] = []

    def killer() -> None:
        while not stop.is_set():
            kills.extend(kill_ours_sync(redis))
            time.sleep(0.03)

    ok = 0
    failed: list[BaseException] = []
    wrong: list[tuple[str, object]] = []

    async def caller(i: int) -> None:
        nonlocal ok
        n = 0
        while not stop.is_set():
            token = f"t{i}-{n}"
            n += 1
            try:
                reply = await manager.execute("ECHO", token)
            except StoreUnavailable as exc:
                failed.append(exc)
                continue
            if reply != token.encode():
                wrong.append((token, reply))
            ok += 1

    cfg = config(redis, maximum_active_connections=4, timeout=timedelta(seconds=2))
    async with opened(cfg) as manager:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(caller, i)
            await anyio.sleep(0.05)
            tg.start_soon(anyio.to_thread.run_sync, killer)
            await anyio.sleep(1.5)
            stop.set()
        assert wrong == []
        assert len(kills) >= 10
        assert ok > 1000
        await assert_in_sync(manager, redis)


async def test_aclose_with_commands_in_flight_and_queued(fresh_redis: RedisProcess) -> None:
    """Closing the pool while commands wait on a stopped server ends every caller with our error."""
    cfg = config(fresh_redis, maximum_active_connections=2, timeout=timedelta(seconds=5))
    manager = await ConnectionManager.open(cfg)
    outcomes: list[BaseException | bytes] = []

    async def call(i: int) -> None:
        try:
            outcomes.append(await manager.execute("ECHO", f"{i}"))
        except RedisSessionError as exc:
            outcomes.append(exc)

    fresh_redis.pause()
    try:
        with anyio.fail_after(4):  # well under the 5 s command timeout: nobody waits it out
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(call, i)
                    await anyio.sleep(0.01)
                await anyio.sleep(0.2)
                stats = manager.statistics()
                assert stats.in_use >= 1
                assert stats.waiting >= 1
                await manager.aclose()
    finally:
        fresh_redis.resume()
    assert len(outcomes) == 10
    assert all(isinstance(o, StoreClosed | StoreUnavailable) for o in outcomes), outcomes
    with pytest.raises(StoreClosed):
        await manager.execute("PING")
    stats = manager.statistics()
    assert (stats.open, stats.in_use, stats.idle, stats.waiting) == (0, 0, 0, 0)
    await eventually(lambda: _none_left(fresh_redis), within=2.0)


async def _none_left(proc: RedisProcess) -> bool:
    return not await ours(proc)


async def test_cancelled_start_logs_out_every_connection(fresh_redis: RedisProcess) -> None:
    """A start cancelled by an anyio scope closes every connection it opened, not the first only.

    anyio cancels every await inside a cancelled scope again, cleanup awaits included: the
    disconnect loop used to stop after the first socket, and the others (their handshake
    already written) logged in once the server read them, until a garbage collection.
    """
    cfg = config(fresh_redis, minimum_idle_connections=4, maximum_active_connections=4)
    pool = make_pool_factory(cfg)(fresh_redis.host, fresh_redis.port)
    was_enabled = gc.isenabled()
    gc.disable()  # a finaliser must not be what closes them
    try:
        fresh_redis.pause()  # connects reach the kernel's backlog; the handshakes hang
        try:
            with anyio.move_on_after(0.3) as scope:
                await pool.start(connect=4)
            assert scope.cancelled_caught
            assert pool.statistics().open == 0
        finally:
            fresh_redis.resume()
        await anyio.sleep(0.5)  # the server now reads whatever was left open

        async def nobody() -> bool:
            return not await anyio.to_thread.run_sync(fresh_redis.our_clients)

        await eventually(nobody, within=2.0)
        # The pool is not closed by a failed start: it still serves commands.
        assert await pool.execute(pack("PING"), anyio.current_time() + 2) == b"PONG"
    finally:
        await pool.aclose()
        if was_enabled:
            gc.enable()


async def test_aclose_in_a_cancelled_scope_closes_everything(fresh_redis: RedisProcess) -> None:
    """aclose() called inside an already cancelled anyio scope still closes every connection."""
    cfg = config(fresh_redis, minimum_idle_connections=4, maximum_active_connections=4)
    pool = make_pool_factory(cfg)(fresh_redis.host, fresh_redis.port)
    await pool.start(connect=4)
    assert len(await ours(fresh_redis)) == 4
    with anyio.CancelScope() as scope:
        scope.cancel()
        await pool.aclose()
    stats = pool.statistics()
    assert (stats.open, stats.idle, stats.waiting) == (0, 0, 0)
    assert not pool._tasks
    await eventually(lambda: _none_left(fresh_redis), within=2.0)
