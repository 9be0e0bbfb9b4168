"""Adversarial review of the merged cluster survey (epochs, answers merged slot by slot).

Each test was a finding against the survey of ``redis_session/_cluster.py`` as merged after
a93eaed, reproduced with real servers (the 3+3 loopback cluster of ``tests/cluster_servers.py``
and, where a test needs one, a lone cluster node of its own). No mock stands in for Redis; no
assertion is about speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_session import open_session_store

from .cluster_servers import RedisCluster, _start_node
from .servers import RedisProcess

pytestmark = pytest.mark.anyio

SECRET = "cluster survey review: a secret long enough to be taken seriously"


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    """The session's cluster, reset before the test and after it."""
    redis_cluster.reset()
    yield redis_cluster
    redis_cluster.reset()


@pytest.fixture
def stranger(tmp_path: Path) -> Iterator[RedisProcess]:
    """A cluster of one node, not the test cluster: slots 0-99 only, config epoch 1000.

    Its epoch is above any the 3+3 cluster reaches in a test run, so on epochs alone its
    claims would win every slot it names.
    """
    node = _start_node(tmp_path, [])
    try:
        admin = node.admin()
        admin.execute_command("CLUSTER", "SET-CONFIG-EPOCH", 1000)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 99)
        yield node
    finally:
        node.stop()


def config(cluster: RedisCluster, *extra: RedisProcess) -> dict[str, Any]:
    seeds = [*cluster.seeds(), *({"host": n.host, "port": n.port} for n in extra)]
    return {"secret": SECRET, "redis": {"cluster": {"nodes": seeds}, "timeout": "5s"}}


async def test_a_seed_of_another_cluster_is_not_merged_into_the_map(
    cluster: RedisCluster, stranger: RedisProcess
) -> None:
    """A seed that belongs to another cluster (a stale or mistyped entry) gets no slot.

    The survey merges the nodes' answers slot by slot, the newest config epoch winning; the
    stranger's answer shares no node with the others, yet its epoch 1000 won slots 0-99, so
    the store wrote the sessions of those slots to another cluster, silently. Before the
    merge, its incomplete answer lost to a complete one.
    """
    ours = {f"{n.host}:{n.port}" for n in cluster.nodes}
    async with open_session_store(config(cluster, stranger)) as store:
        topology = store._provider.manager._topology
        for slot in (0, 50, 99, 100, 16383):
            assert topology.writer(slot).node in ours, f"slot {slot}"
        # A refresh (every survey from now on asks the masters of the map) keeps it so.
        assert await topology._surveyed(asyncio.get_running_loop().time() + 5)
        assert topology.writer(0).node in ours
        assert f"{stranger.host}:{stranger.port}" not in {p.node for p in topology.pools()}
    assert stranger.admin().dbsize() == 0
