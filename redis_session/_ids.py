"""Session ids and the names of their keys: the plain layout, and the slot-tagged one of Cluster.

Plain (memory, one server, Sentinel): an id is ``token_urlsafe(32)`` (43 characters, 256 random
bits) and its key is ``<name>:<HMAC of the id>``.

Tagged (Redis Cluster, see docs/cluster.md): an id is ``T + token_urlsafe(32)`` (46 characters)
and its key ``<name>:{T}:<HMAC of the whole id>``. ``T`` is the *canonical tag* of a hash slot:
for each of the 16384 slots, the first three-character base64url string (in the alphabet's
order) whose CRC16 lands on it. Redis hashes only the text between braces, so every key an id
has — under the current secret and under each previous one — lives in ``T``'s slot, and a
regenerate that keeps ``T`` moves a session between two keys of one slot: every multi-key
script stays within one slot, as Cluster requires. ``T`` is drawn at random for a new session
(load spreads evenly over the shards) and is not secret: the 256 random bits are all in the
rest, and the key name still holds only an HMAC of the id. A tag that is not canonical is
refused like any malformed id, before any round trip.

The slot function is Redis's own ``keyHashSlot`` (CRC16-XMODEM, ``binascii.crc_hqx`` with a
zero start, of the key's hash tag). It lives here, in the session core, because the id layout
needs it; the cluster topology (``_slots``) uses the same function to route.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import random
import re
import secrets

__all__ = ["SLOT_COUNT", "IdLayout", "canonical_tag", "hash_tag", "key_slot"]

#: Number of hash slots of every Redis Cluster.
SLOT_COUNT = 16384
#: Random bytes of an id (the part that is secret): 256 bits, 43 base64url characters.
_ID_BYTES = 32
_TAG_LENGTH = 3
_TAGGED_LENGTH = 43 + _TAG_LENGTH
#: What ``secrets.token_urlsafe`` produces, with room to spare; anything else cannot be an id
#: we issued, so it is refused before any work (and any round trip).
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,100}")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def hash_tag(key: bytes) -> bytes:
    """Return the part of ``key`` that Redis hashes: its non-empty ``{tag}``, else all of it."""
    start = key.find(b"{")
    if start == -1:
        return key
    end = key.find(b"}", start + 1)
    if end == -1 or end == start + 1:
        return key
    return key[start + 1 : end]


def key_slot(key: bytes) -> int:
    """Return the hash slot (0..16383) of ``key``, exactly as ``CLUSTER KEYSLOT`` does."""
    # hash_tag inlined: this runs for every command on a cluster.
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return binascii.crc_hqx(key[start + 1 : end], 0) & 16383
    return binascii.crc_hqx(key, 0) & 16383


@functools.cache
def _tags() -> tuple[str, ...]:
    # 262,144 candidates, 8 to 23 per slot: every slot gets one (checked on first use).
    table: list[str | None] = [None] * SLOT_COUNT
    for chars in itertools.product(_ALPHABET, repeat=_TAG_LENGTH):
        tag = "".join(chars)
        slot = binascii.crc_hqx(tag.encode(), 0) & (SLOT_COUNT - 1)
        if table[slot] is None:
            table[slot] = tag
    if any(tag is None for tag in table):  # pragma: no cover - a property of CRC16
        msg = "some hash slot has no three-character tag"
        raise RuntimeError(msg)
    return tuple(tag for tag in table if tag is not None)


def canonical_tag(slot: int) -> str:
    """Return the canonical three-character tag of hash slot ``slot``."""
    return _tags()[slot]


class IdLayout:
    """How ids are drawn and checked, and the key prefix of each: plain or slot-tagged."""

    __slots__ = ("_prefix", "_prefixes", "_tag_set", "_tags", "tagged")

    def __init__(self, prefix: bytes, *, tagged: bool) -> None:
        #: Whether ids carry a slot tag (Redis Cluster).
        self.tagged = tagged
        self._prefix = prefix
        # Built once per process (about 40 ms), only for a cluster.
        self._tags = _tags() if tagged else ()
        # What valid() and prefix() look up on every load and save of a cluster: a set lookup
        # where the check would hash the tag again, a cached key prefix per tag in use.
        self._tag_set = frozenset(self._tags)
        self._prefixes: dict[str, bytes] = {}

    def new(self, like: str | None = None, *, tag: str | None = None) -> str:
        """Return a fresh id; tagged, in the slot of ``like`` when given (a regenerate).

        ``tag``: in that slot tag's slot (a session of a user, in its user's slot).
        """
        token = secrets.token_urlsafe(_ID_BYTES)
        if not self.tagged:
            return token
        if tag is not None:
            return tag + token
        if like is not None:
            return like[:_TAG_LENGTH] + token
        # The slot only spreads load; it protects nothing, so a plain PRNG is enough.
        return self._tags[random.randrange(SLOT_COUNT)] + token  # noqa: S311

    def valid(self, session_id: str) -> bool:
        """Whether ``session_id`` has the shape of an id this layout issues."""
        if _ID_PATTERN.fullmatch(session_id) is None:
            return False
        if not self.tagged:
            return True
        # The tag must be the canonical tag of its slot (one of _tags).
        return len(session_id) == _TAGGED_LENGTH and session_id[:_TAG_LENGTH] in self._tag_set

    def tag_of(self, session_id: str) -> str | None:
        """Return the slot tag of ``session_id`` (None when ids are not tagged)."""
        return session_id[:_TAG_LENGTH] if self.tagged else None

    def user_base(self, digest: bytes) -> tuple[bytes, str | None]:
        """Return a user's base key B and slot tag U (None untagged) from its keyed hash.

        ``<name>:u:<H>``, or on a cluster ``<name>:{U}:u:<H>`` with U the canonical tag of
        the hash (as a number) mod 16384: the user's sessions, base and index share a slot.
        """
        text = base64.urlsafe_b64encode(digest).rstrip(b"=")
        if not self.tagged:
            return b"%su:%s" % (self._prefix, text), None
        tag = self._tags[int.from_bytes(digest, "big") % SLOT_COUNT]
        return b"%s{%s}:u:%s" % (self._prefix, tag.encode(), text), tag

    def prefix(self, session_id: str) -> bytes:
        """Return what the key names of ``session_id`` start with (before the HMAC)."""
        if not self.tagged:
            return self._prefix
        tag = session_id[:_TAG_LENGTH]
        prefix = self._prefixes.get(tag)
        if prefix is None:
            prefix = b"%s{%s}:" % (self._prefix, tag.encode())
            if tag in self._tag_set:  # at most one entry per slot, whatever ids come in
                self._prefixes[tag] = prefix
        return prefix
