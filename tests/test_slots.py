"""``_slots`` against a real cluster: key slots, slot maps and redirects as the servers give them.

Every expectation comes from the servers of ``tests/cluster_servers.py``: ``CLUSTER KEYSLOT`` for
slots, ``CLUSTER SHARDS``/``CLUSTER SLOTS``/``CLUSTER MYID`` for the map, and ``MOVED``/``ASK``
errors provoked by sending a command to the wrong node (and by migrating a slot). A few synthetic
replies cover what a healthy loopback cluster never sends (unknown endpoints, IPv6, overlaps).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator, Sequence

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from redis_session._slots import (
    SLOT_COUNT,
    MalformedTopologyReply,
    Redirect,
    Shard,
    SlotMap,
    hash_tag,
    key_slot,
    parse_redirect,
)

from .cluster_servers import RedisCluster
from .servers import RedisProcess

EDGE_KEYS = [
    b"",
    b"{}",
    b"{",
    b"}",
    b"}{",
    b"{a}{b}",
    b"{}{a}",
    b"{}a",
    b"a{}",
    b"{a",
    b"a}",
    b"a{b}c",
    b"{{a}}",
    b"foo{}{bar}",
    b"foo{{bar}}zap",
    b"foo{bar}{zap}",
    b"{user1000}.following",
    b"{user1000}.followers",
    b"123456789",
    b"\x00{\xff}\x00",
    b"{\x00}",
    b"x" * 1000 + b"{tag}",
    "{sessión}".encode(),
]


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, emptied and ready."""
    redis_cluster.reset()
    return redis_cluster


def raw_client(node: RedisProcess, protocol: int = 2, *, decode: bool = False) -> redis.Redis:
    """A client that returns replies as redis-py parses them, bytes unless ``decode``."""
    return redis.Redis(host=node.host, port=node.port, protocol=protocol, decode_responses=decode)


def server_reply(node: RedisProcess, *commands: Sequence[bytes]) -> bytes:
    """Send ``commands`` over one plain socket; return the first line of the last reply.

    A socket rather than redis-py, whose parser strips ``MOVED``/``ASK`` from error messages.
    """
    with socket.create_connection(node.address, timeout=5) as sock:
        reader = sock.makefile("rb")
        line = b""
        for args in commands:
            packed = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
            sock.sendall(packed)
            line = reader.readline()
            if line.startswith(b"$") and line != b"$-1\r\n":
                reader.read(int(line[1:]) + 2)
        return line.rstrip(b"\r\n")


def server_error(node: RedisProcess, *commands: Sequence[bytes]) -> str:
    """The text of the error reply to the last of ``commands``, code and all."""
    line = server_reply(node, *commands)
    assert line.startswith(b"-"), line
    return line[1:].decode()


def key_on(cluster: RedisCluster, node: RedisProcess, prefix: bytes = b"k") -> bytes:
    """A key whose slot ``node`` serves."""
    for i in range(100_000):
        key = prefix + b"%d" % i
        if cluster.master_of_slot(key_slot(key)) is node:
            return key
    raise LookupError(node.port)


# -- key_slot --------------------------------------------------------------------------------


def test_key_slot_matches_the_servers_keyslot(cluster: RedisCluster) -> None:
    """Random binary keys, tagged keys and every hash-tag edge case hash as CLUSTER KEYSLOT says."""
    rng = random.Random(12)
    keys = list(EDGE_KEYS)
    keys += [rng.randbytes(rng.randrange(0, 40)) for _ in range(1500)]
    # Braces are rare in random bytes: build keys made mostly of them.
    keys += [
        bytes(rng.choice(b"{}ab\x00") for _ in range(rng.randrange(1, 10))) for _ in range(1500)
    ]
    keys += [b"session:{%s}:%d" % (rng.randbytes(4).hex().encode(), i) for i in range(500)]
    client = raw_client(cluster.masters()[0])
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.execute_command("CLUSTER", "KEYSLOT", key)
        expected = pipe.execute()
    client.close()
    mismatches = [
        (k, s, key_slot(k)) for k, s in zip(keys, expected, strict=True) if s != key_slot(k)
    ]
    assert mismatches == []
    assert len(set(expected)) > 1000  # the sample spans the slot space, not a corner of it


def test_hash_tag_rules() -> None:
    """The tag is between the first ``{`` and the first ``}`` after it, and must not be empty."""
    assert hash_tag(b"foo{bar}{zap}") == b"bar"
    assert hash_tag(b"foo{}{bar}") == b"foo{}{bar}"
    assert hash_tag(b"foo{{bar}}zap") == b"{bar"
    assert hash_tag(b"}{a}") == b"a"
    assert hash_tag(b"{a") == b"{a"
    assert key_slot(b"123456789") == 0x31C3 % SLOT_COUNT  # CRC16-XMODEM's check value
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")


# -- SlotMap from the servers' replies ---------------------------------------------------------


def truth(cluster: RedisCluster) -> dict[int, tuple[int, str, list[tuple[int, str]]]]:
    """Per master port: its port, its own CLUSTER MYID, and its replicas' (port, id)."""
    result = {}
    for master in cluster.masters():
        replicas = [
            (r.port, r.admin().execute_command("CLUSTER", "MYID"))
            for r in cluster.replicas_of(master)
        ]
        result[master.port] = (
            master.port,
            master.admin().execute_command("CLUSTER", "MYID"),
            replicas,
        )
    return result


def check_map(slot_map: SlotMap, cluster: RedisCluster) -> None:
    """The map names the right master, ids and replica for every shard, covering every slot."""
    expected = truth(cluster)
    assert slot_map.uncovered_slots() == 0
    assert len(slot_map.shards) == 3
    assert sum(s.slot_count for s in slot_map.shards) == SLOT_COUNT
    for shard in slot_map.shards:
        assert shard.master is not None
        port, node_id, replicas = expected[shard.master.port]
        assert shard.master.node_id == node_id
        assert shard.master.host == "127.0.0.1"
        assert [(r.port, r.node_id) for r in shard.replicas] == replicas
        assert all(r.role == "replica" for r in shard.replicas)
        for first, last in shard.ranges:
            for slot in (first, (first + last) // 2, last):
                assert cluster.master_of_slot(slot).port == port


def test_slot_map_from_cluster_shards(cluster: RedisCluster) -> None:
    """A raw RESP2 ``CLUSTER SHARDS`` reply (bytes, flat lists) gives the cluster's true map."""
    client = raw_client(cluster.nodes[0])
    reply = client.execute_command("CLUSTER", "SHARDS")
    client.close()
    slot_map = SlotMap.from_shards(reply, origin_host="127.0.0.1")
    check_map(slot_map, cluster)
    assert {n.health for n in slot_map.nodes()} == {"online"}


def test_slot_map_from_cluster_slots(cluster: RedisCluster) -> None:
    """A raw RESP2 ``CLUSTER SLOTS`` reply gives the same map; health is not in that reply."""
    client = raw_client(cluster.nodes[0])
    reply = client.execute_command("CLUSTER", "SLOTS")
    client.close()
    slot_map = SlotMap.from_slots(reply, origin_host="127.0.0.1")
    check_map(slot_map, cluster)
    assert {n.health for n in slot_map.nodes()} == {"unknown"}


@pytest.mark.parametrize(("protocol", "decode"), [(2, True), (3, False), (3, True)])
def test_both_replies_agree_in_every_shape(
    cluster: RedisCluster, protocol: int, decode: bool
) -> None:
    """SHARDS and SLOTS, decoded or not, RESP2 or RESP3 (maps): the same master for every slot."""
    client = raw_client(cluster.nodes[-1], protocol, decode=decode)
    shards = SlotMap.from_shards(client.execute_command("CLUSTER", "SHARDS"), origin_host="h")
    slots = SlotMap.from_slots(client.execute_command("CLUSTER", "SLOTS"), origin_host="h")
    client.close()
    for slot in range(SLOT_COUNT):
        a, b = shards.master_for(slot), slots.master_for(slot)
        assert a is not None
        assert b is not None
        assert (a.port, a.node_id) == (b.port, b.node_id)


def test_routing_by_the_map_reaches_the_owner(cluster: RedisCluster) -> None:
    """Keys written where the map sends them are accepted there; the other masters redirect."""
    client = raw_client(cluster.nodes[0])
    slot_map = SlotMap.from_shards(client.execute_command("CLUSTER", "SHARDS"), origin_host="x")
    client.close()
    rng = random.Random(5)
    clients = {m.port: raw_client(m) for m in cluster.masters()}
    try:
        for _ in range(60):
            key = b"route:" + rng.randbytes(8)
            master = slot_map.master_for(key_slot(key))
            assert master is not None
            assert clients[master.port].set(key, b"v") is True
            for port, other in clients.items():
                if port != master.port:
                    with pytest.raises(redis.exceptions.MovedError):
                        other.get(key)
    finally:
        for c in clients.values():
            c.close()


def test_an_uncovered_slot_maps_to_nothing(cluster: RedisCluster) -> None:
    """A real reply with one range removed (as after CLUSTER DELSLOTS) leaves those slots None."""
    client = raw_client(cluster.nodes[0])
    reply = client.execute_command("CLUSTER", "SLOTS")
    client.close()
    removed = reply.pop(0)
    slot_map = SlotMap.from_slots(reply, origin_host="127.0.0.1")
    first, last = removed[0], removed[1]
    assert slot_map.uncovered_slots() == last - first + 1
    assert slot_map.master_for(first) is None
    assert slot_map.shard_index(last) is None
    assert "slots uncovered" in repr(slot_map)


# -- synthetic replies: what a healthy loopback cluster never says ----------------------------

NODE_ID = b"e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca"


def shards_node(endpoint: bytes | None, **extra: object) -> list[object]:
    fields: list[object] = [b"id", NODE_ID, b"port", 30001, b"ip", b"10.0.0.1"]
    fields += [b"endpoint", endpoint, b"role", b"master", b"health", b"online"]
    for name, value in extra.items():
        fields += [name.replace("_", "-").encode(), value]
    return fields


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (b"", "origin"),  # unknown-endpoint: the host that was asked
        (None, "origin"),
        (b"?", None),  # hostname preferred but not configured: unreachable
        (b"redis-0.example.com", "redis-0.example.com"),
        (b"2001:db8::1", "2001:db8::1"),
    ],
)
def test_endpoints(endpoint: bytes | None, expected: str | None) -> None:
    """Empty or null endpoints mean the origin host, ``?`` means none; others are kept."""
    reply = [[b"slots", [0, 16383], b"nodes", [shards_node(endpoint)]]]
    master = SlotMap.from_shards(reply, origin_host="origin").master_for(9)
    assert master is not None
    assert master.host == expected
    slots_reply = [[0, 16383, [endpoint, 30001, NODE_ID, []]]]
    master = SlotMap.from_slots(slots_reply, origin_host="origin").master_for(9)
    assert master is not None
    assert master.host == expected


def test_tls_only_node_and_hostname() -> None:
    """A TLS-only node (port 0) is reached on its tls-port; the announced hostname is kept."""
    node = shards_node(b"10.0.0.1", tls_port=30011, hostname=b"r0")
    node[3] = 0
    reply = [[b"slots", [0, 16383], b"nodes", [node]]]
    master = SlotMap.from_shards(reply, origin_host="o").master_for(0)
    assert master is not None
    assert (master.address, master.tls_port, master.hostname) == (("10.0.0.1", 30011), 30011, "r0")


@pytest.mark.parametrize(
    "reply",
    [
        b"nonsense",
        [[b"slots", [0], b"nodes", []]],  # odd slot bounds
        [[b"slots", [0, 20000], b"nodes", []]],  # beyond the last slot
        [[b"slots", [0, 10], b"nodes", []], [b"slots", [5, 20], b"nodes", []]],  # overlap
        [[b"slots", [0, 10], b"nodes", [[b"id", b"x", b"role", b"boss"]]]],
        [[b"slots", [b"zero", 10], b"nodes", []]],
        [[b"slots", [0, 10], b"nodes", [[b"id"]]]],  # odd field list
    ],
)
def test_malformed_shards_replies_raise(reply: object) -> None:
    """A reply not of the documented shape raises MalformedTopologyReply, nothing else."""
    with pytest.raises(MalformedTopologyReply):
        SlotMap.from_shards(reply, origin_host="o")


@pytest.mark.parametrize(
    "reply",
    [
        [[0, 10]],  # no master
        [[0, 10, [b"h"]]],  # no port
        [[0, 10, [b"h", 70000, b"id"]]],
        [[0, 10, [b"h", 1, b"id"]], [10, 12, [b"i", 2, b"id2"]]],
        [[b"\xff", 10, [b"h", 1]]],
    ],
)
def test_malformed_slots_replies_raise(reply: object) -> None:
    """A bad CLUSTER SLOTS reply raises MalformedTopologyReply."""
    with pytest.raises(MalformedTopologyReply):
        SlotMap.from_slots(reply, origin_host="o")


def test_ranges_of_one_master_form_one_shard() -> None:
    """CLUSTER SLOTS lists a master once per range; the map groups them by node id."""
    reply = [
        [0, 99, [b"h", 1, b"a" * 40]],
        [100, 199, [b"h", 2, b"b" * 40]],
        [200, 16383, [b"h", 1, b"a" * 40]],
    ]
    slot_map = SlotMap.from_slots(reply, origin_host="o")
    assert [s.ranges for s in slot_map.shards] == [((0, 99), (200, 16383)), ((100, 199),)]
    assert slot_map.shard_index(150) == 1
    assert slot_map.shard_for(300) is slot_map.shards[0]
    assert SlotMap.from_parts([Shard(ranges=(), master=None)]).uncovered_slots() == SLOT_COUNT


# -- redirects ---------------------------------------------------------------------------------


def test_moved_from_the_wrong_master_and_from_a_replica(cluster: RedisCluster) -> None:
    """A key sent to another master, or to a replica, comes back MOVED to its master."""
    owner, other = cluster.masters()[:2]
    key = key_on(cluster, owner)
    slot = key_slot(key)
    expected = Redirect("MOVED", slot, owner.host, owner.port)
    assert parse_redirect(server_error(other, [b"GET", key])) == expected
    replica = cluster.replicas_of(owner)[0]
    assert parse_redirect(server_error(replica, [b"SET", key, b"v"])) == expected
    assert parse_redirect(server_error(replica, [b"GET", key]).encode()) == expected


@pytest.fixture
def migrating(cluster: RedisCluster) -> Iterator[tuple[RedisProcess, RedisProcess, int]]:
    """A slot of master A in MIGRATING to master B (IMPORTING there); both STABLE afterwards."""
    source, target = cluster.masters()[:2]
    slot = key_slot(key_on(cluster, source))
    source_id = source.admin().execute_command("CLUSTER", "MYID")
    target_id = target.admin().execute_command("CLUSTER", "MYID")
    try:
        target.admin().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.admin().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        yield source, target, slot
    finally:
        for node in (source, target):
            node.admin().execute_command("CLUSTER", "SETSLOT", slot, "STABLE")


def test_ask_during_a_migration(
    cluster: RedisCluster, migrating: tuple[RedisProcess, RedisProcess, int]
) -> None:
    """A missing key of a MIGRATING slot is ASKed to the target, which MOVEs it back sans ASKING."""
    source, target, slot = migrating
    key = next(b"ask%d" % i for i in range(100_000) if key_slot(b"ask%d" % i) == slot)
    assert parse_redirect(server_error(source, [b"GET", key])) == Redirect(
        "ASK", slot, target.host, target.port
    )
    # Without ASKING the target does not serve the slot yet: MOVED back to the source.
    assert parse_redirect(server_error(target, [b"GET", key])) == Redirect(
        "MOVED", slot, source.host, source.port
    )
    # With ASKING it does (on that connection, for the next command).
    assert server_reply(target, [b"ASKING"], [b"GET", key]) == b"$-1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("MOVED 3999 127.0.0.1:6381", Redirect("MOVED", 3999, "127.0.0.1", 6381)),
        ("ASK 0 10.1.2.3:7000", Redirect("ASK", 0, "10.1.2.3", 7000)),
        ("MOVED 16383 ::1:7000", Redirect("MOVED", 16383, "::1", 7000)),
        ("MOVED 5 2001:db8::1:7000", Redirect("MOVED", 5, "2001:db8::1", 7000)),
        ("MOVED 5 [2001:db8::1]:7000", Redirect("MOVED", 5, "2001:db8::1", 7000)),
        (
            "ASK 12 redis-0.redis.svc.cluster.local:6379",
            Redirect("ASK", 12, "redis-0.redis.svc.cluster.local", 6379),
        ),
        ("MOVED 3999 :6380", Redirect("MOVED", 3999, None, 6380)),
        (b"MOVED 1 h:2", Redirect("MOVED", 1, "h", 2)),
    ],
)
def test_parse_redirect_endpoints(text: str | bytes, expected: Redirect) -> None:
    """IPv4, bare and bracketed IPv6, hostnames and the empty endpoint are read right."""
    assert parse_redirect(text) == expected
    kind, slot, host, port = expected  # still a plain tuple to callers
    assert (kind, slot, host, port) == tuple(parse_redirect(text) or ())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "MOVED",
        "MOVED 3999",
        "MOVED 3999 127.0.0.1",  # no port
        "MOVED 3999 127.0.0.1:",
        "MOVED 16384 h:1",  # slot out of range
        "MOVED -1 h:1",
        "MOVED +1 h:1",
        "MOVED 1 h:0",
        "MOVED 1 h:65536",
        "MOVED 1 h:6_379",
        "MOVED \uff11 h:1",  # a non-ASCII digit (fullwidth one)
        "MOVED 1 h:1 extra",
        "MOVED  1 h:1",
        "moved 1 h:1",
        "ERR MOVED 1 h:1",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "MOVED 1 h\x00st:1",
        "MOVED 1 [::1:1",
        "MOVED 1 h]:1",
        "NOSCRIPT No matching script. Please use EVAL.",
    ],
)
def test_parse_redirect_refuses_garbage(text: str) -> None:
    """Anything but a well-formed MOVED/ASK is not a redirect."""
    assert parse_redirect(text) is None
    assert parse_redirect(b"\xff" + text.encode()) is None


@given(st.one_of(st.text(max_size=60), st.binary(max_size=60)))
def test_parse_redirect_never_raises(text: str | bytes) -> None:
    """Whatever a server (or a proxy in between) sends, reading it never raises."""
    result = parse_redirect(text)
    assert result is None or 0 <= result.slot < SLOT_COUNT
