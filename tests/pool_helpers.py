"""Helpers shared by the pool and cancellation tests: configs, an opened manager, CLIENT LIST."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest

from redis_session import RedisConfig
from redis_session._connections import ConnectionManager
from redis_session._pool import NodePool
from redis_session._wire import CLIENT_NAME

from .servers import RedisProcess


def config(proc: RedisProcess, **overrides: Any) -> RedisConfig:
    """A config reaching ``proc`` over TCP, with a short timeout unless overridden."""
    values: dict[str, Any] = {
        "host": proc.host,
        "port": proc.port,
        "timeout": timedelta(seconds=2),
    }
    values.update(overrides)
    return RedisConfig(**values)


@asynccontextmanager
async def opened(cfg: RedisConfig) -> AsyncIterator[ConnectionManager]:
    """A connection manager open for the block, closed after it."""
    manager = await ConnectionManager.open(cfg)
    try:
        yield manager
    finally:
        await manager.aclose()


def only_pool(manager: ConnectionManager) -> NodePool:
    """The node pool of a single-server manager (tests look at its internals)."""
    (pool,) = manager._topology.pools()
    return pool


async def ours(proc: RedisProcess) -> list[dict[str, str]]:
    """Our connections in ``CLIENT LIST``, read off the event loop's thread."""
    return await anyio.to_thread.run_sync(proc.our_clients, CLIENT_NAME)


def kill_ours_sync(proc: RedisProcess) -> list[str]:
    """``CLIENT KILL`` every connection of ours (the admin link survives); return their ids."""
    ids = [c["id"] for c in proc.our_clients(CLIENT_NAME)]
    for client_id in ids:
        proc.admin().client_kill_filter(_id=client_id)
    return ids


async def kill_ours(proc: RedisProcess) -> list[str]:
    """:func:`kill_ours_sync` off the event loop's thread."""
    return await anyio.to_thread.run_sync(kill_ours_sync, proc)


async def eventually(predicate: Any, within: float, interval: float = 0.05) -> Any:
    """Await ``predicate()`` until it is truthy; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s (last value {result!r})")
        await anyio.sleep(interval)
