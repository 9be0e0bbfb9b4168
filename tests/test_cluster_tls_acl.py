"""The store on a Redis Cluster that speaks only TLS and admits only an ACL user (issue 12:
"TLS, username/password and both pool limits apply per node").

The cluster (``secure_redis_cluster``): three masters and three replicas, every node TLS-only
(``port 0``, ``tls-cluster yes``, ``tls-replication yes``), the certificate valid for
``myredis.example.com`` only (so every connection must send ``tls.server_name`` and verify the
chain against ``tls.ca_file``), the default user off, and the store's user ``app`` allowed its
own keys and the data, script and connection commands only (``conftest.CLUSTER_APP_RULE``).

What is checked on the servers, not only in the store: ``CLIENT LIST`` on each node shows our
connections logged in as ``app`` on the node's TLS port (the only port it listens on), with the
``r`` (READONLY) flag on replicas that serve reads; connections to nodes the store meets later
(a slot's new owner, a promoted replica) are made the same way; nothing is left after close.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from redis_session import (
    ConfigError,
    SessionStore,
    StoreUnavailable,
    open_session_store,
)
from redis_session._ids import key_slot
from redis_session._wire import CLIENT_NAME, TLSConnection

from .cluster_servers import RedisCluster
from .conftest import APP_PASSWORD, APP_USER
from .servers import ADMIN_CLIENT_NAME, RedisProcess, TLSFiles

pytestmark = pytest.mark.anyio

SECRET = "cluster tls acl tests: a secret long enough to be taken seriously"
WRONG_PASSWORD = "not-the-app-pw-4f1e"
#: redis.timeout of the tests that expect the open to fail.
FAIL_TIMEOUT = 2
#: What a failing open may take beyond redis.timeout on a loaded 2-core machine (TLS
#: handshakes, the last try in flight); a bound against hanging, not a speed measurement.
SLACK = 3.0


@pytest.fixture
def cluster(secure_redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    """The session's TLS + ACL cluster, reset before the test (and after one that broke it)."""
    secure_redis_cluster.reset()
    yield secure_redis_cluster
    secure_redis_cluster.reset()


def config(cluster: RedisCluster, redis: dict[str, Any] | None = None, **options: Any) -> Any:
    """The session config that reaches ``cluster``; ``redis`` overrides ``session.redis`` keys,
    ``options`` go to ``session.redis.cluster``."""
    section = cluster.redis_section(**options)
    section["timeout"] = "5s"
    section.update(redis or {})
    return {"secret": SECRET, "redis": section}


def key_of(store: SessionStore[Any], session_id: str) -> bytes:
    return store._keyring.redis_key(session_id, store._ids.prefix(session_id))


def ours(node: RedisProcess) -> list[dict[str, str]]:
    """The store's connections on ``node``, as the server lists them."""
    return node.our_clients(CLIENT_NAME)


def assert_nothing_left(cluster: RedisCluster) -> None:
    """No connection of the store on any running node, named or not (a connection that failed
    its login never got its name): every client but the harness's and replication links.

    A socket the client closed may still be listed for a moment: polled, within a bound.
    """

    def left() -> list[tuple[int | None, dict[str, str]]]:
        return [
            (node.tls_port, client)
            for node in cluster.nodes
            if node.alive()
            for client in node.admin().client_list()
            if client["name"] != ADMIN_CLIENT_NAME and not {"S", "M"} & set(client["flags"])
        ]

    deadline = time.monotonic() + 2
    while (found := left()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert found == []


def assert_tls_as_app(node: RedisProcess, clients: list[dict[str, str]]) -> None:
    """Every one of ``clients`` is logged in as the app user, on the node's TLS port.

    The node has no plaintext listener (``port 0``), so arriving on its TLS port means TLS;
    Redis 7.0 has no per-client TLS field in ``CLIENT LIST`` or ``CLIENT INFO``.
    """
    assert node.admin().config_get("port") == {"port": "0"}
    assert node.tls_port is not None
    for client in clients:
        assert client["user"] == APP_USER, client
        assert client["laddr"].rpartition(":")[2] == str(node.tls_port), client


def forget_auth_failures(cluster: RedisCluster) -> None:
    for node in cluster.nodes:
        node.admin().acl_log_reset()


def auth_failures(cluster: RedisCluster) -> int:
    """Logins as the app user the nodes refused since :func:`forget_auth_failures`
    (``ACL LOG``: Redis 7.0 has no ``acl_access_denied_auth`` in ``INFO``)."""
    return sum(
        int(entry["count"])
        for node in cluster.nodes
        for entry in node.admin().acl_log()
        if entry["reason"] == "auth" and entry["username"] == APP_USER
    )


# -- the harness ----------------------------------------------------------------------------------


def test_the_cluster_is_tls_only_and_admits_the_app_user_only(cluster: RedisCluster) -> None:
    """What the other tests rely on: no plaintext anywhere, replication logged in, users limited."""
    assert cluster.tls is not None
    for node in cluster.nodes:
        assert node.port == 0
        conf = node.admin().config_get("tls-*")
        assert (conf["tls-cluster"], conf["tls-replication"]) == ("yes", "yes")
        assert "off" in node.admin().acl_getuser("default")["flags"]
    for master in cluster.masters():
        (replica,) = cluster.replicas_of(master)
        links = [c for c in master.admin().client_list() if "S" in c["flags"]]
        assert [c["user"] for c in links] == ["replicator"]
        assert replica.admin().info("replication")["master_link_status"] == "up"
    section = cluster.redis_section()
    assert section["username"] == APP_USER
    assert section["tls"]["server_name"] == "myredis.example.com"
    assert [n["port"] for n in section["cluster"]["nodes"]] == [n.tls_port for n in cluster.nodes]
    # The app user may not administer the cluster nor touch keys outside its namespace.
    node = cluster.nodes[0]
    assert node.admin().acl_dryrun(APP_USER, "FLUSHALL") != "OK"
    assert node.admin().acl_dryrun(APP_USER, "CLUSTER", "SETSLOT", "0", "STABLE") != "OK"
    assert node.admin().acl_dryrun(APP_USER, "GET", "other:key") != "OK"
    assert node.admin().acl_dryrun(APP_USER, "CLUSTER", "SHARDS") == "OK"


# -- sessions on every master ---------------------------------------------------------------------


async def test_sessions_on_every_master_over_tls_as_the_app_user(cluster: RedisCluster) -> None:
    """Create, load, save, regenerate and delete on all three masters; server-side: every
    connection is TLS and the app user, both pool limits hold per node, none is left after."""
    cfg = config(cluster, {"maximum_active_connections": 3, "minimum_idle_connections": 2})
    masters = cluster.masters()
    async with open_session_store(cfg) as store:
        for pool in store._provider.manager._topology.pools():
            conn = pool._factory()
            assert isinstance(conn, TLSConnection)
            assert conn.username == APP_USER
        # minimum_idle_connections per master, opened with the store.
        for master in masters:
            clients = ours(master)
            assert len(clients) >= 2, (master.tls_port, clients)
            assert_tls_as_app(master, clients)
        sessions = [await store.create({"n": n}) for n in range(60)]
        counts = [m.admin().dbsize() for m in masters]
        assert all(count > 0 for count in counts), counts
        seen: dict[int, int] = {}

        async def cycle(session: Any) -> None:
            loaded = await store.load(session.id)
            assert loaded is not None
            assert loaded.data == session.data
            loaded.data["saved"] = True
            await store.save(loaded)
            new = await store.regenerate(loaded)
            assert await store.load(session.id) is None
            again = await store.load(new.id)
            assert again is not None
            assert again.data == {**session.data, "saved": True}
            await store.delete(new)
            assert await store.load(new.id) is None

        def count() -> None:
            for master in masters:
                port = master.tls_port or 0
                seen[port] = max(seen.get(port, 0), len(ours(master)))

        async def watch() -> None:
            # maximum_active_connections per node, as the servers count them, under load (in a
            # thread: the store's loop keeps running while the servers are asked).
            while True:
                await anyio.to_thread.run_sync(count)
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            async with anyio.create_task_group() as work:
                for session in sessions:
                    work.start_soon(cycle, session)
            tg.cancel_scope.cancel()
        # What is left is one tombstone per regenerate (a hash with only m): no data.
        left = [m.admin().hgetall(key) for m in masters for key in m.admin().scan_iter(count=1000)]
        assert left == [{"m": "1"}] * len(sessions)
        assert all(node.open <= 3 for node in store.statistics().nodes), store.statistics()
        assert seen
        assert all(2 <= count <= 3 for count in seen.values()), seen
        for master in masters:
            assert_tls_as_app(master, ours(master))
    assert_nothing_left(cluster)


async def test_reads_on_replicas_over_tls_send_readonly(cluster: RedisCluster) -> None:
    """``route_randomly``: replicas serve reads over TLS, as the app user, in READONLY mode."""
    async with open_session_store(config(cluster, route_randomly=True)) as store:
        sessions = [await store.create({"n": n}) for n in range(60)]
        await anyio.to_thread.run_sync(cluster.wait_streaming)
        for node in cluster.nodes:
            node.admin().config_resetstat()
        for _ in range(10):
            for s in sessions:
                loaded = await store.load(s.id)
                assert loaded is not None
                assert loaded.data == s.data
        replicas = [r for m in cluster.masters() for r in cluster.replicas_of(m)]
        assert len(replicas) == 3
        for replica in replicas:
            stats = replica.admin().info("commandstats")
            # ~100 random reads per replica: none at all would mean no routing there.
            assert int(stats.get("cmdstat_hmget", {}).get("calls", 0)) > 0, replica.tls_port
            clients = ours(replica)
            assert clients
            assert_tls_as_app(replica, clients)
            assert all("r" in c["flags"] for c in clients), clients
            # The writes went to the masters: a replica refuses them, and saw none.
            assert "cmdstat_evalsha" not in stats
    assert_nothing_left(cluster)


# -- a cluster that changes -----------------------------------------------------------------------


async def test_a_slot_moved_to_another_master_is_followed_over_tls(cluster: RedisCluster) -> None:
    """MOVED to a node whose connections were all dropped: new ones are TLS and the app user."""
    async with open_session_store(config(cluster)) as store:
        session = await store.create({"n": 1})
        key = key_of(store, session.id)
        slot = key_slot(key)
        source = cluster.master_of_slot(slot)
        target = next(m for m in cluster.masters() if m is not source)
        # MIGRATE goes over TLS too (tls-cluster), as the harness admin.
        moved = await anyio.to_thread.run_sync(
            lambda: cluster.migrate_slot(slot, target, batch=100)
        )
        assert moved.keys == 1
        assert target.admin().exists(key) == 1
        before = max((int(c["id"]) for c in ours(target)), default=0)
        target.admin().client_kill_filter(_type="normal", skipme=True)
        loaded = await store.load(session.id)  # MOVED, followed to the new owner
        assert loaded is not None
        loaded.data["n"] = 2
        await store.save(loaded)
        new = await store.regenerate(loaded)
        again = await store.load(new.id)
        assert again is not None
        assert again.data == {"n": 2}
        topology = store._provider.manager._topology
        assert topology.writer(slot).node == f"{target.host}:{target.tls_port}"
        fresh = [c for c in ours(target) if int(c["id"]) > before]
        assert fresh
        assert_tls_as_app(target, fresh)
    assert_nothing_left(cluster)


async def test_a_killed_master_is_replaced_over_tls(cluster: RedisCluster) -> None:
    """SIGKILL a master: the promoted replica is reached over TLS with the app user's login."""
    async with open_session_store(config(cluster)) as store:
        session = await store.create({"n": 1})
        key = key_of(store, session.id)
        victim = cluster.master_of_slot(key_slot(key))
        (heir,) = cluster.replicas_of(victim)
        await anyio.to_thread.run_sync(cluster.wait_streaming)
        # Whatever the store holds open to the replica goes: after the failover it must
        # connect to the new master afresh.
        cluster.kill_clients(heir)
        before = max(int(c["id"]) for c in heir.admin().client_list())
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
        again = await store.load(session.id)
        assert again is not None
        assert again.data == {"n": 2}
        # The heir's own view: another survivor may not have heard of the failover yet.
        assert await anyio.to_thread.run_sync(cluster.serves, heir, key_slot(key))
        # Connections made since the kill, to the node that was a replica before it.
        fresh = [c for c in ours(heir) if int(c["id"]) > before]
        assert fresh
        assert_tls_as_app(heir, fresh)
    assert_nothing_left(cluster)


# -- what goes wrong, named -----------------------------------------------------------------------


async def test_a_wrong_password_names_the_node_and_the_option(
    cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Every node refuses the login: the open fails in redis.timeout, naming the nodes and
    ``session.redis.password``, never the password."""
    cfg = config(cluster, {"password": WRONG_PASSWORD, "timeout": f"{FAIL_TIMEOUT}s"})
    forget_auth_failures(cluster)
    began = time.monotonic()
    with anyio.fail_after(FAIL_TIMEOUT + 2 * SLACK), pytest.raises(StoreUnavailable) as info:
        await open_session_store(cfg)
    took = time.monotonic() - began
    message = str(info.value)
    # The login reached the servers over TLS and was refused there (not a TLS failure).
    refused = auth_failures(cluster)
    assert refused > 0
    assert "invalid username-password pair" in message
    assert f"{cluster.nodes[0].host}:{cluster.nodes[0].tls_port}" in message
    assert WRONG_PASSWORD not in message
    assert WRONG_PASSWORD not in caplog.text
    assert APP_PASSWORD not in message
    assert took < FAIL_TIMEOUT + SLACK, took
    assert_nothing_left(cluster)
    # Fails today: the message names each node and the server's refusal, not the option.
    assert "session.redis.password" in message, (refused, took, message)


async def test_a_missing_ca_names_the_tls_problem(cluster: RedisCluster) -> None:
    """No ``ca_file`` (the system store does not trust the cluster's CA): the open fails in
    redis.timeout, naming a node, the untrusted certificate and ``session.redis.tls.ca_file``."""
    cfg = config(cluster, {"timeout": f"{FAIL_TIMEOUT}s"})
    del cfg["redis"]["tls"]["ca_file"]
    forget_auth_failures(cluster)
    began = time.monotonic()
    with anyio.fail_after(FAIL_TIMEOUT + 2 * SLACK), pytest.raises(StoreUnavailable) as info:
        await open_session_store(cfg)
    took = time.monotonic() - began
    message = str(info.value)
    assert f"{cluster.nodes[0].host}:{cluster.nodes[0].tls_port}" in message
    assert "certificate is not trusted" in message
    assert "session.redis.tls.ca_file" in message
    assert APP_PASSWORD not in message
    assert auth_failures(cluster) == 0  # nothing was sent before the handshake failed
    assert took < FAIL_TIMEOUT + SLACK, took
    assert_nothing_left(cluster)


async def test_a_ca_file_that_does_not_exist_is_a_config_error(
    cluster: RedisCluster, tmp_path: Path, tls_files: TLSFiles
) -> None:
    """A ``ca_file`` that is not there fails before any node is contacted, naming the option."""
    cfg = config(cluster, {"tls": {"server_name": tls_files.server_name}})
    missing = tmp_path / "missing-ca.pem"
    cfg["redis"]["tls"]["ca_file"] = str(missing)
    for node in cluster.nodes:
        node.admin().config_resetstat()
    with pytest.raises(ConfigError) as info:
        await open_session_store(cfg)
    assert [p.path for p in info.value.problems] == ["session.redis.tls.ca_file"]
    assert str(missing) in str(info.value)
    for node in cluster.nodes:
        assert int(node.admin().info("stats")["total_connections_received"]) == 0


def _nodes_denials(cluster: RedisCluster) -> int:
    """How often the app user was refused ``CLUSTER NODES``, summed over every node's ACL LOG."""
    total = 0
    for node in cluster.nodes:
        for entry in node.admin().acl_log(count=100):
            if entry.get("username") == APP_USER and entry.get("object") == "cluster|nodes":
                total += int(entry.get("count", 1))
    return total


async def test_a_user_without_cluster_nodes_is_not_asked_again(cluster: RedisCluster) -> None:
    """The app user lacks ``+cluster|nodes``: after the first refusals, surveys stop asking.

    Every refusal is an entry in the node's ACL LOG; asking in every survey would flood the
    log operators read for real denials. The map is read without epochs then.
    """
    async with open_session_store(config(cluster)) as store:
        topology = store._provider.manager._topology
        after_open = _nodes_denials(cluster)
        for _ in range(5):
            assert await topology._surveyed(anyio.current_time() + 5)
        assert _nodes_denials(cluster) == after_open
        session = await store.create({"n": 1})
        assert (await store.load(session.id)) is not None
