"""The Sentinel topology's decisions as a table: (view, observation) -> (view, action).

The functions are pure (no I/O, no clock), so every branch is checked here directly; the
behaviour they add up to is checked against real servers in ``test_sentinel*.py``.
"""

from __future__ import annotations

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
from redis_session._sentinel import Answer, Event

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
