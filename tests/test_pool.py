"""The connection pool against real servers: caps, idle floor and ceiling, faults, auth, stats.

Every test talks to a ``redis-server`` the harness started on a loopback port. ``CLIENT LIST``
(through the harness's admin connection, in a worker thread so the event loop keeps running)
is the ground truth for how many sockets the pool really holds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import struct
import threading
import time
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from redis_session import PoolTimeout, RedisConfig, Secret, StoreUnavailable, TLSConfig
from redis_session._connections import ConnectionManager, make_pool_factory
from redis_session._pool import NodePool
from redis_session._wire import CLIENT_NAME, pack

from .pool_helpers import config, eventually, kill_ours, opened, ours
from .servers import RedisProcess, TLSFiles, free_port

pytestmark = pytest.mark.anyio

PASSWORD = "pool-test-pw-7f3a"


async def test_cap_holds_under_500_concurrent_tasks(redis: RedisProcess) -> None:
    """500 tasks on a cap of 4 never open a 5th socket, and each gets its own reply."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(len(redis.our_clients(CLIENT_NAME)))

    async def worker(i: int) -> None:
        round_ = 0
        # Keep the load up until the sampler has looked several times.
        while round_ < 4 or len(samples) < 5:
            value = f"{i}-{round_}"
            assert await manager.execute("SET", f"k{i}", value) == b"OK"
            assert await manager.execute("GET", f"k{i}", read_only=True) == value.encode()
            round_ += 1
        rounds[i] = round_

    async def watch_stats() -> None:
        while True:
            stats_open.append(manager.statistics().open)
            await anyio.sleep(0.001)

    rounds: dict[int, int] = {}
    stats_open: list[int] = []
    async with opened(config(redis, maximum_active_connections=4)) as manager:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, sample)
            tg.start_soon(watch_stats)
            try:
                async with anyio.create_task_group() as workers:
                    for i in range(500):
                        workers.start_soon(worker, i)
            finally:
                stop.set()
                tg.cancel_scope.cancel()
        samples.append(len(await ours(redis)))
    assert len(rounds) == 500
    assert max(stats_open) <= 4
    assert len(samples) >= 5
    assert max(samples) == 4, samples  # the cap was reached, and never passed
    assert redis.admin().get("k499") == f"499-{rounds[499] - 1}"


async def test_idle_floor_is_kept_through_client_kill(redis: RedisProcess) -> None:
    """The idle floor opens with the pool and returns after CLIENT KILL; callers see no error."""
    cfg = config(redis, maximum_active_connections=4, minimum_idle_connections=2)
    async with opened(cfg) as manager:
        assert len(await ours(redis)) == 2
        errors: list[BaseException] = []
        calls = 0
        stop = anyio.Event()

        async def caller(i: int) -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    await manager.execute("SET", f"floor{i}", calls)
                    await manager.execute("GET", f"floor{i}")
                except Exception as exc:  # collected: the assertion below reports them
                    errors.append(exc)
                calls += 1
                await anyio.sleep(0.001)

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(caller, i)
            await anyio.sleep(0.2)
            killed = await kill_ours(redis)
            await anyio.sleep(0.3)
            stop.set()
        assert killed
        assert errors == []
        assert calls > 100

        # Idle now: kill every connection again; only the floor is reopened, within 2 s.
        killed = await kill_ours(redis)
        start = time.monotonic()

        async def floor_back() -> bool:
            clients = await ours(redis)
            return len(clients) == 2 and not {c["id"] for c in clients} & set(killed)

        await eventually(floor_back, within=2.0)
        assert time.monotonic() - start < 2.0
        assert await manager.execute("PING") == b"PONG"


async def test_surplus_idle_connections_close_down_to_the_floor(redis: RedisProcess) -> None:
    """After a burst, connections idle past maximum_idle_time close down to the floor."""
    cfg = config(
        redis,
        maximum_active_connections=4,
        minimum_idle_connections=1,
        maximum_idle_time=timedelta(seconds=0.5),
    )
    async with opened(cfg) as manager:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(manager.execute, "SET", f"burst{i}", i)
        assert len(await ours(redis)) == 4
        start = time.monotonic()
        await eventually(lambda: _count_is(redis, 1), within=3.0)
        elapsed = time.monotonic() - start
        assert elapsed < 2.0, f"surplus closed after {elapsed:.2f}s, max idle is 0.5s"
        assert manager.statistics().open == 1
        # The floor connection itself is never retired, however long it idles.
        await anyio.sleep(1.0)
        assert len(await ours(redis)) == 1


async def _count_is(proc: RedisProcess, n: int) -> bool:
    return len(await ours(proc)) == n


async def test_health_checks_do_not_keep_idle_connections_alive(redis: RedisProcess) -> None:
    """A PING health check is not use: a connection idle past max idle time still closes."""

    def factory() -> Connection:
        return Connection(
            host=redis.host, port=redis.port, client_name=CLIENT_NAME, protocol=2, driver_info=None
        )

    pool = NodePool(
        "test",
        factory,
        max_connections=3,
        min_idle=0,
        timeout=2.0,
        max_idle_time=1.0,
        health_check_interval=0.2,
    )
    await pool.start(connect=3)
    try:
        assert len(await ours(redis)) == 3
        # Several health checks happen before max idle time; they must not reset the idle clock.
        await eventually(lambda: _count_is(redis, 0), within=2.5)
        assert pool.statistics().open == 0
        deadline = anyio.current_time() + 2
        assert await pool.execute(pack("PING"), deadline) == b"PONG"
    finally:
        await pool.aclose()


async def test_paused_server_gives_store_unavailable_then_recovers(
    fresh_redis: RedisProcess,
) -> None:
    """A stopped server fails commands in time, naming the node; after SIGCONT the pool heals."""
    node = f"{fresh_redis.host}:{fresh_redis.port}"
    cfg = config(fresh_redis, timeout=timedelta(seconds=1), minimum_idle_connections=1)
    async with opened(cfg) as manager:
        assert await manager.execute("SET", "a", "1") == b"OK"
        fresh_redis.pause()
        try:
            start = time.monotonic()
            with anyio.fail_after(5), pytest.raises(StoreUnavailable) as info:
                await manager.execute("GET", "a")
            elapsed = time.monotonic() - start
            assert elapsed < 1.0 + 0.5
            assert node in str(info.value)
            # Several callers at once fail the same way, none hangs.
            results: list[BaseException | bytes] = []

            async def call() -> None:
                try:
                    results.append(await manager.execute("GET", "a"))
                except StoreUnavailable as exc:
                    results.append(exc)

            start = time.monotonic()
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(call)
            assert time.monotonic() - start < 1.0 + 0.5
            assert len(results) == 10
            assert all(isinstance(r, StoreUnavailable) and node in str(r) for r in results)
        finally:
            fresh_redis.resume()

        async def works() -> bool:
            try:
                return bool(await manager.execute("GET", "a") == b"1")
            except StoreUnavailable:
                return False

        await eventually(works, within=4.0)
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(manager.execute, "SET", f"after{i}", i)
        assert manager.statistics().waiting == 0


async def test_queued_callers_get_pool_timeout(fresh_redis: RedisProcess) -> None:
    """With the only connection stuck, queued callers get PoolTimeout saying the node stopped.

    Not a message about pool sizing (``maximum_active_connections``): the pool was not too
    small, the server stopped answering.
    """
    fresh_redis.admin().acl_setuser(
        "app", enabled=True, passwords=[f"+{PASSWORD}"], keys=["~*"], commands=["+@all"]
    )
    cfg = config(
        fresh_redis,
        username="app",
        password=Secret(PASSWORD),
        maximum_active_connections=1,
        timeout=timedelta(seconds=1),
    )
    async with opened(cfg) as manager:
        assert await manager.execute("PING") == b"PONG"
        fresh_redis.pause()
        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await manager.execute("PING")
            except StoreUnavailable as exc:
                errors.append(exc)

        try:
            start = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.sleep(0.1)  # the first command is on the wire now
                for _ in range(5):
                    tg.start_soon(call)
                await anyio.sleep(0.1)
                stats = manager.statistics()
                assert stats.waiting == 5
                assert stats.open == 1
                assert stats.in_use == 1
            assert time.monotonic() - start < 1.0 + 0.5
        finally:
            fresh_redis.resume()
    assert len(errors) == 6
    timeouts = [e for e in errors if isinstance(e, PoolTimeout)]
    assert len(timeouts) == 5
    for timeout in timeouts:
        assert f"{fresh_redis.host}:{fresh_redis.port} stopped answering" in str(timeout)
        assert "maximum_active_connections" not in str(timeout)
    for exc in errors:
        assert PASSWORD not in str(exc)
        assert PASSWORD not in repr(exc)


async def test_restart_is_survived(fresh_redis: RedisProcess) -> None:
    """After the server restarts, commands succeed on fresh connections without any reset."""
    cfg = config(fresh_redis, maximum_active_connections=4, minimum_idle_connections=2)
    async with opened(cfg) as manager:
        # More than one batch at once: the pool wakes its idle connections and opens more.
        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(manager.execute, "SET", f"before{i}", i)
        assert manager.statistics().open == 4

        # Restart while the event loop is blocked: the pool cannot notice before the next command.
        fresh_redis.restart()
        replies: dict[int, Any] = {}

        async def echo(i: int) -> None:
            replies[i] = await manager.execute("ECHO", f"e{i}")

        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(echo, i)
        assert replies == {i: f"e{i}".encode() for i in range(50)}

        # Restart while the loop runs: the pool sees the drop, and the floor comes back.
        await anyio.to_thread.run_sync(fresh_redis.restart)
        assert await manager.execute("SET", "after", "1") == b"OK"
        await eventually(lambda: _at_least(fresh_redis, 2), within=2.0)


async def test_dead_server_fails_fast_and_quietly(
    fresh_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """With the server gone, commands fail fast and quietly; the pool reconnects once it is back.

    The first call waits out the manager's restart window (a quick restart is ridden out, see
    tests/test_connections_restart.py); once the server has refused connects for longer than
    that, every call fails at once instead of waiting for its timeout.
    """
    caplog.set_level(logging.DEBUG, logger="redis_session")
    node = f"{fresh_redis.host}:{fresh_redis.port}"
    cfg = config(fresh_redis, minimum_idle_connections=2, timeout=timedelta(seconds=5))
    async with opened(cfg) as manager:
        fresh_redis.kill()
        failures: list[StoreUnavailable] = []
        for i in range(20):
            if i == 1:
                start = time.monotonic()
            with anyio.fail_after(5 + 0.5), pytest.raises(StoreUnavailable) as info:
                await manager.execute("PING")
            failures.append(info.value)
            await anyio.sleep(0.05)
        # 19 calls after the window: together still far below one timeout (5 s) each.
        assert time.monotonic() - start < 5
        assert all(node in str(f) for f in failures)
        refused = [
            r
            for r in caplog.records
            if r.name == "redis_session" and r.levelno == logging.WARNING and node in r.message
        ]
        assert 1 <= len(refused) <= 4, [r.message for r in refused]  # same reason, logged once

        await anyio.to_thread.run_sync(fresh_redis.restart)

        async def works() -> bool:
            try:
                return bool(await manager.execute("PING") == b"PONG")
            except StoreUnavailable:
                return False

        await eventually(works, within=3.0)
        await eventually(lambda: _at_least(fresh_redis, 2), within=3.0)
        assert any(f"connected to {node} again" in r.message for r in caplog.records)


async def _at_least(proc: RedisProcess, n: int) -> bool:
    return len(await ours(proc)) >= n


async def test_server_refusing_clients_is_not_hammered(fresh_redis: RedisProcess) -> None:
    """At maxclients, one working connection serves everyone and extra connects back off."""
    fresh_redis.admin().config_set("maxclients", 2)  # the harness's admin link and one of ours
    cfg = config(fresh_redis, maximum_active_connections=4)
    errors: list[BaseException] = []
    done = 0

    async def caller(i: int) -> None:
        nonlocal done
        for n in range(40):
            try:
                assert await manager.execute("ECHO", f"{i}-{n}") == f"{i}-{n}".encode()
            except StoreUnavailable as exc:
                errors.append(exc)
            done += 1

    async with opened(cfg) as manager:
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(caller, i)
            await anyio.sleep(0.5)  # keep the rejected-connect counter running a while
        assert errors == []
        assert done == 2000
    rejected = int(fresh_redis.admin().info("stats")["rejected_connections"])
    # Without backoff this was ~700 rejected connects a second.
    assert 1 <= rejected <= 15


async def test_acl_user_and_password(acl_redis: RedisProcess) -> None:
    """An ACL user name and password authenticate every connection."""
    assert acl_redis.username == "app"
    assert acl_redis.password is not None
    cfg = config(
        acl_redis,
        username=acl_redis.username,
        password=Secret(acl_redis.password),
        minimum_idle_connections=2,
    )
    before = {c["id"] for c in await ours(acl_redis)}  # a shared server: count only new ones
    async with opened(cfg) as manager:
        assert await manager.execute("SET", "acl", "yes") == b"OK"
        assert await manager.execute("ACL", "WHOAMI") == b"app"
        clients = [c for c in await ours(acl_redis) if c["id"] not in before]
        assert len(clients) == 2
        assert {c["user"] for c in clients} == {"app"}


async def test_wrong_password_fails_at_open(
    acl_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong password fails open() with StoreUnavailable naming the node, not the password."""
    caplog.set_level(logging.DEBUG, logger="redis_session")
    cfg = config(acl_redis, username="app", password=Secret(PASSWORD))
    before = {c["id"] for c in await ours(acl_redis)}
    with pytest.raises(StoreUnavailable) as info:
        await ConnectionManager.open(cfg)
    message = str(info.value)
    assert f"{acl_redis.host}:{acl_redis.port}" in message
    assert "invalid username-password pair" in message
    assert PASSWORD not in message
    assert PASSWORD not in caplog.text
    assert any(
        r.name == "redis_session" and r.levelno == logging.WARNING and "cannot connect" in r.message
        for r in caplog.records
    )
    assert {c["id"] for c in await ours(acl_redis)} <= before  # nothing left open


async def test_database_index_on_every_connection(redis: RedisProcess) -> None:
    """database_index is selected on every new connection, including ones opened after a kill."""
    cfg = config(redis, database_index=5, minimum_idle_connections=2)
    async with opened(cfg) as manager:
        assert await manager.execute("SET", "in-db5", "1") == b"OK"
        await kill_ours(redis)
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(manager.execute, "SET", f"db5-{i}", i)
        clients = await ours(redis)
        assert clients
        assert {c["db"] for c in clients} == {"5"}
    admin = redis.admin()
    assert admin.dbsize() == 0  # db 0
    keyspace = admin.info("keyspace")
    assert keyspace["db5"]["keys"] == 21


async def test_unix_socket(redis: RedisProcess) -> None:
    """An absolute socket path as host connects over the unix socket (the port is ignored)."""
    assert redis.unixsocket is not None
    cfg = RedisConfig(host=redis.unixsocket, port=1, minimum_idle_connections=1)
    async with opened(cfg) as manager:
        assert await manager.execute("SET", "via-unix", "1") == b"OK"
        assert manager.statistics().nodes[0].node == redis.unixsocket
        clients = await ours(redis)
        assert clients
        assert all("U" in c["flags"] for c in clients)
    assert redis.admin().get("via-unix") == "1"


async def test_tls_through_the_manager(tls_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """A TLS config connects with SNI; a server name the certificate lacks fails at open."""
    assert tls_redis.tls_port is not None
    tls = TLSConfig(server_name=tls_files.server_name, ca_file=tls_files.ca_file)
    cfg = RedisConfig(
        host=tls_redis.host, port=tls_redis.tls_port, tls=tls, minimum_idle_connections=2
    )
    before = {c["id"] for c in await ours(tls_redis)}
    async with opened(cfg) as manager:
        assert await manager.execute("ECHO", "over tls") == b"over tls"
        assert len([c for c in await ours(tls_redis) if c["id"] not in before]) == 2

    wrong = attrs.evolve(cfg, tls=attrs.evolve(tls, server_name="other.example.com"))
    with pytest.raises(StoreUnavailable) as info:
        await ConnectionManager.open(wrong)
    assert f"{tls_redis.host}:{tls_redis.tls_port}" in str(info.value)
    assert "other.example.com" in str(info.value)
    assert "session.redis.tls.server_name" in str(info.value)


async def test_plain_tcp_reset_is_not_blamed_on_tls() -> None:
    """A connection reset on a plain TCP connection is reported as such, not as a TLS handshake."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def reset_everyone() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # the listener was closed: the test is over
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # linger 0: RST instead of FIN

    thread = threading.Thread(target=reset_everyone, daemon=True)
    thread.start()
    try:
        with pytest.raises(StoreUnavailable) as info:
            await ConnectionManager.open(RedisConfig(host="127.0.0.1", port=port))
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
    message = str(info.value)
    node = f"127.0.0.1:{port}"
    assert node in message
    # The wording depends on where the reset lands (connect, write or read); none blames a
    # TLS handshake (a reset before the first reply may ask whether the server wants TLS).
    assert "handshake" not in message
    assert "TLS" not in message.replace("require TLS?", "")
    # The case that used to be blamed on TLS, a reset while connecting, exactly:
    pool = make_pool_factory(RedisConfig(host="127.0.0.1", port=port))("127.0.0.1", port)
    reset = RedisConnectionError(f"Error 104 connecting to {node}. Connection reset by peer.")
    assert "TLS" not in pool._describe(reset)


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this host has no ::1")
async def test_ipv6_literal_host(redis: RedisProcess) -> None:
    """A bracketed IPv6 literal host connects over ::1 and is named [::1]:port."""
    cfg = config(redis, host="[::1]", minimum_idle_connections=1)
    async with opened(cfg) as manager:
        assert await manager.execute("SET", "via-v6", "1") == b"OK"
        assert manager.statistics().nodes[0].node == f"[::1]:{redis.port}"
        clients = await ours(redis)
        assert clients
        assert all(c["addr"].startswith("[::1]:") for c in clients), clients
    assert redis.admin().get("via-v6") == "1"


async def test_statistics_under_load(fresh_redis: RedisProcess) -> None:
    """statistics() counts commands waiting on a stopped server, within the cap; repr sums it up."""
    cfg = config(fresh_redis, maximum_active_connections=2, timeout=timedelta(seconds=4))
    async with opened(cfg) as manager:
        stats = manager.statistics()
        assert (stats.max_connections, stats.open, stats.in_use, stats.idle, stats.waiting) == (
            2,
            1,
            0,
            1,
            0,
        )
        fresh_redis.pause()
        try:
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(manager.execute, "SET", f"s{i}", i)
                    await anyio.sleep(0.01)
                await anyio.sleep(0.2)
                stats = manager.statistics()
                assert stats.waiting > 0
                assert stats.open <= 2
                assert stats.in_use >= 1
                assert stats.open == sum(n.open for n in stats.nodes)
                text = repr(manager)
                assert f"{stats.waiting} waiting" in text
                assert f"{stats.open} open" in text
                assert f"{fresh_redis.host}:{fresh_redis.port}" in text
                fresh_redis.resume()
        finally:
            fresh_redis.resume()
        stats = manager.statistics()
        assert stats.waiting == 0
        assert stats.in_use == 0
        assert stats.open <= 2
        assert stats.idle == stats.open
        assert "0 waiting" in repr(manager)


async def test_connect_failure_is_logged_without_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused connection raises StoreUnavailable and logs a warning naming the node."""
    caplog.set_level(logging.DEBUG, logger="redis_session")
    port = free_port()  # nothing listens there
    cfg = RedisConfig(host="127.0.0.1", port=port, password=Secret(PASSWORD))
    with pytest.raises(StoreUnavailable) as info:
        await ConnectionManager.open(cfg)
    assert f"127.0.0.1:{port}" in str(info.value)
    warnings = [r for r in caplog.records if r.name == "redis_session" and r.levelno >= 30]
    assert any(f"127.0.0.1:{port}" in r.getMessage() for r in warnings)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in str(info.value)


async def test_health_check_failure_is_logged(
    fresh_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed PING of an idle connection is logged on redis_session; the pool recovers after."""
    caplog.set_level(logging.DEBUG, logger="redis_session")
    fresh_redis.admin().acl_setuser(
        "app", enabled=True, passwords=[f"+{PASSWORD}"], keys=["~*"], commands=["+@all"]
    )

    def factory() -> Connection:
        return Connection(
            host=fresh_redis.host,
            port=fresh_redis.port,
            username="app",
            password=PASSWORD,
            client_name=CLIENT_NAME,
            protocol=2,
            driver_info=None,
            socket_timeout=0.3,
            socket_connect_timeout=0.3,
        )

    pool = NodePool(
        f"{fresh_redis.host}:{fresh_redis.port}",
        factory,
        max_connections=2,
        min_idle=1,
        timeout=0.3,
        max_idle_time=60,
        health_check_interval=0.2,
    )
    await pool.start(connect=1)
    try:
        fresh_redis.pause()
        try:

            async def logged() -> bool:
                return any("health check" in r.getMessage() for r in caplog.records)

            await eventually(logged, within=3.0)
        finally:
            fresh_redis.resume()
        record = next(r for r in caplog.records if "health check" in r.getMessage())
        assert record.name == "redis_session"
        assert record.levelno == logging.WARNING
        assert f"{fresh_redis.host}:{fresh_redis.port}" in record.getMessage()
        assert PASSWORD not in caplog.text

        async def pings() -> bool:
            try:
                return bool(await pool.execute(pack("PING"), anyio.current_time() + 1) == b"PONG")
            except StoreUnavailable:
                return False

        await eventually(pings, within=3.0)
    finally:
        await pool.aclose()


async def test_deadlines_hold_even_if_the_maintenance_task_died(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead maintenance task is restarted by the next command, so deadlines still fire."""
    from .pool_helpers import only_pool  # noqa: PLC0415 - helper shared with pool_helpers

    cfg = config(redis, maximum_active_connections=1)
    async with opened(cfg) as manager:
        pool = only_pool(manager)
        assert pool._maintenance is not None
        pool._maintenance.cancel()
        await anyio.sleep(0.05)
        loop_time = anyio.current_time
        async with anyio.create_task_group() as tg:
            # The only connection is busy for 0.8 s: the PING below can only wait in the queue.
            tg.start_soon(manager.execute, "BLPOP", "nothing-here", 0.8)
            await anyio.sleep(0.1)
            start = loop_time()
            with pytest.raises(PoolTimeout):
                await pool.execute(pack("PING"), loop_time() + 0.2)
            assert loop_time() - start < 0.2 + 0.5
        assert "maintenance" in caplog.text


async def test_a_health_check_cut_short_by_close_leaves_no_unretrieved_error(
    fresh_redis: RedisProcess,
) -> None:
    """Closing the pool while an idle connection's PING hangs logs no "never retrieved".

    The batch fails the probe's future on its way out; nobody awaits a probe, so the health
    check itself must mark the error seen (a chaos run found it: Sentinel graceful failover).
    """

    def factory() -> Connection:
        return Connection(
            host=fresh_redis.host,
            port=fresh_redis.port,
            client_name=CLIENT_NAME,
            protocol=2,
            driver_info=None,
        )

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    pool = NodePool(
        "test",
        factory,
        max_connections=1,
        min_idle=1,
        timeout=30.0,
        max_idle_time=60.0,
        health_check_interval=0.05,
    )
    await pool.start(connect=1)
    fresh_redis.pause()
    try:
        # The next health check goes out and hangs on the stopped server.
        await eventually(lambda: _in_use(pool), within=5)
        await pool.aclose()
        gc.collect()
        await anyio.lowlevel.checkpoint()
        assert [c.get("message") for c in reported] == []
    finally:
        fresh_redis.resume()
        loop.set_exception_handler(previous)
        await pool.aclose()


async def _in_use(pool: NodePool) -> bool:
    return pool.statistics().in_use == 1
