"""The Redis Cluster topology: the slot map, one pool per node, and the node of each command.

Beside the single server and Sentinel (``_topology``), behind the same protocol. The map comes
from ``CLUSTER SHARDS`` (``CLUSTER SLOTS`` on servers without it) asked of the known nodes and
the configured seeds; every node it names gets one auto-pipelining pool with the configured
limits (opened lazily: a replica's pool connects only when reads are routed to it). Commands
are routed by the slot of their first key (every key of a store operation shares one slot, see
``_ids``). What the manager hands back here:

- ``MOVED``: the slot now lives elsewhere. The map is corrected for that slot at once and a
  survey refreshes the whole map in the background (one at a time, at most every
  ``_SURVEY_GAP``); the command is retried on the new owner.
- ``ASK``: the slot is migrating and this key is already on the target: the command goes
  there once, preceded by ``ASKING`` (see ``NodePool.execute``). The map is not changed.
- ``TRYAGAIN`` (a multi-key command during a migration) and ``CLUSTERDOWN`` (no owner for the
  slot, or the cluster failing over): retried after a pause within the command's deadline;
  ``CLUSTERDOWN`` also starts a survey.
- A broken connection to a master (killed, hung, partitioned): :meth:`recover` surveys until
  the map names another master for its slots (the cluster promotes a replica after
  ``cluster-node-timeout``), pausing between tries so retries do not spin.

Nodes that leave the map have their pools closed; new ones get pools. With
``route_by_latency`` or ``route_randomly`` every pool's connections send ``READONLY`` (a master
ignores it) and a read-only command goes to the slot's master or one of its healthy replicas,
by latency (PINGs every ``_MEASURE_INTERVAL``) or at random.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from collections.abc import Awaitable, Callable

import anyio

from ._config import RedisConfig
from ._errors import (
    CommandError,
    ConnectionLost,
    PoolTimeout,
    RedisSessionError,
    StoreClosed,
    StoreUnavailable,
    other_loop_error,
)
from ._pool import NodePool
from ._slots import (
    SLOT_COUNT,
    ClusterNode,
    MalformedTopologyReply,
    NodeFacts,
    Redirect,
    SlotMap,
    parse_nodes,
)
from ._tasks import Supervisor, gather_all
from ._wire import node_label, pack, unbracket

__all__ = ["OPTION", "ClusterTopology"]

logger = logging.getLogger("redis_session")

Address = tuple[str, int]

#: The option every message about the cluster's configuration names.
OPTION = "session.redis.cluster"
#: Least time between two surveys started by failures or redirects (a burst of MOVED replies
#: for one migrated slot costs one survey).
_SURVEY_GAP = 0.1
#: Periodic survey: notices new replicas and a resharding that no command has run into yet.
_SURVEY_INTERVAL = 5.0
#: Bound on asking one node for the map (a hung node must not hold the survey).
_ASK_TIMEOUT = 1.0
#: Pause before the next try while a failed master is still in the map (not yet replaced),
#: or while the cluster answers TRYAGAIN or CLUSTERDOWN.
_RETRY_PAUSE = 0.05
#: Latency PINGs (with read routing).
_MEASURE_INTERVAL = 1.0
_LATENCY_ALPHA = 0.3
_LATENCY_TIE = 0.001
#: Bound on closing the pool of a node that left the map.
_CLOSE_TIMEOUT = 4.0


class ClusterTopology:
    """The nodes of a Redis Cluster, and the pool for each command's slot."""

    follows_failover = True
    sharded = True

    def __init__(self, cfg: RedisConfig, build: Callable[..., NodePool]) -> None:
        cluster = cfg.cluster
        assert cluster is not None  # the manager builds this topology only for a cluster
        self._build = build
        seeds: list[Address] = []
        if cfg.host is not None:
            seeds.append((unbracket(cfg.host), cfg.port))
        seeds += [(unbracket(node.host), node.port) for node in cluster.nodes]
        self._seeds = list(dict.fromkeys(seeds))
        self.routes_reads = cluster.route_by_latency or cluster.route_randomly
        self._by_latency = cluster.route_by_latency
        #: Most MOVED/ASK replies one command follows (``cluster.max_redirects``).
        self.max_redirects = cluster.max_redirects
        self._timeout = cfg.timeout.total_seconds()
        #: One pool per node the map names (and seeds until the first map), by address.
        self._pools: dict[Address, NodePool] = {}
        self._map: SlotMap | None = None
        #: The master's pool of each slot (None: no master known): one list read per command.
        #: Read by the connection manager's hot path directly (``writer`` is the checked way);
        #: only this class replaces or changes it.
        self.writers: list[NodePool | None] = [None] * SLOT_COUNT
        #: For each shard of the map, the pools that may serve its reads, master first.
        self._readers: list[tuple[NodePool, ...]] = []
        self._shard_of: list[int] = [-1] * SLOT_COUNT
        #: Pools that serve some slot as master now.
        self._masters: set[NodePool] = set()
        #: Replica pools whose last command or PING failed: no reads until a PING succeeds.
        self._down: set[NodePool] = set()
        self._latency: dict[NodePool, float] = {}
        #: Why a node could not be asked for the map, by address (for the open's error).
        self._problems: dict[Address, str] = {}
        # False once a node refused CLUSTER NODES for lack of permission (an ACL user without
        # +cluster|nodes): asking again would only add a denial to every node's ACL LOG per
        # survey. The map is then read without epochs.
        self._ask_epochs = True
        self._tasks = Supervisor()
        self._survey: asyncio.Task[bool] | None = None
        #: Checks of the map after a slow write reply, one per pool in question.
        self._rechecks: dict[NodePool, asyncio.Task[None]] = {}
        self._surveyed_at = -math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = ""
        self._started = False
        self._closed = False

    # -- the Topology protocol -------------------------------------------------------------------

    async def start(self) -> None:
        """Read the slot map from a seed and open the masters' pools.

        Raises :class:`StoreUnavailable` when no seed answers with a map before
        ``redis.timeout`` (at once when every seed answered that it is not a cluster node).
        """
        loop = asyncio.get_running_loop()
        self._bind(loop)
        deadline = loop.time() + self._timeout
        while not await self._surveyed(deadline):
            definite = self._problems and all(
                "cluster support disabled" in p or _refused_login(p)
                for p in self._problems.values()
            )
            if definite or loop.time() >= deadline:
                raise StoreUnavailable(self._explain())
            await asyncio.sleep(min(_RETRY_PAUSE * 4, max(0.0, deadline - loop.time())))
        masters = sorted(self._masters, key=lambda p: p.node)
        results = await gather_all([_started(p) for p in masters])
        failures = [r for r in results if r is not None]
        if len(failures) == len(masters):
            # Not one master to talk to: the store would answer nothing.
            raise failures[0]
        for failure in failures:
            logger.warning("%s: %s (its slots wait for a failover)", OPTION, failure)
        if self.routes_reads:
            await self._measure()
        self._started = True
        self._tasks.spawn(self._monitor(), name="redis_session cluster")

    async def adopt(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Before a command from ``loop`` when the last came from another (closed) loop.

        Raises :class:`UsageError` if that loop is still open. Otherwise restarts the monitor
        on ``loop`` and refreshes the map (it may have changed while nothing watched).
        """
        if loop is self._loop:
            return
        self._bind(loop)
        if self._closed or not self._started:
            return
        self._tasks.spawn(self._monitor(), name="redis_session cluster")
        task = self._kick(force=True)
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))

    def writer(self, slot: int = 0) -> NodePool:
        """Return the pool of the master of ``slot``."""
        pool = self.writers[slot]
        if pool is None:
            return self._orphan(slot)
        return pool

    def reader(self, slot: int = 0) -> NodePool:
        """Return a pool for a read-only command on ``slot``: its master unless reads are routed."""
        if not self.routes_reads:
            return self.writer(slot)
        shard = self._shard_of[slot]
        if shard < 0:
            return self.writer(slot)
        nodes = [p for p in self._readers[shard] if p not in self._down]
        if not nodes:
            return self.writer(slot)
        if len(nodes) > 1 and self._by_latency:
            measured = [(self._latency[p], p) for p in nodes if p in self._latency]
            if not measured:
                return self.writer(slot)
            best = min(rtt for rtt, _ in measured)
            nodes = [p for rtt, p in measured if rtt - best <= _LATENCY_TIE]
        return nodes[0] if len(nodes) == 1 else random.choice(nodes)  # noqa: S311 - spreading

    def pools(self) -> list[NodePool]:
        """Return every node's pool."""
        return list(self._pools.values())

    async def recover(self, failed: NodePool, deadline: float) -> None:
        """Before a retry after ``failed`` broke: a replica leaves routing; a master is replaced.

        For a master, survey until the map names another master for its slots (or the
        deadline), pausing between surveys.
        """
        if failed not in self._masters:
            self._down.add(failed)
            return
        loop = asyncio.get_running_loop()
        task = self._kick()
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        if failed in self._masters:
            # Still the master of its slots: the cluster has not promoted a replica yet
            # (that takes cluster-node-timeout), or the node came back. Pause, then retry.
            await asyncio.sleep(max(0.0, min(_RETRY_PAUSE, deadline - loop.time())))

    async def settle(self, deadline: float) -> None:
        """Nothing to settle: a demoted master answers MOVED, which the manager follows."""

    async def aclose(self) -> None:
        """Stop the background tasks and close every pool (bounded, shielded)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        self._closed = True

        def closing() -> list[Awaitable[None]]:
            return [pool.aclose() for pool in self._pools.values()]

        await self._tasks.aclose(closing)

    # -- redirects and cluster replies (asked by the connection manager) -------------------------

    def redirected(self, redirect: Redirect, origin: NodePool) -> NodePool:
        """Return the pool a ``MOVED``/``ASK`` points to; a ``MOVED`` also corrects the map."""
        host = redirect.host if redirect.host is not None else _host_of(origin)
        pool = self._pool_for((unbracket(host), redirect.port))
        if redirect.kind == "MOVED" and not self._closed:
            old = self.writers[redirect.slot]
            self.writers[redirect.slot] = pool
            self._masters.add(pool)
            if old is not None and old is not pool and old not in self.writers:
                self._masters.discard(old)
            self._kick()
        return pool

    async def recheck(self, pool: NodePool, deadline: float) -> None:
        """Refresh the map from the masters other than ``pool`` (after a slow reply from it).

        Callers with slow replies from the same pool share one check. Without another master
        to ask, the map stays as it is.
        """
        task = self._rechecks.get(pool)
        if task is None or task.done():
            task = self._tasks.spawn(self._recheck(pool), name=f"redis_session recheck {pool.node}")
            self._rechecks[pool] = task
        loop = asyncio.get_running_loop()
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))

    async def _recheck(self, pool: NodePool) -> None:
        loop = asyncio.get_running_loop()
        others = [a for a, p in self._pools.items() if p in self._masters and p is not pool]
        try:
            found = await self._best(others, loop.time() + self._timeout)
            if found is not None:
                self._install(found)
        finally:
            if self._rechecks.get(pool) is asyncio.current_task():
                del self._rechecks[pool]

    def suspect(self, pool: NodePool) -> None:
        """Note that ``pool`` ran out of time on a command: survey, in case it was replaced."""
        if pool in self._masters and not self._closed:
            self._kick()

    async def wait_out(self, reply: CommandError, deadline: float) -> None:
        """Pause before retrying a command the cluster answered TRYAGAIN or CLUSTERDOWN."""
        if reply.code == "CLUSTERDOWN":
            self._kick()
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, min(_RETRY_PAUSE, deadline - loop.time())))

    # -- introspection ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        shards = len(self._readers)
        return (
            f"<ClusterTopology [{shards} shards, {len(self._pools)} nodes | "
            f"replicas down: {len(self._down)}]>"
        )

    # -- surveys ---------------------------------------------------------------------------------

    def _kick(self, *, force: bool = False) -> asyncio.Task[bool]:
        """Return the survey in flight, or start one (concurrent callers share it)."""
        task = self._survey
        if task is not None and not task.done():
            return task
        task = self._tasks.spawn(self._delayed_survey(force=force), name="redis_session survey")
        self._survey = task
        return task

    async def _delayed_survey(self, *, force: bool) -> bool:
        loop = asyncio.get_running_loop()
        wait = self._surveyed_at + _SURVEY_GAP - loop.time()
        if wait > 0 and not force:
            await asyncio.sleep(wait)
        return await self._surveyed(loop.time() + self._timeout)

    async def _surveyed(self, deadline: float) -> bool:
        """Ask the nodes for the map; install the best answer. Whether one came.

        Nodes are asked together, so a hung node (its answer would take the whole
        ``_ASK_TIMEOUT``) does not hold the survey. The first complete answer (every slot
        covered, no master failed) from a node that is itself a master in it ends the survey:
        a master knows its own slots best, where a replica or a seed may still hold an older
        picture.
        """
        loop = asyncio.get_running_loop()
        self._surveyed_at = loop.time()
        # The masters (the seeds before the first map); when none of them answers, the seeds
        # and the replicas. A replica's pool stays unconnected unless reads are routed to it,
        # and a seed named otherwise than in the map has no pool once the map is known.
        first = [a for a, p in self._pools.items() if p in self._masters] or self._seeds
        # The replicas of a failed master too: the one promoted is the first to know.
        first += [a for a in _heirs(self._map) if a not in first]
        found = await self._best(first, deadline)
        if found is None:
            known = [a for a, p in self._pools.items() if p not in self._down]
            rest = [a for a in dict.fromkeys([*self._seeds, *known]) if a not in first]
            found = await self._best(rest, deadline)
        if found is None:
            return False
        self._install(found)
        return True

    async def _best(self, candidates: list[Address], deadline: float) -> SlotMap | None:
        """Ask ``candidates`` together; return the newest picture of the cluster, if any.

        The pictures are merged slot by slot, the claim with the newest config epoch winning
        (:meth:`SlotMap.newest`; without epochs, the best-scored picture's claim). Only the
        pictures of one cluster are merged: an answer that shares no node with the others (a
        seed of another cluster) is left out, since epochs of two clusters do not compare
        (:func:`_one_cluster`). The survey ends once more than half of the candidates
        answered and the merged map is complete (every slot covered, no master failed): a
        hung node does not hold it, and one stale node (not yet told of a failover, or an old
        master back from a pause, which still claims its slots) is outvoted by the epochs of
        the others. Otherwise it waits for every answer, each bounded by ``_ASK_TIMEOUT``.
        """
        if not candidates:
            return None
        loop = asyncio.get_running_loop()
        until = min(deadline, loop.time() + _ASK_TIMEOUT)
        asks = {asyncio.ensure_future(self._ask(addr, until)): addr for addr in candidates}
        pending = set(asks)
        answers: list[tuple[tuple[int, int, int, int], Address, SlotMap]] = []
        chosen: list[tuple[tuple[int, int, int, int], Address, SlotMap]] = []
        merged: SlotMap | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    found = task.result()
                    if found is None:
                        continue
                    addr = asks[task]
                    answers.append((_score(found, addr, len(answers)), addr, found))
                if not answers or (pending and 2 * len(answers) <= len(candidates)):
                    # Not enough answers to end the survey yet: merging now (milliseconds
                    # of CPU when the pictures differ) would be thrown away.
                    continue
                answers.sort(key=lambda a: a[0])
                chosen = _one_cluster(answers)
                merged = SlotMap.newest([found for _, _, found in chosen])
                complete = merged.uncovered_slots() == 0 and _failed_masters(merged) == 0
                if complete and 2 * len(chosen) > len(candidates):
                    break
        finally:
            for task in pending:
                task.cancel()
            if pending:
                # The asks are commands queued in pools: cancelled, they end at once.
                with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                    await asyncio.wait(pending)
            for task in asks:
                if task.done() and not task.cancelled():
                    task.exception()  # seen: an error here is raised once, below or above
        self._left_out([a for _, a, _ in answers], [a for _, a, _ in chosen])
        return merged

    def _left_out(self, answered: list[Address], kept: list[Address]) -> None:
        """Record (and log) the nodes whose answers were not merged: of another cluster."""
        for addr in answered:
            if addr not in kept:
                problem = "its map shares no node with the others': a node of another cluster?"
                self._problems[addr] = problem
                logger.warning("%s: %s left out of the map: %s", OPTION, node_label(*addr), problem)

    async def _ask(self, addr: Address, until: float) -> SlotMap | None:
        """Return ``addr``'s picture of the cluster, or None (its problem is recorded)."""
        pool = self._pool_for(addr)
        try:
            # Both in one batch on the pool's connection: CLUSTER NODES adds the epochs.
            calls = [_reply_or_error(pool, ("CLUSTER", "SHARDS"), until)]
            if self._ask_epochs:
                calls.append(_facts(pool, until))
            reply, *rest = await gather_all(calls)
            known = rest[0] if rest else None
            if isinstance(known, CommandError) and "NOPERM" in str(known):
                self._ask_epochs = False
            facts = known if isinstance(known, dict) else None
            if isinstance(reply, CommandError):
                if "unknown subcommand" not in str(reply).lower():
                    raise reply
                # Redis before 7.0: the older command has the same facts, less health.
                reply = await pool.execute(pack("CLUSTER", "SLOTS"), until)
                found = SlotMap.from_slots(reply, origin_host=addr[0], facts=facts)
            else:
                found = SlotMap.from_shards(reply, origin_host=addr[0], facts=facts)
        except CommandError as exc:
            text = str(exc)
            if "cluster support disabled" in text:
                text = "cluster support disabled: this is not a cluster node (remove cluster:)"
            self._problems[addr] = text
            return None
        except MalformedTopologyReply as exc:
            self._problems[addr] = f"unreadable cluster map: {exc}"
            return None
        except (ConnectionLost, PoolTimeout, StoreUnavailable, StoreClosed) as exc:
            # StoreClosed: the node left the map (its pool closed) while it was being asked.
            self._problems[addr] = str(exc)
            return None
        self._problems.pop(addr, None)
        return found

    def _install(self, found: SlotMap) -> None:
        """Route by ``found``: pools for its nodes, those of nodes that left it closed."""
        if self._closed:
            return
        addresses: dict[Address, ClusterNode] = {}
        for node in found.nodes():
            if node.host is not None:
                addresses[(unbracket(node.host), node.port)] = node
        shard_pools: list[NodePool | None] = []
        readers: list[tuple[NodePool, ...]] = []
        for shard in found.shards:
            master = shard.master
            master_pool = None
            if master is not None and master.host is not None:
                master_pool = self._pool_for((unbracket(master.host), master.port))
            shard_pools.append(master_pool)
            replicas = []
            if self.routes_reads:
                replicas = [
                    self._pool_for((unbracket(r.host), r.port))
                    for r in shard.replicas
                    if r.host is not None and r.health in ("online", "unknown")
                ]
            readers.append(tuple(p for p in (master_pool, *replicas) if p is not None))
        shard_of = [found.shard_index(slot) for slot in range(SLOT_COUNT)]
        self._shard_of = [-1 if i is None else i for i in shard_of]
        self.writers = [None if i is None else shard_pools[i] for i in shard_of]
        self._readers = readers
        self._masters = {p for p in shard_pools if p is not None}
        self._map = found
        # Only the pools routing needs stay open: the masters', and the replicas' when reads
        # are routed. Others (a seed asked for the first map, a replica asked while no master
        # answered, a node that left the map) are closed; a pool is opened again on demand.
        wanted = {addr for addr, pool in self._pools.items() if pool in self._masters}
        wanted.update(addr for addr, pool in self._pools.items() if any(pool in r for r in readers))
        for addr in [a for a in self._pools if a not in wanted]:
            pool = self._pools.pop(addr)
            self._down.discard(pool)
            self._latency.pop(pool, None)
            if addr not in addresses and addr not in self._seeds:
                logger.info("%s: node %s left the cluster map; closing its pool", OPTION, pool.node)
            self._tasks.spawn(
                _close(pool), name=f"redis_session close {pool.node}", on_close="finish"
            )

    def _pool_for(self, addr: Address) -> NodePool:
        pool = self._pools.get(addr)
        if pool is None:
            if self._closed:
                # A redirect or survey finishing as the store closes: open nothing new.
                raise StoreClosed("the Redis Cluster topology is closed")
            pool = self._build(*addr, readonly=self.routes_reads)
            self._pools[addr] = pool
        return pool

    def _orphan(self, slot: int) -> NodePool:
        """Return a pool for a slot no master serves: any master answers MOVED or CLUSTERDOWN."""
        if self._closed:
            raise StoreClosed("the Redis Cluster topology is closed")
        if self._masters:
            return next(iter(self._masters))
        if self._pools:
            return next(iter(self._pools.values()))
        msg = f"{OPTION}: no node serves hash slot {slot}"
        raise StoreUnavailable(msg)

    def _explain(self) -> str:
        tried = "; ".join(
            f"{node_label(*addr)}: {self._problems.get(addr, 'no answer in time')}"
            for addr in self._seeds
        )
        msg = f"no node of {OPTION} answered with the cluster's slot map ({tried})"
        if any(_refused_login(p) for p in self._problems.values()):
            msg += "; check session.redis.username, session.redis.password and that user's ACL"
        return msg

    # -- background ------------------------------------------------------------------------------

    async def _monitor(self) -> None:
        """Survey every ``_SURVEY_INTERVAL``; with read routing, PING every pool each second."""
        loop = asyncio.get_running_loop()
        next_survey = loop.time() + _SURVEY_INTERVAL
        while True:
            await asyncio.sleep(_MEASURE_INTERVAL if self.routes_reads else _SURVEY_INTERVAL)
            if self.routes_reads:
                await self._measure()
            if loop.time() >= next_survey:
                next_survey = loop.time() + _SURVEY_INTERVAL
                task = self._kick()
                await asyncio.wait({task})

    async def _measure(self) -> None:
        pools = [p for shard in self._readers for p in shard]
        rtts = await gather_all([_ping(p) for p in pools])
        for pool, rtt in zip(pools, rtts, strict=True):
            if rtt is None:
                self._latency.pop(pool, None)
                if pool not in self._masters:
                    self._down.add(pool)
                continue
            self._down.discard(pool)
            prev = self._latency.get(pool)
            self._latency[pool] = rtt if prev is None else prev + _LATENCY_ALPHA * (rtt - prev)

    # -- the event loop --------------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to ``loop``; refuse another loop that is still open, forget a closed one's tasks."""
        old = self._loop
        if old is loop:
            return
        if old is not None:
            if not old.is_closed():
                seeds = ", ".join(node_label(*a) for a in self._seeds)
                raise other_loop_error(old, self._thread, loop, f"Redis Cluster {seeds}")
            self._tasks.abandon()
            self._survey = None
            self._rechecks.clear()
        self._loop = loop
        self._thread = repr(threading.current_thread().name)


def _refused_login(problem: str) -> bool:
    """Whether a node's answer says our credentials are wrong (retrying will not help)."""
    return any(
        word in problem for word in ("WRONGPASS", "invalid username-password", "NOAUTH", "NOPERM")
    )


def _heirs(found: SlotMap | None) -> list[Address]:
    """Return the replicas of the shards whose master ``found`` says failed."""
    if found is None:
        return []
    return [
        (unbracket(replica.host), replica.port)
        for shard in found.shards
        if shard.ranges and shard.master is not None and shard.master.health == "failed"
        for replica in shard.replicas
        if replica.host is not None and replica.health != "failed"
    ]


async def _reply_or_error(pool: NodePool, command: tuple[str, ...], until: float) -> object:
    """Return the reply to ``command``, or the :class:`CommandError` it was answered with."""
    try:
        return await pool.execute(pack(*command), until)
    except CommandError as exc:
        return exc


async def _facts(pool: NodePool, until: float) -> dict[str, NodeFacts] | CommandError | None:
    """Read the node's ``CLUSTER NODES`` (config epochs, failures).

    The refusal itself where the node refused (the caller stops asking after ``NOPERM``),
    None where the answer is unreadable. An ACL user without ``+cluster|nodes`` still gets a
    map, without epochs to compare.
    """
    try:
        return parse_nodes(await pool.execute(pack("CLUSTER", "NODES"), until))
    except CommandError as exc:
        logger.debug("%s: CLUSTER NODES of %s refused: %s", OPTION, pool.node, exc)
        return exc
    except MalformedTopologyReply as exc:
        logger.debug("%s: CLUSTER NODES of %s not used: %s", OPTION, pool.node, exc)
        return None


def _score(found: SlotMap, addr: Address, arrival: int) -> tuple[int, int, int, int]:
    """Rank an answer (lower first): complete, no master failed, from a master in it, early."""
    own = any(
        m is not None and m.host is not None and (unbracket(m.host), m.port) == addr
        for m in (shard.master for shard in found.shards)
    )
    return (found.uncovered_slots(), _failed_masters(found), 0 if own else 1, arrival)


def _one_cluster(
    answers: list[tuple[tuple[int, int, int, int], Address, SlotMap]],
) -> list[tuple[tuple[int, int, int, int], Address, SlotMap]]:
    """Return the answers of one cluster: those of the group most of them belong to.

    Two answers are of one cluster when their maps share a node id (each node lists every node
    it knows). Config epochs are compared only within a cluster, so a seed of another cluster,
    however high its epochs, must not win slots. A tie goes to the group of the best-ranked
    answer (``answers`` are in order of preference); the order within the group is kept.
    """
    groups: list[tuple[set[str], list[int]]] = []
    for i, (_, _, found) in enumerate(answers):
        ids = {n.node_id for n in found.nodes() if n.node_id is not None}
        joined = [g for g in groups if not ids or g[0] & ids]
        if not joined:
            groups.append((ids, [i]))
            continue
        # Joins every group it links (a node known to two groups makes them one).
        first = joined[0]
        first[0].update(ids)
        first[1].append(i)
        for other in joined[1:]:
            first[0].update(other[0])
            first[1].extend(other[1])
            groups.remove(other)
    best = max(groups, key=lambda g: (len(g[1]), -min(g[1])))
    return [answers[i] for i in sorted(best[1])]


def _failed_masters(found: SlotMap) -> int:
    # A shard serving no slot (a failed-over master listed on its own) does not count.
    return sum(
        1
        for shard in found.shards
        if shard.ranges and (shard.master is None or shard.master.health == "failed")
    )


def _host_of(pool: NodePool) -> str:
    # The pool's label is host:port (IPv6 bracketed): an empty MOVED endpoint means its host.
    host, _, _ = pool.node.rpartition(":")
    return unbracket(host)


async def _started(pool: NodePool) -> StoreUnavailable | None:
    try:
        await pool.start(connect=1)
    except StoreUnavailable as exc:
        return exc
    return None


async def _ping(pool: NodePool) -> float | None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await pool.execute(pack("PING"), began + _ASK_TIMEOUT)
    except RedisSessionError:
        return None
    return loop.time() - began


async def _close(pool: NodePool) -> None:
    """Close ``pool``: shielded (anyio scopes too), bounded, logging a failure."""
    with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
        try:
            await pool.aclose()
        except Exception:  # a failure while closing is logged, not raised
            logger.warning("closing the pool for %s failed", pool.node, exc_info=True)
