"""``sessions list`` and ``sessions revoke``: a user's sessions, for an operator (docs/users.md).

Both open the store as the app does (the same configuration file, secrets and ``index_secret``:
a user's index key is a keyed hash of the name, so only the app's own secrets find it) and call
the store's own API: ``list_sessions``, ``revoke_user`` and ``revoke``. Nothing here prints a
session id or a secret: a listed session shows its public id, which can revoke it but never
authenticate as it.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import attrs

from ._config_loading import load_config
from ._errors import UsageError
from ._opener import open_session_store
from ._store import SessionInfo

__all__ = ["Revoked", "info_json", "list_user_sessions", "revoke_by_id", "revoke_user_sessions"]


@attrs.frozen
class Revoked:
    """What a revoke did: whether it ended a session, and the user's sessions left after it."""

    #: ``revoke --id``: whether a live session had that public id. ``revoke --user``: ``True``.
    revoked: bool
    #: ``revoke --user``: the sessions the user still has (the one kept, and any login that
    #: completed after the revoke). ``revoke --id``: empty (the public id names no user).
    remaining: list[SessionInfo] = attrs.field(factory=list)


def info_json(info: SessionInfo) -> dict[str, Any]:
    """Return one listed session as a JSON-ready mapping (times in ISO 8601, UTC)."""
    return {
        "public_id": info.public_id,
        "created_at": info.created_at.isoformat(),
        "last_active_at": info.last_active_at.isoformat(),
        "expires_at": info.expires_at.isoformat(),
        "remember_me": info.remember_me,
        "metadata": info.metadata,
    }


def _config(source: str | PathLike[str], command: str) -> Any:
    cfg = load_config(source)
    if cfg.redis is None:
        msg = (
            f"{command} needs session.redis: without it, sessions live in each app process's "
            "memory, out of this command's reach"
        )
        raise UsageError(msg)
    return cfg


async def list_user_sessions(source: str | PathLike[str], user: str) -> list[SessionInfo]:
    """Return the live sessions of ``user``, oldest first, from the store ``source`` configures."""
    async with open_session_store(_config(source, "sessions list")) as store:
        return await store.list_sessions(user)


async def revoke_user_sessions(
    source: str | PathLike[str], user: str, *, keep: str | None = None
) -> Revoked:
    """End every session of ``user`` but ``keep``; return the sessions left after it."""
    async with open_session_store(_config(source, "sessions revoke")) as store:
        await store.revoke_user(user, keep=keep)
        return Revoked(True, await store.list_sessions(user))


async def revoke_by_id(source: str | PathLike[str], public_id: str) -> Revoked:
    """End the session with ``public_id``; whether a live one was ended."""
    async with open_session_store(_config(source, "sessions revoke")) as store:
        return Revoked(await store.revoke(public_id))
