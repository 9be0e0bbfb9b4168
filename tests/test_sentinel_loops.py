"""A Sentinel store reused across ``asyncio.run`` calls, and refused from another live loop.

A store opened in one ``asyncio.run`` holds tasks of that loop (event watchers, surveys, pool
workers). Once that loop has closed, a later ``asyncio.run`` may use the store again: it must
work there (failover included), log no error about the dead loop's tasks, and close from yet
another loop leaving nothing behind: no warning, no task, no connection on any server.

These tests run their own event loops, so they are plain functions, not anyio tests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from redis_session import SessionStore, UsageError, open_session_store
from redis_session._wire import CLIENT_NAME

from .servers import RedisProcess, SentinelCluster

SECRET = "sentinel loops: a secret long enough to be taken seriously"


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def _ours(servers: list[RedisProcess]) -> dict[int, int]:
    """Our connections per server port (sentinels included), only where there are some."""
    counts = {s.port: len(s.our_clients(CLIENT_NAME)) for s in servers}
    return {port: n for port, n in counts.items() if n}


def _others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


@pytest.fixture
def no_warnings() -> Iterator[None]:
    """Fail the test if any warning was raised, garbage collection at its end included."""
    gc.collect()  # what earlier tests left is theirs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()  # "coroutine ... was never awaited", "unclosed transport"
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_sentinel_store_reused_in_later_asyncio_runs(
    sentinel_cluster: SentinelCluster, caplog: pytest.LogCaptureFixture, no_warnings: None
) -> None:
    """Open, use, fail over, use and close, each in an asyncio.run of its own.

    aclose() in a later run used to raise "Event loop is closed" (it gathered the first
    loop's tasks) and leave coroutines never awaited; after a failover while no loop ran, the
    store, whose event watchers had died with the first loop, kept writing to the old master.
    """
    caplog.set_level(logging.WARNING, logger="redis_session")
    cluster = sentinel_cluster
    servers = [*cluster.data_nodes, *cluster.sentinels]
    cfg = {"secret": SECRET, "redis": cluster.redis_section()}
    store: SessionStore[Any] = _run(open_session_store(cfg))
    try:
        first = _run(store.create({"n": 1}))

        async def second_run() -> None:
            loaded = await store.load(first.id)
            assert loaded is not None
            assert loaded.data == {"n": 1}
            loaded.data["n"] = 2
            await store.save(loaded)

        _run(second_run())
        cluster.wait_replica_synced()
        old = cluster.master_address()
        old_node = cluster.node_at(old)
        new_node = next(n for n in cluster.data_nodes if n is not old_node)
        cluster.sentinels[0].admin().execute_command("SENTINEL", "FAILOVER", cluster.name)
        # Every sentinel names the new master; the old one still says ROLE master and takes
        # writes until Sentinel converts it some 8 s later.
        cluster.wait_for_master(new_node.address)

        async def third_run() -> None:
            # The writer is found again on the new master, in a loop the store never saw open.
            loaded = await store.load(first.id)
            assert loaded is not None
            assert loaded.data == {"n": 2}
            loaded.data["n"] = 3
            await store.save(loaded)
            again = await store.load(first.id)
            assert again is not None
            assert again.data == {"n": 3}

        _run(third_run())
        # What Sentinel does to the old master later, now: whatever it alone acknowledged is
        # discarded. The write of the third run must not have been that.
        cluster.demote(old_node, new_node.address)

        async def fourth_run() -> None:
            loaded = await store.load(first.id)
            assert loaded is not None
            assert loaded.data == {"n": 3}

        _run(fourth_run())
    finally:
        _run(store.aclose())
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert _ours(servers) == {}


def test_sentinel_store_closed_in_a_later_loop_leaves_nothing(
    sentinel_cluster: SentinelCluster, caplog: pytest.LogCaptureFixture, no_warnings: None
) -> None:
    """A store routing reads, used with cancellations in a second run, closed in a third.

    Every task ends with its loop or with aclose(), and no connection stays on a data node
    or a sentinel: the sentinel links' idle connections of a finished run included.
    """
    caplog.set_level(logging.WARNING, logger="redis_session")
    cluster = sentinel_cluster
    servers = [*cluster.data_nodes, *cluster.sentinels]
    section = cluster.redis_section()
    section["high_availability"] = {**section["high_availability"], "route_randomly": True}
    cfg = {"secret": SECRET, "redis": section}
    store: SessionStore[Any] = _run(open_session_store(cfg))
    session = _run(store.create({"n": 1}))
    # Between runs nothing is connected: the pools' workers and the sentinel links closed
    # their connections as asyncio.run cancelled them.
    assert _ours(servers) == {}

    async def second_run() -> None:
        # Cancelled at once (while the store moves to this loop), then at random points.
        async def load_and_linger() -> None:
            await store.load(session.id)
            await asyncio.sleep(1)  # the timeout lands here if the load was quick

        for delay in (0.0, 0.001, 0.003, 0.01):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(load_and_linger(), delay)
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"n": 1}
        assert _ours(servers) != {}

    _run(second_run())
    assert _ours(servers) == {}
    try:
        # The second run ended without aclose(): its tasks ended with its loop.
        async def third_run() -> None:
            async with asyncio.timeout(30):
                await store.aclose()
            assert _others() == set()

        asyncio.run(third_run())  # no wait_for: its task would count as left behind
    finally:
        _run(store.aclose())  # a second aclose() is a no-op
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert _ours(servers) == {}


def test_single_server_store_opened_used_and_closed_in_three_runs(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture, no_warnings: None
) -> None:
    """The same on a single server: open, use, close in three asyncio.run calls."""
    caplog.set_level(logging.WARNING, logger="redis_session")
    cfg = {"secret": SECRET, "redis": redis.redis_section(minimum_idle_connections=2)}
    store: SessionStore[Any] = _run(open_session_store(cfg))
    session = _run(store.create({"n": 1}))

    async def second_run() -> None:
        loaded = await store.load(session.id)
        assert loaded is not None
        loaded.data["n"] = 2
        await store.save(loaded)

    _run(second_run())

    async def third_run() -> None:
        async with asyncio.timeout(30):
            await store.aclose()
        assert _others() == set()

    asyncio.run(third_run())  # no wait_for: its task would count as left behind
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert redis.our_clients(CLIENT_NAME) == []


def test_sentinel_store_refuses_another_threads_live_loop(
    sentinel_cluster: SentinelCluster,
) -> None:
    cfg = {"secret": SECRET, "redis": sentinel_cluster.redis_section()}
    outcome: list[BaseException | None] = []

    async def main() -> None:
        async with open_session_store(cfg) as store:
            session = await store.create({"n": 1})

            def elsewhere() -> None:
                try:
                    asyncio.run(asyncio.wait_for(store.load(session.id), 10))
                except BaseException as exc:  # recorded for the assertion
                    outcome.append(exc)
                else:
                    outcome.append(None)

            thread = threading.Thread(target=elsewhere)
            thread.start()
            await asyncio.to_thread(thread.join, 20)
            assert await store.load(session.id) is not None

    _run(main())
    assert len(outcome) == 1
    assert isinstance(outcome[0], UsageError), outcome
    assert "Sentinel master 'mymaster'" in str(outcome[0])
