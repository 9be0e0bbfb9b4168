"""Profile the store's load + save at 64 tasks and 8 connections: where a pair's time goes.

``python -m benchmarks.profile_store [--seconds 5] [--tasks 64] [--size 1024]``

Runs the same workload as the macro benchmark under cProfile (deterministic, so absolute times
are inflated by its per-call hook; the split between functions is what to read), then prints:

* the cost per pair grouped by where the code lives (the event loop, redis-py's connection,
  this library's pool, store, codec, crypto, msgpack, AES-GCM...);
* the functions with the most own time per pair, and call counts per pair (an extra
  allocation or round trip shows up as a count above what one load + save needs).

``--layers`` instead splits the CPU of a pair without a profiler (whose per-call hook inflates
small Python calls several times over): process CPU per pair of the whole store, then of the
same two scripts (a LOAD and a SAVE of the same size, packed in advance) sent straight through
the connection manager (pool, event loop, sockets: what is left when the store does nothing),
alternated in one process; and, timed with ``timeit`` (best of many, no I/O), the store's own
work around each command: a load's id check, key name, reply parsing, decryption, decoding and
Session, and a save's encoding, encryption and packing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
import timeit
from collections import defaultdict
from typing import Any

import redis

from benchmarks import macro
from benchmarks._server import HOST, redis_server
from benchmarks.payloads import make_session

#: (label, substring of the code's file name or function name), first match wins.
_GROUPS = (
    ("redis_session._pool", "redis_session/_pool.py"),
    ("redis_session._connections", "redis_session/_connections.py"),
    ("redis_session._redis_provider", "redis_session/_redis_provider.py"),
    ("redis_session._store", "redis_session/_store.py"),
    ("redis_session._codec", "redis_session/_codec.py"),
    ("redis_session._crypto", "redis_session/_crypto.py"),
    ("redis_session (other)", "redis_session/"),
    ("redis-py connection/parser", "redis/"),
    ("hiredis (pack/parse, C)", "hiredis"),
    ("asyncio event loop", "asyncio/"),
    ("benchmark loop", "benchmarks/"),
    ("msgpack (C)", "msgpack"),
    ("cryptography AES-GCM (C)", "cryptography"),
    ("attrs __init__ (generated)", "<attrs generated"),
)


def _group(filename: str, funcname: str) -> str:
    where = f"{filename}:{funcname}"
    for label, needle in _GROUPS:
        if needle in where:
            return label
    if filename == "~":
        # Builtins: name the interesting ones.
        for needle, label in (
            ("socket", "socket send/recv (C)"),
            ("select", "epoll (C)"),
            ("epoll", "epoll (C)"),
            ("urandom", "os.urandom"),
            ("hmac", "hmac / hashlib"),
            ("digest", "hmac / hashlib"),
            ("msgpack", "msgpack (C)"),
            ("Packer", "msgpack (C)"),
            ("unpackb", "msgpack (C)"),
        ):
            if needle in funcname:
                return label
        return "other builtins"
    return "other Python"


def _commandstats(port: int) -> dict[str, tuple[int, float]]:
    """``{command: (calls, total usec)}`` from the server's INFO commandstats."""
    with redis.Redis(host=HOST, port=port, protocol=2) as admin:
        info = admin.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
        for name, v in info.items()
    }


async def _workload(
    port: int, tasks: int, size: int, seconds: float
) -> tuple[Any, int, dict[str, tuple[int, float]]]:
    client = await macro.StoreClient.open(port)
    try:
        pair = await client.prepare(size)
        await macro.run_pairs(pair, tasks, warmup=0.5, duration=0.5)  # warm up, untimed
        before = _commandstats(port)
        profiler = cProfile.Profile()
        profiler.enable()
        result = await macro.run_pairs(pair, tasks, warmup=0.0, duration=seconds)
        profiler.disable()
        after = _commandstats(port)
    finally:
        await client.aclose()
    server = {
        name: (calls - before.get(name, (0, 0.0))[0], usec - before.get(name, (0, 0.0))[1])
        for name, (calls, usec) in after.items()
    }
    return profiler, result["pairs"], server


async def _layers(port: int, tasks: int, size: int, seconds: float, rounds: int) -> None:
    """Print the CPU per pair of the store, of the manager alone, and the store's own work."""
    # Private names on purpose: this takes the store apart to time its layers.
    from redis_session import _redis_provider, _wire  # noqa: PLC0415

    client = await macro.StoreClient.open(port)
    try:
        store: Any = client._store
        pair = await client.prepare(size)
        manager = store._provider.manager
        sessions = [await store.create(make_session(size)) for _ in range(macro.POOL_SIZE)]
        loaded = [await store.load(s.id) for s in sessions]
        packed = []
        for s in loaded:
            load = _wire.pack("EVALSHA", _redis_provider.LOAD.sha, 1, s._key)
            # Expecting a version that is not stored and giving the stored one as new: the
            # script answers "already saved" (1) without writing, after the same reads.
            record = store._seal(s._key, store._encode(1, False, s.data), 0, 0)
            blob = record.blob
            save = _wire.pack(
                "EVALSHA", _redis_provider.SAVE.sha, 1, s._key, b"-", s._version, blob,
                s._deadline_ms, s._inactivity_ms,
            )  # fmt: skip
            packed.append((load, save))

        async def bare(i: int) -> None:
            load, save = packed[i]
            await manager.execute_packed(load)
            if await manager.execute_packed(save) != 1:
                msg = "the bare SAVE did not answer 1: the layer split is invalid"
                raise RuntimeError(msg)

        runs: dict[str, list[float]] = {"store (load + save)": [], "manager alone": []}
        fns = dict(zip(runs, (pair, bare), strict=True))
        for fn in fns.values():
            await macro.run_pairs(fn, tasks, warmup=0.2, duration=0.3)
        for _ in range(rounds):
            for name, fn in fns.items():
                result = await macro.run_pairs(fn, tasks, warmup=0.1, duration=seconds)
                runs[name].append(result["cpu_us_per_pair"])
        print(f"process CPU per pair at {tasks} tasks, {size} B (median of {rounds}, alternated):")
        for name, values in runs.items():
            shown = ", ".join(f"{v:.1f}" for v in values)
            print(f"  {name:<32} {statistics.median(values):7.1f} us   ({shown})")

        s = loaded[0]
        reply = await manager.run_script(_redis_provider.LOAD, [s._key], ())

        def load_side() -> object:
            # What SessionStore.load does around the provider's call, in the same helpers.
            keys = store._keys_of(s.id)
            return store._opened(s.id, keys, _redis_provider._found(reply))

        def save_side() -> bytes:
            payload = store._encode(s._created_ms, s._remember_me, s.data)
            record = store._seal(s._key, payload, s._deadline_ms, s._inactivity_ms)
            # Packed as RedisProvider.save packs it.
            key, expected, version, blob = s._key, s._version, record.version, record.blob
            e, i = b"%d" % record.deadline_ms, b"%d" % record.inactivity_ms
            return _redis_provider._SAVE_PACKED % (
                len(key), key, len(expected), expected, len(version), version,
                len(blob), blob, len(e), e, len(i), i,
            )  # fmt: skip

        print("the store's own work per command (timeit, best of 15 x 2000, no I/O):")
        for name, fn in (("load: id, key, reply, decrypt, decode", load_side),
                         ("save: encode, encrypt, pack", save_side)):  # fmt: skip
            best = min(timeit.repeat(fn, number=2000, repeat=15)) / 2000
            print(f"  {name:<40} {best * 1e6:6.2f} us")
    finally:
        await client.aclose()


def main() -> None:
    """Run the profile and print the summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_store")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--dump", help="also write the raw pstats to this file")
    parser.add_argument(
        "--layers", action="store_true", help="split the CPU per pair by layer, unprofiled"
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --layers: alternations")
    args = parser.parse_args()
    if args.layers:
        with redis_server() as port:
            asyncio.run(_layers(port, args.tasks, args.size, args.seconds, args.rounds))
        return
    with redis_server() as port:
        began = time.perf_counter()
        profiler, pairs, server = asyncio.run(_workload(port, args.tasks, args.size, args.seconds))
        wall = time.perf_counter() - began
    stats = pstats.Stats(profiler)
    if args.dump:
        stats.dump_stats(args.dump)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats has no public API
    total = sum(own for (_cc, _nc, own, _cum, _callers) in raw.values())
    print(
        f"{pairs} pairs at {args.tasks} tasks, {args.size} B payload, profiled for "
        f"{args.seconds:g} s (run took {wall:.1f} s with setup); profiled CPU "
        f"{total / pairs * 1e6:.1f} us per pair\n"
    )
    groups: dict[str, float] = defaultdict(float)
    for (filename, _line, funcname), (_cc, _nc, own, _cum, _callers) in raw.items():
        groups[_group(filename, funcname)] += own
    print(f"{'own time per pair, by where the code lives':<44} {'us/pair':>8} {'share':>6}")
    for label, own in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<42} {own / pairs * 1e6:8.1f} {own / total:6.1%}")
    print("\nredis-server, per pair (INFO commandstats; includes Lua, excludes network I/O):")
    for name, (calls, usec) in sorted(server.items(), key=lambda kv: -kv[1][1]):
        if calls:
            print(
                f"  {name:<42} {calls / pairs:5.2f} calls {usec / pairs:6.1f} us "
                f"({usec / calls:.1f} us/call)"
            )
    print(f"\n{'top functions by own time':<70} {'calls/pair':>10} {'us/pair':>8} {'cum':>8}")
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[: args.top]
    for (filename, line, funcname), (_cc, ncalls, own, cum, _callers) in rows:
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        name = f"{short}:{line}({funcname})"[-70:]
        print(
            f"  {name:<68} {ncalls / pairs:10.2f} {own / pairs * 1e6:8.1f} {cum / pairs * 1e6:8.1f}"
        )


if __name__ == "__main__":
    main()
