"""One Redis node's connections: a capped pool that pipelines concurrent commands.

Callers never hold a connection. A command is packed in the caller's task and queued; each open
connection is driven by one worker task that takes what is queued (up to a batch limit in
commands, in bytes written and in the reply volume expected), writes it with one
``writelines``, and reads the replies in order, handing each to the future of the caller that
queued it. Concurrent commands from many tasks therefore share a few sockets
(auto-pipelining, as ioredis and StackExchange.Redis do), and a caller cancelled at any await
cannot leave an unread reply on a connection: the worker reads every reply it asked for, and
drops the ones nobody waits for.

The pool's whole mutable state is ``_queue`` (pending commands, oldest first), ``_conns`` (open
or opening connections) and ``_idle`` (workers parked waiting for work), plus what it has
learned: the connect backoff (``_connect_backoff``, ``_next_connect``, ``_last_error``), when
the node last answered (``_answered_at``), how large replies are (``_reply_estimate``), and the
event loop it is bound to (``_loop``). Deciding is split from doing: ``_dispatch()`` only looks
at that state, wakes a parked worker or starts a connection, and never awaits.

A pool belongs to one event loop, like the futures it hands out. A call from another loop is
refused with :class:`UsageError` while the first loop is still open; once that loop is closed
(a later ``asyncio.run``), the pool forgets what it held there and binds to the new loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from ._backoff import Backoff
from ._errors import (
    CommandError,
    ConnectionLost,
    PoolTimeout,
    StoreClosed,
    other_loop_error,
)
from ._stalls import MAX_EXCUSED, STALL, ledger
from ._statistics import NodeStatistics
from ._wire import (
    FAILURES,
    NO_REPLY,
    disconnect,
    is_dead,
    pack,
    raise_lost,
    reason,
    replies_of,
    stream_of,
    unread,
)

__all__ = ["CLUSTER_GATHER_TURNS", "NodePool", "settle_abandoned"]

logger = logging.getLogger("redis_session")

#: Most commands written to one connection in one batch. Large enough to amortise the
#: per-batch cost, small enough that one slow batch does not delay everyone else.
_MAX_BATCH = 128
#: Most bytes one batch may write, and most reply bytes it may ask for (estimated from the
#: replies and writes seen so far). A server holds a batch's replies in that client's output
#: buffer until the client reads them, and drops the connection past
#: ``client-output-buffer-limit normal`` or ``maxmemory-clients``: 128 loads of a 60 KB session
#: asked for 8 MB at once. Half a megabyte per connection stays under a 4 MB limit with several
#: connections, and is already far past the size where batching pays off.
_BATCH_BYTES = 512 * 1024
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

#: A batch smaller than this waits a turn (a cluster node's pool: a few turns) of the event
#: loop for more when the pool is loaded (see ``NodePool._run``).
_GATHER = 16
#: The turns a cluster node's pool waits for such a batch to fill.
CLUSTER_GATHER_TURNS = 4

_QUEUED, _SENT = 0, 1
_ASKING = pack("ASKING")


class _Pending:
    """One queued command and the future its caller awaits."""

    __slots__ = ("asking", "deadline", "excused", "future", "packed", "state")

    #: How many event-loop stalls moved the deadline on; only set by ``NodePool._postpone``.
    excused: int

    def __init__(
        self, packed: bytes, future: asyncio.Future[Any], deadline: float, asking: bool
    ) -> None:
        self.packed = packed
        #: ``packed`` starts with ``ASKING``, whose reply is read and dropped before the
        #: command's own (a Redis Cluster ``ASK`` redirect).
        self.asking = asking
        self.future = future
        #: Loop time at which the caller gives up (PoolTimeout while queued).
        self.deadline = deadline
        self.state = _QUEUED


class _Conn:
    """A connection and the bookkeeping of the worker that drives it."""

    __slots__ = (
        "batch",
        "busy",
        "check",
        "checked_at",
        "conn",
        "connected",
        "graces",
        "task",
        "used_at",
        "waiter",
        "written",
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
        #: The batch timer's next look (see ``NodePool._overdue``), and how often it has let
        #: the batch run on because replies were waiting to be read.
        self.check: asyncio.TimerHandle | None = None
        self.graces = 0
        #: Commands a caller wrote on this parked connection itself (``NodePool._write_now``):
        #: the worker, woken, reads their replies before anything else.
        self.written: list[_Pending] | None = None

    def dead(self) -> bool:
        """Whether the server or the network closed the socket while we were not reading."""
        return is_dead(self.conn)

    def unread(self) -> bool:
        """Whether reply bytes have arrived that the worker has not parsed yet.

        Only asked when a deadline passes (never per command): replies can sit unread when the
        event loop was blocked, and failing them then would blame the node for our stall.
        """
        return unread(self.conn)


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
        gather_turns: int = 1,
    ) -> None:
        self.node = node
        #: Turns of the event loop a small batch waits to fill while the pool is loaded (see
        #: ``_run``): one for a single server, more for a cluster's node.
        self._gather_turns = gather_turns
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
        self._connect_backoff = Backoff(_CONNECT_BACKOFF_MIN, _CONNECT_BACKOFF_MAX)
        #: The error of the latest failed connect: the cause of what ``start`` raises.
        self._connect_failure: BaseException | None = None
        #: ``time.monotonic()`` before which no extra connection is opened (see backoff above).
        self._next_connect = 0.0
        #: ``time.monotonic()`` of the node's last reply, to tell a pool that is merely busy
        #: from a node that stopped answering when a queued command times out.
        self._answered_at = time.monotonic()
        #: Bytes one reply is expected to take (largest recent reply or write, decaying); it
        #: caps how many commands a batch may carry (``_batch_limit``).
        self._reply_estimate = 0
        self._batch_limit = _MAX_BATCH
        #: The event loop every future and task of this pool belongs to, and its thread's name
        #: (for the message refusing a call from another loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = ""

    # -- public ------------------------------------------------------------------------------

    async def start(self, *, connect: int) -> None:
        """Open ``max(connect, min_idle)`` connections now, then start the maintenance task.

        Raises :class:`StoreUnavailable` naming the node when a connection fails, so a wrong
        address or password surfaces when the store opens, not at the first request.
        """
        self._bind(asyncio.get_running_loop())
        # Connections a pool used before its start opened count (a cluster asks a seed for
        # its map through the seed's pool first): never more than max_connections.
        wanted = max(0, min(max(connect, self._min_idle), self._max) - len(self._conns))
        fresh = [_Conn(self._factory()) for _ in range(wanted)]
        self._conns.update(fresh)
        tasks = [asyncio.ensure_future(self._connect(c)) for c in fresh]
        try:
            if tasks:
                await asyncio.wait(tasks)
            failed = [r for r in (t.result() for t in tasks) if r is not None]
        except BaseException:
            # Cancelled (or a connect raised what it does not report). Not asyncio.gather: it
            # re-raises a child's CancelledError rather than the caller's own, which an anyio
            # cancel scope may take for someone else's and let escape. The connects are
            # stopped here, and a cancelled start raises the caller's own cancellation.
            for task in tasks:
                task.cancel()
            if tasks:
                with anyio.move_on_after(_CLEANUP_TIMEOUT, shield=True):
                    await asyncio.wait(tasks)
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # mark it seen: what is raised here is reported instead
            # Log out whatever did connect, to the end (see _finish).
            await _finish(self._discard(fresh), self.node)
            raise
        if failed:
            await _finish(self._discard(fresh), self.node)
            msg = f"cannot connect to {self.node}: {failed[0]}"
            cause = self._connect_failure
            if cause is None:  # pragma: no cover - a failed connect always records its error
                raise ConnectionLost(msg, sent=False)
            raise _lost(msg, cause)
        for c in fresh:
            self._start_worker(c)
        self._ensure_maintenance()
        # Let the new workers park (their first step does not await), so the first command
        # wakes one of them instead of opening a connection beyond the floor.
        await asyncio.sleep(0)

    async def execute(self, packed: bytes, deadline: float, *, asking: bool = False) -> Any:
        """Send one packed command and return its reply; ``deadline`` is in loop time.

        ``asking``: send ``ASKING`` just before it on the same connection (Redis Cluster,
        after an ``ASK`` redirect); only the command's reply is returned.

        Raises :class:`PoolTimeout` when no connection took the command before ``deadline``,
        :class:`ConnectionLost` when its connection broke, :class:`CommandError` for an error
        reply, :class:`StoreClosed` after :meth:`aclose`.
        """
        future = self.submit(asyncio.get_running_loop(), packed, deadline, asking)
        try:
            # No timer here: the maintenance task fails the future at its deadline.
            return await future
        except BaseException:
            settle_abandoned(future)
            raise

    def submit(
        self, loop: asyncio.AbstractEventLoop, packed: bytes, deadline: float, asking: bool
    ) -> asyncio.Future[Any]:
        """Queue one packed command from ``loop`` (the running loop); return its reply's future.

        What :meth:`execute` awaits, for a caller that awaits the future itself (the
        connection manager's hot path: one coroutine less per command). A caller that stops
        waiting must pass the future to :func:`settle_abandoned`. Raises as :meth:`execute`
        does before anything is queued.
        """
        if loop is not self._loop:
            self._bind(loop)  # first use, a later asyncio.run, or a mistake (UsageError)
        if self._closed:
            msg = f"the connection pool for {self.node} is closed"
            raise StoreClosed(msg)
        maintenance = self._maintenance
        if maintenance is None or maintenance.done():
            # Deadlines are enforced by the maintenance task: never wait without it, even on a
            # pool used before start() or after the task died.
            self._ensure_maintenance()
        if asking:
            packed = _ASKING + packed
        future = loop.create_future()
        queue = self._queue
        pending = _Pending(packed, future, deadline, asking)
        # The pool is quiet (every connection parked): write now rather than one turn of the
        # event loop later, when the worker runs; at low concurrency that turn is a good part
        # of a command's latency. Under load this never applies, and batches form as usual.
        if (
            not queue
            and not self._waking
            and len(self._idle) == len(self._conns) > 0
            and self._write_now(pending)
        ):
            return future
        queue.append(pending)
        # _dispatch() decided for the usual case under load: a worker already woken takes this
        # command when it runs (a batch holds up to _MAX_BATCH), and no connection can be
        # added (all are open, or one is parked), so there is nothing to do.
        if (
            self._waking
            and len(queue) <= _MAX_BATCH * self._waking
            and (self._idle or len(self._conns) >= self._max)
        ):
            return future
        self._dispatch()
        return future

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
        loop = asyncio.get_running_loop()
        if loop is not self._loop and self._loop is not None:
            self._bind(loop)
        self._closed = True
        closed = f"the connection pool for {self.node} closed"
        self._fail_queue(lambda: ConnectionLost(closed, sent=False))
        await _finish(self._shutdown(), self.node)

    async def _shutdown(self) -> None:
        tasks = [*self._tasks]
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLEANUP_TIMEOUT):
                    await asyncio.gather(*tasks, return_exceptions=True)
        conns = [*self._conns]
        self._conns.clear()
        self._idle.clear()
        await asyncio.gather(*(disconnect(c.conn) for c in conns))

    async def _discard(self, conns: list[_Conn]) -> None:
        for c in conns:
            self._forget(c)
        await asyncio.gather(*(disconnect(c.conn) for c in conns))

    # -- the event loop --------------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to ``loop``; refuse if the pool is bound to another loop that is still open.

        Futures resolved from another loop's thread never wake the loop waiting on them, so a
        call from a second live loop would hang forever: refuse it. A closed loop can never run
        this pool's tasks again: forget them and start over on ``loop``.
        """
        old = self._loop
        if old is loop:
            return
        here = threading.current_thread()
        if old is not None:
            if not old.is_closed():
                raise other_loop_error(old, self._thread, loop, self.node)
            self._abandon()
            logger.debug("connection pool for %s moved to a new event loop", self.node)
        self._loop = loop
        self._thread = f"{here.name!r}"

    def _abandon(self) -> None:
        """Forget everything tied to a closed event loop; no callback of it can run again."""
        # asyncio.run cancelled the workers before closing its loop, so their connections are
        # already closed; one left open by a loop closed without that is garbage now.
        self._queue.clear()
        self._conns.clear()
        self._idle.clear()
        self._tasks.clear()
        self._waking = 0
        self._maintenance = None
        self._connect_backoff.reset()
        self._next_connect = 0.0

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

    def _write_now(self, p: _Pending) -> bool:
        """Write ``p`` on the longest-parked connection and wake its worker to read the reply.

        The caller still holds no connection: the worker reads the reply (and drops it if
        nobody waits any more), exactly as for a batch it wrote itself. False (nothing
        written) when that connection is not fit: it is then queued as usual.
        """
        c = self._idle[0]
        waiter = c.waiter
        if waiter is None or waiter.done() or not c.connected or c.dead():
            return False
        try:
            writer, _ = stream_of(c.conn)
            writer.write(p.packed)
        except FAILURES:
            return False
        self._idle.popleft()
        p.state = _SENT
        if len(p.packed) > self._reply_estimate:
            # As _take_batch does: a large write (a save) predicts large replies (loads of the
            # same session), which the batches formed once load comes must be bounded for.
            self._learn_reply_size(len(p.packed))
        # In flight from now on: the deadline sweep and stall excuses look at c.batch.
        c.written = c.batch = [p]
        c.busy = True
        waiter.set_result(True)
        return True

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        queue = self._queue
        limit = self._batch_limit
        written = 0
        # The first command always goes, however large: it cannot be split.
        while queue and written < _BATCH_BYTES and len(batch) < limit:
            p = queue.popleft()
            if not p.future.done():
                p.state = _SENT
                batch.append(p)
                written += len(p.packed)
        if batch and written // len(batch) > self._reply_estimate:
            # Large writes (saves) predict large replies (loads of the same sessions).
            self._learn_reply_size(written // len(batch))
        return batch

    def _learn_reply_size(self, size: int) -> None:
        """Fold one observed size into the reply estimate and the batch limit it implies."""
        estimate = self._reply_estimate
        # Decays by an eighth per batch, so a burst of large sessions does not shrink batches
        # for long after it.
        estimate = max(size, estimate - (estimate >> 3))
        self._reply_estimate = estimate
        self._batch_limit = max(1, min(_MAX_BATCH, _BATCH_BYTES // max(estimate, 1)))

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
                written = c.written
                if written is not None:
                    c.written = None
                    await self._run_batch(c, written, written=True)
                    continue
                turns = 0
                while (
                    turns < self._gather_turns
                    and 0 < len(self._queue) < _GATHER
                    and len(self._idle) + self._waking < len(self._conns) - 1
                ):
                    # Little to send while another connection waits for replies (a loaded
                    # pool): let the callers that become runnable in the next few turns queue
                    # theirs first, so one write carries them all. Per-write costs (a send, a
                    # reply read, a wake-up of this worker and of the server) dominate small
                    # batches, and a cluster spreads each turn's commands over its masters:
                    # one turn gathered a third of what it gathers on one server, so a
                    # cluster node's pool waits a few turns. (On one server the extra turns
                    # cost more than they gathered: 0.75-0.94x pairs/s at 4 to 1024 tasks,
                    # alternated runs.) Bounded in turns, not time; it ends as soon as the
                    # other connections are free (one of them then takes the queue) or the
                    # batch is large enough.
                    turns += 1
                    await asyncio.sleep(0)
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
            self._fail_written(c)
            self._forget(c)
            # Also when never marked connected: a connect cancelled half-way (the pool
            # closing) may have a socket open already, which would otherwise leak.
            await disconnect(c.conn)
            # Work may be left for a connection that no longer exists; open another.
            if not self._closed:
                self._dispatch()

    def _fail_written(self, c: _Conn) -> None:
        """Fail what a caller wrote on ``c`` when its worker stops before reading the replies.

        The pool is closing: as for a batch cut short, the commands may have run.
        """
        if c.written is None:
            return
        msg = f"the connection pool for {self.node} closed with this command in flight"
        for p in c.written:
            if not p.future.done():
                p.future.set_exception(ConnectionLost(msg, sent=True))
        c.written = None

    async def _connect(self, c: _Conn) -> str | None:
        """Connect ``c``; return None on success, else the reason (already logged)."""
        try:
            await self._connect_excused(c)
        except FAILURES as exc:
            self._connect_failure = exc
            reason = self._describe(exc)
            if reason != self._last_error:
                logger.warning("cannot connect to %s: %s", self.node, reason)
            self._last_error = reason
            self._next_connect = time.monotonic() + self._connect_backoff.failed()
            await disconnect(c.conn)
            self._forget(c)
            if not any(other.connected for other in self._conns):
                # Nobody else can serve the queue: fail fast rather than at the deadline.
                msg = f"cannot connect to {self.node}: {reason}"
                self._fail_queue(functools.partial(_lost, msg, exc))
            return reason
        c.connected = True
        c.used_at = c.checked_at = self._answered_at = time.monotonic()
        if self._last_error is not None:
            logger.info("connected to %s again", self.node)
        else:
            logger.debug("connected to %s", self.node)
        self._last_error = None
        self._connect_backoff.reset()
        self._next_connect = 0.0
        return None

    async def _connect_excused(self, c: _Conn) -> None:
        """Connect within the timeout, tried again when a stall of our own loop used it up.

        A connect that timed out while the event loop was blocked (its timer ran late, or a
        stall was recorded since it began) says nothing about the node: up to
        ``MAX_EXCUSED`` more tries, each with a whole timeout.
        """
        loop = asyncio.get_running_loop()
        for excused in range(MAX_EXCUSED + 1):
            began = loop.time()
            try:
                async with asyncio.timeout(self._timeout):
                    await c.conn.connect()  # type: ignore[no-untyped-call]
            except TimeoutError:
                late = loop.time() - began - self._timeout
                stalled = late > STALL or ledger(loop).since(began) > 0
                if not stalled or excused == MAX_EXCUSED:
                    raise
                logger.debug("connect to %s timed out in a loop stall; trying again", self.node)
                await disconnect(c.conn)
            else:
                return

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
            woken = waiter.done() and not waiter.cancelled() and waiter.result()
            if woken and c.written is None:
                self._waking -= 1  # woken for queued work (_write_now does not count)
            # Whoever woke us for work took us off the list already; a membership test of a
            # few connections is cheaper than the ValueError of remove() on every batch.
            if c in self._idle:
                self._idle.remove(c)
        if c.written is not None:
            return True  # a caller wrote on it: read the reply first, whatever else is due
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
        probe = _Pending(pack("PING"), loop.create_future(), loop.time() + self._timeout, False)
        probe.state = _SENT
        # A broken connection ends _run_batch with _WorkerDone; catch it so the failure is
        # logged here (the worker then stops because we return False).
        try:
            with contextlib.suppress(_WorkerDone):
                await self._run_batch(c, [probe], idle_probe=True)
        except BaseException:
            # Cancelled (the pool is closing): the batch failed the probe's future on its way
            # out, and nobody awaits a probe: mark its error seen, or asyncio logs it as never
            # retrieved when the future is collected.
            if probe.future.done() and not probe.future.cancelled():
                probe.future.exception()
            raise
        error = probe.future.exception() if probe.future.done() else None
        if probe.future.done() and error is None:
            return True
        logger.warning("health check of an idle connection to %s failed: %s", self.node, error)
        return False

    async def _run_batch(  # noqa: PLR0912, PLR0915 - one try covering write, read and delivery
        self,
        c: _Conn,
        batch: list[_Pending],
        *,
        idle_probe: bool = False,
        written: bool = False,
    ) -> None:
        """Write a batch and deliver each reply to its caller; on failure, fail the rest.

        ``written``: the batch is on the wire already (see ``_write_now``); only read.
        """
        conn = c.conn
        c.busy = True
        c.batch = batch
        delivered = 0
        reply: Any = None
        loop = asyncio.get_running_loop()
        try:
            # One timer for the whole batch: a server that cannot answer it within the timeout
            # is hung, and the connection is dropped. Callers' own deadlines are enforced by
            # the maintenance sweep, so this is not on the per-command path. The timer looks
            # before it fires (_overdue): replies that arrived while the loop was blocked are
            # read, not thrown away with the connection.
            async with asyncio.timeout(None) as timer:
                c.graces = 0
                c.check = loop.call_at(loop.time() + self._timeout, self._overdue, c, timer)
                writer, _ = stream_of(conn)
                gets, fill = replies_of(conn)
                if not written:
                    writer.writelines([p.packed for p in batch])
                await writer.drain()
                for p in batch:
                    if p.asking:
                        # ASKING's +OK; it cannot fail, and the command's reply tells anyway.
                        while (reply := gets()) is NO_REPLY:
                            await fill()
                    # Replies parsed straight from hiredis: a coroutine per reply (redis-py's
                    # read_response) was a tenth of the pool's cost per command.
                    while (reply := gets()) is NO_REPLY:
                        await fill()
                    future = p.future
                    if isinstance(reply, RedisError) or (
                        type(reply) is list and reply and isinstance(reply[0], RedisError)
                    ):
                        raise_lost(reply)  # redis-py raises connection errors, as we do
                    if future.done():
                        pass
                    elif isinstance(reply, ResponseError):
                        future.set_exception(CommandError(str(reply)))
                    else:
                        future.set_result(reply)
                    delivered += 1
        except FAILURES as exc:
            reason = self._describe(exc)
            if not idle_probe:
                logger.warning("connection to %s failed mid-batch: %s", self.node, reason)
            if len(batch) - delivered > 1 and not isinstance(exc, TimeoutError):
                # The server may have dropped us for the size of this batch's replies
                # (client-output-buffer-limit, maxmemory-clients), which nothing announces:
                # retries go out in batches an eighth the size (growing back as they succeed).
                self._learn_reply_size(_BATCH_BYTES // max(1, len(batch) >> 3))
            msg = f"connection to {self.node} failed: {reason}"
            for p in batch[delivered:]:
                if not p.future.done():
                    p.future.set_exception(_lost(msg, exc, sent=True))
            c.connected = False
            await disconnect(conn)
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
            if c.check is not None:
                c.check.cancel()
                c.check = None
            c.busy = False
            c.batch = []
            c.checked_at = now = time.monotonic()
            if not idle_probe:
                c.used_at = now
            if delivered:
                self._answered_at = now
                # One reply per batch is measured (the last), never one per command.
                self._learn_reply_size(_reply_size(reply))

    def _overdue(self, c: _Conn, timer: asyncio.Timeout) -> None:
        """Drop the connection of a batch past its timer, unless we are to blame for the wait.

        If the event loop was blocked, or replies are waiting unread, the worker has not had
        its chance to read what the node sent in time: look again one maintenance round later
        (at most a timeout's worth of rounds, so a node trickling bytes is still dropped).
        """
        if c.check is None:
            return  # the batch ended in the meantime
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = now - c.check.when()
        rounds = max(1, int(self._timeout / _MAINTENANCE_INTERVAL))
        if c.graces < rounds and (late > STALL or c.unread()):
            c.graces += 1
            c.check = loop.call_at(now + _MAINTENANCE_INTERVAL, self._overdue, c, timer)
            return
        c.check = None
        try:
            timer.reschedule(now)  # fires at once: TimeoutError in the worker
        except RuntimeError:
            # The batch's timeout block already exited (its worker is cleaning up after a
            # failure, awaiting the disconnect, and a loop stall let this check fire first):
            # there is nothing left to time out.
            return

    def _describe(self, exc: BaseException) -> str:
        """One readable reason for a connection failure (TLS problems named precisely)."""
        if self._describe_error is not None:
            described = self._describe_error(exc)
            if described is not None:
                return described
        return reason(exc)

    def _requeue(self, batch: list[_Pending]) -> None:
        for p in reversed(batch):
            p.state = _QUEUED
            self._queue.appendleft(p)

    async def _maintain(self) -> None:
        """Enforce deadlines, wake parked connections that need a look, keep the idle floor."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not self._closed:
            now = loop.time()
            # A round far later than asked means the event loop was blocked (a slow handler,
            # a GC pause): replies that came meanwhile are unread and nothing could be sent.
            # That time is not the node's: deadlines move on by it.
            stall = now - last - _MAINTENANCE_INTERVAL
            if stall > STALL:
                # Also for the calls whose next step is not here yet (see _stalls).
                ledger(loop).record(now - stall, now)
                self._postpone(stall)
            last = now
            try:
                self._maintain_once(loop)
            except Exception:
                # Deadlines depend on this task: a bug in one round must not end it.
                logger.exception("connection pool maintenance for %s failed", self.node)
            await asyncio.sleep(_MAINTENANCE_INTERVAL)

    def _postpone(self, stall: float) -> None:
        logger.debug("event loop blocked for %.2fs: deadlines for %s move on", stall, self.node)
        for p in itertools.chain(self._queue, *(c.batch for c in self._conns)):
            # Twice at most: with a loop blocked over and over, a node that stopped
            # answering must still fail its commands.
            excused = getattr(p, "excused", 0)
            if excused < MAX_EXCUSED and not p.future.done():
                p.excused = excused + 1
                p.deadline += stall

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
        # The floor obeys the connect backoff like everything else, even with no connection
        # at all: against a dead server or one at maxclients it would otherwise reconnect
        # every round. While backing off, one connection probes; the rest follow its success.
        if missing > 0 and now >= self._next_connect:
            for _ in range(1 if self._connect_backoff else missing):
                self._spawn()
        # Work queued while connects were backing off gets its connection now.
        self._dispatch()

    def _expire(self, now: float) -> None:
        """Fail every command whose caller's deadline has passed, queued or in flight."""
        message: str | None = None
        for p in self._queue:
            if now >= p.deadline and not p.future.done():
                if message is None:
                    message = self._queue_timeout_message()
                p.future.set_exception(PoolTimeout(message))
        for c in self._conns:
            expired = [p for p in c.batch if now >= p.deadline and not p.future.done()]
            if not expired or c.unread():
                continue  # replies that came in time are read first: the worker is behind
            msg = f"{self.node} did not answer within {self._timeout:g}s"
            for p in expired:
                # The worker reads (and drops) the reply if it ever comes.
                p.future.set_exception(ConnectionLost(msg, sent=True))

    def _queue_timeout_message(self) -> str:
        """Why a queued command got no connection in time, in terms of what actually happened."""
        conns = len(self._conns)
        busy = sum(1 for c in self._conns if c.busy)
        opening = sum(1 for c in self._conns if not c.connected)
        quiet = time.monotonic() - self._answered_at
        if (busy or opening) and quiet >= self._timeout / 2:
            waits = []
            if busy:
                waits.append(f"{busy} connection{'s' if busy > 1 else ''} waiting for replies")
            if opening:
                waits.append(f"{opening} still connecting")
            message = (
                f"{self.node} stopped answering: no reply for {quiet:.1f}s "
                f"({', '.join(waits)}), so no connection became free for this command "
                f"within {self._timeout:g}s"
            )
        elif opening == conns and conns:
            message = f"connecting to {self.node} did not finish within {self._timeout:g}s"
        else:
            message = (
                f"no connection to {self.node} became free within {self._timeout:g}s "
                f"(maximum_active_connections={self._max}, {conns} open, "
                f"{self._waiting()} commands waiting)"
            )
        if self._last_error is not None:
            message += f"; connecting to {self.node} fails: {self._last_error}"
        return message


def settle_abandoned(future: asyncio.Future[Any]) -> None:
    """For a caller that stops waiting on a :meth:`NodePool.submit` future (cancelled).

    Usually the future is cancelled with it; a worker skips a queued command whose future is
    done, and reads (then drops) the reply of one already sent. If an error reached the future
    just before the cancellation did, mark it seen: nobody else will, and asyncio would log it
    as never retrieved.
    """
    if future.done() and not future.cancelled():
        future.exception()


class _WorkerDone(Exception):
    """Raised inside a worker to stop it after its connection broke."""


async def _finish(cleanup: Coroutine[Any, Any, None], node: str) -> None:
    """Run ``cleanup`` to its end even while the caller is being cancelled; bounded in time.

    An anyio cancel scope cancels every await inside it again, cleanup awaits included, so a
    loop over connections would stop after the first; a plain task cancellation interrupts
    the one await it hits. The cleanup runs in a task of its own, waited for under a shielded
    scope, and a cancellation that arrives meanwhile is raised once it is done.
    """
    task = asyncio.ensure_future(cleanup)
    loop = asyncio.get_running_loop()
    until = loop.time() + _CLEANUP_TIMEOUT * 2  # each step inside is bounded by one timeout
    cancelled: BaseException | None = None
    with anyio.CancelScope(shield=True):
        while not task.done():
            left = until - loop.time()
            if left <= 0:
                logger.warning("closing connections to %s did not finish; gave up", node)
                task.cancel()
                break
            try:
                await asyncio.wait([task], timeout=left)
            except asyncio.CancelledError as exc:
                cancelled = exc
    if task.done() and not task.cancelled() and task.exception() is not None:
        logger.warning("closing connections to %s failed", node, exc_info=task.exception())
    if cancelled is not None:
        raise cancelled


def _lost(message: str, cause: BaseException, *, sent: bool = False) -> ConnectionLost:
    """Build a :class:`ConnectionLost` for one caller, caused by the connection's own error."""
    lost = ConnectionLost(message, sent=sent)
    lost.__cause__ = cause
    return lost


def _reply_size(reply: Any, depth: int = 0) -> int:
    """Roughly how many bytes a parsed reply took on the wire."""
    if type(reply) is bytes:
        return len(reply)
    if type(reply) is list and depth < 3:
        return sum(_reply_size(item, depth + 1) for item in reply) + 8
    return 8
