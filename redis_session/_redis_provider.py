"""The Redis provider: one hash per session, every operation one Lua script (one round trip).

Layout: key ``<name>:<HMAC of the id>``, a hash with fields

* ``v`` — version, 16 hex characters, new on every write (the compare-and-set token);
* ``e`` — absolute deadline, unix milliseconds;
* ``i`` — inactivity limit in milliseconds, ``0`` for none (remember-me);
* ``d`` — the AEAD blob.

The key's TTL is always ``min(e - now, i)`` (``e - now`` when ``i`` is 0), set at creation and
refreshed by every load and save inside the same script, so Redis itself forgets expired and
idle sessions. ``now`` is the application's clock, passed as an argument, so the in-memory
provider and Redis agree on time and scripts stay deterministic for replication. The TTL is
relative (``PEXPIRE``, not ``PEXPIREAT``) so a skew between the app's and Redis's clocks cannot
expire every session at once; a key may therefore outlive its deadline by one command's
latency, which is harmless because LOAD itself compares ``e`` with the app's clock.

Every write script treats "the new version is already stored" as success: the connection
manager may resend a command whose connection broke after the server ran it, and that retry
must not turn a save that happened into a conflict.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import anyio

from ._connections import ConnectionManager, PoolStatistics
from ._provider import Record
from ._scripts import Script

__all__ = ["CREATE", "LOAD", "REGENERATE", "SAVE", "SLIDE", "RedisProvider"]

A = TypeVar("A")
B = TypeVar("B")

# The TTL rule, shared by every script: ttl = e - now, capped by i when i > 0.
_TTL = """
local function ttl_of(e, i, now)
  local ttl = e - now
  if i > 0 and i < ttl then ttl = i end
  return ttl
end
"""

#: KEYS: key. ARGV: v, e, i, d, now. 1 = created (or this very create already applied),
#: 0 = the key is taken.
CREATE = Script(
    _TTL
    + """
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  if redis.call('HGET', key, 'v') == ARGV[1] then return 1 end
  return 0
end
local ttl = ttl_of(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5]))
if ttl <= 0 then return 1 end
redis.call('HSET', key, 'v', ARGV[1], 'e', ARGV[2], 'i', ARGV[3], 'd', ARGV[4])
redis.call('PEXPIRE', key, ttl)
return 1
"""
)

#: KEYS: key. ARGV: now. Returns {v, e, i, d} and slides the TTL, or nil when missing or
#: expired. A hash it cannot interpret is returned unchanged and not touched (the store logs
#: it as unreadable); a key of another type reads as missing. Neither is ever deleted.
LOAD = Script(
    _TTL
    + """
local key = KEYS[1]
local r = redis.pcall('HMGET', key, 'v', 'e', 'i', 'd')
if r.err or not r[1] then return nil end
local e, i = tonumber(r[2]), tonumber(r[3])
if not (e and i) then return r end
local ttl = ttl_of(e, i, tonumber(ARGV[1]))
if ttl <= 0 then
  redis.call('DEL', key)
  return nil
end
redis.call('PEXPIRE', key, ttl)
return r
"""
)

#: KEYS: key. ARGV: now. LOAD's sliding half, for when the read itself goes to a replica:
#: returns the master's version (nil when missing or expired) so the caller can tell whether
#: the replica's copy is current.
SLIDE = Script(
    _TTL
    + """
local key = KEYS[1]
local r = redis.pcall('HMGET', key, 'v', 'e', 'i')
if r.err or not r[1] then return nil end
local e, i = tonumber(r[2]), tonumber(r[3])
if not (e and i) then return r[1] end
local ttl = ttl_of(e, i, tonumber(ARGV[1]))
if ttl <= 0 then
  redis.call('DEL', key)
  return nil
end
redis.call('PEXPIRE', key, ttl)
return r[1]
"""
)

#: KEYS: key. ARGV: expected v, new v, d, now. Writes v and d if the stored version is the
#: expected one, keeping e and i and sliding the TTL. 1 = saved (or this very save already
#: applied), 0 = conflict: saved or deleted by someone else, or expired.
SAVE = Script(
    _TTL
    + """
local key = KEYS[1]
local r = redis.call('HMGET', key, 'v', 'e', 'i')
if r[1] == ARGV[2] then return 1 end
if r[1] ~= ARGV[1] then return 0 end
local ttl = ttl_of(tonumber(r[2]), tonumber(r[3]), tonumber(ARGV[4]))
if ttl <= 0 then
  redis.call('DEL', key)
  return 0
end
redis.call('HSET', key, 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', key, ttl)
return 1
"""
)

#: KEYS: old key, new key. ARGV: expected v, new v, e, i, d, now. If the old record is at the
#: expected version and the new key is free: write the new record, set its TTL, delete the old
#: key; 1. Otherwise 0 and nothing changes (1 if this very move already applied).
REGENERATE = Script(
    _TTL
    + """
local old, new = KEYS[1], KEYS[2]
local cur = redis.call('HGET', old, 'v')
if not cur then
  if redis.call('HGET', new, 'v') == ARGV[2] then return 1 end
  return 0
end
if cur ~= ARGV[1] or redis.call('EXISTS', new) == 1 then return 0 end
local ttl = ttl_of(tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6]))
redis.call('DEL', old)
if ttl <= 0 then return 0 end
redis.call('HSET', new, 'v', ARGV[2], 'e', ARGV[3], 'i', ARGV[4], 'd', ARGV[5])
redis.call('PEXPIRE', new, ttl)
return 1
"""
)

_UNREADABLE = Record(version=b"", deadline_ms=0, inactivity_ms=0, blob=b"")


def _record(reply: Any) -> Record | None:
    """Turn a ``{v, e, i, d}`` reply into a record; garbage becomes one that cannot decrypt."""
    if reply is None:
        return None
    try:
        version, deadline, inactivity, blob = reply
        return Record(version, int(deadline), int(inactivity), bytes(blob))
    except (TypeError, ValueError):
        return _UNREADABLE


class RedisProvider:
    """Sessions in Redis through a :class:`ConnectionManager`."""

    name = "redis"

    def __init__(self, manager: ConnectionManager) -> None:
        self._manager = manager

    @property
    def manager(self) -> ConnectionManager:
        """The connection manager (for statistics and tests)."""
        return self._manager

    async def create(self, key: bytes, record: Record, now_ms: int) -> bool:
        """Store ``record`` under a new ``key``; ``False`` if the key is taken."""
        args = (record.version, record.deadline_ms, record.inactivity_ms, record.blob, now_ms)
        return bool(await self._manager.run_script(CREATE, (key,), args))

    async def load(self, key: bytes, now_ms: int) -> Record | None:
        """Return the record and slide its TTL; ``None`` if missing or expired."""
        manager = self._manager
        if not manager.routes_reads:
            return _record(await self._manager.run_script(LOAD, (key,), (now_ms,)))
        # The blob comes from a replica while the master slides the TTL, concurrently. The
        # master's version says whether the replica's copy is current; when replication lags
        # (a session created or saved a moment ago), read the master instead.
        read, version = await _both(
            manager.execute("HMGET", key, "v", "e", "i", "d", read_only=True),
            manager.run_script(SLIDE, (key,), (now_ms,)),
        )
        if version is None:
            return None
        if not isinstance(read, list) or read[0] != version:
            return _record(await self._manager.run_script(LOAD, (key,), (now_ms,)))
        return _record(read)

    async def save(self, key: bytes, expected: bytes, record: Record, now_ms: int) -> bool:
        """Replace the record if its version is still ``expected``; ``False`` otherwise."""
        args = (expected, record.version, record.blob, now_ms)
        return bool(await self._manager.run_script(SAVE, (key,), args))

    async def regenerate(
        self, old_key: bytes, new_key: bytes, expected: bytes, record: Record, now_ms: int
    ) -> bool:
        """Move the session to ``new_key`` (writing ``record``) and delete ``old_key``."""
        args = (
            expected,
            record.version,
            record.deadline_ms,
            record.inactivity_ms,
            record.blob,
            now_ms,
        )
        return bool(await self._manager.run_script(REGENERATE, (old_key, new_key), args))

    async def delete(self, keys: Sequence[bytes]) -> None:
        """Delete ``keys``; missing keys are fine."""
        await self._manager.execute("DEL", *keys)

    def statistics(self) -> PoolStatistics:
        """Return the connection pool figures."""
        return self._manager.statistics()

    async def aclose(self) -> None:
        """Close the connection manager."""
        await self._manager.aclose()

    def __repr__(self) -> str:
        return f"<RedisProvider {self._manager!r}>"


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await two operations concurrently; if one fails, cancel the other and raise its error."""
    results: list[Any] = [None, None]

    async def run(index: int, awaitable: Awaitable[Any]) -> None:
        results[index] = await awaitable

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(run, 0, first)
            group.start_soon(run, 1, second)
    except BaseExceptionGroup as failures:
        # Callers expect the library's own errors (StoreUnavailable...), not a group; the
        # first real failure is the one worth reporting.
        cancelled = anyio.get_cancelled_exc_class()
        real = [exc for exc in failures.exceptions if not isinstance(exc, cancelled)]
        raise (real or list(failures.exceptions))[0] from None
    return results[0], results[1]
