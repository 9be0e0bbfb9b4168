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
* ``valkey-glide``: bare ``GET`` then ``SET`` with an expiry through valkey-glide's
  ``GlideClient`` (Rust core; its default: one multiplexed connection, commands pipelined on
  it by a Rust thread);
* ``coredis``: bare ``GET`` then ``SET EX`` through ``coredis.Redis`` with its pool capped at 8
  connections;
* ``redis-py+msgpack`` (large sessions only): raw redis-py ``GET`` + ``msgpack.unpackb``, then
  ``msgpack.packb`` + ``SET EX`` of the same session data: the floor of a store that serializes
  but does not encrypt;
* ``redis-benchmark`` (C, 50 clients, GET and SET): the ceiling of the server on this machine.

Each run lasts a fixed time after a warm-up; every completed pair inside the window counts, and
its latency (from the call to the end of the save) is a sample for p50/p99. Every point is
measured on each event loop of :data:`LOOPS` (the standard asyncio loop, and uvloop, which
``uvicorn[standard]`` installs), one :func:`run` per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import coredis
import msgpack
import redis
import redis.asyncio as aioredis
import uvloop
from glide import (
    ExpirySet,
    ExpiryType,
    GlideClient,
    GlideClientConfiguration,
    NodeAddress,
)
from starsessions.serializers import JsonSerializer
from starsessions.stores.redis import RedisStore

from benchmarks._server import HOST
from benchmarks.payloads import make_session, packed_size
from redis_session import SessionStore, open_session_store

#: Sessions (keys) per client and payload size; each task owns a disjoint slice of them, so
#: no two tasks ever save the same session (which would be a SessionConflict, by design). At
#: least the highest concurrency: every task needs a key of its own.
POOL_SIZE = 1024
MAX_CONNECTIONS = 8
#: Longest wait for the first round of pairs to finish before a run's measured window opens.
WARMUP_CAP = 60.0
#: The event loops every point is measured on: asyncio's own, and uvloop (uvicorn[standard]).
LOOPS = ("asyncio", "uvloop")
#: Client names.
STORE, RAW, STARSESSIONS, GLIDE, COREDIS, RAW_MSGPACK = (
    "store",
    "redis-py",
    "starsessions",
    "valkey-glide",
    "coredis",
    "redis-py+msgpack",
)
#: The clients of every point; ``redis-py+msgpack`` joins them at :data:`MSGPACK_SIZES`.
PEERS = (STORE, RAW, STARSESSIONS, GLIDE, COREDIS)
#: Payload sizes at which the store also meets raw redis-py with msgpack on both sides.
MSGPACK_SIZES = (16 * 1024,)
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

    name = STORE

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
        sessions = await _in_chunks([functools.partial(store.create, data)] * POOL_SIZE)
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


def _loaded(value: object) -> bytes:
    # As the store's pair checks that its session loaded: a miss would make the run invalid.
    if not isinstance(value, bytes):
        msg = f"a pre-written key did not load ({type(value).__name__}): the benchmark is invalid"
        raise TypeError(msg)
    return value


class RawClient(Client):
    """redis-py alone: GET + SET EX of an opaque value, BlockingConnectionPool of 8."""

    name = RAW

    def __init__(self, port: int) -> None:
        self._redis = _redis_py(port)

    async def prepare(self, size: int) -> Pair:
        r = self._redis
        value = os.urandom(packed_size(make_session(size)))
        keys = [f"bench:raw:{size}:{i}" for i in range(POOL_SIZE)]
        await _in_chunks([functools.partial(r.set, k, value, ex=_TTL) for k in keys])

        async def pair(i: int) -> None:
            key = keys[i]
            blob = _loaded(await r.get(key))
            await r.set(key, blob, ex=_TTL)

        return pair

    async def aclose(self) -> None:
        await self._redis.aclose()


class RawMsgpackClient(Client):
    """redis-py GET + ``msgpack.unpackb``, ``msgpack.packb`` + SET EX: serialized, not encrypted."""

    name = RAW_MSGPACK

    def __init__(self, port: int) -> None:
        self._redis = _redis_py(port)

    async def prepare(self, size: int) -> Pair:
        r = self._redis
        value = msgpack.packb(make_session(size))
        keys = [f"bench:msgpack:{size}:{i}" for i in range(POOL_SIZE)]
        await _in_chunks([functools.partial(r.set, k, value, ex=_TTL) for k in keys])
        packb, unpackb = msgpack.packb, msgpack.unpackb

        async def pair(i: int) -> None:
            key = keys[i]
            data = unpackb(_loaded(await r.get(key)))
            await r.set(key, packb(data), ex=_TTL)

        return pair

    async def aclose(self) -> None:
        await self._redis.aclose()


class GlidePeer(Client):
    """valkey-glide's ``GlideClient``: GET + SET with an expiry, its one multiplexed connection."""

    name = GLIDE

    def __init__(self, client: GlideClient) -> None:
        self._client = client
        self._expiry = ExpirySet(ExpiryType.SEC, _TTL)

    @classmethod
    async def open(cls, port: int) -> GlidePeer:
        """Connect with glide's defaults but two limits that would fail the run, not slow it."""
        config = GlideClientConfiguration(
            [NodeAddress(HOST, port)],
            # Glide's default request timeout (250 ms) and in-flight limit (1000) would turn a
            # queue at 1024 tasks into errors; redis-py's pool waits up to 60 s likewise.
            request_timeout=60_000,
            inflight_requests_limit=2 * POOL_SIZE,
        )
        return cls(await GlideClient.create(config))

    async def prepare(self, size: int) -> Pair:
        g, expiry = self._client, self._expiry
        value = os.urandom(packed_size(make_session(size)))
        keys = [f"bench:glide:{size}:{i}" for i in range(POOL_SIZE)]
        await _in_chunks([functools.partial(g.set, k, value, expiry=expiry) for k in keys])

        async def pair(i: int) -> None:
            key = keys[i]
            blob = _loaded(await g.get(key))
            await g.set(key, blob, expiry=expiry)

        return pair

    async def aclose(self) -> None:
        await self._client.close()


class CoredisPeer(Client):
    """coredis: GET + SET EX on ``coredis.Redis`` with its pool capped at 8 connections."""

    name = COREDIS

    def __init__(self, stack: contextlib.AsyncExitStack, client: coredis.Redis[bytes]) -> None:
        self._stack = stack
        self._client = client

    @classmethod
    async def open(cls, port: int) -> CoredisPeer:
        """Connect (coredis 6 runs its pool in a task group: the client is a context manager)."""
        stack = contextlib.AsyncExitStack()
        redis = coredis.Redis(host=HOST, port=port, max_connections=MAX_CONNECTIONS)
        try:
            client = await stack.enter_async_context(redis)
        except BaseException:
            await stack.aclose()
            raise
        return cls(stack, client)

    async def prepare(self, size: int) -> Pair:
        r = self._client
        value = os.urandom(packed_size(make_session(size)))
        keys = [f"bench:coredis:{size}:{i}" for i in range(POOL_SIZE)]
        await _in_chunks([functools.partial(r.set, k, value, ex=_TTL) for k in keys])

        async def pair(i: int) -> None:
            key = keys[i]
            blob = _loaded(await r.get(key))
            await r.set(key, blob, ex=_TTL)

        return pair

    async def aclose(self) -> None:
        await self._stack.aclose()


class StarsessionsClient(Client):
    """starsessions' RedisStore with its JsonSerializer, on a BlockingConnectionPool of 8."""

    name = STARSESSIONS

    def __init__(self, port: int) -> None:
        self._redis = _redis_py(port)
        self._serializer = JsonSerializer()

    async def prepare(self, size: int) -> Pair:
        store = RedisStore(connection=self._redis, prefix=f"bench:star:{size}:")
        serializer = self._serializer
        blob = serializer.serialize(make_session(size))
        ids = [f"{i:040d}" for i in range(POOL_SIZE)]
        await _in_chunks([functools.partial(store.write, s, blob, _TTL, _TTL) for s in ids])

        async def pair(i: int) -> None:
            session_id = ids[i]
            data = serializer.deserialize(await store.read(session_id, _TTL))
            await store.write(session_id, serializer.serialize(data), _TTL, _TTL)

        return pair

    async def aclose(self) -> None:
        await self._redis.aclose()


async def run_pairs(pair: Pair, tasks: int, *, warmup: float, duration: float) -> dict[str, Any]:
    """Run ``tasks`` concurrent loops of ``pair`` for a warm-up, then ``duration`` seconds.

    The warm-up lasts ``warmup`` seconds and at least until ``tasks`` pairs have finished (one
    round; at most :data:`WARMUP_CAP` s): all tasks start at once, and at 1024 tasks a client
    that serves them in turn finishes its first round only after a whole round trip of the
    queue, which a short fixed warm-up would leave inside the measured window (no pair counted
    at all, then a burst).

    Throughput counts the pairs done inside the measured window, each pair in flight at either
    edge counting for the share of its time that lies inside (a pair of 2 ms of which 0.5 ms
    fall in the window counts 0.25). Whole pairs ending in the window would count a client
    whose callers finish in bursts (coredis at 1024 tasks finishes every caller's first pair
    within a few ms, then nobody's for a whole round) as 0 or 1024 pairs a round depending on
    where the window edges fall; shares of time do not depend on that. Latency samples are all
    pairs in flight during the window, including those that started in the warm-up and those
    still running at its end (waited for): a pool that starves some callers (redis-py's
    BlockingConnectionPool lets a task that just released a connection take it again ahead of
    the waiters) shows it in the tail instead of hiding those callers outside the window.
    ``slowest_task_share`` is the least productive task's pairs relative to a fair share
    (1.0 = perfectly fair, 0 = a task got nothing done). ``pairs`` is the whole pairs that
    ended inside the window.
    """
    if not 1 <= tasks <= POOL_SIZE:
        # A task without a key of its own would spin without ever awaiting.
        msg = f"{tasks} tasks: between 1 and POOL_SIZE ({POOL_SIZE})"
        raise ValueError(msg)
    inf = float("inf")
    window = [inf, inf]  # start, end
    done = [0.0] * tasks  # pairs each worker did inside the window (shares at the edges)
    ended = 0  # whole pairs that ended inside the window
    finished = 0  # pairs finished since the start
    one_round = asyncio.Event()
    latencies: list[float] = []
    stop = False

    async def worker(t: int) -> None:
        mine = range(t, POOL_SIZE, tasks)
        nonlocal finished, ended
        clock = time.perf_counter
        while True:
            for i in mine:
                if stop:
                    return
                start = clock()
                await pair(i)
                end = clock()
                finished += 1
                if finished == tasks:
                    one_round.set()
                if start <= window[1] and end >= window[0]:
                    latencies.append(end - start)
                    inside = min(end, window[1]) - max(start, window[0])
                    if inside > 0:
                        done[t] += inside / (end - start)
                    if end <= window[1]:
                        ended += 1
                # A request boundary: a web server runs other tasks between two requests.
                await asyncio.sleep(0)

    loops = [asyncio.create_task(worker(t)) for t in range(tasks)]
    try:
        await asyncio.sleep(warmup)
        await asyncio.wait_for(one_round.wait(), WARMUP_CAP)
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
        "pairs": ended,
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


async def _open_clients(port: int, names: set[str]) -> list[Client]:
    """The clients named, in a fixed order (the rotation per repetition starts from it)."""
    openers: dict[str, Callable[[], Awaitable[Client]]] = {
        RAW: functools.partial(_ready, RawClient(port)),
        STORE: functools.partial(StoreClient.open, port),
        STARSESSIONS: functools.partial(_ready, StarsessionsClient(port)),
        GLIDE: functools.partial(GlidePeer.open, port),
        COREDIS: functools.partial(CoredisPeer.open, port),
        RAW_MSGPACK: functools.partial(_ready, RawMsgpackClient(port)),
    }
    clients: list[Client] = []
    try:
        for name, opener in openers.items():
            if name in names:
                clients.append(await opener())
    except BaseException:
        for client in clients:
            await client.aclose()
        raise
    return clients


async def _ready(client: Client) -> Client:
    return client


async def run(
    port: int,
    *,
    loop: str,
    concurrencies: tuple[int, ...],
    sizes: tuple[int, ...],
    default_size: int,
    size_concurrency: int,
    repeat: int,
    warmup: float,
    duration: float,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Measure every client at each (tasks, payload size) point on the running loop.

    Points: every concurrency at ``default_size``, and every size at ``size_concurrency``; at
    the sizes of :data:`MSGPACK_SIZES` ``redis-py+msgpack`` joins the peers. Clients run
    interleaved (order rotated each repetition), so a ratio compares runs that were seconds,
    not hours, apart. ``loop`` only labels the rows: the caller picks the loop
    (:func:`run_on_loops`).
    """
    points = [(c, default_size) for c in concurrencies]
    points += [(size_concurrency, s) for s in sizes if (size_concurrency, s) not in points]
    members = {
        point: (*PEERS, RAW_MSGPACK) if point[1] in MSGPACK_SIZES else PEERS for point in points
    }
    clients = await _open_clients(port, {n for names in members.values() for n in names})
    try:
        pairs = {}
        for size in sorted({s for _, s in points}):
            for client in clients:
                if any(client.name in members[p] for p in points if p[1] == size):
                    pairs[client.name, size] = await client.prepare(size)
        runs: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for rep in range(repeat):
            for tasks, size in points:
                mine = [c for c in clients if c.name in members[tasks, size]]
                order = mine[rep % len(mine) :] + mine[: rep % len(mine)]
                for client in order:
                    result = await run_pairs(
                        pairs[client.name, size], tasks, warmup=warmup, duration=duration
                    )
                    runs.setdefault((client.name, tasks, size), []).append(result)
                    progress(
                        f"{loop:<7} rep {rep + 1}/{repeat} {tasks:>4} tasks {size:>5} B "
                        f"{client.name:<16} {result['pairs_per_s']:>7.0f} pairs/s "
                        f"{result['cpu_us_per_pair']:5.0f} us CPU/pair "
                        f"p50 {result['p50_ms']:6.2f} p99 {result['p99_ms']:7.2f} "
                        f"max {result['max_ms']:7.1f} ms, fair {result['slowest_task_share']:.2f}"
                    )
    finally:
        for client in clients:
            await client.aclose()
    rows = []
    for tasks, size in points:
        row: dict[str, Any] = {"loop": loop, "tasks": tasks, "payload": size, "clients": {}}
        for name in members[tasks, size]:
            row["clients"][name] = _median_run(runs[name, tasks, size])
        row["ratios"] = _ratios(row["clients"], RAW)
        row["store_vs"] = _store_vs(row["clients"])
        rows.append(row)
    return rows


_RATIO_KEYS = ("pairs_per_s", "cpu_us_per_pair", "p50_ms", "p99_ms", "max_ms")


def _ratio(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> dict[str, float]:
    """Per-repetition ratios (same rep, same point, seconds apart), then their median."""
    return {
        key: statistics.median(
            m[key] / t[key] if t[key] else float("nan") for m, t in zip(mine, theirs, strict=True)
        )
        for key in _RATIO_KEYS
    }


def _ratios(clients: dict[str, Any], baseline: str) -> dict[str, Any]:
    """Every other client against ``baseline`` (``ratios[name][key]``)."""
    base = clients[baseline]["runs"]
    return {n: _ratio(s["runs"], base) for n, s in clients.items() if n != baseline}


def _store_vs(clients: dict[str, Any]) -> dict[str, Any]:
    """The store against every other client (``store_vs[name][key]`` = store ÷ name)."""
    mine = clients[STORE]["runs"]
    return {n: _ratio(mine, s["runs"]) for n, s in clients.items() if n != STORE}


def _runner(loop: str) -> asyncio.Runner:
    if loop == "uvloop":
        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    if loop == "asyncio":
        return asyncio.Runner()
    msg = f"unknown event loop {loop!r}: expected one of {LOOPS}"
    raise ValueError(msg)


def run_on_loops(
    port: int, *, loops: tuple[str, ...] = LOOPS, **settings: Any
) -> list[dict[str, Any]]:
    """:func:`run` once on each event loop (a fresh loop, clients and keys each); all rows.

    The database is emptied before each loop's run, so the server holds the same keys for both.
    """
    rows: list[dict[str, Any]] = []
    for loop in loops:
        admin = redis.Redis(host=HOST, port=port)
        try:
            admin.flushdb()
        finally:
            admin.close()
        with _runner(loop) as runner:
            rows += runner.run(run(port, loop=loop, **settings))
    return rows
