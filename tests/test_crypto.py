"""Encryption at rest and key-name hashing (``redis_session._crypto``)."""

from __future__ import annotations

import pytest

from redis_session._crypto import KeyRing

AAD = b"authelia_session:key|0123456789abcdef|1700000000000|300000"
PREFIX = b"authelia_session:"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.from_secrets("current secret")


def test_round_trip(ring: KeyRing) -> None:
    """What encrypt writes, decrypt returns under the same associated data."""
    blob = ring.encrypt(b"payload", AAD)
    assert ring.decrypt(blob, AAD) == b"payload"


def test_blob_layout_and_fresh_nonce(ring: KeyRing) -> None:
    """A blob is format byte, key id, 12-byte nonce, ciphertext and tag; nonces never repeat."""
    first = ring.encrypt(b"payload", AAD)
    second = ring.encrypt(b"payload", AAD)
    assert len(first) == 1 + 4 + 12 + len(b"payload") + 16
    assert first[:1] == b"\x01"
    assert first[1:5] == second[1:5]
    assert first[5:17] != second[5:17]
    assert b"payload" not in first


def test_other_aad_fails(ring: KeyRing) -> None:
    """Changing any part of the associated data makes decryption fail, without raising."""
    blob = ring.encrypt(b"payload", AAD)
    assert ring.decrypt(blob, AAD.replace(b"300000", b"300001")) is None
    assert ring.decrypt(blob, b"") is None


@pytest.mark.parametrize("index", [0, 1, 4, 5, 16, 17, -1])
def test_flipped_byte_fails(ring: KeyRing, index: int) -> None:
    """A single flipped bit anywhere in the blob (format, key id, nonce, body, tag) gives None."""
    blob = bytearray(ring.encrypt(b"payload", AAD))
    blob[index] ^= 0x01
    assert ring.decrypt(bytes(blob), AAD) is None


@pytest.mark.parametrize(
    "blob", [b"", b"\x01", b"\x01" + bytes(31), b"\x02" + bytes(64), bytes(40)]
)
def test_garbage_fails(ring: KeyRing, blob: bytes) -> None:
    """Short blobs, unknown formats and zero bytes read as None."""
    assert ring.decrypt(blob, AAD) is None


def test_other_secret_fails(ring: KeyRing) -> None:
    """A blob written under a secret the ring does not hold reads as None."""
    other = KeyRing.from_secrets("another secret")
    assert ring.decrypt(other.encrypt(b"payload", AAD), AAD) is None


def test_rotation() -> None:
    """After a rotation old blobs decrypt, new blobs use the new key, key names change."""
    old = KeyRing.from_secrets("old secret")
    new = KeyRing.from_secrets("new secret", previous=["old secret"])
    old_blob = old.encrypt(b"payload", AAD)
    assert new.decrypt(old_blob, AAD) == b"payload"
    new_blob = new.encrypt(b"payload", AAD)
    assert old.decrypt(new_blob, AAD) is None
    assert new_blob[1:5] != old_blob[1:5]
    assert new.has_previous
    assert not old.has_previous
    assert new.redis_key("id", PREFIX) != old.redis_key("id", PREFIX)
    assert new.previous_redis_keys("id", PREFIX) == [old.redis_key("id", PREFIX)]


def test_duplicate_previous_secret_dropped() -> None:
    """A previous secret equal to the current one adds no extra key name to try."""
    ring = KeyRing.from_secrets("same", previous=["same", "older", "older"])
    assert len(ring.previous_redis_keys("id", PREFIX)) == 1


def test_redis_key_hides_the_id(ring: KeyRing) -> None:
    """The key name is the prefix plus 43 base64url characters of an HMAC, never the id."""
    session_id = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg"
    key = ring.redis_key(session_id, PREFIX)
    assert key.startswith(PREFIX)
    suffix = key[len(PREFIX) :]
    assert len(suffix) == 43
    assert session_id.encode() not in key
    assert b"=" not in suffix
    assert ring.redis_key(session_id, PREFIX) == key
    assert ring.redis_key(session_id + "x", PREFIX) != key
    assert KeyRing.from_secrets("current secret").redis_key(session_id, PREFIX) == key


def test_repr_hides_secret() -> None:
    """Neither repr nor any attribute of the ring holds the secret text."""
    ring = KeyRing.from_secrets("hunter2-very-secret", previous=["old-hunter2"])
    assert "hunter2" not in repr(ring)
    assert "kid:" in repr(ring)
    for key in (ring._current, *ring._previous):
        assert b"hunter2" not in key.kid
        assert "hunter2" not in repr(key)
