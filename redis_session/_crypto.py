"""Encryption at rest and key-name hashing, derived from ``session.secret``.

Each secret yields three independent keys through HKDF-SHA256 (one ``info`` label each):

* an AES-256-GCM key that encrypts the session payload;
* an HMAC-SHA256 key that turns a session id into its Redis key name, so a dump of Redis
  holds no usable cookie values;
* a 4-byte key id, written in front of every blob, so a reader picks the right key during a
  rotation (``previous_secrets``) without trial decryption.

Blob layout (format 1)::

    0x01 | key id (4) | nonce (12) | AES-GCM ciphertext + tag (16)

The caller passes associated data binding the blob to its Redis key and metadata, so a blob
moved to another key, or a record whose deadline was edited, fails to decrypt. Decryption never
raises: any blob that does not authenticate is ``None``.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["FORMAT", "KeyRing", "UserIndex", "key_id_of"]

#: First byte of every blob; a reader returns ``None`` for formats it does not know.
FORMAT = b"\x01"
_KID_SIZE = 4
_NONCE_SIZE = 12
_TAG_SIZE = 16
_HEADER_SIZE = len(FORMAT) + _KID_SIZE
_MIN_BLOB = _HEADER_SIZE + _NONCE_SIZE + _TAG_SIZE

# A fixed, public salt: HKDF's extract step then works as a keyed hash of the secret. A per-
# deployment random salt would add nothing (the secret is already per deployment) and would
# have to be stored somewhere.
_SALT = b"redis_session HKDF salt v1"
_INFO_AEAD = b"redis_session/v1/aead"
_INFO_KEY_NAME = b"redis_session/v1/key-name"
_INFO_KEY_ID = b"redis_session/v1/key-id"
_INFO_USER_INDEX = b"redis_session/v1/user-index"
#: Bytes of a user's keyed hash H: 128 bits, 22 base64url characters.
USER_HASH_BYTES = 16


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(secret)


@attrs.frozen(repr=False)
class _Key:
    """The keys derived from one secret. Holds no copy of the secret itself."""

    kid: bytes
    aead: AESGCM
    #: HMAC-SHA256 keyed for key names, as its two keyed SHA-256 states (RFC 2104's inner and
    #: outer), copied per use: two C-level copies cost two thirds of copying an
    #: ``hmac.HMAC`` (a Python method), and a third of keying a new HMAC each time.
    name_mac: tuple[Any, Any]

    @classmethod
    def derive(cls, secret: str) -> _Key:
        raw = secret.encode()
        kid = hmac.digest(_hkdf(raw, _INFO_KEY_ID), b"kid", hashlib.sha256)[:_KID_SIZE]
        # The AESGCM object is built once: constructing it per call costs more than the
        # encryption of a typical session.
        return cls(kid, AESGCM(_hkdf(raw, _INFO_AEAD)), _keyed_sha256(_hkdf(raw, _INFO_KEY_NAME)))


def _keyed_sha256(key: bytes) -> tuple[Any, Any]:
    """Return HMAC-SHA256's inner and outer hash states for a 32-byte ``key`` (RFC 2104)."""
    block = key.ljust(64, b"\0")  # SHA-256's block size; a 32-byte key is never hashed first
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
    return inner, outer


class KeyRing:
    """The current key (encrypts, names keys) and any previous ones (still decrypt, still name).

    Build it with :meth:`from_secrets`. Neither ``repr`` nor any attribute shows a secret.
    """

    __slots__ = ("_by_kid", "_current", "_previous")

    def __init__(self, current: _Key, previous: Sequence[_Key]) -> None:
        self._current = current
        self._previous = tuple(previous)
        # A kid is 32 bits, so two secrets may share one (odds 2**-32 per pair); keep a list per
        # kid and try each rather than silently shadowing a key.
        by_kid: dict[bytes, list[AESGCM]] = {}
        for key in (current, *self._previous):
            by_kid.setdefault(key.kid, []).append(key.aead)
        self._by_kid = {kid: tuple(aeads) for kid, aeads in by_kid.items()}

    @classmethod
    def from_secrets(cls, current: str, previous: Sequence[str] = ()) -> KeyRing:
        """Derive the keys of ``current`` and of each former secret in ``previous``.

        Duplicates (a previous secret equal to the current one) are dropped.
        """
        seen = {current}
        older = []
        for secret in previous:
            if secret not in seen:
                seen.add(secret)
                older.append(_Key.derive(secret))
        return cls(_Key.derive(current), older)

    @property
    def key_id(self) -> bytes:
        """The current secret's key id: what every blob it encrypts carries after the format byte.

        Not secret (every blob shows it); derived from the secret, so it tells which secret
        wrote a record without trying to decrypt it.
        """
        return self._current.kid

    @property
    def has_previous(self) -> bool:
        """Whether former secrets are configured, so lookups must also try their key names."""
        return bool(self._previous)

    def encrypt(self, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> bytes:
        """Encrypt with the current key under a fresh random nonce; ``aad`` is authenticated.

        ``nonce``: 12 bytes the caller just drew from ``os.urandom`` along with other random
        bytes it needs (one system call instead of two); never a value used before.
        """
        key = self._current
        if nonce is None:
            nonce = os.urandom(_NONCE_SIZE)
        elif len(nonce) != _NONCE_SIZE:
            msg = f"a nonce is {_NONCE_SIZE} bytes, got {len(nonce)}"
            raise ValueError(msg)
        return b"".join((FORMAT, key.kid, nonce, key.aead.encrypt(nonce, plaintext, aad)))

    def decrypt(self, blob: bytes, aad: bytes) -> bytes | None:
        """Return the plaintext, or ``None`` if ``blob`` does not authenticate under any key.

        Covers an unknown format byte, an unknown key id, a truncated blob, a modified blob or
        ``aad``, and a blob written under a secret that is not in the ring. Never raises.
        """
        if len(blob) < _MIN_BLOB or blob[:1] != FORMAT:
            return None
        aeads = self._by_kid.get(blob[1:_HEADER_SIZE])
        if aeads is None:
            return None
        nonce = blob[_HEADER_SIZE : _HEADER_SIZE + _NONCE_SIZE]
        ciphertext = blob[_HEADER_SIZE + _NONCE_SIZE :]
        for aead in aeads:
            try:
                return aead.decrypt(nonce, ciphertext, aad)
            except InvalidTag:
                continue
        return None

    def redis_key(self, session_id: str, prefix: bytes) -> bytes:
        """Return the Redis key of ``session_id``: ``prefix`` + HMAC of the id, base64url."""
        return _name(self._current.name_mac, session_id, prefix)

    def previous_redis_keys(self, session_id: str, prefix: bytes) -> list[bytes]:
        """Return the key names ``session_id`` had under each former secret, newest first."""
        return [_name(key.name_mac, session_id, prefix) for key in self._previous]

    def __repr__(self) -> str:
        return f"<KeyRing current=kid:{self._current.kid.hex()} previous={len(self._previous)}>"


class UserIndex:
    """The keyed hash of user names (``index_secret``, or derived from ``secret``).

    A user appears in Redis only as this hash: in key names and in public session ids. Its
    key comes from its own HKDF label, so it is independent of the encryption and key-name
    keys even when derived from the same secret.
    """

    __slots__ = ("_mac",)

    def __init__(self, secret: str) -> None:
        self._mac = hmac.new(_hkdf(secret.encode(), _INFO_USER_INDEX), digestmod=hashlib.sha256)

    def digest(self, user: str) -> bytes:
        """Return the user's keyed hash (16 bytes)."""
        mac = self._mac.copy()
        mac.update(user.encode())
        return mac.digest()[:USER_HASH_BYTES]

    def __repr__(self) -> str:
        return "<UserIndex>"


def key_id_of(blob: bytes) -> bytes | None:
    """Return the key id ``blob`` carries (see :attr:`KeyRing.key_id`); None if it is no blob."""
    if len(blob) < _MIN_BLOB or blob[:1] != FORMAT:
        return None
    return blob[1:_HEADER_SIZE]


#: base64 to base64url (``base64.urlsafe_b64encode`` is this, in Python, around binascii).
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _name(name_mac: tuple[Any, Any], session_id: str, prefix: bytes) -> bytes:
    inner_state, outer_state = name_mac
    inner = inner_state.copy()
    inner.update(session_id.encode())
    outer = outer_state.copy()
    outer.update(inner.digest())
    text = binascii.b2a_base64(outer.digest(), newline=False).translate(_URLSAFE)
    return prefix + text.rstrip(b"=")
