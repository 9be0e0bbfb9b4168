"""A store belongs to one event loop: another live loop is refused, a later ``asyncio.run`` works.

These tests run their own event loops (``asyncio.run`` in this thread and in others), so they
are plain functions, not anyio tests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from redis_session import SessionStore, UsageError, open_session_store
from redis_session._pool import NodePool

from .servers import RedisProcess

SECRET = "pool loops: a secret long enough to be taken seriously"


def _pools(store: SessionStore[Any]) -> list[NodePool]:
    return store._provider._manager._topology.pools()  # type: ignore[attr-defined, no-any-return]


def _run_in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread of its own (where it may call asyncio.run); return its result."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="second-thread")
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the thread hung"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def test_a_call_from_another_threads_loop_is_refused(redis: RedisProcess) -> None:
    """Used from a second event loop while its own still runs, the store raises UsageError.

    It used to hang for ever: the reply was delivered to a future of the other loop from the
    wrong thread, and that loop was never woken. The store keeps working on its own loop.
    """
    cfg = {"secret": SECRET, "redis": redis.redis_section(minimum_idle_connections=1)}
    opened = threading.Event()
    finish = threading.Event()
    box: dict[str, Any] = {}

    def owner() -> None:
        async def main() -> None:
            async with open_session_store(cfg) as store:
                box["store"] = store
                box["session"] = await store.create({"owner": True})
                opened.set()
                while not finish.is_set():  # noqa: ASYNC110 - a threading.Event
                    await asyncio.sleep(0.01)
                # Still fine on its own loop after the refused call.
                loaded = await store.load(box["session"].id)
                box["owner_loaded"] = loaded.data if loaded else None

        asyncio.run(main())

    thread = threading.Thread(target=owner, name="owner-thread")
    thread.start()
    try:
        assert opened.wait(10)
        store = box["store"]

        async def intruder() -> str:
            async with asyncio.timeout(5):  # the hang this test is about
                with pytest.raises(UsageError) as info:
                    await store.load(box["session"].id)
            return str(info.value)

        message = asyncio.run(intruder())
    finally:
        finish.set()
        thread.join(10)
    assert not thread.is_alive()
    assert "event loop" in message
    assert "'owner-thread'" in message
    assert "'MainThread'" in message
    assert f"{redis.host}:{redis.port}" in message
    assert box["owner_loaded"] == {"owner": True}


def test_a_store_is_reused_in_a_later_asyncio_run(
    redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """A store opened in one asyncio.run works in the next ones, with no error logged.

    The second run used to log an ERROR "maintenance had stopped (None)": the first loop had
    cancelled the pool's task before closing.
    """
    caplog.set_level(logging.DEBUG, logger="redis_session")
    cfg = {"secret": SECRET, "redis": redis.redis_section(minimum_idle_connections=2)}

    async def first() -> tuple[SessionStore[Any], str]:
        store = await open_session_store(cfg)
        session = await store.create({"run": 1})
        return store, session.id

    store, session_id = asyncio.run(first())

    async def again(run: int) -> None:
        session = await store.load(session_id)
        assert session is not None
        assert session.data["run"] == run - 1
        session.data["run"] = run
        await store.save(session)
        loop = asyncio.get_running_loop()
        for pool in _pools(store):
            assert pool._loop is loop
            # Nothing of the closed loop is left: every task and future is this loop's.
            assert all(t.get_loop() is loop for t in pool._tasks)
            assert pool._maintenance is not None
            assert pool._maintenance.get_loop() is loop
            assert all(p.future.get_loop() is loop for p in pool._queue)
            assert pool.statistics().open >= 1

    for run in (2, 3):
        asyncio.run(again(run))
    # And from a thread of its own, once the loops before it are closed.
    _run_in_thread(lambda: asyncio.run(again(4)))
    asyncio.run(store.aclose())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert "had stopped" not in caplog.text
    assert redis.our_clients("redis_session") == []


def test_a_loop_closed_without_cancelling_its_tasks_is_left_behind(redis: RedisProcess) -> None:
    """A loop closed with the pool's tasks still pending: the next loop starts the pool afresh.

    (``loop.close()`` without ``asyncio.run``'s clean-up.) Waking a parked worker of the
    closed loop used to raise "Event loop is closed" from every command.
    """
    cfg = {"secret": SECRET, "redis": redis.redis_section(minimum_idle_connections=2)}
    loop = asyncio.new_event_loop()
    try:

        async def first() -> tuple[SessionStore[Any], str]:
            store = await open_session_store(cfg)
            session = await store.create({"n": 1})
            return store, session.id

        store, session_id = loop.run_until_complete(first())
    finally:
        loop.close()

    async def second() -> None:
        try:
            session = await store.load(session_id)
            assert session is not None
            assert session.data == {"n": 1}
        finally:
            await store.aclose()

    asyncio.run(second())
    # What the closed loop still held (its tasks, their sockets) is garbage now: collect it
    # here, where its warnings are expected, not in whichever test runs next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_aclose_from_another_threads_loop_changes_nothing(redis: RedisProcess) -> None:
    """aclose() from a second live loop is refused before it marks the store closed.

    It used to mark the store closed first: the owner's loads then raised StoreClosed, its own
    aclose() raised the cached UsageError, and the connections stayed open.
    """
    cfg = {"secret": SECRET, "redis": redis.redis_section(minimum_idle_connections=2)}
    opened = threading.Event()
    finish = threading.Event()
    box: dict[str, Any] = {}

    def owner() -> None:
        async def main() -> None:
            store = await open_session_store(cfg)
            box["store"] = store
            box["session"] = await store.create({"owner": True})
            opened.set()
            while not finish.is_set():  # noqa: ASYNC110 - a threading.Event
                await asyncio.sleep(0.01)
            loaded = await store.load(box["session"].id)
            box["owner_loaded"] = loaded.data if loaded else None
            await store.aclose()
            box["clients_after_close"] = len(redis.our_clients())

        asyncio.run(main())

    thread = threading.Thread(target=owner, name="owner-thread")
    thread.start()
    try:
        assert opened.wait(10)

        async def intruder() -> None:
            async with asyncio.timeout(5):
                with pytest.raises(UsageError, match="event loop"):
                    await box["store"].aclose()

        asyncio.run(intruder())
    finally:
        finish.set()
        thread.join(10)
    assert not thread.is_alive()
    assert box["owner_loaded"] == {"owner": True}
    assert box["clients_after_close"] == 0
