"""A history of every store operation, and a pure checker of what the history may contain.

The load driver records each call as it is *invoked* and again as it *completes*:

``ok``
    it returned (a write was applied; a load returned ``value``);
``fail``
    it certainly did nothing (a save refused with ``SessionConflict``: the compare-and-set found
    another version, so nothing was written);
``info``
    its outcome is unknown: a write that was cancelled or failed with ``StoreUnavailable`` may
    have been applied, may be applied later, or never. A read with an unknown outcome says
    nothing and is ignored.

A write's ``value`` is a token unique in the whole run (``None`` for a delete). A save also
names its ``base``: the token of the version it replaces. ``SessionStore.save`` is a
compare-and-set on that version, so the versions of one session form a tree rooted at its
create, and the versions the server really held form one path down that tree (a save whose base
is no longer current is refused, whenever it arrives). A delete ends the path for good: a later
save finds no version to compare with, and a create always picks a new id.

:func:`check` takes the history and finds, for every read that returned (``ok``), what it was
allowed to return. Concurrency is taken exactly: only a write whose ``ok`` was recorded before
the read was *invoked* constrains the read (real-time order); anything overlapping it may or may
not be seen. Timestamps are ``time.monotonic()`` taken in the caller, before the call and after
it returned, so a stall of the caller only widens an operation, never orders two that overlap.

Violations, each counted once per write it concerns:

lost acknowledged write
    a read, invoked after write ``w`` was acknowledged, returned a version that is not ``w`` or
    a version derived from it (an older one, one from another branch of the tree, or no session
    at all while no delete had been invoked);
undone delete
    a read invoked after a delete was acknowledged returned the session;
stale read
    a read returned a version older than one the same caller had already read (a version that
    was applied, acknowledged or not, and was then rolled back);
phantom read
    a read returned a version that was never written to this session, that was certainly not
    applied (``fail``), or whose write was invoked only after the read had returned.

Sessions expire: the scenarios use an ``expiration`` and ``inactivity`` far longer than the run,
so a session that disappears was lost, never expired.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

import attrs

Status = Literal["ok", "fail", "info"]
Kind = Literal["create", "save", "delete", "load"]
WRITES = frozenset({"create", "save", "delete"})
#: The process number of the final sweep's reads (the load tasks are 0, 1, ...).
SWEEP = -1
#: How many examples of each violation a verdict keeps for the report.
EXAMPLES = 5


@attrs.define(eq=False, slots=True)
class Op:
    """One call: invoked at ``invoke``; ``status`` and ``complete`` are set when it returns."""

    process: int
    kind: Kind
    #: The session id (for a create, known only once it returned).
    key: str | None
    #: A write's token (``None`` for a delete); what a load returned (``None``: no session).
    value: str | None
    invoke: float
    #: A save's base: the token of the version it replaces.
    base: str | None = None
    complete: float | None = None
    #: ``None`` while in flight; a call that never completes is treated as ``info``.
    status: Status | None = None

    def describe(self) -> str:
        """Short text for a report: ``p3 save 'abcd…' value=... [1.234, 1.240] ok``."""
        key = "-" if self.key is None else self.key[:6]
        end = "?" if self.complete is None else f"{self.complete:.3f}"
        base = f" base={self.base}" if self.kind == "save" else ""
        return (
            f"p{self.process} {self.kind} {key} value={self.value}{base} "
            f"[{self.invoke:.3f}, {end}] {self.status or 'in flight'}"
        )


class History:
    """The ops of one run, in invoke order; cheap enough to record every call of the load."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def invoke(
        self,
        process: int,
        kind: Kind,
        key: str | None,
        value: str | None,
        now: float,
        *,
        base: str | None = None,
    ) -> Op:
        """Record a call about to be made; complete it with :meth:`finish`."""
        op = Op(process, kind, key, value, now, base=base)
        self.ops.append(op)
        return op

    @staticmethod
    def finish(
        op: Op,
        status: Status,
        now: float,
        *,
        key: str | None = None,
        value: str | None = None,
    ) -> None:
        """Record how ``op`` ended (``key`` for a create that returned, ``value`` for a load)."""
        op.status = status
        op.complete = now
        if key is not None:
            op.key = key
        if op.kind == "load":
            op.value = value

    def session_ids(self) -> list[str]:
        """Every session whose create returned, in order: what the final sweep reads."""
        return [op.key for op in self.ops if op.kind == "create" and op.status == "ok" and op.key]


@attrs.define
class Verdict:
    """What :func:`check` found; ``ok`` when there is no violation of any kind."""

    reads: int = 0
    writes: int = 0
    sessions: int = 0
    lost: int = 0
    #: Lost acknowledged writes that were creates: the whole session vanished or never showed.
    lost_creates: int = 0
    undone_deletes: int = 0
    stale_reads: int = 0
    phantoms: int = 0
    #: Sweep reads among the violations: sessions that no longer load as they should at the end.
    sweep_violations: int = 0
    examples: dict[str, list[str]] = attrs.Factory(dict)
    #: When each lost write, and each undone delete, had been acknowledged (``complete``).
    lost_acked_at: list[float] = attrs.Factory(list)
    undone_acked_at: list[float] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        """No lost write, undone delete, stale or phantom read."""
        return not (self.lost or self.undone_deletes or self.stale_reads or self.phantoms)

    def summary(self) -> str:
        """``ok`` or the violations, for the report table."""
        if self.ok:
            return "ok"
        parts = [
            f"{self.lost} lost acked" if self.lost else "",
            f"{self.undone_deletes} deletes undone" if self.undone_deletes else "",
            f"{self.stale_reads} stale reads" if self.stale_reads else "",
            f"{self.phantoms} phantom reads" if self.phantoms else "",
        ]
        return "VIOLATED: " + ", ".join(p for p in parts if p)

    def details(self) -> list[str]:
        """One line per kept example."""
        return [f"{kind}: {text}" for kind, texts in self.examples.items() for text in texts]

    def _example(self, kind: str, text: str) -> None:
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES:
            kept.append(text)


def check(ops: Iterable[Op]) -> Verdict:
    """Check a history (see the module docstring); pure: ``ops`` are not modified."""
    verdict = Verdict()
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.key is not None:
            by_key[op.key].append(op)
    verdict.sessions = len(by_key)
    for key_ops in by_key.values():
        _check_session(key_ops, verdict)
    return verdict


def _check_session(ops: Sequence[Op], verdict: Verdict) -> None:
    writes = [op for op in ops if op.kind in WRITES]
    reads = sorted(
        (op for op in ops if op.kind == "load" and op.status == "ok"), key=lambda op: op.invoke
    )
    verdict.writes += len(writes)
    verdict.reads += len(reads)
    by_value = {op.value: op for op in writes if op.kind != "delete" and op.value is not None}
    parent = {op.value: op.base for op in writes if op.kind == "save" and op.value is not None}

    def lineage(value: str | None) -> set[str]:
        """``value`` and every version it was derived from."""
        seen: set[str] = set()
        while value is not None and value not in seen:
            seen.add(value)
            value = parent.get(value)
        return seen

    acked = sorted(
        (op for op in writes if op.status == "ok" and op.complete is not None),
        key=lambda op: op.complete or 0.0,
    )
    acked_ends = [op.complete or 0.0 for op in acked]
    delete_invokes = sorted(op.invoke for op in writes if op.kind == "delete")
    lost: set[int] = set()
    undone: set[int] = set()
    # What each caller has seen of this session: (read's completion, version), in read order.
    seen_by: dict[int, list[tuple[float, str]]] = defaultdict(list)
    # The first read that found the session gone while a delete was pending: that delete was
    # applied then, whether or not it was acknowledged, and nothing may bring the session back.
    gone: tuple[float, Op] | None = None

    for read in reads:
        assert read.complete is not None
        before = acked[: bisect.bisect_left(acked_ends, read.invoke)]
        value = read.value
        # A delete invoked before the read returned may have been applied before it ran.
        delete_possible = bool(delete_invokes) and delete_invokes[0] < read.complete
        violated = False

        if value is not None:
            written = by_value.get(value)
            if written is None or written.status == "fail" or written.invoke > read.complete:
                why = (
                    "never written to this session"
                    if written is None
                    else "reported as not applied"
                    if written.status == "fail"
                    else "written only after the read returned"
                )
                verdict.phantoms += 1
                verdict._example("phantom read", f"{read.describe()}: {why}")
                _sweep(read, verdict)
                continue

        deletes = [w for w in before if w.kind == "delete"]
        if gone is not None and gone[0] < read.invoke and gone[1] not in deletes:
            deletes.append(gone[1])
        if deletes:
            if value is not None:
                for d in deletes:
                    if id(d) not in undone:
                        undone.add(id(d))
                        verdict.undone_deletes += 1
                        verdict.undone_acked_at.append(d.complete or d.invoke)
                        verdict._example("undone delete", f"{read.describe()} after {d.describe()}")
                violated = True
        else:
            ancestry = lineage(value)
            missing = [w for w in before if w.value not in ancestry]
            if value is None and delete_possible:
                missing = []
            # Charge the newest versions the read should have shown; their ancestors are
            # missing only because they are.
            charged = _newest(missing, parent)
            for w in charged:
                if id(w) not in lost:
                    lost.add(id(w))
                    verdict.lost += 1
                    verdict.lost_acked_at.append(w.complete or w.invoke)
                    if w.kind == "create":
                        verdict.lost_creates += 1
                    what = f"{read.describe()}: {w.describe()}"
                    verdict._example("lost acknowledged write", what)
            violated = bool(charged)

        if not violated and read.process != SWEEP:
            ancestry = lineage(value)
            earlier = [v for end, v in seen_by[read.process] if end < read.invoke]
            rolled_back = [v for v in earlier if v not in ancestry]
            if rolled_back and not (value is None and delete_possible):
                verdict.stale_reads += 1
                verdict._example(
                    "stale read", f"{read.describe()}: the same caller had read {rolled_back[-1]}"
                )
                violated = True
        if violated:
            _sweep(read, verdict)
        if value is None and delete_possible and not violated and gone is None:
            pending = [w for w in writes if w.kind == "delete" and w.invoke < read.complete]
            gone = (read.complete, min(pending, key=lambda w: w.invoke))
        if value is not None:
            seen_by[read.process].append((read.complete, value))


def _newest(missing: list[Op], parent: dict[str | None, str | None]) -> list[Op]:
    """The writes in ``missing`` that no other write in it was derived from."""
    if len(missing) <= 1:
        return missing
    below: set[str | None] = set()
    for w in missing:
        value = parent.get(w.value)
        hops = 0
        while value is not None and value not in below and hops < len(parent) + 1:
            below.add(value)
            value = parent.get(value)
            hops += 1
    return [w for w in missing if w.value not in below]


def _sweep(read: Op, verdict: Verdict) -> None:
    if read.process == SWEEP:
        verdict.sweep_violations += 1
