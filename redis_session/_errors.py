"""The library's exceptions: one small tree under :class:`RedisSessionError`.

A caller of the public API never sees a bare redis-py or cryptography exception; every
failure is one of these, with a message that names the option or node and never a secret.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import attrs

__all__ = [
    "CommandError",
    "ConfigError",
    "ConfigProblem",
    "ConnectionLost",
    "PoolTimeout",
    "RedisSessionError",
    "SessionConflict",
    "SessionDataError",
    "SessionLimitReached",
    "StoreClosed",
    "StoreUnavailable",
    "UsageError",
]


class RedisSessionError(Exception):
    """Base class of every error this library raises."""


@attrs.frozen
class ConfigProblem:
    """One problem with a configuration: where it is and what is wrong.

    ``path`` is the option a user wrote, as ``session.redis.port`` or
    ``session.redis.high_availability.nodes[1].port`` (or the file, for a file that cannot be
    read); ``message`` says what is wrong, e.g. ``must be between 1 and 65535, got 70000``.
    ``str()`` gives the line shown to the user, ``path: message``.
    """

    path: str
    message: str

    @classmethod
    def parse(cls, line: str) -> ConfigProblem:
        """Read a ``path: message`` line back into its two parts (no path if it has no ``: ``)."""
        path, separator, message = line.partition(": ")
        return cls(path, message) if separator else cls("", line)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(RedisSessionError, ValueError):
    """The configuration is invalid.

    ``problems`` holds one :class:`ConfigProblem` per problem, each with the option path a user
    wrote and the message, e.g. ``session.redis.port`` and ``must be between 1 and 65535, got
    70000``. The message is all problems, one ``path: message`` line each, so one error reports
    every problem at once. A problem may also be given as its ``path: message`` line.
    """

    def __init__(self, problems: Iterable[ConfigProblem | str] | ConfigProblem | str) -> None:
        # One problem alone (a line, or a ConfigProblem) is one problem: a bare string must not
        # be taken for an iterable of one-letter problems.
        many = (problems,) if isinstance(problems, str | ConfigProblem) else problems
        self.problems: tuple[ConfigProblem, ...] = tuple(
            p if isinstance(p, ConfigProblem) else ConfigProblem.parse(p) for p in many
        )
        super().__init__(self._render())

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle and copy by the problems, not by the rendered message in ``args``.
        return (type(self), (self.problems,), self.__dict__)

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"invalid session configuration: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"invalid session configuration ({len(self.problems)} problems):\n{lines}"


class SessionConflict(RedisSessionError):
    """A save or regenerate lost a race.

    Someone else saved, regenerated or deleted the session since it was loaded, or it expired.
    Nothing was written; load the session again and reapply the change if it still applies.
    """


class SessionDataError(RedisSessionError, ValueError):
    """The session data cannot be stored: the serializer cannot take it, or it is too large."""


class SessionLimitReached(RedisSessionError):
    """A login was refused: the user already holds ``session.max_sessions_per_user`` sessions.

    Raised by ``create`` or ``regenerate`` with ``user=`` when ``session.session_limit_action``
    is ``deny``. Nothing was written: the session being logged in (if any) is unchanged.
    """


class StoreUnavailable(RedisSessionError, ConnectionError):
    """Redis could not be reached or did not answer in time, after the library's own retries."""


class ConnectionLost(StoreUnavailable):
    """A command failed because its connection broke, or never opened.

    ``sent`` tells whether the command may have reached the server: ``False`` means it surely
    did not run (no connection could be opened, or the pool closed with it still queued). The
    library retries both kinds within ``redis.timeout`` before raising this; a command that was
    sent may have run, which every store operation is written to tolerate. The underlying
    error (redis-py's, or the socket's) is the ``__cause__``.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle and copy (multiprocessing, queued log handlers) with ``sent``, a keyword.
        return (_rebuild_connection_lost, (str(self), self.sent), self.__dict__)


def _rebuild_connection_lost(message: str, sent: bool) -> ConnectionLost:
    return ConnectionLost(message, sent=sent)


class PoolTimeout(StoreUnavailable, TimeoutError):
    """No connection became available within the configured wait limit (``redis.timeout``)."""


class StoreClosed(RedisSessionError, RuntimeError):
    """The store (or its connection pool) has been closed."""


class CommandError(RedisSessionError):
    """Redis answered a command with an error reply (a bug or a misconfigured server).

    Raised by the connection manager; the store turns the cases it expects into
    :class:`SessionConflict` or ``None`` and lets the rest through. ``code`` is the reply's
    first word when it is an error code (``ERR``, ``WRONGTYPE``, ``NOSCRIPT``, ``READONLY``,
    ``OOM``...), else ``""``; the message is the whole reply as the server sent it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        first = message.split(" ", 1)[0]
        self.code: str = first if first.isascii() and first.isalpha() and first.isupper() else ""


def other_loop_error(ours: object, ours_thread: str, theirs: object, where: str) -> UsageError:
    """Build the :class:`UsageError` for a call from loop ``theirs`` while ``ours`` is open.

    One wording for every component bound to an event loop (pools, the Sentinel topology, the
    connection manager); ``where`` names the node or master, ``ours_thread`` the owner's thread.
    """
    here = threading.current_thread().name
    owner = f" in thread {ours_thread}" if ours_thread else ""
    return UsageError(
        f"this store runs on event loop {ours!r}{owner}; it was called from event loop "
        f"{theirs!r} in thread {here!r} ({where}). A store belongs to the event loop that "
        "opened it: open one store per event loop, or call it from its own loop "
        "(asyncio.run_coroutine_threadsafe)"
    )


class UsageError(RedisSessionError):
    """The store was called in a way it cannot honour: a bug in the calling code.

    Raised for an argument of the wrong type (``save(None)``, ``create(..., remember_me="on")``),
    a :class:`~redis_session.Session` that belongs to another store, or a call from an event loop
    other than the one the store is running on. Nothing was read or written; the message says
    what to change.
    """
