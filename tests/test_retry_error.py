"""A retry that runs out of time in a pool's queue reports what failed, not a full pool.

Found by the cluster chaos suite (master SIGKILL, calm client): a command whose master died
was retried on the promoted replica with a few milliseconds of its deadline left, and the
caller got ``PoolTimeout`` ("no connection became free") from a pool that was never full.
Here, on one real server: the command's connection is killed under it, and the retry cannot
get a connection (``maxclients`` reached, the pool's other connection held by a blocking
command) before the caller's deadline.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import anyio
import anyio.to_thread
import pytest

from redis_session import ConnectionLost, PoolTimeout
from redis_session._wire import pack

from .pool_helpers import config, eventually, opened, ours
from .servers import RedisProcess

pytestmark = pytest.mark.anyio


def _kill_the_brpop(proc: RedisProcess) -> None:
    """No new connection from now on; then drop the connection waiting in BRPOP."""
    admin = proc.admin()
    clients = proc.our_clients()
    # Redis refuses a client that would make more than maxclients: after the kill below,
    # every seat is taken.
    admin.config_set("maxclients", str(len(admin.client_list()) - 1))
    (victim,) = [c for c in clients if c.get("cmd") == "brpop"]
    admin.client_kill_filter(_id=victim["id"])


async def test_a_retry_that_finds_no_connection_reports_the_failure(
    fresh_redis: RedisProcess,
) -> None:
    cfg = config(
        fresh_redis, timeout=timedelta(seconds=3), maximum_active_connections=2, max_retries=1
    )
    async with opened(cfg) as manager:
        loop = asyncio.get_running_loop()
        # Holds one of the two connections past the deadline of the command under test.
        hold = asyncio.ensure_future(manager.execute_packed(pack("BLPOP", "rs:hold", "2.5")))
        started = loop.time()
        victim = asyncio.ensure_future(
            manager.execute_packed(pack("BRPOP", "rs:victim", "2"), deadline=started + 1.2)
        )

        async def both_blocked() -> bool:
            cmds = sorted(c.get("cmd", "") for c in await ours(fresh_redis))
            return cmds == ["blpop", "brpop"]

        await eventually(both_blocked, within=1.0)
        await anyio.to_thread.run_sync(_kill_the_brpop, fresh_redis)
        with pytest.raises(ConnectionLost) as caught:
            await victim
        waited = loop.time() - started
        assert not isinstance(caught.value, PoolTimeout)
        message = str(caught.value)
        # What failed first, and where the retry waited.
        assert "failed" in message, message
        assert f"retried on {fresh_redis.host}:{fresh_redis.port}" in message, message
        assert "before the deadline" in message, message
        assert caught.value.sent  # the BRPOP was on the wire when its connection died
        assert isinstance(caught.value.__context__, PoolTimeout)
        # It did wait for the retry (the kill came well before the deadline).
        assert waited >= 1.2 - 0.05, waited
        await anyio.to_thread.run_sync(
            lambda: fresh_redis.admin().config_set("maxclients", "10000")
        )
        assert await hold is None  # nothing was pushed: BLPOP timed out normally
