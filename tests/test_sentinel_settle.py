"""After a stall of the event loop, a write is acknowledged only once the news is heard.

A graceful failover whose events reach the client while its event loop is blocked: the reply
to a write from the old master and the event that makes it a former master wait unread side by
side, and nothing orders the caller after the watcher. ``Topology.settle`` lets the watchers
handle what already arrived; the connection manager asks for it before acknowledging a write
in the second after a stall. Real sentinels, a real stall of this test's loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest

from redis_session import open_session_store
from redis_session._wire import node_label

from .servers import SentinelCluster

pytestmark = pytest.mark.anyio

SECRET = "settle: a secret long enough to be taken seriously"


def _fail_over_and_wait_for_promotion(cluster: SentinelCluster, new: Any) -> None:
    """Inside the stall: SENTINEL FAILOVER, then wait until ``new`` says it is the master."""
    cluster.sentinels[0].admin().execute_command("SENTINEL", "FAILOVER", cluster.name)
    deadline = time.monotonic() + 10
    while new.admin().execute_command("ROLE")[0] != "master":
        assert time.monotonic() < deadline, "the replica was not promoted within 10 s"
        time.sleep(0.02)
    time.sleep(0.1)  # the leader's events are out by now


async def test_settle_hears_the_failover_events_received_during_a_stall(
    sentinel_cluster: SentinelCluster,
) -> None:
    """Right after the stall the writer is still the old master; after settle() it is not."""
    cluster = sentinel_cluster
    await anyio.to_thread.run_sync(cluster.wait_settled)
    old = cluster.node_at(cluster.master_address())
    new = next(n for n in cluster.data_nodes if n is not old)
    async with open_session_store({"secret": SECRET, "redis": cluster.redis_section()}) as store:
        topology = store._provider._manager._topology  # type: ignore[attr-defined]
        await anyio.sleep(0.5)  # every watcher is subscribed
        assert topology.writer().node == node_label(old.host, old.port)
        _fail_over_and_wait_for_promotion(cluster, new)  # the loop is blocked meanwhile
        # No loop turn since: the events wait unread, and the old master is still the writer.
        assert topology.writer().node == node_label(old.host, old.port)
        loop = asyncio.get_running_loop()
        await topology.settle(loop.time() + 1.0)
        assert topology.writer().node == node_label(new.host, new.port)
    await anyio.to_thread.run_sync(cluster.first_switch, (old.host, old.port))
