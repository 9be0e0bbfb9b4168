"""What a storage provider is: the record it keeps and the five atomic operations on it.

Two providers implement it with the same semantics, so the store has no branches: the
in-memory one (``_memory``) and the Redis one (``_redis_provider``). Every operation takes the
application's clock (``now_ms``, unix milliseconds) so both share one notion of time, and each
is atomic: a Lua script in Redis, a synchronous block without awaits in memory.

Expiry rule, enforced by both: a record is gone once ``now >= deadline_ms``, or once it has not
been loaded or saved for ``inactivity_ms`` (when that is non-zero). Redis implements this as
the key's TTL, ``min(deadline_ms - now, inactivity_ms)``, refreshed by every load and save.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs

from ._connections import PoolStatistics

__all__ = ["Provider", "Record", "associated_data", "ttl_ms"]


@attrs.frozen
class Record:
    """One stored session: what Redis keeps in the session's hash (fields ``v e i d``)."""

    #: Random token, new on every write; saves compare-and-set on it.
    version: bytes
    #: Absolute deadline, unix milliseconds.
    deadline_ms: int
    #: Idle limit in milliseconds; 0 means none (remember-me).
    inactivity_ms: int
    #: The AEAD blob (see ``_crypto``); its associated data is :func:`associated_data`.
    blob: bytes = attrs.field(repr=lambda blob: f"<{len(blob)} bytes>")


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
    """Atomic operations on records; the Redis and in-memory providers both implement it."""

    #: Short name for reprs: ``"memory"`` or ``"redis"``.
    name: str

    async def create(self, key: bytes, record: Record, now_ms: int) -> bool:
        """Store ``record`` under a new ``key``; ``False`` if the key is taken."""
        ...

    async def load(self, key: bytes, now_ms: int) -> Record | None:
        """Return the record and slide its idle clock; ``None`` if missing or expired."""
        ...

    async def save(self, key: bytes, expected: bytes, record: Record, now_ms: int) -> bool:
        """Replace the record if its version is still ``expected``; ``False`` otherwise.

        Only ``record.version`` and ``record.blob`` are written. The stored deadline and idle
        limit must equal the record's (the blob is bound to them), else ``False``. A save whose
        new version is already stored counts as done, so a retried save that did apply is not a
        conflict.
        """
        ...

    async def regenerate(
        self, old_key: bytes, new_key: bytes, expected: bytes, record: Record, now_ms: int
    ) -> bool:
        """Move the session to ``new_key`` (writing ``record``) and delete ``old_key``.

        ``False`` if the old record's version is not ``expected``, its deadline or idle limit
        differ from the record's, or ``new_key`` is taken.
        """
        ...

    async def delete(self, keys: Sequence[bytes]) -> None:
        """Delete ``keys``; missing keys are fine."""
        ...

    def statistics(self) -> PoolStatistics:
        """Return the connection pool figures (zeros for memory)."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...
