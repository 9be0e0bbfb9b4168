"""The connection manager: from ``session.redis`` to replies from the right Redis node.

It builds one :class:`~redis_session._pool.NodePool` per node it talks to (one for a single
server; the master and its replicas under Sentinel, see ``_topology``), picks the pool for each
command, and retries at this level — never inside redis-py, whose own retries reconnect to a
dead master (redis-py #3874). Every command is bounded by ``redis.timeout`` in total, retries
included. A single server that refuses connections (restarting) or answers LOADING or BUSY
is waited for with a short backoff shared by all callers, until each command's deadline; one
that has refused for longer than a restart takes (``_RESTART_WINDOW``) fails callers at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import anyio

from ._backoff import Backoff
from ._cluster import OPTION as CLUSTER_OPTION
from ._cluster import ClusterTopology
from ._config import RedisConfig
from ._errors import (
    CommandError,
    ConnectionLost,
    PoolTimeout,
    StoreUnavailable,
    other_loop_error,
)
from ._pool import CLUSTER_GATHER_TURNS, NodePool, settle_abandoned
from ._scripts import Script
from ._slots import key_slot, parse_redirect
from ._spec import ConnectionSpec, connection_spec
from ._stalls import StallLedger, ledger
from ._statistics import PoolStatistics
from ._tls import describe_tls_error
from ._topology import SentinelTopology
from ._wire import (
    describe_auth,
    describe_plain,
    node_label,
    pack,
    pack_tuple,
    unbracket,
)

__all__ = ["ConnectionManager", "Topology", "make_pool_factory"]

logger = logging.getLogger("redis_session")

Arg = bytes | str | int | float

#: Error replies that mean "this node is not (or no longer) the writable master".
_FAILOVER_REPLIES = ("READONLY", "MASTERDOWN", "LOADING", "NOREPLICAS")
#: Error replies worth retrying within the deadline: the above, and a server busy running a
#: long script (BUSY), which answers again once the script ends.
_RETRY_REPLIES = (*_FAILOVER_REPLIES, "BUSY")
#: Error replies of a Redis Cluster that the manager handles itself: a redirect (MOVED, ASK), a
#: multi-key command during a migration (TRYAGAIN), a slot without a master (CLUSTERDOWN). None
#: of them ran the command.
_CLUSTER_REPLIES = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
#: Error replies that mean the server cannot take writes now (out of memory, failing
#: snapshots): the store is unavailable, not misused, so callers get StoreUnavailable.
_UNAVAILABLE_REPLIES = ("MISCONF", "OOM")
#: Retries after a connection failure on a single server (no Sentinel to ask for another),
#: of a command that may have run, unless ``redis.max_retries`` sets another number. One that
#: surely did not run (the server refused the connection, or answered LOADING or BUSY) is
#: retried until its deadline instead, see below.
_STATIC_RETRIES = 2
#: Error replies from a single server that refused to run the command for now: a server
#: restarting (loading its data set) or busy with a script answers again soon.
_WAIT_REPLIES = ("LOADING", "BUSY")
#: Pause before the next try while a single server refuses connections or is loading,
#: doubling up to the maximum. One schedule per manager, shared by every caller: a restart
#: under load then costs one connect per pause, not one per waiting command.
_REFUSED_BACKOFF_MIN = 0.025
_REFUSED_BACKOFF_MAX = 0.25
#: How long after its first refused connect a single server is waited for (a restart). Past
#: that it is down: callers fail at once, and one try per pause still looks for it.
_RESTART_WINDOW = 2.0
#: For this long after a stall of the event loop, a write under Sentinel is acknowledged only
#: once the failover events received meanwhile are handled (see ``Topology.settle``).
_SETTLE_AFTER_STALL = 1.0
#: Under Sentinel the deadline bounds retries; this only guards against a spinning bug
#: (``recover`` pauses between attempts, so a 5 s deadline allows a few dozen).
_SENTINEL_RETRIES = 1000
#: Share of the time left that a read-only command may spend on a replica before the retry
#: on the master.
_REPLICA_SHARE = 0.5
#: A write acknowledged by a cluster master this long after it was sent may come from a
#: master that hung past a failover (``cluster-node-timeout`` is a second or more in practice):
#: it is acknowledged only once the other masters confirm that node still serves the slot.
_SLOW_REPLY = 0.2
#: Bound on closing what a failed or cancelled open had opened (each pool bounds its own
#: steps too; this bounds them all together).
_OPEN_CLEANUP_TIMEOUT = 5.0

CLIENT_NAME = "redis_session"


class Topology(Protocol):
    """Which node pools exist and which serves a command; Sentinel logic lives behind this."""

    #: Whether read-only commands may go to a replica.
    routes_reads: bool
    #: Whether a failed command is worth retrying until its deadline (a new master may appear).
    follows_failover: bool
    #: Whether commands are routed by the hash slot of their keys (Redis Cluster).
    sharded: bool

    async def start(self) -> None:
        """Discover nodes and open the pools."""

    async def adopt(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Before the first command from ``loop`` when the last one came from another loop.

        Raises :class:`UsageError` if the topology's loop is another one still open.
        """

    def writer(self, slot: int = 0) -> NodePool:
        """Return the pool of the master (of ``slot``, when sharded)."""

    def reader(self, slot: int = 0) -> NodePool:
        """Return the pool for a read-only command (on ``slot``, when sharded)."""

    def pools(self) -> list[NodePool]:
        """Return every pool in use."""

    async def recover(self, failed: NodePool, deadline: float) -> None:
        """React to a connection failure or failover reply on ``failed`` before a retry."""

    async def settle(self, deadline: float) -> None:
        """Handle the failover news already received (asked before acknowledging a write)."""

    async def aclose(self) -> None:
        """Close every pool and background task."""


def make_pool_factory(
    cfg: RedisConfig, spec: ConnectionSpec | None = None
) -> Callable[..., NodePool]:
    """Return a function that builds the pool for one data node of ``cfg``.

    ``spec`` is the store's resolved connection spec (built from ``cfg`` if not given). The
    function takes ``host``, ``port`` and, for a cluster node that may serve reads as a
    replica, ``readonly=True``.
    """
    timeout = cfg.timeout.total_seconds()
    if spec is None:
        spec = connection_spec(cfg)

    has_user, has_password = cfg.username is not None, cfg.password is not None

    def build(host: str, port: int, *, readonly: bool = False) -> NodePool:
        label = node_label(unbracket(host), port)
        server_name = spec.server_name(host) if not host.startswith("/") else None
        plain: Callable[[BaseException], str | None] | None = None
        if server_name is not None:

            def plain(exc: BaseException) -> str | None:
                # Only for TLS: on plain TCP a reset while connecting is not a handshake.
                return describe_tls_error(exc, node=label, server_name=server_name)

        elif not host.startswith("/"):

            def plain(exc: BaseException) -> str | None:
                return describe_plain(exc, label)

        def describe(exc: BaseException) -> str | None:
            # Credentials first: a refused login names the options to fix.
            refused = describe_auth(exc, has_user=has_user, has_password=has_password)
            if refused is not None or plain is None:
                return refused
            return plain(exc)

        return NodePool(
            label,
            spec.opener(host, port, readonly=readonly),
            max_connections=cfg.maximum_active_connections,
            min_idle=cfg.minimum_idle_connections,
            timeout=timeout,
            max_idle_time=cfg.maximum_idle_time.total_seconds(),
            describe_error=describe,
            gather_turns=CLUSTER_GATHER_TURNS if cfg.cluster is not None else 1,
        )

    return build


class _StaticTopology:
    """A single Redis server: every command goes to its pool."""

    routes_reads = False
    follows_failover = False
    sharded = False

    def __init__(self, pool: NodePool) -> None:
        self._pool = pool

    async def start(self) -> None:
        await self._pool.start(connect=1)

    async def adopt(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        pass  # the pool refuses another live loop, or moves to this one, by itself

    def writer(self, slot: int = 0) -> NodePool:
        return self._pool

    def reader(self, slot: int = 0) -> NodePool:
        return self._pool

    def pools(self) -> list[NodePool]:
        return [self._pool]

    async def recover(self, failed: NodePool, deadline: float) -> None:
        pass  # the pool opens a fresh connection for the retry by itself

    async def settle(self, deadline: float) -> None:
        pass  # one server: no failover news

    async def aclose(self) -> None:
        await self._pool.aclose()


class ConnectionManager:
    """Sends commands to the configured Redis: the right node, within the limits, retried.

    Open it with :meth:`open`; close it with :meth:`aclose`.
    """

    def __init__(self, cfg: RedisConfig, topology: Topology) -> None:
        self._cfg = cfg
        self._timeout = cfg.timeout.total_seconds()
        self._topology = topology
        #: The cluster topology, when commands are routed by slot (None otherwise).
        self._cluster = topology if isinstance(topology, ClusterTopology) else None
        # redis.max_retries (Authelia's) sets the retries of a single server; 0 keeps ours, as
        # go-redis keeps its own for Authelia's 0. Under Sentinel the deadline bounds them.
        static = cfg.max_retries or _STATIC_RETRIES
        self._retries = _SENTINEL_RETRIES if topology.follows_failover else static
        #: Current pause of the shared retry schedule (0 while the server answers), and the
        #: loop time of the next try of every caller waiting on it.
        self._backoff = Backoff(_REFUSED_BACKOFF_MIN, _REFUSED_BACKOFF_MAX)
        self._retry_at = 0.0
        #: Loop time of the first refused connect of the current outage, if any.
        self._down_since: float | None = None
        #: What the last try failed with, for callers that fail without a try of their own.
        self._refusal = ""
        #: The event loop of the last command: a command from another one has the topology
        #: adopt its loop first (or refuse it), see ``Topology.adopt``.
        self._loop: asyncio.AbstractEventLoop | None = None
        #: That loop's stalls (see ``_stalls``).
        self._stalls = StallLedger()
        #: One server (no Sentinel, no cluster): a reply is acknowledged as it comes, since no
        #: failover can have moved the writer (``_StaticTopology.writer`` is always its pool).
        self._single = isinstance(topology, _StaticTopology)

    @classmethod
    async def open(cls, cfg: RedisConfig) -> ConnectionManager:
        """Connect (the idle floor, at least one connection) and start background tasks.

        Raises :class:`StoreUnavailable` naming the node when Redis cannot be reached.
        """
        spec = connection_spec(cfg)  # TLS files are read here, once: a ConfigError now or never
        build = make_pool_factory(cfg, spec)
        topology: Topology
        if cfg.high_availability is not None:
            topology = SentinelTopology(cfg, build, spec)
        elif cfg.cluster is not None:
            topology = ClusterTopology(cfg, build)
        else:
            assert cfg.host is not None  # validate_config guarantees it
            topology = _StaticTopology(build(cfg.host, cfg.port))
        try:
            await topology.start()
        except BaseException:
            # Shielded: under an anyio cancel scope every await of the cleanup would be
            # cancelled again, and the sockets opened so far would stay logged in until the
            # garbage collector found them. Bounded, so a hung close cannot hold the caller.
            with anyio.move_on_after(_OPEN_CLEANUP_TIMEOUT, shield=True) as cleanup:
                await topology.aclose()
            if cleanup.cancelled_caught:
                logger.warning(
                    "closing the connections of a failed open took over %gs; gave up",
                    _OPEN_CLEANUP_TIMEOUT,
                )
            raise
        manager = cls(cfg, topology)
        manager._loop = loop = asyncio.get_running_loop()
        manager._stalls = ledger(loop)
        return manager

    @property
    def routes_reads(self) -> bool:
        """Whether read-only commands may be served by a replica."""
        return self._topology.routes_reads

    @property
    def sharded(self) -> bool:
        """Whether commands are routed by the hash slot of their keys (Redis Cluster)."""
        return self._cluster is not None

    def slot_of(self, key: bytes) -> int:
        """Return the routing slot of a command whose first key is ``key`` (0 unless sharded)."""
        return key_slot(key) if self._cluster is not None else 0

    def deadline(self) -> float:
        """Return the loop time by which a call started now must end: ``redis.timeout`` on.

        Pass it to several calls that make up one operation to bound them all together.
        """
        return asyncio.get_running_loop().time() + self._timeout

    async def execute(
        self,
        *args: Arg,
        read_only: bool = False,
        deadline: float | None = None,
        slot: int = 0,
    ) -> Any:
        """Run one command and return its raw RESP2 reply.

        ``read_only`` commands may go to a replica when ``route_by_latency`` or
        ``route_randomly`` is set; everything else goes to the master. ``deadline`` (loop
        time, see :meth:`deadline`) bounds the command and its retries; by default
        ``redis.timeout`` from now. On a cluster, ``slot`` (:meth:`slot_of` its first key)
        picks the node.
        """
        return await self.execute_packed(
            pack(*args), read_only=read_only, deadline=deadline, slot=slot
        )

    async def execute_packed(  # noqa: PLR0912, PLR0915 - one loop over every outcome of a try
        self,
        packed: bytes,
        *,
        read_only: bool = False,
        deadline: float | None = None,
        resent: list[bool] | None = None,
        slot: int = 0,
        fallback: tuple[Arg, ...] | None = None,
    ) -> Any:
        """Run one command already encoded with :func:`~redis_session._pool.pack`.

        ``fallback``: ``packed`` is an ``EVALSHA``, and ``fallback`` the arguments of the same
        call as ``EVAL`` with the source, packed and sent once when a node answers
        ``NOSCRIPT`` (see :meth:`run_script`).

        On a cluster, ``slot`` picks the node; MOVED and ASK are followed (at most
        ``cluster.max_redirects`` of them), TRYAGAIN and CLUSTERDOWN retried until the deadline.

        When the command is sent again after a try that may have run it (its connection broke
        after sending, or its node stopped being the master), ``True`` is appended to
        ``resent``: the reply then answers the resend, and a write script that reports "not
        applied" may still have been applied by the first try.
        """
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self._timeout
        given = deadline
        topology = self._topology
        # _retry_at is set (non-zero) exactly while the backoff is (see _answered): a float
        # test, where the Backoff's __bool__ is a Python call on every command.
        if loop is not self._loop or self._retry_at:
            await self._prepare(loop, deadline)  # rare: only these two checks per command
        attempt = redirects = 0
        #: The node an ASK redirect sent this command to, for its next try only.
        asked: NodePool | None = None
        #: What failed the try before this one, and where: a retry that then runs out of time
        #: waiting for a connection reports that, not a full pool.
        earlier: tuple[NodePool, StoreUnavailable | CommandError] | None = None
        stalls = self._stalls
        while True:
            # A stall of our own event loop since the call began (it may have made several
            # commands: EVAL after NOSCRIPT, a resend) is not the node's time: move on by it.
            began = given - self._timeout
            deadline = given if stalls.last_end <= began else given + stalls.since(began)
            cluster = self._cluster
            if asked is not None:
                pool, asking, asked = asked, True, None
            elif cluster is not None and not read_only:
                # A cluster's write: the slot's master, one list read (writer() when unknown).
                asking = False
                known = cluster.writers[slot]
                pool = known if known is not None else cluster.writer(slot)
            else:
                pool = topology.reader(slot) if read_only else topology.writer(slot)
                asking = False
            until = deadline
            if read_only and not asking and pool is not topology.writer(slot):
                # A replica gets part of what is left: if it hangs, the retry on the master
                # (the replica is then left out of routing) still fits within the deadline.
                until = loop.time() + (deadline - loop.time()) * _REPLICA_SHARE
            # Only a cluster asks how long a write took (see _SLOW_REPLY below).
            sent_at = loop.time() if cluster is not None else 0.0
            # The pool's future awaited here, not through NodePool.execute: one coroutine
            # less per command on the hot path.
            future = pool.submit(loop, packed, until, asking)
            try:
                try:
                    reply = await future
                except BaseException:
                    settle_abandoned(future)
                    raise
            except ConnectionLost as exc:
                failure: StoreUnavailable | CommandError = exc
            except PoolTimeout as exc:
                if until >= deadline:
                    if self._cluster is not None:
                        # A master that stopped answering (hung) may have been replaced by
                        # now: have the map checked for the next commands.
                        self._cluster.suspect(pool)
                    if earlier is not None and not isinstance(earlier[1], PoolTimeout):
                        # A retry queued with what was left of the deadline (after a master
                        # died, say): the news is what failed, not that the pool it went to
                        # had no free connection in those last moments. (The PoolTimeout
                        # stays the context.)
                        raise _retry_ran_out(pool, *earlier)  # noqa: B904
                    raise  # the master's pool is full: no other node can take the command
                failure = exc  # the replica's pool is stuck: go to the master
            except CommandError as exc:
                if exc.code == "NOSCRIPT" and fallback is not None:
                    # Each node caches scripts for itself: a promoted replica, a node a slot
                    # moved to or a restarted one answers NOSCRIPT. Sending the source caches
                    # it there; it proves the script did not run (not a resend), and the
                    # fallback shares this call's deadline.
                    packed = pack_tuple(fallback)
                    fallback = None
                    redirects = 0
                    continue
                if cluster is None or exc.code not in _CLUSTER_REPLIES:
                    failure = _retryable_reply(pool, exc)
                elif exc.code in ("MOVED", "ASK"):
                    redirect = parse_redirect(str(exc))
                    redirects += 1
                    if redirect is None or redirects > cluster.max_redirects:
                        raise _too_many_redirects(pool, exc, cluster.max_redirects) from exc
                    target = cluster.redirected(redirect, pool)
                    if redirect.kind == "ASK":
                        asked = target
                    continue  # a redirect proves the command did not run: not a resend
                else:
                    # TRYAGAIN or CLUSTERDOWN: not run; retried after a pause, in time.
                    if loop.time() >= deadline:
                        raise _unavailable(pool, exc) from exc
                    await cluster.wait_out(exc, deadline)
                    earlier = (pool, exc)
                    # The bound is on redirects in a row: a migration may answer ASK, then
                    # TRYAGAIN, many times over before it ends; the deadline bounds those.
                    redirects = 0
                    continue
            else:
                if self._single:
                    # One server: no failover news to hear, no other master to ask.
                    if self._retry_at:
                        self._answered()
                    return reply
                if cluster is not None:
                    # A cluster: no failover news to settle (a demoted master answers MOVED),
                    # and no shared retry schedule (that is a single server's): a write's
                    # reply is checked for its delay and its writer only.
                    if read_only or asking:
                        return reply
                    if loop.time() - sent_at > _SLOW_REPLY:
                        # A master that hung past the cluster's failover runs what waited in
                        # its socket, and answers, before it hears it was replaced; its data
                        # set is then thrown away. Before acknowledging a write that slow, ask
                        # the other masters who serves the slot now (the check below then
                        # resends).
                        await cluster.recheck(pool, deadline)
                    known = cluster.writers[slot]
                    # No master in the map for the slot: writer() sent it to a stand-in
                    # (_orphan), and the reply of that same node counts (a review finding:
                    # reading only the list resent writes that had run).
                    if known is pool or (known is None and cluster.writer(slot) is pool):
                        return reply
                else:
                    if (
                        not read_only
                        and topology.follows_failover
                        and self._stalls.ended_after(loop.time() - _SETTLE_AFTER_STALL)
                    ):
                        # Sentinel, just after a stall of our loop: failover news may have
                        # arrived with the reply and still wait unread: hear it before
                        # acknowledging.
                        await topology.settle(deadline)
                    if read_only or topology.writer(slot) is pool:
                        self._answered()
                        return reply
                # The writer changed while this command was in flight: a failover away from
                # that node was announced, and what it acknowledged after that may be thrown
                # away when it is demoted (after a stall of our loop, its reply can arrive in
                # the same turn as the event). Resend to the new master: every script is
                # safe to repeat, and a write that did apply there is recognised as such.
                failure = ConnectionLost(
                    f"{pool.node} stopped being the master while the command ran", sent=True
                )
            if not topology.follows_failover and _did_not_run(failure):
                # A single server that refuses connections is most likely restarting: wait
                # for it until the deadline rather than fail at once. Safe to repeat however
                # often, since the command never reached it (or it refused to run it).
                await self._wait_for_server(pool, failure, deadline)
                earlier = (pool, failure)
                continue
            attempt += 1
            if attempt > self._retries or loop.time() >= deadline:
                raise _unavailable(pool, failure)
            earlier = (pool, failure)
            if resent is not None and not _did_not_run(failure):
                resent.append(True)
            await topology.recover(pool, deadline)
            if loop.time() >= deadline:
                # recover() waited until the deadline for a new master: report what failed.
                # A retry now would only find the deadline passed in the pool's queue, and
                # blame a full pool (PoolTimeout) for a dead node.
                raise _unavailable(pool, failure)

    def check_caller(self) -> None:
        """Raise :class:`UsageError` if the running loop is not ours while ours is still open.

        For what must fail before it changes any state (a store's close); commands find out
        in :meth:`_prepare`, from the topology.
        """
        loop, ours = asyncio.get_running_loop(), self._loop
        if ours is not None and loop is not ours and not ours.is_closed():
            raise other_loop_error(ours, "", loop, "the connection manager")

    async def _prepare(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Before a command: move to a new event loop, and join a waiting schedule."""
        if loop is not self._loop:
            # A store reused in a later asyncio.run, or called from another live loop (which
            # the topology refuses before anything is touched).
            await self._topology.adopt(loop, deadline)
            self._loop = loop
            self._stalls = ledger(loop)
        if self._backoff:
            await self._join_schedule(deadline)

    def _answered(self) -> None:
        """Note that a command succeeded: a single server that refused connects answers again."""
        if self._retry_at:
            self._backoff.reset()
            self._retry_at = 0.0
            self._down_since = None

    async def _join_schedule(self, deadline: float) -> None:
        """While a single server fails to answer: wait for the next try, or fail at once.

        A caller arriving between tries does not make a connect of its own: it waits for the
        scheduled one, or fails now if that comes too late for it or the server is down.
        """
        now = asyncio.get_running_loop().time()
        if now >= self._retry_at:
            return  # this caller makes the scheduled try
        if self._retry_at >= deadline or self._down_for_good(now):
            raise StoreUnavailable(self._refusal)
        await asyncio.sleep(self._retry_at - now)

    async def _wait_for_server(
        self, pool: NodePool, failure: StoreUnavailable | CommandError, deadline: float
    ) -> None:
        """After a try that did not run: sleep until the next try, or raise what failed."""
        now = asyncio.get_running_loop().time()
        reported = _unavailable(pool, failure)
        self._refusal = str(reported)
        if not isinstance(failure, ConnectionLost):
            self._down_since = None  # it answers (LOADING, BUSY): up, if not ready
        elif self._down_since is None:
            self._down_since = now
        if now >= self._retry_at:
            # The first caller to fail since the last try moves the schedule on; the others
            # failed in the same try and wait for the same next one.
            self._retry_at = now + self._backoff.failed()
        if self._retry_at >= deadline or self._down_for_good(now):
            # The next try would come too late to answer, or the server is not restarting
            # but down: report what failed, now.
            raise reported
        await asyncio.sleep(self._retry_at - now)

    def _down_for_good(self, now: float) -> bool:
        # Only refused connects age an outage: LOADING and BUSY come from a server that
        # answers, and will take the command once it is done.
        return self._down_since is not None and now - self._down_since >= _RESTART_WINDOW

    def run_script(
        self,
        script: Script,
        keys: Sequence[Arg],
        args: Sequence[Arg],
        *,
        read_only: bool = False,
        deadline: float | None = None,
        resent: list[bool] | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Run a Lua script by its SHA; on NOSCRIPT send the source (which caches it).

        Await what it returns. Both tries share one deadline (by default ``redis.timeout``
        from the call), so a NOSCRIPT late in the first does not give the second a whole
        timeout more. ``resent`` as for :meth:`execute_packed` (a NOSCRIPT reply proves the
        script did not run). Not a coroutine itself: the command's own coroutine is returned,
        one layer less per command on the store's hot path.
        """
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self._timeout
        # Every key of a store operation shares one slot (see _ids); the first one routes it.
        slot = 0
        if self._cluster is not None and keys and isinstance(first := keys[0], bytes):
            slot = key_slot(first)
        packed = pack_tuple(("EVALSHA", script.sha, len(keys), *keys, *args))
        # Packed only on NOSCRIPT (rare): a tuple, cheaper to build than a closure.
        fallback = ("EVAL", script.source, len(keys), *keys, *args)
        return self.execute_packed(
            packed,
            read_only=read_only,
            deadline=deadline,
            resent=resent,
            slot=slot,
            fallback=fallback,
        )

    def statistics(self) -> PoolStatistics:
        """Return a snapshot of every pool, summed and per node."""
        nodes = tuple(p.statistics() for p in self._topology.pools())
        return PoolStatistics(
            max_connections=self._cfg.maximum_active_connections,
            open=sum(n.open for n in nodes),
            in_use=sum(n.in_use for n in nodes),
            idle=sum(n.idle for n in nodes),
            waiting=sum(n.waiting for n in nodes),
            nodes=nodes,
        )

    def __repr__(self) -> str:
        s = self.statistics()
        where = ", ".join(n.node for n in s.nodes)
        return (
            f"<ConnectionManager {where} [Connections: {s.open} open, {s.in_use} in use, "
            f"{s.idle} idle | Commands: {s.waiting} waiting]>"
        )

    async def aclose(self) -> None:
        """Close every connection and background task (bounded, shielded)."""
        await self._topology.aclose()


def _retryable_reply(pool: NodePool, exc: CommandError) -> CommandError:
    """Return an error reply worth retrying; raise what the caller gets for the others."""
    if exc.code in _UNAVAILABLE_REPLIES:
        msg = f"{pool.node} cannot take writes now: {exc}"
        raise StoreUnavailable(msg) from exc
    if exc.code not in _RETRY_REPLIES:
        raise exc
    return exc


def _too_many_redirects(pool: NodePool, reply: CommandError, limit: int) -> StoreUnavailable:
    msg = (
        f"{pool.node} redirected a command once more after {limit} redirects ({reply}); the "
        f"cluster is resharding, or raise {CLUSTER_OPTION}.max_redirects"
    )
    return StoreUnavailable(msg)


def _did_not_run(failure: StoreUnavailable | CommandError) -> bool:
    """Whether ``failure`` proves the command did not run: no connection, LOADING or BUSY."""
    if isinstance(failure, ConnectionLost):
        return not failure.sent
    return isinstance(failure, CommandError) and failure.code in _WAIT_REPLIES


def _retry_ran_out(
    pool: NodePool, failed: NodePool, failure: StoreUnavailable | CommandError
) -> StoreUnavailable:
    """Return what a caller gets when the retry after ``failure`` (on ``failed``) timed out queued.

    The type is the first failure's (a :class:`ConnectionLost` keeps its ``sent``: the first
    try may have run), and the message says both what failed and where the retry waited.
    """
    first = _unavailable(failed, failure)
    message = f"{first}; retried on {pool.node}, which had no connection free before the deadline"
    if isinstance(first, ConnectionLost):
        retried: StoreUnavailable = ConnectionLost(message, sent=first.sent)
    else:
        retried = StoreUnavailable(message)
    retried.__cause__ = first.__cause__ or first
    return retried


def _unavailable(pool: NodePool, failure: StoreUnavailable | CommandError) -> StoreUnavailable:
    """Return what a caller gets when retries end: the connection failure or failover reply.

    A connection failure is raised as it is (a :class:`ConnectionLost`, its cause the
    connection's own error); an error reply becomes :class:`StoreUnavailable` caused by it.
    """
    if isinstance(failure, CommandError):
        # LOADING also comes from a standalone server that is restarting: not a failover.
        if failure.code == "LOADING":
            state = "is still loading its data set"
        elif failure.code == "BUSY":
            state = "is busy running a script"
        elif failure.code == "CLUSTERDOWN":
            state = "reports the cluster down for this slot"
        elif failure.code == "TRYAGAIN":
            state = "kept answering TRYAGAIN (its slot is being migrated)"
        else:
            state = "is not a writable master"
        unavailable = StoreUnavailable(f"{pool.node} {state}: {failure}")
        unavailable.__cause__ = failure
        return unavailable
    return failure
