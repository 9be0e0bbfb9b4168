"""No lost update: random interleavings of two clients' loads, saves, deletes and regenerates.

Two stores on one storage play two clients (two web app processes). Hypothesis draws a program
of operations; a model predicts every outcome exactly: a save succeeds if and only if its
session was loaded (or last saved) at the latest acknowledged write, and after every operation a
fresh load sees exactly the last acknowledged value. So every successful save is visible until
a later acknowledged operation supersedes it, and no save silently overwrites another. ``race``
runs both clients' saves concurrently: exactly the up-to-date ones may win, and only one.
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

CLIENTS = st.integers(0, 1)
VALUES = st.integers(0, 10**6)
LOAD = st.tuples(st.just("load"), CLIENTS)
SAVE = st.tuples(st.just("save"), CLIENTS, VALUES)
# Loads and saves are what interleave into lost updates, so they are drawn most often.
OPERATIONS = st.one_of(
    LOAD,
    SAVE,
    LOAD,
    SAVE,
    st.tuples(st.just("race"), VALUES, VALUES),
    st.tuples(st.just("delete"), CLIENTS),
    st.tuples(st.just("regenerate"), CLIENTS),
    st.tuples(st.just("create")),
)


@attrs.define
class Model:
    """What the storage must hold, and what each client's handle was loaded at."""

    stores: list[SessionStore[Any]]
    current_id: str | None = None
    exists: bool = False
    value: int | None = None
    #: Count of acknowledged writes: a handle is up to date when loaded at the latest one.
    generation: int = 0
    handles: list[tuple[Session[Any], int] | None] = attrs.Factory(lambda: [None, None])
    #: Ids deleted or regenerated away: none may ever load again.
    dead: set[str] = attrs.Factory(set)

    def up_to_date(self, client: int) -> bool:
        handle = self.handles[client]
        if handle is None or not self.exists:
            return False
        session, generation = handle
        return session.id == self.current_id and generation == self.generation

    def acknowledge(self, client: int, session: Session[Any]) -> None:
        if self.current_id is not None and session.id != self.current_id:
            self.dead.add(self.current_id)
        self.generation += 1
        self.current_id = session.id
        self.exists = True
        self.value = session.data["v"]
        self.handles[client] = (session, self.generation)

    async def create(self) -> None:
        if self.exists:
            return
        session = await self.stores[0].create({"v": -1})
        self.acknowledge(0, session)

    async def load(self, client: int) -> None:
        if self.current_id is None:
            return
        session = await self.stores[client].load(self.current_id)
        if not self.exists:
            assert session is None
            return
        assert session is not None
        assert session.data == {"v": self.value}
        self.handles[client] = (session, self.generation)

    async def save(self, client: int, value: int) -> None:
        handle = self.handles[client]
        if handle is None:
            return
        session = handle[0]
        expected = self.up_to_date(client)
        session.data = {"v": value}
        try:
            await self.stores[client].save(session)
        except SessionConflict:
            assert not expected
            return
        assert expected
        self.acknowledge(client, session)

    async def delete(self, client: int) -> None:
        if self.current_id is None:
            return
        await self.stores[client].delete(self.current_id)
        self.dead.add(self.current_id)
        self.exists = False
        self.generation += 1

    async def regenerate(self, client: int) -> None:
        handle = self.handles[client]
        if handle is None:
            return
        expected = self.up_to_date(client)
        try:
            fresh = await self.stores[client].regenerate(handle[0])
        except SessionConflict:
            assert not expected
            return
        assert expected
        self.acknowledge(client, fresh)

    async def race(self, first: int, second: int) -> None:
        if self.handles[0] is None or self.handles[1] is None:
            return
        expected = [self.up_to_date(0), self.up_to_date(1)]
        won: list[int] = []

        async def save(client: int, value: int) -> None:
            handle = self.handles[client]
            assert handle is not None
            handle[0].data = {"v": value}
            try:
                await self.stores[client].save(handle[0])
            except SessionConflict:
                return
            won.append(client)

        async with anyio.create_task_group() as group:
            group.start_soon(save, 0, first)
            group.start_soon(save, 1, second)
        assert len(won) == (1 if any(expected) else 0)
        for client in won:
            assert expected[client]
            handle = self.handles[client]
            assert handle is not None
            self.acknowledge(client, handle[0])

    async def check(self) -> None:
        """A fresh load through either store sees exactly the last acknowledged value."""
        for dead_id in self.dead:
            assert await self.stores[1].load(dead_id) is None
        if self.current_id is None:
            return
        for store in self.stores:
            session = await store.load(self.current_id)
            if self.exists:
                assert session is not None
                assert session.data == {"v": self.value}
            else:
                assert session is None


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    # One server for all examples, emptied by each example itself.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(program=st.lists(OPERATIONS, min_size=3, max_size=30))
async def test_no_lost_update(backend: Backend, program: list[tuple[Any, ...]]) -> None:
    """Every outcome matches the model; acknowledged saves are never lost."""
    await backend.reset()
    model = Model([await backend.open(), await backend.open()])
    await model.create()
    for name, *args in program:
        await getattr(model, name)(*args)
        await model.check()
