"""Revocation is never undone: random interleavings of logins, saves, regenerates, logouts and
revokes from several clients (issue 13's acceptance property), on every backend.

Three stores on one storage play three app processes. Hypothesis draws a program; a model keeps,
for each session of a user (by public id), its current id, or that it ended. After every step:
no id that ended (revoked, logged out, regenerated away) loads, and each user's list is exactly
their live sessions — none missing, none extra. ``race`` runs a revoke of all of a user's
sessions concurrently with a save, a regenerate and a login: every session that existed when the
revoke was called is dead afterwards, and the login either completed before (and is dead) or
after (and lives, and is listed).
"""

from __future__ import annotations

from typing import Any

import anyio
import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_session import SessionConflict
from redis_session._store import Session, SessionStore

from .store_helpers import Backend

pytestmark = pytest.mark.anyio

CLIENTS = st.integers(0, 2)
USERS = st.sampled_from(["alice", "bob"])
PICK = st.integers(0, 10**6)
OPERATIONS = st.one_of(
    st.tuples(st.just("login"), CLIENTS, USERS, st.booleans()),
    st.tuples(st.just("load"), CLIENTS, PICK),
    st.tuples(st.just("save"), CLIENTS, PICK),
    st.tuples(st.just("save"), CLIENTS, PICK),
    st.tuples(st.just("regenerate"), CLIENTS, PICK),
    st.tuples(st.just("logout"), CLIENTS, PICK),
    st.tuples(st.just("revoke"), CLIENTS, PICK),
    st.tuples(st.just("revoke_user"), CLIENTS, USERS, st.booleans(), PICK),
    st.tuples(st.just("race"), CLIENTS, USERS, PICK),
)


@attrs.define
class Model:
    stores: list[SessionStore[Any]]
    #: Public id -> (user, current id), for every live session of a user.
    live: dict[str, tuple[str, str]] = attrs.Factory(dict)
    #: Ids that ended: none may ever load again.
    dead: set[str] = attrs.Factory(set)
    #: The session handles each client holds (possibly stale).
    handles: list[list[Session[Any]]] = attrs.Factory(lambda: [[], [], []])

    def handle(self, client: int, pick: int) -> Session[Any] | None:
        held = self.handles[client]
        return held[pick % len(held)] if held else None

    def is_live(self, session: Session[Any]) -> bool:
        pid = session.public_id
        assert pid is not None
        return pid in self.live and self.live[pid][1] == session.id

    def end(self, pid: str) -> None:
        _, current = self.live.pop(pid)
        self.dead.add(current)

    async def login(self, client: int, user: str, anonymous_first: bool) -> None:
        store = self.stores[client]
        if anonymous_first:
            anonymous = await store.create({"n": 0})
            session = await store.regenerate(anonymous, user=user, metadata={"c": client})
            self.dead.add(anonymous.id)
        else:
            session = await store.create({"n": 0}, user=user, metadata={"c": client})
        assert session.public_id is not None
        self.live[session.public_id] = (user, session.id)
        self.handles[client].append(session)

    async def load(self, client: int, pick: int) -> None:
        handle = self.handle(client, pick)
        if handle is None:
            return
        session = await self.stores[client].load(handle.id)
        assert (session is not None) == self.is_live(handle)
        if session is not None:
            assert session.public_id == handle.public_id
            self.handles[client].append(session)

    async def save(self, client: int, pick: int) -> None:
        handle = self.handle(client, pick)
        if handle is None:
            return
        handle.data["n"] += 1
        try:
            await self.stores[client].save(handle)
        except SessionConflict:
            return
        assert self.is_live(handle)  # a save never brings an ended session back

    async def regenerate(self, client: int, pick: int) -> None:
        handle = self.handle(client, pick)
        if handle is None:
            return
        try:
            fresh = await self.stores[client].regenerate(handle)
        except SessionConflict:
            return
        assert self.is_live(handle)
        assert fresh.public_id == handle.public_id
        assert handle.public_id is not None
        user, _ = self.live[handle.public_id]
        self.live[handle.public_id] = (user, fresh.id)
        self.dead.add(handle.id)
        self.handles[client].append(fresh)

    async def logout(self, client: int, pick: int) -> None:
        handle = self.handle(client, pick)
        if handle is None:
            return
        await self.stores[client].delete(handle.id)
        assert handle.public_id is not None
        if self.is_live(handle):
            self.end(handle.public_id)
        self.dead.add(handle.id)

    async def revoke(self, client: int, pick: int) -> None:
        handle = self.handle(client, pick)
        if handle is None:
            return
        pid = handle.public_id
        assert pid is not None
        ended = await self.stores[client].revoke(pid)
        assert ended == (pid in self.live)
        if ended:
            self.end(pid)

    async def revoke_user(self, client: int, user: str, keep: bool, pick: int) -> None:
        mine = sorted(pid for pid, (u, _) in self.live.items() if u == user)
        kept = mine[pick % len(mine)] if keep and mine else None
        await self.stores[client].revoke_user(user, keep=kept)
        for pid in mine:
            if pid != kept:
                self.end(pid)

    async def race(self, client: int, user: str, pick: int) -> None:
        """revoke_user against a save, a regenerate and a login of the same user, at once."""
        mine = [h for held in self.handles for h in held if self.is_live(h)]
        mine = [h for h in mine if h.public_id and self.live[h.public_id][0] == user]
        target = mine[pick % len(mine)] if mine else None
        results: dict[str, Any] = {}

        async def save() -> None:
            assert target is not None
            try:
                await target._store.save(target)
            except SessionConflict:
                return

        async def regenerate() -> None:
            assert target is not None
            try:
                results["fresh"] = await target._store.regenerate(target)
            except SessionConflict:
                return

        async def login() -> None:
            results["login"] = await self.stores[client].create({"n": 0}, user=user)

        async def revoke() -> None:
            await self.stores[client].revoke_user(user)

        async with anyio.create_task_group() as group:
            if target is not None:
                group.start_soon(save)
                group.start_soon(regenerate)
            group.start_soon(login)
            group.start_soon(revoke)
        for pid in [p for p, (u, _) in self.live.items() if u == user]:
            self.end(pid)
        fresh = results.get("fresh")
        if fresh is not None:
            self.dead.add(fresh.id)  # moved before the revoke (else it had failed): revoked
        login: Session[Any] = results["login"]
        assert login.public_id is not None
        if await self.stores[0].load(login.id) is None:
            self.dead.add(login.id)  # completed before the revoke: revoked
        else:
            self.live[login.public_id] = (user, login.id)  # completed after: lives
            self.handles[client].append(login)

    async def check(self) -> None:
        for dead_id in self.dead:
            assert await self.stores[1].load(dead_id) is None
        for user in ("alice", "bob"):
            listed = {info.public_id for info in await self.stores[2].list_sessions(user)}
            assert listed == {pid for pid, (u, _) in self.live.items() if u == user}


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    # One server for all examples, emptied by each example itself.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(program=st.lists(OPERATIONS, min_size=3, max_size=25))
async def test_revoked_never_loads_and_live_always_listed(
    backend: Backend, program: list[tuple[Any, ...]]
) -> None:
    """No revoked session loads; every live session of a user is in their list, and no other."""
    await backend.reset()
    model = Model([await backend.open() for _ in range(3)])
    for name, *args in program:
        await getattr(model, name)(*args)
        await model.check()
