"""Sentinel against real servers: discovery, failover under load, errors, routing, peers.

Every test gets its own master, replica and three sentinels (``sentinel_cluster``: quorum 2,
down-after 1 s). Failover figures are printed (``pytest -s`` shows them) as well as asserted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from redis_session import RedisConfig, StoreUnavailable
from redis_session._config import HighAvailabilityConfig, NodeConfig
from redis_session._config_loading import load_config
from redis_session._connections import ConnectionManager, make_pool_factory
from redis_session._errors import RedisSessionError
from redis_session._sentinel import configured_sentinels
from redis_session._topology import SentinelTopology
from redis_session._wire import CLIENT_NAME

from .pool_helpers import opened
from .servers import RedisProcess, SentinelCluster, free_port

pytestmark = pytest.mark.anyio

OPTION = "session.redis.high_availability"


def config(
    cluster: SentinelCluster, *, ha: dict[str, Any] | None = None, **redis_: Any
) -> RedisConfig:
    """The ``session.redis`` config for ``cluster``, through the public config loader."""
    section = cluster.redis_section(**redis_)
    section["high_availability"] = {**section["high_availability"], **(ha or {})}
    cfg = load_config({"secret": "s" * 32, "redis": section}).redis
    assert cfg is not None
    return cfg


def label(proc: RedisProcess) -> str:
    return f"{proc.host}:{proc.port}"


async def served_by(manager: ConnectionManager) -> int:
    """The port of the node that serves writes now."""
    reply = await manager.execute("CONFIG", "GET", "port")
    return int(reply[1])


async def eventually(check: Callable[[], Any], within: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await anyio.sleep(interval)


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[sentinel] {text}")  # the figures are the point


# -- discovery ------------------------------------------------------------------------------------


async def test_discovers_the_verified_master_skipping_a_dead_first_sentinel(
    sentinel_cluster: SentinelCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """``redis.host`` is asked first; when it is dead the next sentinel names the master."""
    cluster = sentinel_cluster
    dead = free_port()
    caplog.set_level(logging.INFO, logger="redis_session")
    async with opened(config(cluster, host="127.0.0.1", port=dead)) as manager:
        topology = manager._topology
        assert isinstance(topology, SentinelTopology)
        assert topology.sentinels()[0] == f"127.0.0.1:{dead}"
        assert (await manager.execute("ROLE"))[0] == b"master"
        assert await served_by(manager) == cluster.master.port
        assert await manager.execute("SET", "k", "v") == b"OK"
    assert f"master for 'mymaster' is {label(cluster.master)}" in caplog.text


async def test_sentinel_list_is_learned_from_the_one_configured(
    sentinel_cluster: SentinelCluster,
) -> None:
    """Configured with one sentinel, the topology learns the other two from SENTINEL SENTINELS."""
    cluster = sentinel_cluster
    first = cluster.sentinels[0]
    cfg = config(cluster, ha={"nodes": [{"host": first.host, "port": first.port}]})
    topology = SentinelTopology(cfg, make_pool_factory(cfg))
    try:
        await topology.start()
        known = topology.sentinels()
    finally:
        await topology.aclose()
    assert known[0] == label(first)
    assert sorted(known) == sorted(label(s) for s in cluster.sentinels)
    # aclose() stopped every background task: monitor, subscribers, surveys, pool workers.
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("redis_session")]
    assert left == []


# -- errors ---------------------------------------------------------------------------------------


async def test_wrong_sentinel_password_names_the_option_not_the_value(
    sentinel_cluster: SentinelCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong sentinel_password fails at once, naming the option and sentinel, never the value."""
    wrong = "wrong-" + secrets.token_hex(8)
    cfg = config(sentinel_cluster, ha={"sentinel_password": wrong})
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await ConnectionManager.open(cfg)
    message = str(info.value)
    assert f"{OPTION}.sentinel_password" in message
    assert "authentication to sentinel 127.0.0.1:" in message
    assert wrong not in message
    assert wrong not in caplog.text
    assert time.monotonic() - began < 2.0


async def test_unknown_sentinel_name_is_a_clear_error(sentinel_cluster: SentinelCluster) -> None:
    """An unknown sentinel_name fails at once, naming the master name and every sentinel asked."""
    cfg = config(sentinel_cluster, ha={"sentinel_name": "nosuchmaster"})
    with pytest.raises(StoreUnavailable) as info:
        await ConnectionManager.open(cfg)
    message = str(info.value)
    assert "'nosuchmaster'" in message
    assert f"{OPTION}.sentinel_name" in message
    for sentinel in sentinel_cluster.sentinels:
        assert label(sentinel) in message


async def test_no_sentinel_reachable_lists_them_within_the_timeout() -> None:
    """With every sentinel down, opening fails after ``timeout`` and lists each sentinel."""
    ports = [free_port(), free_port()]
    section = {
        "timeout": "1s",
        "high_availability": {
            "sentinel_name": "mymaster",
            "nodes": [{"host": "127.0.0.1", "port": p} for p in ports],
        },
    }
    cfg = load_config({"secret": "s" * 32, "redis": section}).redis
    assert cfg is not None
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await ConnectionManager.open(cfg)
    elapsed = time.monotonic() - began
    message = str(info.value)
    assert "no sentinel reachable" in message
    for port in ports:
        assert f"127.0.0.1:{port}" in message
    assert 0.9 < elapsed < 2.0


# -- failover -------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_of_the_master_under_writes(
    sentinel_cluster: SentinelCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """After SIGKILL, writes succeed within 2 s of the sentinels' switch; no call overruns."""
    cluster = sentinel_cluster
    await anyio.to_thread.run_sync(cluster.wait_streaming)
    old = cluster.master_address()
    cfg = config(cluster)
    timeout = cfg.timeout.total_seconds()
    acks: list[float] = []
    errors: list[str] = []
    longest = 0.0
    stop = anyio.Event()

    async with opened(cfg) as manager:

        async def writer() -> None:
            nonlocal longest
            while not stop.is_set():
                began = time.monotonic()
                try:
                    await manager.execute("INCR", "counter")
                except RedisSessionError as exc:  # counted and reported below
                    errors.append(repr(exc))
                else:
                    acks.append(time.monotonic())
                longest = max(longest, time.monotonic() - began)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(writer)
            await anyio.sleep(0.3)
            killed_at = time.monotonic()
            await anyio.to_thread.run_sync(cluster.master.kill)
            switched_at = await anyio.to_thread.run_sync(cluster.first_switch, old)

            async def written_since_switch() -> bool:
                return bool(acks) and acks[-1] > switched_at

            await eventually(written_since_switch, within=5.0)
            await anyio.sleep(0.3)
            stop.set()

        # The outage is the longest gap between acknowledgements around the kill.
        times = sorted(acks)
        gaps = [(b - a, b) for a, b in itertools.pairwise(times) if b > killed_at]
        gap, first_ok = max(gaps)
        final = int(await manager.execute("GET", "counter"))
        new_port = await served_by(manager)

    # The old master comes back as a replica: none of our connections go there.
    await anyio.to_thread.run_sync(cluster.rejoin_as_replica, cluster.master)
    await anyio.sleep(0.5)
    leftover = await anyio.to_thread.run_sync(cluster.master.our_clients, CLIENT_NAME)

    report(
        capsys,
        f"SIGKILL: sentinels switched {switched_at - killed_at:.2f}s after the kill; "
        f"first good write {first_ok - switched_at:+.3f}s after the switch; "
        f"outage {gap:.2f}s; longest call {longest:.2f}s (timeout {timeout:g}s); "
        f"{len(acks)} INCR acknowledged, counter {final} (lost {max(0, len(acks) - final)}, "
        f"applied but unacknowledged {max(0, final - len(acks))}); {len(errors)} errors",
    )
    assert new_port == cluster.replica.port
    assert first_ok - switched_at < 2.0
    assert longest < timeout + 0.5
    assert errors == []
    assert leftover == []


@pytest.mark.slow
async def test_graceful_failover_keeps_every_acknowledged_write(
    sentinel_cluster: SentinelCluster,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SENTINEL FAILOVER under writes: every acknowledged write is readable on the new master."""
    cluster = sentinel_cluster
    await anyio.to_thread.run_sync(cluster.wait_streaming)
    old = cluster.master_address()
    acked: list[str] = []
    errors: list[str] = []
    stop = anyio.Event()

    async with opened(config(cluster)) as manager:

        async def writer(w: int) -> None:
            n = 0
            while not stop.is_set():
                key = f"g:{w}:{n}"
                n += 1
                try:
                    await manager.execute("SET", key, "1")
                except RedisSessionError as exc:  # counted and reported below
                    errors.append(repr(exc))
                else:
                    acked.append(key)

        async def moved() -> bool:
            return await served_by(manager) == cluster.replica.port

        async with anyio.create_task_group() as tg:
            for w in range(4):
                tg.start_soon(writer, w)
            await anyio.sleep(0.3)
            before = list(acked)
            began = time.monotonic()
            await anyio.to_thread.run_sync(
                cluster.sentinels[0].admin().execute_command, "SENTINEL", "FAILOVER", cluster.name
            )
            switched_at = await anyio.to_thread.run_sync(cluster.first_switch, old)
            assert await eventually(moved, within=3.0)
            followed_at = time.monotonic()
            await anyio.sleep(0.3)
            stop.set()

    new = cluster.replica.admin()
    missing_before = [k for k, v in zip(before, new.mget(before), strict=True) if v is None]
    during = acked[len(before) :]
    lost_during = sum(1 for v in new.mget(during) if v is None) if during else 0
    report(
        capsys,
        f"SENTINEL FAILOVER: sentinels switched {switched_at - began:.2f}s after the command; "
        f"client on the new master {followed_at - switched_at:+.3f}s after the switch; "
        f"{len(before)} writes before, all readable: {not missing_before}; "
        f"{len(during)} during/after, {lost_during} lost with the old master; "
        f"{len(errors)} errors {sorted(set(errors))[:3]}",
    )
    assert f"failover of 'mymaster': {label(cluster.master)} -> {label(cluster.replica)}" in (
        caplog.text
    )
    assert missing_before == []
    # Fencing (writes wait on the selected replica from +selected-slave on) keeps the old
    # master from acknowledging writes that its demotion then discards.
    assert lost_during == 0


async def test_connections_to_the_old_master_are_dropped(sentinel_cluster: SentinelCluster) -> None:
    """Right after a graceful failover the old master (still up) holds none of our connections."""
    cluster = sentinel_cluster
    old = cluster.master
    async with opened(config(cluster, minimum_idle_connections=2)) as manager:
        assert len(await anyio.to_thread.run_sync(old.our_clients, CLIENT_NAME)) == 2
        await anyio.to_thread.run_sync(
            cluster.sentinels[0].admin().execute_command, "SENTINEL", "FAILOVER", cluster.name
        )

        async def moved() -> bool:
            return await served_by(manager) == cluster.replica.port

        assert await eventually(moved, within=5.0)
        moved_at = time.monotonic()

        async def none_left() -> bool:
            return not await anyio.to_thread.run_sync(old.our_clients, CLIENT_NAME)

        assert await eventually(none_left, within=1.0)
        # Sentinel itself would only demote the old master (and kill its clients) ~8 s later.
        assert time.monotonic() - moved_at < 2.0
        assert (await anyio.to_thread.run_sync(old.admin().execute_command, "ROLE"))[0] in (
            "master",
            "slave",
        )


async def test_a_dead_sentinel_does_not_stop_failover_following(
    sentinel_cluster: SentinelCluster,
) -> None:
    """With the first sentinel gone, the others still lead the client to the new master."""
    cluster = sentinel_cluster
    async with opened(config(cluster)) as manager:
        await anyio.to_thread.run_sync(cluster.sentinels[0].kill)
        await anyio.to_thread.run_sync(
            cluster.sentinels[1].admin().execute_command, "SENTINEL", "FAILOVER", cluster.name
        )

        async def moved() -> bool:
            return await served_by(manager) == cluster.replica.port

        assert await eventually(moved, within=5.0)
        assert await manager.execute("SET", "after", "1") == b"OK"


def test_redis_host_is_the_first_sentinel_with_26379_as_a_fallback() -> None:
    """``redis.host`` comes first; at the data default port 6379 its 26379 is tried too."""
    ha = HighAvailabilityConfig(
        sentinel_name="mymaster",
        nodes=(NodeConfig("s2.example"), NodeConfig("s1.example", 26380)),
    )
    default_port = RedisConfig(host="s1.example", high_availability=ha)
    assert configured_sentinels(default_port) == [
        ("s1.example", 6379),
        ("s1.example", 26379),
        ("s2.example", 26379),
        ("s1.example", 26380),
    ]
    explicit = RedisConfig(host="s1.example", port=26380, high_availability=ha)
    assert configured_sentinels(explicit) == [("s1.example", 26380), ("s2.example", 26379)]
    assert configured_sentinels(RedisConfig(high_availability=ha))[0] == ("s2.example", 26379)
