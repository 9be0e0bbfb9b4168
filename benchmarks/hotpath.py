"""Micro-benchmarks: the library's serialize, encrypt, decrypt, deserialize against bare primitives.

"Bare" is what any session store must pay at least: ``msgpack.packb`` / ``msgpack.unpackb`` of
the data, and ``AESGCM.encrypt`` / ``decrypt`` of the payload with the same key and associated
data (nonce given). "Ours" is what the store calls: ``Codec.encode`` / ``decode`` and
``KeyRing.encrypt`` / ``decrypt`` (which add the ``[created, remember_me, data]`` envelope, the
type checks, the fresh random nonce and the blob header). Every case is timed with the same
harness (``timeit`` on a statement, no extra call layer), cases interleaved within each
repetition so machine noise hits all alike; the figure is the median per-operation time.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import timeit
from collections.abc import Callable
from typing import Any

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks.payloads import SIZES, make_session
from redis_session import open_session_store
from redis_session._codec import Codec
from redis_session._crypto import KeyRing
from redis_session._provider import associated_data

#: (name, statement). ``bare.*`` cases are the primitives alone; the rest is the library's.
CASES: tuple[tuple[str, str], ...] = (
    ("bare.packb", "packb(data)"),
    ("bare.unpackb", "unpackb(packed)"),
    ("bare.encrypt", "aead.encrypt(nonce, payload, aad)"),
    ("bare.decrypt", "aead.decrypt(nonce, ciphertext, aad)"),
    ("bare.urandom12", "urandom(12)"),
    ("serialize", "codec.encode(created, False, data)"),
    ("deserialize", "codec.decode(payload)"),
    ("encrypt", "keyring.encrypt(payload, aad)"),
    ("decrypt", "keyring.decrypt(blob, aad)"),
    ("serialize+encrypt", "keyring.encrypt(codec.encode(created, False, data), aad)"),
    ("decrypt+deserialize", "codec.decode(keyring.decrypt(blob, aad))"),
)

#: Ours against the bare primitives it stands for (numerator, denominators summed).
RATIOS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("serialize", ("bare.packb",)),
    ("deserialize", ("bare.unpackb",)),
    ("encrypt", ("bare.encrypt",)),
    ("decrypt", ("bare.decrypt",)),
    ("serialize+encrypt", ("bare.packb", "bare.encrypt")),
    ("decrypt+deserialize", ("bare.decrypt", "bare.unpackb")),
    ("store.load+save (memory)", ("bare.packb", "bare.encrypt", "bare.decrypt", "bare.unpackb")),
)

_SECRET = "benchmark secret, not a real one"


def _namespace(size: int) -> dict[str, Any]:
    data = make_session(size)
    codec: Codec[dict[str, Any]] = Codec(dict)
    keyring = KeyRing.from_secrets(_SECRET)
    created = time.time_ns() // 1_000_000
    key = keyring.redis_key("x" * 43, b"authelia_session:")
    aad = associated_data(key, os.urandom(8).hex().encode(), created + 3_600_000, 300_000)
    payload = codec.encode(created, False, data)
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    return {
        "data": data,
        "packed": msgpack.packb(data),
        "packb": msgpack.packb,
        "unpackb": msgpack.unpackb,
        "urandom": os.urandom,
        "codec": codec,
        "keyring": keyring,
        "created": created,
        "aad": aad,
        "payload": payload,
        "blob": keyring.encrypt(payload, aad),
        "aead": aead,
        "nonce": nonce,
        "ciphertext": aead.encrypt(nonce, payload, aad),
    }


def _store_pairs(
    loop: asyncio.AbstractEventLoop, size: int
) -> tuple[Callable[[int], float], Callable[[], None]]:
    """Time ``number`` load+save pairs of the whole store on the in-memory provider.

    That is the store's CPU cost per request without the network: the primitives plus key
    hashing, id checks, the provider and the ``Session`` objects.
    """
    data = make_session(size)
    store = loop.run_until_complete(open_session_store({"secret": _SECRET}))
    session_id = loop.run_until_complete(store.create(data)).id

    async def pairs(number: int) -> float:
        load, save = store.load, store.save
        t0 = time.perf_counter()
        for _ in range(number):
            session = await load(session_id)
            await save(session)  # type: ignore[arg-type]
        return time.perf_counter() - t0

    def timed(number: int) -> float:
        return loop.run_until_complete(pairs(number))

    def close() -> None:
        loop.run_until_complete(store.aclose())

    return timed, close


def run(*, repeat: int, batch_seconds: float) -> dict[str, Any]:
    """Time every case at every payload size; return medians (ns per op) and ratios."""
    results: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    try:
        for size in SIZES:
            results[str(size)] = _run_size(loop, size, repeat, batch_seconds)
    finally:
        loop.close()
    return results


def _run_size(
    loop: asyncio.AbstractEventLoop, size: int, repeat: int, batch_seconds: float
) -> dict[str, Any]:
    ns = _namespace(size)
    timers: dict[str, Callable[[int], float]] = {
        name: timeit.Timer(stmt, globals=ns).timeit for name, stmt in CASES
    }
    timers["store.load+save (memory)"], close_store = _store_pairs(loop, size)
    try:
        samples = _measure(timers, repeat, batch_seconds)
    finally:
        close_store()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratios = {}
    for name, parts in RATIOS:
        bare = sum(medians[p] for p in parts)
        ratios[name] = {"ours_ns": medians[name], "bare_ns": bare, "ratio": medians[name] / bare}
    return {
        "payload_bytes": len(ns["payload"]),
        "blob_bytes": len(ns["blob"]),
        "ns_per_op": medians,
        "samples_ns": samples,
        "ratios": ratios,
    }


def _measure(
    timers: dict[str, Callable[[int], float]], repeat: int, batch_seconds: float
) -> dict[str, list[float]]:
    """Nanoseconds per operation of each timer, one sample per repetition."""
    # Calibration doubles as the warm-up: the smallest power-of-two loop count whose batch
    # takes at least batch_seconds.
    numbers = {}
    for name, fn in timers.items():
        number = 1
        while fn(number) < batch_seconds:
            number *= 2
        numbers[name] = number
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for rep in range(repeat):
        names = list(timers)
        # Rotate the order each repetition: no case always runs right after another.
        names = names[rep % len(names) :] + names[: rep % len(names)]
        for name in names:
            elapsed = timers[name](numbers[name])
            samples[name].append(elapsed / numbers[name] * 1e9)
    return samples
