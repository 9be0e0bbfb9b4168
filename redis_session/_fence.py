"""The Sentinel topology's decisions: a pure state machine over what the client knows.

A :class:`View` holds the writer, the fence (writes moved to a replica chosen for promotion)
and the masters a failover moved away from (*superseded*: never the writer again unless the
sentinels name them with a newer epoch, or an event moves back to them). Four functions take one
observation each and return the next view: :func:`on_event` (a failover event),
:func:`on_answers` (a survey), :func:`on_role` (the fenced node's role, or the clock) and
:func:`on_installed` (a surveyed candidate verified and made the writer). No I/O and no clock of
their own (``now`` is passed in): ``_topology`` does the I/O around them, and
``tests/test_sentinel_decisions.py`` checks them as a table.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ._sentinel import Address, Answer, Event

__all__ = [
    "FENCE_LIMIT",
    "Fence",
    "Superseded",
    "View",
    "on_answers",
    "on_event",
    "on_installed",
    "on_role",
]

#: A fence that has not seen its replica promoted by then is dropped.
FENCE_LIMIT = 5.0


@attrs.frozen
class Fence:
    """Writes go to ``new``, chosen for promotion away from ``old``.

    Until ``promoted`` the fence holds writes back (READONLY). It ends when the sentinels name
    ``new``; at ``until`` it is reconsidered (see :func:`on_role`).
    """

    old: Address
    new: Address
    until: float
    promoted: bool = False


@attrs.frozen
class Superseded:
    """A master a failover moved away from, to ``successor``.

    The sentinels name it again with the failover's epoch until they switch, so it may be the
    writer again only when named with an epoch above ``bound``: the newest epoch seen naming
    the successor (None until they name it: never).
    """

    successor: Address
    bound: int | None = None


@attrs.frozen
class View:
    """What the client knows about the topology; only the ``on_*`` functions change it."""

    writer: Address | None = None
    fence: Fence | None = None
    superseded: dict[Address, Superseded] = attrs.field(factory=dict)
    #: Newest config epoch any sentinel reported.
    epoch: int = -1

    def blocked(self, addr: Address, epoch: int | None = None) -> bool:
        """Whether ``addr``, named by a sentinel with ``epoch``, must not become the writer."""
        old = self.superseded.get(addr)
        return old is not None and (old.bound is None or epoch is None or epoch <= old.bound)


def on_event(view: View, event: Event, now: float) -> tuple[View, Address | None]:
    """Take in a failover event: return the new view and the node to make the writer now."""
    fence = view.fence
    if event.kind == "aborted":
        if fence is None or fence.promoted or event.master != fence.old:
            return view, None
        # The old master stays master: it may be the writer again (after ROLE says so).
        kept = {a: s for a, s in view.superseded.items() if a != fence.old}
        return attrs.evolve(view, fence=None, superseded=kept), None
    node = event.node
    if node is None or node == view.writer or event.master != view.writer:
        return view, None  # old news, or about a master we do not use (a survey follows it)
    # A failover away from our writer has begun: from now on it may acknowledge writes that
    # the promotion discards, so writes go to the chosen node before any other await.
    superseded = {a: s for a, s in view.superseded.items() if a != node}
    superseded[event.master] = Superseded(node)
    promoted = event.kind != "selected"
    fence = Fence(event.master, node, now + FENCE_LIMIT, promoted=promoted)
    return attrs.evolve(view, writer=node, fence=fence, superseded=superseded), node


def on_answers(
    view: View, answers: Iterable[Answer], hint: Address | None = None
) -> tuple[View, list[Address]]:
    """Take in a survey: learn epochs; return the candidates allowed to write, best first.

    Ranked by the newest epoch naming them, then by how many sentinels do; ``hint`` (from an
    event, newer than any answer) first. A fence ends once the sentinels rank its node first.
    """
    answers = [a for a in answers if a.master is not None]
    epoch = max([view.epoch, *(a.epoch for a in answers)])
    superseded = dict(view.superseded)
    for addr, old in view.superseded.items():
        named = [a.epoch for a in answers if a.master == old.successor]
        if named:
            bound = max(named) if old.bound is None else max(old.bound, *named)
            superseded[addr] = attrs.evolve(old, bound=bound)
    view = attrs.evolve(view, epoch=epoch, superseded=superseded)
    scores: dict[Address, tuple[int, int]] = {}
    for a in answers:
        assert a.master is not None
        if not view.blocked(a.master, a.epoch):
            best, votes = scores.get(a.master, (-1, 0))
            scores[a.master] = (max(best, a.epoch), votes + 1)
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)
    if hint is not None and not view.blocked(hint):
        ranked = [hint, *(a for a in ranked if a != hint)]
    fence = view.fence
    if fence is not None and fence.promoted and ranked[:1] == [fence.new]:
        view = attrs.evolve(view, fence=None)  # the sentinels have caught up
    return view, ranked


def on_role(view: View, role: str | None, failing_over: bool, now: float) -> View:
    """Mark the fenced node promoted, or give an overdue fence up.

    ``role`` is the fenced node's (None: not asked, or it failed); ``failing_over`` whether a
    sentinel still reports a failover in progress.
    """
    fence = view.fence
    if fence is None:
        return view
    if not fence.promoted and role == "master":
        return attrs.evolve(view, fence=attrs.evolve(fence, promoted=True, until=now + FENCE_LIMIT))
    if now <= fence.until:
        return view
    superseded = dict(view.superseded)
    if not fence.promoted:
        if failing_over:
            return view  # the sentinels may still promote it: going back could lose writes
        superseded.pop(fence.old, None)  # never promoted: the old master is still the master
    else:
        old = superseded.get(fence.old)
        if old is not None and old.bound is None:
            # Promoted, but the sentinels never named it: the old master stays behind every
            # epoch seen so far (the failover's own is among them once it was promoted).
            superseded[fence.old] = attrs.evolve(old, bound=view.epoch)
    return attrs.evolve(view, fence=None, superseded=superseded)


def on_installed(view: View, addr: Address) -> View:
    """Make a candidate a survey verified the writer; the one it replaces is superseded."""
    superseded = {a: s for a, s in view.superseded.items() if a != addr}
    if view.writer is not None and view.writer != addr:
        superseded[view.writer] = Superseded(addr)
    return attrs.evolve(view, writer=addr, superseded=superseded)
