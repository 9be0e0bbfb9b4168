"""Faults under continuous mixed load: the store never answers wrong, fails in time, and heals.

Each scenario runs :class:`~tests.chaos.load.LoadDriver` (32 tasks, 64 in the full form) on one
store opened with ``redis.timeout: 1s``, injects one kind of fault (Sentinel failovers, a hung,
restarted or disconnected server, a broken network through :class:`~tests.chaos.proxy.FaultProxy`)
and asserts, for every scenario:

- no wrong answer: no reply for another caller, no data of another session, no acknowledged
  write lost (except for SIGKILL of the master, where asynchronous replication may lose the
  last writes: those are counted and reported, not failed);
- every failure is a ``RedisSessionError`` raised within ``timeout`` + ``SLACK``;
- the same store, never reopened, serves every task again within a bound after the fault ends,
  and every session it knows reads back as last acknowledged;
- after the store closes: none of our connections on any server, and this process's asyncio
  tasks and file descriptors back to what they were before it opened.

``REDIS_SESSION_CHAOS=full`` (``nox -s chaos``) runs the long form: more tasks, longer phases,
each fault repeated. The table of figures is printed at the end of the run (``conftest.py``).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest
import redis as redis_sync

from redis_session import open_session_store
from redis_session._connections import CLIENT_NAME
from tests.pool_helpers import kill_ours_sync
from tests.servers import RedisProcess, SentinelCluster, wait_until

from .load import RESULTS, LoadDriver, Tally, fd_count, full_mode, tasks_now, watching_logs
from .proxy import FaultProxy

FULL = full_mode()
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(400 if FULL else 120)]

SECRET = "chaos: a secret long enough to be taken seriously"
#: ``redis.timeout`` of every store here: short, so failures show within a run.
TIMEOUT = 1.0
#: How late past ``TIMEOUT`` a failure may be raised: event-loop lag on two busy cores.
SLACK = 0.5
TASKS = 64 if FULL else 32
#: Load before the first fault, between faults, and after the last.
WARM = 2.0 if FULL else 0.4
#: How long an outage lasts: longer than the timeout, so that calls do fail.
OUTAGE = 3.0 if FULL else 1.5
AFTER = 3.0 if FULL else 0.4
CYCLES = 3 if FULL else 1
#: Every task has had a call succeed within this long of the end of a fault.
RECOVERY = TIMEOUT + 2.0
#: The same after a Sentinel switch (measured from the first sentinel naming the new master).
FAILOVER_RECOVERY = 3.0
#: Every fd the store opened is closed again: exactly. (Harness admin clients, which keep
#: sockets of their own, are closed before both counts.)
FD_SLACK = 0
SEED = int(os.environ.get("REDIS_SESSION_CHAOS_SEED", random.randrange(1 << 30)))


def store_config(section: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A session config for ``section`` with the chaos timeout and pool sizes."""
    redis_section = {
        **section,
        "timeout": f"{TIMEOUT:g}s",
        "maximum_active_connections": 8,
        "minimum_idle_connections": 2,
        **overrides,
    }
    return {"secret": SECRET, "redis": redis_section}


@attrs.define
class Scenario:
    """What a scenario's body works with."""

    load: LoadDriver
    tally: Tally
    proxy: FaultProxy | None


def close_admin_links(servers: Sequence[RedisProcess]) -> None:
    """Close the harness's admin clients, whose sockets would blur the fd count."""
    for proc in servers:
        proc._close_admin()


@contextlib.asynccontextmanager
async def under_load(
    name: str,
    section: dict[str, Any],
    servers: Sequence[RedisProcess],
    *,
    via: RedisProcess | None = None,
    **overrides: Any,
) -> AsyncIterator[Scenario]:
    """Open a store (through a fault proxy to ``via`` if given), run the load in the block.

    Afterwards the store is closed and hygiene is checked against ``servers``.
    """
    tally = Tally(name, timeout=TIMEOUT)
    RESULTS.append(tally)
    tally.notes.append(f"seed {SEED}")
    await anyio.to_thread.run_sync(close_admin_links, servers)
    base_tasks, base_fds = tasks_now(), fd_count()
    proxy = None
    with watching_logs(tally):
        try:
            if via is not None:
                proxy = await FaultProxy(via.host, via.port, seed=SEED).start()
                section = {**section, "host": proxy.host, "port": proxy.port}
            store = await open_session_store(store_config(section, **overrides))
            try:
                async with LoadDriver(store, tally, tasks=TASKS, slack=SLACK, seed=SEED) as load:
                    yield Scenario(load, tally, proxy)
            finally:
                await store.aclose()
                if proxy is not None:
                    await proxy.aclose()
        finally:
            tally.wrong += tally.unreadable_warnings
        await check_hygiene(tally, servers, base_tasks, base_fds)


async def check_hygiene(
    tally: Tally, servers: Sequence[RedisProcess], base_tasks: set[Any], base_fds: int
) -> None:
    """No connection of ours on any live server, tasks and fds back to the baseline."""

    def ours_everywhere() -> dict[int, int]:
        counts = {p.port: len(p.our_clients(CLIENT_NAME)) for p in servers if p.alive()}
        return {port: n for port, n in counts.items() if n}

    try:
        await anyio.to_thread.run_sync(lambda: wait_until(lambda: not ours_everywhere(), 3.0))
    except TimeoutError:
        left = await anyio.to_thread.run_sync(ours_everywhere)
        pytest.fail(f"{tally.scenario}: our connections left on servers (port: count) {left}")
    await anyio.to_thread.run_sync(close_admin_links, servers)
    deadline = time.monotonic() + 3.0
    while True:
        extra_tasks = tasks_now() - base_tasks
        fds = fd_count()
        if not extra_tasks and fds <= base_fds + FD_SLACK:
            break
        if time.monotonic() > deadline:
            names = sorted(t.get_name() for t in extra_tasks)
            pytest.fail(
                f"{tally.scenario}: after close, {len(extra_tasks)} tasks left {names[:10]}; "
                f"fds {fds} (baseline {base_fds})"
            )
        await anyio.sleep(0.05)
    tally.notes.append(f"hygiene: tasks back to {len(base_tasks)}, fds back to {base_fds}")


def assert_sound(tally: Tally, *, lost_allowed: bool = False) -> None:
    """The expectations every scenario shares (see the module docstring)."""
    assert tally.foreign == [], f"non-library exceptions: {tally.foreign[:5]}"
    assert tally.wrong == 0, f"wrong answers: {tally.wrong_details[:5]}"
    assert tally.asyncio_errors == [], tally.asyncio_errors[:5]
    assert tally.slowest_failure <= TIMEOUT + SLACK, tally.notes[:8]
    assert tally.failed_after_recovery == 0, tally.notes[:8]
    if not lost_allowed:
        assert tally.lost == 0
    assert tally.ok > 0


def assert_quiet_after(load: LoadDriver, tally: Tally) -> None:
    """Once the store had recovered from the last fault, nothing failed any more."""
    recovered = max(v for k, v in tally.marks.items() if k.startswith("recovered"))
    after = load.failures_after(recovered)
    assert after == 0, f"{after} calls failed after the store had recovered"


# -- a hung, restarted or disconnected server -------------------------------------------------


async def test_server_sigstop(fresh_redis: RedisProcess) -> None:
    """A server hung by SIGSTOP: calls fail in time while it is stopped; SIGCONT heals all."""
    outages = [OUTAGE, TIMEOUT / 2, OUTAGE][:CYCLES]
    async with under_load("SIGSTOP/SIGCONT", fresh_redis.redis_section(), [fresh_redis]) as sc:
        for outage in outages:
            await anyio.sleep(WARM)
            sc.load.mark("fault")
            fresh_redis.pause()
            try:
                await anyio.sleep(outage)
            finally:
                fresh_redis.resume()
            sc.load.mark("heal")
            await sc.load.wait_recovered(RECOVERY)
        await anyio.sleep(AFTER)
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)
    assert sc.tally.failed > 0  # the hang was long enough to be felt


async def test_server_restart(
    redis_factory: Any,
) -> None:
    """A server restarted (AOF, fsync always): no acknowledged write lost, calls heal."""
    proc = redis_factory(extra_conf=["appendonly yes", "appendfsync always"])
    async with under_load("server restart", proc.redis_section(), [proc]) as sc:
        for _ in range(CYCLES):
            await anyio.sleep(WARM)
            sc.load.mark("fault")
            await anyio.to_thread.run_sync(proc.restart)
            sc.load.mark("heal")
            await sc.load.wait_recovered(RECOVERY)
        await anyio.sleep(AFTER)
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)


async def test_client_kill_of_every_connection(redis: RedisProcess) -> None:
    """CLIENT KILL of all our connections, again and again: retries hide it, nothing is wrong."""
    kills = 10 if FULL else 3
    async with under_load("CLIENT KILL all", redis.redis_section(), [redis]) as sc:
        for _ in range(CYCLES):
            await anyio.sleep(WARM)
            sc.load.mark("fault")
            killed = 0
            for _ in range(kills):
                killed += len(await anyio.to_thread.run_sync(kill_ours_sync, redis))
                await anyio.sleep(0.3)
            sc.tally.notes.append(f"killed {killed} connections")
            sc.load.mark("heal")
            await sc.load.wait_recovered(RECOVERY)
        await anyio.sleep(AFTER)
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)


# -- a broken network, through the proxy -------------------------------------------------------


async def test_proxy_blackhole(redis: RedisProcess) -> None:
    """A partition (nothing passes, new connections unanswered): fail in time, heal after."""
    outages = [OUTAGE, TIMEOUT / 2, OUTAGE][:CYCLES]
    async with under_load("proxy blackhole", redis.redis_section(), [redis], via=redis) as sc:
        assert sc.proxy is not None
        for outage in outages:
            await anyio.sleep(WARM)
            sc.load.mark("fault")
            sc.proxy.set_mode("blackhole")
            await anyio.sleep(outage)
            sc.proxy.set_mode("pass")
            sc.load.mark("heal")
            await sc.load.wait_recovered(RECOVERY)
        await anyio.sleep(AFTER)
        sc.tally.notes.append(f"proxy accepted {sc.proxy.accepted} connections")
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)
    assert sc.tally.failed > 0


async def test_proxy_stall_mid_reply(redis: RedisProcess) -> None:
    """Replies stuck half-way on every connection: fail in time, no half reply misread."""
    outages = [OUTAGE, TIMEOUT / 2, OUTAGE][:CYCLES]
    async with under_load("proxy stall mid-reply", redis.redis_section(), [redis], via=redis) as sc:
        assert sc.proxy is not None
        for outage in outages:
            await anyio.sleep(WARM)
            sc.load.mark("fault")
            sc.proxy.set_mode("stall")
            await anyio.sleep(outage)
            sc.proxy.set_mode("pass")
            sc.load.mark("heal")
            await sc.load.wait_recovered(RECOVERY)
        await anyio.sleep(AFTER)
        sc.tally.notes.append(f"proxy stalled {sc.proxy.stalls} replies")
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)
    assert sc.proxy.stalls > 0
    assert sc.tally.failed > 0


async def test_proxy_cut_mid_reply(redis: RedisProcess) -> None:
    """Connections cut in the middle of a reply: retried or failed in time, never misread."""
    probabilities = [0.3, 1.0, 0.05][:CYCLES]
    async with under_load("proxy cut mid-reply", redis.redis_section(), [redis], via=redis) as sc:
        assert sc.proxy is not None
        for p in probabilities:
            await anyio.sleep(WARM)
            sc.load.mark("fault")
            sc.proxy.set_mode("cut", cut_probability=p)
            await anyio.sleep(OUTAGE)
            sc.proxy.set_mode("pass")
            sc.load.mark("heal")
            await sc.load.wait_recovered(RECOVERY)
        await anyio.sleep(AFTER)
        sc.tally.notes.append(f"proxy cut {sc.proxy.cuts} replies")
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)
    assert sc.proxy.cuts > 0


# -- Sentinel -------------------------------------------------------------------------------------


def cluster_nodes(cluster: SentinelCluster) -> list[RedisProcess]:
    return [*cluster.data_nodes, *cluster.sentinels]


def wait_sentinels_ready(cluster: SentinelCluster, timeout: float = 20.0) -> None:
    """Wait until every sentinel sees the master, both peers and a healthy replica."""
    wait_until(lambda: not cluster._sentinels_ready(), timeout, interval=0.1)


def sentinel_failover(cluster: SentinelCluster, timeout: float = 10.0) -> None:
    """``SENTINEL FAILOVER``, retried while the sentinels still find no good replica."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster.sentinels[0].admin().execute_command("SENTINEL", "FAILOVER", cluster.name)
        except redis_sync.ResponseError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


async def test_sentinel_master_sigkill(sentinel_cluster: SentinelCluster) -> None:
    """SIGKILL of the master: writes move to the promoted replica; lost writes are counted."""
    cluster = sentinel_cluster
    cycles = 2 if FULL else 1
    nodes = cluster_nodes(cluster)
    victim: RedisProcess | None = None
    async with under_load("Sentinel: master SIGKILL", cluster.redis_section(), nodes) as sc:
        for cycle in range(cycles):
            if victim is not None:
                await anyio.to_thread.run_sync(cluster.rejoin_as_replica, victim)
                await anyio.to_thread.run_sync(wait_sentinels_ready, cluster)
            await anyio.sleep(WARM)
            await anyio.to_thread.run_sync(cluster.wait_streaming)
            old = await anyio.to_thread.run_sync(cluster.master_address)
            victim = cluster.node_at(old)
            sc.load.mark("fault")
            await anyio.to_thread.run_sync(victim.kill)
            switched = await anyio.to_thread.run_sync(cluster.first_switch, old)
            sc.load.mark("heal", at=switched)
            await sc.load.wait_recovered(FAILOVER_RECOVERY)
            sc.tally.notes.append(
                f"cycle {cycle}: sentinels switched {switched - sc.tally.marks['fault']:.2f}s "
                f"after the kill"
            )
        await anyio.sleep(AFTER)
    sc.tally.notes.append(f"lost acknowledged writes: {sc.tally.lost} (async replication)")
    assert_sound(sc.tally, lost_allowed=True)
    # The pool was never full: a dead master must be reported as such, not as a PoolTimeout.
    assert "PoolTimeout" not in sc.tally.failure_kinds, sc.tally.failure_examples
    assert_quiet_after(sc.load, sc.tally)


async def test_sentinel_graceful_failover(sentinel_cluster: SentinelCluster) -> None:
    """SENTINEL FAILOVER: every acknowledged write survives, before and during the failover.

    Writes move to the selected replica before its promotion (the fence), so none is
    acknowledged by the old master too late to be replicated.
    """
    cluster = sentinel_cluster
    nodes = cluster_nodes(cluster)
    async with under_load("Sentinel: SENTINEL FAILOVER", cluster.redis_section(), nodes) as sc:
        snapshots: list[dict[str, Any]] = []
        for cycle in range(CYCLES):
            if cycle:
                await anyio.to_thread.run_sync(cluster.wait_replica_synced)
                await anyio.to_thread.run_sync(wait_sentinels_ready, cluster)
            # A replica fresh from a full sync gets no stream until its first REPLCONF ACK
            # (up to 1 s, Redis 7): a failover then loses every write since the sync, for
            # reasons that have nothing to do with the client.
            await anyio.to_thread.run_sync(cluster.wait_streaming)
            await anyio.sleep(WARM)
            old = await anyio.to_thread.run_sync(cluster.master_address)
            snapshots.append(sc.load.snapshot())
            sc.load.mark("fault")
            await anyio.to_thread.run_sync(sentinel_failover, cluster)
            switched = await anyio.to_thread.run_sync(cluster.first_switch, old)
            sc.load.mark("heal", at=switched)
            await sc.load.wait_recovered(FAILOVER_RECOVERY)
        await anyio.sleep(AFTER)
    before = {k: v for snap in snapshots for k, v in snap.items()}
    sc.tally.notes.append(
        f"{len(before)} sessions acknowledged before a failover; lost before the fault: "
        f"{sc.tally.lost_before_fault}"
    )
    assert sc.tally.lost_before_fault == 0
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)


@pytest.mark.parametrize("fault", ["kill", "sigstop"])
async def test_sentinel_replica_fails_while_reads_go_to_it(
    sentinel_cluster: SentinelCluster, fault: str
) -> None:
    """route_randomly: the replica serving reads is killed (or hung): reads go to the master.

    A read that meets the failing replica is retried on the master within its deadline, and
    the replica is left out of routing until it answers PINGs again: nothing fails.
    """
    cluster = sentinel_cluster
    nodes = cluster_nodes(cluster)
    section = cluster.redis_section()
    section["high_availability"] = {**section["high_availability"], "route_randomly": True}
    cycles = 2 if FULL else 1
    replica = cluster.replica
    what = "killed" if fault == "kill" else "hung by SIGSTOP"
    async with under_load(f"Sentinel: replica {what} (route_randomly)", section, nodes) as sc:
        for cycle in range(cycles):
            if cycle and fault == "kill":
                await anyio.to_thread.run_sync(replica.restart)
                await anyio.to_thread.run_sync(cluster.wait_replica_synced)
                await anyio.to_thread.run_sync(wait_sentinels_ready, cluster)
            await anyio.to_thread.run_sync(replica.admin().config_resetstat)
            await anyio.sleep(WARM + 1.0)  # replica pools open within a survey or two
            stats = await anyio.to_thread.run_sync(replica.admin().info, "commandstats")
            reads = stats.get("cmdstat_hmget", {}).get("calls", 0)
            sc.tally.notes.append(f"cycle {cycle}: {reads} reads served by the replica")
            assert reads > 0, "reads never reached the replica: the scenario tests nothing"
            sc.load.mark("fault")
            if fault == "kill":
                await anyio.to_thread.run_sync(replica.kill)
                sc.load.mark("heal")
                await sc.load.wait_recovered(RECOVERY)
            else:
                replica.pause()
                try:
                    sc.load.mark("heal")  # the master still serves: no need to wait for SIGCONT
                    await sc.load.wait_recovered(RECOVERY)
                    await anyio.sleep(OUTAGE)
                finally:
                    replica.resume()
            await anyio.sleep(AFTER)
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)
    # The master was up all along: a read that met the failing replica is retried there, in
    # time (a replica read gets half the budget), so no call fails at all.
    assert sc.tally.failed == 0, sc.tally.failure_examples


# -- the driver itself ---------------------------------------------------------------------------


async def test_control_a_desynchronised_connection_is_caught(redis: RedisProcess) -> None:
    """Control: when a connection loses one whole reply, the driver does report wrong answers.

    Without this, ``wrong == 0`` above could mean a blind checker. The proxy drops exactly one
    reply per connection, so each later reply on it answers another caller's command.
    """
    name = "control: 1 reply lost per connection"
    async with under_load(name, redis.redis_section(), [redis], via=redis) as sc:
        assert sc.proxy is not None
        await anyio.sleep(WARM)
        sc.load.mark("fault")
        sc.proxy.set_mode("desync")
        await anyio.sleep(TIMEOUT)
        sc.proxy.set_mode("pass")
        sc.load.mark("heal")
        await anyio.sleep(AFTER)
        sc.tally.notes.append(f"proxy dropped {sc.proxy.dropped_replies} replies")
    assert sc.proxy.dropped_replies > 0
    assert sc.tally.wrong > 0, "a desynchronised connection went unnoticed"
