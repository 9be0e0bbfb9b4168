"""Sentinel over TLS: sentinels, master and replica all TLS-only (trustme certificates).

The server certificate names ``myredis.example.com`` only, so every connection, to the
sentinels as well as to the data nodes, must send ``tls.server_name`` and verify the chain
against ``tls.ca_file``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

import redis_session._spec
from redis_session import StoreUnavailable, open_session_store
from redis_session._tls import build_ssl_context
from redis_session._topology import SentinelTopology
from redis_session._wire import CLIENT_NAME

from .servers import SentinelCluster, TLSFiles

pytestmark = pytest.mark.anyio

SECRET = "sentinel tls: a secret long enough to be taken seriously"


def store_config(cluster: SentinelCluster, **tls: Any) -> dict[str, Any]:
    section = cluster.redis_section()
    section["tls"] = {**section["tls"], **tls}
    return {"secret": SECRET, "redis": section}


def topology_of(store: Any) -> SentinelTopology:
    topology = store._provider._manager._topology
    assert isinstance(topology, SentinelTopology)
    return topology


async def eventually(check: Callable[[], Any], within: float) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        await anyio.sleep(0.02)


async def test_discovers_the_master_through_tls_sentinels(
    tls_sentinel_cluster: SentinelCluster,
) -> None:
    """Sentinels and data nodes speak only TLS: the master is found, verified and used."""
    cluster = tls_sentinel_cluster
    assert cluster.master.port == 0
    assert all(s.port == 0 for s in cluster.sentinels)
    async with open_session_store(store_config(cluster)) as store:
        topology = topology_of(store)
        assert sorted(topology.sentinels()) == sorted(
            f"{s.host}:{s.tls_port}" for s in cluster.sentinels
        )
        assert topology.writer().node == f"{cluster.master.host}:{cluster.master.tls_port}"
        session = await store.create({"tls": True})
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"tls": True}
        # Our connections really are TLS ones: the sentinels and the master list them.
        ours = await anyio.to_thread.run_sync(cluster.master.our_clients, CLIENT_NAME)
        assert ours
        for sentinel in cluster.sentinels:
            assert await anyio.to_thread.run_sync(sentinel.our_clients, CLIENT_NAME)


async def test_follows_a_failover_over_tls(
    tls_sentinel_cluster: SentinelCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SENTINEL FAILOVER: events and surveys over TLS lead writes to the new master.

    The TLS files are read once, when the store opens: every sentinel link, the master's
    pool and the new master's pool after the failover share that one context.
    """
    cluster = tls_sentinel_cluster
    await anyio.to_thread.run_sync(cluster.wait_streaming)
    old, new = cluster.master, cluster.replica
    built: list[ssl.SSLContext] = []

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(build_ssl_context(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(redis_session._spec, "build_ssl_context", counting)
    async with open_session_store(store_config(cluster)) as store:
        before = await store.create({"n": 1})
        await anyio.to_thread.run_sync(
            cluster.sentinels[0].admin().execute_command, "SENTINEL", "FAILOVER", cluster.name
        )
        topology = topology_of(store)
        expected = f"{new.host}:{new.tls_port}"
        assert await eventually(lambda: topology.writer().node == expected, within=5.0)
        after = await store.create({"n": 2})
        await anyio.to_thread.run_sync(cluster.wait_for_master, new.address)
        for session, data in ((before, {"n": 1}), (after, {"n": 2})):
            loaded = await store.load(session.id)
            assert loaded is not None
            assert loaded.data == data
        raw = await anyio.to_thread.run_sync(new.admin().execute_command, "ROLE")
        assert raw[0] == "master"
        assert len(built) == 1
        assert topology.writer()._factory()._tls_context is built[0]  # type: ignore[attr-defined]
    assert old.alive()


async def test_sentinels_with_an_untrusted_ca_name_the_tls_option(
    tls_sentinel_cluster: SentinelCluster, tls_files: TLSFiles
) -> None:
    """Trusting the wrong CA fails the open naming the TLS option, never a secret."""
    cluster = tls_sentinel_cluster
    cfg = store_config(cluster, ca_file=tls_files.untrusted_ca_file, timeout="2s")
    cfg["redis"]["timeout"] = cfg["redis"]["tls"].pop("timeout")
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await open_session_store(cfg)
    message = str(info.value)
    assert "session.redis.tls" in message
    assert cluster.password not in message
    assert cluster.sentinel_password not in message
    assert time.monotonic() - began < 5.0
