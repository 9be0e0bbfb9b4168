"""One Redis node's connections: a capped pool that pipelines concurrent commands.

Callers never hold a connection. A command is packed in the caller's task and queued; each open
connection is driven by one worker task that takes everything queued (up to a batch limit),
writes it with one ``writelines``, and reads the replies in order, handing each to the future of
the caller that queued it. Concurrent commands from many tasks therefore share a few sockets
(auto-pipelining, as ioredis and StackExchange.Redis do), and a caller cancelled at any await
cannot leave an unread reply on a connection: the worker reads every reply it asked for, and
drops the ones nobody waits for.

The pool's whole mutable state is ``_queue`` (pending commands, oldest first), ``_conns`` (open
or opening connections) and ``_idle`` (workers parked waiting for work). Deciding is split from
doing: ``_dispatch()`` only looks at that state, wakes a parked worker or starts a connection,
and never awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from ._errors import CommandError, PoolTimeout, StoreClosed, StoreUnavailable

__all__ = ["ConnectionLost", "NodePool", "NodeStatistics", "pack"]

logger = logging.getLogger("redis_session")

#: Most commands written to one connection in one batch. Large enough to amortise the
#: per-batch cost, small enough that one slow batch does not delay everyone else.
_MAX_BATCH = 128
#: How often the maintenance task runs: it fails commands past their deadline (callers wait
#: on a bare future, with no timer of their own, which is most of the per-command cost of
#: asyncio timeouts), wakes parked connections that are due a health check, are dead or idle
#: too long, and refills the floor. It bounds how late a deadline can fire.
_MAINTENANCE_INTERVAL = 0.05
#: An idle connection is PINGed after this long without traffic (default; see ``NodePool``).
_HEALTH_CHECK_INTERVAL = 2.0
#: Bound on every cleanup await (closing sockets, stopping tasks).
_CLEANUP_TIMEOUT = 2.0
#: After a failed connect, more connections wait this long (doubling up to the maximum) while
#: others still serve the queue, so a server that refuses new clients (``maxclients``) is not
#: hammered with hundreds of connects a second.
_CONNECT_BACKOFF_MIN = 0.05
_CONNECT_BACKOFF_MAX = 1.0

_QUEUED, _SENT = 0, 1

#: What a broken or confused connection raises: redis-py's errors, socket errors, our batch
#: timer, and hiredis's own protocol errors (not RedisErrors) on a garbled stream.
_CONNECTION_FAILURES = (RedisError, OSError, TimeoutError, hiredis.HiredisError)


def pack(*args: bytes | str | int | float) -> bytes:
    """Encode one command in RESP, in the caller's task (hiredis does it in C)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # stub types one-tuples
    return packed


class ConnectionLost(StoreUnavailable):
    """A command failed because its connection broke, or never opened.

    ``sent`` tells whether the command may have reached the server. The connection manager
    retries both kinds within the deadline, so a command that was sent may run twice: every
    write the store sends is written to be safe to repeat (see ``_redis_provider``).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@attrs.frozen
class NodeStatistics:
    """A snapshot of one node's pool."""

    #: ``host:port`` or the unix socket path.
    node: str
    max_connections: int
    #: Connections open or being opened.
    open: int
    #: Connections with a batch in flight.
    in_use: int
    #: Open connections waiting for work.
    idle: int
    #: Commands queued, not yet written to any connection.
    waiting: int


class _Pending:
    """One queued command and the future its caller awaits."""

    __slots__ = ("deadline", "future", "packed", "state")

    def __init__(self, packed: bytes, future: asyncio.Future[Any], deadline: float) -> None:
        self.packed = packed
        self.future = future
        #: Loop time at which the caller gives up (PoolTimeout while queued).
        self.deadline = deadline
        self.state = _QUEUED


class _Conn:
    """A connection and the bookkeeping of the worker that drives it."""

    __slots__ = (
        "batch",
        "busy",
        "checked_at",
        "conn",
        "connected",
        "task",
        "used_at",
        "waiter",
    )

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.connected = False
        self.busy = False
        #: The commands in flight on this connection, for the deadline sweep.
        self.batch: list[_Pending] = []
        #: Set while parked; its result says whether it was woken for work.
        self.waiter: asyncio.Future[bool] | None = None
        now = time.monotonic()
        #: Last batch of callers' commands: what ``max_idle_time`` counts from.
        self.used_at = now
        #: Last traffic of any kind, health checks included: what the next PING counts from.
        self.checked_at = now
        self.task: asyncio.Task[None] | None = None

    def dead(self) -> bool:
        """Whether the server or the network closed the socket while we were not reading."""
        reader = self.conn._reader  # redis-py has no public liveness check
        return reader is None or reader.at_eof()


class NodePool:
    """The connections to one Redis node, never more than ``max_connections``.

    ``execute()`` queues a packed command and waits, up to ``deadline``, for its reply.
    """

    def __init__(
        self,
        node: str,
        connection_factory: Callable[[], AbstractConnection],
        *,
        max_connections: int,
        min_idle: int,
        timeout: float,
        max_idle_time: float,
        health_check_interval: float = _HEALTH_CHECK_INTERVAL,
        describe_error: Callable[[BaseException], str | None] | None = None,
    ) -> None:
        self.node = node
        #: Explains a failure in one sentence, or returns ``None`` to fall back to its text;
        #: TLS connections pass the TLS describer (only they may blame a handshake).
        self._describe_error = describe_error
        self._factory = connection_factory
        self._max = max_connections
        self._min_idle = min_idle
        self._timeout = timeout
        self._max_idle_time = max_idle_time
        self._health_check_interval = health_check_interval
        self._queue: deque[_Pending] = deque()
        self._conns: set[_Conn] = set()
        self._idle: deque[_Conn] = deque()
        #: Parked workers woken for work that have not run yet.
        self._waking = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._closed = False
        self._last_error: str | None = None
        self._connect_backoff = 0.0
        #: ``time.monotonic()`` before which no extra connection is opened (see backoff above).
        self._next_connect = 0.0

    # -- public ------------------------------------------------------------------------------

    async def start(self, *, connect: int) -> None:
        """Open ``max(connect, min_idle)`` connections now, then start the maintenance task.

        Raises :class:`StoreUnavailable` naming the node when a connection fails, so a wrong
        address or password surfaces when the store opens, not at the first request.
        """
        wanted = min(max(connect, self._min_idle), self._max)
        fresh = [_Conn(self._factory()) for _ in range(wanted)]
        self._conns.update(fresh)
        try:
            reasons = await asyncio.gather(*(self._connect(c) for c in fresh))
        except BaseException:
            for c in fresh:
                self._forget(c)
                await _disconnect(c.conn)
            raise
        failed = [r for r in reasons if r is not None]
        if failed:
            for c in fresh:
                self._forget(c)
                await _disconnect(c.conn)
            msg = f"cannot connect to {self.node}: {failed[0]}"
            raise ConnectionLost(msg, sent=False)
        for c in fresh:
            self._start_worker(c)
        # Let the new workers park (their first step does not await), so the first command
        # wakes one of them instead of opening a connection beyond the floor.
        await asyncio.sleep(0)
        self._ensure_maintenance()

    async def execute(self, packed: bytes, deadline: float) -> Any:
        """Send one packed command and return its reply; ``deadline`` is in loop time.

        Raises :class:`PoolTimeout` when no connection took the command before ``deadline``,
        :class:`ConnectionLost` when its connection broke, :class:`CommandError` for an error
        reply, :class:`StoreClosed` after :meth:`aclose`.
        """
        if self._closed:
            msg = f"the connection pool for {self.node} is closed"
            raise StoreClosed(msg)
        if self._maintenance is None or self._maintenance.done():
            # Deadlines are enforced by the maintenance task: never wait without it, even on a
            # pool used before start() or after the task died.
            self._ensure_maintenance()
        pending = _Pending(packed, asyncio.get_running_loop().create_future(), deadline)
        self._queue.append(pending)
        self._dispatch()
        try:
            # No timer here: the maintenance task fails the future at its deadline.
            return await pending.future
        except BaseException:
            # Usually the future is cancelled with us; a worker skips a queued command whose
            # future is done, and reads (then drops) the reply of one already sent. If an error
            # reached the future just before the cancellation did, mark it seen: nobody else
            # will, and asyncio would log it as never retrieved.
            future = pending.future
            if future.done() and not future.cancelled():
                future.exception()
            raise

    def statistics(self) -> NodeStatistics:
        """Return a snapshot of this pool."""
        in_use = sum(1 for c in self._conns if c.busy)
        return NodeStatistics(
            node=self.node,
            max_connections=self._max,
            open=len(self._conns),
            in_use=in_use,
            idle=len(self._idle),
            waiting=self._waiting(),
        )

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<NodePool {s.node} [Connections: {s.open}/{s.max_connections} open, "
            f"{s.in_use} in use, {s.idle} idle | Commands: {s.waiting} waiting]>"
        )

    async def aclose(self) -> None:
        """Close every connection and stop the workers; queued commands fail.

        Commands still queued fail with :class:`ConnectionLost` (``sent=False``) so a caller
        that can go elsewhere (a new master after a failover) retries them safely.
        """
        if self._closed:
            return
        self._closed = True
        closed = f"the connection pool for {self.node} closed"
        self._fail_queue(lambda: ConnectionLost(closed, sent=False))
        tasks = [*self._tasks]
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLEANUP_TIMEOUT):
                    await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        for c in [*self._conns]:
            await _disconnect(c.conn)
        self._conns.clear()
        self._idle.clear()

    # -- deciding (no awaits) ------------------------------------------------------------------

    def _waiting(self) -> int:
        return sum(1 for p in self._queue if not p.future.done())

    def _dispatch(self) -> None:
        """Wake a parked worker for the queued work, or open a connection if none is parked."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()  # abandoned by a cancelled or timed-out caller
        if not self._queue or self._closed:
            return
        # A worker already woken for work takes up to a batch of what is queued when it runs;
        # waking another for the same commands would only park it again.
        if len(self._queue) > _MAX_BATCH * self._waking:
            while self._idle:
                c = self._idle.popleft()
                if c.waiter is not None and not c.waiter.done():
                    c.waiter.set_result(True)
                    self._waking += 1
                    return
        if not self._idle and len(self._conns) < self._max and self._may_connect():
            self._spawn()

    def _ensure_maintenance(self) -> None:
        task = self._maintenance
        if task is not None and task.done() and not self._closed:
            died = None if task.cancelled() else task.exception()
            logger.error(
                "connection pool maintenance for %s had stopped (%r); restarted", self.node, died
            )
            task = None
        if task is None:
            self._maintenance = asyncio.create_task(
                self._maintain(), name=f"redis_session maintenance {self.node}"
            )

    def _may_connect(self) -> bool:
        # With no connection at all, try at once: the caller fails fast if that fails too.
        return not self._conns or time.monotonic() >= self._next_connect

    def _spawn(self) -> None:
        c = _Conn(self._factory())
        self._conns.add(c)
        self._start_worker(c)

    def _start_worker(self, c: _Conn) -> None:
        task = asyncio.create_task(self._run(c), name=f"redis_session connection {self.node}")
        c.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        queue = self._queue
        while queue and len(batch) < _MAX_BATCH:
            p = queue.popleft()
            if not p.future.done():
                p.state = _SENT
                batch.append(p)
        return batch

    def _fail_queue(self, error: Callable[[], BaseException]) -> None:
        # One exception object per caller: a shared one would share its traceback and
        # context between unrelated requests.
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(error())

    def _forget(self, c: _Conn) -> None:
        self._conns.discard(c)
        with contextlib.suppress(ValueError):
            self._idle.remove(c)

    # -- doing ---------------------------------------------------------------------------------

    async def _run(self, c: _Conn) -> None:
        """Drive one connection: connect, then run batches until it breaks, idles out or closes."""
        try:
            if not c.connected and await self._connect(c) is not None:
                return
            while not self._closed:
                batch = self._take_batch()
                if batch:
                    if c.dead():
                        # Closed under us while idle; nothing was sent, so requeue in order.
                        self._requeue(batch)
                        return
                    await self._run_batch(c, batch)
                    continue
                if not await self._park(c):
                    return
        except _WorkerDone:
            return
        finally:
            self._forget(c)
            # Also when never marked connected: a connect cancelled half-way (the pool
            # closing) may have a socket open already, which would otherwise leak.
            await _disconnect(c.conn)
            # Work may be left for a connection that no longer exists; open another.
            if not self._closed:
                self._dispatch()

    async def _connect(self, c: _Conn) -> str | None:
        """Connect ``c``; return None on success, else the reason (already logged)."""
        try:
            async with asyncio.timeout(self._timeout):
                await c.conn.connect()  # type: ignore[no-untyped-call]
        except _CONNECTION_FAILURES as exc:
            reason = self._describe(exc)
            if reason != self._last_error:
                logger.warning("cannot connect to %s: %s", self.node, reason)
            self._last_error = reason
            self._connect_backoff = min(
                max(2 * self._connect_backoff, _CONNECT_BACKOFF_MIN), _CONNECT_BACKOFF_MAX
            )
            self._next_connect = time.monotonic() + self._connect_backoff
            await _disconnect(c.conn)
            self._forget(c)
            if not any(other.connected for other in self._conns):
                # Nobody else can serve the queue: fail fast rather than at the deadline.
                msg = f"cannot connect to {self.node}: {reason}"
                self._fail_queue(lambda: ConnectionLost(msg, sent=False))
            return reason
        c.connected = True
        c.used_at = c.checked_at = time.monotonic()
        if self._last_error is not None:
            logger.info("connected to %s again", self.node)
        else:
            logger.debug("connected to %s", self.node)
        self._last_error = None
        self._connect_backoff = 0.0
        self._next_connect = 0.0
        return None

    async def _park(self, c: _Conn) -> bool:
        """Wait idle for work; health-check or retire on the way. False means stop this worker."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        c.waiter = waiter
        self._idle.append(c)
        try:
            # No timer: work, or the maintenance task when a check is due, wakes us.
            await waiter
        finally:
            c.waiter = None
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._waking -= 1
            with contextlib.suppress(ValueError):
                self._idle.remove(c)
        if c.dead():
            logger.info("connection to %s was closed by the server or network", self.node)
            return False
        if self._queue:
            return True
        now = time.monotonic()
        # Idle time counts from the last command of a caller: health-check PINGs are not use,
        # or a connection above the floor would never reach max_idle_time.
        idle_for = now - c.used_at
        if idle_for >= self._max_idle_time and len(self._conns) > self._min_idle:
            logger.debug("closing a connection to %s idle for %.1fs", self.node, idle_for)
            return False
        if now - c.checked_at >= self._health_check_interval:
            return await self._ping(c)
        return True

    async def _ping(self, c: _Conn) -> bool:
        loop = asyncio.get_running_loop()
        probe = _Pending(pack("PING"), loop.create_future(), loop.time() + self._timeout)
        probe.state = _SENT
        # A broken connection ends _run_batch with _WorkerDone; catch it so the failure is
        # logged here (the worker then stops because we return False).
        with contextlib.suppress(_WorkerDone):
            await self._run_batch(c, [probe], idle_probe=True)
        error = probe.future.exception() if probe.future.done() else None
        if probe.future.done() and error is None:
            return True
        logger.warning("health check of an idle connection to %s failed: %s", self.node, error)
        return False

    async def _run_batch(  # noqa: PLR0912 - one try covering write, read and delivery
        self, c: _Conn, batch: list[_Pending], *, idle_probe: bool = False
    ) -> None:
        """Write a batch and deliver each reply to its caller; on failure, fail the rest."""
        conn = c.conn
        c.busy = True
        c.batch = batch
        delivered = 0
        try:
            # One timer for the whole batch: a server that cannot answer it within the timeout
            # is hung, and the connection is dropped. Callers' own deadlines are enforced by
            # the maintenance sweep, so this is not on the per-command path.
            async with asyncio.timeout(self._timeout):
                writer = conn._writer  # redis-py's own send adds a task per write (wait_for)
                parser: Any = conn._parser  # the connection's hiredis reply parser
                if writer is None:
                    raise ConnectionError("not connected")  # noqa: TRY301 - same handling
                writer.writelines([p.packed for p in batch])
                await writer.drain()
                for p in batch:
                    reply = await parser.read_response()
                    future = p.future
                    if not future.done():
                        if isinstance(reply, ResponseError):
                            future.set_exception(CommandError(str(reply)))
                        else:
                            future.set_result(reply)
                    delivered += 1
        except _CONNECTION_FAILURES as exc:
            reason = self._describe(exc)
            if not idle_probe:
                logger.warning("connection to %s failed mid-batch: %s", self.node, reason)
            msg = f"connection to {self.node} failed: {reason}"
            for p in batch[delivered:]:
                if not p.future.done():
                    p.future.set_exception(ConnectionLost(msg, sent=True))
            c.connected = False
            await _disconnect(conn)
            raise _WorkerDone from None
        except BaseException:
            # Cancelled (the pool is closing): nobody will read the rest of these replies.
            # They may have run; ConnectionLost lets the manager retry them elsewhere (a new
            # master after a failover), and a store that is closing refuses the retry itself.
            msg = f"the connection pool for {self.node} closed with this command in flight"
            for p in batch[delivered:]:
                if not p.future.done():
                    p.future.set_exception(ConnectionLost(msg, sent=True))
            raise
        finally:
            c.busy = False
            c.batch = []
            c.checked_at = time.monotonic()
            if not idle_probe:
                c.used_at = c.checked_at

    def _describe(self, exc: BaseException) -> str:
        """One readable reason for a connection failure (TLS problems named precisely)."""
        if self._describe_error is not None:
            described = self._describe_error(exc)
            if described is not None:
                return described
        if isinstance(exc, TimeoutError):
            return "timed out"
        return str(exc) or type(exc).__name__

    def _requeue(self, batch: list[_Pending]) -> None:
        for p in reversed(batch):
            p.state = _QUEUED
            self._queue.appendleft(p)

    async def _maintain(self) -> None:
        """Enforce deadlines, wake parked connections that need a look, keep the idle floor."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            try:
                self._maintain_once(loop)
            except Exception:
                # Deadlines depend on this task: a bug in one round must not end it.
                logger.exception("connection pool maintenance for %s failed", self.node)
            await asyncio.sleep(_MAINTENANCE_INTERVAL)

    def _maintain_once(self, loop: asyncio.AbstractEventLoop) -> None:
        """One round of maintenance: deadlines, parked connections, the floor."""
        self._expire(loop.time())
        now = time.monotonic()
        surplus = len(self._conns) > self._min_idle
        for c in [*self._idle]:
            due = (
                c.dead()
                or now - c.checked_at >= self._health_check_interval
                or (surplus and now - c.used_at >= self._max_idle_time)
            )
            if due and c.waiter is not None and not c.waiter.done():
                c.waiter.set_result(False)  # its worker looks, and pings, retires or exits
        missing = min(self._min_idle, self._max) - len(self._conns)
        if missing > 0 and self._may_connect():
            for _ in range(missing):
                self._spawn()
        # Work queued while connects were backing off gets its connection now.
        self._dispatch()

    def _expire(self, now: float) -> None:
        """Fail every command whose caller's deadline has passed, queued or in flight."""
        message: str | None = None
        for p in self._queue:
            if now >= p.deadline and not p.future.done():
                if message is None:
                    message = (
                        f"no connection to {self.node} became free within {self._timeout:g}s "
                        f"(maximum_active_connections={self._max}, "
                        f"{self._waiting()} commands waiting)"
                    )
                p.future.set_exception(PoolTimeout(message))
        for c in self._conns:
            for p in c.batch:
                if now >= p.deadline and not p.future.done():
                    msg = f"{self.node} did not answer within {self._timeout:g}s"
                    # The worker reads (and drops) the reply if it ever comes.
                    p.future.set_exception(ConnectionLost(msg, sent=True))


class _WorkerDone(Exception):
    """Raised inside a worker to stop it after its connection broke."""


async def _disconnect(conn: AbstractConnection) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CLEANUP_TIMEOUT):
            await asyncio.shield(conn.disconnect(nowait=True))
