"""A ``ConfigError`` while building a node's pool (I/O time: TLS files read again for a replica
or a new master) against real servers: the open ends, the error is logged once naming the node,
and the topology goes on with the other nodes, and with that node once it can be built.

The ``build`` function the topology takes is the real pool factory, raising ``ConfigError`` for
one address while ``broken`` is set (a CA file being replaced, say).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import anyio
import anyio.to_thread
import pytest

from redis_session._connections import make_pool_factory
from redis_session._errors import ConfigError
from redis_session._pool import NodePool, pack
from redis_session._topology import SentinelTopology

from .servers import RedisProcess, SentinelCluster
from .test_sentinel import config, eventually, label

pytestmark = pytest.mark.anyio

PROBLEM = "session.redis.tls.certificate_authority: cannot load ca.pem: being replaced"


def failing_for(
    build: Callable[[str, int], NodePool], node: RedisProcess, broken: list[bool]
) -> Callable[[str, int], NodePool]:
    """``build``, raising ConfigError for ``node`` while ``broken[0]``."""

    def build_or_fail(host: str, port: int) -> NodePool:
        if broken[0] and port == node.port:
            raise ConfigError([PROBLEM])
        return build(host, port)

    return build_or_fail


def mentions(caplog: pytest.LogCaptureFixture, node: RedisProcess) -> list[str]:
    """Our log lines that name ``node`` and the problem."""
    lines = [r.getMessage() for r in caplog.records if r.name == "redis_session"]
    lines += [str(r.exc_info[1]) for r in caplog.records if r.exc_info and r.exc_info[1]]
    return [m for m in lines if PROBLEM in m and label(node) in m]


def tasks_named(prefix: str) -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(prefix)]


async def test_a_replica_that_cannot_be_built_is_logged_once_and_opened_once_it_can(
    sentinel_cluster: SentinelCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Routing reads: the replica's open ends, reads go on on the master, then on the replica."""
    cluster = sentinel_cluster
    caplog.set_level(logging.INFO, logger="redis_session")
    await anyio.to_thread.run_sync(cluster.wait_streaming)
    cfg = config(cluster, ha={"route_randomly": True})
    broken = [True]
    topology = SentinelTopology(cfg, failing_for(make_pool_factory(cfg), cluster.replica, broken))
    try:
        await topology.start()
        await anyio.sleep(2.5)  # two periodic surveys or more, each planning the replica again
        assert tasks_named("redis_session replica") == []
        assert [p.node for p in topology.pools()] == [label(cluster.master)]
        deadline = asyncio.get_running_loop().time() + 2.0
        assert await topology.reader().execute(pack("PING"), deadline) == b"PONG"
        assert len(mentions(caplog, cluster.replica)) == 1, caplog.text

        broken[0] = False  # the file is back: the next survey opens the replica

        async def replica_routed() -> bool:
            return label(cluster.replica) in [p.node for p in topology.pools()]

        assert await eventually(replica_routed, within=3.0)
    finally:
        await topology.aclose()
    assert tasks_named("redis_session") == []


async def test_a_new_master_that_cannot_be_built_leaves_the_watchers_and_surveys_going(
    sentinel_cluster: SentinelCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A failover to a node whose pool cannot be built: logged once; followed once it can."""
    cluster = sentinel_cluster
    caplog.set_level(logging.INFO, logger="redis_session")
    await anyio.to_thread.run_sync(cluster.wait_streaming)
    cfg = config(cluster)
    broken = [True]
    topology = SentinelTopology(cfg, failing_for(make_pool_factory(cfg), cluster.replica, broken))
    try:
        await topology.start()
        watchers = sorted(tasks_named("redis_session events"))
        assert len(watchers) == len(cluster.sentinels)
        await anyio.to_thread.run_sync(
            cluster.sentinels[0].admin().execute_command, "SENTINEL", "FAILOVER", cluster.name
        )

        def named() -> list[object]:
            return [
                s.admin().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", cluster.name)
                for s in cluster.sentinels
            ]

        async def sentinels_switched() -> bool:
            addrs = await anyio.to_thread.run_sync(named)
            return all(int(a[1]) == cluster.replica.port for a in addrs)  # type: ignore[index]

        assert await eventually(sentinels_switched, within=10.0, interval=0.1)
        await anyio.sleep(2.5)  # surveys go on naming the node that cannot be built
        assert sorted(tasks_named("redis_session events")) == watchers
        assert len(mentions(caplog, cluster.replica)) == 1, caplog.text

        broken[0] = False

        async def followed() -> bool:
            return topology.writer().node == label(cluster.replica)

        assert await eventually(followed, within=3.0)
        deadline = asyncio.get_running_loop().time() + 2.0
        assert await topology.writer().execute(pack("SET", "k", "v"), deadline) == b"OK"
    finally:
        await topology.aclose()
    assert tasks_named("redis_session") == []
