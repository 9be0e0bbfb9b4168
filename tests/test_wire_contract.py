"""Every private name of redis-py that ``_wire`` relies on is still there.

A redis-py release that renames one of them must fail here, naming it, rather than as a
puzzling error deep in the pool. The connected attributes are checked on a real connection to
a real server.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
from redis.asyncio.connection import Connection

from redis_session._wire import INTERNALS, TCPConnection, connection_settings

from .servers import RedisProcess

pytestmark = pytest.mark.anyio


def _resolve(owner: str) -> Any:
    """``redis._parsers._AsyncHiredisParser`` -> the object, by module then attributes."""
    parts = owner.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise AssertionError(f"cannot import {owner}")


def test_every_static_internal_exists() -> None:
    """Names on classes and modules: present, whatever the connection state."""
    missing = [
        f"{owner}.{attr}"
        for owner, attr in INTERNALS
        if "(connected)" not in owner
        and owner != "asyncio.StreamReader"
        and not hasattr(_resolve(owner), attr)
    ]
    assert missing == [], f"redis-py no longer has: {missing}"


async def test_every_connected_internal_exists(redis: RedisProcess) -> None:
    """Names a connection (and its parser, and its stream) has once it is connected."""
    settings = connection_settings(
        username=redis.username,
        password=redis.password,
        timeout=5.0,
    )
    conn = TCPConnection(host=redis.host, port=redis.port, **settings)
    await conn.connect()  # type: ignore[no-untyped-call]
    try:
        owners = {
            "redis.asyncio.connection.AbstractConnection (connected)": conn,
            "redis._parsers._AsyncHiredisParser (connected)": conn._parser,
            "asyncio.StreamReader": conn._reader,
        }
        assert isinstance(conn._reader, asyncio.StreamReader)
        missing = [
            f"{owner}.{attr}"
            for owner, attr in INTERNALS
            if owner in owners and not hasattr(owners[owner], attr)
        ]
        assert missing == [], f"redis-py (or asyncio) no longer has: {missing}"
        assert isinstance(conn, Connection)
    finally:
        await conn.disconnect()
