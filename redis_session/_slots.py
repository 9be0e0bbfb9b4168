"""Redis Cluster addressing: the slot of a key, who serves a slot, where a redirect points.

Pure functions and values, no I/O: the cluster topology (issue 12) asks the servers and hands
their raw replies here.

- :func:`key_slot` is the server's own ``keyHashSlot``: CRC16-XMODEM of the key, or of its hash
  tag, modulo 16384. The tag is the text between the first ``{`` and the first ``}`` after it,
  and only when that text is not empty (``{}x`` hashes whole). CRC16-XMODEM is CCITT with a zero
  start value, which is exactly ``binascii.crc_hqx(data, 0)`` (C speed, no table of our own).
- :class:`SlotMap` is one picture of the cluster: its shards (the master and replicas that serve
  some slot ranges) and a 16384-entry array from slot to shard index, so routing a command is one
  array read. It is built from a ``CLUSTER SHARDS`` reply (Redis 7+, Valkey 7.2+) or from a
  ``CLUSTER SLOTS`` reply (every version), in the shapes redis-py returns with or without
  ``decode_responses`` and with RESP2 (flat lists) or RESP3 (maps).
- :func:`parse_nodes` reads what a ``CLUSTER NODES`` reply adds to those: each node's config
  epoch and whether the answering node holds it failed; :meth:`SlotMap.newest` merges the
  pictures of several nodes by the cluster's own rule (the claim of a slot with the highest
  config epoch wins).
- :func:`parse_redirect` reads a ``MOVED`` or ``ASK`` error reply.

Endpoints: a node's address is its *preferred endpoint* (``cluster-preferred-endpoint-type``:
IP, hostname, or unknown). An empty or null endpoint means "the host you asked" and is replaced
by the ``origin_host`` the reply came from; ``?`` means the node is configured to announce a
hostname it does not have, and such a node gets ``host=None`` (it cannot be reached).
"""

from __future__ import annotations

import array
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal, NamedTuple, TypeAlias

import attrs

from ._ids import SLOT_COUNT, hash_tag, key_slot

__all__ = [
    "SLOT_COUNT",
    "ClusterNode",
    "MalformedTopologyReply",
    "NodeFacts",
    "Redirect",
    "Shard",
    "SlotMap",
    "hash_tag",
    "key_slot",
    "parse_nodes",
    "parse_redirect",
]

Role: TypeAlias = Literal["master", "replica"]
#: ``online``/``failed``/``loading`` as ``CLUSTER SHARDS`` reports them (the servers send
#: ``fail``, which the documentation spells ``failed``); ``unknown`` when the reply does not say
#: (``CLUSTER SLOTS``, which leaves failed replicas out but lists failed masters without a word,
#: unless ``CLUSTER NODES`` told).
Health: TypeAlias = Literal["online", "failed", "loading", "unknown"]


class MalformedTopologyReply(ValueError):
    """A ``CLUSTER SHARDS``/``CLUSTER SLOTS`` reply that does not have the documented shape.

    The message says what was wrong and where; the topology should then ask another node.
    """


# -- nodes and shards -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ClusterNode:
    """One node as a topology reply describes it."""

    #: Where clients reach it (its preferred endpoint), or ``None`` when it announced none (``?``).
    host: str | None
    #: Plaintext port, or the TLS port of a node that only speaks TLS (then ``tls_port`` too).
    port: int
    #: ``tls-port`` when ``CLUSTER SHARDS`` reports one.
    tls_port: int | None = None
    #: The 40-hex-digit node id (``None`` when a ``CLUSTER SLOTS`` of Redis < 4 left it out).
    node_id: str | None
    role: Role
    health: Health = "unknown"
    #: The node's ``cluster-announce-hostname`` when it has one (informational).
    hostname: str | None = None
    #: The config epoch of the node (a replica's is its master's), from ``CLUSTER NODES``;
    #: ``None`` when that was not asked or not allowed.
    config_epoch: int | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` to connect to, or ``None`` when the node has no usable endpoint."""
        return None if self.host is None else (self.host, self.port)


@attrs.frozen(kw_only=True)
class Shard:
    """A master, its replicas, and the slot ranges they serve (inclusive ``(first, last)``)."""

    ranges: tuple[tuple[int, int], ...]
    #: ``None`` only when a ``CLUSTER SHARDS`` reply lists no master for the shard.
    master: ClusterNode | None
    replicas: tuple[ClusterNode, ...] = ()

    @property
    def slot_count(self) -> int:
        """How many slots this shard serves."""
        return sum(last - first + 1 for first, last in self.ranges)

    def nodes(self) -> Iterator[ClusterNode]:
        """Yield the master (if any), then the replicas."""
        if self.master is not None:
            yield self.master
        yield from self.replicas


@attrs.frozen(eq=False, repr=False)
class SlotMap:
    """The shards of a cluster and, for each of the 16384 slots, the index of its shard.

    Build it with :meth:`from_shards` or :meth:`from_slots`. Uncovered slots map to ``None``.
    Slot ranges that two shards both claim (a reply taken mid-reshard) are an error: the caller
    should take the picture from another node rather than route by a contradiction.
    """

    shards: tuple[Shard, ...]
    # array('h'): 32 KiB, one C read per lookup; -1 = no shard serves the slot.
    _index: array.array[int]

    @classmethod
    def from_parts(cls, shards: Sequence[Shard]) -> SlotMap:
        """Map ``shards``; raise :class:`MalformedTopologyReply` on overlapping ranges."""
        index = array.array("h", [-1]) * SLOT_COUNT
        for i, shard in enumerate(shards):
            for first, last in shard.ranges:
                if not 0 <= first <= last < SLOT_COUNT:
                    msg = f"slot range {first}-{last} is outside 0-{SLOT_COUNT - 1}"
                    raise MalformedTopologyReply(msg)
                for slot in range(first, last + 1):
                    if index[slot] != -1:
                        msg = f"slot {slot} is claimed by two shards"
                        raise MalformedTopologyReply(msg)
                    index[slot] = i
        return cls(tuple(shards), index)

    @classmethod
    def from_shards(
        cls, reply: object, *, origin_host: str, facts: Mapping[str, NodeFacts] | None = None
    ) -> SlotMap:
        """Parse a ``CLUSTER SHARDS`` reply (Redis 7+) given by the node at ``origin_host``.

        ``facts``: that node's ``CLUSTER NODES`` (:func:`parse_nodes`), for config epochs.
        """
        shards = []
        for n, raw_shard in enumerate(_seq(reply, "CLUSTER SHARDS reply")):
            where = f"CLUSTER SHARDS shard {n}"
            fields = _pairs(raw_shard, where)
            flat = [_int(v, f"{where} slots") for v in _seq(fields.get("slots", []), where)]
            if len(flat) % 2:
                raise MalformedTopologyReply(f"{where}: odd number of slot bounds {flat}")
            ranges = tuple(zip(flat[::2], flat[1::2], strict=True))
            master: ClusterNode | None = None
            replicas: list[ClusterNode] = []
            nodes = [
                _with_facts(_shards_node(_pairs(raw_node, f"{where} node {m}"), origin_host), facts)
                for m, raw_node in enumerate(_seq(fields.get("nodes", []), where))
            ]
            # After a failover a shard may list two "masters" (Valkey 8, whose shards are
            # grouped by shard id, lists the failed old master first, with health "fail", and
            # the promoted replica after it). Route to one not failed, the newest epoch first.
            masters = [(i, n) for i, n in enumerate(nodes) if n.role == "master"]
            chosen = min(masters, key=_master_rank)[1] if masters else None
            for node in nodes:
                if node is chosen:
                    master = node
                else:
                    # Any other "master" in the shard is a stale view mid-failover: keep it
                    # where it cannot be routed to.
                    replicas.append(attrs.evolve(node, role="replica"))
            shards.append(Shard(ranges=ranges, master=master, replicas=tuple(replicas)))
        return cls.from_parts(shards)

    @classmethod
    def from_slots(
        cls, reply: object, *, origin_host: str, facts: Mapping[str, NodeFacts] | None = None
    ) -> SlotMap:
        """Parse a ``CLUSTER SLOTS`` reply given by the node at ``origin_host``.

        Ranges served by the same master (same node id, else same address) form one shard.
        ``facts``: that node's ``CLUSTER NODES`` (:func:`parse_nodes`): epochs and failures.
        """
        grouped: dict[object, tuple[list[tuple[int, int]], ClusterNode, list[ClusterNode]]] = {}
        for n, raw_range in enumerate(_seq(reply, "CLUSTER SLOTS reply")):
            where = f"CLUSTER SLOTS entry {n}"
            entry = _seq(raw_range, where)
            if len(entry) < 3:
                raise MalformedTopologyReply(f"{where}: expected first, last, master, ...")
            first, last = _int(entry[0], where), _int(entry[1], where)
            master = _with_facts(
                _slots_node(entry[2], origin_host, "master", f"{where} master"), facts
            )
            replicas = [
                _with_facts(_slots_node(raw, origin_host, "replica", f"{where} replica {i}"), facts)
                for i, raw in enumerate(entry[3:])
            ]
            group_key = master.node_id or (master.host, master.port)
            if group_key not in grouped:
                grouped[group_key] = ([], master, replicas)
            grouped[group_key][0].append((first, last))
        shards = [
            Shard(ranges=tuple(sorted(ranges)), master=master, replicas=tuple(replicas))
            for ranges, master, replicas in grouped.values()
        ]
        return cls.from_parts(shards)

    @classmethod
    def newest(cls, maps: Sequence[SlotMap]) -> SlotMap:
        """Merge several nodes' pictures: each slot goes to the claim with the newest epoch.

        This is the cluster's own rule for two masters claiming a slot: the claim with the
        greater config epoch wins (a failover or a resharding always bumps it), so a node that
        has not heard of a failover yet, or an old master back from a pause, cannot make the
        map route to the master it replaced. ``maps`` come in order of preference: a tie, or
        claims without an epoch (``CLUSTER NODES`` not allowed), go to the earlier map. When
        every picture names the same master for the same slots, the first is returned as is.
        """
        if not maps:
            raise ValueError("no map to merge")
        first = maps[0]
        if all(m._claims() == first._claims() for m in maps[1:]):
            return first
        claims = sorted(
            (
                (-_epoch(shard.master), m, s)
                for m, one in enumerate(maps)
                for s, shard in enumerate(one.shards)
                if shard.master is not None and shard.ranges
            ),
        )
        owner = array.array("i", [-1]) * SLOT_COUNT
        for _, m, s in claims:
            code = m * 65536 + s
            for first_slot, last_slot in maps[m].shards[s].ranges:
                for slot in range(first_slot, last_slot + 1):
                    if owner[slot] == -1:
                        owner[slot] = code
        ranges: dict[int, list[tuple[int, int]]] = {}
        start = 0
        for slot in range(1, SLOT_COUNT + 1):
            if slot == SLOT_COUNT or owner[slot] != owner[start]:
                if owner[start] != -1:
                    ranges.setdefault(owner[start], []).append((start, slot - 1))
                start = slot
        shards = [
            attrs.evolve(maps[code // 65536].shards[code % 65536], ranges=tuple(spans))
            for code, spans in ranges.items()
        ]
        return cls.from_parts(shards)

    def _claims(self) -> frozenset[tuple[tuple[tuple[int, int], ...], object]]:
        """Who claims which slots: the ranges and the master's id (else address) of each shard."""
        return frozenset(
            (shard.ranges, shard.master.node_id or shard.master.address)
            for shard in self.shards
            if shard.master is not None and shard.ranges
        )

    # -- lookups --

    def shard_index(self, slot: int) -> int | None:
        """Index in :attr:`shards` of the shard serving ``slot``, or ``None`` if uncovered."""
        i = self._index[slot]
        return None if i < 0 else i

    def shard_for(self, slot: int) -> Shard | None:
        """Return the shard serving ``slot``, or ``None`` if no shard does."""
        i = self._index[slot]
        return None if i < 0 else self.shards[i]

    def master_for(self, slot: int) -> ClusterNode | None:
        """Return the master of ``slot``, or ``None`` if the slot is uncovered or masterless."""
        i = self._index[slot]
        return None if i < 0 else self.shards[i].master

    def uncovered_slots(self) -> int:
        """How many slots no shard serves (0 for a healthy cluster)."""
        return self._index.count(-1)

    def nodes(self) -> Iterator[ClusterNode]:
        """Every node of every shard, masters first within each shard."""
        for shard in self.shards:
            yield from shard.nodes()

    def __repr__(self) -> str:
        """Summarise: shard, node and uncovered-slot counts (no addresses)."""
        nodes = sum(1 for _ in self.nodes())
        return (
            f"<SlotMap [{len(self.shards)} shards, {nodes} nodes | "
            f"{self.uncovered_slots()} slots uncovered]>"
        )


def _master_rank(item: tuple[int, ClusterNode]) -> tuple[bool, int, int]:
    """Order of preference among the masters a shard lists: not failed, newest epoch, first."""
    index, node = item
    return (node.health == "failed", -_epoch(node), index)


def _epoch(node: ClusterNode | None) -> int:
    return -1 if node is None or node.config_epoch is None else node.config_epoch


# -- CLUSTER NODES --------------------------------------------------------------------------


@attrs.frozen
class NodeFacts:
    """What one node's ``CLUSTER NODES`` line says of a node beyond ``CLUSTER SHARDS``."""

    #: The node's config epoch (for a replica, its master's).
    config_epoch: int
    #: Whether the answering node holds it failed (``fail`` flag: agreed by a majority of
    #: masters; ``fail?``, one node's suspicion, does not count).
    failed: bool


def parse_nodes(reply: object) -> dict[str, NodeFacts]:
    """Read a ``CLUSTER NODES`` reply: node id to :class:`NodeFacts`.

    Each line is ``<id> <address> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
    <link-state> <slot>...``; a line without that shape raises :class:`MalformedTopologyReply`.
    """
    text = _text(reply, "CLUSTER NODES reply")
    if text is None:
        raise MalformedTopologyReply("CLUSTER NODES reply: expected text, got nothing")
    facts: dict[str, NodeFacts] = {}
    for n, line in enumerate(text.splitlines()):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8:
            raise MalformedTopologyReply(f"CLUSTER NODES line {n}: {len(fields)} fields")
        flags = fields[2].split(",")
        facts[fields[0]] = NodeFacts(
            config_epoch=_int(fields[6], f"CLUSTER NODES line {n} config epoch"),
            failed="fail" in flags,
        )
    return facts


def _with_facts(node: ClusterNode, facts: Mapping[str, NodeFacts] | None) -> ClusterNode:
    """``node`` with its config epoch, and failed if ``CLUSTER NODES`` says so."""
    if facts is None or node.node_id is None or (known := facts.get(node.node_id)) is None:
        return node
    health: Health = "failed" if known.failed else node.health
    return attrs.evolve(node, config_epoch=known.config_epoch, health=health)


# -- redirects ------------------------------------------------------------------------------


class Redirect(NamedTuple):
    """A ``MOVED``/``ASK`` redirect: go to ``host:port`` for ``slot``.

    ``host`` is ``None`` when the server sent an empty endpoint (``MOVED 3999 :6380``): the
    target is on the host that sent the redirect.
    """

    kind: Literal["MOVED", "ASK"]
    slot: int
    host: str | None
    port: int


def parse_redirect(error_message: str | bytes) -> Redirect | None:
    """Read ``MOVED <slot> <endpoint>:<port>`` or ``ASK ...``; ``None`` for any other text.

    The endpoint may be IPv4, an unbracketed IPv6 literal (as Redis sends it: the port follows
    the last colon), a bracketed one, a hostname, or empty. Anything malformed — a bad slot or
    port, extra words, control characters, a missing port — is not a redirect.
    """
    if isinstance(error_message, bytes):
        try:
            error_message = error_message.decode("ascii")
        except UnicodeDecodeError:
            return None
    parts = error_message.split(" ")
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    kind: Literal["MOVED", "ASK"] = "MOVED" if parts[0] == "MOVED" else "ASK"
    slot = _decimal(parts[1], SLOT_COUNT - 1)
    endpoint, sep, port_text = parts[2].rpartition(":")
    port = _decimal(port_text, 65535)
    if slot is None or not sep or port is None or port == 0:
        return None
    if endpoint.startswith("[") and endpoint.endswith("]"):
        endpoint = endpoint[1:-1]
    if not endpoint:
        return Redirect(kind, slot, None, port)
    if not endpoint.isprintable() or not endpoint.isascii() or "[" in endpoint or "]" in endpoint:
        return None
    return Redirect(kind, slot, endpoint, port)


def _decimal(text: str, maximum: int) -> int | None:
    """Read a plain ASCII decimal in 0..maximum (no sign, space or underscore), else ``None``."""
    if not text or len(text) > 5 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


# -- reply shapes ---------------------------------------------------------------------------


def _seq(value: object, where: str) -> Sequence[object]:
    if isinstance(value, list | tuple):
        return value
    raise MalformedTopologyReply(f"{where}: expected an array, got {type(value).__name__}")


def _pairs(value: object, where: str) -> Mapping[str, object]:
    """Read a RESP2 flat ``[name, value, ...]`` array or a RESP3 map, with text keys."""
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        flat = _seq(value, where)
        if len(flat) % 2:
            raise MalformedTopologyReply(f"{where}: odd number of items in a field list")
        items = list(zip(flat[::2], flat[1::2], strict=True))
    return {_text(k, where) or "": v for k, v in items}


def _text(value: object, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError as exc:
            raise MalformedTopologyReply(f"{where}: text is not UTF-8") from exc
    if isinstance(value, str):
        return value
    raise MalformedTopologyReply(f"{where}: expected text, got {type(value).__name__}")


def _int(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bytes | str):
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if text.isascii() and text.isdigit():
            return int(text)
    raise MalformedTopologyReply(f"{where}: expected an integer, got {value!r:.40}")


def _port(value: object, where: str) -> int:
    port = _int(value, where)
    if not 0 <= port <= 65535:
        raise MalformedTopologyReply(f"{where}: port {port} out of range")
    return port


def _endpoint(value: object, origin_host: str, where: str) -> str | None:
    """Read a preferred endpoint: empty/null means the host asked, ``?`` means none."""
    text = _text(value, where)
    if not text:
        return origin_host
    if text == "?":
        return None
    return text


def _shards_node(fields: Mapping[str, object], origin_host: str) -> ClusterNode:
    where = "CLUSTER SHARDS node"
    node_id = _text(fields.get("id"), where)
    port = _port(fields.get("port", 0), f"{where} port")
    tls_port = _port(fields["tls-port"], f"{where} tls-port") if "tls-port" in fields else None
    # ``endpoint`` is the preferred endpoint; ``ip`` is there too, for servers that omit it.
    raw = fields.get("endpoint", fields.get("ip"))
    host = _endpoint(raw, origin_host, f"{where} endpoint")
    role_text = _text(fields.get("role"), f"{where} role")
    if role_text not in ("master", "replica"):
        raise MalformedTopologyReply(f"{where}: role {role_text!r}")
    role: Role = "master" if role_text == "master" else "replica"
    health_text = _text(fields.get("health"), f"{where} health")
    health: Health = "unknown"
    if health_text == "online":
        health = "online"
    elif health_text in ("fail", "failed"):
        # Redis 7 and Valkey send "fail"; their documentation says "failed".
        health = "failed"
    elif health_text == "loading":
        health = "loading"
    return ClusterNode(
        host=host,
        # A TLS-only node reports port 0 and its tls-port.
        port=port or (tls_port or 0),
        tls_port=tls_port,
        node_id=node_id,
        role=role,
        health=health,
        hostname=_text(fields.get("hostname"), f"{where} hostname") or None,
    )


def _slots_node(raw: object, origin_host: str, role: Role, where: str) -> ClusterNode:
    """``[endpoint, port, id?, metadata?]``; metadata (7.0+) is ``hostname`` etc."""
    entry = _seq(raw, where)
    if len(entry) < 2:
        raise MalformedTopologyReply(f"{where}: expected endpoint and port")
    hostname = None
    if len(entry) >= 4 and entry[3] is not None:
        hostname = _text(_pairs(entry[3], where).get("hostname"), where) or None
    return ClusterNode(
        host=_endpoint(entry[0], origin_host, where),
        port=_port(entry[1], where),
        node_id=_text(entry[2], where) if len(entry) >= 3 else None,
        role=role,
        hostname=hostname,
    )
