"""A routed read that is cancelled while one of its two halves fails.

Under read routing, ``load`` reads the replica and slides the TTL on the master at once. When
the caller's cancel scope fires while one half fails (a replica that just died), the caller must
see its own cancellation, caught by its own scope: found by the client-fault chaos runs, where
the cancellation escaped the scope and ended the caller's whole task.
"""

from __future__ import annotations

import asyncio
import random

import anyio
import anyio.to_thread
import pytest

from redis_session import SessionStore, StoreUnavailable, open_session_store
from redis_session._redis_provider import _both

from .servers import SentinelCluster

pytestmark = pytest.mark.anyio


async def _fails_when_cancelled() -> None:
    """A half that turns its cancellation into an error, as a dying connection's read can."""
    try:
        await anyio.sleep(10)
    except BaseException:
        raise StoreUnavailable("the replica went away") from None


async def _fails_at_once() -> None:
    raise StoreUnavailable("the replica went away")


async def _ignores_cancel_briefly() -> None:
    """A half that finishes its cleanup before it ends (a bounded, shielded close)."""
    try:
        await anyio.sleep(10)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.02)


@pytest.mark.parametrize(
    "halves",
    [
        (_fails_when_cancelled, _ignores_cancel_briefly),
        (_ignores_cancel_briefly, _fails_when_cancelled),
        (_fails_when_cancelled, _fails_when_cancelled),
    ],
    ids=["first-fails", "second-fails", "both-fail"],
)
async def test_the_callers_scope_catches_its_own_cancellation(halves: tuple) -> None:
    """An anyio scope that fires while a half fails catches the cancellation: nothing leaks."""
    first, second = halves
    with anyio.move_on_after(0.05) as scope:
        await _both(first(), second())
    assert scope.cancelled_caught


async def _fails_soon() -> None:
    await anyio.sleep(0.05)
    raise StoreUnavailable("the master did not answer")


async def test_the_scope_fires_while_the_sibling_of_a_failure_winds_down() -> None:
    """One half fails for real, the other is cancelled and closes; the scope fires meanwhile."""
    with anyio.move_on_after(0.07) as scope:
        await _both(_fails_soon(), _ignores_cancel_briefly())
    assert scope.cancelled_caught


async def test_inside_a_shield_the_real_failure_is_raised() -> None:
    """Cleanup under a shield, after the caller was cancelled: the failure, not a cancellation."""
    outcome: BaseException | None = None
    with anyio.move_on_after(0.01) as scope:
        try:
            await anyio.sleep(1)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await _both(_fails_soon(), anyio.sleep(0.1))
                except StoreUnavailable as exc:
                    outcome = exc
    assert scope.cancelled_caught
    assert isinstance(outcome, StoreUnavailable)


async def test_an_asyncio_timeout_becomes_timeouterror() -> None:
    """The same with asyncio's own timeout: the caller gets the TimeoutError it asked for."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await _both(_fails_when_cancelled(), _ignores_cancel_briefly())


async def test_without_a_cancellation_the_real_failure_is_raised() -> None:
    """No cancellation: the failing half's own error reaches the caller, not a group."""
    with pytest.raises(StoreUnavailable, match="went away"):
        await _both(_fails_at_once(), anyio.sleep(10))


async def test_loads_cancelled_while_the_replica_dies_stay_in_their_scopes(
    sentinel_cluster: SentinelCluster,
) -> None:
    """Real servers: routed loads, each under a short scope, while the replica is killed.

    Every cancellation is caught by the scope that caused it; the calls that did finish
    return the session or a library error, and the tasks doing them all live to the end.
    """
    cluster = sentinel_cluster
    await anyio.to_thread.run_sync(cluster.wait_streaming)
    section = cluster.redis_section()
    section["high_availability"] = {**section["high_availability"], "route_randomly": True}
    store: SessionStore = await open_session_store(
        {"secret": "s" * 32, "redis": section, "inactivity": "1h"}
    )
    rnd = random.Random(7)
    finished = {"caught": 0, "ok": 0, "unavailable": 0}
    try:
        session = await store.create({"n": 1})
        await anyio.to_thread.run_sync(cluster.wait_replica_synced)
        stop = anyio.Event()

        async def reader() -> None:
            while not stop.is_set():
                # Half the loads are abandoned within 4 ms, the others run to the end.
                limit = rnd.random() * 0.004 if rnd.random() < 0.5 else None
                with anyio.move_on_after(limit) as scope:
                    try:
                        loaded = await store.load(session.id)
                    except StoreUnavailable:
                        finished["unavailable"] += 1
                    else:
                        assert loaded is not None
                        assert loaded.data == {"n": 1}
                        finished["ok"] += 1
                if scope.cancelled_caught:
                    finished["caught"] += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as group:
            for _ in range(32):
                group.start_soon(reader)
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(cluster.replica.kill)
            await anyio.sleep(1.5)
            stop.set()
    finally:
        await store.aclose()
    assert finished["caught"] > 0, finished
    assert finished["ok"] > 0, finished
