"""Cancelling ``open_session_store`` on Sentinel or Cluster at every point leaves nothing behind.

The open is cut by ``asyncio.timeout`` and by an anyio cancel scope after 0, 1, 2, ... turns of
the event loop, up to 1.5 times the turns a whole open takes, so the cancellation lands in
every await on the way (sentinel surveys, cluster map surveys, pool connects, ROLE/INFO checks,
replica pools, latency PINGs). After
the attempts this process has the tasks and file descriptors it had before, and the servers
(data nodes and sentinels) hold none of our connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from redis_session import open_session_store

from .cluster_servers import RedisCluster
from .servers import SentinelCluster
from .test_hygiene import Baseline

pytestmark = pytest.mark.anyio

SECRET = "cancel open: a secret long enough to be taken seriously"
STEPS = 150


def store_config(cluster: SentinelCluster) -> dict[str, Any]:
    section = cluster.redis_section(minimum_idle_connections=2)
    section["high_availability"] = {**section["high_availability"], "route_randomly": True}
    return {"secret": SECRET, "redis": section}


async def after_turns(turns: int, cancel: Callable[[], Any]) -> None:
    """Call ``cancel`` after ``turns`` turns of the event loop."""
    for _ in range(turns):
        await asyncio.sleep(0)
    cancel()


async def count(turns: list[int]) -> None:
    """Count the event loop's turns in ``turns[0]`` until cancelled."""
    while True:
        turns[0] += 1
        await asyncio.sleep(0)


async def open_turns(cfg: dict[str, Any]) -> int:
    """How many event-loop turns one whole open takes here (the fewest of three)."""
    fewest = 10**9
    for _ in range(3):
        turns = [0]
        counter = asyncio.create_task(count(turns))
        store = await open_session_store(cfg)
        counter.cancel()
        fewest = min(fewest, turns[0])
        await store.aclose()
    return fewest


@pytest.mark.parametrize("how", ["asyncio.timeout", "anyio.CancelScope"])
async def test_an_open_cancelled_anywhere_leaks_nothing(
    sentinel_cluster: SentinelCluster, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """Sentinel: cut after 0..1.5x the loop turns an open takes; nothing is left."""
    cluster = sentinel_cluster
    nodes = [*cluster.data_nodes, *cluster.sentinels]
    await cancel_everywhere(store_config(cluster), nodes, how, capsys)


@pytest.mark.parametrize("how", ["asyncio.timeout", "anyio.CancelScope"])
async def test_a_cluster_open_cancelled_anywhere_leaks_nothing(
    redis_cluster: RedisCluster, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    """Cluster (reads routed, so replica pools and PINGs too): nothing is left either."""
    redis_cluster.reset()
    section = {
        "cluster": {"nodes": redis_cluster.seeds(), "route_by_latency": True},
        "minimum_idle_connections": 2,
    }
    cfg = {"secret": SECRET, "redis": section}
    await cancel_everywhere(cfg, redis_cluster.nodes, how, capsys)


async def cancel_everywhere(
    cfg: dict[str, Any], nodes: list[Any], how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cut after 0..1.5x the loop turns an open takes: no task, fd or connection is left."""
    baseline = await Baseline(nodes).take()
    full = await open_turns(cfg)
    await baseline.assert_back()
    cut = opened = 0
    last = full * 3 // 2
    for turns in range(0, last + 1, max(1, last // STEPS)):
        store = None
        if how == "asyncio.timeout":
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None) as timeout:
                    expire = functools.partial(timeout.reschedule, -1.0)  # in the past: now
                    canceller = asyncio.create_task(after_turns(turns, expire))
                    try:
                        store = await open_session_store(cfg)
                    finally:
                        canceller.cancel()
        else:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as scope:
                    tg.start_soon(after_turns, turns, scope.cancel)
                    store = await open_session_store(cfg)
                tg.cancel_scope.cancel()
        if store is None:
            cut += 1
        else:
            opened += 1
            await store.aclose()
            store = None  # a closed store still counts as a live object
        if turns % 50 == 0:
            await baseline.assert_back(within=5.0)
    # A leaked pool keeps its connections and maintenance task forever: it shows here.
    await baseline.assert_back(within=5.0)
    with capsys.disabled():
        print(
            f"\n[cancel open] {how}: an open takes {full} loop turns; {cut} opens cut, "
            f"{opened} completed; nothing left behind"
        )
    assert cut >= STEPS // 10
    assert opened > 0
