"""Redis Sentinel: find the master, follow a failover within a second, route read-only commands.

redis-py's own Sentinel support is not used: its retries reconnect to the old master (redis-py
#3874) and it does not listen for ``+switch-master`` (#3867). Instead:

- A *survey* asks every known sentinel at once, pipelined on one connection each,
  ``GET-MASTER-ADDR-BY-NAME``, ``MASTER`` (for the config epoch), ``SENTINELS`` and, when reads
  are routed, ``REPLICAS``. Addresses are ranked by the newest config epoch that names them,
  then by how many sentinels do, and a candidate becomes the master only once ``ROLE`` on it
  (through the very pool that will serve it) says ``master``.
- One survey is in flight at a time; ``start()``, the periodic check (every second), a
  failover event and every ``recover()`` share it.
- A watcher subscribes to ``+switch-master`` and ``+promoted-slave`` on one sentinel at a time
  and moves on, with backoff, when that sentinel fails.

The mutable state is ``_master``/``_master_addr`` (the writer), ``_replicas`` (pools of healthy
replicas, by address), ``_down`` (replicas our own PINGs or commands found failing),
``_latency`` (EWMA of PING round trips per pool) and ``_links`` (the sentinels). Only surveys
change the writer; background tasks open replica pools and close retired pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import attrs
from redis.asyncio.connection import AbstractConnection, Connection, UnixDomainSocketConnection
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from ._config import HighAvailabilityConfig, RedisConfig
from ._connections import CLIENT_NAME, node_label
from ._errors import RedisSessionError, StoreClosed, StoreUnavailable
from ._pool import NodePool, pack

__all__ = ["SentinelTopology"]

logger = logging.getLogger("redis_session")

Address = tuple[str, int]

_OPTION = "session.redis.high_availability"
#: Sentinel's well-known port; also tried for ``redis.host`` when ``redis.port`` is the data
#: default 6379, because the config model cannot tell an unset port from an explicit 6379.
_SENTINEL_PORT = 26379
_DATA_DEFAULT_PORT = 6379
#: Bound on one sentinel round trip, connecting included: a dead sentinel costs this, not more.
_SENTINEL_TIMEOUT = 1.0
#: Periodic survey and PINGs: the fallback for a missed failover event.
_CHECK_INTERVAL = 1.0
#: Bound on one survey round (sentinels plus the ROLE check of a candidate).
_ROUND_BUDGET = 2.0
#: ``recover()`` pauses up to this long when the sentinels still name the failed master, so
#: retries do not spin while they decide; a switch of master ends the pause at once.
_RETRY_PAUSE = 0.2
#: A sentinel that failed is skipped by surveys for this long, doubling up to the maximum.
_LINK_BACKOFF = (0.5, 5.0)
#: Pause before subscribing on the next sentinel, doubling up to the maximum.
_WATCH_BACKOFF = (0.1, 2.0)
#: A subscription that lasted this long was healthy: the backoff starts over.
_WATCH_HEALTHY = 5.0
#: With no event for this long the watcher PINGs, and gives up after one more timeout.
_WATCH_IDLE = 3.0
_WATCH_CHANNELS = ("+switch-master", "+promoted-slave")
#: Weight of the newest PING in the latency average.
_LATENCY_ALPHA = 0.3
#: Nodes this close to the fastest are equally near: reads are spread among them. (go-redis uses
#: the same 1 ms threshold but then keeps the first node, which starves loopback replicas.)
_LATENCY_TIE = 0.001
_CLEANUP_TIMEOUT = 2.0
_BAD_REPLICA_FLAGS = frozenset({"s_down", "o_down", "disconnected"})


@attrs.frozen
class _Answer:
    """What one sentinel said in a survey."""

    sentinel: str
    #: ``ok``, ``unknown`` (no such master), ``auth``, ``unreachable`` or ``error``.
    kind: str = "ok"
    master: Address | None = None
    epoch: int = -1
    replicas: tuple[Address, ...] = ()
    sentinels: tuple[Address, ...] = ()
    problem: str | None = None


class _SentinelLink:
    """One sentinel: a lazily opened request/reply connection and its failure backoff."""

    def __init__(self, address: Address, factory: Callable[[], AbstractConnection]) -> None:
        self.address = address
        self.label = node_label(*address)
        self.new_connection = factory
        self.skip_until = 0.0
        self.last_problem: str | None = None
        self._failures = 0
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def ask(self, commands: Sequence[tuple[str, ...]], within: float) -> list[Any]:
        """Send ``commands`` pipelined; error replies come back as ``ResponseError`` objects.

        Raises ``RedisError``/``OSError``/``TimeoutError`` when the sentinel cannot be reached
        or refuses us; the connection is dropped then, so no stale reply is ever read later.
        """
        async with self._lock:
            conn, self._conn = self._conn, None
            try:
                async with asyncio.timeout(within):
                    if conn is None:
                        conn = self.new_connection()
                        await conn.connect()  # type: ignore[no-untyped-call]
                    await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as exc:
                            replies.append(exc)
            except BaseException:
                if conn is not None:
                    await _drop(conn)
                raise
            self._conn = conn
            return replies

    def succeeded(self) -> None:
        """Record a good answer: the sentinel is asked again at once."""
        self._failures = 0
        self.skip_until = 0.0
        self.last_problem = None

    def failed(self, now: float) -> None:
        """Record a failure: skip this sentinel for a while so it cannot slow surveys down."""
        self._failures += 1
        low, high = _LINK_BACKOFF
        self.skip_until = now + min(high, low * 2 ** (self._failures - 1))

    async def aclose(self) -> None:
        """Drop the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await _drop(conn)


class SentinelTopology:
    """The master and replicas that the sentinels of ``high_availability`` name.

    Implements the connection manager's ``Topology``: ``writer()`` is the verified master,
    ``reader()`` picks a node for a read-only command (``route_by_latency`` /
    ``route_randomly``), and ``recover()`` waits briefly for a new master after a failure.
    """

    follows_failover = True

    def __init__(self, cfg: RedisConfig, build: Callable[[str, int], NodePool]) -> None:
        assert cfg.high_availability is not None
        self._cfg = cfg
        self._ha = cfg.high_availability
        self._name = self._ha.sentinel_name
        self._build = build
        self.routes_reads = self._ha.route_by_latency or self._ha.route_randomly
        self._master: NodePool | None = None
        self._master_addr: Address | None = None
        self._replicas: dict[Address, NodePool] = {}
        self._wanted: set[Address] = set()
        self._opening: dict[Address, asyncio.Task[None]] = {}
        self._down: set[Address] = set()
        self._latency: dict[NodePool, float] = {}
        self._links: dict[Address, _SentinelLink] = {}
        for addr in _configured_sentinels(cfg):
            self._add_link(addr)
        #: Why each recently named candidate was not accepted as master (for messages).
        self._problems: dict[Address, str] = {}
        self._hint: Address | None = None
        self._again = False
        self._first_failure: float | None = None
        self._round_task: asyncio.Task[list[_Answer]] | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        #: Set (then replaced) at each switch of master: wakes callers paused in recover().
        self._switched = asyncio.Event()
        self._closed = False

    # -- the Topology protocol -------------------------------------------------------------------

    async def start(self) -> None:
        """Find and verify the master, open its pool (and replica pools when routing reads).

        Raises :class:`StoreUnavailable` when no sentinel names a reachable master before
        ``redis.timeout``; at once when every sentinel gave a definite no (unknown master name,
        failed authentication, not a sentinel).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cfg.timeout.total_seconds()
        while True:
            answers = await self._round(min(deadline, loop.time() + _ROUND_BUDGET))
            if self._master is not None:
                break
            definite = all(a.kind in ("unknown", "auth", "error") for a in answers)
            if definite or loop.time() >= deadline:
                raise StoreUnavailable(self._explain(answers))
            await asyncio.sleep(min(_RETRY_PAUSE, max(0.0, deadline - loop.time())))
        if self._opening:
            # Routing starts with the replicas in place rather than a second later.
            await asyncio.wait(self._opening.values(), timeout=_SENTINEL_TIMEOUT)
        if self.routes_reads:
            await self._measure()
        self._monitor_task = asyncio.create_task(self._monitor(), name="redis_session sentinel")
        self._watch_task = asyncio.create_task(self._watch(), name="redis_session subscriber")

    def writer(self) -> NodePool:
        """Return the pool of the verified master."""
        if self._master is None:
            raise StoreClosed("the Sentinel topology is not started")
        return self._master

    def reader(self) -> NodePool:
        """Return a pool for a read-only command: the master unless reads are routed."""
        master = self.writer()
        if not self.routes_reads:
            return master
        nodes = [master, *(p for a, p in self._replicas.items() if a not in self._down)]
        if len(nodes) > 1 and self._ha.route_by_latency:
            measured = [(self._latency[p], p) for p in nodes if p in self._latency]
            if not measured:
                return master
            best = min(rtt for rtt, _ in measured)
            nodes = [p for rtt, p in measured if rtt - best <= _LATENCY_TIE]
        return nodes[0] if len(nodes) == 1 else random.choice(nodes)  # noqa: S311 - spreading

    def pools(self) -> list[NodePool]:
        """Return the master's pool and the replicas' pools."""
        return [p for p in (self._master, *self._replicas.values()) if p is not None]

    async def recover(self, failed: NodePool, deadline: float) -> None:
        """Before a retry: wait (bounded by ``deadline``) until the sentinels name a new master.

        A failure on a pool that is no longer the writer returns at once (the retry goes to the
        new master); a failing replica is left out of routing until it answers a PING again.
        """
        if failed is not self._master:
            for addr, pool in self._replicas.items():
                if pool is failed:
                    self._down.add(addr)
            return
        loop = asyncio.get_running_loop()
        if self._first_failure is None:
            self._first_failure = loop.time()
        switched = self._switched
        task = self._kick()
        remaining = deadline - loop.time()
        if remaining > 0:
            # asyncio.wait neither raises the task's outcome nor cancels it on timeout.
            await asyncio.wait({task}, timeout=remaining)
        if self._master is failed:
            # The sentinels have not failed over yet: pause so retries do not spin, but wake
            # the moment any survey (periodic, event-driven or another caller's) switches.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(_RETRY_PAUSE, deadline - loop.time()))):
                    await switched.wait()

    async def aclose(self) -> None:
        """Stop the background tasks and close every pool and sentinel connection (bounded)."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[Any]] = [
            t for t in (self._monitor_task, self._watch_task, self._round_task) if t is not None
        ]
        tasks += self._tasks
        for task in tasks:
            task.cancel()
        # Pools already closing are left to finish: cancelling a close half-way leaks sockets.
        tasks += self._closers
        pools = self.pools()
        links = list(self._links.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLEANUP_TIMEOUT * 2):
                await asyncio.shield(
                    asyncio.gather(
                        *tasks,
                        *(p.aclose() for p in pools),
                        *(link.aclose() for link in links),
                        return_exceptions=True,
                    )
                )

    # -- introspection ---------------------------------------------------------------------------

    def sentinels(self) -> list[str]:
        """Return the sentinels known so far, configured ones first, as ``host:port``."""
        return [link.label for link in self._links.values()]

    def __repr__(self) -> str:
        master = self._master.node if self._master is not None else "?"
        healthy = sum(1 for a in self._replicas if a not in self._down)
        return (
            f"<SentinelTopology {self._name!r} [master {master} | "
            f"replicas: {healthy} healthy of {len(self._replicas)} | "
            f"sentinels: {len(self._links)}]>"
        )

    # -- surveys ---------------------------------------------------------------------------------

    def _kick(self) -> asyncio.Task[list[_Answer]]:
        """Return the survey in flight, or start one: concurrent callers share it."""
        task = self._round_task
        if task is None or task.done():
            task = asyncio.create_task(self._rounds(), name="redis_session sentinel survey")
            self._round_task = task
        elif self._hint is not None:
            self._again = True  # an event arrived mid-round: look once more afterwards
        return task

    async def _rounds(self) -> list[_Answer]:
        answers: list[_Answer] = []
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

    async def _round(self, deadline: float) -> list[_Answer]:
        """Ask the sentinels, follow the master they name, learn sentinels and replicas."""
        now = asyncio.get_running_loop().time()
        links = [link for link in self._links.values() if link.skip_until <= now]
        links = links or list(self._links.values())
        within = max(0.01, min(_SENTINEL_TIMEOUT, deadline - now))
        answers = list(await asyncio.gather(*(self._ask(link, within) for link in links)))
        for answer in answers:
            for addr in answer.sentinels:
                if addr not in self._links:
                    self._add_link(addr)
                    logger.info("learned of sentinel %s for %r", node_label(*addr), self._name)
        await self._follow(answers, deadline)
        self._plan_replicas(answers)
        return answers

    async def _ask(self, link: _SentinelLink, within: float) -> _Answer:
        """Put the survey questions to one sentinel; never raises (but for cancellation)."""
        name = self._name
        commands = [
            ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name),
            ("SENTINEL", "MASTER", name),
            ("SENTINEL", "SENTINELS", name),
        ]
        if self.routes_reads:
            commands.append(("SENTINEL", "REPLICAS", name))
        now = asyncio.get_running_loop().time()
        try:
            replies = await link.ask(commands, within)
        except AuthenticationError as exc:
            link.failed(now)
            return self._sentinel_problem(link, "auth", _auth_problem(link, exc, self._ha))
        except (RedisError, OSError, TimeoutError) as exc:
            link.failed(now)
            return self._sentinel_problem(link, "unreachable", _reason(exc))
        link.succeeded()
        where, master, peers, *replicas = replies
        if isinstance(where, ResponseError):
            problem = f"cannot ask it for the master ({where}); is it a sentinel?"
            return self._sentinel_problem(link, "error", problem)
        if not where:
            return _Answer(link.label, "unknown", problem=f"it monitors no master named {name!r}")
        epoch = _pairs(master).get("config-epoch", "-1") if isinstance(master, list) else "-1"
        return _Answer(
            link.label,
            master=(where[0], int(where[1])),
            epoch=int(epoch),
            replicas=_healthy_replicas(replicas[0]) if replicas else (),
            sentinels=_addresses(peers),
        )

    def _sentinel_problem(self, link: _SentinelLink, kind: str, problem: str) -> _Answer:
        if problem != link.last_problem:  # once per change, not once per survey
            logger.warning("Sentinel %s: %s", link.label, problem)
        link.last_problem = problem
        return _Answer(link.label, kind, problem=problem)

    def _rank(self, answers: Iterable[_Answer]) -> list[Address]:
        """Candidate masters, the newest config epoch first, then the most sentinels naming it."""
        scores: dict[Address, tuple[int, int]] = {}
        for a in answers:
            if a.master is not None:
                epoch, votes = scores.get(a.master, (-1, 0))
                scores[a.master] = (max(epoch, a.epoch), votes + 1)
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)
        hint, self._hint = self._hint, None
        if hint is not None:
            # A failover event is newer than any answer; ROLE still has the last word.
            ranked = [hint, *(a for a in ranked if a != hint)]
        return ranked

    async def _follow(self, answers: list[_Answer], deadline: float) -> None:
        """Make the best verified candidate the writer, unless it already is."""
        for addr in self._rank(answers):
            if addr == self._master_addr:
                return  # the sentinels still name the master in use
            pool = await self._verified_master(addr, deadline)
            if pool is not None:
                self._install(addr, pool)
                return

    async def _verified_master(self, addr: Address, deadline: float) -> NodePool | None:
        """Open (or take over the replica) pool for ``addr``; return it if ROLE says master."""
        loop = asyncio.get_running_loop()
        reused = self._replicas.pop(addr, None)
        pool = reused if reused is not None else self._build(*addr)
        role: Any = None
        try:
            async with asyncio.timeout(max(0.01, deadline - loop.time())):
                if reused is None:
                    await pool.start(connect=1)
                role = await pool.execute(pack("ROLE"), deadline)
        except (RedisSessionError, TimeoutError) as exc:
            problem = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        except BaseException:
            await _close_pool(pool)
            raise
        else:
            if role and role[0] == b"master":
                self._problems.pop(addr, None)
                return pool
            problem = f"ROLE says {role[0].decode() if role else 'nothing'}, not master"
        if self._problems.get(addr) != problem:
            logger.warning(
                "Sentinel names %s as master of %r but %s", node_label(*addr), self._name, problem
            )
        self._problems[addr] = problem
        if reused is not None and role is not None:
            self._replicas[addr] = reused  # a healthy replica that is not promoted yet
        else:
            self._retire(pool)
        return None

    def _install(self, addr: Address, pool: NodePool) -> None:
        """Swap in a verified master; the old pool closes in the background.

        Closing fails the commands still queued on the old pool with ``ConnectionLost``
        (``sent=False``), which the manager retries on the new master.
        """
        old = self._master
        self._master, self._master_addr = pool, addr
        self._down.discard(addr)
        if old is None:
            logger.info("master for %r is %s", self._name, pool.node)
        else:
            if self._first_failure is None:
                since = "no failure was seen by this client"
            else:
                elapsed = asyncio.get_running_loop().time() - self._first_failure
                since = f"{elapsed:.2f}s after the first failure was seen"
            logger.warning("failover of %r: %s -> %s, %s", self._name, old.node, pool.node, since)
            self._latency.pop(old, None)
            self._retire(old)
        self._first_failure = None
        self._switched.set()
        self._switched = asyncio.Event()
        self._wake.set()  # refresh replicas soon: the old master may come back as one

    # -- replicas and latency --------------------------------------------------------------------

    def _plan_replicas(self, answers: list[_Answer]) -> None:
        """Decide which replica pools should exist; opening them happens in the background."""
        if not self.routes_reads or self._closed:
            return
        naming = [a for a in answers if a.master == self._master_addr]
        if not naming:
            return  # no fresh word about our master's replicas: keep what we have
        source = max(naming, key=lambda a: a.epoch)
        self._wanted = {r for r in source.replicas if r != self._master_addr}
        for addr in [a for a in self._replicas if a not in self._wanted]:
            self._latency.pop(self._replicas[addr], None)
            self._retire(self._replicas.pop(addr))
            self._down.discard(addr)
        for addr in self._wanted - self._replicas.keys() - self._opening.keys():
            task = self._spawn(self._open_replica(addr), f"redis_session replica {addr}")
            self._opening[addr] = task

    async def _open_replica(self, addr: Address) -> None:
        pool = self._build(*addr)
        try:
            async with asyncio.timeout(self._cfg.timeout.total_seconds()):
                await pool.start(connect=1)
        except (RedisSessionError, TimeoutError):
            self._opening.pop(addr, None)
            await _close_pool(pool)  # the pool logged why; the next survey tries again
            return
        except BaseException:
            self._opening.pop(addr, None)
            await _close_pool(pool)
            raise
        self._opening.pop(addr, None)
        if self._closed or addr not in self._wanted or addr == self._master_addr:
            self._retire(pool)
        else:
            logger.info("routing read-only commands to replica %s too", pool.node)
            self._replicas[addr] = pool

    async def _measure(self) -> None:
        """PING every node through its pool: latency for routing, health for replicas."""
        nodes = [(a, p) for a, p in ((self._master_addr, self._master), *self._replicas.items())]
        rtts = await asyncio.gather(*(_ping(p) for _, p in nodes if p is not None))
        for (addr, pool), rtt in zip([n for n in nodes if n[1] is not None], rtts, strict=True):
            assert pool is not None
            if rtt is None:
                self._latency.pop(pool, None)
                if addr is not None and addr != self._master_addr:
                    self._down.add(addr)
                continue
            if addr is not None:
                self._down.discard(addr)
            prev = self._latency.get(pool)
            self._latency[pool] = rtt if prev is None else prev + _LATENCY_ALPHA * (rtt - prev)

    # -- background ------------------------------------------------------------------------------

    async def _monitor(self) -> None:
        """Every second (sooner after a failover): survey, then PING the nodes when routing."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CHECK_INTERVAL):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await asyncio.wait({self._kick()})
                if self.routes_reads:
                    await self._measure()
            except Exception:  # the monitor must outlive any one bad round
                logger.warning("Sentinel monitor round failed", exc_info=True)

    async def _watch(self) -> None:
        """Follow failover events on one sentinel at a time; on failure try the next one."""
        loop = asyncio.get_running_loop()
        pause = _WATCH_BACKOFF[0]
        index = 0
        while True:
            links = list(self._links.values())
            link = links[index % len(links)]
            began = loop.time()
            try:
                await self._listen(link)
            except (RedisError, OSError, TimeoutError) as exc:
                problem = _reason(exc)
                if isinstance(exc, AuthenticationError):
                    problem = _auth_problem(link, exc, self._ha)
                logger.warning(
                    "Sentinel %s: subscription lost (%s); trying the next sentinel",
                    link.label,
                    problem,
                )
            if loop.time() - began > _WATCH_HEALTHY:
                pause = _WATCH_BACKOFF[0]
            index += 1
            await asyncio.sleep(pause)
            pause = min(_WATCH_BACKOFF[1], pause * 2)

    async def _listen(self, link: _SentinelLink) -> None:
        """Subscribe on ``link``'s sentinel and handle events until the connection fails."""
        loop = asyncio.get_running_loop()
        conn = link.new_connection()
        try:
            async with asyncio.timeout(_SENTINEL_TIMEOUT):
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("SUBSCRIBE", *_WATCH_CHANNELS, check_health=False)
                for _ in _WATCH_CHANNELS:
                    await conn.read_response()
            logger.debug("subscribed to failover events on sentinel %s", link.label)
            heard = loop.time()
            pinged = False
            while True:
                # A read with an explicit timeout returns None and keeps the parser intact.
                message = await conn.read_response(timeout=_SENTINEL_TIMEOUT / 2)
                quiet = loop.time() - heard
                if message is not None:
                    heard, pinged = loop.time(), False
                    self._on_event(link, message)
                elif pinged and quiet > _WATCH_IDLE + _SENTINEL_TIMEOUT:
                    raise TimeoutError("no answer to PING")
                elif not pinged and quiet > _WATCH_IDLE:
                    await conn.send_command("PING", check_health=False)
                    pinged = True
        finally:
            await _drop(conn)

    def _on_event(self, link: _SentinelLink, message: Any) -> None:
        """Turn an event about our master into a hinted survey."""
        if not isinstance(message, list) or len(message) != 3 or message[0] != "message":
            return
        _, channel, data = message
        parts = str(data).split()
        new: Address | None = None
        # "+switch-master <name> <old ip> <old port> <new ip> <new port>"
        if channel == "+switch-master" and len(parts) == 5 and parts[0] == self._name:
            new = (parts[3], int(parts[4]))
        # "+promoted-slave slave <ip:port> <ip> <port> @ <name> <master ip> <master port>"
        elif channel == "+promoted-slave" and len(parts) == 8 and parts[5] == self._name:
            new = (parts[2], int(parts[3]))
        if new is None or new == self._master_addr:
            return
        logger.info(
            "sentinel %s reports %s for %r: new master %s",
            link.label,
            channel,
            self._name,
            node_label(*new),
        )
        self._hint = new
        self._kick()

    # -- helpers ---------------------------------------------------------------------------------

    def _add_link(self, addr: Address) -> None:
        self._links[addr] = _SentinelLink(addr, _sentinel_factory(self._cfg, addr))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _retire(self, pool: NodePool) -> None:
        """Close ``pool`` in the background, without blocking the caller."""
        task = asyncio.create_task(_close_pool(pool), name=f"redis_session close {pool.node}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _explain(self, answers: list[_Answer]) -> str:
        """Why ``start()`` found no master, naming every sentinel asked and no secret."""
        name = self._name
        asked = ", ".join(a.sentinel for a in answers)
        details = "; ".join(f"{a.sentinel}: {a.problem}" for a in answers if a.problem)
        if self._problems:
            addr, problem = next(iter(self._problems.items()))
            others = f" (sentinel problems: {details})" if details else ""
            where = node_label(*addr)
            return f"the sentinels name {where} as master of {name!r}, but {problem}{others}"
        auth = [a.problem for a in answers if a.kind == "auth" and a.problem]
        if auth:
            return auth[0]
        if all(a.kind == "unknown" for a in answers):
            return (
                f"no sentinel knows a master named {name!r} (check {_OPTION}.sentinel_name); "
                f"asked {asked}"
            )
        if all(a.kind == "unreachable" for a in answers):
            return f"no sentinel reachable to find master {name!r}: {details}"
        return f"cannot find the master {name!r} through Sentinel: {details}"


# -- module helpers -------------------------------------------------------------------------------


def _configured_sentinels(cfg: RedisConfig) -> list[Address]:
    """``redis.host`` first (at ``redis.port``, and 26379 if that is the data default 6379)."""
    assert cfg.high_availability is not None
    found: list[Address] = []
    if cfg.host:
        found.append((cfg.host, cfg.port))
        if cfg.port == _DATA_DEFAULT_PORT and not cfg.host.startswith("/"):
            found.append((cfg.host, _SENTINEL_PORT))
    found += [(node.host, node.port) for node in cfg.high_availability.nodes]
    return list(dict.fromkeys(found))


def _sentinel_factory(cfg: RedisConfig, addr: Address) -> Callable[[], AbstractConnection]:
    """Return a connection factory for one sentinel: its password, RESP2, TLS like the data."""
    ha = cfg.high_availability
    assert ha is not None
    host, port = addr
    bare = host[1:-1] if host.startswith("[") else host
    common: dict[str, Any] = {
        "password": ha.sentinel_password.get_secret_value() if ha.sentinel_password else None,
        "socket_timeout": _SENTINEL_TIMEOUT,
        "socket_connect_timeout": _SENTINEL_TIMEOUT,
        "protocol": 2,  # RESP3 misreports idle connections closed by the server (#4252)
        "decode_responses": True,
        "client_name": CLIENT_NAME,
        "driver_info": None,
    }
    if bare.startswith("/"):
        return lambda: UnixDomainSocketConnection(path=bare, **common)
    if cfg.tls is not None:
        from ._tls import TLSConnection, tls_connection_kwargs  # noqa: PLC0415 - TLS only

        # Built once per sentinel: loading the trust store is too slow for every reconnect.
        tls = tls_connection_kwargs(cfg.tls, bare)
        tls.pop("connection_class", None)
        return lambda: TLSConnection(host=bare, port=port, **tls, **common)
    return lambda: Connection(host=bare, port=port, **common)


def _auth_problem(link: _SentinelLink, exc: BaseException, ha: HighAvailabilityConfig) -> str:
    hint = "check" if ha.sentinel_password is not None else "it needs a password; set"
    option = f"{_OPTION}.sentinel_password"
    return f"authentication to sentinel {link.label} failed ({exc}): {hint} {option}"


def _pairs(flat: Any) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _addresses(entries: Any) -> tuple[Address, ...]:
    found = []
    for entry in entries if isinstance(entries, list) else ():
        fields = _pairs(entry)
        with contextlib.suppress(KeyError, ValueError):
            found.append((fields["ip"], int(fields["port"])))
    return tuple(found)


def _healthy_replicas(entries: Any) -> tuple[Address, ...]:
    """Replicas not flagged down or disconnected, whose link to the master is up."""
    found = []
    for entry in entries if isinstance(entries, list) else ():
        fields = _pairs(entry)
        flags = set(str(fields.get("flags", "")).split(","))
        if flags & _BAD_REPLICA_FLAGS or fields.get("master-link-status") != "ok":
            continue
        with contextlib.suppress(KeyError, ValueError):
            found.append((fields["ip"], int(fields["port"])))
    return tuple(found)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


async def _ping(pool: NodePool) -> float | None:
    """Round trip of one PING through ``pool``, or None when it failed."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await pool.execute(pack("PING"), began + _SENTINEL_TIMEOUT)
    except RedisSessionError:
        return None
    return loop.time() - began


async def _close_pool(pool: NodePool) -> None:
    try:
        await asyncio.shield(pool.aclose())
    except Exception:  # a failure while closing is logged, not raised
        logger.warning("closing the pool for %s failed", pool.node, exc_info=True)


async def _drop(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CLEANUP_TIMEOUT):
            await asyncio.shield(conn.disconnect(nowait=True))
