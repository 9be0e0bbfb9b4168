"""redis_session: an encrypted, Redis-backed session store for async Python apps.

Configured like Authelia's ``session:`` section::

    store = await open_session_store(cfg)
    session = await store.create({"username": "john"})
    session = await store.load(session.id)
"""

from __future__ import annotations

from typing import Any

from ._config import (
    HighAvailabilityConfig,
    NodeConfig,
    RedisConfig,
    Secret,
    SessionConfig,
    TLSConfig,
)
from ._errors import (
    CommandError,
    ConfigError,
    PoolTimeout,
    RedisSessionError,
    SessionConflict,
    SessionDataError,
    StoreClosed,
    StoreUnavailable,
)

__all__ = [
    # errors
    "CommandError",
    "ConfigError",
    # configuration
    "HighAvailabilityConfig",
    "NodeConfig",
    "PoolTimeout",
    "RedisConfig",
    "RedisSessionError",
    "Secret",
    "SessionConfig",
    "SessionConflict",
    "SessionDataError",
    "StoreClosed",
    "StoreUnavailable",
    "TLSConfig",
]


def __getattr__(name: str) -> Any:
    # The version comes from the installed distribution's metadata, read only when asked for,
    # so importing the package costs no metadata lookup.
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 - deliberately lazy

        return version("redis-session")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
