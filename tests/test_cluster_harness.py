"""The cluster harness itself: what ``tests/cluster_servers.py`` promises, checked on servers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from .cluster_servers import RedisCluster, start_cluster
from .servers import RESERVED_PORTS, wait_until


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, emptied and ready."""
    redis_cluster.reset()
    return redis_cluster


def owned_slots(node_port: int, cluster: RedisCluster) -> int:
    """Slots ``node_port`` serves, by the cluster's own ``CLUSTER SHARDS``."""
    admin = cluster.nodes[0].admin()
    total = 0
    for shard in admin.execute_command("CLUSTER", "SHARDS"):
        fields = dict(zip(shard[::2], shard[1::2], strict=True))
        nodes = [dict(zip(n[::2], n[1::2], strict=True)) for n in fields["nodes"]]
        master = [n for n in nodes if n["role"] == "master"]
        if master and master[0]["port"] == node_port:
            bounds = fields["slots"]
            total += sum(b - a + 1 for a, b in zip(bounds[::2], bounds[1::2], strict=True))
    return total


def test_the_cluster_forms(cluster: RedisCluster) -> None:
    """Six nodes on loopback, off the reserved ports, all reporting cluster_state:ok; no SELECT."""
    assert cluster.problems() == []
    assert len(cluster.nodes) == 6
    for node in cluster.nodes:
        assert node.host == "127.0.0.1"
        assert node.port not in RESERVED_PORTS
        info = node.admin().execute_command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_known_nodes:6" in info
    # Cluster mode has database 0 only: session.redis.database_index must stay 0 there.
    with pytest.raises(redis.ResponseError, match="not allowed in cluster mode"):
        cluster.nodes[0].admin().execute_command("SELECT", 1)


def test_three_masters_hold_every_slot_each_with_one_replica(cluster: RedisCluster) -> None:
    """Three masters split the 16384 slots; each has its own replica, distinct from the others."""
    masters = cluster.masters()
    assert len(masters) == 3
    assert sum(owned_slots(m.port, cluster) for m in masters) == 16384
    assert all(owned_slots(m.port, cluster) > 5000 for m in masters)
    replicas = [cluster.replicas_of(m) for m in masters]
    assert [len(r) for r in replicas] == [1, 1, 1]
    assert {r[0].port for r in replicas} | {m.port for m in masters} == {
        n.port for n in cluster.nodes
    }


def test_a_write_to_a_master_is_readable_on_its_replica(cluster: RedisCluster) -> None:
    """WAIT confirms the replica has the write, and a READONLY connection there reads it."""
    master = cluster.master_of_slot(0)
    key = "{06S}harness-check"  # the hash tag 06S hashes to slot 0
    assert master.admin().execute_command("CLUSTER", "KEYSLOT", key) == 0
    master.admin().set(key, "written")
    assert master.admin().execute_command("WAIT", 1, 5000) == 1
    (replica,) = cluster.replicas_of(master)
    reader = redis.Redis(
        host=replica.host, port=replica.port, protocol=2, single_connection_client=True
    )
    try:
        with pytest.raises(redis.exceptions.MovedError):
            reader.get(key)  # a replica redirects reads until the connection says READONLY
        reader.execute_command("READONLY")
        assert reader.get(key) == b"written"
    finally:
        reader.close()


def test_failover_and_teardown(tmp_path: Path) -> None:
    """CLUSTER FAILOVER on a replica promotes it; stopping the cluster leaves no process behind."""
    own = start_cluster(tmp_path)
    try:
        master = own.master_of_slot(0)
        (replica,) = own.replicas_of(master)
        replica.admin().execute_command("CLUSTER", "FAILOVER")
        wait_until(lambda: own.master_of_slot(0) is replica, timeout=15)
        wait_until(lambda: own.replicas_of(replica) == [master], timeout=15)
        own.wait_ready()
        assert own.role(replica) == "master"
        assert own.role(master) == "slave"
    finally:
        pids = [n.pid for n in own.nodes]
        own.stop()
    assert all(pid > 0 for pid in pids)
    deadline = time.monotonic() + 5
    for pid in pids:
        # Neither the server nor any child of its process group (an RDB fork) is left.
        while True:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"process group {pid} still alive"
            time.sleep(0.05)
