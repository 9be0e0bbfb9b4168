"""Redis Sentinel topology: find the master, follow a failover fast, route read-only commands.

redis-py's own Sentinel support is not used: its retries reconnect to the old master (redis-py
#3874) and it does not listen for ``+switch-master`` (#3867). Instead (protocol in ``_sentinel``):

- A *survey* asks every known sentinel at once for the master, its config epoch, the other
  sentinels and (when reads are routed) the replicas. Candidates are ranked by the newest epoch
  naming them, then by how many sentinels do; one becomes the writer only once ``ROLE`` on it,
  through the very pool that will serve it, says ``master``. One survey runs at a time:
  ``start()``, the periodic check (every second), events and every ``recover()`` share it.
- A subscriber on *every* sentinel follows failover events. Only the leader sentinel publishes
  ``+selected-slave``, so listening to one sentinel would miss it two times out of three.
- Fencing: the moment an event says a failover away from our master began (``+selected-slave``,
  ``+promoted-slave`` or ``+switch-master`` naming it), writes move to the chosen replica,
  synchronously in the event handler, and the old master's pool is closed at once: the few
  commands it then answers come back as ``ConnectionLost`` and are retried on the new node (the
  scripts are safe to resend), so no write the old master takes after the promotion is
  acknowledged. Until promotion a (read-only) replica refuses writes with READONLY, which the
  manager retries. Waiting for ``+switch-master``, or for ``INFO`` on the replica, instead loses
  every write the old master acknowledges meanwhile (thousands under load, measured; more when
  the application's own loop stalls). A fence ends when the sentinels name the new master; an
  unpromoted one is dropped on an abort event, or after ``_FENCE_LIMIT`` once no sentinel
  reports a failover in progress.
- Never back to an older master: a master a failover moved away from is *superseded*. The
  sentinels go on naming it (with the failover's new config epoch) until ``+switch-master``, and
  it says ``ROLE master`` until Sentinel demotes it seconds later, so neither is evidence. It
  may be the writer again only when the sentinels name it with a config epoch above the newest
  one seen naming its successor (a later failover back to it), or through a failover event.

The decisions are pure functions (``_fence``) of a frozen view (writer, fence, superseded
masters, newest epoch) and one observation (an event, a survey, a role). The I/O around them
lives in :class:`SentinelTopology`, whose other state is ``_master`` (the writer's pool),
``_links`` (the sentinels) and the replica pools in ``_router`` (``_routing``). Surveys (one at
a time) and event handlers change the writer; background tasks (one ``Supervisor``, shared with
the router) open replica pools and close retired ones. Every await that takes a pool gives it
back or closes it on any exception, cancellation included. A node whose pool cannot be built
(a ``ConfigError``, e.g. a TLS file unreadable now) is a candidate that failed, logged once.

The background tasks and sentinel connections belong to the event loop that opened the store.
A call from another loop that is still running is refused (:class:`UsageError`). Once that
loop has closed (a later ``asyncio.run``), the first command from the new loop makes the
topology forget the dead loop's tasks and connections, start its watchers and monitor again,
and survey the sentinels (within the command's deadline) before it goes out: a failover may
have happened while no loop was running to hear of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Awaitable, Callable

import anyio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AuthenticationError, RedisError

from ._backoff import Backoff
from ._config import RedisConfig
from ._errors import ConfigError, RedisSessionError, StoreClosed, StoreUnavailable, other_loop_error
from ._fence import FENCE_LIMIT, View, on_answers, on_event, on_installed, on_role
from ._pool import NodePool
from ._routing import ReadRouter
from ._sentinel import (
    SENTINEL_TIMEOUT,
    Address,
    Answer,
    Event,
    SentinelLink,
    configured_sentinels,
    explain,
    listen,
    reason,
    replication_info,
)
from ._spec import ConnectionSpec, connection_spec
from ._tasks import Supervisor, gather_all
from ._wire import node_label, pack, unread_replies

__all__ = ["SentinelTopology"]

logger = logging.getLogger("redis_session")

#: Periodic survey and PINGs: the fallback for a missed event.
_CHECK_INTERVAL = 1.0
#: Bound on one survey round (sentinels plus the ROLE check of a candidate).
_ROUND_BUDGET = 2.0
#: ``recover()`` pauses up to this long when the sentinels still name the failed master, so
#: retries do not spin while they decide; a switch of master ends the pause at once.
_RETRY_PAUSE = 0.2
#: The same while fenced: promotion is a sentinel timer tick (~0.1 s) away.
_FENCE_PAUSE = 0.05
#: How long a write's acknowledgement waits, at most, for events already received.
_SETTLE_LIMIT = 0.05
#: Pause before subscribing again, doubling up to the maximum; reset after a healthy spell.
_WATCH_BACKOFF = (0.1, 5.0)
_WATCH_HEALTHY = 5.0
_CLEANUP_TIMEOUT = 4.0


class SentinelTopology:
    """The master and replicas that the sentinels of ``high_availability`` name.

    Implements the connection manager's ``Topology``: ``writer()`` is the master,
    ``reader()`` picks a node for a read-only command (``route_by_latency`` /
    ``route_randomly``), and ``recover()`` waits briefly for a new master after a failure.
    """

    follows_failover = True
    sharded = False

    def __init__(
        self,
        cfg: RedisConfig,
        build: Callable[[str, int], NodePool],
        spec: ConnectionSpec | None = None,
    ) -> None:
        assert cfg.high_availability is not None
        self._cfg = cfg
        self._ha = cfg.high_availability
        self._name = self._ha.sentinel_name
        self._build = build
        self.routes_reads = self._ha.route_by_latency or self._ha.route_randomly
        self._master: NodePool | None = None
        self._view = View()
        #: Bumped whenever the writer changes: a survey installs what it verified only if no
        #: event (or other survey) changed the writer while it awaited.
        self._generation = 0
        #: Every background task: monitor, watchers, surveys, closes, replica openings.
        self._tasks = Supervisor(timeout=_CLEANUP_TIMEOUT)
        self._router = ReadRouter(
            build,
            by_latency=self._ha.route_by_latency,
            open_timeout=cfg.timeout.total_seconds(),
            tasks=self._tasks,
            retire=self._retire,
        )
        # Resolved once (TLS files read now), shared by every link, also ones learned later.
        self._spec = connection_spec(cfg) if spec is None else spec
        self._links = {a: SentinelLink(cfg, a, self._spec) for a in configured_sentinels(cfg)}
        #: Why each recently named candidate was not accepted as master (for messages).
        self._problems: dict[Address, str] = {}
        self._hint: Address | None = None
        #: Writable replicas already warned about (they acknowledge writes while fenced).
        self._warned_writable: set[Address] = set()
        self._again = False
        self._first_failure: float | None = None
        self._round_task: asyncio.Task[list[Answer]] | None = None
        self._watchers: dict[Address, asyncio.Task[None]] = {}
        #: Each watcher's subscribed connection, to see whether events wait unread on it.
        self._subscribers: dict[Address, AbstractConnection] = {}
        self._wake = asyncio.Event()
        #: Set (then replaced) whenever the writer changes: wakes callers paused in recover().
        self._switched = asyncio.Event()
        self._started = False
        self._closed = False
        #: The loop every task, event and sentinel connection above belongs to, and the name
        #: of its thread (for the message refusing a call from another loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = ""
        #: The survey started on moving to a new loop; commands wait for it (see adopt()).
        self._refresh: asyncio.Task[list[Answer]] | None = None

    # -- the Topology protocol -------------------------------------------------------------------

    async def start(self) -> None:
        """Find and verify the master, open its pool (and replica pools when routing reads).

        Raises :class:`StoreUnavailable` when no sentinel names a reachable master before
        ``redis.timeout``; at once when every sentinel gave a definite no (unknown master name,
        failed authentication, not a sentinel).
        """
        loop = asyncio.get_running_loop()
        self._bind(loop)
        deadline = loop.time() + self._cfg.timeout.total_seconds()
        while True:
            answers = await self._round(min(deadline, loop.time() + _ROUND_BUDGET))
            if self._master is not None:
                break
            definite = all(a.kind in ("unknown", "auth", "error") for a in answers)
            if definite or loop.time() >= deadline:
                raise StoreUnavailable(explain(self._name, answers, self._problems))
            await asyncio.sleep(min(_RETRY_PAUSE, max(0.0, deadline - loop.time())))
        if self.routes_reads:
            # Routing starts with the replicas in place and measured, not a second later.
            await self._router.settle(SENTINEL_TIMEOUT)
            await self._router.measure(self._master)
        self._started = True
        self._tasks.spawn(self._monitor(), name="redis_session sentinel")
        for link in self._links.values():
            self._start_watcher(link)

    async def adopt(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Before a command from ``loop``, the first since another loop ran the store.

        Raises :class:`UsageError` if the store's loop is another one, still open. If that
        loop has closed, forget what belonged to it, restart the watchers and the monitor on
        ``loop`` and survey the sentinels: the master may have changed while nothing listened.
        Waits for that survey until ``deadline`` (commands arriving meanwhile wait too).
        """
        if loop is not self._loop:
            self._bind(loop)
            if self._closed or not self._started:
                return
            self._tasks.spawn(self._monitor(), name="redis_session sentinel")
            for link in self._links.values():
                self._start_watcher(link)
            self._refresh = self._kick()
        task = self._refresh
        if task is None:
            return
        if not task.done():
            # asyncio.wait neither raises the task's outcome nor cancels it on timeout.
            await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        if task.done():
            self._refresh = None

    def writer(self, slot: int = 0) -> NodePool:
        """Return the pool of the master (or of the replica being promoted, while fenced)."""
        if self._master is None:
            raise StoreClosed("the Sentinel topology is not started")
        return self._master

    def reader(self, slot: int = 0) -> NodePool:
        """Return a pool for a read-only command: the master unless reads are routed."""
        master = self.writer()
        return self._router.pick(master) if self.routes_reads else master

    def pools(self) -> list[NodePool]:
        """Return the master's pool and the replicas' pools."""
        return [p for p in (self._master, *self._router.replicas.values()) if p is not None]

    async def recover(self, failed: NodePool, deadline: float) -> None:
        """Before a retry: wait (bounded by ``deadline``) until the sentinels name a new master.

        A failure on a pool that is no longer the writer returns at once (the retry goes to the
        new master); a failing replica is left out of routing until it answers a PING again.
        """
        if failed is not self._master:
            self._router.failed(failed)
            return
        loop = asyncio.get_running_loop()
        if self._first_failure is None:
            self._first_failure = loop.time()
        while True:
            switched = self._switched
            task = self._kick()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            # asyncio.wait neither raises the task's outcome nor cancels it on timeout.
            await asyncio.wait({task}, timeout=remaining)
            if self._master is not failed:
                return
            # No new master yet: pause so retries do not spin, but wake the moment any survey
            # (periodic, event-driven or another caller's) changes the writer.
            fence = self._view.fence
            fenced = fence is not None and not fence.promoted
            pause = _FENCE_PAUSE if fenced else _RETRY_PAUSE
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(pause, deadline - loop.time()))):
                    await switched.wait()
            # While fenced, promotion is a sentinel tick away: hold this caller (one retry of
            # the manager's budget) and poll ROLE through shared surveys until it happens.
            fence = self._view.fence
            if not fenced or self._master is not failed or fence is None or fence.promoted:
                return

    async def aclose(self) -> None:
        """Stop the background tasks and close every pool and sentinel connection (bounded)."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)  # a closed loop's tasks are forgotten; another live loop refused
        self._closed = True
        self._router.close()

        def closing() -> list[Awaitable[None]]:
            # Once the tasks have stopped: none of them can install or take a pool any more.
            pools = (self._master, *self._router.replicas.values())
            return [
                *(p.aclose() for p in pools if p is not None),
                *(link.aclose() for link in self._links.values()),
            ]

        await self._tasks.aclose(closing)

    # -- introspection ---------------------------------------------------------------------------

    def sentinels(self) -> list[str]:
        """Return the sentinels known so far, configured ones first, as ``host:port``."""
        return [link.label for link in self._links.values()]

    def __repr__(self) -> str:
        master = self._master.node if self._master is not None else "?"
        fence = self._view.fence
        fenced = " (being promoted)" if fence and not fence.promoted else ""
        healthy = self._router.healthy()
        return (
            f"<SentinelTopology {self._name!r} [master {master}{fenced} | "
            f"replicas: {healthy} healthy of {len(self._router.replicas)} | "
            f"sentinels: {len(self._links)}]>"
        )

    # -- surveys ---------------------------------------------------------------------------------

    def _kick(self, *, again: bool = False) -> asyncio.Task[list[Answer]]:
        """Return the survey in flight, or start one: concurrent callers share it.

        ``again`` asks for one more round after the one in flight (news arrived mid-round).
        """
        task = self._round_task
        if task is None or task.done():
            task = self._tasks.spawn(self._rounds(), name="redis_session sentinel survey")
            self._round_task = task
        elif again:
            self._again = True
        return task

    async def _rounds(self) -> list[Answer]:
        answers: list[Answer] = []
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._again = False
            try:
                answers = await self._round(loop.time() + _ROUND_BUDGET)
            except Exception:  # a bad round must not break recover() or the monitor
                logger.warning("Sentinel check for %r failed", self._name, exc_info=True)
            if not self._again:
                break
        return answers

    async def _round(self, deadline: float) -> list[Answer]:
        """Ask the sentinels, follow their master, learn sentinels and replicas."""
        now = asyncio.get_running_loop().time()
        links = [link for link in self._links.values() if link.skip_until <= now]
        within = max(0.01, min(SENTINEL_TIMEOUT, deadline - now))
        answers = await gather_all(
            [
                link.survey(self._name, replicas=self.routes_reads, within=within)
                for link in links or self._links.values()
            ]
        )
        for answer in answers:
            for addr in answer.sentinels:
                if addr not in self._links:
                    logger.info("learned of sentinel %s for %r", node_label(*addr), self._name)
                    self._links[addr] = SentinelLink(self._cfg, addr, self._spec)
                    self._start_watcher(self._links[addr])
        await self._follow(answers, deadline)
        if self.routes_reads:
            # The freshest word on our master's replicas: the newest epoch naming it.
            naming = [a for a in answers if a.master == self._view.writer]
            if naming:
                replicas = max(naming, key=lambda a: a.epoch).replicas
                self._router.plan(replicas, self._view.writer)
        return answers

    async def _follow(self, answers: list[Answer], deadline: float) -> None:
        """Make the best verified candidate the writer, unless it already is; track a fence."""
        await self._check_fence(answers, deadline)
        hint, self._hint = self._hint, None
        self._view, ranked = on_answers(self._view, answers, hint)
        generation = self._generation
        for addr in ranked:
            if addr == self._view.writer:
                return  # the sentinels still name the master in use
            pool = await self._verified_master(addr, deadline)
            if pool is None:
                continue
            if self._generation != generation or self._view.blocked(addr):
                # An event moved the writer while ROLE was asked: that news is newer.
                self._retire(pool)
                return
            self._view = on_installed(self._view, addr)
            self._install(pool)
            return

    async def _check_fence(self, answers: list[Answer], deadline: float) -> None:
        """Notice the fenced node's promotion, or give the fence up when it is overdue."""
        fence, pool = self._view.fence, self._master
        if fence is None or pool is None:
            return
        role: str | None = None
        if not fence.promoted:
            info = await self._replication(pool, deadline)
            role = info.get("role")
            if pool is not self._master:
                return  # the writer changed meanwhile; the next round looks again
            writable = role == "slave" and info.get("slave_read_only") == "0"
            if writable and fence.new not in self._warned_writable:
                self._warned_writable.add(fence.new)
                logger.warning(
                    "%s, chosen as master of %r, is a writable replica: writes it takes "
                    "before its promotion survive only if the promotion happens",
                    pool.node,
                    self._name,
                )
        failing_over = any(a.failover for a in answers)
        now = asyncio.get_running_loop().time()
        self._view = on_role(self._view, role, failing_over, now)
        after = self._view.fence
        if after is not None and after.promoted and not fence.promoted:
            logger.info("%s is promoted: it is the master of %r", pool.node, self._name)
            self._changed()
        elif after is None and not fence.promoted:
            logger.warning(
                "%s was not promoted within %gs; following the sentinels for %r again",
                node_label(*fence.new),
                FENCE_LIMIT,
                self._name,
            )

    async def _replication(self, pool: NodePool, deadline: float) -> dict[str, str]:
        """``INFO replication`` of the node behind ``pool``; empty if it failed."""
        with contextlib.suppress(RedisSessionError, TimeoutError):
            async with asyncio.timeout(max(0.01, deadline - asyncio.get_running_loop().time())):
                return replication_info(await pool.execute(pack("INFO", "replication"), deadline))
        return {}

    async def _role(self, pool: NodePool, deadline: float) -> str | None:
        """``ROLE`` of the node behind ``pool`` (``master``, ``slave``), None if it failed."""
        with contextlib.suppress(RedisSessionError, TimeoutError):
            async with asyncio.timeout(max(0.01, deadline - asyncio.get_running_loop().time())):
                reply = await pool.execute(pack("ROLE"), deadline)
                return str(reply[0].decode())
        return None

    async def _open(self, addr: Address, deadline: float) -> tuple[NodePool, bool] | str:
        """Take over the replica pool for ``addr`` or open one; else say why not."""
        reused = self._router.take(addr)
        if reused is not None:
            return reused, True
        try:
            pool = self._build(*addr)
        except ConfigError as exc:
            return str(exc)
        try:
            async with asyncio.timeout(max(0.01, deadline - asyncio.get_running_loop().time())):
                # Through gather_all: NodePool.start's own gather re-raises a connect's
                # CancelledError rather than ours, which escapes an anyio cancel scope.
                await gather_all([pool.start(connect=1)])
        except (RedisSessionError, TimeoutError) as exc:
            await _close_pool(pool)
            return "timed out" if isinstance(exc, TimeoutError) else str(exc)
        except BaseException:
            await _close_pool(pool)
            raise
        return pool, False

    def _give_back(self, addr: Address, pool: NodePool, reused: bool) -> None:
        if reused:
            self._router.give_back(addr, pool)  # a healthy replica, not promoted (yet)
        else:
            self._retire(pool)

    async def _verified_master(self, addr: Address, deadline: float) -> NodePool | None:
        """Return a pool for ``addr`` if its ROLE says master; else record why not."""
        opened = await self._open(addr, deadline)
        if isinstance(opened, str):
            problem = opened
        else:
            pool, reused = opened
            try:
                role = await self._role(pool, deadline)
            except BaseException:
                # Cancelled (an open under a timeout, or aclose): the pool is nobody's yet.
                await self._discard(addr, pool, reused)
                raise
            if role == "master":
                self._problems.pop(addr, None)
                return pool
            problem = f"ROLE says {role}, not master" if role else "ROLE failed"
            self._give_back(addr, pool, reused)
        self._rejected(addr, problem)
        return None

    def _rejected(self, addr: Address, problem: str) -> None:
        """Record why ``addr`` is not the writer; log it once per change."""
        if self._problems.get(addr) != problem:
            where = node_label(*addr)
            logger.warning("Sentinel names %s as master of %r but %s", where, self._name, problem)
        self._problems[addr] = problem

    async def _discard(self, addr: Address, pool: NodePool, reused: bool) -> None:
        """Give back or close a pool taken for a check that did not finish (shielded)."""
        if reused and not self._closed:
            self._router.give_back(addr, pool)
        else:
            await _close_pool(pool)

    def _install(self, pool: NodePool) -> None:
        """Swap in the writer's pool (``_view.writer`` is its node); the old pool closes at once.

        Closing fails the commands still queued on the old pool with ``ConnectionLost``
        (``sent=False``) and those in flight with ``sent=True``, whose replies are then never
        delivered; the manager retries both on the new writer.
        """
        old = self._master
        self._master = pool
        self._generation += 1
        if old is None:
            logger.info("master for %r is %s", self._name, pool.node)
        else:
            if self._first_failure is None:
                since = "no failure was seen by this client"
            else:
                elapsed = asyncio.get_running_loop().time() - self._first_failure
                since = f"{elapsed:.2f}s after the first failure was seen"
            fence = self._view.fence
            if fence is not None and not fence.promoted:
                since += "; writes wait for its promotion, which the leader sentinel has begun"
            logger.warning("failover of %r: %s -> %s, %s", self._name, old.node, pool.node, since)
            self._router.forget(old)
            self._retire(old)
        self._first_failure = None
        self._changed()
        self._wake.set()  # refresh replicas soon: the old master may come back as one

    def _changed(self) -> None:
        self._switched.set()
        self._switched = asyncio.Event()

    # -- background ------------------------------------------------------------------------------

    async def _monitor(self) -> None:
        """Every second (sooner after a failover): survey, then PING the nodes when routing."""
        try:
            # Not `while True`: a cancellation lost in redis-py's wait_for (Python 3.11) must
            # not keep this task alive after aclose().
            while not self._closed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_CHECK_INTERVAL):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await asyncio.wait({self._kick()})
                    if self.routes_reads and self._master is not None:
                        await self._router.measure(self._master)
                except Exception:  # the monitor must outlive any one bad round
                    logger.warning("Sentinel monitor round failed", exc_info=True)
        finally:
            # Cancelled by aclose(), or by asyncio.run as its loop ends: the connections the
            # links keep between surveys belong to this loop, and nothing else would close
            # them before it does (the store may be used again from a later loop).
            for link in list(self._links.values()):
                await link.release()

    def _start_watcher(self, link: SentinelLink) -> None:
        if self._started and not self._closed and link.address not in self._watchers:
            name = f"redis_session events {link.label}"
            self._watchers[link.address] = self._tasks.spawn(self._watch(link), name=name)

    async def _watch(self, link: SentinelLink) -> None:
        """Follow failover events on one sentinel; resubscribe with backoff when it fails."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(*_WATCH_BACKOFF)
        last: str | None = None
        while not self._closed:  # see _monitor
            began = loop.time()
            try:
                await listen(
                    link,
                    self._name,
                    self._on_event,
                    lambda: self._closed,
                    functools.partial(self._subscribed, link.address),
                )
            except AuthenticationError as exc:
                problem = link.auth_problem(exc)
            except (RedisError, OSError, TimeoutError) as exc:
                problem = reason(exc)
            else:
                return  # listen() returns only once the topology is closed
            if problem != last:
                logger.warning("Sentinel %s: no failover events (%s)", link.label, problem)
            last = problem
            if loop.time() - began > _WATCH_HEALTHY:
                backoff.reset()
            await asyncio.sleep(backoff.failed())

    def _subscribed(self, address: Address, conn: AbstractConnection | None) -> None:
        if conn is None:
            self._subscribers.pop(address, None)
        else:
            self._subscribers[address] = conn

    async def settle(self, deadline: float) -> None:
        """Let the watchers handle the events already received, before a write is acknowledged.

        After a stall of the event loop, a write's reply and the failover event that makes
        its node a former master can arrive in the same turn, and nothing orders the caller
        after the watcher: the write would be acknowledged by a node about to be demoted.
        Bounded (``_SETTLE_LIMIT``): a subscriber holding half a message does not hold writes.
        """
        loop = asyncio.get_running_loop()
        until = min(deadline, loop.time() + _SETTLE_LIMIT)
        while any(unread_replies(conn) for conn in self._subscribers.values()):
            if loop.time() >= until:
                return
            await asyncio.sleep(0)

    def _on_event(self, event: Event) -> None:
        """Fence at once when a failover leaves our writer; queue the rest for a survey."""
        now = asyncio.get_running_loop().time()
        before = self._view
        view, switch = on_event(before, event, now)
        if view is before:
            if event.kind == "aborted" or event.node in (None, view.writer):
                return  # old news
            if event.kind != "selected":
                self._hint = event.node  # about a master we do not use: a survey checks it
        where = node_label(*event.node) if event.node else node_label(*event.master)
        logger.info("Sentinel event for %r: %s %s", self._name, event.kind, where)
        if switch is None or self._master is None or self._closed:
            self._view = view
        elif (pool := self._pool_now(switch)) is not None:
            # The writer changes now, without an await: the pool connects on first use.
            self._view = view
            self._install(pool)
        self._kick(again=True)

    def _pool_now(self, addr: Address) -> NodePool | None:
        """Return the replica pool of ``addr`` or a new one; None (logged) if it cannot be built."""
        pool = self._router.take(addr)
        if pool is not None:
            return pool
        try:
            return self._build(*addr)
        except ConfigError as exc:
            # Nowhere to fence to: stay, and let the surveys follow (and log) the node.
            self._rejected(addr, str(exc))
            return None

    # -- the event loop --------------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to ``loop``; refuse if bound to another loop that is still open.

        The tasks, events and connections here belong to one loop, and a future resolved
        from another loop's thread never wakes the loop waiting on it: a call from a second
        live loop would hang, so it is refused before anything is touched. A closed loop can
        never run its tasks again: forget them (see :meth:`_abandon`).
        """
        old = self._loop
        if old is loop:
            return
        here = threading.current_thread()
        if old is not None:
            if not old.is_closed():
                raise other_loop_error(old, self._thread, loop, f"Sentinel master {self._name!r}")
            self._abandon()
            logger.debug("Sentinel topology for %r moved to a new event loop", self._name)
        self._loop = loop
        self._thread = repr(here.name)

    def _abandon(self) -> None:
        """Forget everything tied to a closed event loop; no callback of it can run again.

        asyncio.run cancelled the tasks before closing its loop, and they closed their
        connections as they ended (the links' idle ones in ``_monitor``); the pools move to
        the new loop by themselves on their next use.
        """
        self._round_task = None
        self._refresh = None
        self._watchers.clear()
        self._subscribers.clear()
        self._tasks.abandon()
        self._again = False
        self._first_failure = None
        self._wake = asyncio.Event()
        self._switched = asyncio.Event()
        self._router.abandon()
        for link in self._links.values():
            link.abandon()

    # -- helpers ---------------------------------------------------------------------------------

    def _retire(self, pool: NodePool) -> None:
        """Close ``pool`` in the background, without blocking the caller.

        The task's first step stops the pool (fails its queue, cancels its workers) before
        any reply that arrives later can be delivered.
        """
        name = f"redis_session close {pool.node}"
        self._tasks.spawn(_close_pool(pool), name=name, on_close="finish")


async def _close_pool(pool: NodePool) -> None:
    """Close ``pool``: shielded (anyio scopes too), bounded, logging a failure."""
    with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
        try:
            await pool.aclose()
        except Exception:  # a failure while closing is logged, not raised
            logger.warning("closing the pool for %s failed", pool.node, exc_info=True)
