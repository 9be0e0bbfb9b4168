"""Resource hygiene: opening and closing stores over and over leaks nothing.

After thousands of open/use/close cycles, this process has the same asyncio tasks and file
descriptors as before, no store, pool or connection object survives a garbage collection, and
the servers hold none of our connections. Counts: 10,000 cycles on the memory provider; on
Redis, as many as fit in ``REDIS_SECONDS`` (at least ``REDIS_MIN_CYCLES``, at most
``REDIS_MAX_CYCLES``); on Sentinel, as many as fit in ``SENTINEL_SECONDS`` (at least
``SENTINEL_MIN_CYCLES``). The figures are printed.
(The fault scenarios in ``tests/chaos`` check the same after every fault.)
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis.asyncio.connection import AbstractConnection

from redis_session import SessionStore, open_session_store
from redis_session._connections import ConnectionManager
from redis_session._pool import NodePool
from redis_session._wire import CLIENT_NAME

from .servers import RedisProcess, SentinelCluster

pytestmark = pytest.mark.anyio

SECRET = "hygiene: a secret long enough to be taken seriously"
MEMORY_CYCLES = 10_000
REDIS_SECONDS = 20.0
REDIS_MIN_CYCLES = 1_000
REDIS_MAX_CYCLES = 10_000
SENTINEL_SECONDS = 8.0
SENTINEL_MIN_CYCLES = 50
#: Every so many cycles, check that nothing accumulates while the loop runs.
CHECK_EVERY = 500
#: Object types that must all be collectable once their store is closed.
TRACKED: tuple[type, ...] = (SessionStore, ConnectionManager, NodePool, AbstractConnection)


def tasks_now() -> set[asyncio.Task[Any]]:
    """The event loop's unfinished tasks."""
    return {t for t in asyncio.all_tasks() if not t.done()}


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def live_objects() -> dict[str, int]:
    """How many store, manager, pool and connection objects survive a full collection."""
    gc.collect()
    counts = dict.fromkeys((t.__name__ for t in TRACKED), 0)
    for obj in gc.get_objects():
        for kind in TRACKED:
            if isinstance(obj, kind):
                counts[kind.__name__] += 1
    return counts


class Baseline:
    """Tasks, fds and live objects before the cycles; :meth:`assert_back` compares after."""

    def __init__(self, servers: list[RedisProcess]) -> None:
        self.servers = servers

    async def take(self) -> Baseline:
        await anyio.to_thread.run_sync(self._close_admin)
        self.tasks = tasks_now()
        self.fds = fd_count()
        self.objects = live_objects()
        return self

    def _close_admin(self) -> None:
        # The harness's admin clients keep sockets of their own: not ours to count.
        for proc in self.servers:
            proc._close_admin()

    async def ours_on_servers(self) -> int:
        def count() -> int:
            return sum(len(p.our_clients(CLIENT_NAME)) for p in self.servers)

        return await anyio.to_thread.run_sync(count)

    async def assert_back(self, within: float = 3.0) -> dict[str, Any]:
        """Wait (bounded) until everything is back to the baseline; return the final figures."""
        deadline = time.monotonic() + within
        while True:
            ours = await self.ours_on_servers() if self.servers else 0
            await anyio.to_thread.run_sync(self._close_admin)
            extra = tasks_now() - self.tasks
            fds = fd_count()
            objects = live_objects()
            if not ours and not extra and fds == self.fds and objects == self.objects:
                return {"tasks": len(self.tasks), "fds": fds, "objects": objects}
            if time.monotonic() > deadline:
                names = sorted(t.get_name() for t in extra)[:10]
                pytest.fail(
                    f"not back to baseline: {ours} connections of ours on the servers, "
                    f"{len(extra)} extra tasks {names}, fds {fds} (was {self.fds}), "
                    f"objects {objects} (were {self.objects})"
                )
            await anyio.sleep(0.05)


async def cycles(
    cfg: dict[str, Any],
    baseline: Baseline,
    *,
    minimum: int,
    maximum: int,
    seconds: float,
    midway: Callable[[], Any] | None = None,
) -> tuple[int, float]:
    """Open, use (create + load) and close a store until ``maximum`` or ``seconds``.

    ``aclose()`` waits for every task the store started, so after each cycle the loop must
    hold exactly the baseline's tasks: checked every time (it is cheap), failing at once.
    """
    began = time.monotonic()
    done = 0
    while done < maximum and (done < minimum or time.monotonic() - began < seconds):
        store = await open_session_store(cfg)
        try:
            session = await store.create({"cycle": done})
            loaded = await store.load(session.id)
            assert loaded is not None
            assert loaded.data == {"cycle": done}
        finally:
            closing = time.monotonic()
            await store.aclose()
            closed_in = time.monotonic() - closing
        extra = tasks_now() - baseline.tasks
        if extra:
            names = sorted(t.get_name() for t in extra)
            pytest.fail(
                f"cycle {done}: aclose() took {closed_in:.2f}s and left {len(extra)} tasks "
                f"running: {names}"
            )
        done += 1
        if midway is not None and done % CHECK_EVERY == 0:
            await midway()
    return done, time.monotonic() - began


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[hygiene] {text}")  # the figures are the point


async def test_memory_store_10000_cycles(capsys: pytest.CaptureFixture[str]) -> None:
    """10,000 memory stores opened, used and closed: no task, fd or object left over."""
    baseline = await Baseline([]).take()
    done, took = await cycles(
        {"secret": SECRET}, baseline, minimum=MEMORY_CYCLES, maximum=MEMORY_CYCLES, seconds=0
    )
    final = await baseline.assert_back()
    report(capsys, f"memory: {done} cycles in {took:.1f}s; back to {final}")
    assert done == MEMORY_CYCLES


async def test_redis_store_cycles(redis: RedisProcess, capsys: pytest.CaptureFixture[str]) -> None:
    """Redis stores (2 idle connections each) opened, used and closed: nothing accumulates.

    Besides tasks, fds and objects, the server must hold none of our connections afterwards,
    and never more than one store's worth while the cycles run.
    """
    baseline = await Baseline([redis]).take()
    cfg = {
        "secret": SECRET,
        "redis": redis.redis_section(minimum_idle_connections=2, maximum_active_connections=4),
    }
    received_before = (await anyio.to_thread.run_sync(redis.admin().info, "stats"))[
        "total_connections_received"
    ]
    peak = 0

    async def midway() -> None:
        nonlocal peak
        ours = await baseline.ours_on_servers()
        peak = max(peak, ours)
        # Closing is asynchronous on the server's side: a store or two may still be going.
        assert ours <= 8, f"{ours} connections of ours on the server mid-way"

    done, took = await cycles(
        cfg,
        baseline,
        minimum=REDIS_MIN_CYCLES,
        maximum=REDIS_MAX_CYCLES,
        seconds=REDIS_SECONDS,
        midway=midway,
    )
    received = (await anyio.to_thread.run_sync(redis.admin().info, "stats"))[
        "total_connections_received"
    ] - received_before
    final = await baseline.assert_back()
    report(
        capsys,
        f"redis: {done} cycles in {took:.1f}s ({took / done * 1000:.1f} ms each), "
        f"{received} connections made, "
        f"at most {peak} of ours at a mid-way check; back to {final}",
    )
    assert done >= REDIS_MIN_CYCLES
    # Each store opens exactly its idle floor (two connections), no more.
    assert 2 * done <= received <= 2 * done + 20


async def test_sentinel_store_cycles(
    sentinel_cluster: SentinelCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sentinel stores (subscribers, surveys, a replica pool) opened and closed: nothing left."""
    cluster = sentinel_cluster
    servers = [*cluster.data_nodes, *cluster.sentinels]
    baseline = await Baseline(servers).take()
    section = cluster.redis_section()
    section["high_availability"] = {**section["high_availability"], "route_randomly": True}
    cfg = {"secret": SECRET, "redis": section}
    done, took = await cycles(
        cfg,
        baseline,
        minimum=SENTINEL_MIN_CYCLES,
        maximum=REDIS_MAX_CYCLES,
        seconds=SENTINEL_SECONDS,
    )
    final = await baseline.assert_back()
    report(
        capsys,
        f"sentinel (route_randomly): {done} cycles in {took:.1f}s "
        f"({took / done * 1000:.1f} ms each); back to {final}",
    )
    assert done >= SENTINEL_MIN_CYCLES
