"""What a storage provider is: the record it keeps and the atomic operations on it.

Two providers implement it with the same semantics, so the store has no branches: the
in-memory one (``_memory``) and the Redis one (``_redis_provider``). Each operation is atomic: a
Lua script in Redis, a synchronous block without awaits in memory.

One clock decides every deadline: the provider's own. Redis reads its ``TIME`` inside each
script, so app hosts whose clocks disagree still agree on which sessions are alive; the
in-memory provider uses this process's clock. The store needs a clock value itself only once,
to stamp a new session's creation time and deadline (they are bound into the blob, so they
are chosen before encrypting): it asks :meth:`Provider.now_ms` for the provider's time as
best known, and ``create`` refuses a stamp that does not match the provider's clock
(:data:`CLOCK`), telling the provider its clock so the store can stamp again.

Expiry rule, enforced by both: a record is gone once ``now >= deadline_ms``, or once it has not
been loaded or saved for ``inactivity_ms`` (when that is non-zero). Redis implements this as
the key's TTL, ``min(deadline_ms - now, inactivity_ms)``, refreshed by every load and save.

Tombstones: a regenerate (a login) leaves a marker under the old key instead of deleting it,
for :data:`TOMBSTONE_MS` at most (never longer than the old record had left). It holds no
record: it never loads, a save or regenerate of the old id finds nothing (a conflict), and
``delete`` removes it; but a load that finds it (before any live record) says :data:`MOVED`,
so a request that raced the login can tell "this id was just replaced" from "this id is dead"
(and the web layer leaves the browser's new cookie alone).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from typing import Literal, Protocol

import attrs

from ._statistics import PoolStatistics

__all__ = [
    "CLOCK",
    "CLOCK_AHEAD_MS",
    "CLOCK_BEHIND_MS",
    "CREATED",
    "LIMIT",
    "MOVED",
    "TAKEN",
    "TOMBSTONE_MS",
    "Found",
    "Listed",
    "Login",
    "Moved",
    "Provider",
    "Record",
    "associated_data",
    "ttl_ms",
    "wall_clock_ms",
]

#: What :meth:`Provider.create` returns: stored; the key is taken; the creation time does not
#: match the provider's clock (nothing stored; the provider has learnt its clock, stamp again).
CREATED, TAKEN, CLOCK = 1, 0, -1
#: What :meth:`Provider.login` returns when the user already holds ``Login.limit`` sessions and
#: the action is ``deny``: nothing written.
LIMIT = -2
#: How far a new session's creation time may run ahead of the provider's clock. Beyond this
#: the app's clock is fast, and the session would outlive its configured lifetime.
CLOCK_AHEAD_MS = 1_000
#: How far it may lag, on top of the time the create spent in flight (at most its deadline).
#: Beyond this the app's clock is slow, and the session would end early.
CLOCK_BEHIND_MS = 1_000


#: How long a regenerated session's old key says "moved" (capped by what the old record had
#: left): long enough for the requests a browser sent before the login's response arrived.
TOMBSTONE_MS = 60_000


class _Miss(enum.Enum):
    MOVED = "moved"


#: What :meth:`Provider.load` returns when no key holds a record and one holds a tombstone.
MOVED = _Miss.MOVED
#: The type of :data:`MOVED`.
Moved = Literal[_Miss.MOVED]
#: What :meth:`Provider.load` returns: (index into the keys, record), :data:`MOVED`, or None.
Found = tuple[int, "Record"] | Moved | None


def wall_clock_ms() -> int:
    """Return this process's wall clock in unix milliseconds (the app's clock)."""
    return time.time_ns() // 1_000_000


@attrs.define
class Record:
    """One stored session: what Redis keeps in the session's hash (fields ``v e i d``).

    Treated as immutable (build a changed copy with ``attrs.evolve``), but not frozen: two are
    built per load + save, and a frozen class's ``__init__`` sets each field through
    ``object.__setattr__``, about three times the cost of plain slot assignments.
    """

    #: Random token, new on every write; saves compare-and-set on it.
    version: bytes
    #: Absolute deadline, unix milliseconds.
    deadline_ms: int
    #: Idle limit in milliseconds; 0 means none (remember-me).
    inactivity_ms: int
    #: The AEAD blob (see ``_crypto``); its associated data is :func:`associated_data`.
    blob: bytes = attrs.field(repr=lambda blob: f"<{len(blob)} bytes>")
    #: The user's base key (field ``u``) of a session that belongs to a user, else ``None``.
    user: bytes | None = None
    #: Its public id (field ``p``), with ``user``.
    public_id: bytes | None = None


@attrs.frozen
class Login:
    """What a session of a user carries beside its record: its entry in the user's index.

    ``base`` is the user's base key B (``<name>:[{U}:]u:<H>``); the index is ``B:e``. The
    session hash gets ``u`` (= B), ``l`` (the login number) and ``p`` (the public id).
    """

    #: The user's base key.
    base: bytes
    #: The session's public id.
    public_id: bytes
    #: The session's creation time (unix ms), for the entry (lists show it without decrypting).
    created_ms: int
    #: Whether it is a remember-me session, for the entry.
    remember_me: bool
    #: The encrypted metadata; ``None`` keeps what the index holds (none for a new login).
    metadata: bytes | None = None
    #: Most sessions the user may hold (0: no limit), enforced by a new login.
    limit: int = 0
    #: At the limit: end the oldest session (``True``) or refuse the login (:data:`LIMIT`).
    evict: bool = False
    #: For a login across cluster slots (PLACE): the key of the session being logged in.
    #: Sessions placed from the same one (the same login, submitted twice) neither count
    #: against the limit nor are evicted for it; at most one of them survives FENCE.
    origin: bytes | None = None

    @property
    def entries(self) -> bytes:
        """The index key, ``B:e``."""
        return self.base + b":e"


@attrs.frozen
class Listed:
    """One live session in a user's index, as :meth:`Provider.list_sessions` returns it."""

    public_id: bytes
    created_ms: int
    deadline_ms: int
    inactivity_ms: int
    remember_me: bool
    last_active_ms: int
    #: The encrypted metadata, or ``None``.
    metadata: bytes | None


def associated_data(key: bytes, version: bytes, deadline_ms: int, inactivity_ms: int) -> bytes:
    """Return the associated data a record's blob is encrypted under.

    It binds the blob to its Redis key (a blob copied to another key does not decrypt) and to
    the clear fields beside it (editing the deadline or the version breaks decryption too).
    """
    return b"|".join((key, version, b"%d" % deadline_ms, b"%d" % inactivity_ms))


def ttl_ms(deadline_ms: int, inactivity_ms: int, now_ms: int) -> int:
    """Return how long a record touched at ``now_ms`` may live; ``<= 0`` means it is expired."""
    ttl = deadline_ms - now_ms
    if 0 < inactivity_ms < ttl:
        return inactivity_ms
    return ttl


class Provider(Protocol):
    """Atomic operations on records; the Redis and in-memory providers both implement it.

    ``deadline`` (from :meth:`deadline`) bounds a call, retries included; the store takes one
    per public operation and passes it to every call the operation makes.
    """

    #: Short name for reprs: ``"memory"`` or ``"redis"``.
    name: str
    #: Whether keys are spread over the hash slots of a Redis Cluster: then every operation's
    #: keys must share one slot, and ids carry a slot tag (see ``_ids``).
    sharded: bool

    def now_ms(self) -> int:
        """Return the provider's clock as best known here (unix ms), to stamp a new session."""
        ...

    def deadline(self) -> float | None:
        """Return the deadline for one operation started now (``None``: nothing to bound)."""
        ...

    async def create(
        self, key: bytes, record: Record, created_ms: int, deadline: float | None = None
    ) -> int:
        """Store ``record`` under a new ``key``: :data:`CREATED`, :data:`TAKEN` or :data:`CLOCK`.

        :data:`CLOCK` (nothing stored) when ``created_ms``, the creation time the record's
        deadline was computed from, is more than :data:`CLOCK_AHEAD_MS` ahead of the provider's
        clock or more than :data:`CLOCK_BEHIND_MS` (plus the time in flight) behind it;
        :meth:`now_ms` then follows the provider's clock.
        """
        ...

    async def load(self, keys: Sequence[bytes], deadline: float | None = None) -> Found:
        """Look ``keys`` up in order, in one atomic step; ``None`` if none holds a live record.

        Returns the index in ``keys`` of the first live record and the record, whose idle clock
        it slides. A record whose clear fields are not integers is returned untouched (it will
        not decrypt); one whose deadline passed is deleted. A key holding another Redis type is
        skipped, and logged (without the key) if no key holds a record. :data:`MOVED` when no
        key holds a live record and one holds a tombstone (the id was regenerated moments ago).
        """
        ...

    async def save(
        self, key: bytes, expected: bytes, record: Record, deadline: float | None = None
    ) -> bool:
        """Replace the record if its version is still ``expected``; ``False`` otherwise.

        Only ``record.version`` and ``record.blob`` are written. The stored deadline and idle
        limit must equal the record's (the blob is bound to them), else ``False``. A save whose
        new version is already stored counts as done, so a retried save that did apply is not a
        conflict. A key holding another Redis type raises ``SessionConflict`` saying so.
        """
        ...

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
        login: Login | None = None,
    ) -> int:
        """Move the session to ``new_key`` (writing ``record``); leave a tombstone at ``old_key``.

        :data:`CREATED` when moved; ``old_key`` then holds a tombstone for :data:`TOMBSTONE_MS`,
        or for what the old record had left if that is less (with ``tombstone=False``, for a
        move that keeps the id, it is deleted). :data:`TAKEN` (a conflict; nothing changes) if
        the old record is gone or expired, its version is not ``expected``, its deadline and idle
        limit are not ``clock`` (by default the record's own: the session keeps its clocks),
        or ``new_key`` is taken. With ``created_ms`` (the session switches kind and its clocks
        restart from that stamp) :data:`CLOCK`, as for :meth:`create`, when the stamp
        disagrees with the provider's clock or the new record would be born expired: nothing
        changes, stamp again. Every check precedes the first write, so a refused move leaves
        the old session intact. Like :meth:`save` for another type. With ``login`` (the
        session belongs to a user: ``record.user`` and ``record.public_id`` set) the move keeps
        its user, login number and public id, updates its index entry (and the metadata, if
        given), and is refused when the session was revoked.
        """
        ...

    async def delete(self, keys: Sequence[bytes], deadline: float | None = None) -> None:
        """Delete ``keys``; missing keys are fine."""
        ...

    async def login(
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
        """Write a session of a user at ``new_key`` and its index entry, in one atomic step.

        Takes a login number above the user's not-before mark, prunes the index of sessions
        that ended, and enforces ``login.limit``. Without ``old_key`` a new session (``create``,
        or the PLACE half of a login across slots: ``created_ms`` None keeps the record's
        clocks); with it, a regenerate of the user-less session at ``old_key`` (checked as
        :meth:`regenerate` checks it; tombstoned). :data:`CREATED`, :data:`TAKEN`,
        :data:`CLOCK` (with ``created_ms``) or :data:`LIMIT` (nothing written).
        """
        ...

    async def fence(
        self,
        old_key: bytes,
        expected: bytes,
        new_version: bytes,
        clock: tuple[int, int],
        deadline: float | None = None,
    ) -> bool:
        """Tombstone the session at ``old_key`` if still at ``expected``; ``False`` otherwise.

        The FENCE half of a login across slots; a resend that finds its own tombstone is done.
        """
        ...

    async def unplace(
        self, new_key: bytes, version: bytes, login: Login, deadline: float | None = None
    ) -> None:
        """Undo a PLACE whose FENCE failed: delete ``new_key`` if still at ``version``."""
        ...

    async def list_sessions(self, base: bytes, deadline: float | None = None) -> list[Listed]:
        """Return the live sessions of the user at ``base``, pruning the index of the rest."""
        ...

    async def revoke(self, base: bytes, public_id: bytes, deadline: float | None = None) -> bool:
        """End the session with ``public_id``; whether a live one was ended."""
        ...

    async def revoke_all(
        self, base: bytes, keep: bytes | None = None, deadline: float | None = None
    ) -> bool:
        """End every session of the user at ``base`` (one step), but ``keep``; whether kept."""
        ...

    def statistics(self) -> PoolStatistics:
        """Return the connection pool figures (zeros for memory)."""
        ...

    def check_caller(self) -> None:
        """Raise :class:`UsageError` when called from a loop other than the store's live one."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...
