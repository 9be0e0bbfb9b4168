"""Stalls of the event loop, and the time they excuse.

A deadline measures the node, not us. When the event loop itself was blocked (a slow request
handler, a synchronous call, a GC pause), replies sat unread and nothing could be sent: that
time is ours. Each pool's maintenance task notices a stall (its timer ran late) and records it
here, one ledger per event loop, so that every deadline taken before the stall can be moved on
by it: the commands the pool holds at that moment (``NodePool._postpone``), and the later steps
of a call that began before it (EVAL after NOSCRIPT, a resend, a create restamped by the
server's clock), whose deadline the connection manager moves on by :meth:`StallLedger.since`,
and a connect that timed out in a stall (tried again).
"""

from __future__ import annotations

import asyncio
import weakref

#: A timer that runs this much later than asked means the event loop was blocked.
STALL = 0.2
#: Most stalls one deadline is moved on for: with a loop blocked over and over, a node that
#: stopped answering must still fail its commands.
MAX_EXCUSED = 2
#: Stalls older than this are forgotten (no call lasts that long).
_KEEP = 120.0
_MAX_KEPT = 16


class StallLedger:
    """The recent stalls of one event loop, as (start, end) in loop time, oldest first."""

    __slots__ = ("__weakref__", "_stalls", "last_end")

    def __init__(self) -> None:
        self._stalls: list[tuple[float, float]] = []
        #: When the newest stall ended (loop time; 0.0 for none): every command compares its
        #: start with it, an attribute read where :meth:`since` is a call.
        self.last_end = 0.0

    def record(self, start: float, end: float) -> None:
        """Note that the loop was blocked from ``start`` to ``end``.

        Every pool's maintenance task sees the same stall, each with its own edges: overlapping
        reports are one stall.
        """
        stalls = self._stalls
        if stalls and start <= stalls[-1][1]:
            first, last = stalls[-1]
            stalls[-1] = (min(first, start), max(last, end))
        else:
            stalls.append((start, end))
        while stalls and (len(stalls) > _MAX_KEPT or stalls[0][1] < end - _KEEP):
            del stalls[0]
        self.last_end = stalls[-1][1]

    def ended_after(self, moment: float) -> bool:
        """Whether the last stall ended after ``moment``."""
        stalls = self._stalls
        return bool(stalls) and stalls[-1][1] > moment

    def since(self, moment: float) -> float:
        """Return how long the loop was blocked after ``moment`` (the last few stalls only)."""
        stalls = self._stalls
        if not stalls or stalls[-1][1] <= moment:
            return 0.0  # the usual case, on every command: no stall since the call began
        total = 0.0
        for start, end in stalls[: -MAX_EXCUSED - 1 : -1]:  # the newest MAX_EXCUSED, newest first
            if end <= moment:
                break
            total += end - max(start, moment)
        return total


_ledgers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StallLedger] = (
    weakref.WeakKeyDictionary()
)


def ledger(loop: asyncio.AbstractEventLoop) -> StallLedger:
    """Return the stall ledger of ``loop`` (one per loop, gone with it)."""
    found = _ledgers.get(loop)
    if found is None:
        found = _ledgers[loop] = StallLedger()
    return found
