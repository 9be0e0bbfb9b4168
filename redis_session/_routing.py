"""Read routing under Sentinel: replica pools, their health, and the node for a read.

go-redis semantics, which Authelia accepts but ignores: with ``route_by_latency`` a read-only
command goes to the lowest-latency node among the master and the healthy replicas (latency is
an average of PINGs sent through each node's pool every second); with ``route_randomly`` to a
random one of them. Writes never come here. The replica set is whatever the sentinels report as
healthy (not down, not disconnected, link to the master up), minus the nodes our own PINGs or
commands found failing.

The state is ``replicas`` (open pools by address), ``_wanted`` (what the sentinels reported),
``_opening`` (pools being opened in the background, as tasks of the topology's supervisor),
``_down``, ``_latency`` and ``_problems`` (why a replica's pool could not be built, logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable

import anyio

from ._errors import ConfigError, RedisSessionError
from ._pool import NodePool
from ._tasks import Supervisor, gather_all
from ._wire import node_label, pack

__all__ = ["ReadRouter"]

logger = logging.getLogger("redis_session")

Address = tuple[str, int]

#: Bound on a latency PING; a node slower than this counts as failing.
_PING_TIMEOUT = 1.0
#: Weight of the newest PING in the latency average.
_LATENCY_ALPHA = 0.3
#: Nodes this close to the fastest are equally near: reads are spread among them. (go-redis uses
#: the same 1 ms threshold but then keeps the first node, which starves loopback replicas.)
_LATENCY_TIE = 0.001
#: Bound on closing a pool whose opening was cancelled.
_CLOSE_TIMEOUT = 4.0


class ReadRouter:
    """The replica pools of one master, and the choice of pool for each read-only command."""

    def __init__(
        self,
        build: Callable[[str, int], NodePool],
        *,
        by_latency: bool,
        open_timeout: float,
        tasks: Supervisor,
        retire: Callable[[NodePool], None],
    ) -> None:
        self._build = build
        self._by_latency = by_latency
        self._open_timeout = open_timeout
        #: Runs the openings; its owner (the topology) cancels and waits for them on close.
        self._tasks = tasks
        #: Closes a pool in the background (the topology owns those tasks).
        self._retire = retire
        self.replicas: dict[Address, NodePool] = {}
        self._wanted: set[Address] = set()
        self._opening: dict[Address, asyncio.Task[None]] = {}
        self._down: set[Address] = set()
        self._latency: dict[NodePool, float] = {}
        self._problems: dict[Address, str] = {}
        self._closed = False

    def pick(self, master: NodePool) -> NodePool:
        """Return the pool for one read-only command."""
        nodes = [master, *(p for a, p in self.replicas.items() if a not in self._down)]
        if len(nodes) > 1 and self._by_latency:
            measured = [(self._latency[p], p) for p in nodes if p in self._latency]
            if not measured:
                return master
            best = min(rtt for rtt, _ in measured)
            nodes = [p for rtt, p in measured if rtt - best <= _LATENCY_TIE]
        return nodes[0] if len(nodes) == 1 else random.choice(nodes)  # noqa: S311 - spreading

    def healthy(self) -> int:
        """Return how many replica pools take reads now."""
        return sum(1 for a in self.replicas if a not in self._down)

    def plan(self, reported: Iterable[Address], master: Address | None) -> None:
        """Match the replica pools to what the sentinels report (opening runs in the background)."""
        if self._closed:
            return
        self._wanted = {r for r in reported if r != master}
        for addr in [a for a in self.replicas if a not in self._wanted]:
            self._drop(addr)
        for addr in self._wanted - self.replicas.keys() - self._opening.keys():
            name = f"redis_session replica {addr}"
            self._opening[addr] = self._tasks.spawn(self._open(addr), name=name, on_close="once")

    async def settle(self, within: float) -> None:
        """Wait (bounded) until the replica pools being opened are open or have failed."""
        if self._opening:
            await asyncio.wait(self._opening.values(), timeout=within)

    def take(self, addr: Address) -> NodePool | None:
        """Hand over the pool of ``addr`` (a replica about to be promoted), if there is one."""
        self._down.discard(addr)
        return self.replicas.pop(addr, None)

    def give_back(self, addr: Address, pool: NodePool) -> None:
        """Take back a pool from :meth:`take` whose node turned out not to be promoted."""
        if self._closed:
            self._retire(pool)
        else:
            self.replicas[addr] = pool

    def failed(self, pool: NodePool) -> None:
        """Record a failed command on ``pool``: no reads go there until a PING succeeds again."""
        for addr, replica in self.replicas.items():
            if replica is pool:
                self._down.add(addr)

    def forget(self, pool: NodePool) -> None:
        """Drop what is known about a pool that is no longer used (a former master)."""
        self._latency.pop(pool, None)

    async def measure(self, master: NodePool) -> None:
        """PING every node through its pool: latency for routing, health for replicas."""
        nodes: list[tuple[Address | None, NodePool]] = [(None, master), *self.replicas.items()]
        rtts = await gather_all([_ping(p) for _, p in nodes])
        for (addr, pool), rtt in zip(nodes, rtts, strict=True):
            if rtt is None:
                self._latency.pop(pool, None)
                if addr is not None:
                    self._down.add(addr)
                continue
            if addr is not None:
                self._down.discard(addr)
            prev = self._latency.get(pool)
            self._latency[pool] = rtt if prev is None else prev + _LATENCY_ALPHA * (rtt - prev)

    def close(self) -> None:
        """Stop opening pools; the owner's supervisor cancels the openings under way."""
        self._closed = True

    def abandon(self) -> None:
        """Forget the openings of an event loop that has closed (its tasks can never run)."""
        self._opening.clear()

    def _drop(self, addr: Address) -> None:
        pool = self.replicas.pop(addr)
        self._latency.pop(pool, None)
        self._down.discard(addr)
        self._retire(pool)

    async def _open(self, addr: Address) -> None:
        try:
            pool = self._build(*addr)
        except ConfigError as exc:
            # A pool that cannot be built (the spec is resolved at open, so this is a bug or a
            # build function of a test) is this replica's problem only. The next survey tries
            # again; the log says it once.
            self._opening.pop(addr, None)
            problem = str(exc)
            if self._problems.get(addr) != problem:
                logger.warning("cannot open replica %s: %s", node_label(*addr), problem)
            self._problems[addr] = problem
            return
        try:
            async with asyncio.timeout(self._open_timeout):
                await pool.start(connect=1)
        except (RedisSessionError, TimeoutError):
            self._retire(pool)  # the pool logged why; the next survey tries again
            return
        except BaseException:
            # Cancelled (the topology is closing): close it here, since nobody awaits a
            # background close started this late.
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True), contextlib.suppress(Exception):
                await pool.aclose()
            raise
        finally:
            self._opening.pop(addr, None)
        if self._closed or addr not in self._wanted:
            self._retire(pool)
        else:
            logger.info("routing read-only commands to replica %s too", pool.node)
            self._problems.pop(addr, None)
            self.replicas[addr] = pool


async def _ping(pool: NodePool) -> float | None:
    """Round trip of one PING through ``pool``, or None when it failed."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await pool.execute(pack("PING"), began + _PING_TIMEOUT)
    except RedisSessionError:
        return None
    return loop.time() - began
