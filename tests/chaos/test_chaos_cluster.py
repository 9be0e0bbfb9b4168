"""Redis Cluster faults under continuous mixed load (issue 12): the store follows the cluster.

The same load, history check and hygiene as ``test_chaos.py`` (see its docstring), on the
session's real cluster of three masters and three replicas (``tests/cluster_servers.py``), with
one store opened on its seed nodes; the load also regenerates sessions now and then (the one
operation on two keys, so the one a migration answers with TRYAGAIN). Each scenario injects
one kind of fault:

- a master SIGKILLed: its replica is promoted by the cluster itself and the store finds it with
  no help from the application. Asynchronous replication may lose the writes the master
  acknowledged last: they are counted and reported, as for Sentinel, not failed. The killed node
  is then restarted under the load and rejoins as a replica of its successor;
- a master hung by SIGSTOP for longer than ``cluster-node-timeout``: the cluster fails it over;
  the store must serve every task again while the old master is still hung (it found a bug:
  a survey spent its whole deadline asking the hung node), and after SIGCONT the node must
  rejoin as a replica (lost writes reported, as above);
- slots migrated while their sessions are read and written: ``SETSLOT IMPORTING/MIGRATING``,
  ``MIGRATE`` one key at a time with pauses long enough for callers to be sent on by ASK, then
  ``SETSLOT NODE`` on every master (MOVED). Nothing may be lost or wrong, and a calm client
  sees no error at all;
- every client connection of one master killed (``CLIENT KILL TYPE normal``), again and again.

The slots to move are the slots of keys the load wrote, found by asking the masters which keys
they hold (``SCAN``, ``CLUSTER KEYSLOT``), never by recomputing the library's key layout.
Every scenario leaves the cluster ready for the next (``RedisCluster.reset``), even on failure.
Run them alone with ``-k cluster``.
"""

from __future__ import annotations

import functools
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.cluster_servers import RedisCluster, SlotMigration
from tests.servers import RedisProcess

from .client_faults import parse_kinds
from .load import Tally
from .test_chaos import (
    AFTER,
    CLIENT_MODES,
    CYCLES,
    FULL,
    SEED,
    TIMEOUT,
    WARM,
    assert_quiet_after,
    assert_sound,
    under_load,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(600 if FULL else 240)]

#: Bound on redirects in the store's config (issue 12's ``max_redirects``).
MAX_REDIRECTS = 5
#: Every task has had a call succeed within this long of the end of a fault.
RECOVERY = TIMEOUT + 2.0
#: The same after a failover, measured from the moment the replica had promoted itself.
PROMOTION_RECOVERY = 3.0
#: Share of the load's would-be saves that regenerate the session instead: regenerate writes
#: two keys of one slot, the only multi-key operation, which a migration answers with TRYAGAIN.
REGENERATE = 0.02
#: The load's share of deletes during a migration: low, so that a session lives a few seconds
#: (at the default, a tenth of a second), long enough to be used while its slot moves.
MIGRATION_DELETE_RATE = 0.003
#: Slots moved from each master to the next in one migration cycle.
SLOTS_PER_MASTER = 8 if FULL else 4
#: Keys per MIGRATE.
BATCH = 2
#: After each MIGRATE batch, wait until a caller was sent on by ASK, but no longer than this.
#: Short, and bounded per slot: a regenerate in a slot being moved gets TRYAGAIN until the
#: move ends (it creates a key; docs/cluster.md section 5), so a slot's move must end well
#: within ``redis.timeout`` for it not to fail by its deadline. (``redis-cli --cluster
#: reshard`` moves a slot of a few keys in milliseconds.)
ASK_WAIT = 0.3
#: All the pauses of one slot's move together: half of ``redis.timeout``.
SLOT_PAUSES = TIMEOUT / 2
#: ... and at least this long, so a batch is never followed at once by the next.
MIN_PAUSE = 0.05
#: CLIENT KILL rounds on the chosen master per cycle, and the pause between two.
KILLS = 10 if FULL else 3
KILL_PAUSE = 0.3


@pytest.fixture(params=CLIENT_MODES)
def client(request: pytest.FixtureRequest) -> frozenset[str]:
    """The client-side faults this run of the scenario injects (empty: a calm client)."""
    return parse_kinds(request.param)


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    """The session's cluster, ready and empty; made ready again after the scenario.

    The reset afterwards restarts a killed node, resumes a hung one and closes a half-done
    migration, so that one scenario failing does not fail the next.
    """
    redis_cluster.reset()
    try:
        yield redis_cluster
    finally:
        redis_cluster.reset()


def cluster_section(cluster: RedisCluster) -> dict[str, Any]:
    """The ``session.redis`` mapping for the store: every node a seed."""
    return {"cluster": {"nodes": cluster.seeds(), "max_redirects": MAX_REDIRECTS}}


def pick_master(cluster: RedisCluster, rnd: random.Random) -> tuple[RedisProcess, RedisProcess]:
    """A master chosen at random, and its replica."""
    master = rnd.choice(cluster.masters())
    (replica,) = cluster.replicas_of(master)
    return master, replica


def failure_span(tally: Tally, since: float) -> str:
    """The calls that failed from ``since`` on: how many, and when the last one ended."""
    ends = [end for began, end, outcome in tally.log if outcome == "failed" and began >= since]
    if not ends:
        return "no call failed"
    return f"{len(ends)} calls failed, the last ending {max(ends) - since:+.2f}s"


def errors_note(stats: Counter[str]) -> str:
    """The cluster's redirections and refusals, for the report."""
    kinds = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")
    return "server error replies: " + ", ".join(f"{k} {stats[k]}" for k in kinds)


# -- failover --------------------------------------------------------------------------------------


async def fail_over(
    cluster: RedisCluster, client: frozenset[str], *, fault: str, name: str
) -> Tally:
    """Kill or hang a master under the load, cycle after cycle; return the scenario's tally.

    Each cycle: the replicas acknowledge every write so far (``wait_streaming``: what is lost
    then was acknowledged during the cycle), the master is killed (or SIGSTOPped), the load
    waits for the replica to promote itself and for every task to be served again; the old
    master is brought back (restart, or SIGCONT) and must rejoin as a replica of its successor,
    the load still running.
    """
    cycles = 2 if FULL else 1
    rnd = random.Random(SEED)
    async with under_load(
        name, cluster_section(cluster), cluster.nodes, client=client, regenerate=REGENERATE
    ) as sc:
        for cycle in range(cycles):
            await anyio.sleep(WARM)
            victim, replica = await anyio.to_thread.run_sync(pick_master, cluster, rnd)
            await anyio.to_thread.run_sync(cluster.wait_streaming)
            began = sc.load.mark("fault")
            if fault == "kill":
                await anyio.to_thread.run_sync(victim.kill)
            else:
                victim.pause()
            try:
                promoted = await anyio.to_thread.run_sync(cluster.wait_promoted, replica)
                sc.load.mark("heal", at=promoted)
                # Served again while the old master is still hung (or dead): the store found
                # the promoted replica by itself.
                took = await sc.load.wait_recovered(PROMOTION_RECOVERY)
                served = f"every task served again {took:.2f}s after the promotion"
            finally:
                if fault != "kill":
                    victim.resume()
            back = time.monotonic()
            master = await anyio.to_thread.run_sync(cluster.rejoin, victim)
            what = "killed" if fault == "kill" else "hung (SIGSTOP)"
            sc.tally.notes.append(
                f"cycle {cycle}: master {victim.port} {what}; replica {replica.port} promoted "
                f"{promoted - began:.2f}s after; {served}; "
                f"{failure_span(sc.tally, began)} after the fault; "
                f"{victim.port} back as replica of {master.port} {time.monotonic() - back:.1f}s "
                f"after its {'restart' if fault == 'kill' else 'SIGCONT'}"
            )
            assert master is replica, f"{victim.port} rejoined {master.port}, not {replica.port}"
        await sc.calm()
        await anyio.sleep(AFTER)
        stats = await anyio.to_thread.run_sync(cluster.errorstats)
    sc.tally.notes.append(errors_note(stats))
    verdict = sc.tally.verdict
    assert verdict is not None
    sc.tally.notes.append(
        f"lost acknowledged writes: {sc.tally.lost} counted online; history: {verdict.summary()} "
        f"(asynchronous replication: reported, not failed)"
    )
    assert_sound(sc.tally, lost_allowed=True)
    if sc.calm_client and fault == "kill":
        # The pools were never full: a dead master must be reported as such. (A hung one does
        # hold every connection of its pool until the deadline: PoolTimeout is the truth.)
        assert "PoolTimeout" not in sc.tally.failure_kinds, sc.tally.failure_examples
    assert_quiet_after(sc.load, sc.tally)
    return sc.tally


async def test_cluster_master_sigkill(cluster: RedisCluster, client: frozenset[str]) -> None:
    """A master SIGKILLed: the cluster promotes its replica, writes resume, nothing is wrong."""
    await fail_over(cluster, client, fault="kill", name="cluster: master SIGKILL")


async def test_cluster_master_sigstop(cluster: RedisCluster, client: frozenset[str]) -> None:
    """A master hung past the node timeout: failed over; after SIGCONT it rejoins as replica."""
    await fail_over(cluster, client, fault="stop", name="cluster: master hung (SIGSTOP)")


# -- resharding ------------------------------------------------------------------------------------


def busiest_slot(
    master: RedisProcess, cluster: RedisCluster, rnd: random.Random, skip: Collection[int] = ()
) -> tuple[int, list[str]] | None:
    """The slot on ``master`` whose keys the load uses most now, and those keys.

    "Used" is ``OBJECT IDLETIME`` 0 (touched within the last second): the load reads and
    writes each live session many times a second, while what it leaves behind (a regenerated
    session's marker) stays idle. Ties go to the slot with fewer keys, then at random. Slots
    in ``skip`` are not chosen.
    """
    by_slot = {s: k for s, k in cluster.keys_by_slot(master).items() if s not in skip}
    keys = [key for slot_keys in by_slot.values() for key in slot_keys]
    pipe = master.admin().pipeline(transaction=False)
    for key in keys:
        pipe.object("idletime", key)
    idle = dict(zip(keys, pipe.execute(raise_on_error=False), strict=True))
    busy = {slot: [k for k in slot_keys if idle[k] == 0] for slot, slot_keys in by_slot.items()}
    ranked = sorted(by_slot, key=lambda s: (-len(busy[s]), len(by_slot[s]), rnd.random()))
    return (ranked[0], busy[ranked[0]]) if ranked else None


def move_busy_slot(
    cluster: RedisCluster,
    source: RedisProcess,
    target: RedisProcess,
    rnd: random.Random,
    pauses: Counter[str],
    skip: Collection[int],
) -> SlotMigration | None:
    """Move the busiest slot of ``source`` to ``target``, the keys in use first.

    Chosen just before it moves (a session lives a few seconds under this load), among the
    slots not in ``skip``.
    """
    found = busiest_slot(source, cluster, rnd, skip)
    if found is None:
        return None
    slot, busy = found
    return cluster.migrate_slot(slot, target, batch=BATCH, between=ask_pause(pauses), first=busy)


def ask_pause(stats: Counter[str]) -> Callable[[RedisProcess], None]:
    """A ``between`` for one ``migrate_slot``: wait until the source sent someone on by ASK.

    Each pause lasts at least ``MIN_PAUSE`` and at most ``ASK_WAIT`` (a session may not be
    used meanwhile), and all of them together at most ``SLOT_PAUSES``; ``stats`` counts the
    pauses that saw an ASK and those that did not.
    """
    spent = 0.0

    def asks(node: RedisProcess) -> int:
        info = node.admin().info("errorstats")
        return int(info.get("errorstat_ASK", {}).get("count", 0))

    def pause(source: RedisProcess) -> None:
        nonlocal spent
        before = asks(source)
        began = time.monotonic()
        limit = min(ASK_WAIT, SLOT_PAUSES - spent)
        try:
            time.sleep(max(0.0, min(MIN_PAUSE, limit)))
            while asks(source) == before:
                if time.monotonic() - began > limit:
                    stats["pauses without ASK"] += 1
                    return
                time.sleep(0.02)
            stats["pauses with ASK"] += 1
        finally:
            spent += time.monotonic() - began

    return pause


async def test_cluster_slot_migration(cluster: RedisCluster, client: frozenset[str]) -> None:
    """Slots moved while their sessions are used: ASK, then MOVED; nothing lost, nothing wrong.

    Issue 12's acceptance: 0 wrong answers, 0 lost writes, and (for a calm client) 0 errors
    seen by callers.
    """
    rnd = random.Random(SEED)
    pauses: Counter[str] = Counter()
    moves: list[SlotMigration] = []
    name = "cluster: slots migrated (ASK, MOVED)"
    section = cluster_section(cluster)
    async with under_load(
        name,
        section,
        cluster.nodes,
        client=client,
        regenerate=REGENERATE,
        delete_rate=MIGRATION_DELETE_RATE,
    ) as sc:
        for cycle in range(CYCLES):
            await anyio.sleep(WARM)
            masters = await anyio.to_thread.run_sync(cluster.masters)
            began = sc.load.mark("fault")
            done: list[SlotMigration] = []
            moved_slots: set[int] = set()
            # Round the ring of masters: each gives a slot to the next, and receives one.
            for _ in range(SLOTS_PER_MASTER):
                for i, source in enumerate(masters):
                    target = masters[(i + 1) % len(masters)]
                    move = functools.partial(
                        move_busy_slot, cluster, source, target, rnd, pauses, moved_slots
                    )
                    if (moved := await anyio.to_thread.run_sync(move)) is not None:
                        done.append(moved)
                        moved_slots.add(moved.slot)
            sc.load.mark("heal")
            await sc.load.wait_recovered(RECOVERY)
            moves += done
            sc.tally.notes.append(
                f"cycle {cycle}: {len(done)} slots, {sum(m.keys for m in done)} keys moved in "
                f"{time.monotonic() - began:.1f}s: "
                + ", ".join(f"{m.slot} {m.source}->{m.target} ({m.keys})" for m in done)
            )
        await sc.calm()
        await anyio.sleep(AFTER)
        stats = await anyio.to_thread.run_sync(cluster.errorstats)
    sc.tally.notes.append(errors_note(stats))
    sc.tally.notes.append(
        f"pauses after a batch: {pauses['pauses with ASK']} saw an ASK within {ASK_WAIT:g}s, "
        f"{pauses['pauses without ASK']} did not"
    )
    assert sum(m.keys for m in moves) > 0, "no key moved: the scenario tests nothing"
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)
    if sc.calm_client:
        assert stats["ASK"] > 0, "no caller was sent on by ASK: the scenario tests nothing"
        assert stats["MOVED"] > 0, "no caller met MOVED: the scenario tests nothing"
        # Redirections are the library's business: a caller never sees one.
        assert sc.tally.failed == 0, sc.tally.failure_examples


# -- connections -----------------------------------------------------------------------------------


async def test_cluster_client_kill_on_one_master(
    cluster: RedisCluster, client: frozenset[str]
) -> None:
    """Every client connection of one master killed, again and again: nothing is wrong."""
    rnd = random.Random(SEED)
    name = "cluster: CLIENT KILL TYPE normal on a master"
    killed = 0
    async with under_load(
        name, cluster_section(cluster), cluster.nodes, client=client, regenerate=REGENERATE
    ) as sc:
        for cycle in range(CYCLES):
            await anyio.sleep(WARM)
            victim, _ = await anyio.to_thread.run_sync(pick_master, cluster, rnd)
            began = sc.load.mark("fault")
            this_cycle = 0
            for _ in range(KILLS):
                this_cycle += await anyio.to_thread.run_sync(cluster.kill_clients, victim)
                await anyio.sleep(KILL_PAUSE)
            sc.load.mark("heal")
            took = await sc.load.wait_recovered(RECOVERY)
            killed += this_cycle
            sc.tally.notes.append(
                f"cycle {cycle}: {this_cycle} connections of master {victim.port} killed in "
                f"{KILLS} rounds; {failure_span(sc.tally, began)}; every task served again "
                f"{took:.2f}s after the last round"
            )
        await sc.calm()
        await anyio.sleep(AFTER)
    assert killed > 0, "no connection was killed: the scenario tests nothing"
    assert_sound(sc.tally)
    assert_quiet_after(sc.load, sc.tally)
