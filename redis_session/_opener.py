"""Opening a store: a configuration in, a :class:`SessionStore` on the right provider out.

The top of the library's layers: it is the one place that knows both the session core (the
store, the memory provider) and the Redis core (the connection manager, the Redis provider),
so neither has to know the other exists.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Generator, Mapping
from os import PathLike
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from ._codec import Codec
from ._config import SessionConfig
from ._config_loading import load_config, resolve_config
from ._connections import ConnectionManager
from ._crypto import KeyRing
from ._errors import ConfigError
from ._memory import MemoryProvider
from ._provider import Provider
from ._redis_provider import RedisProvider
from ._store import SessionStore

logger = logging.getLogger("redis_session")

__all__ = ["ConfigSource", "StoreOpener", "open_session_store"]

T = TypeVar("T")


ConfigSource = SessionConfig | Mapping[str, Any] | str | PathLike[str]


class StoreOpener(Generic[T]):
    """What :func:`open_session_store` returns: await it, or use it as ``async with``.

    ``await open_session_store(cfg)`` gives an open :class:`SessionStore` that the caller
    closes; ``async with open_session_store(cfg) as store:`` closes it on exit.
    """

    def __init__(self, cfg: ConfigSource, data_type: type[T]) -> None:
        self._cfg = cfg
        self._data_type = data_type
        self._store: SessionStore[T] | None = None

    def __await__(self) -> Generator[Any, None, SessionStore[T]]:
        return self._open().__await__()

    async def __aenter__(self) -> SessionStore[T]:
        if self._store is not None:
            msg = "this open_session_store() result is already in use; call it again"
            raise RuntimeError(msg)
        self._store = await self._open()
        return self._store

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.aclose()

    async def _open(self) -> SessionStore[T]:
        source = self._cfg
        # A SessionConfig built in Python gets the same checks and derived defaults (such as
        # tls.server_name) as one loaded from a file.
        cfg = resolve_config(source) if isinstance(source, SessionConfig) else load_config(source)
        # Built before any connection, so a bad data_type fails without touching Redis.
        codec = Codec(self._data_type)
        keyring = _keyring(cfg)
        provider: Provider
        if cfg.redis is None:
            # Said once per store, where an operator looks: a missing section is a fine default
            # for development and a surprise in production (sessions die with the process and
            # are not shared between workers).
            logger.warning(
                "session.redis is not configured: sessions live in this process's memory, "
                "are lost when it stops and are not shared with other processes"
            )
            provider = MemoryProvider()
        else:
            provider = RedisProvider(await ConnectionManager.open(cfg.redis))
        return SessionStore(cfg, provider, codec, keyring)


def _keyring(cfg: SessionConfig) -> KeyRing:
    if cfg.secret is not None:
        secret = cfg.secret.get_secret_value()
    elif cfg.redis is None:
        # Sessions in memory die with the process, so a per-process key loses nothing.
        secret = secrets.token_urlsafe(32)
    else:
        raise ConfigError(["session.secret: required when session.redis is set"])
    return KeyRing.from_secrets(secret, [s.get_secret_value() for s in cfg.previous_secrets])


@overload
def open_session_store(cfg: ConfigSource) -> StoreOpener[dict[str, Any]]: ...
@overload
def open_session_store(cfg: ConfigSource, *, data_type: type[T]) -> StoreOpener[T]: ...
def open_session_store(cfg: ConfigSource, *, data_type: type[Any] = dict) -> StoreOpener[Any]:
    """Open a session store from a configuration.

    ``cfg`` is a :class:`~redis_session.SessionConfig`, or anything
    :func:`~redis_session.load_config` accepts (a mapping, or a path to a YAML file). Without
    a ``redis`` section the sessions live in process memory. ``data_type`` is ``dict``
    (the default) or an attrs class that session data is structured into.

    The result can be awaited (``store = await open_session_store(cfg)``; close it with
    ``await store.aclose()``) or entered (``async with open_session_store(cfg) as store:``).
    Raises :class:`~redis_session.ConfigError` for an invalid configuration and
    :class:`~redis_session.StoreUnavailable` when Redis cannot be reached.
    """
    return StoreOpener(cfg, data_type)
