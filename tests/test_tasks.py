"""The task supervisor and the backoff, with real asyncio tasks (no Redis needed).

Each stubborn behaviour is a real coroutine: one that swallows the first cancellation (what
redis-py's ``wait_for`` can do on Python 3.11), one that never ends, a close that must not be
cut short, a caller cancelled while it waits for the cleanup.
"""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest

from redis_session._backoff import Backoff
from redis_session._tasks import Supervisor, gather_all

pytestmark = pytest.mark.anyio


async def test_a_task_that_swallows_the_first_cancellation_is_cancelled_again() -> None:
    """The loop goes on after its first cancellation; aclose cancels it again until it ends."""
    tasks = Supervisor(timeout=5.0, recancel=0.02)
    swallowed = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            swallowed.append(True)  # lost, as in wait_for on 3.11: the loop goes on
        await asyncio.sleep(60)

    task = tasks.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await tasks.aclose()
    assert swallowed == [True]
    assert task.cancelled()
    assert tasks.running() == []


async def test_a_task_that_hangs_past_the_bound_is_left_and_aclose_returns() -> None:
    """Bounded: a task that ignores every cancellation is still running when aclose returns."""
    tasks = Supervisor(timeout=0.3, recancel=0.05)
    release = asyncio.Event()
    cancels = 0

    async def hang() -> None:
        nonlocal cancels
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancels += 1

    task = tasks.spawn(hang(), name="hang")
    await asyncio.sleep(0)
    await tasks.aclose()
    assert not task.done()
    assert tasks.running() == [task]
    assert cancels > 1  # cancelled again while the bound lasted
    release.set()
    await task


async def test_a_caller_cancelled_during_cleanup_waits_for_it_then_is_cancelled() -> None:
    """Shielded: the close finishes though the caller is cancelled; then the caller sees it."""
    tasks = Supervisor(timeout=5.0)
    closed = asyncio.Event()
    may_finish = asyncio.Event()

    async def close() -> None:
        await may_finish.wait()
        closed.set()

    caller = asyncio.create_task(tasks.aclose(lambda: [close()]))
    await asyncio.sleep(0.01)
    caller.cancel()
    await asyncio.sleep(0.05)
    assert not caller.done()  # still waiting for the close, cancellation held back
    may_finish.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert closed.is_set()


async def test_an_anyio_cancel_scope_does_not_cut_the_cleanup_short() -> None:
    """The cleanup runs to its end inside a cancelled anyio scope too."""
    tasks = Supervisor(timeout=5.0)
    finished = []

    async def close() -> None:
        await asyncio.sleep(0.05)
        finished.append(True)

    with anyio.CancelScope() as scope:
        scope.cancel()
        await tasks.aclose(lambda: [close()])
    assert finished == [True]


async def test_a_timeout_around_aclose_fires_after_the_cleanup() -> None:
    """asyncio.timeout's cancellation is held back, then raised as the TimeoutError it is."""
    tasks = Supervisor(timeout=5.0)
    finished = []

    async def close() -> None:
        await asyncio.sleep(0.1)
        finished.append(True)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await tasks.aclose(lambda: [close()])
    assert finished == [True]


async def test_finish_and_once_tasks_keep_their_cleanup_and_closes_wait_for_cancel_tasks() -> None:
    """``finish`` is never cancelled, ``once`` only once; closing() runs after ``cancel`` ends."""
    tasks = Supervisor(timeout=5.0, recancel=0.01)
    order: list[str] = []

    async def closer() -> None:
        await asyncio.sleep(0.05)
        order.append("finish done")

    async def opening() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0.05)  # a cleanup longer than the re-cancel interval
            order.append("once cleaned up")

    async def loop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            order.append("cancel ended")

    async def close() -> None:
        order.append("closing started")

    tasks.spawn(closer(), name="closer", on_close="finish")
    once = tasks.spawn(opening(), name="opening", on_close="once")
    tasks.spawn(loop(), name="loop")
    await asyncio.sleep(0)
    await tasks.aclose(lambda: [close()])
    assert once.cancelled()
    assert order.index("cancel ended") < order.index("closing started")
    assert sorted(order) == ["cancel ended", "closing started", "finish done", "once cleaned up"]
    assert tasks.running() == []


async def test_tasks_spawned_during_cleanup_are_waited_for() -> None:
    """A close begun by a task winding down is waited for too."""
    tasks = Supervisor(timeout=5.0)
    done = []

    async def late_close() -> None:
        await asyncio.sleep(0.05)
        done.append(True)

    async def loop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            tasks.spawn(late_close(), name="late", on_close="finish")

    tasks.spawn(loop(), name="loop")
    await asyncio.sleep(0)
    await tasks.aclose()
    assert done == [True]


async def test_a_task_that_fails_is_logged_once_with_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No "exception was never retrieved": the failure is logged, naming the task."""
    tasks = Supervisor()

    async def fail() -> None:
        raise ValueError("boom")

    task = tasks.spawn(fail(), name="redis_session doomed")
    await asyncio.wait({task})
    await asyncio.sleep(0)
    failures = [r for r in caplog.records if "redis_session doomed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    assert tasks.running() == []


async def test_abandon_forgets_every_task() -> None:
    """After abandon() (their loop closed) aclose has nothing to wait for."""
    tasks = Supervisor()
    task = tasks.spawn(asyncio.sleep(60), name="sleeper")
    tasks.abandon()
    assert tasks.running() == []
    await tasks.aclose()
    assert not task.done()
    task.cancel()


async def test_gather_all_re_raises_the_callers_own_cancellation() -> None:
    """Cancelled: the children are cancelled and awaited; the caller's exception comes back."""
    children: list[asyncio.Task[None]] = []

    async def child() -> None:
        children.append(asyncio.current_task())  # type: ignore[arg-type]
        await asyncio.sleep(60)

    caller = asyncio.create_task(gather_all([child(), child()]))
    await asyncio.sleep(0.01)
    caller.cancel("ours")
    with pytest.raises(asyncio.CancelledError) as info:
        await caller
    assert info.value.args == ("ours",)
    assert len(children) == 2
    assert all(c.cancelled() for c in children)
    assert await gather_all([asyncio.sleep(0, "a"), asyncio.sleep(0, "b")]) == ["a", "b"]
    assert await gather_all([]) == []


# -- backoff --------------------------------------------------------------------------------------


def test_backoff_doubles_from_low_to_high_and_resets() -> None:
    """low, 2*low, ... capped at high; reset starts again at low; at rest it is false."""
    backoff = Backoff(0.1, 0.5)
    assert not backoff
    assert backoff.delay == 0.0
    assert [backoff.failed() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff
    assert backoff.delay == 0.5
    backoff.reset()
    assert not backoff
    assert backoff.failed() == 0.1
    assert "0.1" in repr(backoff)


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_refuses_bounds_that_make_no_sense(low: float, high: float) -> None:
    with pytest.raises(ValueError, match="low"):
        Backoff(low, high)
