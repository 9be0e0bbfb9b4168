"""Read routing under Sentinel (``route_by_latency``, ``route_randomly``) against real servers.

go-redis semantics, which Authelia accepts but ignores: read-only commands may go to a replica
(the lowest-latency node, or a random one, among master and healthy replicas); writes always go
to the master. ``INFO commandstats`` on each node is the ground truth for where commands ran.
"""

from __future__ import annotations

import threading

import anyio
import anyio.to_thread
import pytest

from .servers import SentinelCluster
from .test_sentinel import config, eventually, label, opened, served_by

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("flag", ["route_randomly", "route_by_latency"])
async def test_read_only_commands_reach_the_replica_and_writes_never_do(
    sentinel_cluster: SentinelCluster, flag: str
) -> None:
    """With read routing, GETs land on the replica too; writes only ever on the master.

    A replica counts the writes it replicates under their own names, so the writes here are
    ``INCRBYFLOAT``, which a master propagates as ``SET``: any INCRBYFLOAT on the replica was
    sent there by us.
    """
    cluster = sentinel_cluster
    await anyio.to_thread.run_sync(cluster.wait_streaming)
    async with opened(config(cluster, ha={flag: True})) as manager:
        for proc in (cluster.master, cluster.replica):
            await anyio.to_thread.run_sync(proc.admin().config_resetstat)
        for i in range(50):
            await manager.execute("INCRBYFLOAT", f"r{i % 5}", "1.5")
        for i in range(200):
            await manager.execute("GET", f"r{i % 5}", read_only=True)
        replica = await anyio.to_thread.run_sync(cluster.replica.admin().info, "commandstats")
        errors = await anyio.to_thread.run_sync(cluster.replica.admin().info, "errorstats")
        master = await anyio.to_thread.run_sync(cluster.master.admin().info, "commandstats")
    replica_gets = replica.get("cmdstat_get", {}).get("calls", 0)
    master_gets = master.get("cmdstat_get", {}).get("calls", 0)
    assert replica_gets > 0
    assert master_gets + replica_gets >= 200
    assert "cmdstat_incrbyfloat" not in replica
    assert "errorstat_READONLY" not in errors
    assert master["cmdstat_incrbyfloat"]["calls"] == 50


async def test_without_routing_reads_stay_on_the_master(sentinel_cluster: SentinelCluster) -> None:
    """Routing off (Authelia's default): read-only commands go to the master like writes."""
    cluster = sentinel_cluster
    async with opened(config(cluster)) as manager:
        await anyio.to_thread.run_sync(cluster.replica.admin().config_resetstat)
        for _ in range(50):
            await manager.execute("GET", "x", read_only=True)
        replica = await anyio.to_thread.run_sync(cluster.replica.admin().info, "commandstats")
        assert manager.statistics().nodes[0].node == label(cluster.master)
        assert len(manager.statistics().nodes) == 1
    assert "cmdstat_get" not in replica


async def test_replicas_follow_a_failover(sentinel_cluster: SentinelCluster) -> None:
    """After a failover the promoted replica is the writer and no longer routed to as a replica."""
    cluster = sentinel_cluster
    async with opened(config(cluster, ha={"route_randomly": True})) as manager:
        assert sorted(n.node for n in manager.statistics().nodes) == sorted(
            label(p) for p in (cluster.master, cluster.replica)
        )
        await anyio.to_thread.run_sync(
            cluster.sentinels[0].admin().execute_command, "SENTINEL", "FAILOVER", cluster.name
        )

        async def moved() -> bool:
            return await served_by(manager) == cluster.replica.port

        assert await eventually(moved, within=5.0)

        async def one_pool_for_the_new_master() -> bool:
            nodes = [n.node for n in manager.statistics().nodes]
            return nodes.count(label(cluster.replica)) == 1 and label(cluster.master) not in nodes

        # The old master stays out until the sentinels report it as a healthy replica.
        assert await eventually(one_pool_for_the_new_master, within=2.0)
        await anyio.to_thread.run_sync(cluster.replica.admin().config_resetstat)
        for _ in range(50):
            await manager.execute("GET", "x", read_only=True)
        stats = await anyio.to_thread.run_sync(cluster.replica.admin().info, "commandstats")
    assert stats["cmdstat_get"]["calls"] == 50


async def test_route_by_latency_avoids_a_slow_replica(sentinel_cluster: SentinelCluster) -> None:
    """A replica whose PINGs are slow (it keeps sleeping) gets no reads with route_by_latency."""
    cluster = sentinel_cluster
    stop = threading.Event()

    def keep_replica_busy() -> None:
        admin = cluster.replica.admin()  # a pooled client: safe to share between threads
        while not stop.is_set():
            admin.execute_command("DEBUG", "SLEEP", "0.02")

    cfg = config(cluster, ha={"route_by_latency": True})
    async with opened(cfg) as manager, anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, keep_replica_busy)
        try:
            # Two rounds of latency PINGs (one a second) see the replica's sleeps.
            await anyio.sleep(2.2)
            await anyio.to_thread.run_sync(cluster.replica.admin().config_resetstat)
            for _ in range(100):
                await manager.execute("GET", "x", read_only=True)
            stats = await anyio.to_thread.run_sync(cluster.replica.admin().info, "commandstats")
        finally:
            stop.set()
    assert "cmdstat_get" not in stats
