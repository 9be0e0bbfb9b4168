"""Macro-benchmarks: load + save pairs against a real redis-server, side by side with peers.

Every client gets the same Redis, the same concurrency (N asyncio tasks), the same cap of 8
connections and the same payload size, and works on a pre-created pool of sessions so every
load hits. A pair is what a web request does with its session:

* ``store``: ``store.load(id)`` then ``store.save(session)`` (EVALSHA + decrypt + decode, then
  encode + encrypt + EVALSHA compare-and-set), on this library's auto-pipelining pool;
* ``redis-py``: raw ``GET`` then ``SET EX`` of an opaque value of the same size, through a
  ``redis.asyncio.BlockingConnectionPool(max_connections=8)``, no encryption, no serialization:
  the floor a store on redis-py's own pool cannot beat;
* ``starsessions``: ``RedisStore.read`` + JSON deserialize, then JSON serialize +
  ``RedisStore.write`` (what its middleware does per request; no encryption), on the same kind
  of redis-py pool;
* ``redis-benchmark`` (C, 50 clients, GET and SET): the ceiling of the server on this machine.

Each run lasts a fixed time after a warm-up; every completed pair inside the window counts, and
its latency (from the call to the end of the save) is a sample for p50/p99.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from starsessions.serializers import JsonSerializer
from starsessions.stores.redis import RedisStore

from benchmarks._server import HOST
from benchmarks.payloads import make_session, packed_size
from redis_session import SessionStore, open_session_store

#: Sessions (keys) per client and payload size; each task owns a disjoint slice of them, so
#: no two tasks ever save the same session (which would be a SessionConflict, by design).
POOL_SIZE = 1000
MAX_CONNECTIONS = 8
_TTL = 3600
_SECRET = "benchmark secret, not a real one"

Pair = Callable[[int], Awaitable[None]]


class Client:
    """One contender: prepares its keys for a payload size and runs one pair on key ``i``."""

    name: str

    async def prepare(self, size: int) -> Pair:
        """Write :data:`POOL_SIZE` sessions of ``size`` bytes; return the pair function."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections."""


async def _in_chunks(calls: list[Callable[[], Awaitable[Any]]], chunk: int = 64) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), chunk):
        results += await asyncio.gather(*(c() for c in calls[start : start + chunk]))
    return results


class StoreClient(Client):
    """This library: ``open_session_store`` with ``maximum_active_connections: 8``."""

    name = "store"

    def __init__(self, store: SessionStore[dict[str, Any]]) -> None:
        self._store = store

    @classmethod
    async def open(cls, port: int) -> StoreClient:
        """Open a store on the benchmark server."""
        cfg = {
            "secret": _SECRET,
            # Long clocks: a full run takes minutes and must never see a session expire.
            "expiration": "1d",
            "inactivity": "1h",
            "redis": {"host": HOST, "port": port, "maximum_active_connections": MAX_CONNECTIONS},
        }
        return cls(await open_session_store(cfg))

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


def _redis_py(port: int) -> aioredis.Redis:
    # RESP2 like the store (redis-py 8.1's RESP3 default has an idle-connection bug, #4252).
    pool = aioredis.BlockingConnectionPool(
        host=HOST, port=port, max_connections=MAX_CONNECTIONS, timeout=60, protocol=2
    )
    return aioredis.Redis(connection_pool=pool)


class RawClient(Client):
    """redis-py alone: GET + SET EX of an opaque value, BlockingConnectionPool of 8."""

    name = "redis-py"

    def __init__(self, port: int) -> None:
        self._redis = _redis_py(port)

    async def prepare(self, size: int) -> Pair:
        r = self._redis
        value = os.urandom(packed_size(make_session(size)))
        keys = [f"bench:raw:{size}:{i}" for i in range(POOL_SIZE)]
        await _in_chunks([lambda k=k: r.set(k, value, ex=_TTL) for k in keys])

        async def pair(i: int) -> None:
            key = keys[i]
            blob = await r.get(key)
            await r.set(key, blob, ex=_TTL)

        return pair

    async def aclose(self) -> None:
        await self._redis.aclose()


class StarsessionsClient(Client):
    """starsessions' RedisStore with its JsonSerializer, on a BlockingConnectionPool of 8."""

    name = "starsessions"

    def __init__(self, port: int) -> None:
        self._redis = _redis_py(port)
        self._serializer = JsonSerializer()

    async def prepare(self, size: int) -> Pair:
        store = RedisStore(connection=self._redis, prefix=f"bench:star:{size}:")
        serializer = self._serializer
        blob = serializer.serialize(make_session(size))
        ids = [f"{i:040d}" for i in range(POOL_SIZE)]
        await _in_chunks([lambda s=s: store.write(s, blob, _TTL, _TTL) for s in ids])

        async def pair(i: int) -> None:
            session_id = ids[i]
            data = serializer.deserialize(await store.read(session_id, _TTL))
            await store.write(session_id, serializer.serialize(data), _TTL, _TTL)

        return pair

    async def aclose(self) -> None:
        await self._redis.aclose()


async def run_pairs(pair: Pair, tasks: int, *, warmup: float, duration: float) -> dict[str, Any]:
    """Run ``tasks`` concurrent loops of ``pair`` for ``warmup`` + ``duration`` seconds.

    Throughput counts the pairs that ended inside the measured window. Latency samples are all
    pairs in flight during the window, including those that started in the warm-up and those
    still running at its end (waited for): a pool that starves some callers (redis-py's
    BlockingConnectionPool lets a task that just released a connection take it again ahead of
    the waiters) shows it in the tail instead of hiding those callers outside the window.
    ``slowest_task_share`` is the least productive task's pairs relative to a fair share
    (1.0 = perfectly fair, 0 = a task got nothing done).
    """
    inf = float("inf")
    window = [inf, inf]  # start, end
    done = [0] * tasks  # pairs each worker finished inside the window
    latencies: list[float] = []
    stop = False

    async def worker(t: int) -> None:
        mine = range(t, POOL_SIZE, tasks)
        clock = time.perf_counter
        while True:
            for i in mine:
                if stop:
                    return
                start = clock()
                await pair(i)
                end = clock()
                if window[0] <= end <= window[1]:
                    done[t] += 1
                if start <= window[1] and end >= window[0]:
                    latencies.append(end - start)
                # A request boundary: a web server runs other tasks between two requests.
                await asyncio.sleep(0)

    loops = [asyncio.create_task(worker(t)) for t in range(tasks)]
    try:
        await asyncio.sleep(warmup)
        cpu = time.process_time()
        window[0] = time.perf_counter()
        await asyncio.sleep(duration)
        window[1] = time.perf_counter()
        cpu = time.process_time() - cpu
        # No new pairs; the ones in flight finish (a starved one at last gets its connection,
        # so its latency is a lower bound: it would have waited longer under continued load).
        stop = True
        await asyncio.gather(*loops)
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    elapsed = window[1] - window[0]
    q = statistics.quantiles(latencies, n=1000, method="inclusive")
    completed = sum(done)
    return {
        "pairs_per_s": completed / elapsed,
        # This process's CPU time (all threads) per pair: what the client spends, whatever the
        # rest of the machine is doing.
        "cpu_us_per_pair": cpu / completed * 1e6 if completed else 0.0,
        "p50_ms": q[499] * 1e3,
        "p99_ms": q[989] * 1e3,
        "p999_ms": q[998] * 1e3,
        "max_ms": max(latencies) * 1e3,
        "slowest_task_share": min(done) / (completed / tasks) if completed else 0.0,
        "pairs": completed,
        "seconds": elapsed,
    }


def redis_benchmark(port: int, size: int, requests: int, clients: int = 50) -> dict[str, Any]:
    """Run ``redis-benchmark -t get,set`` on the server; ``None`` figures if it is missing."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {"available": False}
    argv = [binary, "-h", HOST, "-p", str(port), "-t", "set,get", "-d", str(size)]
    argv += ["-c", str(clients), "-n", str(requests), "-r", str(POOL_SIZE), "--csv"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = {row["test"]: row for row in csv.DictReader(io.StringIO(out))}
    get_rps, set_rps = float(rows["GET"]["rps"]), float(rows["SET"]["rps"])
    return {
        "available": True,
        "clients": clients,
        "requests": requests,
        "get_rps": get_rps,
        "set_rps": set_rps,
        # One GET and one SET back to back: the harmonic combination of the two rates.
        "pairs_per_s": 1 / (1 / get_rps + 1 / set_rps),
        "get_p50_ms": float(rows["GET"]["p50_latency_ms"]),
        "set_p50_ms": float(rows["SET"]["p50_latency_ms"]),
        "get_p99_ms": float(rows["GET"]["p99_latency_ms"]),
        "set_p99_ms": float(rows["SET"]["p99_latency_ms"]),
    }


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "pairs_per_s",
        "cpu_us_per_pair",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "slowest_task_share",
    )
    summary: dict[str, Any] = {k: statistics.median(r[k] for r in runs) for k in keys}
    summary["runs"] = runs
    return summary


async def run(
    port: int,
    *,
    concurrencies: tuple[int, ...],
    sizes: tuple[int, ...],
    default_size: int,
    size_concurrency: int,
    repeat: int,
    warmup: float,
    duration: float,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Measure every client at each (tasks, payload size) point; return one row per point.

    Points: every concurrency at ``default_size``, and every size at ``size_concurrency``.
    Clients run interleaved (order rotated each repetition), so a ratio compares runs that were
    minutes, not hours, apart.
    """
    points = [(c, default_size) for c in concurrencies]
    points += [(size_concurrency, s) for s in sizes if (size_concurrency, s) not in points]
    clients: list[Client] = [RawClient(port), await StoreClient.open(port)]
    clients.append(StarsessionsClient(port))
    try:
        pairs = {}
        for size in sorted({s for _, s in points}):
            for client in clients:
                pairs[client.name, size] = await client.prepare(size)
        runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for rep in range(repeat):
            for tasks, size in points:
                order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
                for client in order:
                    result = await run_pairs(
                        pairs[client.name, size], tasks, warmup=warmup, duration=duration
                    )
                    runs.setdefault((client.name, tasks, size), []).append(result)
                    progress(
                        f"rep {rep + 1}/{repeat} {tasks:>3} tasks {size:>5} B "
                        f"{client.name:<13} {result['pairs_per_s']:>8.0f} pairs/s "
                        f"{result['cpu_us_per_pair']:5.0f} us CPU/pair "
                        f"p50 {result['p50_ms']:6.2f} p99 {result['p99_ms']:7.2f} "
                        f"max {result['max_ms']:7.1f} ms, slowest task "
                        f"{result['slowest_task_share']:.2f} of a fair share"
                    )
    finally:
        for client in clients:
            await client.aclose()
    rows = []
    for tasks, size in points:
        row: dict[str, Any] = {"tasks": tasks, "payload": size, "clients": {}}
        for client in clients:
            row["clients"][client.name] = _median_run(runs[client.name, tasks, size])
        row["ratios"] = _ratios(row["clients"])
        rows.append(row)
    return rows


def _ratios(clients: dict[str, Any]) -> dict[str, Any]:
    """Per-repetition ratios against raw redis-py (same rep, same point), then their median."""
    raw = clients["redis-py"]["runs"]
    ratios: dict[str, Any] = {}
    for name, summary in clients.items():
        if name == "redis-py":
            continue
        mine = summary["runs"]
        ratios[name] = {
            key: statistics.median(m[key] / r[key] for m, r in zip(mine, raw, strict=True))
            for key in ("pairs_per_s", "cpu_us_per_pair", "p50_ms", "p99_ms", "max_ms")
        }
    return ratios
