"""The security properties claimed in ``docs/security.md``, one test per claim.

Grouped by attacker: one who can read Redis, one who can write to it, one holding a stolen
cookie, and one on the network between the app and Redis; then key rotation and secrets
hygiene. Key derivation and blob layout are recomputed here from the documented constants with
``cryptography`` directly, so the document and the code cannot drift apart silently. An autouse
fixture captures every log record at DEBUG and fails any test whose logs show a secret.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import attrs
import pytest
import redis as redis_sync
from anyio.abc import SocketAttribute, SocketStream
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from redis_session import (
    ConfigError,
    SessionConflict,
    StoreUnavailable,
    load_config,
    open_session_store,
)
from redis_session._provider import wall_clock_ms
from redis_session._redis_provider import RedisProvider
from redis_session._store import SessionStore

from .servers import RedisProcess, TLSFiles
from .store_helpers import SECRET, raw_client

pytestmark = pytest.mark.anyio

PREFIX = b"authelia_session:"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
SALT = b"redis_session HKDF salt v1"
INFO_AEAD = b"redis_session/v1/aead"
INFO_KEY_NAME = b"redis_session/v1/key-name"
INFO_KEY_ID = b"redis_session/v1/key-id"

OLD_SECRET = "the secret we are rotating away from, also long"
REDIS_PASSWORD = "security-test-redis-password-7f3a"
SENTINEL_PASSWORD = "security-test-sentinel-password-91c"
ALL_SECRETS = (SECRET, OLD_SECRET, REDIS_PASSWORD, SENTINEL_PASSWORD)

#: Distinctive plaintext: none of these bytes may be found anywhere outside the process.
MARKERS = {
    "username": "alice-plaintext-marker",
    "email-marker-key": "alice@example.invalid",
    "groups": ["admins-marker", "dev-marker"],
    "token": b"binary-marker-0123",
}
MARKER_BYTES = [
    b"alice-plaintext-marker",
    b"email-marker-key",
    b"alice@example.invalid",
    b"admins-marker",
    b"binary-marker-0123",
]


# --- independent derivation, from the documented constants ---------------------------------


def hkdf(secret: str, info: bytes) -> bytes:
    """HKDF-SHA256(secret, salt, info) -> 32 bytes, as docs/security.md describes."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=info).derive(secret.encode())


def key_id(secret: str) -> bytes:
    """The 4-byte key id written in front of every blob."""
    return hmac.digest(hkdf(secret, INFO_KEY_ID), b"kid", hashlib.sha256)[:4]


def key_name(secret: str, session_id: str, prefix: bytes = PREFIX) -> bytes:
    """The Redis key of a session: prefix + base64url(HMAC-SHA256(name key, id))."""
    digest = hmac.digest(hkdf(secret, INFO_KEY_NAME), session_id.encode(), hashlib.sha256)
    return prefix + base64.urlsafe_b64encode(digest).rstrip(b"=")


def open_record(secret: str, key: bytes, fields: dict[bytes, bytes]) -> bytes:
    """Decrypt a stored record with AES-256-GCM under the documented associated data."""
    blob = fields[b"d"]
    aad = b"|".join((key, fields[b"v"], fields[b"e"], fields[b"i"]))
    return AESGCM(hkdf(secret, INFO_AEAD)).decrypt(blob[5:17], blob[17:], aad)


# --- fixtures ----------------------------------------------------------------------------------


def _texts(record: logging.LogRecord) -> list[str]:
    texts = [str(record.msg), record.getMessage(), repr(record.args)]
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        texts.append(record.exc_text)
    return texts


def assert_not_logged(records: list[logging.LogRecord], *needles: str) -> None:
    """No record's message, arguments or traceback contains any of ``needles``."""
    for record in records:
        for text in _texts(record):
            for needle in needles:
                assert needle not in text, f"{needle[:10]}… leaked into a log record"


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Capture every log record at DEBUG; after the test, none may hold a secret."""
    caplog.set_level(logging.DEBUG)
    yield
    assert_not_logged(caplog.records, *ALL_SECRETS)


@pytest.fixture
def raw(redis: RedisProcess) -> Iterator[redis_sync.Redis]:
    """A binary admin client: what an attacker with access to Redis sees."""
    client = raw_client(redis)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def cfg(redis: RedisProcess) -> dict[str, Any]:
    """The session mapping for the shared redis-server."""
    return {"secret": SECRET, "redis": redis.redis_section()}


@pytest.fixture
async def store(cfg: dict[str, Any]) -> AsyncIterator[SessionStore[Any]]:
    """A store on the shared redis-server with the default durations."""
    async with open_session_store(cfg) as s:
        yield s


@pytest.fixture
def password_redis(redis_factory: Callable[..., RedisProcess], tls_files: TLSFiles) -> RedisProcess:
    """A server with a password-protected ACL user, on a plaintext and a TLS port."""
    return redis_factory(
        tls=tls_files,
        acl_users=["default off", f"app on >{REDIS_PASSWORD} ~* &* +@all"],
    )


def dump_everything(raw: redis_sync.Redis) -> bytes:
    """All a Redis reader can get: every key name, type, TTL, DUMP and field, concatenated."""
    out: list[bytes] = []
    for key in raw.scan_iter(count=1000):
        out += [key, raw.type(key), b"%d" % raw.pttl(key), raw.dump(key) or b""]
        if raw.type(key) == b"hash":
            for name, value in raw.hgetall(key).items():
                out += [name, value]
    return b"\n".join(out)


def forms_of(session_id: str) -> list[bytes]:
    """The id as text, as its 32 raw bytes, and as hex: none may be found in Redis."""
    raw_id = base64.urlsafe_b64decode(session_id + "=")
    return [session_id.encode(), raw_id, raw_id.hex().encode()]


def secret_forms(secret: str) -> list[bytes]:
    """A secret and the keys derived from it."""
    return [
        secret.encode(),
        hashlib.sha256(secret.encode()).digest(),
        hkdf(secret, INFO_AEAD),
        hkdf(secret, INFO_KEY_NAME),
        hkdf(secret, INFO_KEY_ID),
    ]


# --- an attacker who can read Redis ----------------------------------------------------------


async def test_redis_dump_holds_no_session_id(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """A full dump of Redis holds no session id, no plaintext, no secret and no derived key."""
    sessions = [await store.create(dict(MARKERS)) for _ in range(3)]
    sessions.append(await store.create(dict(MARKERS), remember_me=True))
    sessions[0].data["extra"] = "saved-marker"
    await store.save(sessions[0])
    moved = await store.regenerate(sessions[1])
    ids = [s.id for s in sessions] + [moved.id]
    dump = dump_everything(raw)
    # Four sessions, and the regenerated one's tombstone (a hash holding only the marker).
    assert len(raw.keys()) == 5
    assert raw.hgetall(sessions[1]._key) == {b"m": b"1"}
    for session_id in ids:
        for form in forms_of(session_id):
            assert form not in dump
    for marker in [*MARKER_BYTES, b"saved-marker"]:
        assert marker not in dump
    for form in secret_forms(SECRET):
        assert form not in dump


async def test_redis_key_is_hmac_of_the_id(store: SessionStore[Any], raw: redis_sync.Redis) -> None:
    """The key is prefix + base64url(HMAC-SHA256(HKDF(secret, 'key-name'), id)), nothing else."""
    session = await store.create({"a": 1})
    (key,) = raw.keys()
    assert key == key_name(SECRET, session.id)
    # Without the secret the id cannot be turned into its key, nor back.
    assert key != PREFIX + base64.urlsafe_b64encode(
        hashlib.sha256(session.id.encode()).digest()
    ).rstrip(b"=")


async def test_reader_sees_lifetimes_and_sizes(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """What a reader does learn: deadline, idle limit (0 = remember-me), TTL and data size."""
    small = await store.create({"a": 1})
    large = await store.create({"a": "x" * 1000})
    remember = await store.create({"a": 1}, remember_me=True)
    for session in (small, large, remember):
        fields = raw.hgetall(session._key)
        assert set(fields) == {b"v", b"e", b"i", b"d"}
        assert int(fields[b"e"]) == (session.expires_at - EPOCH) // dt.timedelta(milliseconds=1)
        assert 0 < raw.pttl(session._key) <= int(fields[b"e"]) - time.time_ns() // 10**6 + 1000
    assert raw.hget(small._key, "i") == b"300000"
    assert raw.hget(remember._key, "i") == b"0"
    # The blob is the payload plus 33 bytes, so its length tracks the data's size.
    assert len(raw.hget(large._key, "d")) - len(raw.hget(small._key, "d")) > 990


async def test_reader_can_test_guessed_secrets_offline(
    cfg: dict[str, Any], raw: redis_sync.Redis
) -> None:
    """A guessable secret falls to an offline dictionary attack on a dump: use a random one.

    The key id says which guess is right, then AES-GCM decrypts the record; HKDF does no key
    stretching, so each guess costs microseconds.
    """
    weak = "password1"
    async with open_session_store({**cfg, "secret": weak}) as store:
        session = await store.create({"user": "alice"})
    (key,) = raw.keys()
    fields = raw.hgetall(key)
    found = [g for g in ("123456", "letmein", "password1") if key_id(g) == fields[b"d"][1:5]]
    assert found == [weak]
    assert b"alice" in open_record(found[0], key, fields)
    assert session.id  # the id itself stays unknown: the reader has the data, not the cookie


# --- key derivation and blob format ---------------------------------------------------------


async def test_keys_are_hkdf_derived_with_distinct_labels(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """AES-256-GCM key, key-name key and key id come from HKDF-SHA256 with three labels.

    A record decrypts with the documented key and associated data (key|v|e|i), and the
    plaintext is the msgpack payload [created_at_ms, remember_me, data].
    """
    keys = {hkdf(SECRET, info) for info in (INFO_AEAD, INFO_KEY_NAME, INFO_KEY_ID)}
    assert len(keys) == 3
    assert all(len(k) == 32 for k in keys)
    session = await store.create({"user": "alice"})
    fields = raw.hgetall(session._key)
    blob = fields[b"d"]
    assert blob[:1] == b"\x01"
    assert blob[1:5] == key_id(SECRET)
    plaintext = open_record(SECRET, session._key, fields)
    assert plaintext.endswith(b"\x81\xa4user\xa5alice")
    assert len(blob) == 1 + 4 + 12 + len(plaintext) + 16


async def test_every_write_uses_a_fresh_nonce(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """Every write draws a new random 96-bit nonce: same data, same session, new ciphertext."""
    nonces = set()
    blobs = set()
    session = await store.create({"same": "data"})
    for _ in range(50):
        blob = raw.hget(session._key, "d")
        nonces.add(blob[5:17])
        blobs.add(blob)
        await store.save(session)
    for _ in range(50):
        other = await store.create({"same": "data"})
        nonces.add(raw.hget(other._key, "d")[5:17])
    assert len(nonces) == 100
    assert len(blobs) == 50


# --- an attacker who can write to Redis ------------------------------------------------------


async def test_blob_moved_to_another_key_fails(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """A victim's whole record copied onto the attacker's session key does not decrypt there."""
    victim = await store.create({"user": "alice", "admin": True})
    attacker = await store.create({"user": "mallory"})
    raw.hset(attacker._key, mapping=raw.hgetall(victim._key))
    assert await store.load(attacker.id) is None
    loaded = await store.load(victim.id)
    assert loaded is not None
    assert loaded.data == {"user": "alice", "admin": True}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(b"e", lambda e: b"%d" % (int(e) + 86_400_000), id="deadline+1d"),
        pytest.param(b"i", lambda _: b"0", id="no-idle-limit"),
        pytest.param(b"i", lambda i: b"%d" % (int(i) * 100), id="idle-limit*100"),
        pytest.param(b"v", lambda _: b"0123456789abcdef", id="version"),
    ],
)
async def test_extending_a_session_fails_to_decrypt(
    store: SessionStore[Any],
    raw: redis_sync.Redis,
    caplog: pytest.LogCaptureFixture,
    field: bytes,
    value: Callable[[bytes], bytes],
) -> None:
    """Editing e (deadline), i (idle limit) or v breaks the AEAD: None, kept, logged, no id."""
    session = await store.create({"a": 1})
    raw.hset(session._key, field, value(raw.hget(session._key, field)))
    before = raw.hgetall(session._key)
    assert await store.load(session.id) is None
    assert raw.hgetall(session._key) == before
    assert "does not decrypt" in caplog.text
    assert_not_logged(caplog.records, session.id, session._key.decode())


async def test_writer_cannot_plant_a_record_for_a_chosen_id(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """Even knowing a chosen id's key name, a copied record does not decrypt under it."""
    victim = await store.create({"user": "alice"})
    chosen = secrets.token_urlsafe(32)
    # More than a writer has: the key name needs the secret. It still does not help.
    raw.hset(key_name(SECRET, chosen), mapping=raw.hgetall(victim._key))
    assert await store.load(chosen) is None


async def test_whole_record_replay_is_accepted(cfg: dict[str, Any], raw: redis_sync.Redis) -> None:
    """Not protected: a writer restoring a whole earlier record brings that state back.

    It is an authentic record of the same session at the same key. It cannot outlive its
    original deadline (e is authenticated, and the server's clock decides), and the current
    handle's next save conflicts.
    """
    async with open_session_store({**cfg, "expiration": 2}) as store:
        session = await store.create({"role": "admin"})
        earlier = raw.hgetall(session._key)
        session.data = {"role": "guest"}
        await store.save(session)
        await store.delete(session)  # logged out, even
        raw.hset(session._key, mapping=earlier)
        raw.pexpire(session._key, 10**9)
        replayed = await store.load(session.id)
        assert replayed is not None
        assert replayed.data == {"role": "admin"}
        with pytest.raises(SessionConflict):
            await store.save(session)
        raw.pexpire(session._key, 10**9)  # the load set the TTL to the deadline: undo that
        seconds, micros = raw.time()
        await anyio.sleep(max(0, int(earlier[b"e"]) / 1000 - (seconds + micros / 1e6)) + 0.05)
        assert raw.exists(session._key) == 1  # the writer's TTL keeps the key...
        assert await store.load(session.id) is None  # ...but the deadline has passed
        assert raw.exists(session._key) == 0


async def test_writer_can_delete_or_expire_sessions(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """Not protected: a writer can delete sessions, or set e to the past so they end."""
    first = await store.create({"a": 1})
    second = await store.create({"a": 2})
    raw.delete(first._key)
    raw.hset(second._key, "e", b"1")
    assert await store.load(first.id) is None
    assert await store.load(second.id) is None
    assert raw.exists(second._key) == 0


# --- an attacker holding a stolen cookie ----------------------------------------------------


async def test_session_ids_are_256_bit_url_safe_and_distinct() -> None:
    """Ids are token_urlsafe(32): 43 URL-safe characters, 32 random bytes, never repeated."""
    async with open_session_store({"secret": SECRET}) as store:
        ids = [(await store.create({})).id for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    pattern = re.compile(r"[A-Za-z0-9_-]{43}")
    assert all(pattern.fullmatch(i) for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "=")) == 32 for i in ids[:100])
    # 256 random bits: every character position takes many values over 10k ids.
    assert all(len({i[n] for i in ids}) > 50 for n in range(42))


async def test_regenerate_kills_the_pre_login_id(
    store: SessionStore[Any], raw: redis_sync.Redis
) -> None:
    """A cookie planted or stolen before login dies at login, when the app regenerates."""
    anonymous = await store.create({"csrf": "x"})
    planted = anonymous.id
    anonymous.data["user"] = "alice"
    logged_in = await store.regenerate(anonymous)
    assert logged_in.id != planted
    assert await store.load(planted) is None
    # What stays under the old key for at most a minute is a tombstone: no data, no version
    # (nothing can load or save through it), only the marker that it moved.
    assert raw.hgetall(anonymous._key) == {b"m": b"1"}
    assert 0 < raw.pttl(anonymous._key) <= 60_000
    loaded = await store.load(logged_in.id)
    assert loaded is not None
    assert loaded.data == {"csrf": "x", "user": "alice"}


async def test_stolen_cookie_works_until_deleted(
    cfg: dict[str, Any], store: SessionStore[Any]
) -> None:
    """Not protected: an id is a bearer token, from any process; logout ends it at once."""
    session = await store.create({"user": "alice"})
    async with open_session_store(cfg) as thief:
        stolen = await thief.load(session.id)
        assert stolen is not None
        assert stolen.data == {"user": "alice"}
        await store.delete(session.id)
        assert await thief.load(session.id) is None
        stolen.data["user"] = "mallory"
        with pytest.raises(SessionConflict):
            await thief.save(stolen)  # a stale handle cannot bring it back
        assert await store.load(session.id) is None


async def test_stolen_cookie_is_bounded_by_both_clocks(
    cfg: dict[str, Any], raw: redis_sync.Redis
) -> None:
    """A stolen id dies after `inactivity` unused, and at the deadline however much it is used.

    Both by the server's clock: a thief's host with a slow clock gains nothing.
    """
    async with open_session_store({**cfg, "inactivity": 1, "expiration": 2}) as store:
        idle = await store.create({"a": 1})
        busy = await store.create({"a": 2})
        for _ in range(3):
            await anyio.sleep(0.4)
            assert await store.load(busy.id) is not None
            assert 0 < raw.pttl(busy._key) <= 1000
        assert await store.load(idle.id) is None  # 1.2 s without use
        provider = store._provider
        assert isinstance(provider, RedisProvider)
        provider.clock = lambda: wall_clock_ms() - 3_600_000  # an hour slow
        # Kept busy (a load every 0.2 s) until the deadline, 2 s after creation.
        for _ in range(50):
            if await store.load(busy.id) is None:
                break
            await anyio.sleep(0.2)
        assert await store.load(busy.id) is None
        seconds, micros = raw.time()
        assert seconds * 1000 + micros // 1000 >= busy._deadline_ms


async def test_session_repr_hides_id(store: SessionStore[Any]) -> None:
    """A Session's repr shows the first four characters of the id only."""
    session = await store.create({"a": 1})
    assert session.id not in repr(session)
    assert session.id[4:12] not in repr(session)


async def test_malformed_ids_never_reach_redis(
    store: SessionStore[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing: a malformed id returns before any Redis round trip; a well-formed one does one."""
    calls = []
    provider = store._provider
    real_load = provider.load

    async def counting_load(keys: list[bytes], deadline: float | None = None) -> Any:
        calls.append(keys)
        return await real_load(keys, deadline)

    monkeypatch.setattr(provider, "load", counting_load)
    for junk in ("", "x" * 101, "not an id!", "\u00e9" * 43):
        assert await store.load(junk) is None
    assert calls == []
    assert await store.load(secrets.token_urlsafe(32)) is None
    assert len(calls) == 1


# --- an attacker on the network between the app and Redis -----------------------------------


@attrs.define
class Tap:
    """Bytes seen by a man in the middle, in both directions."""

    port: int
    seen: bytearray = attrs.Factory(bytearray)


@contextlib.asynccontextmanager
async def wiretap(host: str, port: int) -> AsyncIterator[Tap]:
    """A loopback TCP relay to ``host:port`` that records everything it forwards."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    tap = Tap(listener.extra(SocketAttribute.local_port))

    async def pump(source: SocketStream, sink: SocketStream) -> None:
        with contextlib.suppress(Exception):
            async for chunk in source:
                tap.seen.extend(chunk)
                await sink.send(chunk)

    async def relay(client: SocketStream) -> None:
        with contextlib.suppress(Exception):
            async with (
                client,
                await anyio.connect_tcp(host, port) as upstream,
                anyio.create_task_group() as group,
            ):
                group.start_soon(pump, client, upstream)
                group.start_soon(pump, upstream, client)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, relay)
        try:
            yield tap
        finally:
            group.cancel_scope.cancel()


async def _walk(store: SessionStore[Any]) -> list[str]:
    """Create, load, save, regenerate and delete; return every id that existed."""
    session = await store.create(dict(MARKERS))
    loaded = await store.load(session.id)
    assert loaded is not None
    loaded.data["extra"] = "saved-marker"
    await store.save(loaded)
    moved = await store.regenerate(loaded)
    await store.delete(moved)
    return [session.id, moved.id]


async def test_wire_carries_no_session_id_plaintext_or_secret(
    password_redis: RedisProcess,
) -> None:
    """Without TLS an eavesdropper sees key hashes and ciphertext only, but the Redis password.

    The session id and the secret never leave the process; Redis AUTH sends the password in
    clear text, which is why a network you do not trust needs TLS.
    """
    async with wiretap(password_redis.host, password_redis.port) as tap:
        section = {
            "host": "127.0.0.1",
            "port": tap.port,
            "username": "app",
            "password": REDIS_PASSWORD,
        }
        async with open_session_store({"secret": SECRET, "redis": section}) as store:
            ids = await _walk(store)
    seen = bytes(tap.seen)
    assert b"EVALSHA" in seen  # the tap did see the traffic
    for session_id in ids:
        for form in forms_of(session_id):
            assert form not in seen
    for marker in [*MARKER_BYTES, b"saved-marker"]:
        assert marker not in seen
    for form in secret_forms(SECRET):
        assert form not in seen
    assert REDIS_PASSWORD.encode() in seen


async def test_tls_wire_hides_password_and_commands(
    password_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """Over TLS (verified by default) the eavesdropper sees neither password nor commands."""
    assert password_redis.tls_port is not None
    async with wiretap(password_redis.host, password_redis.tls_port) as tap:
        section = {
            "host": "127.0.0.1",
            "port": tap.port,
            "username": "app",
            "password": REDIS_PASSWORD,
            "tls": {"server_name": tls_files.server_name, "ca_file": tls_files.ca_file},
        }
        async with open_session_store({"secret": SECRET, "redis": section}) as store:
            ids = await _walk(store)
    seen = bytes(tap.seen)
    assert len(seen) > 1000
    assert REDIS_PASSWORD.encode() not in seen
    assert b"EVALSHA" not in seen
    assert b"authelia_session:" not in seen
    for session_id in ids:
        assert session_id.encode() not in seen


async def test_tls_verifies_the_server_by_default(
    tls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """Without skip_verify, a server whose certificate is not trusted (or not for the name) is
    refused: an impostor cannot collect the password."""
    assert tls_redis.tls_port is not None
    for tls in (
        {"server_name": tls_files.server_name},  # CA not trusted
        {"server_name": "impostor.example.com", "ca_file": tls_files.ca_file},  # wrong name
    ):
        section = {"host": tls_redis.host, "port": tls_redis.tls_port, "tls": tls, "timeout": 2}
        with pytest.raises(StoreUnavailable):
            await open_session_store({"secret": SECRET, "redis": section})


async def test_skip_verify_warns(tls_redis: RedisProcess, caplog: pytest.LogCaptureFixture) -> None:
    """skip_verify connects to a server nobody vouched for, and logs a warning saying so."""
    assert tls_redis.tls_port is not None
    section = {"host": tls_redis.host, "port": tls_redis.tls_port, "tls": {"skip_verify": True}}
    async with open_session_store({"secret": SECRET, "redis": section}) as store:
        session = await store.create({"a": 1})
        assert await store.load(session.id) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "verification is OFF" in r.getMessage() and "skip_verify" in r.getMessage()
        for r in warnings
    )


# --- secret rotation ---------------------------------------------------------------------------


async def test_rotation_reads_old_secret_and_writes_new(
    cfg: dict[str, Any], raw: redis_sync.Redis
) -> None:
    """Secret B cannot read A's sessions; B + previous_secrets [A] can, and a save moves the
    session to B's key name and key (A's key is gone, and A can no longer read it)."""
    async with open_session_store({**cfg, "secret": OLD_SECRET}) as old:
        session = await old.create({"user": "alice"})
        assert session._key == key_name(OLD_SECRET, session.id)
        async with open_session_store(cfg) as new_only:
            assert await new_only.load(session.id) is None
        async with open_session_store({**cfg, "previous_secrets": [OLD_SECRET]}) as rotating:
            loaded = await rotating.load(session.id)
            assert loaded is not None
            assert loaded.data == {"user": "alice"}
            await rotating.save(loaded)
        assert raw.exists(key_name(OLD_SECRET, session.id)) == 0
        new_key = key_name(SECRET, session.id)
        assert raw.keys() == [new_key]
        assert raw.hget(new_key, "d")[1:5] == key_id(SECRET)
        assert await old.load(session.id) is None
        async with open_session_store(cfg) as new_only:
            again = await new_only.load(session.id)
            assert again is not None
            assert again.data == {"user": "alice"}


async def test_rotation_delete_reaches_old_key_names(
    cfg: dict[str, Any], raw: redis_sync.Redis
) -> None:
    """During a rotation, deleting an id also deletes the record under the old key name."""
    async with open_session_store({**cfg, "secret": OLD_SECRET}) as old:
        session = await old.create({"user": "alice"})
    async with open_session_store({**cfg, "previous_secrets": [OLD_SECRET]}) as rotating:
        await rotating.delete(session.id)
    assert raw.keys() == []


# --- secrets hygiene ---------------------------------------------------------------------------


async def test_secrets_absent_from_reprs_and_errors(redis: RedisProcess) -> None:
    """No secret in repr/str of a config, a store, its key ring, or a ConfigError."""
    doc = {
        "secret": SECRET,
        "previous_secrets": [OLD_SECRET],
        "redis": {
            **redis.redis_section(),
            "high_availability": {"sentinel_name": "m", "sentinel_password": SENTINEL_PASSWORD},
        },
    }
    cfg = load_config(doc)
    shown = [repr(cfg), str(cfg), repr(cfg.secret), str(cfg.previous_secrets)]
    broken = {**doc, "redis": {**doc["redis"], "port": 0, "password": REDIS_PASSWORD}}
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    shown += [str(info.value), repr(info.value), *map(str, info.value.problems)]
    shown += map(repr, info.value.problems)
    async with open_session_store({"secret": SECRET, "previous_secrets": [OLD_SECRET]}) as mem:
        shown += [repr(mem), str(mem), repr(mem._keyring), repr(mem._provider)]
    async with open_session_store({"secret": SECRET, "redis": redis.redis_section()}) as store:
        shown += [repr(store), str(store), repr(store._keyring), repr(store._provider)]
    for text in shown:
        for secret in ALL_SECRETS:
            assert secret not in text


async def test_redis_password_absent_from_errors_and_logs(
    password_redis: RedisProcess,
) -> None:
    """A refused password is a StoreUnavailable whose message and chain never show it."""
    section = password_redis.redis_section(port=password_redis.port, tls=None)
    section.pop("tls")
    wrong = {**section, "password": REDIS_PASSWORD[::-1]}
    with pytest.raises(StoreUnavailable) as info:
        await open_session_store({"secret": SECRET, "redis": wrong})
    text = "".join(traceback.format_exception(info.value))
    assert REDIS_PASSWORD[::-1] not in text
    assert REDIS_PASSWORD not in text
    async with open_session_store({"secret": SECRET, "redis": section}) as store:
        session = await store.create({"a": 1})
        assert await store.load(session.id) is not None
        assert REDIS_PASSWORD not in repr(store)
