"""One node at a time, reached as the store reaches it: for the operator command line.

The store talks to a deployment through its topology (the server, the sentinels' master, each
slot's owner) and never asks which node answered. ``check`` and ``stats`` need the opposite:
every node by name (each cluster master and replica, the sentinels' master, its replicas and the
sentinels themselves), reached with the store's own settings (TLS context and server name, ACL
user and password, database, client name, ``READONLY`` where routed cluster reads send it),
asked read-only questions, each failure told in the store's words (the TLS or plain-port
diagnosis, the option to check).

- :class:`DataNode`: a data node, through a :class:`~redis_session._pool.NodePool` built by the
  store's own pool factory (so concurrent commands are pipelined, as the store's are).
- :class:`SentinelNode`: a sentinel, through the connections a
  :class:`~redis_session._sentinel.SentinelLink` opens (the sentinel's own password).

Both raise only this library's errors: :class:`CommandError` for an error reply (with its
code, ``NOPERM`` included), :class:`StoreUnavailable` when the node cannot be reached in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import attrs
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError

from ._config import RedisConfig
from ._connections import make_pool_factory
from ._errors import CommandError, ConnectionLost, StoreUnavailable
from ._pool import NodePool
from ._sentinel import SentinelLink
from ._spec import SENTINEL_TIMEOUT, ConnectionSpec
from ._wire import FAILURES, disconnect, node_label, pack, unbracket

__all__ = ["DataNode", "SentinelNode", "close_all"]

Arg = bytes | str | int | float


class DataNode:
    """A data node (a server, a master or a replica), with a pool of the store's making."""

    def __init__(
        self, cfg: RedisConfig, spec: ConnectionSpec, host: str, port: int, *, readonly: bool
    ) -> None:
        # No idle floor: a one-off command line holds no connection it does not use.
        quiet = attrs.evolve(cfg, minimum_idle_connections=0)
        self.host, self.port = unbracket(host), port
        self.label = node_label(self.host, port)
        self._timeout = cfg.timeout.total_seconds()
        self._pool: NodePool = make_pool_factory(quiet, spec)(host, port, readonly=readonly)

    async def execute(self, *args: Arg) -> Any:
        """Run one command within ``redis.timeout``; return its raw reply (bytes, not decoded).

        Concurrent calls share the pool's connections (at most
        ``maximum_active_connections``), pipelined.
        """
        loop = asyncio.get_running_loop()
        return await self._pool.execute(pack(*args), loop.time() + self._timeout)

    async def aclose(self) -> None:
        """Close the pool (bounded, shielded by the pool itself)."""
        await self._pool.aclose()

    def __repr__(self) -> str:
        return f"<DataNode {self.label}>"


class SentinelNode:
    """A sentinel, reached with ``high_availability``'s credentials; replies are decoded."""

    def __init__(self, cfg: RedisConfig, spec: ConnectionSpec, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._link = SentinelLink(cfg, (host, port), spec)
        self.label = self._link.label
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()

    async def execute(self, *args: Arg) -> Any:
        """Run one command on the sentinel and return its decoded reply (bounded as the store's).

        One connection, kept between commands; a failed exchange drops it.
        """
        async with self._lock:
            conn, self._conn = self._conn, None
            try:
                async with asyncio.timeout(SENTINEL_TIMEOUT):
                    if conn is None:
                        conn = self._link.new_connection()
                        try:
                            await conn.connect()  # type: ignore[no-untyped-call]
                        except ResponseError as exc:
                            # Refused while logging in (CLIENT SETNAME): no usable link.
                            raise self._unavailable(exc) from exc
                    await conn.send_command(*args, check_health=False)
                    reply = await conn.read_response()
            except ResponseError as exc:
                # An error reply to the command leaves the connection in step: keep it.
                self._conn = conn
                raise self._command_error(exc) from exc
            except BaseException as exc:
                if conn is not None:
                    await disconnect(conn)
                if isinstance(exc, FAILURES) and not isinstance(exc, StoreUnavailable):
                    raise self._unavailable(exc) from exc
                raise
            self._conn = conn
            return reply

    async def subscribe(self, *channels: str) -> None:
        """Subscribe to ``channels`` on a connection of its own, then drop it.

        What the store's failover listener does first; raises :class:`CommandError` when the
        sentinel refuses (``NOPERM`` for a channel its ACL does not allow).
        """
        conn = self._link.new_connection()
        try:
            async with asyncio.timeout(SENTINEL_TIMEOUT):
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("SUBSCRIBE", *channels, check_health=False)
                for _ in channels:
                    await conn.read_response()
        except ResponseError as exc:
            raise self._command_error(exc) from exc
        except FAILURES as exc:
            raise self._unavailable(exc) from exc
        finally:
            await disconnect(conn)

    async def aclose(self) -> None:
        """Drop the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await disconnect(conn)

    def _command_error(self, exc: ResponseError) -> CommandError:
        # Sentinel connections use redis-py's own parser, which strips the code of the errors
        # it has a class for: put NOPERM back, as the data nodes' parser keeps it.
        text = str(exc)
        if isinstance(exc, NoPermissionError) and not text.startswith("NOPERM"):
            text = f"NOPERM {text}"
        return CommandError(text)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, AuthenticationError):
            return StoreUnavailable(self._link.auth_problem(exc))
        if isinstance(exc, RedisError | OSError | TimeoutError):
            problem = self._link.explain_failure(exc)
        else:
            problem = str(exc) or type(exc).__name__
        return ConnectionLost(f"sentinel {self.label}: {problem}", sent=True)

    def __repr__(self) -> str:
        return f"<SentinelNode {self.label}>"


async def close_all(nodes: list[DataNode | SentinelNode]) -> None:
    """Close every node, each error suppressed (a close that fails leaves nothing to do)."""
    for node in nodes:
        with contextlib.suppress(Exception):
            await node.aclose()
