"""The key layout planned for issue 12 (docs/cluster.md), tried on a real cluster.

The layout is not implemented yet: the few functions below are the plan written as code, so
that its claims — every multi-key operation in one slot, an even spread over the masters, a
user's sessions beside the user's index — are measured on real servers, not argued.
Run with ``-s`` to see the per-master counts that docs/cluster.md quotes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import random
import secrets
from collections.abc import Iterable

import pytest
import redis

from redis_session._slots import SLOT_COUNT, SlotMap, key_slot

from .cluster_servers import RedisCluster

ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
NAME = b"authelia_session:"
SESSIONS = 30_000


@functools.cache
def slot_tags() -> tuple[bytes, ...]:
    """For each slot, the first 3-character base64url string that hashes to it (all exist)."""
    tags: list[bytes | None] = [None] * SLOT_COUNT
    for chars in itertools.product(ALPHABET, repeat=3):
        tag = bytes(chars)
        slot = key_slot(tag)
        if tags[slot] is None:
            tags[slot] = tag
    assert None not in tags
    return tuple(t for t in tags if t is not None)


def new_id(slot: int) -> str:
    """A session id: the slot's tag, then 256 random bits (the secret part, unchanged)."""
    return slot_tags()[slot].decode() + secrets.token_urlsafe(32)


def user_slot(user_key: bytes, user: str) -> int:
    """The slot of a user's index and sessions: 14 bits of a keyed PRF of the user name."""
    digest = hmac.digest(user_key, user.encode(), hashlib.sha256)
    return int.from_bytes(digest[:2], "big") % SLOT_COUNT


def redis_key(name_key: bytes, session_id: str) -> bytes:
    """``<name>:{<tag>}:<HMAC of the id>``: the tag is the id's first three characters."""
    mac = hmac.digest(name_key, session_id.encode(), hashlib.sha256)
    tag = session_id[:3].encode()
    return NAME + b"{" + tag + b"}:" + base64.urlsafe_b64encode(mac).rstrip(b"=")


def index_key(name_key: bytes, user_key: bytes, user: str) -> bytes:
    """The user's index (issue 13), in the user's slot; no user name in it."""
    tag = slot_tags()[user_slot(user_key, user)]
    mac = hmac.digest(name_key, b"user:" + user.encode(), hashlib.sha256)
    return NAME + b"{" + tag + b"}:u:" + base64.urlsafe_b64encode(mac).rstrip(b"=")


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, emptied and ready."""
    redis_cluster.reset()
    return redis_cluster


def write_all(cluster: RedisCluster, keys: Iterable[bytes]) -> dict[int, int]:
    """SET each key on its master (routed by a SlotMap), then DBSIZE per master port."""
    admin = cluster.nodes[0].admin()
    slot_map = SlotMap.from_shards(admin.execute_command("CLUSTER", "SHARDS"), origin_host="x")
    clients = {m.port: redis.Redis(host=m.host, port=m.port, protocol=2) for m in cluster.masters()}
    try:
        pipes = {port: c.pipeline(transaction=False) for port, c in clients.items()}
        for key in keys:
            master = slot_map.master_for(key_slot(key))
            assert master is not None
            pipes[master.port].set(key, b"x")
        for pipe in pipes.values():
            assert all(pipe.execute())
        return {port: int(c.dbsize()) for port, c in clients.items()}
    finally:
        for c in clients.values():
            c.close()


def report(title: str, counts: dict[int, int]) -> None:
    total = sum(counts.values())
    shares = ", ".join(f"{n} ({100 * n / total:.1f} %)" for n in counts.values())
    print(f"\n{title}: {total} keys; per master: {shares}")


def test_anonymous_sessions_spread_evenly(cluster: RedisCluster) -> None:
    """30,000 sessions with uniformly drawn slot tags: each master holds about a third."""
    name_key = secrets.token_bytes(32)
    rng = random.Random(7)
    keys = [redis_key(name_key, new_id(rng.randrange(SLOT_COUNT))) for _ in range(SESSIONS)]
    counts = write_all(cluster, keys)
    report("anonymous sessions", counts)
    assert sum(counts.values()) == SESSIONS
    assert all(0.30 * SESSIONS < n < 0.37 * SESSIONS for n in counts.values())


def test_user_sessions_and_indexes_spread_and_share_a_slot(cluster: RedisCluster) -> None:
    """3,000 users with 9 sessions and one index each: the spread stays even, and every
    user's keys (sessions and index) share one slot, so one script can update them together."""
    name_key, user_key = secrets.token_bytes(32), secrets.token_bytes(32)
    keys: list[bytes] = []
    for u in range(3_000):
        user = f"user{u}@example.com"
        slot = user_slot(user_key, user)
        mine = [redis_key(name_key, new_id(slot)) for _ in range(9)]
        mine.append(index_key(name_key, user_key, user))
        assert {key_slot(k) for k in mine} == {slot}
        keys += mine
    counts = write_all(cluster, keys)
    report("user sessions + indexes", counts)
    assert sum(counts.values()) == SESSIONS
    assert all(0.30 * SESSIONS < n < 0.37 * SESSIONS for n in counts.values())


def test_one_issuer_tag_puts_everything_on_one_master(cluster: RedisCluster) -> None:
    """The contrast: Authelia's rewrite keeps every key under one tag, so one master holds all."""
    keys = [NAME + b"{authelia}:" + secrets.token_urlsafe(32).encode() for _ in range(SESSIONS)]
    counts = write_all(cluster, keys)
    report("one {issuer} tag", counts)
    assert sorted(counts.values()) == [0, 0, SESSIONS]


MOVE = "redis.call('DEL', KEYS[1]); redis.call('SET', KEYS[2], ARGV[1]); return 1"


def test_multi_key_operations_stay_in_one_slot(cluster: RedisCluster) -> None:
    """Regenerate (old -> new id, same tag) and a rotation's two key names run as one script;
    the same script across two slots is refused with CROSSSLOT — the case the plan avoids."""
    rng = random.Random(3)
    slot = rng.randrange(SLOT_COUNT)
    old_id, new = new_id(slot), new_id(slot)
    old_secret, new_secret = secrets.token_bytes(32), secrets.token_bytes(32)
    old_key, new_key = redis_key(new_secret, old_id), redis_key(new_secret, new)
    rotated = redis_key(old_secret, old_id)
    assert key_slot(old_key) == key_slot(new_key) == key_slot(rotated) == slot
    owner = cluster.master_of_slot(slot)
    client = redis.Redis(host=owner.host, port=owner.port, protocol=2)
    try:
        client.set(old_key, b"data")
        assert client.eval(MOVE, 2, old_key, new_key, b"data") == 1
        assert client.mget(old_key, rotated, new_key) == [None, None, b"data"]
        other = redis_key(new_secret, new_id((slot + SLOT_COUNT // 2) % SLOT_COUNT))
        with pytest.raises(redis.ResponseError, match=r"don't hash to the same slot"):
            client.eval(MOVE, 2, new_key, other, b"data")
    finally:
        client.close()


def test_multi_key_scripts_get_tryagain_while_their_slot_migrates(cluster: RedisCluster) -> None:
    """While its slot migrates, a script naming a key that exists and one that does not (a
    regenerate's new id, a rotation's unused name) is answered TRYAGAIN on both nodes: the
    topology must retry it within the deadline; single-key scripts get ASK instead."""
    source, target = cluster.masters()[:2]
    slot = next(s for s in range(SLOT_COUNT) if cluster.master_of_slot(s) is source)
    present, missing = redis_key(b"k", new_id(slot)), redis_key(b"k", new_id(slot))
    src = redis.Redis(host=source.host, port=source.port, protocol=2, single_connection_client=True)
    dst = redis.Redis(host=target.host, port=target.port, protocol=2, single_connection_client=True)
    script = "return redis.call('EXISTS', KEYS[1], KEYS[2])"
    src_id, dst_id = (c.execute_command("CLUSTER", "MYID") for c in (src, dst))
    try:
        src.set(present, b"1")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        with pytest.raises(redis.exceptions.TryAgainError):
            src.eval(script, 2, present, missing)
        assert src.eval("return redis.call('EXISTS', KEYS[1])", 1, present) == 1
        src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", present)
        with pytest.raises(redis.exceptions.AskError):
            src.eval(script, 2, present, missing)
        dst.execute_command("ASKING")
        with pytest.raises(redis.exceptions.TryAgainError):
            dst.eval(script, 2, present, missing)
        dst.execute_command("ASKING")
        assert dst.delete(present) == 1
    finally:
        for c in (src, dst):
            c.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
            c.close()
