"""The cost of Redis Cluster routing: the store and raw redis-py, on one server and on a cluster.

Four clients in the same run, each doing load + save pairs (:func:`benchmarks.macro.run_pairs`)
on 1024 pre-created keys (``POOL_SIZE``) of the same payload size, every client capped at 8
connections per node:

* ``redis-py``: raw ``GET`` + ``SET EX`` on one redis-server, through a
  ``BlockingConnectionPool(max_connections=8)`` (as in :mod:`benchmarks.macro`);
* ``redis-py cluster``: the same raw ``GET`` + ``SET EX`` through redis-py's async
  ``RedisCluster`` (``max_connections=8`` per node). That client does not wait for a free
  connection (it raises ``MaxConnectionsError``), so each command first takes a semaphore of 8
  belonging to the key's node, worked out once when the keys are written: at most 8 commands in
  flight per node, like the blocking pool, with no routing work added per call;
* ``store``: this library on one redis-server;
* ``store cluster``: this library on the cluster (``session.redis.cluster``), measured only
  when the package has the cluster topology (``redis_session._cluster``); until then its rows
  say so instead of failing the run.

The cluster is the test harness's (``tests/cluster_servers.py``): 3 masters, each with one
replica, on free loopback ports, stopped by their pids at the end. The figure that matters is
client CPU per pair (``time.process_time`` deltas over the measured window divided by the pairs
finished in it): the servers are other processes, so what this process spends is the client's
cost of routing, whatever the replicas and the rest of the machine are doing. Every ratio is
taken per repetition between clients measured seconds apart, then the median.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

from benchmarks._server import HOST
from benchmarks.macro import (
    _TTL,
    MAX_CONNECTIONS,
    POOL_SIZE,
    Client,
    Pair,
    RawClient,
    _in_chunks,
    _median_run,
    run_pairs,
)
from benchmarks.payloads import make_session, packed_size
from redis_session import SessionStore, open_session_store

SECRET = "benchmark secret, not a real one"
#: Client names, the baselines first.
RAW_ONE, RAW_CLUSTER, STORE_ONE, STORE_CLUSTER = (
    "redis-py",
    "redis-py cluster",
    "store",
    "store cluster",
)
CLIENTS = (RAW_ONE, RAW_CLUSTER, STORE_ONE, STORE_CLUSTER)
#: Each client's baseline: raw redis-py on the same topology.
BASELINE = {STORE_ONE: RAW_ONE, STORE_CLUSTER: RAW_CLUSTER, RAW_CLUSTER: RAW_ONE}
#: Issue 12's acceptance: the store on the cluster within this multiple of the store on one
#: server, in client CPU per operation.
CPU_TARGET = 1.2
_RATIO_KEYS = ("pairs_per_s", "cpu_us_per_pair", "p50_ms", "p99_ms")


def has_cluster_support() -> bool:
    """Whether this build of the package has the cluster topology (issue 12)."""
    return importlib.util.find_spec("redis_session._cluster") is not None


def _store_config(redis: dict[str, Any]) -> dict[str, Any]:
    # The same settings on both topologies, so the only difference measured is the routing.
    return {
        "secret": SECRET,
        # Long clocks: a full run takes minutes and must never see a session expire.
        "expiration": "1d",
        "inactivity": "1h",
        "redis": {**redis, "timeout": "5s", "maximum_active_connections": MAX_CONNECTIONS},
    }


class StoreClient(Client):
    """This library through ``open_session_store``, on whichever topology the config names."""

    def __init__(self, name: str, store: SessionStore[dict[str, Any]]) -> None:
        self.name = name
        self._store = store

    @classmethod
    async def open(cls, name: str, redis: dict[str, Any]) -> StoreClient:
        """Open a store with ``redis`` as its ``session.redis`` section."""
        return cls(name, await open_session_store(_store_config(redis)))

    async def prepare(self, size: int) -> Pair:
        store = self._store
        data = make_session(size)
        sessions = await _in_chunks([lambda: store.create(data) for _ in range(POOL_SIZE)])
        ids = [s.id for s in sessions]

        async def pair(i: int) -> None:
            session = await store.load(ids[i])
            if session is None:
                msg = "a pre-created session did not load: the benchmark is invalid"
                raise RuntimeError(msg)
            await store.save(session)

        return pair

    async def aclose(self) -> None:
        await self._store.aclose()


class RawClusterClient(Client):
    """redis-py's async ``RedisCluster``: GET + SET EX, at most 8 commands in flight per node."""

    name = RAW_CLUSTER

    def __init__(self, seeds: list[dict[str, Any]]) -> None:
        # RESP2 like the store and the single-server baseline.
        self._redis = aioredis.RedisCluster(
            startup_nodes=[ClusterNode(s["host"], s["port"]) for s in seeds],
            max_connections=MAX_CONNECTIONS,
            protocol=2,
        )
        self._gates: dict[str, asyncio.Semaphore] = {}

    async def prepare(self, size: int) -> Pair:
        r = self._redis
        await r.initialize()
        value = os.urandom(packed_size(make_session(size)))
        keys = [f"bench:raw:{size}:{i}" for i in range(POOL_SIZE)]
        # Node of each key, once: the pair then adds no routing work of its own to redis-py's.
        gates = [self._gate(r.get_node_from_key(k)) for k in keys]

        async def write(i: int) -> None:
            async with gates[i]:
                await r.set(keys[i], value, ex=_TTL)

        await _in_chunks([functools.partial(write, i) for i in range(POOL_SIZE)])

        async def pair(i: int) -> None:
            key, gate = keys[i], gates[i]
            async with gate:
                blob = await r.get(key)
            if blob is None:  # as the store's pair checks that its session loaded
                msg = "a pre-written key did not load: the benchmark is invalid"
                raise RuntimeError(msg)
            async with gate:
                await r.set(key, blob, ex=_TTL)

        return pair

    def _gate(self, node: ClusterNode | None) -> asyncio.Semaphore:
        if node is None:
            msg = "redis-py's RedisCluster knows no node for a key: the slot map is incomplete"
            raise RuntimeError(msg)
        return self._gates.setdefault(node.name, asyncio.Semaphore(MAX_CONNECTIONS))

    async def aclose(self) -> None:
        await self._redis.aclose()


async def _open_clients(port: int, seeds: list[dict[str, Any]]) -> tuple[list[Client], str | None]:
    """The clients to measure, and why ``store cluster`` is missing (``None`` when it is not)."""
    clients: list[Client] = [RawClient(port), RawClusterClient(seeds)]
    clients.append(await StoreClient.open(STORE_ONE, {"host": HOST, "port": port}))
    if not has_cluster_support():
        return clients, "this build has no cluster topology (redis_session._cluster)"
    cluster = {
        "nodes": seeds,
        "route_by_latency": False,
        "route_randomly": False,
        "max_redirects": 5,
    }
    clients.append(await StoreClient.open(STORE_CLUSTER, {"cluster": cluster}))
    return clients, None


async def run(
    port: int,
    seeds: list[dict[str, Any]],
    *,
    concurrencies: tuple[int, ...],
    size: int,
    repeat: int,
    warmup: float,
    duration: float,
    progress: Callable[[str], None],
    keys_per_master: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Measure every client at each concurrency, interleaved; return rows and ratios.

    ``port`` is the single redis-server, ``seeds`` the cluster's nodes. ``keys_per_master``
    (keys on each master now), called around each client's writes, shows how that client's keys
    spread over the masters.
    """
    clients, missing = await _open_clients(port, seeds)
    spread: dict[str, dict[str, int]] = {}
    try:
        pairs: dict[str, Pair] = {}
        for client in clients:
            before = keys_per_master() if keys_per_master is not None else {}
            pairs[client.name] = await client.prepare(size)
            if keys_per_master is not None:
                after = keys_per_master()
                added = {node: n - before.get(node, 0) for node, n in after.items()}
                if any(added.values()):  # a cluster client: where its keys landed
                    spread[client.name] = added
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for rep in range(repeat):
            for tasks in concurrencies:
                order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
                for client in order:
                    result = await run_pairs(
                        pairs[client.name], tasks, warmup=warmup, duration=duration
                    )
                    runs.setdefault((client.name, tasks), []).append(result)
                    progress(
                        f"rep {rep + 1}/{repeat} {tasks:>3} tasks {size:>5} B "
                        f"{client.name:<16} {result['pairs_per_s']:>8.0f} pairs/s "
                        f"{result['cpu_us_per_pair']:5.0f} us CPU/pair "
                        f"p50 {result['p50_ms']:6.2f} p99 {result['p99_ms']:7.2f} ms"
                    )
    finally:
        for client in clients:
            await client.aclose()
    rows = []
    for tasks in concurrencies:
        measured = {c.name: _median_run(runs[c.name, tasks]) for c in clients}
        rows.append(
            {"tasks": tasks, "payload": size, "clients": measured, "ratios": _ratios(measured)}
        )
    return {
        "rows": rows,
        "missing": {STORE_CLUSTER: missing} if missing else {},
        "keys_per_master": spread,
    }


def _ratios(clients: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``ratios[a][b][key]``: median over repetitions of a's figure divided by b's, same rep."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for a, mine in clients.items():
        for b, theirs in clients.items():
            if a == b:
                continue
            out.setdefault(a, {})[b] = {
                key: statistics.median(
                    m[key] / t[key] if t[key] else float("nan")
                    for m, t in zip(mine["runs"], theirs["runs"], strict=True)
                )
                for key in _RATIO_KEYS
            }
    return out


@contextlib.contextmanager
def redis_cluster() -> Iterator[Any]:
    """Start the test harness's cluster (3 masters + 3 replicas) in a temporary directory.

    Yields the harness's ``RedisCluster``; every node is stopped by its pid on the way out.
    """
    # The harness lives with the tests (which also need trustme, in the bench group for this).
    from tests.cluster_servers import start_cluster  # noqa: PLC0415 - only when benchmarking

    with tempfile.TemporaryDirectory(prefix="redis-bench-cluster-") as workdir:
        cluster = start_cluster(Path(workdir))
        try:
            yield cluster
        finally:
            cluster.stop()


def count_keys(cluster: Any) -> dict[str, int]:
    """Keys on each master now, by ``host:port`` (replicas hold copies, not counted)."""
    return {f"{m.host}:{m.port}": int(m.admin().dbsize()) for m in cluster.masters()}
