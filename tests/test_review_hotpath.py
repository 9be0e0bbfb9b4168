"""Adversarial review of the store's hot path (issue 14, second round), on real servers.

LOAD and SAVE are packed by a ``%`` template and sent with a NOSCRIPT fallback; the LOAD reply
has a fast path; Record is no longer frozen; load skips ``_find``. These tests drive those paths
against a real redis-server and the harness cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from redis_session import open_session_store
from redis_session._slots import key_slot
from redis_session._wire import pack

from .cluster_servers import _start_node
from .servers import RedisProcess
from .store_helpers import Backend

pytestmark = pytest.mark.anyio

OLD = "an older secret that is also long enough to be taken seriously"


def _flush_scripts(backend: Backend) -> None:
    raw: Any = backend.raw
    if backend.kind == "cluster":
        raw.execute_command("SCRIPT", "FLUSH", target_nodes=raw.ALL_NODES)
    else:
        raw.script_flush()


async def test_noscript_after_flush_load_and_save(backend: Backend) -> None:
    """SCRIPT FLUSH between every step: the packed EVALSHA falls back to EVAL each time."""
    if backend.kind == "memory":
        return
    store = await backend.open()
    s = await store.create({"n": 0})
    for n in range(1, 4):
        await anyio.to_thread.run_sync(_flush_scripts, backend)
        loaded = await store.load(s.id)
        assert loaded is not None
        assert loaded.data == {"n": n - 1}
        await anyio.to_thread.run_sync(_flush_scripts, backend)
        loaded.data["n"] = n
        await store.save(loaded)
    again = await store.load(s.id)
    assert again is not None
    assert again.data == {"n": 3}


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"pct": "%s%d%%%b" * 50, "crlf": "\r\n$5\r\nhello\r\n*3\r\n"},
        {"raw": b"%s\r\n" * 1000, "nul": "\x00" * 100},
        {"big": "x%" * 300_000},
    ],
)
async def test_odd_payloads_round_trip(backend: Backend, data: dict[str, Any]) -> None:
    """Payloads full of format specifiers and RESP framing, or large, survive load and save."""
    store = await backend.open(maximum_data_size=8 * 1024 * 1024)
    s = await store.create(dict(data))
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.data == data
    loaded.data["extra"] = "%%\r\n"
    await store.save(loaded)
    again = await store.load(s.id)
    assert again is not None
    assert again.data == {**data, "extra": "%%\r\n"}
    # And a second save from the reloaded session (its version came from the fast path).
    again.data["extra"] = ""
    await store.save(again)
    final = await store.load(s.id)
    assert final is not None
    assert final.data == {**data, "extra": ""}


async def test_user_session_load_save_keeps_user(backend: Backend) -> None:
    """A session of a user (a 7-entry LOAD reply) keeps its user and public id through save."""
    store = await backend.open()
    s = await store.create({"a": 1}, user="alice")
    assert s.public_id is not None
    loaded = await store.load(s.id)
    assert loaded is not None
    assert loaded.public_id == s.public_id
    assert loaded._user is not None
    loaded.data["a"] = 2
    await store.save(loaded)
    again = await store.load(s.id)
    assert again is not None
    assert again.data == {"a": 2}
    assert again.public_id == s.public_id
    listed = await store.list_sessions("alice")
    assert [x.public_id for x in listed] == [s.public_id]


async def test_rotation_two_key_names(backend: Backend) -> None:
    """Sessions written under the old secret load (two key names) and move on save."""
    old = await backend.open(secret=OLD)
    s = await old.create({"v": "old"})
    rotated = await backend.open(secret=backend.config()["secret"], previous_secrets=[OLD])
    if backend.kind != "memory":
        await anyio.to_thread.run_sync(_flush_scripts, backend)
    loaded = await rotated.load(s.id)
    assert loaded is not None
    assert loaded.data == {"v": "old"}
    loaded.data["v"] = "new"
    await rotated.save(loaded)
    again = await rotated.load(s.id)
    assert again is not None
    assert again.data == {"v": "new"}
    # The session moved to its new key name: one record left.
    assert len(backend.records()) == 1


@pytest.fixture
def lone_node(tmp_path: Path) -> Iterator[RedisProcess]:
    """A cluster of one node serving slots 0-8000 only (full coverage not required)."""
    node = _start_node(tmp_path, ["cluster-require-full-coverage no"])
    try:
        admin: Any = node.admin()
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8000)
        yield node
    finally:
        node.stop()


async def _cluster_ok(node: RedisProcess) -> None:
    def state() -> bool:
        admin: Any = node.admin()
        info = admin.execute_command("CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    for _ in range(200):
        if await anyio.to_thread.run_sync(state):
            return
        await anyio.sleep(0.05)
    raise AssertionError("the lone node never reported cluster_state:ok")


async def test_write_to_a_slot_the_map_left_unassigned(lone_node: RedisProcess) -> None:
    """A slot assigned after the map was read: the write that lands is acknowledged once.

    The map of the store's open leaves slots 8001-16383 without a master (``writers[slot]``
    is None); the command goes to ``_orphan``'s pool, which now serves the slot and runs it.
    The reply check compared ``topology.writer(slot)`` (the same orphan pool) before; it now
    reads ``cluster.writers[slot]`` (None), so a write that ran is treated as "stopped being
    the master" and resent.
    """
    await _cluster_ok(lone_node)
    cfg = {
        "secret": "hot path review: a secret long enough to be taken seriously",
        "redis": {
            "cluster": {"nodes": [{"host": lone_node.host, "port": lone_node.port}]},
            "timeout": "3s",
        },
    }
    async with open_session_store(cfg) as store:
        provider: Any = store._provider
        manager = provider.manager
        key = b"rs:review:{x}"
        slot = key_slot(key)
        assert slot > 8000
        topology: Any = manager._topology
        assert topology.writers[slot] is None
        admin: Any = lone_node.admin()
        await anyio.to_thread.run_sync(
            lambda: admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 8001, 16383)
        )
        resent: list[bool] = []
        reply = await manager.execute_packed(pack("INCR", key), slot=slot, resent=resent)
        # INCR ran once: acknowledged on its first reply, not resent.
        assert reply == 1, reply
        assert resent == []
        stored = await anyio.to_thread.run_sync(lambda: lone_node.admin().get(key))
        assert stored in (b"1", "1"), stored


async def test_noscript_on_the_node_a_slot_moves_to(redis_cluster: Any) -> None:
    """Mid-migration (ASK) and after it (MOVED), the target's empty script cache is no error."""
    redis_cluster.reset()
    cfg = {
        "secret": "hot path review: a secret long enough to be taken seriously",
        "redis": {"cluster": {"nodes": redis_cluster.seeds()}, "timeout": "5s"},
    }
    async with open_session_store(cfg) as store:
        sessions = [await store.create({"n": 0}) for _ in range(3)]
        s = sessions[0]
        slot = key_slot(s._key)
        source = redis_cluster.master_of_slot(slot)
        target = next(m for m in redis_cluster.masters() if m is not source)
        rounds: list[int] = []

        async def touch() -> None:
            loaded = await store.load(s.id)
            assert loaded is not None
            loaded.data["n"] += 1
            await store.save(loaded)
            rounds.append(loaded.data["n"])

        def between(_source: Any) -> None:
            for node in redis_cluster.nodes:
                node.admin().script_flush()
            anyio.from_thread.run(touch)

        await anyio.to_thread.run_sync(
            lambda: redis_cluster.migrate_slot(slot, target, between=between)
        )
        for node in redis_cluster.nodes:
            await anyio.to_thread.run_sync(node.admin().script_flush)
        await touch()
        final = await store.load(s.id)
        assert final is not None
        assert final.data == {"n": len(rounds)}
        for other in sessions[1:]:
            assert (await store.load(other.id)) is not None
    redis_cluster.reset()


async def test_user_session_through_a_rotation(backend: Backend) -> None:
    """A session of a user written under the old secret loads, saves (moves) and stays listed."""
    old = await backend.open(secret=OLD)
    s = await old.create({"a": "%s\r\n"}, user="bob")
    rotated = await backend.open(
        secret=backend.config()["secret"], previous_secrets=[OLD], index_secret=OLD
    )
    loaded = await rotated.load(s.id)
    assert loaded is not None
    assert loaded.public_id == s.public_id
    loaded.data["a"] = "%d"
    await rotated.save(loaded)
    again = await rotated.load(s.id)
    assert again is not None
    assert again.data == {"a": "%d"}
    assert again.public_id == s.public_id
    again.data["a"] = "third"
    await rotated.save(again)
    final = await rotated.load(s.id)
    assert final is not None
    assert final.data == {"a": "third"}
    listed = await rotated.list_sessions("bob")
    assert [x.public_id for x in listed] == [s.public_id]
