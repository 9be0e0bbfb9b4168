"""The pool against servers that limit their clients, refuse them, or that we fail to read.

Real servers with ``client-output-buffer-limit`` / ``maxmemory-clients`` set, at ``maxclients``,
gone, or healthy while our own event loop is blocked: batches must stay within what a server
accepts, reconnects must back off with no traffic at all, an error must say what happened, and
replies that arrived in time must be read, not thrown away.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis.asyncio.connection import Connection

from redis_session import PoolTimeout, StoreUnavailable, open_session_store
from redis_session._connections import make_pool_factory
from redis_session._pool import NodePool
from redis_session._wire import CLIENT_NAME, pack

from .pool_helpers import config, eventually, kill_ours, only_pool, opened, ours
from .servers import RedisProcess

pytestmark = pytest.mark.anyio

SECRET = "pool limits: a secret long enough to be taken seriously"
#: Sessions of about 60 KB once serialized and encrypted.
BIG = 56_000


@pytest.mark.parametrize(
    "limit",
    ["client-output-buffer-limit normal 4mb 0 0", "maxmemory-clients 4mb"],
    ids=["output-buffer-limit", "maxmemory-clients"],
)
async def test_large_sessions_stay_within_the_servers_client_limits(
    redis_factory: Any, limit: str
) -> None:
    """Rounds of 300 concurrent load+save of 60 KB sessions on 2 connections all succeed.

    Batches of 128 such loads asked for ~8 MB of replies at once, and a server capping a
    client at 4 MB dropped the connection every time, retries included (4 of 300 succeeded
    here; plain redis-py got 300 of 300). The loads run on a store that has seen no large
    session yet, so nothing it learned from the writes helps it.
    """
    proc = redis_factory(extra_conf=[limit])
    section = proc.redis_section(maximum_active_connections=2, timeout="10s")
    cfg = {"secret": SECRET, "redis": section}
    payloads = {i: secrets.token_urlsafe(BIG)[:BIG] for i in range(300)}
    async with open_session_store(cfg) as writer:
        ids: dict[int, str] = {}

        async def create(i: int) -> None:
            ids[i] = (await writer.create({"i": i, "blob": payloads[i]})).id

        async with anyio.create_task_group() as tg:
            for i in payloads:
                tg.start_soon(create, i)
    assert len(ids) == 300

    failures: list[BaseException] = []
    async with open_session_store(cfg) as store:
        for round_ in range(3):
            ok = 0

            async def load_and_save(i: int, round_: int = round_) -> None:
                nonlocal ok
                try:
                    session = await store.load(ids[i])
                    assert session is not None
                    assert session.data["blob"] == payloads[i]
                    session.data["round"] = round_
                    await store.save(session)
                except StoreUnavailable as exc:
                    failures.append(exc)
                else:
                    ok += 1

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in payloads:
                        tg.start_soon(load_and_save, i)
            assert failures[:3] == []
            assert ok == 300
        again = await store.load(ids[299])
        assert again is not None
        assert again.data == {"i": 299, "blob": payloads[299], "round": 2}


async def test_batches_are_bounded_by_bytes_written(redis: RedisProcess) -> None:
    """One connection given 64 SETs of 100 KB writes them in several batches, not one of 6 MB."""
    sizes: list[int] = []
    cfg = config(redis, maximum_active_connections=1)
    async with opened(cfg) as manager:
        pool = only_pool(manager)
        take = pool._take_batch

        def spy() -> Any:
            batch = take()
            if batch:
                sizes.append(sum(len(p.packed) for p in batch))
            return batch

        pool._take_batch = spy  # type: ignore[method-assign]
        value = b"v" * 100_000
        async with anyio.create_task_group() as tg:
            for i in range(64):
                tg.start_soon(manager.execute, "SET", f"big{i}", value)
        assert await manager.execute("STRLEN", "big63") == len(value)
    # The first SET finds the pool quiet and is written by its caller (NodePool._write_now);
    # the other 63 go through batches.
    assert sum(sizes) > 63 * 100_000
    assert max(sizes) <= 1024 * 1024, sizes
    assert len(sizes) >= 8


def _count_accepts(listener: socket.socket, accepted: list[float], stop: threading.Event) -> None:
    """Accept and at once close every connection, as a server gone bad would; count them."""
    listener.settimeout(0.05)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        accepted.append(time.monotonic())
        conn.close()


@pytest.mark.parametrize("floor", [2, 8])
async def test_idle_floor_obeys_the_connect_backoff_at_maxclients(
    fresh_redis: RedisProcess, floor: int
) -> None:
    """With no traffic, a floor the server refuses (maxclients) is retried with backoff.

    It used to be retried every maintenance round: ~38 connects a second at a floor of 2,
    152 at 8. Over 3 s the backoff (doubling to 1 s) allows about ten.
    """
    cfg = config(fresh_redis, maximum_active_connections=floor, minimum_idle_connections=floor)
    async with opened(cfg) as manager:
        assert len(await ours(fresh_redis)) == floor
        admin = fresh_redis.admin()
        admin.config_set("maxclients", 1)  # only the harness's admin link
        await kill_ours(fresh_redis)
        admin.config_resetstat()
        await anyio.sleep(3.0)
        rejected = int(admin.info("stats")["rejected_connections"])
        assert manager.statistics().open <= floor
        assert 1 <= rejected <= 15, rejected
        admin.config_set("maxclients", 100)

        async def floor_back() -> bool:
            return len(await ours(fresh_redis)) == floor

        # The backoff caps at 1 s: the floor comes back soon after the server takes clients.
        await eventually(floor_back, within=5.0)
        assert await manager.execute("PING") == b"PONG"


async def test_idle_floor_obeys_the_connect_backoff_against_a_dead_server(
    fresh_redis: RedisProcess,
) -> None:
    """With no traffic, a floor of 8 against a server that hangs up at once backs off."""
    cfg = config(fresh_redis, maximum_active_connections=8, minimum_idle_connections=8)
    accepted: list[float] = []
    stop = threading.Event()
    async with opened(cfg) as manager:
        # The server dies; in its place, on its port, something that hangs up on everyone.
        fresh_redis.kill()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((fresh_redis.host, fresh_redis.port))
        listener.listen(64)
        thread = threading.Thread(target=_count_accepts, args=(listener, accepted, stop))
        thread.start()
        try:
            await anyio.sleep(3.0)
        finally:
            stop.set()
            thread.join(5)
            listener.close()
        assert manager.statistics().open <= 8
    assert 1 <= len(accepted) <= 15, len(accepted)


async def test_queued_callers_name_the_failing_connects(fresh_redis: RedisProcess) -> None:
    """Queued callers behind a busy connection, with new connections refused, get that reason.

    The only connection is held by a BLPOP; opening a second is refused (maxclients). The
    PoolTimeout says why no connection was free: the connect error, with the node; it used to
    speak only of maximum_active_connections.
    """
    node = f"{fresh_redis.host}:{fresh_redis.port}"
    pool = make_pool_factory(
        config(fresh_redis, maximum_active_connections=2, timeout=timedelta(seconds=3))
    )(fresh_redis.host, fresh_redis.port)
    await pool.start(connect=1)
    try:
        fresh_redis.admin().config_set("maxclients", 2)  # the admin link and our one
        errors: list[BaseException] = []

        async def ping() -> None:
            try:
                await pool.execute(pack("PING"), anyio.current_time() + 0.5)
            except StoreUnavailable as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.execute, pack("BLPOP", "nothing-here", 1), anyio.current_time() + 3)
            await anyio.sleep(0.1)
            for _ in range(5):
                tg.start_soon(ping)
        fresh_redis.admin().config_set("maxclients", 100)
    finally:
        await pool.aclose()
    assert len(errors) == 5
    for exc in errors:
        assert isinstance(exc, PoolTimeout)
        assert node in str(exc)
        assert "max number of clients reached" in str(exc), str(exc)


async def test_replies_that_came_during_a_loop_stall_are_read(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """The event loop blocked past the timeout with a batch in flight: every command succeeds.

    The server answered at once; the replies sat in the socket while the loop was blocked. The
    batch timer and the deadline sweep must read them instead of failing the batch and
    dropping the connection. Commands queued behind that batch are then sent and answered.
    """
    caplog.set_level(logging.DEBUG, logger="redis_session")
    cfg = config(redis, maximum_active_connections=1, timeout=timedelta(seconds=0.5))
    async with opened(cfg) as manager:
        (before,) = await ours(redis)
        replies: dict[int, Any] = {}

        async def echo(i: int) -> None:
            replies[i] = await manager.execute("ECHO", f"e{i}")

        for _ in range(3):
            async with anyio.create_task_group() as tg:
                for i in range(300):  # more than one batch: the rest queued behind it
                    tg.start_soon(echo, i)
                while manager.statistics().in_use == 0:  # noqa: ASYNC110 - polls the pool
                    await asyncio.sleep(0)
                assert manager.statistics().waiting > 0
                time.sleep(1.2)  # noqa: ASYNC251 - blocking the loop is the point
            assert replies == {i: f"e{i}".encode() for i in range(300)}
            replies.clear()
        (after,) = await ours(redis)
        assert after["id"] == before["id"]  # the connection was never dropped
    assert "failed mid-batch" not in caplog.text


async def test_a_stall_does_not_hide_a_hung_server(fresh_redis: RedisProcess) -> None:
    """A server that stopped answering still fails in-flight commands after a loop stall."""

    def factory() -> Connection:
        return Connection(
            host=fresh_redis.host,
            port=fresh_redis.port,
            client_name=CLIENT_NAME,
            protocol=2,
            driver_info=None,
        )

    pool = NodePool(
        f"{fresh_redis.host}:{fresh_redis.port}",
        factory,
        max_connections=1,
        min_idle=1,
        timeout=0.5,
        max_idle_time=60,
    )
    await pool.start(connect=1)
    try:
        fresh_redis.pause()
        try:
            start = time.monotonic()
            async with anyio.create_task_group() as tg:

                async def ping() -> None:
                    with pytest.raises(StoreUnavailable):
                        await pool.execute(pack("PING"), anyio.current_time() + 0.5)

                tg.start_soon(ping)
                await anyio.sleep(0.05)
                time.sleep(1.0)  # noqa: ASYNC251 - blocking the loop is the point
            assert time.monotonic() - start < 1.0 + 1.5
        finally:
            fresh_redis.resume()
        assert await pool.execute(pack("PING"), anyio.current_time() + 2) == b"PONG"
    finally:
        await pool.aclose()
