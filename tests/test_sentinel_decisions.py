"""The Sentinel topology's decisions as a table: (view, observation) -> (view, action).

The functions are pure (no I/O, no clock), so every branch is checked here directly; the
behaviour they add up to is checked against real servers in ``test_sentinel*.py``.
"""

from __future__ import annotations

import attrs
import pytest

from redis_session._fence import (
    FENCE_LIMIT,
    Fence,
    Superseded,
    View,
    on_answers,
    on_event,
    on_installed,
    on_role,
)
from redis_session._sentinel import Address, Answer, Event

OLD = ("127.0.0.1", 7001)
NEW = ("127.0.0.1", 7002)
THIRD = ("127.0.0.1", 7003)
NOW = 100.0


def answer(master: tuple[str, int] | None, epoch: int, *, failover: bool = False) -> Answer:
    return Answer("s", master=master, epoch=epoch, failover=failover)


def fenced(*, promoted: bool = False, until: float = NOW + FENCE_LIMIT) -> View:
    """On NEW, fenced away from OLD, which is superseded with no bound yet."""
    return View(
        writer=NEW,
        fence=Fence(OLD, NEW, until, promoted=promoted),
        superseded={OLD: Superseded(NEW)},
        epoch=1,
    )


# -- events ---------------------------------------------------------------------------------------


def test_selected_slave_of_our_master_switches_at_once_behind_an_unpromoted_fence() -> None:
    """+selected-slave naming our writer: write to the chosen replica now, old one superseded."""
    view, switch = on_event(View(writer=OLD, epoch=1), Event("selected", NEW, OLD), NOW)
    assert switch == NEW
    assert view.writer == NEW
    assert view.fence == Fence(OLD, NEW, NOW + FENCE_LIMIT, promoted=False)
    assert view.superseded == {OLD: Superseded(NEW)}


def test_promoted_or_switched_for_our_master_switch_with_a_promoted_fence() -> None:
    """Read late (the loop stalled), +promoted-slave/+switch-master still switch at once."""
    for kind in ("promoted", "switched"):
        view, switch = on_event(View(writer=OLD), Event(kind, NEW, OLD), NOW)
        assert switch == NEW
        assert view.fence is not None
        assert view.fence.promoted


def test_events_about_the_writer_itself_or_another_master_change_nothing() -> None:
    """Old news (the node is already the writer) and other masters' events are left to surveys."""
    start = fenced()
    for event in (
        Event("promoted", NEW, OLD),  # the fenced node is already the writer
        Event("selected", THIRD, OLD),  # about a master we have left
        Event("switched", THIRD, ("127.0.0.1", 7999)),
    ):
        assert on_event(start, event, NOW) == (start, None)


def test_a_failover_back_to_a_superseded_master_through_events_is_followed() -> None:
    """A later failover to the old master (events name it) un-supersedes it."""
    view, switch = on_event(fenced(promoted=True), Event("selected", OLD, NEW), NOW)
    assert switch == OLD
    assert view.writer == OLD
    assert view.superseded == {NEW: Superseded(OLD)}


def test_abort_before_promotion_lets_the_old_master_back() -> None:
    """-failover-abort-* about the fenced master drops the fence and the supersession."""
    view, switch = on_event(fenced(), Event("aborted", None, OLD), NOW)
    assert switch is None
    assert view.fence is None
    assert view.superseded == {}
    assert view.writer == NEW  # until a survey verifies OLD again


def test_abort_after_promotion_or_about_another_master_is_ignored() -> None:
    """Once promoted, the old master's writes would be discarded anyway: no way back."""
    promoted = fenced(promoted=True)
    assert on_event(promoted, Event("aborted", None, OLD), NOW) == (promoted, None)
    unpromoted = fenced()
    assert on_event(unpromoted, Event("aborted", None, THIRD), NOW) == (unpromoted, None)


# -- surveys --------------------------------------------------------------------------------------


def test_sentinels_still_naming_the_superseded_master_are_not_followed() -> None:
    """The flap of issue 9: after promotion the sentinels name OLD (new epoch) until they switch."""
    view, ranked = on_answers(fenced(promoted=True), [answer(OLD, 2), answer(OLD, 2)])
    assert ranked == []
    assert view.epoch == 2
    assert view.fence is not None  # kept until the sentinels name NEW


def test_sentinels_naming_the_successor_end_the_fence_and_bound_the_old_master() -> None:
    """+switch-master seen in a survey: the fence ends; OLD needs an epoch above 2 to return."""
    view, ranked = on_answers(fenced(promoted=True), [answer(NEW, 2), answer(OLD, 1)])
    assert ranked == [NEW]
    assert view.fence is None
    assert view.superseded == {OLD: Superseded(NEW, bound=2)}
    assert view.blocked(OLD, 2)
    assert not view.blocked(OLD, 3)


def test_a_superseded_master_named_with_a_newer_epoch_is_a_candidate_again() -> None:
    """A later failover back to OLD (epoch 3 > bound 2) is followed through surveys too."""
    start = View(writer=NEW, superseded={OLD: Superseded(NEW, bound=2)}, epoch=2)
    view, ranked = on_answers(start, [answer(OLD, 3), answer(NEW, 2)])
    assert ranked == [OLD, NEW]
    assert view.epoch == 3


def test_candidates_rank_by_epoch_then_votes_with_the_hint_first() -> None:
    """Newest epoch first, then most sentinels; an event's hint goes first unless superseded."""
    answers = [answer(OLD, 1), answer(OLD, 1), answer(THIRD, 2)]
    assert on_answers(View(), answers)[1] == [THIRD, OLD]
    assert on_answers(View(), [answer(OLD, 1), answer(OLD, 1), answer(THIRD, 1)])[1] == [
        OLD,
        THIRD,
    ]
    assert on_answers(View(), answers, hint=NEW)[1] == [NEW, THIRD, OLD]
    assert on_answers(fenced(), answers, hint=OLD)[1] == [THIRD]
    assert on_answers(View(), [Answer("s", "unreachable")])[1] == []


# -- roles and the fence's end --------------------------------------------------------------------


def test_role_master_marks_the_fence_promoted_with_a_fresh_limit() -> None:
    """ROLE master on the fenced node: promoted, and the limit restarts from now."""
    view = on_role(fenced(), "master", failing_over=True, now=NOW + 1)
    assert view.fence == Fence(OLD, NEW, NOW + 1 + FENCE_LIMIT, promoted=True)


def test_an_unpromoted_fence_within_its_limit_holds() -> None:
    """Still a replica, within the limit: nothing changes."""
    start = fenced()
    assert on_role(start, "slave", failing_over=False, now=NOW + 1) == start


def test_an_overdue_unpromoted_fence_waits_while_a_sentinel_is_failing_over() -> None:
    """Past the limit but a sentinel still reports the failover: going back could lose writes."""
    start = fenced(until=NOW)
    assert on_role(start, "slave", failing_over=True, now=NOW + 1) == start


def test_an_overdue_unpromoted_fence_ends_and_the_old_master_may_return() -> None:
    """Past the limit, no failover in progress, never promoted: OLD is a candidate again."""
    view = on_role(fenced(until=NOW), "slave", failing_over=False, now=NOW + 1)
    assert view.fence is None
    assert view.superseded == {}


def test_an_overdue_promoted_fence_ends_with_the_old_master_behind_every_epoch_seen() -> None:
    """Promoted but never named by the sentinels: the fence ends, OLD stays behind epoch 1."""
    view = on_role(fenced(promoted=True, until=NOW), None, failing_over=False, now=NOW + 1)
    assert view.fence is None
    assert view.superseded == {OLD: Superseded(NEW, bound=1)}
    start = View(writer=NEW)
    assert on_role(start, "master", failing_over=False, now=NOW) == start


# -- installs -------------------------------------------------------------------------------------


def test_installing_a_survey_candidate_supersedes_the_writer_it_replaces() -> None:
    """A master found by a survey (the old one died) replaces the writer, which is superseded."""
    view = on_installed(View(writer=OLD, superseded={NEW: Superseded(OLD, 1)}), NEW)
    assert view.writer == NEW
    assert view.superseded == {OLD: Superseded(NEW)}
    assert on_installed(View(), OLD) == View(writer=OLD)


# -- the whole table: every branch of every decision ----------------------------------------------

FENCE_OLD_NEW = Fence(OLD, NEW, NOW + FENCE_LIMIT)
LATER = NOW + FENCE_LIMIT + 1

EVENTS = [
    # (id, view before, event, view after (None: unchanged), node to switch to)
    ("abort without a fence", View(writer=OLD), Event("aborted", None, OLD), None, None),
    ("abort of a promoted fence", fenced(promoted=True), Event("aborted", None, OLD), None, None),
    ("abort of another master", fenced(), Event("aborted", None, THIRD), None, None),
    (
        "abort of the fenced master",
        fenced(),
        Event("aborted", None, OLD),
        View(writer=NEW, epoch=1),
        None,
    ),
    ("event naming no node", View(writer=OLD), Event("switched", None, OLD), None, None),
    ("the writer named again", fenced(), Event("promoted", NEW, OLD), None, None),
    ("about another master", View(writer=OLD), Event("selected", NEW, THIRD), None, None),
    (
        "selected away from the writer",
        View(writer=OLD),
        Event("selected", NEW, OLD),
        View(writer=NEW, fence=FENCE_OLD_NEW, superseded={OLD: Superseded(NEW)}),
        NEW,
    ),
    (
        "switched away from the writer, read late",
        View(writer=OLD, superseded={NEW: Superseded(OLD, 3)}),
        Event("switched", NEW, OLD),
        View(
            writer=NEW,
            fence=attrs.evolve(FENCE_OLD_NEW, promoted=True),
            superseded={OLD: Superseded(NEW)},
        ),
        NEW,
    ),
]


@pytest.mark.parametrize(
    ("before", "event", "after", "switch"), [e[1:] for e in EVENTS], ids=[e[0] for e in EVENTS]
)
def test_event_table(
    before: View, event: Event, after: View | None, switch: Address | None
) -> None:
    """on_event: each branch, with the view it leaves and the node it switches writes to."""
    view, node = on_event(before, event, NOW)
    assert view == (before if after is None else after)
    if after is None:
        assert view is before  # the caller tells "nothing changed" by identity
    assert node == switch


ANSWERS = [
    # (id, view before, answers, hint, view after, ranked)
    ("no answer names a master", View(), [Answer("s", "unknown")], None, View(), []),
    (
        "epoch learned, the newest ranks first",
        View(),
        [answer(OLD, 1), answer(OLD, 1), answer(THIRD, 2)],
        None,
        View(epoch=2),
        [THIRD, OLD],
    ),
    (
        "votes break an epoch tie",
        View(),
        [answer(THIRD, 1), answer(OLD, 1), answer(OLD, 1)],
        None,
        View(epoch=1),
        [OLD, THIRD],
    ),
    (
        "an older epoch seen before stays",
        View(epoch=5),
        [answer(OLD, 1)],
        None,
        View(epoch=5),
        [OLD],
    ),
    (
        "the hint goes first",
        View(),
        [answer(OLD, 1)],
        NEW,
        View(epoch=1),
        [NEW, OLD],
    ),
    (
        "a hint also named moves up",
        View(),
        [answer(OLD, 2), answer(NEW, 1)],
        NEW,
        View(epoch=2),
        [NEW, OLD],
    ),
    (
        "a superseded hint is dropped",
        fenced(),
        [answer(THIRD, 1)],
        OLD,
        fenced(),
        [THIRD],
    ),
    (
        "successor not named: no bound yet",
        fenced(promoted=True),
        [answer(OLD, 2)],
        None,
        attrs.evolve(fenced(promoted=True), epoch=2),
        [],
    ),
    (
        "successor named: bound set, promoted fence ends",
        fenced(promoted=True),
        [answer(NEW, 2), answer(OLD, 1)],
        None,
        View(writer=NEW, superseded={OLD: Superseded(NEW, 2)}, epoch=2),
        [NEW],
    ),
    (
        "an existing bound only grows",
        View(writer=NEW, superseded={OLD: Superseded(NEW, 4)}, epoch=4),
        [answer(NEW, 3)],
        None,
        View(writer=NEW, superseded={OLD: Superseded(NEW, 4)}, epoch=4),
        [NEW],
    ),
    (
        "superseded master above its bound is a candidate",
        View(writer=NEW, superseded={OLD: Superseded(NEW, 2)}, epoch=2),
        [answer(OLD, 3), answer(NEW, 2)],
        None,
        View(writer=NEW, superseded={OLD: Superseded(NEW, 2)}, epoch=3),
        [OLD, NEW],
    ),
    (
        "an unpromoted fence stays though its node ranks first",
        fenced(),
        [answer(NEW, 2)],
        None,
        attrs.evolve(fenced(), superseded={OLD: Superseded(NEW, 2)}, epoch=2),
        [NEW],
    ),
    (
        "a promoted fence stays while another node ranks first",
        fenced(promoted=True),
        [answer(THIRD, 3), answer(NEW, 2)],
        None,
        attrs.evolve(fenced(promoted=True), superseded={OLD: Superseded(NEW, 2)}, epoch=3),
        [THIRD, NEW],
    ),
]


@pytest.mark.parametrize(
    ("before", "answers", "hint", "after", "ranked"),
    [a[1:] for a in ANSWERS],
    ids=[a[0] for a in ANSWERS],
)
def test_answers_table(
    before: View, answers: list[Answer], hint: Address | None, after: View, ranked: list[Address]
) -> None:
    """on_answers: epochs and bounds learned, candidates ranked, a caught-up fence ended."""
    assert on_answers(before, answers, hint) == (after, ranked)


ROLES = [
    # (id, view before, role, failing over, now, view after)
    ("no fence", View(writer=NEW), "master", False, LATER, View(writer=NEW)),
    (
        "promoted now",
        fenced(),
        "master",
        False,
        NOW + 1,
        attrs.evolve(fenced(), fence=Fence(OLD, NEW, NOW + 1 + FENCE_LIMIT, promoted=True)),
    ),
    ("unpromoted, within the limit", fenced(), "slave", False, NOW + 1, fenced()),
    ("role unknown, within the limit", fenced(), None, False, NOW + 1, fenced()),
    (
        "promoted, within the limit",
        fenced(promoted=True),
        None,
        False,
        NOW + 1,
        fenced(promoted=True),
    ),
    ("overdue, still failing over", fenced(), "slave", True, LATER, fenced()),
    (
        "overdue, never promoted",
        fenced(),
        "slave",
        False,
        LATER,
        View(writer=NEW, epoch=1),
    ),
    (
        "overdue, never promoted, old master no longer superseded",
        attrs.evolve(fenced(), superseded={}),
        None,
        False,
        LATER,
        View(writer=NEW, epoch=1),
    ),
    (
        "overdue promoted, never named: bound at the newest epoch",
        fenced(promoted=True),
        None,
        False,
        LATER,
        View(writer=NEW, superseded={OLD: Superseded(NEW, 1)}, epoch=1),
    ),
    (
        "overdue promoted, already bound: the bound stays",
        attrs.evolve(fenced(promoted=True), superseded={OLD: Superseded(NEW, 0)}),
        None,
        True,
        LATER,
        View(writer=NEW, superseded={OLD: Superseded(NEW, 0)}, epoch=1),
    ),
    (
        "overdue promoted, old master not superseded",
        attrs.evolve(fenced(promoted=True), superseded={}),
        "master",
        False,
        LATER,
        View(writer=NEW, epoch=1),
    ),
]


@pytest.mark.parametrize(
    ("before", "role", "failing_over", "now", "after"),
    [r[1:] for r in ROLES],
    ids=[r[0] for r in ROLES],
)
def test_role_table(
    before: View, role: str | None, failing_over: bool, now: float, after: View
) -> None:
    """on_role: promotion noticed, a fence held, an overdue fence given up either way."""
    assert on_role(before, role, failing_over, now) == after


INSTALLS = [
    # (id, view before, installed node, view after)
    ("first writer", View(), OLD, View(writer=OLD)),
    ("the same writer again", View(writer=OLD), OLD, View(writer=OLD)),
    (
        "a new writer supersedes the old",
        View(writer=OLD, superseded={NEW: Superseded(OLD, 1)}),
        NEW,
        View(writer=NEW, superseded={OLD: Superseded(NEW)}),
    ),
    (
        "other supersessions are kept",
        View(writer=OLD, superseded={THIRD: Superseded(OLD, 1)}),
        NEW,
        View(writer=NEW, superseded={THIRD: Superseded(OLD, 1), OLD: Superseded(NEW)}),
    ),
]


@pytest.mark.parametrize(
    ("before", "addr", "after"), [i[1:] for i in INSTALLS], ids=[i[0] for i in INSTALLS]
)
def test_installed_table(before: View, addr: Address, after: View) -> None:
    """on_installed: the verified candidate becomes the writer; its predecessor superseded."""
    assert on_installed(before, addr) == after


BLOCKED = [
    # (id, superseded entry, epoch the sentinel names it with, blocked)
    ("not superseded", None, 1, False),
    ("no bound yet", Superseded(NEW), 9, True),
    ("no epoch given (an event)", Superseded(NEW, 1), None, True),
    ("at the bound", Superseded(NEW, 2), 2, True),
    ("above the bound", Superseded(NEW, 2), 3, False),
]


@pytest.mark.parametrize(
    ("entry", "epoch", "blocked"), [b[1:] for b in BLOCKED], ids=[b[0] for b in BLOCKED]
)
def test_blocked_table(entry: Superseded | None, epoch: int | None, blocked: bool) -> None:
    """View.blocked: a superseded master may write again only above its bound."""
    view = View(superseded={} if entry is None else {OLD: entry})
    assert view.blocked(OLD, epoch) is blocked
