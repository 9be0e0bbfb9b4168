"""One store's connections, resolved once when it opens: settings, TLS context, server names.

Built by the connection manager from ``session.redis`` before any connection is made, and
handed to every pool and every sentinel link. A TLS file that cannot be read fails the open
with a ``ConfigError``, never later, when a failover, a newly found replica or a new sentinel
needs a connection; and the trust store is loaded once, not once per pool or link.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from redis.asyncio.connection import AbstractConnection, Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from ._config import RedisConfig
from ._tls import build_ssl_context
from ._wire import TCPConnection, TLSConnection, connection_settings, unbracket

__all__ = ["SENTINEL_TIMEOUT", "ConnectionSpec", "connection_spec"]

#: Timeout of every exchange with a sentinel (connect, survey, subscribe).
SENTINEL_TIMEOUT = 1.0


@attrs.frozen(eq=False)
class ConnectionSpec:
    """What every connection of one store is opened with."""

    #: redis-py keyword arguments for data nodes (credentials, database, timeouts).
    data_settings: Mapping[str, Any]
    #: The same for sentinels (their own password; replies decoded), or None without Sentinel.
    sentinel_settings: Mapping[str, Any] | None
    #: The one TLS context of the store, or None without TLS.
    ssl_context: ssl.SSLContext | None
    #: ``tls.server_name`` as configured (None: each node's own host name).
    tls_server_name: str | None

    def server_name(self, host: str) -> str | None:
        """Return the name sent as SNI and checked in ``host``'s certificate (None: no TLS)."""
        if self.ssl_context is None:
            return None
        return unbracket(self.tls_server_name or host)

    def opener(
        self, host: str, port: int, *, sentinel: bool = False, readonly: bool = False
    ) -> Callable[[], AbstractConnection]:
        """Return a function that makes a new (unconnected) connection to ``host:port``.

        ``readonly``: each connection sends ``READONLY`` once logged in, so that a Redis
        Cluster replica serves read-only commands for its master's slots instead of
        redirecting them (a master ignores it).
        """
        settings = self.sentinel_settings if sentinel else self.data_settings
        assert settings is not None, "a sentinel connection without Sentinel settings"
        if readonly:
            settings = {**settings, "redis_connect_func": _readonly_on_connect}
        bare = unbracket(host)
        if bare.startswith("/"):
            return lambda: UnixDomainSocketConnection(path=bare, **settings)
        context = self.ssl_context
        if context is not None:
            name = self.server_name(bare)
            return lambda: TLSConnection(
                host=bare, port=port, ssl_context=context, server_hostname=name, **settings
            )
        # Data nodes name a likely TLS port when a plain connection is dropped at once.
        kind: type[Connection] = Connection if sentinel else TCPConnection
        return lambda: kind(host=bare, port=port, **settings)


def connection_spec(cfg: RedisConfig) -> ConnectionSpec:
    """Resolve ``cfg`` into the spec of every connection (loads the TLS files, if any)."""
    data = connection_settings(
        username=cfg.username,
        password=cfg.password.get_secret_value() if cfg.password else None,
        timeout=cfg.timeout.total_seconds(),
        db=cfg.database_index,
    )
    sentinel = None
    ha = cfg.high_availability
    if ha is not None:
        sentinel = connection_settings(
            username=ha.sentinel_username,
            password=ha.sentinel_password.get_secret_value() if ha.sentinel_password else None,
            timeout=SENTINEL_TIMEOUT,
            decode_responses=True,
            keep_error_codes=False,
        )
    tls = cfg.tls
    context = None
    if tls is not None:
        # Named in the skip_verify warning: the server, or under Sentinel every node of it.
        named = tls.server_name or cfg.host
        if ha is not None and tls.server_name is None:
            named = (
                f"{cfg.host or 'nodes'} of Sentinel master {ha.sentinel_name!r} and its sentinels"
            )
        context = build_ssl_context(tls, host=named)
    return ConnectionSpec(
        data_settings=data,
        sentinel_settings=sentinel,
        ssl_context=context,
        tls_server_name=None if tls is None else tls.server_name,
    )


async def _readonly_on_connect(conn: AbstractConnection) -> None:
    """Log in as redis-py does, then ask for reads on a cluster replica (``READONLY``)."""
    await conn.on_connect()
    await conn.send_command("READONLY")
    reply = await conn.read_response()
    if reply not in (b"OK", "OK"):
        msg = f"READONLY was answered {reply!r}"
        raise RedisConnectionError(msg)
