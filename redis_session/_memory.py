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
    LIMIT,
    MOVED,
    TAKEN,
    TOMBSTONE_MS,
    Found,
    Listed,
    Login,
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
    #: A session of a user: its login number (``l``) and when it was last loaded or saved.
    login: int = 0
    active_ms: int = 0


@attrs.define(slots=True, eq=False)
class _User:
    """A user's base key B and index B:e together (they share one lifetime)."""

    expires_ms: int
    seq: int = 0
    #: The not-before mark: sessions with a login number up to it are revoked.
    nb: int | None = None
    #: Public id -> (session key, created ms, remember-me).
    entries: dict[bytes, tuple[bytes, int, bool]] = attrs.Factory(dict)
    metadata: dict[bytes, bytes] = attrs.Factory(dict)


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
        # Users' bases and indexes, by base key; dropped when touched after their expiry, and
        # swept by the same rule in _purge_users so an idle user's state does not stay.
        self._users: dict[bytes, _User] = {}
        self._user_heap: list[tuple[int, int, bytes, _User]] = []
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

    def _put(self, key: bytes, record: Record, now_ms: int, login: int = 0) -> bool:
        ttl = ttl_ms(record.deadline_ms, record.inactivity_ms, now_ms)
        if ttl <= 0:
            return False
        entry = _Entry(record, now_ms + ttl, login, now_ms)
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
            if self._revoked(entry, now_ms):
                del self._entries[key]
                continue
            ttl = ttl_ms(record.deadline_ms, record.inactivity_ms, now_ms)
            entry.expires_ms = now_ms + ttl
            entry.active_ms = now_ms
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
        if self._revoked(entry, now_ms):
            del self._entries[key]
            return False
        entry.record = attrs.evolve(current, version=record.version, blob=record.blob)
        entry.expires_ms = now_ms + ttl_ms(current.deadline_ms, current.inactivity_ms, now_ms)
        entry.active_ms = now_ms
        return True

    async def regenerate(  # noqa: PLR0911 - one return per outcome, as the script
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
        login: Login | None = None,
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
        owner = (current.user, current.public_id)
        # A session of a user moves only with its login (its index entry), and vice versa.
        if owner != ((None, None) if login is None else (login.base, login.public_id)):
            return TAKEN
        if self._revoked(old, now_ms):
            del self._entries[old_key]
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
        if login is None:
            self._put(new_key, record, now_ms)
            return CREATED
        placed = self._put(new_key, record, now_ms, login=old.login)
        user = self._user(login.base, now_ms)
        user.entries[login.public_id] = (new_key, login.created_ms, login.remember_me)
        if login.metadata is not None:
            user.metadata[login.public_id] = login.metadata
        self._keep_user(login.base, user, record.deadline_ms)
        return CREATED if placed else TAKEN

    async def delete(self, keys: Sequence[bytes], deadline: float | None = None) -> None:
        """Delete ``keys``; missing keys are fine."""
        for key in keys:
            self._entries.pop(key, None)

    # -- sessions of users: the same steps as the Redis provider's scripts --------------------

    def _user(self, base: bytes, now_ms: int) -> _User:
        """Return the user at ``base`` (created empty, as HINCRBY/HSET would create B)."""
        self._purge_users(now_ms)
        user = self._users.get(base)
        if user is None:
            user = self._users[base] = _User(expires_ms=now_ms)
        return user

    def _purge_users(self, now_ms: int) -> None:
        heap = self._user_heap
        while heap and heap[0][0] <= now_ms:
            _, _, base, user = heapq.heappop(heap)
            if self._users.get(base) is not user:
                continue
            if user.expires_ms <= now_ms:
                del self._users[base]
            else:
                heapq.heappush(heap, (user.expires_ms, next(self._tiebreak), base, user))

    def _keep_user(self, base: bytes, user: _User, deadline_ms: int) -> None:
        """Make the user's state outlive the session ending at ``deadline_ms``."""
        if deadline_ms > user.expires_ms:
            user.expires_ms = deadline_ms
            heapq.heappush(self._user_heap, (deadline_ms, next(self._tiebreak), base, user))

    def _revoked(self, entry: _Entry, now_ms: int) -> bool:
        record = entry.record
        if record is None or record.user is None:
            return False
        self._purge_users(now_ms)
        user = self._users.get(record.user)
        return user is not None and user.nb is not None and entry.login <= user.nb

    def _live_sessions(
        self, base: bytes, user: _User, now_ms: int
    ) -> list[tuple[bytes, bytes, _Entry]]:
        """Prune the user's index as the Lua ``entries`` does; return (public id, key, entry)."""
        live = []
        for public_id, (key, _, _) in list(user.entries.items()):
            entry = self._live(key, now_ms)
            record = None if entry is None else entry.record
            ok = entry is not None and record is not None and record.public_id == public_id
            if ok and entry is not None and self._revoked(entry, now_ms):
                del self._entries[key]
                ok = False
            if ok and entry is not None:
                live.append((public_id, key, entry))
            else:
                del user.entries[public_id]
                user.metadata.pop(public_id, None)
        return live

    async def login(  # noqa: PLR0911 - one return per outcome, as the script
        self,
        new_key: bytes,
        record: Record,
        login: Login,
        deadline: float | None = None,
        *,
        old_key: bytes | None = None,
        expected: bytes = b"",
        clock: tuple[int, int] | None = None,
        created_ms: int | None = None,
    ) -> int:
        """Write a session of a user and its index entry (see the protocol); atomic."""
        now_ms = self.clock()
        old = None
        if old_key is not None:
            old = self._live(old_key, now_ms)
            current = None if old is None else old.record
            if old is None or current is None:
                new = self._live(new_key, now_ms)
                moved = None if new is None else new.record
                return CREATED if moved is not None and moved.version == record.version else TAKEN
            clocks = (current.deadline_ms, current.inactivity_ms)
            expected_clock = clock or (record.deadline_ms, record.inactivity_ms)
            if current.version != expected or clocks != expected_clock or current.user:
                return TAKEN
        existing = self._live(new_key, now_ms)
        if existing is not None:
            mine = existing.record is not None and existing.record.version == record.version
            return CREATED if mine else TAKEN
        if created_ms is not None and not (
            now_ms - CLOCK_BEHIND_MS <= created_ms <= now_ms + CLOCK_AHEAD_MS
        ):
            return CLOCK
        if ttl_ms(record.deadline_ms, record.inactivity_ms, now_ms) <= 0:
            return TAKEN if created_ms is None and old is None else CLOCK
        user = self._user(login.base, now_ms)
        live = self._live_sessions(login.base, user, now_ms)
        if login.limit and len(live) >= login.limit:
            if not login.evict:
                return LIMIT
            live.sort(key=lambda s: (user.entries[s[0]][1], s[2].login))
            for public_id, key, _ in live[: len(live) - login.limit + 1]:
                self._entries.pop(key, None)
                del user.entries[public_id]
                user.metadata.pop(public_id, None)
        user.seq += 1
        owned = attrs.evolve(record, user=login.base, public_id=login.public_id)
        self._put(new_key, owned, now_ms, login=user.seq)
        user.entries[login.public_id] = (new_key, login.created_ms, login.remember_me)
        if login.metadata is not None:
            user.metadata[login.public_id] = login.metadata
        self._keep_user(login.base, user, record.deadline_ms)
        if old is not None and old_key is not None:
            marker = _Entry(None, now_ms + min(TOMBSTONE_MS, old.expires_ms - now_ms))
            self._entries[old_key] = marker
            self._schedule(old_key, marker)
        return CREATED

    async def fence(
        self,
        old_key: bytes,
        expected: bytes,
        new_version: bytes,
        clock: tuple[int, int],
        deadline: float | None = None,
    ) -> bool:
        """Tombstone ``old_key`` if still at ``expected``; whether it was."""
        now_ms = self.clock()
        old = self._live(old_key, now_ms)
        current = None if old is None else old.record
        if old is None or current is None:
            return False
        clocks = (current.deadline_ms, current.inactivity_ms)
        if current.version != expected or clocks != clock or current.user is not None:
            return False
        marker = _Entry(None, now_ms + min(TOMBSTONE_MS, old.expires_ms - now_ms))
        self._entries[old_key] = marker
        self._schedule(old_key, marker)
        return True

    async def unplace(
        self, new_key: bytes, version: bytes, login: Login, deadline: float | None = None
    ) -> None:
        """Delete a placed session still at ``version``, and its entry."""
        now_ms = self.clock()
        entry = self._live(new_key, now_ms)
        if entry is not None and entry.record is not None and entry.record.version == version:
            del self._entries[new_key]
        user = self._users.get(login.base)
        if user is not None:
            user.entries.pop(login.public_id, None)
            user.metadata.pop(login.public_id, None)

    async def list_sessions(self, base: bytes, deadline: float | None = None) -> list[Listed]:
        """Return the live sessions of the user at ``base``, pruning the index."""
        now_ms = self.clock()
        self._purge_users(now_ms)
        user = self._users.get(base)
        if user is None:
            return []
        listed = []
        for public_id, _, entry in self._live_sessions(base, user, now_ms):
            record = entry.record
            assert record is not None  # live sessions hold records
            _, created, remember = user.entries[public_id]
            listed.append(
                Listed(
                    public_id=public_id,
                    created_ms=created,
                    deadline_ms=record.deadline_ms,
                    inactivity_ms=record.inactivity_ms,
                    remember_me=remember,
                    last_active_ms=entry.active_ms,
                    metadata=user.metadata.get(public_id),
                )
            )
        return listed

    async def revoke(self, base: bytes, public_id: bytes, deadline: float | None = None) -> bool:
        """End the session with ``public_id``; whether a live one was ended."""
        now_ms = self.clock()
        self._purge_users(now_ms)
        user = self._users.get(base)
        if user is None or public_id not in user.entries:
            return False
        key = user.entries.pop(public_id)[0]
        user.metadata.pop(public_id, None)
        entry = self._live(key, now_ms)
        if entry is None or entry.record is None or entry.record.public_id != public_id:
            return False
        revoked = self._revoked(entry, now_ms)
        del self._entries[key]
        return not revoked

    async def revoke_all(
        self, base: bytes, keep: bytes | None = None, deadline: float | None = None
    ) -> bool:
        """End every session of the user but ``keep``, in one step; whether it was kept."""
        now_ms = self.clock()
        self._purge_users(now_ms)
        user = self._users.get(base)
        if user is None:
            return False
        entries, metadata = user.entries, user.metadata
        kept = None
        if keep is not None and keep in entries:
            entry = self._live(entries[keep][0], now_ms)
            if (
                entry is not None
                and entry.record is not None
                and entry.record.public_id == keep
                and not self._revoked(entry, now_ms)
            ):
                kept = entry
        user.nb = user.seq
        user.entries, user.metadata = {}, {}
        if kept is None or keep is None:
            return False
        user.seq += 1
        kept.login = user.seq
        user.entries[keep] = entries[keep]
        if keep in metadata:
            user.metadata[keep] = metadata[keep]
        return True

    def statistics(self) -> PoolStatistics:
        """Return zeros: there is no connection pool."""
        return _NO_POOL

    def check_caller(self) -> None:
        """Accept every caller: memory holds no loop-bound resources."""

    async def aclose(self) -> None:
        """Drop every session."""
        self._entries.clear()
        self._heap.clear()
        self._users.clear()
        self._user_heap.clear()

    def __repr__(self) -> str:
        return f"<MemoryProvider [{len(self._entries)} entries]>"
