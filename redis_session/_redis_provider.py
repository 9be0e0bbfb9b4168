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

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import anyio

from ._connections import ConnectionManager, PoolStatistics
from ._provider import Record
from ._scripts import Script

__all__ = ["CREATE", "LOAD", "REGENERATE", "SAVE", "SLIDE", "RedisProvider"]

A = TypeVar("A")
B = TypeVar("B")

# Shared by every script. ttl_of applies the TTL rule (e - now, capped by i when i > 0) to the
# stored strings. e and i are clear text that a writer to Redis can edit, so it returns nil
# (unreadable: leave the record alone) unless both are whole numbers, i is in 0..2^50 and e,
# unless already past, is below 2^50 ms (some 35,000 years; every figure stays an exact
# integer in Lua's doubles). NaN, 1.5 or 1e18 must not reach PEXPIRE, which would fail.
# expire() formats the TTL with %d because Redis may turn a Lua number into text with an
# exponent, which PEXPIRE refuses.
_TTL = """
local LIMIT = 2 ^ 50
local function ttl_of(e, i, now)
  e, i = tonumber(e), tonumber(i)
  if not (e and i) or e ~= math.floor(e) or i ~= math.floor(i) then return nil end
  if i < 0 or i >= LIMIT then return nil end
  local ttl = e - now
  if ttl <= 0 then return ttl end
  if e >= LIMIT then return nil end
  if i > 0 and i < ttl then ttl = i end
  return ttl
end
local function expire(key, ttl)
  redis.call('PEXPIRE', key, string.format('%d', ttl))
end
"""

#: KEYS: key. ARGV: v, e, i, d, now. 1 = created (or this very create already applied),
#: 0 = the key is taken (or e and i are not integers).
CREATE = Script(
    _TTL
    + """
local key = KEYS[1]
if redis.call('EXISTS', key) == 1 then
  if redis.call('HGET', key, 'v') == ARGV[1] then return 1 end
  return 0
end
local ttl = ttl_of(ARGV[2], ARGV[3], tonumber(ARGV[5]))
if not ttl then return 0 end
if ttl <= 0 then return 1 end
redis.call('HSET', key, 'v', ARGV[1], 'e', ARGV[2], 'i', ARGV[3], 'd', ARGV[4])
expire(key, ttl)
return 1
"""
)

#: KEYS: key. ARGV: now. Returns {v, e, i, d} and slides the TTL, or nil when missing or
#: expired. A hash whose e or i is not an integer is returned unchanged and not touched (the
#: store logs it as unreadable); a key of another type reads as missing. Neither is deleted.
LOAD = Script(
    _TTL
    + """
local key = KEYS[1]
local r = redis.pcall('HMGET', key, 'v', 'e', 'i', 'd')
if r.err or not r[1] then return nil end
local ttl = ttl_of(r[2], r[3], tonumber(ARGV[1]))
if not ttl then return r end
if ttl <= 0 then
  redis.call('DEL', key)
  return nil
end
expire(key, ttl)
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
local ttl = ttl_of(r[2], r[3], tonumber(ARGV[1]))
if not ttl then return r[1] end
if ttl <= 0 then
  redis.call('DEL', key)
  return nil
end
expire(key, ttl)
return r[1]
"""
)

#: KEYS: key. ARGV: expected v, new v, d, now, e, i. Writes v and d if the stored version is
#: the expected one and the stored e and i are the ones given (those the blob is bound to),
#: and slides the TTL. 1 = saved (or this very save already applied), 0 = conflict: saved or
#: deleted by someone else, expired, or e or i edited behind our back (left as they are).
SAVE = Script(
    _TTL
    + """
local key = KEYS[1]
local r = redis.pcall('HMGET', key, 'v', 'e', 'i')
if r.err then return 0 end
if r[1] == ARGV[2] then return 1 end
if r[1] ~= ARGV[1] or r[2] ~= ARGV[5] or r[3] ~= ARGV[6] then return 0 end
local ttl = ttl_of(r[2], r[3], tonumber(ARGV[4]))
if not ttl then return 0 end
if ttl <= 0 then
  redis.call('DEL', key)
  return 0
end
redis.call('HSET', key, 'v', ARGV[2], 'd', ARGV[3])
expire(key, ttl)
return 1
"""
)

#: KEYS: old key, new key. ARGV: expected v, new v, e, i, d, now. If the old record is at the
#: expected version with the given e and i, and the new key is free: write the new record, set
#: its TTL, delete the old key; 1. Otherwise 0 and nothing changes (1 if this very move
#: already applied).
REGENERATE = Script(
    _TTL
    + """
local old, new = KEYS[1], KEYS[2]
local r = redis.pcall('HMGET', old, 'v', 'e', 'i')
if r.err then return 0 end
if not r[1] then
  if redis.pcall('HGET', new, 'v') == ARGV[2] then return 1 end
  return 0
end
if r[1] ~= ARGV[1] or r[2] ~= ARGV[3] or r[3] ~= ARGV[4] then return 0 end
if redis.call('EXISTS', new) == 1 then return 0 end
local ttl = ttl_of(ARGV[3], ARGV[4], tonumber(ARGV[6]))
if not ttl then return 0 end
redis.call('DEL', old)
if ttl <= 0 then return 0 end
redis.call('HSET', new, 'v', ARGV[2], 'e', ARGV[3], 'i', ARGV[4], 'd', ARGV[5])
expire(new, ttl)
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
        # One deadline for the whole load, so the fallback read cannot extend it.
        deadline = manager.deadline()
        read, version = await _both(
            manager.execute("HMGET", key, "v", "e", "i", "d", read_only=True, deadline=deadline),
            manager.run_script(SLIDE, (key,), (now_ms,), deadline=deadline),
        )
        if version is None:
            return None
        if not isinstance(read, list) or read[0] != version:
            return _record(await manager.run_script(LOAD, (key,), (now_ms,), deadline=deadline))
        return _record(read)

    async def save(self, key: bytes, expected: bytes, record: Record, now_ms: int) -> bool:
        """Replace the record if its version is still ``expected``; ``False`` otherwise."""
        args = (
            expected,
            record.version,
            record.blob,
            now_ms,
            record.deadline_ms,
            record.inactivity_ms,
        )
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
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # We are being cancelled, and a child's failure must not swallow that.
            raise asyncio.CancelledError from None
        cancelled = anyio.get_cancelled_exc_class()
        real = [exc for exc in failures.exceptions if not isinstance(exc, cancelled)]
        raise (real or list(failures.exceptions))[0] from None
    return results[0], results[1]
