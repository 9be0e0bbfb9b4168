"""The history checker on hand-made histories: what it must accept, and what it must flag.

Times are plain numbers; each op is ``(invoke, complete)``. Process 0 owns the session unless
a test says otherwise; ``SWEEP`` reads come from the final sweep.
"""

from __future__ import annotations

from tests.chaos.history import SWEEP, History, Op, Status, Verdict, check

SID = "session-a"


class H:
    """A tiny builder: ``h.create(0, 1, "v0")``, ``h.save(2, 3, "v1", base="v0")``..."""

    def __init__(self) -> None:
        self.history = History()

    def _op(
        self,
        kind: str,
        start: float,
        end: float | None,
        value: str | None,
        status: Status,
        *,
        base: str | None = None,
        process: int = 0,
        key: str = SID,
    ) -> Op:
        op = self.history.invoke(process, kind, key, value, start, base=base)  # type: ignore[arg-type]
        if end is not None:
            History.finish(op, status, end, value=value)
        return op

    def create(self, start: float, end: float, value: str, status: Status = "ok") -> Op:
        return self._op("create", start, end, value, status)

    def save(
        self, start: float, end: float | None, value: str, *, base: str, status: Status = "ok"
    ) -> Op:
        return self._op("save", start, end, value, status, base=base)

    def delete(self, start: float, end: float | None, status: Status = "ok") -> Op:
        return self._op("delete", start, end, None, status)

    def load(self, start: float, end: float, value: str | None, *, process: int = 0) -> Op:
        return self._op("load", start, end, value, "ok", process=process)

    def check(self) -> Verdict:
        return check(self.history.ops)


def only(verdict: Verdict, **expected: int) -> None:
    """Every violation counter is 0 except those named, which have the given values."""
    counters = ["lost", "lost_creates", "undone_deletes", "stale_reads", "phantoms"]
    counters.append("sweep_violations")
    got = {name: getattr(verdict, name) for name in counters}
    want = {name: expected.get(name, 0) for name in counters}
    assert got == want, verdict.details()


# -- histories that must pass --------------------------------------------------------------------


def test_a_sequential_life_passes() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.load(2, 3, "v0")
    h.save(4, 5, "v1", base="v0")
    h.load(6, 7, "v1")
    h.delete(8, 9)
    h.load(10, 11, None)
    h.load(99, 100, None, process=SWEEP)  # a sweep read is an ordinary read, just marked
    verdict = h.check()
    assert verdict.ok, verdict.details()
    assert (verdict.reads, verdict.writes, verdict.sessions) == (4, 3, 1)
    assert verdict.summary() == "ok"


def test_a_read_overlapping_a_write_may_see_either_version() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 6, "v1", base="v0")
    h.load(3, 4, "v0")  # invoked before the save was acknowledged
    h.load(5, 7, "v0")
    h.load(5.5, 8, "v1")
    only(h.check())


def test_a_read_invoked_exactly_at_the_ack_is_concurrent() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 5, "v1", base="v0")
    h.load(5, 6, "v0")  # invoke == ack: not strictly after it
    only(h.check())


def test_a_write_of_unknown_outcome_may_or_may_not_show() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0", status="info")  # cancelled: maybe applied, maybe later
    h.load(4, 5, "v0")
    h.load(6, 7, "v1")  # it landed late
    h.save(8, 9, "v2", base="v1")
    h.load(10, 11, "v2")
    only(h.check())


def test_a_write_still_in_flight_may_show() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, None, "v1", base="v0", status="info")  # never completed
    h.load(3, 4, "v1")
    only(h.check())


def test_a_pending_delete_may_or_may_not_have_run() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.delete(2, 3, status="info")  # failed: unknown
    h.load(4, 5, "v0")
    h.delete(6, 7)  # the retry is acknowledged
    h.load(8, 9, None)
    only(h.check())


def test_a_read_before_the_create_returned_may_find_nothing() -> None:
    h = H()
    h.create(0, 3, "v0")
    h.load(1, 2, None)
    only(h.check())


def test_another_callers_older_read_is_not_a_stale_read() -> None:
    # Monotonic reads are promised per caller; across callers only acknowledged writes count.
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0", status="info")
    h.load(4, 5, "v1", process=1)
    h.load(6, 7, "v0", process=2)
    only(h.check())


def test_a_failed_write_whose_retry_succeeded_does_not_confuse_the_tree() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0", status="fail")  # conflict: certainly not applied
    h.load(4, 5, "v0")
    h.save(6, 7, "v2", base="v0")
    h.load(8, 9, "v2")
    only(h.check())


# -- histories that must be flagged --------------------------------------------------------------


def test_a_vanished_session_is_a_lost_create() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.load(2, 3, None)
    verdict = h.check()
    only(verdict, lost=1, lost_creates=1)
    assert not verdict.ok
    assert verdict.summary() == "VIOLATED: 1 lost acked"


def test_a_rolled_back_save_is_a_lost_write_counted_once() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0")
    h.load(4, 5, "v0")
    h.load(6, 7, "v0")
    verdict = h.check()
    only(verdict, lost=1)
    assert "v1" in verdict.examples["lost acknowledged write"][0]


def test_a_late_write_of_unknown_outcome_cannot_overwrite_an_acknowledged_one() -> None:
    # v1 and v2 both replace v0; once v2 is acknowledged, v1's compare-and-set can never
    # succeed: reading v1 means v2 was lost.
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0", status="info")
    h.load(4, 5, "v0")
    h.save(6, 7, "v2", base="v0")
    h.load(8, 9, "v1")
    only(h.check(), lost=1)


def test_a_fork_of_two_acknowledged_saves_is_found_by_the_sweep() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0")
    h.save(4, 5, "v2", base="v0")  # only possible if v1 was lost
    h.load(10, 11, "v2", process=SWEEP)
    verdict = h.check()
    only(verdict, lost=1, sweep_violations=1)
    assert "v1" in verdict.examples["lost acknowledged write"][0]


def test_the_sweep_flags_a_session_that_no_longer_loads() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0")
    h.load(10, 11, None, process=SWEEP)
    only(h.check(), lost=1, sweep_violations=1)  # charged to v1, the newest, only


def test_a_session_read_after_its_acknowledged_delete_is_an_undone_delete() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.delete(2, 3)
    h.load(4, 5, "v0")
    h.load(6, 7, "v0", process=SWEEP)
    verdict = h.check()
    only(verdict, undone_deletes=1, sweep_violations=1)
    assert verdict.summary() == "VIOLATED: 1 deletes undone"


def test_a_delete_seen_applied_then_undone_is_flagged_even_unacknowledged() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.delete(2, 3, status="info")
    h.load(4, 5, None)  # the delete ran
    h.load(6, 7, "v0", process=1)  # ...and was undone
    only(h.check(), undone_deletes=1)


def test_a_version_older_than_one_the_caller_read_is_a_stale_read() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0", status="info")
    h.load(4, 5, "v1")  # applied...
    h.load(6, 7, "v0")  # ...and rolled back
    verdict = h.check()
    only(verdict, stale_reads=1)
    assert verdict.summary() == "VIOLATED: 1 stale reads"


def test_reading_a_value_never_written_is_a_phantom() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.load(2, 3, "someone-else's")
    only(h.check(), phantoms=1)


def test_reading_a_write_reported_as_not_applied_is_a_phantom() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.save(2, 3, "v1", base="v0", status="fail")
    h.load(4, 5, "v1")
    only(h.check(), phantoms=1)


def test_reading_a_write_invoked_after_the_read_returned_is_a_phantom() -> None:
    h = H()
    h.create(0, 1, "v0")
    h.load(2, 3, "v1")
    h.save(4, 5, "v1", base="v0")
    only(h.check(), phantoms=1)


def test_sessions_are_checked_separately() -> None:
    h = H()
    h.create(0, 1, "v0")
    h._op("create", 0, 1, "w0", "ok", key="session-b")
    h._op("load", 2, 3, "w0", "ok", key="session-b")
    h.load(2, 3, "w0")  # session-b's value read under session-a's id
    verdict = h.check()
    only(verdict, phantoms=1)
    assert verdict.sessions == 2


def test_a_create_that_never_returned_is_not_tracked() -> None:
    h = H()
    op = h.history.invoke(0, "create", None, "v0", 0.0)
    History.finish(op, "info", 1.0)
    assert h.history.session_ids() == []
    assert h.check().sessions == 0
