"""Adversarial review of the quiet pool's direct write (``NodePool._write_now``)."""

from __future__ import annotations

import asyncio
import random

import pytest

from redis_session import StoreUnavailable
from redis_session._errors import ConnectionLost, StoreClosed
from redis_session._pool import _BATCH_BYTES, _MAX_BATCH

from .pool_helpers import config, kill_ours_sync, only_pool, opened
from .servers import RedisProcess

pytestmark = pytest.mark.anyio


async def test_cancelled_direct_writes_never_shift_replies(redis: RedisProcess) -> None:
    """A caller cancelled right after its direct write: the next caller gets its own reply."""
    async with opened(
        config(redis, minimum_idle_connections=2, maximum_active_connections=2)
    ) as manager:
        pool = only_pool(manager)
        await manager.execute("SET", "a", "A")
        await manager.execute("SET", "b", "B")
        for _ in range(200):
            assert len(pool._idle) == len(pool._conns)
            task = asyncio.ensure_future(manager.execute("GET", "a"))
            await asyncio.sleep(0)  # it wrote on a parked connection and awaits the reply
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await manager.execute("GET", "b") == b"B"
            assert await manager.execute("GET", "a") == b"A"


async def test_two_callers_in_one_turn_each_get_their_reply(redis: RedisProcess) -> None:
    async with opened(
        config(redis, minimum_idle_connections=1, maximum_active_connections=1)
    ) as manager:
        for i in range(50):
            await manager.execute("SET", f"k{i}", str(i))
        for _ in range(20):
            replies = await asyncio.gather(*(manager.execute("GET", f"k{i}") for i in range(50)))
            assert replies == [str(i).encode() for i in range(50)]


async def test_direct_write_on_a_connection_killed_while_the_loop_was_blocked(
    redis: RedisProcess,
) -> None:
    """The server closed every parked connection; our loop has not seen it yet."""
    async with opened(
        config(redis, minimum_idle_connections=2, maximum_active_connections=2)
    ) as manager:
        await manager.execute("SET", "a", "A")
        for _ in range(5):
            kill_ours_sync(redis)  # blocks the loop: the EOFs wait unread
            try:
                reply = await manager.execute("GET", "a")
            except StoreUnavailable as exc:
                pytest.fail(f"a read after idle connections were killed failed: {exc!r}")
            assert reply == b"A"


async def test_close_while_a_direct_write_waits(redis: RedisProcess) -> None:
    async with opened(
        config(redis, minimum_idle_connections=1, maximum_active_connections=1)
    ) as manager:
        await manager.execute("SET", "a", "A")
        task = asyncio.ensure_future(manager.execute("GET", "a"))
        await asyncio.sleep(0)
        await manager.aclose()
        try:
            result = await task
        except (ConnectionLost, StoreClosed):
            pass
        else:
            assert result == b"A"


async def test_random_cancellation_at_low_concurrency_never_misroutes_replies(
    redis: RedisProcess,
) -> None:
    """Callers cancelled after 0-3 loop turns, on a quiet and a loaded pool: replies stay theirs."""
    rng = random.Random(14)
    cfg = config(redis, minimum_idle_connections=2, maximum_active_connections=2)
    async with opened(cfg) as manager:
        for i in range(16):
            await manager.execute("SET", f"r{i}", f"v{i}")

        async def one(i: int) -> None:
            for _ in range(60):
                turns = rng.randrange(5)
                task = asyncio.ensure_future(manager.execute("GET", f"r{i}"))
                for _ in range(turns):
                    await asyncio.sleep(0)
                if turns < 4:
                    task.cancel()
                try:
                    reply = await task
                except asyncio.CancelledError:
                    continue
                assert reply == f"v{i}".encode()

        for width in (1, 2, 3, 16):
            await asyncio.gather(*(one(i) for i in range(width)))
        # Nothing is left waiting: the pool went quiet again.
        assert await manager.execute("GET", "r0") == b"v0"


async def test_a_large_direct_write_predicts_large_replies_as_a_batched_one_does(
    redis: RedisProcess,
) -> None:
    """The batch bound learns from large writes (saves predict loads), on the quiet path too."""
    cfg = config(redis, minimum_idle_connections=2, maximum_active_connections=2)
    async with opened(cfg) as manager:
        pool = only_pool(manager)
        assert pool._batch_limit == _MAX_BATCH
        assert len(pool._idle) == len(pool._conns)  # quiet: the caller writes directly
        await manager.execute("SET", "big", b"x" * _BATCH_BYTES)
        assert pool._batch_limit < _MAX_BATCH
