"""The mixed-load driver: many tasks using one store on their own sessions, checking every reply.

Each task owns a handful of sessions and loops over create, load, save and delete on them (plus
an ``ECHO`` through the store's connection manager, whose reply must be its own token, and, when
``regenerate_rate`` asks for it, regenerate: in the history, a delete of the old id and a create
of the new one with the same data). Every
value a task writes is unique (``owner``, ``sid``, ``n`` and a random ``tok``), so a reply meant
for another caller, another session's data, or an old value coming back is recognised.

What a task knows about each session (:class:`Tracked`):

- ``acked``: the data of the last acknowledged write (create or save returned);
- ``maybe``: data of writes that failed with a library error: such a write may have run, or may
  still run later (a command the server reads from its socket buffer after a SIGCONT, or that
  a healed partition delivers), so a load may see it;
- ``history``: everything acknowledged before, to tell a lost write from a wrong reply.

A load must return ``acked`` or one of ``maybe``. An older acknowledged value, or ``None`` for
a session whose create was acknowledged, is a *lost acknowledged write*; anything else is
*wrong*. A save that conflicts although the stored session is exactly the version the task
holds is wrong too (a success reported as a conflict). A delete that failed is retried until it
is acknowledged, since a DEL that lands late would otherwise look like a lost write.

Alongside, every call goes into a :class:`~tests.chaos.history.History` (invoke, then ok, fail
or info, with the session id and the token of the version written or read), which
:func:`~tests.chaos.history.check` verifies after the run; the counters above are the quick,
online view, the history check is the exact one. After the load stops, a final sweep loads every
session the history knows (deleted ones included) into the same history.

Every loop here is bounded in time and in count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from redis_session import RedisSessionError, SessionConflict, SessionStore
from redis_session._store import Session

from .history import SWEEP, History, Op, Verdict

#: Sessions one task keeps alive at a time.
SESSIONS_PER_TASK = 3
#: Upper bound on the operations of one task in one run, whatever the duration.
MAX_OPS_PER_TASK = 200_000
#: Padding that makes a record about the size of a real session (~300 bytes encrypted).
_PAD = "p" * 160
#: Loads in flight at once during the final sweep.
SWEEP_CONCURRENCY = 32

Data = dict[str, Any]


def full_mode() -> bool:
    """Whether ``REDIS_SESSION_CHAOS=full`` asks for the long form of the fault suite."""
    return os.environ.get("REDIS_SESSION_CHAOS", "").lower() == "full"


# -- results -------------------------------------------------------------------------------------


@attrs.define
class Tally:
    """What one scenario did: the figures of the report table, and the evidence behind them."""

    scenario: str
    timeout: float
    #: The client-side faults combined with the scenario (``calm``: none).
    client: str = "calm"
    attempted: int = 0
    ok: int = 0
    #: Calls the driver cancelled on purpose (an application timeout): uncertain, not failed.
    cancelled: int = 0
    failed: int = 0
    conflicts: int = 0
    wrong: int = 0
    lost: int = 0
    #: Lost acknowledged writes that were acknowledged before the fault began.
    lost_before_fault: int = 0
    #: When each lost write had been acknowledged (``time.monotonic()``; None for a create).
    lost_acked_at: list[float] = attrs.Factory(list)
    longest: float = 0.0
    #: Longest time a failing operation took to raise.
    slowest_failure: float = 0.0
    #: The same, less the time the client's own faults blocked the event loop meanwhile.
    slowest_failure_net: float = 0.0
    recovery: float | None = None
    #: Operations that failed after the store had recovered from the last fault.
    failed_after_recovery: int = 0
    seconds: float = 0.0
    failure_kinds: Counter[str] = attrs.Factory(Counter)
    #: The first message seen for each kind of failure.
    failure_examples: dict[str, str] = attrs.Factory(dict)
    wrong_details: list[str] = attrs.Factory(list)
    #: Exceptions that are not ``RedisSessionError``: the public API must never raise those.
    foreign: list[str] = attrs.Factory(list)
    #: Warnings that a stored session did not decrypt or decode: only a misdirected reply can
    #: cause them here (nobody tampers with the data).
    unreadable_warnings: int = 0
    #: asyncio's own complaints (never-retrieved exceptions, destroyed pending tasks...).
    asyncio_errors: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    #: Operation log: (start, end, outcome) with outcome "ok", "failed" or "conflict".
    log: list[tuple[float, float, str]] = attrs.Factory(list)
    marks: dict[str, float] = attrs.Factory(dict)
    #: The history check's verdict (set once the load and the final sweep are over).
    verdict: Verdict | None = None
    #: Sessions the final sweep loaded, and those it could not load at all.
    swept: int = 0
    sweep_failed: int = 0

    def history_cell(self) -> str:
        """The history check's verdict for the table."""
        if self.verdict is None:
            return "not checked"
        if self.verdict.ok:
            return f"ok ({self.verdict.reads} reads)"
        return self.verdict.summary()

    def row(self) -> list[str]:
        """This scenario as a row of the report table."""
        return [
            self.scenario,
            self.client,
            str(self.attempted),
            str(self.failed),
            str(self.conflicts),
            str(self.wrong),
            str(self.lost),
            self.history_cell(),
            f"{self.longest:.2f}s",
            "-" if self.recovery is None else f"{self.recovery:.2f}s",
        ]


#: Every scenario run in this process, in order; the conftest prints them as a table.
RESULTS: list[Tally] = []

HEADER = [
    "scenario",
    "client",
    "attempted",
    "failed",
    "conflicts",
    "wrong",
    "lost acked",
    "history check",
    "longest stall",
    "recovery",
]


def table(results: Iterable[Tally]) -> str:
    """A Markdown table of ``results``."""
    rows = [HEADER, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows[1:]]
    return "\n".join(out)


# -- what a task knows ---------------------------------------------------------------------------


@attrs.define(eq=False)
class Tracked:
    """One session as its owner task knows it (see the module docstring)."""

    id: str
    handle: Session[Any] | None
    acked: Data | None
    acked_at: float
    maybe: list[Data] = attrs.Factory(list)
    history: list[Data] = attrs.Factory(list)
    #: The handle's version may be out of date (a save failed, or conflicted): load first.
    stale: bool = False
    #: A delete failed: retry it until acknowledged, touch nothing else.
    deleting: bool = False
    #: Deleted (acknowledged): one more load must say None, then it is forgotten.
    deleted: bool = False
    #: The handle's version when a save conflicted with nothing uncertain pending.
    conflicted_version: bytes | None = None


class _Watch(logging.Handler):
    """Counts the store's "does not decrypt/decode" warnings and asyncio's error records."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(logging.WARNING)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "asyncio":
            if record.levelno >= logging.ERROR:
                self.tally.asyncio_errors.append(record.getMessage()[:300])
            return
        message = record.getMessage()
        if "does not decrypt" in message or "does not decode" in message:
            self.tally.unreadable_warnings += 1


@contextlib.contextmanager
def watching_logs(tally: Tally) -> Iterator[None]:
    """Attach :class:`_Watch` to the library's and asyncio's loggers for the block."""
    handler = _Watch(tally)
    loggers = [logging.getLogger("redis_session"), logging.getLogger("asyncio")]
    for log in loggers:
        log.addHandler(handler)
    try:
        yield
    finally:
        for log in loggers:
            log.removeHandler(handler)


# -- the driver ----------------------------------------------------------------------------------


class LoadDriver:
    """Runs ``tasks`` load tasks on ``store`` until :meth:`stop`; see the module docstring.

    Use as ``async with LoadDriver(...) as load:``; the block runs the fault script while the
    load goes on, and leaving it stops the tasks and verifies every session they know.
    """

    def __init__(
        self,
        store: SessionStore[Any],
        tally: Tally,
        *,
        tasks: int,
        slack: float,
        seed: int = 0,
        think: float = 0.002,
        cancel_rate: float = 0.03,
        regenerate_rate: float = 0.0,
        delete_rate: float = 0.07,
        allowance: Callable[[float, float], float] | None = None,
    ) -> None:
        self.store = store
        self.tally = tally
        self.tasks = tasks
        self.timeout = tally.timeout
        self.slack = slack
        self.think = think
        self.cancel_rate = cancel_rate
        #: Share of the would-be saves that regenerate the session instead (0: none).
        self.regenerate_rate = regenerate_rate
        #: Share of the calls on a task's full set of sessions that delete one (so a session
        #: lives about ``SESSIONS_PER_TASK / delete_rate`` calls of its task).
        self.delete_rate = delete_rate
        #: Extra time a call from ``start`` to ``end`` may take: the client's own faults
        #: (event-loop stalls, GC pauses, CPU starvation) during it. None: no allowance.
        self.allowance = allowance or (lambda start, end: 0.0)
        self.history = History()
        #: Called when a fault begins (``mark("fault...")``): the client's faults hook in here.
        self.on_fault: Callable[[], None] | None = None
        #: The cancel scope of each task's call in flight (for a cancellation storm).
        self._scopes: list[anyio.CancelScope | None] = [None] * tasks
        self._random = random.Random(seed)
        self._stop = anyio.Event()
        self._sessions: list[list[Tracked]] = [[] for _ in range(tasks)]
        self._last_ok_start = [0.0] * tasks
        #: When each task's call in flight began (None between calls).
        self._calling_since: list[float | None] = [None] * tasks
        self._group: Any = None
        self._began = 0.0
        self._fault: float | None = None
        self._heal: float | None = None
        self._recoveries: list[float] = []
        manager = getattr(store._provider, "manager", None)
        self._manager = manager

    async def __aenter__(self) -> LoadDriver:
        self._began = time.monotonic()
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        for t in range(self.tasks):
            self._group.start_soon(self._worker, t, random.Random(self._random.random()))
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._stop.set()
        try:
            await self._group.__aexit__(*exc_info)
        finally:
            self.tally.seconds = time.monotonic() - self._began
        if exc_info[0] is None:
            await self.verify()
            await self.sweep()

    # -- the fault script's side --

    def mark(self, name: str, *, at: float | None = None) -> float:
        """Record the time (now, or ``at``) of a scenario event (``fault``, ``heal``, ...)."""
        now = time.monotonic() if at is None else at
        self.tally.marks[name] = now
        if name.startswith("fault"):
            self._fault = now
            self._heal = None
            if self.on_fault is not None:
                self.on_fault()
        elif name.startswith("heal"):
            self._heal = now
        return now

    async def wait_recovered(self, within: float) -> float:
        """Wait until every task has had an operation succeed that started after the heal.

        Returns the time that took; fails the scenario (AssertionError) past ``within``.
        """
        heal = self._heal
        assert heal is not None, "mark('heal') first"
        deadline = time.monotonic() + within
        while min(self._last_ok_start) <= heal:
            now = time.monotonic()
            if now > deadline + self.allowance(heal, now):
                behind = [t for t, s in enumerate(self._last_ok_start) if s <= heal]
                # A call in flight for longer than the timeout is a hang; otherwise the task's
                # calls keep failing.
                doing = [
                    f"task {t}: "
                    + (
                        "between calls"
                        if (since := self._calling_since[t]) is None
                        else f"in a call for {now - since:.2f}s"
                    )
                    for t in behind[:5]
                ]
                msg = (
                    f"{self.tally.scenario}: {len(behind)} of {self.tasks} tasks had no "
                    f"successful operation within {within:g}s of the heal ({'; '.join(doing)}); "
                    f"failures so far {dict(self.tally.failure_kinds)}, e.g. "
                    f"{self.tally.failure_examples}"
                )
                raise AssertionError(msg)
            await anyio.sleep(0.01)
        took = time.monotonic() - heal
        self._recoveries.append(took)
        self.tally.recovery = max(self._recoveries)
        self.tally.marks[f"recovered{len(self._recoveries)}"] = time.monotonic()
        return took

    def snapshot(self) -> dict[str, Data]:
        """Each live session's last acknowledged data, for sessions with nothing uncertain."""
        return {
            tr.id: tr.acked
            for sessions in self._sessions
            for tr in sessions
            if tr.acked is not None and not tr.maybe and not tr.deleting and not tr.deleted
        }

    def cancel_some(self, rnd: random.Random, n: int) -> int:
        """Cancel the calls in flight in up to ``n`` random tasks; return how many there were."""
        busy = [scope for scope in self._scopes if scope is not None and not scope.cancel_called]
        chosen = rnd.sample(busy, min(n, len(busy)))
        for scope in chosen:
            scope.cancel()
        return len(chosen)

    def tracked(self) -> list[Tracked]:
        """Every session the tasks know now."""
        return [tr for sessions in self._sessions for tr in sessions]

    # -- the load --

    async def _worker(self, t: int, rnd: random.Random) -> None:
        sessions = self._sessions[t]
        for step in range(MAX_OPS_PER_TASK):
            if self._stop.is_set():
                return
            roll = rnd.random()
            # Some calls are abandoned a moment after they start, as an application's own
            # request timeout would: anywhere before, during or after their round trip.
            limit = rnd.random() * 0.003 if rnd.random() < self.cancel_rate else None
            with anyio.move_on_after(limit) as scope:
                self._scopes[t] = scope
                self._calling_since[t] = time.monotonic()
                try:
                    await self._step(t, rnd, roll, sessions, step)
                finally:
                    self._scopes[t] = None
                    self._calling_since[t] = None
            if scope.cancelled_caught:
                self.tally.cancelled += 1
            if self.think:
                await anyio.sleep(rnd.random() * self.think)
            else:
                await anyio.lowlevel.checkpoint()

    async def _step(
        self, t: int, rnd: random.Random, roll: float, sessions: list[Tracked], step: int
    ) -> None:
        """One call on this task's sessions (``step`` makes each written value unique)."""
        live = [tr for tr in sessions if not tr.deleted]
        pending_delete = [tr for tr in sessions if tr.deleting]
        deleted = [tr for tr in sessions if tr.deleted]
        if pending_delete:
            await self._delete(t, pending_delete[0])
        elif deleted and roll < 0.5:
            await self._load(t, deleted[0])
        elif len(live) < SESSIONS_PER_TASK:
            await self._create(t, self._data(t, step, rnd))
        elif roll < 0.08:
            await self._echo(t, rnd)
        elif roll < 0.08 + self.delete_rate:
            await self._delete(t, rnd.choice(live))
        else:
            tr = rnd.choice(live)
            if tr.stale or tr.handle is None or roll < 0.55:
                await self._load(t, tr)
            elif self.regenerate_rate and rnd.random() < self.regenerate_rate:
                await self._regenerate(t, tr)
            else:
                await self._save(t, tr, self._data(t, step, rnd))

    @staticmethod
    def _data(t: int, n: int, rnd: random.Random) -> Data:
        return {"owner": t, "n": n, "tok": rnd.getrandbits(64), "pad": _PAD}

    def _record(self, t: int, kind: Any, key: str | None, value: str | None, **kw: Any) -> Op:
        return self.history.invoke(t, kind, key, value, time.monotonic(), **kw)

    @staticmethod
    def _done(op: Op, status: Any, **kw: Any) -> None:
        History.finish(op, status, time.monotonic(), **kw)

    def _begin(self) -> float:
        self.tally.attempted += 1
        return time.monotonic()

    def _ok(self, t: int, began: float) -> None:
        end = time.monotonic()
        self.tally.ok += 1
        self.tally.longest = max(self.tally.longest, end - began)
        self.tally.log.append((began, end, "ok"))
        self._last_ok_start[t] = max(self._last_ok_start[t], began)

    def _failed(self, began: float, exc: BaseException) -> str:
        """Count a failure; return ``"conflict"``, ``"failed"`` or ``"foreign"``."""
        end = time.monotonic()
        tally = self.tally
        took = end - began
        tally.longest = max(tally.longest, took)
        if isinstance(exc, SessionConflict):
            tally.conflicts += 1
            tally.log.append((began, end, "conflict"))
            return "conflict"
        if isinstance(exc, RedisSessionError):
            tally.failed += 1
            tally.slowest_failure = max(tally.slowest_failure, took)
            net = took - self.allowance(began, end)
            tally.slowest_failure_net = max(tally.slowest_failure_net, net)
            tally.failure_kinds[type(exc).__name__] += 1
            tally.failure_examples.setdefault(type(exc).__name__, str(exc)[:240])
            if net > self.timeout + self.slack:
                tally.failure_kinds[f"slow {type(exc).__name__}"] += 1
                tally.notes.append(f"{type(exc).__name__} after {took:.2f}s: {exc}"[:300])
            tally.log.append((began, end, "failed"))
            return "failed"
        tally.foreign.append(f"{type(exc).__name__}: {exc}"[:300])
        tally.log.append((began, end, "failed"))
        return "foreign"

    def _wrong(self, what: str) -> None:
        self.tally.wrong += 1
        if len(self.tally.wrong_details) < 20:
            self.tally.wrong_details.append(what)

    async def _create(self, t: int, data: Data) -> None:
        op = self._record(t, "create", None, token(data))
        began = self._begin()
        try:
            session = await self.store.create(data)
        except BaseException as exc:
            # Nobody learns the id of a create that failed: nothing to track.
            self._done(op, "info")
            if not isinstance(exc, Exception):
                raise
            self._failed(began, exc)
            return
        self._done(op, "ok", key=session.id)
        self._ok(t, began)
        if session.data is not data:
            self._wrong("create returned another session's data")
        self._sessions[t].append(
            Tracked(session.id, session, dict(data), time.monotonic(), history=[dict(data)])
        )

    async def _echo(self, t: int, rnd: random.Random) -> None:
        if self._manager is None:
            return
        token = secrets.token_hex(8)
        began = self._begin()
        try:
            reply = await self._manager.execute("ECHO", token, read_only=rnd.random() < 0.5)
        except Exception as exc:  # every failure is classified
            self._failed(began, exc)
            return
        self._ok(t, began)
        if reply != token.encode():
            self._wrong(f"ECHO {token} answered {reply!r}")

    async def _load(self, t: int, tr: Tracked) -> None:
        op = self._record(t, "load", tr.id, None)
        began = self._begin()
        try:
            session = await self.store.load(tr.id)
        except BaseException as exc:
            self._done(op, "info")
            if not isinstance(exc, Exception):
                raise
            self._failed(began, exc)
            return
        self._done(op, "ok", value=None if session is None else token(session.data))
        self._ok(t, began)
        self._check(t, tr, session)

    def _check(self, t: int, tr: Tracked, session: Session[Any] | None) -> None:
        """Classify what a load returned for ``tr`` (see the module docstring)."""
        if tr.deleted:
            if session is not None:
                self._wrong(f"task {t}: a deleted session came back with {session.data!r:.80}")
            self._forget(t, tr)
            return
        if session is None:
            if tr.deleting:
                return  # the failed delete did run
            self._lost(tr)
            self._forget(t, tr)
            return
        data = session.data
        if tr.conflicted_version is not None:
            if data == tr.acked and session._version == tr.conflicted_version:
                self._wrong(f"task {t}: save conflicted, yet the stored version was its own")
            tr.conflicted_version = None
        if data == tr.acked:
            pass
        elif data in tr.maybe:
            # A write that failed did land; nothing older can land any more (compare-and-set).
            tr.acked, tr.maybe = data, []
            tr.history.append(data)
        elif data in tr.history:
            self._lost(tr)
            tr.acked, tr.maybe = data, []
        else:
            self._wrong(f"task {t}: {tr.id[:6]} read {data!r:.100}, expected {tr.acked!r:.100}")
            tr.acked, tr.maybe = data, []
        if not tr.deleting:
            tr.handle, tr.stale = session, False

    def _lost(self, tr: Tracked) -> None:
        self.tally.lost += 1
        self.tally.lost_acked_at.append(tr.acked_at)
        if self._fault is None or tr.acked_at < self._fault:
            self.tally.lost_before_fault += 1

    def _forget(self, t: int, tr: Tracked) -> None:
        with contextlib.suppress(ValueError):
            self._sessions[t].remove(tr)

    async def _save(self, t: int, tr: Tracked, data: Data) -> None:
        assert tr.handle is not None
        handle = tr.handle
        previous, version = handle.data, handle._version
        handle.data = data
        op = self._record(t, "save", tr.id, token(data), base=token(previous))
        began = self._begin()
        try:
            await self.store.save(handle)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled: the save may or may not run
                self._done(op, "info")
                handle.data = previous
                tr.stale = True
                tr.maybe.append(data)
                raise
            # A conflict wrote nothing (the compare-and-set found another version); any other
            # failure may have been applied.
            self._done(op, "fail" if isinstance(exc, SessionConflict) else "info")
            kind = self._failed(began, exc)
            handle.data = previous
            tr.stale = True
            if kind == "conflict":
                if not tr.maybe:
                    tr.conflicted_version = version
            else:
                tr.maybe.append(data)
            return
        self._done(op, "ok")
        self._ok(t, began)
        tr.acked, tr.maybe, tr.acked_at = data, [], time.monotonic()
        tr.history.append(data)

    async def _regenerate(self, t: int, tr: Tracked) -> None:
        """Move ``tr`` to a new id: in the history, a delete of the old id and a create.

        The new session holds the data as last acknowledged. If the call fails, the move may
        or may not have happened: the old id is deleted (retried until acknowledged), and the
        new id, which nobody learns, is left alone, as after a failed create.
        """
        assert tr.handle is not None
        handle = tr.handle
        data, version = handle.data, handle._version
        old = self._record(t, "delete", tr.id, None)
        new = self._record(t, "create", None, token(data))
        began = self._begin()
        try:
            session = await self.store.regenerate(handle)
        except BaseException as exc:
            self._done(new, "info")
            if not isinstance(exc, Exception):  # cancelled: moved or not
                self._done(old, "info")
                tr.deleting = True
                raise
            if self._failed(began, exc) == "conflict":
                # Refused by the compare-and-set: nothing moved.
                self._done(old, "fail")
                tr.stale = True
                if not tr.maybe:
                    tr.conflicted_version = version
            else:
                self._done(old, "info")
                tr.deleting = True
            return
        self._done(old, "ok")
        self._done(new, "ok", key=session.id)
        self._ok(t, began)
        if session.data != data or session.id == tr.id:
            self._wrong(
                f"task {t}: regenerate of {tr.id[:6]} gave {session.id[:6]} {session.data!r:.80}"
            )
        # The old id must now load as nothing, once; then it is forgotten.
        tr.deleted, tr.acked, tr.maybe = True, None, []
        self._sessions[t].append(
            Tracked(session.id, session, dict(data), time.monotonic(), history=[dict(data)])
        )

    async def _delete(self, t: int, tr: Tracked) -> None:
        op = self._record(t, "delete", tr.id, None)
        began = self._begin()
        try:
            await self.store.delete(tr.id)
        except BaseException as exc:
            self._done(op, "info")
            if not isinstance(exc, Exception):  # cancelled: the delete may or may not run
                tr.deleting = True
                raise
            self._failed(began, exc)
            tr.deleting = True
            return
        self._done(op, "ok")
        self._ok(t, began)
        tr.deleting, tr.deleted, tr.acked, tr.maybe = False, True, None, []

    # -- after the load --

    async def verify(self, *, attempts: int = 3) -> None:
        """Load every known session once more, the store as it is (never reopened).

        A session whose load still fails after ``attempts`` tries counts as failed after
        recovery: the store did not heal.
        """
        heal_done = time.monotonic()
        for t, sessions in enumerate(self._sessions):
            for tr in list(sessions):
                for _ in range(attempts):
                    try:
                        session = await self.store.load(tr.id)
                    except RedisSessionError:
                        await anyio.sleep(0.1)
                        continue
                    self._check(t, tr, session)
                    break
                else:
                    self.tally.failed_after_recovery += 1
                    self.tally.notes.append(f"verify: session {tr.id[:6]} never loaded")
        self.tally.marks["verified"] = heal_done

    async def sweep(self, *, attempts: int = 3) -> None:
        """Load every session the history knows, deleted or not, into the history.

        Each must read as its last acknowledged version (or as gone, if deleted): the history
        check judges that. A session that fails to load ``attempts`` times counts as failed
        after recovery.
        """
        ids = self.history.session_ids()
        limit = anyio.Semaphore(SWEEP_CONCURRENCY)

        async def one(session_id: str) -> None:
            async with limit:
                for _ in range(attempts):
                    op = self._record(SWEEP, "load", session_id, None)
                    try:
                        session = await self.store.load(session_id)
                    except RedisSessionError:
                        self._done(op, "info")
                        await anyio.sleep(0.1)
                        continue
                    value = None if session is None else token(session.data)
                    self._done(op, "ok", value=value)
                    self.tally.swept += 1
                    return
                self.tally.sweep_failed += 1
                self.tally.failed_after_recovery += 1

        async with anyio.create_task_group() as group:
            for session_id in ids:
                group.start_soon(one, session_id)

    def failures_after(self, since: float) -> int:
        """Operations that started at or after ``since`` and failed (conflicts excluded)."""
        log = self.tally.log
        return sum(1 for began, _, outcome in log if began >= since and outcome == "failed")


def token(data: Any) -> str:
    """The unique token of a value the load wrote (anything else gets a token of its own)."""
    if isinstance(data, dict) and {"owner", "n", "tok"} <= data.keys():
        return f"{data['owner']}:{data['n']}:{data['tok']:x}"
    return f"<not written by the load: {data!r:.60}>"


def tasks_now() -> set[asyncio.Task[Any]]:
    """The event loop's unfinished tasks."""
    return {t for t in asyncio.all_tasks() if not t.done()}


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))
