"""The store on a real Redis Cluster (3 masters, 3 replicas): configuration, routing, redirects.

What the behavioural suite (``backend`` = ``cluster``) cannot show: the options that are wrong
with a cluster, where sessions land, and what the store does while the cluster changes under
it — a slot migrated (``MOVED``, then ``ASK`` and ``TRYAGAIN`` half-way), every node's script
cache emptied (``NOSCRIPT``), a master killed, a redirect loop, reads routed to replicas.
Failures under continuous load are the chaos suite's (``tests/chaos``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import attrs
import pytest

from redis_session import (
    ConfigError,
    SessionStore,
    StoreUnavailable,
    UsageError,
    load_config,
    open_session_store,
)
from redis_session._ids import key_slot
from redis_session._slots import SlotMap, parse_nodes
from redis_session._wire import CLIENT_NAME

from .cluster_servers import RedisCluster, _owned_ranges
from .servers import RedisProcess, free_port

pytestmark = pytest.mark.anyio

SECRET = "cluster tests: a secret long enough to be taken seriously"


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    """The session's cluster, reset before the test (and after, for a test that broke it)."""
    redis_cluster.reset()
    yield redis_cluster
    redis_cluster.reset()


def config(cluster: RedisCluster, **cluster_options: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"nodes": cluster.seeds(), **cluster_options}
    return {"secret": SECRET, "redis": {"cluster": section, "timeout": "5s"}}


def key_of(store: SessionStore[Any], session_id: str) -> bytes:
    ids = store._ids
    return store._keyring.redis_key(session_id, ids.prefix(session_id))


def node_id(node: RedisProcess) -> str:
    return str(node.admin().execute_command("CLUSTER", "MYID"))


def start_migration(cluster: RedisCluster, slot: int) -> tuple[RedisProcess, RedisProcess]:
    """Mark ``slot`` migrating from its master to another one; return (source, target)."""
    source = cluster.master_of_slot(slot)
    target = next(m for m in cluster.masters() if m is not source)
    target.admin().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
    source.admin().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
    return source, target


def move_keys(source: RedisProcess, target: RedisProcess, keys: list[bytes]) -> None:
    source.admin().execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)


def finish_migration(cluster: RedisCluster, slot: int, target: RedisProcess) -> None:
    """Give ``slot`` to ``target`` on every master (what ``redis-cli --cluster`` does last)."""
    target_id = node_id(target)
    for node in [target, *(m for m in cluster.masters() if m is not target)]:
        node.admin().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def migrate_slot(cluster: RedisCluster, slot: int) -> RedisProcess:
    """Move ``slot`` and every key in it to another master; return that master."""
    source, target = start_migration(cluster, slot)
    keys = source.admin().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    if keys:
        move_keys(source, target, [k if isinstance(k, bytes) else k.encode() for k in keys])
    finish_migration(cluster, slot, target)
    return target


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redis", "path", "words"),
    [
        (
            {"cluster": {"nodes": [{"host": "h"}]}, "database_index": 2},
            "session.redis.database_index",
            "database 0 only",
        ),
        (
            {
                "cluster": {"nodes": [{"host": "h"}]},
                "high_availability": {"sentinel_name": "m", "nodes": [{"host": "s"}]},
            },
            "session.redis.cluster",
            "cannot be used with high_availability",
        ),
        ({"cluster": {"nodes": []}}, "session.redis.host", "unless cluster.nodes"),
        ({"host": "/run/redis.sock", "cluster": {}}, "session.redis.host", "not a socket"),
        (
            {"cluster": {"nodes": [{"host": "h"}], "max_redirects": 0}},
            "session.redis.cluster.max_redirects",
            "at least 1",
        ),
        (
            {"cluster": {"nodes": [{"host": "h", "port": 0}]}},
            "session.redis.cluster.nodes[0].port",
            "",
        ),
        ({"cluster": {"nodes": [{"host": "h", "prot": 1}]}}, "session.redis.cluster.nodes[0]", ""),
    ],
)
def test_options_that_do_not_fit_a_cluster_are_named(
    redis: dict[str, Any], path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"secret": SECRET, "redis": redis})
    text = str(info.value)
    assert path in text
    assert words in text


def test_a_cluster_section_loads_with_its_defaults() -> None:
    cfg = load_config({"secret": SECRET, "redis": {"host": "10.0.0.1", "cluster": {}}})
    assert cfg.redis is not None
    cluster = cfg.redis.cluster
    assert cluster is not None
    assert cluster.nodes == ()
    assert (cluster.route_by_latency, cluster.route_randomly, cluster.max_redirects) == (
        False,
        False,
        5,
    )


async def test_a_server_without_cluster_support_is_named(redis: RedisProcess) -> None:
    cfg = {
        "secret": SECRET,
        "redis": {"cluster": {"nodes": [{"host": redis.host, "port": redis.port}]}},
    }
    cfg["redis"].update(
        {k: v for k, v in redis.redis_section().items() if k not in ("host", "port")}
    )
    with pytest.raises(StoreUnavailable, match="cluster support disabled") as info:
        await open_session_store(cfg)
    assert "session.redis.cluster" in str(info.value)


async def test_no_reachable_seed_names_every_seed() -> None:
    ports = [free_port(), free_port()]
    nodes = [{"host": "127.0.0.1", "port": port} for port in ports]
    cfg = {"secret": SECRET, "redis": {"cluster": {"nodes": nodes}, "timeout": "1s"}}
    with pytest.raises(StoreUnavailable) as info:
        await open_session_store(cfg)
    for port in ports:
        assert f"127.0.0.1:{port}" in str(info.value)


# -- where sessions live --------------------------------------------------------------------------


async def test_redis_host_is_the_first_seed_and_sessions_spread_over_every_master(
    cluster: RedisCluster,
) -> None:
    first = cluster.nodes[0]
    cfg = {"secret": SECRET, "redis": {"host": first.host, "port": first.port, "cluster": {}}}
    async with open_session_store(cfg) as store:
        sessions = [await store.create({"n": n}) for n in range(300)]
        for s in sessions[:20]:
            loaded = await store.load(s.id)
            assert loaded is not None
            assert loaded.data == s.data
    masters = cluster.masters()
    counts = [m.admin().dbsize() for m in masters]
    assert sum(counts) == 300
    # Uniform slots: each master's share of the sessions is its share of the slots (a third
    # each after `--cluster create`; other tests may have moved slots since), give or take;
    # half the expected count is about five standard deviations below it.
    for master, count in zip(masters, counts, strict=True):
        owned = sum(last - first + 1 for first, last in _owned_ranges(master))
        expected = 300 * owned / 16384
        assert count > expected / 2, (counts, expected)


async def test_regenerate_keeps_the_slot_and_moves_the_data(cluster: RedisCluster) -> None:
    async with open_session_store(config(cluster)) as store:
        session = await store.create({"user": "ann"})
        new = await store.regenerate(session, remember_me=True)
        assert new.id[:3] == session.id[:3]
        assert key_slot(key_of(store, new.id)) == key_slot(key_of(store, session.id))
        assert await store.load(session.id) is None
        loaded = await store.load(new.id)
        assert loaded is not None
        assert loaded.data == {"user": "ann"}
        assert loaded.remember_me is True


async def test_an_id_with_a_made_up_tag_costs_no_round_trip(cluster: RedisCluster) -> None:
    async with open_session_store(config(cluster)) as store:
        session = await store.create({})
        for node in cluster.nodes:
            node.admin().config_resetstat()
        bogus = ["AAA" + session.id[3:], session.id[3:], session.id + "x", session.id[:-1]]
        # "AAA" is the canonical tag of its slot only by chance; skip it then.
        bogus = [b for b in bogus if not store._ids.valid(b)]
        assert bogus
        for value in bogus:
            assert await store.load(value) is None
        calls = sum(
            int(node.admin().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
            for node in cluster.nodes
        )
        assert calls == 0


# -- a cluster that changes -----------------------------------------------------------------------


async def test_a_migrated_slot_is_followed(cluster: RedisCluster) -> None:
    """After a slot moves to another master, the same store loads, saves and regenerates there."""
    async with open_session_store(config(cluster)) as store:
        session = await store.create({"n": 1})
        slot = key_slot(key_of(store, session.id))
        target = await anyio.to_thread.run_sync(migrate_slot, cluster, slot)
        assert target.admin().exists(key_of(store, session.id)) == 1
        loaded = await store.load(session.id)  # MOVED, followed
        assert loaded is not None
        loaded.data["n"] = 2
        await store.save(loaded)
        new = await store.regenerate(loaded)
        again = await store.load(new.id)
        assert again is not None
        assert again.data == {"n": 2}
        # The map was corrected: the next command goes straight to the new owner.
        assert store._provider.manager._topology.writer(slot).node == f"{target.host}:{target.port}"


async def test_a_slot_half_migrated_answers_ask_and_tryagain(cluster: RedisCluster) -> None:
    """Key moved, slot not yet: ASK is followed; a regenerate waits out TRYAGAIN, then works."""
    async with open_session_store(config(cluster)) as store:
        session = await store.create({"n": 1})
        key = key_of(store, session.id)
        slot = key_slot(key)
        source, target = start_migration(cluster, slot)
        try:
            move_keys(source, target, [key])
            loaded = await store.load(session.id)  # source: ASK; target after ASKING: found
            assert loaded is not None
            loaded.data["n"] = 2
            await store.save(loaded)  # the same, for a write
            # The target serves the key only to an ASKING connection until the slot is its own.
            pipe = target.admin().pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.hget(key, "v")
            assert pipe.execute()[1] == loaded._version.decode()
            # Two keys, one of them missing, in a slot being imported: the target answers
            # TRYAGAIN until the migration ends; the store retries within redis.timeout.
            async with anyio.create_task_group() as tg:
                results: list[Any] = []

                async def regenerate() -> None:
                    results.append(await store.regenerate(loaded))

                tg.start_soon(regenerate)
                await anyio.sleep(0.3)
                assert results == []  # still waiting out TRYAGAIN
                await anyio.to_thread.run_sync(finish_migration, cluster, slot, target)
            new = results[0]
            assert (await store.load(new.id)).data == {"n": 2}
            assert await store.load(session.id) is None
        finally:
            for node in cluster.masters():
                node.admin().execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


async def test_a_redirect_loop_ends_with_a_clear_error(cluster: RedisCluster) -> None:
    """A slot marked migrating to a node that does not import it bounces between the two."""
    async with open_session_store(config(cluster, max_redirects=3)) as store:
        session = await store.create({})
        key = key_of(store, session.id)
        slot = key_slot(key)
        source = cluster.master_of_slot(slot)
        target = next(m for m in cluster.masters() if m is not source)
        source.admin().delete(key)  # a missing key in a migrating slot: ASK to the target
        source.admin().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
        try:
            with pytest.raises(StoreUnavailable, match="max_redirects"):
                await store.load(session.id)
        finally:
            source.admin().execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


async def test_every_script_cache_emptied(cluster: RedisCluster) -> None:
    """NOSCRIPT (a promoted replica, a restarted node) is answered by sending the script."""
    async with open_session_store(config(cluster)) as store:
        sessions = [await store.create({"n": n}) for n in range(30)]
        for node in cluster.nodes:
            node.admin().script_flush()
        for s in sessions:
            loaded = await store.load(s.id)
            assert loaded is not None
            await store.save(loaded)
            await store.regenerate(loaded)


async def test_a_killed_master_is_replaced_without_reopening(cluster: RedisCluster) -> None:
    """SIGKILL a master: its replica is promoted, and the same store writes there again."""
    async with open_session_store(config(cluster, max_redirects=5)) as store:
        session = await store.create({"n": 1})
        key = key_of(store, session.id)
        victim = cluster.master_of_slot(key_slot(key))
        (heir,) = cluster.replicas_of(victim)
        cluster.wait_streaming()  # the session is on the replica before the kill
        victim.kill()
        # A bound so a broken failover fails the test instead of hanging it; not a speed test.
        give_up = time.monotonic() + 60
        while True:
            try:
                loaded = await store.load(session.id)
                break
            except StoreUnavailable:
                assert time.monotonic() < give_up, "no replica was promoted"
                await anyio.sleep(0.2)
        assert loaded is not None
        loaded.data["n"] = 2
        await store.save(loaded)
        assert (await store.load(session.id)).data == {"n": 2}
        # Asked of the heir itself: a survivor asked first may not know of the failover yet.
        assert cluster.serves(heir, key_slot(key))
        stats = store.statistics()
        assert any(n.node == f"{heir.host}:{heir.port}" for n in stats.nodes)


async def test_a_hung_master_is_replaced_without_reopening(cluster: RedisCluster) -> None:
    """SIGSTOP a master past cluster-node-timeout: calls fail in time, then go to its successor."""
    cfg = config(cluster)
    cfg["redis"]["timeout"] = "1s"
    async with open_session_store(cfg) as store:
        session = await store.create({"n": 1})
        key = key_of(store, session.id)
        victim = cluster.master_of_slot(key_slot(key))
        cluster.wait_streaming()
        victim.pause()
        try:
            give_up = time.monotonic() + 60
            failures = 0
            while True:
                try:
                    loaded = await store.load(session.id)
                    break
                except StoreUnavailable:
                    failures += 1
                    assert time.monotonic() < give_up, "the hung master was never replaced"
            assert loaded is not None
            loaded.data["n"] = 2
            await store.save(loaded)
            assert (await store.load(session.id)).data == {"n": 2}
            assert failures >= 1  # it was hung for over a second: some calls failed, in time
        finally:
            victim.resume()


def raw_reply(node: RedisProcess, *command: str) -> Any:
    """``command``'s reply as the server sent it (no redis-py response callback)."""
    client = node.admin()
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command(*command)
        return conn.read_response()
    finally:
        client.connection_pool.release(conn)


def picture(node: RedisProcess) -> SlotMap:
    """``node``'s picture of the cluster: its ``CLUSTER SHARDS`` with its ``CLUSTER NODES``."""
    facts = parse_nodes(raw_reply(node, "CLUSTER", "NODES"))
    return SlotMap.from_shards(
        raw_reply(node, "CLUSTER", "SHARDS"), origin_host=node.host, facts=facts
    )


def wait_all_agree(cluster: RedisCluster, heir: RedisProcess, slot: int) -> None:
    """Wait until every running node's CLUSTER SLOTS names ``heir`` for ``slot``."""
    give_up = time.monotonic() + 30  # a bound, not a speed test
    for node in cluster.nodes:
        if node.paused or not node.alive():
            continue
        while True:
            owners = [
                int(master[1])
                for first, last, master, *_ in raw_reply(node, "CLUSTER", "SLOTS")
                if int(first) <= slot <= int(last)
            ]
            if owners == [heir.port]:
                break
            assert time.monotonic() < give_up, f"{node.port} never named {heir.port}: {owners}"
            time.sleep(0.02)


@pytest.mark.parametrize("fault", ["kill", "stop"])
async def test_a_failed_master_is_never_routed_to_once_replaced(
    cluster: RedisCluster, fault: str
) -> None:
    """After a failover the map routes to the promoted replica, on Valkey as on Redis.

    Valkey 8.1 lists the failed old master first in its shard, as a "master" with health
    ``fail``: the map used to route to it (a store opened after the failover could not reach
    those slots until the old master came back). The old master's own picture from before
    the fault, merged with a survivor's, loses by its older config epoch.
    """
    async with open_session_store(config(cluster)) as before:
        session = await before.create({"n": 1})
        slot = key_slot(key_of(before, session.id))
        victim = cluster.master_of_slot(slot)
        (heir,) = cluster.replicas_of(victim)
        stale = picture(victim)  # what an old master back from a pause would still say
        survivor = next(m for m in cluster.masters() if m is not victim)
        cluster.wait_streaming()
        if fault == "kill":
            victim.kill()
        else:
            victim.pause()
        try:
            cluster.wait_promoted(heir)
            wait_all_agree(cluster, heir, slot)
            fresh = picture(survivor)
            for order in ([stale, fresh], [fresh, stale]):
                owner = SlotMap.newest(order).master_for(slot)
                assert owner is not None
                assert owner.port == heir.port, f"{owner.port} claims slot {slot}"
            heir_label = f"{heir.host}:{heir.port}"
            # A store opened now surveys the seeds, the failed master among them.
            async with open_session_store(config(cluster)) as after:
                assert after._provider.manager._topology.writer(slot).node == heir_label
                loaded = await after.load(session.id)
                assert loaded is not None
                assert loaded.data == {"n": 1}
            if fault == "kill":
                # The store that knew the old master finds the heir by itself (connection
                # refused, then surveys), within one call's timeout.
                assert (await before.load(session.id)) is not None
                assert before._provider.manager._topology.writer(slot).node == heir_label
        finally:
            if fault != "kill":
                victim.resume()


async def test_a_node_that_leaves_the_map_loses_its_pool_and_one_that_joins_gets_one(
    cluster: RedisCluster,
) -> None:
    """The map a survey installs decides the pools: a node it no longer names is closed.

    A node cannot leave the test cluster and come back within a test (``CLUSTER FORGET`` bans
    it for a minute), so the first map is the servers' own reply with one replica taken out.
    """
    async with open_session_store(config(cluster, route_randomly=True)) as store:
        topology = store._provider.manager._topology
        sessions = [await store.create({"n": n}) for n in range(30)]
        for s in sessions:
            await store.load(s.id)  # reads routed: replica pools are open
        first = cluster.masters()[0]
        reply = first.admin().execute_command("CLUSTER", "SHARDS")
        real = SlotMap.from_shards(reply, origin_host=first.host)
        shard = next(sh for sh in real.shards if sh.replicas)
        gone = shard.replicas[0]
        pool = topology._pools[(gone.host, gone.port)]
        fewer = [attrs.evolve(sh, replicas=()) if sh is shard else sh for sh in real.shards]
        topology._install(SlotMap.from_parts(fewer))
        assert (gone.host, gone.port) not in topology._pools
        with anyio.fail_after(10):
            while pool.statistics().open:  # noqa: ASYNC110 - polled, no event to wait on
                await anyio.sleep(0.01)  # closed in the background
        for s in sessions:
            assert (await store.load(s.id)) is not None
        # The next survey reads the real map again: the replica gets a new pool.
        assert await topology._surveyed(asyncio.get_running_loop().time() + 5)
        assert (gone.host, gone.port) in topology._pools
        assert topology._pools[(gone.host, gone.port)] is not pool


# -- routing and resources ------------------------------------------------------------------------


@pytest.mark.parametrize("routing", ["route_randomly", "route_by_latency"])
async def test_reads_go_to_replicas_too(cluster: RedisCluster, routing: str) -> None:
    async with open_session_store(config(cluster, **{routing: True})) as store:
        sessions = [await store.create({"n": n}) for n in range(60)]
        cluster.wait_streaming()
        for node in cluster.nodes:
            node.admin().config_resetstat()
        for _ in range(10):
            for s in sessions:
                loaded = await store.load(s.id)
                assert loaded is not None
                assert loaded.data == s.data
    masters = {m.port for m in cluster.masters()}
    replica_reads = sum(
        int(node.admin().info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))
        for node in cluster.nodes
        if node.port not in masters
    )
    assert replica_reads > 0


async def test_pool_limits_apply_per_node_and_close_leaves_nothing(cluster: RedisCluster) -> None:
    cfg = config(cluster)
    cfg["redis"]["maximum_active_connections"] = 2
    async with open_session_store(cfg) as store:
        sessions = [await store.create({"n": n}) for n in range(40)]
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                for s in sessions:
                    tg.start_soon(store.load, s.id)
        stats = store.statistics()
        assert all(node.open <= 2 for node in stats.nodes), stats.nodes
        assert sum(node.open for node in stats.nodes) >= 3  # every master was used
    for node in cluster.nodes:
        assert node.our_clients(CLIENT_NAME) == []


# -- event loops ----------------------------------------------------------------------------------


def test_a_cluster_store_belongs_to_one_live_loop(cluster: RedisCluster) -> None:
    """Another live loop is refused with UsageError; later asyncio.run calls reuse the store."""
    cfg = config(cluster, route_randomly=True)
    opened, finish = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    def owner() -> None:
        async def main() -> None:
            store = await open_session_store(cfg)
            box["store"] = store
            box["id"] = (await store.create({"owner": True})).id
            opened.set()
            while not finish.is_set():  # noqa: ASYNC110 - a threading.Event
                await asyncio.sleep(0.01)
            assert (await store.load(box["id"])) is not None

        asyncio.run(main())

    thread = threading.Thread(target=owner, name="owner-thread")
    thread.start()
    try:
        assert opened.wait(10)
        store = box["store"]

        async def intruder() -> str:
            async with asyncio.timeout(5):  # a call from the wrong loop must not hang
                with pytest.raises(UsageError) as info:
                    await store.load(box["id"])
            return str(info.value)

        message = asyncio.run(intruder())
    finally:
        finish.set()
        thread.join(10)
    assert not thread.is_alive()
    assert "'owner-thread'" in message

    # The owner's loop has closed: the next asyncio.run takes the store over, map and all.
    async def later() -> None:
        loaded = await store.load(box["id"])
        assert loaded is not None
        assert loaded.data == {"owner": True}
        await store.save(loaded)

    asyncio.run(later())
    asyncio.run(later())
    asyncio.run(store.aclose())
    for node in cluster.nodes:
        assert node.our_clients(CLIENT_NAME) == []
