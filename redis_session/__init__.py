"""redis_session: an encrypted, Redis-backed session store for async Python apps.

Configured like Authelia's ``session:`` section::

    store = await open_session_store(cfg)
    session = await store.create({"username": "john"})
    session = await store.load(session.id)

An invalid configuration raises :class:`ConfigError`, whose ``problems`` are
:class:`ConfigProblem` objects: the option's path and what is wrong with it.
"""

from __future__ import annotations

from typing import Any

from ._config import (
    REMEMBER_ME_DISABLED,
    ClusterConfig,
    ClusterNodeConfig,
    CookieConfig,
    HighAvailabilityConfig,
    NodeConfig,
    RedisConfig,
    Secret,
    SessionConfig,
    TLSConfig,
)
from ._config_loading import load_config, resolve_config, validate_config
from ._errors import (
    CommandError,
    ConfigError,
    ConfigProblem,
    ConnectionLost,
    PoolTimeout,
    RedisSessionError,
    SessionConflict,
    SessionDataError,
    SessionLimitReached,
    StoreClosed,
    StoreUnavailable,
    UsageError,
)
from ._opener import StoreOpener, open_session_store
from ._statistics import NodeStatistics, PoolStatistics
from ._store import Lookup, Session, SessionInfo, SessionStore

__all__ = [
    "REMEMBER_ME_DISABLED",
    "ClusterConfig",
    "ClusterNodeConfig",
    "CommandError",
    "ConfigError",
    "ConfigProblem",
    "ConnectionLost",
    "CookieConfig",
    "HighAvailabilityConfig",
    "Lookup",
    "NodeConfig",
    "NodeStatistics",
    "PoolStatistics",
    "PoolTimeout",
    "RedisConfig",
    "RedisSessionError",
    "Secret",
    "Session",
    "SessionConfig",
    "SessionConflict",
    "SessionDataError",
    "SessionInfo",
    "SessionLimitReached",
    "SessionStore",
    "StoreClosed",
    "StoreOpener",
    "StoreUnavailable",
    "TLSConfig",
    "UsageError",
    "load_config",
    "open_session_store",
    "resolve_config",
    "validate_config",
]


def __getattr__(name: str) -> Any:
    # The version comes from the installed distribution's metadata, read only when asked for,
    # so importing the package costs no metadata lookup.
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - deliberately lazy

        return version("redis-session-store")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
