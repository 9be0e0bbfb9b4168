"""The in-memory provider: the Redis provider's semantics in a dict of this process.

Used when the configuration has no ``session.redis`` section: tests, single processes.

Each operation is synchronous inside its ``async def`` (no await between check and set), and
asyncio runs one task at a time, so every operation is atomic without a lock. Sessions live
only as long as the process, and each process has its own. Its clock is this process's wall
clock (``clock``), the one clock every deadline here is decided by.

Expired entries vanish when touched; a min-heap of expiry times lets every operation also drop
the entries that expired untouched, so memory stays bounded by the live sessions.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence

import attrs

from ._provider import (
    CLOCK,
    CLOCK_AHEAD_MS,
    CLOCK_BEHIND_MS,
    CREATED,
    MOVED,
    TAKEN,
    TOMBSTONE_MS,
    Found,
    Record,
    ttl_ms,
    wall_clock_ms,
)
from ._statistics import PoolStatistics

__all__ = ["MemoryProvider"]

_NO_POOL = PoolStatistics(max_connections=0, open=0, in_use=0, idle=0, waiting=0)


@attrs.define(slots=True, eq=False)
class _Entry:
    #: ``None`` for a tombstone (a regenerated session's old key): it holds no record, as the
    #: Redis provider's hash without ``v``.
    record: Record | None
    #: When the entry disappears (unix ms): the Redis TTL as an absolute time.
    expires_ms: int


class MemoryProvider:
    """Sessions in a dict of this process. Not shared between processes or event loops."""

    name = "memory"
    sharded = False

    def __init__(self, clock: Callable[[], int] = wall_clock_ms) -> None:
        #: The clock every deadline is decided by (unix ms).
        self.clock = clock
        # The whole state: live entries by key, and a heap of (expiry, tiebreak, key, entry).
        # Each entry has at most one heap item; a slid entry's stale item is pushed again
        # at its new expiry when it surfaces, and an item whose entry was replaced is dropped.
        self._entries: dict[bytes, _Entry] = {}
        self._heap: list[tuple[int, int, bytes, _Entry]] = []
        self._tiebreak = itertools.count()

    def _purge(self, now_ms: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            _, _, key, entry = heapq.heappop(heap)
            if self._entries.get(key) is not entry:
                continue
            if entry.expires_ms <= now_ms:
                del self._entries[key]
            else:
                self._schedule(key, entry)

    def _schedule(self, key: bytes, entry: _Entry) -> None:
        heapq.heappush(self._heap, (entry.expires_ms, next(self._tiebreak), key, entry))

    def _live(self, key: bytes, now_ms: int) -> _Entry | None:
        # After a purge every entry left is live: an entry's heap item is never later than its
        # expiry (expiries only grow), so an expired entry's item has surfaced and removed it.
        # And a live entry has time left before its deadline too, as expiry <= deadline.
        self._purge(now_ms)
        return self._entries.get(key)

    def _put(self, key: bytes, record: Record, now_ms: int) -> bool:
        ttl = ttl_ms(record.deadline_ms, record.inactivity_ms, now_ms)
        if ttl <= 0:
            return False
        entry = _Entry(record, now_ms + ttl)
        self._entries[key] = entry
        self._schedule(key, entry)
        return True

    def now_ms(self) -> int:
        """Return this provider's clock (unix ms)."""
        return self.clock()

    def deadline(self) -> float | None:
        """Return ``None``: every operation finishes without waiting."""
        return None

    async def create(
        self, key: bytes, record: Record, created_ms: int, deadline: float | None = None
    ) -> int:
        """Store ``record`` under a new ``key``: ``CREATED``, ``TAKEN`` or ``CLOCK``."""
        now_ms = self.clock()
        if not now_ms - CLOCK_BEHIND_MS <= created_ms <= now_ms + CLOCK_AHEAD_MS:
            return CLOCK
        existing = self._live(key, now_ms)
        if existing is not None:
            # Taken (a tombstone too), unless by this very record (a retried create), as the
            # Lua script says.
            mine = existing.record is not None and existing.record.version == record.version
            return CREATED if mine else TAKEN
        if record.deadline_ms <= now_ms:
            return CLOCK  # born expired: stamp again rather than hand out a dead session
        self._put(key, record, now_ms)
        return CREATED

    async def load(self, keys: Sequence[bytes], deadline: float | None = None) -> Found:
        """Return the first live record among ``keys`` and its index; slides its idle clock.

        ``MOVED`` when none holds a record but one holds a tombstone.
        """
        now_ms = self.clock()
        moved = False
        for index, key in enumerate(keys):
            entry = self._live(key, now_ms)
            if entry is None:
                continue
            record = entry.record
            if record is None:
                moved = True
                continue
            ttl = ttl_ms(record.deadline_ms, record.inactivity_ms, now_ms)
            entry.expires_ms = now_ms + ttl
            return index, record
        return MOVED if moved else None

    async def save(
        self, key: bytes, expected: bytes, record: Record, deadline: float | None = None
    ) -> bool:
        """Replace the record if its version is still ``expected``; ``False`` otherwise."""
        now_ms = self.clock()
        entry = self._live(key, now_ms)
        current = None if entry is None else entry.record
        if entry is None or current is None:
            return False  # nothing, or a tombstone: never brought back by a save
        if current.version == record.version:
            return True
        clocks = (current.deadline_ms, current.inactivity_ms)
        if current.version != expected or clocks != (record.deadline_ms, record.inactivity_ms):
            return False
        entry.record = attrs.evolve(current, version=record.version, blob=record.blob)
        entry.expires_ms = now_ms + ttl_ms(current.deadline_ms, current.inactivity_ms, now_ms)
        return True

    async def regenerate(
        self,
        old_key: bytes,
        new_key: bytes,
        expected: bytes,
        record: Record,
        deadline: float | None = None,
        *,
        clock: tuple[int, int] | None = None,
        created_ms: int | None = None,
        operation: str = "regenerate",
        tombstone: bool = True,
    ) -> int:
        """Move the session to ``new_key`` (writing ``record``); leave a tombstone at ``old_key``.

        ``tombstone=False`` (a move that keeps the id): ``old_key`` is deleted instead.
        """
        expected_clock = clock or (record.deadline_ms, record.inactivity_ms)
        now_ms = self.clock()
        old = self._live(old_key, now_ms)
        current = None if old is None else old.record
        if old is None or current is None:
            new = self._live(new_key, now_ms)
            moved = None if new is None else new.record
            # Already moved by this very call (a retry): done, as the Lua script says.
            return CREATED if moved is not None and moved.version == record.version else TAKEN
        clocks = (current.deadline_ms, current.inactivity_ms)
        if current.version != expected or clocks != expected_clock:
            return TAKEN
        if self._live(new_key, now_ms) is not None:
            return TAKEN
        if created_ms is not None and not (
            now_ms - CLOCK_BEHIND_MS <= created_ms <= now_ms + CLOCK_AHEAD_MS
        ):
            return CLOCK
        if ttl_ms(record.deadline_ms, record.inactivity_ms, now_ms) <= 0:
            return CLOCK  # checked before the old entry goes: a refused move loses nothing
        if tombstone:
            # It lives no longer than the old key would have (nor than TOMBSTONE_MS).
            marker = _Entry(None, now_ms + min(TOMBSTONE_MS, old.expires_ms - now_ms))
            self._entries[old_key] = marker
            self._schedule(old_key, marker)
        else:
            del self._entries[old_key]
        self._put(new_key, record, now_ms)
        return CREATED

    async def delete(self, keys: Sequence[bytes], deadline: float | None = None) -> None:
        """Delete ``keys``; missing keys are fine."""
        for key in keys:
            self._entries.pop(key, None)

    def statistics(self) -> PoolStatistics:
        """Return zeros: there is no connection pool."""
        return _NO_POOL

    def check_caller(self) -> None:
        """Accept every caller: memory holds no loop-bound resources."""

    async def aclose(self) -> None:
        """Drop every session."""
        self._entries.clear()
        self._heap.clear()

    def __repr__(self) -> str:
        return f"<MemoryProvider [{len(self._entries)} entries]>"
