"""Every node of a configuration, found the way the store finds them: for ``check`` and ``stats``.

- A single server: ``redis.host``/``redis.port``.
- Sentinel: every sentinel the store would ask (``redis.host``, then ``high_availability.nodes``,
  then the peers they name), each asked what the store asks (the master's address, its state,
  its peers and replicas) and whether it lets the store subscribe to failover events; the data
  nodes are the master most sentinels name and every replica any of them lists (all of them, not
  only the healthy ones the store would route reads to: each is a failover candidate).
- Cluster: the slot map from the first seed (``redis.host``, then ``cluster.nodes``) whose map
  covers every slot, ``CLUSTER SHARDS`` or, before Redis 7, ``CLUSTER SLOTS``; the data nodes are
  every master and replica it names.

Discovery only reads. What it could not find is reported as findings (a seed that does not
answer, no sentinel knowing the master); judging the nodes it found is ``_cli_check``'s job.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from ._cli_report import ERROR, WARNING, Finding
from ._cluster import OPTION as CLUSTER_OPTION
from ._config import RedisConfig
from ._errors import CommandError, StoreUnavailable
from ._probe import DataNode, SentinelNode, close_all
from ._sentinel import CHANNELS, configured_sentinels
from ._sentinel import OPTION as SENTINEL_OPTION
from ._slots import MalformedTopologyReply, SlotMap
from ._spec import ConnectionSpec
from ._tasks import gather_all
from ._wire import node_label, unbracket

__all__ = ["DataMember", "Deployment", "SentinelMember", "discover"]

Address = tuple[str, int]
Kind = Literal["server", "sentinel", "cluster"]

#: The sentinel commands the store sends, by what they are for (``REPLICAS`` only when reads
#: are routed, but a check asks it anyway: it lists the failover candidates).
SENTINEL_QUESTIONS: tuple[tuple[str, ...], ...] = (
    ("SENTINEL", "GET-MASTER-ADDR-BY-NAME"),
    ("SENTINEL", "MASTER"),
    ("SENTINEL", "SENTINELS"),
    ("SENTINEL", "REPLICAS"),
)
_REPLICA_TROUBLE = frozenset({"s_down", "o_down", "disconnected"})


@attrs.define(eq=False)
class DataMember:
    """A data node and what the deployment says it is."""

    node: DataNode
    #: What the sentinels or the cluster map say it is (a single server is a master).
    role: Literal["master", "replica"]
    #: Health as the deployment reports it: a cluster map's ``online``/``failed``/``loading``,
    #: a sentinel's flags; ``None`` when nobody says.
    health: str | None = None
    #: Hash slots its shard serves (cluster masters).
    slots: int = 0
    #: Who reports ``health``: ``cluster map`` or ``sentinels``.
    reported_by: str = "cluster map"


@attrs.define(eq=False)
class SentinelMember:
    """A sentinel and what it answered."""

    node: SentinelNode
    #: Named in the configuration (else learned from another sentinel).
    configured: bool = True
    #: ``redis.host:26379``, tried beside ``redis.host:6379`` as the store does: no finding
    #: when it is not there.
    optional: bool = False
    #: Why it could not be asked at all (unreachable, authentication), else ``None``.
    problem: str | None = None
    master: Address | None = None
    master_flags: str = ""
    #: ``(address, flags, master-link-status)`` of each replica it lists.
    replicas: list[tuple[Address, str, str]] = attrs.field(factory=list)
    peers: list[Address] = attrs.field(factory=list)
    #: Questions it refused, by command (``SENTINEL MASTER``), with its reply.
    denied: dict[str, str] = attrs.field(factory=dict)
    #: Other error replies, by command.
    errors: dict[str, str] = attrs.field(factory=dict)
    knows_master: bool = False

    @property
    def answered(self) -> bool:
        """Whether it could be asked at all."""
        return self.problem is None


@attrs.define(eq=False)
class Deployment:
    """The nodes of one configuration and what discovery found missing."""

    kind: Kind
    data: list[DataMember] = attrs.field(factory=list)
    sentinels: list[SentinelMember] = attrs.field(factory=list)
    findings: list[Finding] = attrs.field(factory=list)
    slot_map: SlotMap | None = None
    #: Data nodes opened while looking (cluster seeds) that are not part of ``data``.
    _spare: list[DataNode] = attrs.field(factory=list)

    def masters(self) -> list[DataMember]:
        """Return the data nodes that hold the sessions (each cluster master; the one master)."""
        return [m for m in self.data if m.role == "master"]

    async def aclose(self) -> None:
        """Close every node's connections."""
        await close_all([m.node for m in self.data])
        await close_all(list(self._spare))
        await close_all([s.node for s in self.sentinels])


async def discover(cfg: RedisConfig, spec: ConnectionSpec) -> Deployment:
    """Find the nodes of ``cfg`` as the store would; the caller closes the result.

    Failures to reach a node are findings, not exceptions; if anything else raises (a
    cancellation), what was opened so far is closed first.
    """
    if cfg.high_availability is not None:
        deployment = Deployment("sentinel")
        fill = _sentinel_deployment
    elif cfg.cluster is not None:
        deployment = Deployment("cluster")
        fill = _cluster_deployment
    else:
        assert cfg.host is not None  # validate_config guarantees it
        node = DataNode(cfg, spec, cfg.host, cfg.port, readonly=False)
        return Deployment("server", data=[DataMember(node, "master")])
    try:
        await fill(cfg, spec, deployment)
    except BaseException:
        await deployment.aclose()
        raise
    return deployment


# -- Sentinel -------------------------------------------------------------------------------------


async def _sentinel_deployment(
    cfg: RedisConfig, spec: ConnectionSpec, deployment: Deployment
) -> None:
    ha = cfg.high_availability
    assert ha is not None
    configured = configured_sentinels(cfg)
    implicit = _implicit(cfg)
    members = [
        SentinelMember(SentinelNode(cfg, spec, *addr), optional=addr in implicit)
        for addr in configured
    ]
    deployment.sentinels = members  # registered before any await: closed whatever happens
    await gather_all([_ask_sentinel(m, ha.sentinel_name) for m in members])
    # The peers they name, as the store learns them: asked too (one round, no deeper).
    known = {(m.node.host, m.node.port) for m in members}
    learned = [p for m in members for p in m.peers if p not in known]
    extra = [
        SentinelMember(SentinelNode(cfg, spec, *addr), configured=False)
        for addr in dict.fromkeys(learned)
    ]
    members += extra
    await gather_all([_ask_sentinel(m, ha.sentinel_name) for m in extra])
    shown = [m for m in members if m.answered or not m.optional]
    await close_all([m.node for m in members if m not in shown])
    deployment.sentinels = shown

    named = collections.Counter(m.master for m in members if m.master is not None)
    if not named:
        deployment.findings.append(_no_master(ha.sentinel_name, members))
        return
    master = named.most_common(1)[0][0]
    if len(named) > 1:
        seen = ", ".join(f"{node_label(*a)} ({n})" for a, n in named.most_common())
        deployment.findings.append(
            Finding(
                WARNING,
                "sentinel",
                f"the sentinels disagree on the master of {ha.sentinel_name!r}: {seen}; a "
                "failover may be under way (check again in a few seconds)",
                option=f"{SENTINEL_OPTION}.nodes",
            )
        )
    deployment.data.append(
        DataMember(DataNode(cfg, spec, *master, readonly=False), "master", health=None)
    )
    replicas: dict[Address, str] = {}
    for m in members:
        for addr, flags, link in m.replicas:
            if addr == master:
                continue
            trouble = sorted(set(flags.split(",")) & _REPLICA_TROUBLE)
            if link != "ok":
                trouble.append(f"master-link-status {link}")
            health = ", ".join(trouble) if trouble else "ok"
            # The worst report wins: one sentinel seeing it down is worth saying.
            if replicas.get(addr, "ok") == "ok":
                replicas[addr] = health
    for addr, health in replicas.items():
        node = DataNode(cfg, spec, *addr, readonly=False)
        deployment.data.append(DataMember(node, "replica", health=health, reported_by="sentinels"))


def _implicit(cfg: RedisConfig) -> set[Address]:
    """``redis.host:26379``, which the store also tries when ``redis.port`` is the default 6379.

    Unless ``high_availability.nodes`` names it too: then it is configured, not implicit.
    """
    ha = cfg.high_availability
    assert ha is not None
    if cfg.host is None or cfg.host.startswith("/") or cfg.port != 6379:
        return set()
    addr = (cfg.host, 26379)
    return set() if addr in {(n.host, n.port) for n in ha.nodes} else {addr}


async def _ask_sentinel(member: SentinelMember, name: str) -> None:
    """Ask one sentinel what the store asks; record what it says, refuses or fails with."""
    node = member.node
    try:
        await node.execute("PING")
    except StoreUnavailable as exc:
        member.problem = str(exc)
        return
    except CommandError as exc:
        member.denied["PING"] = str(exc)
    replies: dict[str, Any] = {}
    for question in SENTINEL_QUESTIONS:
        label = " ".join(question)
        try:
            replies[label] = await node.execute(*question, name)
        except StoreUnavailable as exc:
            member.problem = str(exc)
            return
        except CommandError as exc:
            if exc.code == "NOPERM":
                member.denied[label] = str(exc)
            else:
                member.errors[label] = str(exc)
    try:
        await node.subscribe(*CHANNELS)
    except StoreUnavailable as exc:
        member.problem = str(exc)
        return
    except CommandError as exc:
        member.denied["SUBSCRIBE"] = str(exc)
    _read_answers(member, replies)


def _read_answers(member: SentinelMember, replies: dict[str, Any]) -> None:
    """Record what the sentinel's replies say: the master, its flags, replicas and peers."""
    where = replies.get("SENTINEL GET-MASTER-ADDR-BY-NAME")
    if isinstance(where, list) and len(where) == 2:
        member.knows_master = True
        member.master = (unbracket(str(where[0])), int(where[1]))
    master = replies.get("SENTINEL MASTER")
    if isinstance(master, list):
        member.master_flags = str(_pairs(master).get("flags", ""))
    for entry in _entries(replies.get("SENTINEL REPLICAS")):
        try:
            addr = (unbracket(str(entry["ip"])), int(entry["port"]))
        except (KeyError, ValueError):
            continue
        link = str(entry.get("master-link-status", "unknown"))
        member.replicas.append((addr, str(entry.get("flags", "")), link))
    for entry in _entries(replies.get("SENTINEL SENTINELS")):
        try:
            member.peers.append((unbracket(str(entry["ip"])), int(entry["port"])))
        except (KeyError, ValueError):
            continue


def _no_master(name: str, members: Sequence[SentinelMember]) -> Finding:
    asked = [m for m in members if not (m.optional and not m.answered)]
    reasons = "; ".join(
        f"{m.node.label}: {m.problem or 'knows no master named ' + repr(name)}" for m in asked
    )
    option = f"{SENTINEL_OPTION}.sentinel_name"
    if asked and all(not m.answered for m in asked):
        option = f"{SENTINEL_OPTION}.nodes"
    return Finding(
        ERROR,
        "sentinel",
        f"no sentinel names a master for {name!r} ({reasons})",
        option=option,
    )


def _pairs(flat: Sequence[Any]) -> dict[str, Any]:
    return {str(k): v for k, v in zip(flat[::2], flat[1::2], strict=False)}


def _entries(reply: Any) -> list[dict[str, Any]]:
    if not isinstance(reply, list):
        return []
    return [_pairs(entry) for entry in reply if isinstance(entry, list)]


# -- Cluster --------------------------------------------------------------------------------------


async def _cluster_deployment(
    cfg: RedisConfig, spec: ConnectionSpec, deployment: Deployment
) -> None:
    cluster = cfg.cluster
    assert cluster is not None
    routes = cluster.route_by_latency or cluster.route_randomly
    seeds: list[Address] = []
    if cfg.host is not None:
        seeds.append((unbracket(cfg.host), cfg.port))
    seeds += [(unbracket(n.host), n.port) for n in cluster.nodes]
    opened: dict[Address, DataNode] = {}
    best: SlotMap | None = None
    problems: dict[Address, str] = {}
    for addr in dict.fromkeys(seeds):
        node = opened[addr] = DataNode(cfg, spec, *addr, readonly=routes)
        deployment._spare.append(node)  # closed whatever happens
        try:
            found = await _slot_map(node)
        except (CommandError, StoreUnavailable, MalformedTopologyReply) as exc:
            problems[addr] = _seed_problem(exc)
            continue
        if best is None or found.uncovered_slots() < best.uncovered_slots():
            best = found
        if found.uncovered_slots() == 0:
            break
    for addr, problem in problems.items():
        deployment.findings.append(
            Finding(
                ERROR if best is None else WARNING,
                "cluster",
                f"this seed gives no slot map: {problem}",
                node=node_label(*addr),
                option=f"{CLUSTER_OPTION}.nodes",
            )
        )
    if best is None:
        return
    deployment.slot_map = best
    for shard in best.shards:
        for member in shard.nodes():
            if member.host is None:
                deployment.findings.append(
                    Finding(
                        ERROR,
                        "cluster",
                        f"a {member.role} of the cluster announces no address ('?'); clients "
                        "cannot reach it (check cluster-announce-hostname and "
                        "cluster-preferred-endpoint-type on that node)",
                        details={"node_id": member.node_id},
                    )
                )
                continue
            addr = (unbracket(member.host), member.port)
            if addr in opened:
                node = opened.pop(addr)
            else:
                node = DataNode(cfg, spec, *addr, readonly=routes)
            slots = shard.slot_count if member.role == "master" else 0
            deployment.data.append(DataMember(node, member.role, member.health, slots))
    deployment._spare = list(opened.values())


async def _slot_map(node: DataNode) -> SlotMap:
    """Ask ``node`` for its picture of the cluster, as the store's topology does."""
    try:
        reply = await node.execute("CLUSTER", "SHARDS")
    except CommandError as exc:
        if "unknown subcommand" not in str(exc).lower():
            raise
        return SlotMap.from_slots(await node.execute("CLUSTER", "SLOTS"), origin_host=node.host)
    return SlotMap.from_shards(reply, origin_host=node.host)


def _seed_problem(exc: Exception) -> str:
    text = str(exc)
    if "cluster support disabled" in text:
        return "cluster support disabled: this is not a cluster node"
    if isinstance(exc, MalformedTopologyReply):
        return f"unreadable cluster map: {text}"
    return text
