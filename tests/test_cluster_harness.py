"""The cluster harness itself: what ``tests/cluster_servers.py`` promises, checked on servers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from .cluster_servers import RedisCluster, start_cluster
from .servers import RESERVED_PORTS, RedisProcess, wait_until


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
    # Every master serves slots. Not "about a third each": the cluster is shared by the whole
    # session, and resharding tests that ran before may have moved thousands of slots.
    assert all(owned_slots(m.port, cluster) > 0 for m in masters)
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


def keys_in(slot: int, cluster: RedisCluster, count: int) -> list[str]:
    """``count`` keys that hash to ``slot`` (the tag found by asking the server)."""
    admin = cluster.nodes[0].admin()
    for i in range(200_000):
        tag = f"t{i}"
        if admin.execute_command("CLUSTER", "KEYSLOT", tag) == slot:
            return [f"harness-check:{{{tag}}}:{n}" for n in range(count)]
    raise LookupError(slot)


def test_migrate_slot_moves_every_key_with_ask_then_moved(cluster: RedisCluster) -> None:
    """migrate_slot: ASK while the slot moves, MOVED after; every key on the target, none open."""
    slot = 4242
    source = cluster.master_of_slot(slot)
    target = next(m for m in cluster.masters() if m is not source)
    keys = keys_in(slot, cluster, 5)
    for key in keys:
        source.admin().set(key, key)
    asks: list[redis.exceptions.AskError] = []

    def between(node: RedisProcess) -> None:
        # The first key has left: its owner still serves the slot, but sends a reader on.
        try:
            node.admin().get(keys[0])
        except redis.exceptions.AskError as exc:
            asks.append(exc)

    moves = cluster.migrate_slot(slot, target, batch=2, between=between)
    assert (moves.keys, moves.batches) == (5, 3)
    assert asks
    assert {(a.slot_id, a.node_addr) for a in asks} == {(slot, target.address)}
    assert cluster.master_of_slot(slot) is target
    assert [target.admin().get(k) for k in keys] == keys
    with pytest.raises(redis.exceptions.MovedError) as moved:
        source.admin().get(keys[0])
    assert (moved.value.slot_id, moved.value.node_addr) == (slot, target.address)
    stats = cluster.errorstats()
    assert stats["ASK"] >= len(asks)
    assert stats["MOVED"] >= 1
    cluster.wait_ready()  # no slot left open, replicas follow
    cluster.migrate_slot(slot, source)  # and back, for the next test


def test_an_unfinished_migration_is_closed_by_reset(cluster: RedisCluster) -> None:
    """A slot left MIGRATING/IMPORTING is a problem; reset() makes it stable again."""
    slot = 777
    source = cluster.master_of_slot(slot)
    target = next(m for m in cluster.masters() if m is not source)
    target.admin().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(source))
    assert any("open slot" in p for p in cluster.problems())
    cluster.reset()
    assert cluster.problems() == []
    assert cluster.master_of_slot(slot) is source


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_a_master_fails_over_and_rejoins_as_replica(cluster: RedisCluster, fault: str) -> None:
    """A master killed (or hung): its replica promotes itself; rejoin() makes it its replica."""
    victim = cluster.masters()[0]
    (replica,) = cluster.replicas_of(victim)
    began = time.monotonic()
    if fault == "kill":
        victim.kill()
    else:
        victim.pause()
    try:
        assert cluster.wait_promoted(replica) > began
    finally:
        new_master = cluster.rejoin(victim)
    assert new_master is replica
    assert cluster.role(victim) == "slave"
    assert cluster.problems() == []


def test_kill_clients_leaves_the_harness_link(cluster: RedisCluster) -> None:
    """kill_clients: every normal connection goes but the harness's own admin link."""
    node = cluster.masters()[0]
    other = redis.Redis(host=node.host, port=node.port, protocol=2)
    try:
        other_id = other.client_id()
        admin_id = node.admin().client_id()
        assert cluster.kill_clients(node) >= 1
        ids = {int(c["id"]) for c in node.admin().client_list()}
        assert admin_id in ids
        assert other_id not in ids
    finally:
        other.close()
