"""One storage backend per test, seen two ways: through stores, and as raw records.

``Backend`` opens any number of :class:`SessionStore` objects that share one storage (one Redis
database, or one in-memory provider), and reads or edits the stored records directly, so the
same test runs against both providers.
"""

from __future__ import annotations

import time
from typing import Any, cast

import attrs
import redis as redis_sync

from redis_session._codec import Codec
from redis_session._config_loading import load_config
from redis_session._memory import MemoryProvider
from redis_session._opener import _keyring, open_session_store
from redis_session._store import SessionStore

SECRET = "a test secret that is long enough to be taken seriously"

FIELDS = (b"v", b"e", b"i", b"d")


def raw_client(proc: Any, db: int = 0) -> redis_sync.Redis:
    """A binary (not decoding) admin client on database ``db`` of a harness server."""
    return redis_sync.Redis(
        host=proc.host,
        port=proc.port,
        username=proc.admin_username,
        password=proc.admin_password,
        db=db,
        protocol=2,
        socket_timeout=5,
    )


def cluster_client(cluster: Any) -> redis_sync.RedisCluster:
    """A binary admin client of the harness cluster (redis-py routes each command by key)."""
    first = cluster.nodes[0]
    return redis_sync.RedisCluster(
        host=first.host,
        port=first.port,
        username=first.admin_username,
        password=first.admin_password,
        protocol=2,
        socket_timeout=5,
    )


def make_backend(kind: str, proc: Any = None) -> Backend:
    """A ``Backend`` in memory, on the harness server ``proc``, or on the harness cluster."""
    if kind == "memory":
        return Backend("memory")
    if kind == "cluster":
        proc.reset()
        section = {"cluster": {"nodes": proc.seeds()}}
        return Backend("cluster", redis_section=section, raw=cluster_client(proc))
    return Backend("redis", redis_section=proc.redis_section(), raw=raw_client(proc))


@attrs.define
class Backend:
    """Stores sharing one storage, plus raw access to what they wrote."""

    kind: str
    #: The ``session.redis`` mapping, or None for memory.
    redis_section: dict[str, Any] | None = None
    #: Binary admin client on the same database (Redis only).
    raw: redis_sync.Redis | redis_sync.RedisCluster | None = None
    _memory: MemoryProvider | None = None
    _stores: list[SessionStore[Any]] = attrs.Factory(list)

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The session mapping for this backend, with ``overrides`` applied."""
        cfg: dict[str, Any] = {"secret": SECRET}
        if self.redis_section is not None:
            cfg["redis"] = dict(self.redis_section)
        cfg.update(overrides)
        return cfg

    async def open(self, data_type: type[Any] = dict, **overrides: Any) -> SessionStore[Any]:
        """Open a store on the shared storage; it is closed by :meth:`aclose`."""
        mapping = self.config(**overrides)
        if self.kind != "memory":
            store: SessionStore[Any] = await open_session_store(mapping, data_type=data_type)
        else:
            if self._memory is None:
                self._memory = MemoryProvider()
            cfg = load_config(mapping)
            store = SessionStore(cfg, self._memory, Codec(data_type), _keyring(cfg))
        self._stores.append(store)
        return store

    async def aclose(self) -> None:
        """Close every store opened here."""
        for store in self._stores:
            await store.aclose()
        self._stores.clear()

    async def reset(self) -> None:
        """Close the stores and empty the storage, for the next example of a property test."""
        await self.aclose()
        if self.raw is not None:
            self.raw.flushdb()
        self._memory = None

    def close_raw(self) -> None:
        """Close the raw client, if any."""
        if self.raw is not None:
            self.raw.close()

    # -- raw records --

    def keys(self) -> list[bytes]:
        """Every key in the storage."""
        if self.raw is not None:
            return sorted(self.raw.scan_iter(count=1000))
        assert self._memory is not None
        return sorted(self._memory._entries)

    def records(self) -> list[bytes]:
        """The keys holding a session record (not a regenerate's tombstone)."""
        return [key for key in self.keys() if b"v" in self.fields(key)]

    def fields(self, key: bytes) -> dict[bytes, bytes]:
        """The stored fields of one session (``v e i d``); empty if there is none."""
        if self.raw is not None:
            return cast(dict[bytes, bytes], self.raw.hgetall(key))
        assert self._memory is not None
        entry = self._memory._entries.get(key)
        if entry is None:
            return {}
        r = entry.record
        if r is None:
            return {b"m": b"1"}  # a tombstone, as the Redis provider writes it
        return {
            b"v": r.version,
            b"e": b"%d" % r.deadline_ms,
            b"i": b"%d" % r.inactivity_ms,
            b"d": r.blob,
        }

    def set_fields(self, key: bytes, values: dict[bytes, bytes]) -> None:
        """Overwrite some fields of an existing session behind the store's back."""
        if self.raw is not None:
            self.raw.hset(key, mapping=values)  # type: ignore[arg-type]
            return
        assert self._memory is not None
        entry = self._memory._entries[key]
        merged = {**self.fields(key), **values}
        entry.record = attrs.evolve(
            entry.record,
            version=merged[b"v"],
            deadline_ms=int(merged[b"e"]),
            inactivity_ms=int(merged[b"i"]),
            blob=merged[b"d"],
        )

    def pttl(self, key: bytes) -> int:
        """Milliseconds the key has left (Redis PTTL; -2 when missing)."""
        if self.raw is not None:
            return int(self.raw.pttl(key))
        assert self._memory is not None
        entry = self._memory._entries.get(key)
        if entry is None:
            return -2
        return entry.expires_ms - time.time_ns() // 1_000_000

    def dump(self) -> bytes:
        """Every byte stored: keys, field names and values, concatenated."""
        out = []
        for key in self.keys():
            out.append(key)
            for name, value in self.fields(key).items():
                out += [name, value]
        return b"\n".join(out)
