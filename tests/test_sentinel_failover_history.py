"""Graceful Sentinel failover while the application's own event loop stalls: check the history.

Under concurrent creates and deletes, ``SENTINEL FAILOVER`` is sent and the event loop is then
blocked (``time.sleep`` inside a task: a slow handler, a GC pause) for a while, so the client
reads the sentinels' news late, after the replica was already promoted. Every operation is
recorded (invoke, ok or fail, id, value). Once the failover is over the old master is demoted
the way Sentinel would demote it seconds later (``REPLICAOF`` the new master, which discards
what it alone acknowledged), and the history is checked through the store:

- every acknowledged create still loads, with its value, unless a delete of it was also
  acknowledged (lost creates);
- no acknowledged delete is undone (the deleted session loads again).

``REDIS_SESSION_FAILOVER_ROUNDS`` sets how many failovers each test runs (the acceptance run
is 20; the default keeps the suite short). Each round takes about 4 s here.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import attrs
import pytest

from redis_session import RedisSessionError, SessionStore, open_session_store

from .servers import SentinelCluster

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SECRET = "failover history: a secret long enough to be taken seriously"
ROUNDS = int(os.environ.get("REDIS_SESSION_FAILOVER_ROUNDS", "3"))
WRITERS = 48
#: How long the load goes on after every sentinel names the new master.
AFTERWARDS = 0.8


@attrs.define
class Op:
    """One recorded operation: what was asked, and how it ended (None while in flight)."""

    kind: str  # "create" or "delete"
    value: int
    session_id: str | None = None
    outcome: str | None = None  # "ok" or "fail"


@attrs.define
class Verdict:
    """The history check of one failover round."""

    creates_ok: int = 0
    deletes_ok: int = 0
    failed: int = 0
    lost: list[int] = attrs.Factory(list)
    undone: list[int] = attrs.Factory(list)


async def run_load(store: SessionStore[Any], history: list[Op], stop: anyio.Event) -> None:
    """Creates and deletes from ``WRITERS`` tasks until ``stop``; every call is recorded."""
    counter = iter(range(10**9))

    async def writer(w: int) -> None:
        rng = random.Random(w)
        mine: list[tuple[Any, Op]] = []
        while not stop.is_set():
            if mine and rng.random() < 0.35:
                session, created = mine.pop(rng.randrange(len(mine)))
                op = Op("delete", created.value, session.id)
                history.append(op)
                try:
                    await store.delete(session)
                except RedisSessionError:
                    op.outcome = "fail"
                else:
                    op.outcome = "ok"
                continue
            op = Op("create", next(counter))
            history.append(op)
            try:
                session = await store.create({"v": op.value})
            except RedisSessionError:
                op.outcome = "fail"
            else:
                op.outcome, op.session_id = "ok", session.id
                mine.append((session, op))

    async with anyio.create_task_group() as tg:
        for w in range(WRITERS):
            tg.start_soon(writer, w)


async def check(store: SessionStore[Any], history: list[Op]) -> Verdict:
    """Load every session the history says must exist, or must not (64 loads at a time)."""
    verdict = Verdict()
    delete_tried = {op.session_id for op in history if op.kind == "delete"}
    verdict.failed = sum(1 for op in history if op.outcome == "fail")
    done = [op for op in history if op.outcome == "ok" and op.session_id is not None]
    verdict.creates_ok = sum(1 for op in done if op.kind == "create")
    verdict.deletes_ok = len(done) - verdict.creates_ok

    async def look(op: Op) -> None:
        assert op.session_id is not None
        if op.kind == "create" and op.session_id in delete_tried:
            return  # deleted, or maybe deleted: either answer is right
        loaded = await store.load(op.session_id)
        if op.kind == "create" and (loaded is None or loaded.data != {"v": op.value}):
            verdict.lost.append(op.value)
        elif op.kind == "delete" and loaded is not None:
            verdict.undone.append(op.value)

    async def looker(ops: list[Op]) -> None:
        for op in ops:
            await look(op)

    async with anyio.create_task_group() as tg:
        for i in range(64):
            tg.start_soon(looker, done[i::64])
    return verdict


@contextmanager
def selected_slave_signal(cluster: SentinelCluster, seen: anyio.Event) -> Iterator[None]:
    """Set ``seen`` (from a thread) when a sentinel publishes ``+selected-slave``."""
    token = anyio.lowlevel.current_token()
    done = threading.Event()
    subscribers = [s.admin().pubsub() for s in cluster.sentinels]
    for sub in subscribers:
        sub.subscribe("+selected-slave")

    def watch() -> None:
        while not done.is_set():
            for sub in subscribers:
                message = sub.get_message(ignore_subscribe_messages=True, timeout=0.01)
                if message is not None:
                    anyio.from_thread.run_sync(seen.set, token=token)
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5)
        for sub in subscribers:
            sub.close()


async def failover_round(
    cluster: SentinelCluster, store: SessionStore[Any], *, stall: float, when: str
) -> tuple[Verdict, str]:
    """One graceful failover under load with a loop stall ``when`` (``command``/``selected``)."""
    await anyio.to_thread.run_sync(cluster.wait_settled)
    old = cluster.master_address()
    old_node = cluster.node_at(old)
    new_node = next(n for n in cluster.data_nodes if n is not old_node)
    history: list[Op] = []
    stop = anyio.Event()
    selected = anyio.Event()
    with selected_slave_signal(cluster, selected):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_load, store, history, stop)
            await anyio.sleep(0.3)
            leader = cluster.sentinels[0].admin()
            await anyio.to_thread.run_sync(
                leader.execute_command, "SENTINEL", "FAILOVER", cluster.name
            )
            if when == "selected":
                with anyio.fail_after(5):
                    await selected.wait()
            time.sleep(stall)  # noqa: ASYNC251 - the point: the whole loop stalls here
            await anyio.to_thread.run_sync(cluster.first_switch, old)
            await anyio.sleep(AFTERWARDS)
            stop.set()
    # What Sentinel does to a returning old master some 8 s later, now: it becomes a replica
    # of the new one, discarding whatever it alone acknowledged.
    await anyio.to_thread.run_sync(cluster.demote, old_node, (new_node.host, new_node.port))
    verdict = await check(store, history)
    return verdict, f"{old_node.port}->{new_node.port}"


@pytest.mark.parametrize(
    ("stall", "when"),
    [(0.8, "command"), (0.2, "command"), (0.5, "command"), (1.5, "command"), (0.8, "selected")],
)
async def test_graceful_failover_with_a_stalled_loop_loses_nothing(
    sentinel_cluster: SentinelCluster,
    capsys: pytest.CaptureFixture[str],
    stall: float,
    when: str,
) -> None:
    """No acknowledged create is lost and no acknowledged delete undone across failovers."""
    cluster = sentinel_cluster
    section = cluster.redis_section()
    verdicts = []
    async with open_session_store({"secret": SECRET, "redis": section}) as store:
        for n in range(ROUNDS):
            began = time.monotonic()
            verdict, moved = await failover_round(cluster, store, stall=stall, when=when)
            verdicts.append(verdict)
            with capsys.disabled():
                print(
                    f"\n[failover history] stall {stall}s after {when}, round {n + 1}/{ROUNDS} "
                    f"{moved}: {verdict.creates_ok} creates and {verdict.deletes_ok} deletes "
                    f"acknowledged, {verdict.failed} failed; lost {len(verdict.lost)}, "
                    f"undone {len(verdict.undone)} ({time.monotonic() - began:.1f}s)"
                )
    assert all(v.creates_ok > 0 and v.deletes_ok > 0 for v in verdicts)
    assert [len(v.lost) for v in verdicts] == [0] * ROUNDS
    assert [len(v.undone) for v in verdicts] == [0] * ROUNDS
