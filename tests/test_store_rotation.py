"""Secret rotation under concurrency: a load racing with the save that moves a session.

Issue 9, findings 2 and 5. ``load`` used to look the id up under the current key name and then
under each previous secret's name in separate round trips; the first save after a rotation
moves the record from the old name to the new one, so a load that straddled the move found it
under neither (and each lookup got a fresh ``redis.timeout``). Now every name is looked up in
one script: one round trip, atomic against the move.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from redis_session._store import SessionStore

from .store_helpers import SECRET, Backend

pytestmark = pytest.mark.anyio

OLD = "the secret before the rotation"


async def test_load_racing_with_the_move_finds_the_session(backend: Backend) -> None:
    """Loads started just before the save that moves a session all find it (none get None).

    Before the fix 19 of 20 such loads returned None on Redis (the load's first lookup ran
    before the move, its second after it).
    """
    before = await backend.open(secret=OLD)
    rotated = await backend.open(secret=SECRET, previous_secrets=[OLD])
    # A second process (its own connections) also loading during the move.
    other = await backend.open(secret=SECRET, previous_secrets=[OLD])
    sessions = [await before.create({"n": n}) for n in range(40)]
    missing = []
    for n, session in enumerate(sessions):
        handle = await rotated.load(session.id)
        assert handle is not None
        results: list[Any] = []

        async def load(
            reader: SessionStore[Any], sid: str = session.id, into: list[Any] = results
        ) -> None:
            into.append(await reader.load(sid))

        async def save(delay: int = n % 4, handle: Any = handle) -> None:
            # 0-3 turns of the event loop later: the move lands between, or after, the
            # load's commands.
            for _ in range(delay):
                await anyio.lowlevel.checkpoint()
            handle.data["moved"] = True
            await rotated.save(handle)

        async with anyio.create_task_group() as group:
            group.start_soon(load, rotated)
            group.start_soon(load, other)
            group.start_soon(save)
        if any(loaded is None for loaded in results):
            missing.append(n)
        for loaded in results:
            assert loaded is None or loaded.data["n"] == n
    assert missing == [], f"{len(missing)} of {len(sessions)} sessions read as logged out"
    # All moved: only the new key names are left, and the new secret alone reads them.
    new_only = await backend.open(secret=SECRET)
    for n, session in enumerate(sessions):
        loaded = await new_only.load(session.id)
        assert loaded is not None
        assert loaded.data == {"n": n, "moved": True}
    assert len(backend.keys()) == len(sessions)


async def test_rotation_load_is_one_round_trip(redis: Any) -> None:
    """With three previous secrets a load is one command on the server, found or not.

    One command means one deadline: before the fix an unknown id cost four round trips, each
    with a fresh ``redis.timeout`` (2.42 s with ``timeout: 1s`` on a slow server).
    """
    from redis_session import open_session_store  # noqa: PLC0415

    previous = ["secret three", "secret two", "secret one"]
    cfg = {"secret": SECRET, "previous_secrets": previous, "redis": redis.redis_section()}
    old_cfg = {"secret": "secret one", "redis": redis.redis_section()}
    admin = redis.admin()
    async with open_session_store(old_cfg) as oldest, open_session_store(cfg) as store:
        session = await oldest.create({"a": 1})
        assert await store.load("B" * 43) is None  # the server caches the script
        await anyio.to_thread.run_sync(admin.config_resetstat)
        assert await store.load("A" * 43) is None
        loaded = await store.load(session.id)  # found under the last name tried
        assert loaded is not None
        stats = await anyio.to_thread.run_sync(admin.info, "commandstats")
    # Commands that scripts run are counted too; the client's own commands are the scripts.
    calls = {name: int(value["calls"]) for name, value in stats.items()}
    assert calls.get("cmdstat_evalsha", 0) == 2, calls
    assert "cmdstat_eval" not in calls, calls
