"""The connection manager: from ``session.redis`` to replies from the right Redis node.

TEMPORARY implementation on redis-py's BlockingConnectionPool so the store can be built and
tested; the real manager (own pool with auto-pipelining, min-idle, Sentinel) replaces the
internals with the same interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import redis.asyncio as aioredis
import redis.exceptions

from ._config import RedisConfig
from ._errors import CommandError, PoolTimeout, StoreUnavailable
from ._scripts import Script

__all__ = ["ConnectionManager", "PoolStatistics"]

Arg = bytes | str | int | float


@attrs.frozen
class PoolStatistics:
    """A snapshot of the connection pool."""

    max_connections: int
    open: int
    in_use: int
    idle: int
    waiting: int


class ConnectionManager:
    """Sends commands to the configured Redis."""

    def __init__(self, cfg: RedisConfig) -> None:
        self._cfg = cfg
        timeout = cfg.timeout.total_seconds()
        assert cfg.host is not None
        self._pool = aioredis.BlockingConnectionPool(
            host=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password.get_secret_value() if cfg.password else None,
            db=cfg.database_index,
            max_connections=cfg.maximum_active_connections,
            timeout=timeout,
            socket_timeout=timeout,
            protocol=2,
        )
        self._client = aioredis.Redis(connection_pool=self._pool)

    @property
    def routes_reads(self) -> bool:
        """Whether read-only commands may go to a replica."""
        return False

    @classmethod
    async def open(cls, cfg: RedisConfig) -> ConnectionManager:
        """Open the manager."""
        return cls(cfg)

    async def execute(self, *args: Arg, read_only: bool = False) -> Any:
        """Run one command and return its raw RESP2 reply."""
        try:
            return await self._client.execute_command(*args)
        except redis.exceptions.ResponseError as exc:
            raise CommandError(str(exc)) from None
        except redis.exceptions.ConnectionError as exc:
            if "No connection available" in str(exc):
                raise PoolTimeout(str(exc)) from None
            raise StoreUnavailable(str(exc)) from None
        except redis.exceptions.RedisError as exc:
            raise StoreUnavailable(str(exc)) from None

    async def run_script(
        self, script: Script, keys: Sequence[Arg], args: Sequence[Arg], *, read_only: bool = False
    ) -> Any:
        """Run a Lua script by SHA, loading it on NOSCRIPT."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except CommandError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    def statistics(self) -> PoolStatistics:
        """Return pool figures."""
        return PoolStatistics(self._cfg.maximum_active_connections, 0, 0, 0, 0)

    async def aclose(self) -> None:
        """Close all connections."""
        await self._client.aclose()
        await self._pool.aclose()
