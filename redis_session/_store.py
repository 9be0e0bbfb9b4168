"""The session store: ids, clocks, encryption and compare-and-set on top of a provider.

A session is written as one record (see ``_provider``): the payload ``[created_at, remember_me,
data]`` is serialized by the codec, encrypted under associated data that binds it to its key,
version, deadline and idle limit, and stored under the HMAC of its id. The store itself keeps
no per-session state, so any number of stores (processes) can share one Redis.

Deadlines are decided by the provider's clock (the Redis server's ``TIME``), never by this
host's, so hosts whose clocks disagree agree on which sessions are alive. Each public method
makes one provider call (one round trip), bounded by one deadline (``redis.timeout``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import inspect
import json
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import attrs

from ._codec import Codec
from ._config import SessionConfig
from ._crypto import KeyRing, UserIndex
from ._domains import cookie_for
from ._errors import (
    SessionConflict,
    SessionDataError,
    SessionLimitReached,
    StoreClosed,
    StoreUnavailable,
    UsageError,
)
from ._ids import IdLayout
from ._provider import (
    CLOCK,
    CREATED,
    LIMIT,
    MOVED,
    Listed,
    Login,
    Moved,
    Provider,
    Record,
    associated_data,
)
from ._statistics import PoolStatistics

__all__ = ["Lookup", "Session", "SessionInfo", "SessionStore"]

logger = logging.getLogger("redis_session")

T = TypeVar("T")
A = TypeVar("A")

#: A fresh 256-bit id is never taken, and a refused clock stamp is corrected by the next try;
#: a third failure means something else is wrong.
_CREATE_ATTEMPTS = 3
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: A public id: the user's keyed hash (22 characters) then 96 random bits (16 characters).
_USER_HASH_LENGTH = 22
_PUBLIC_RANDOM_BYTES = 12
_PUBLIC_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{38}")
#: How many times :meth:`SessionStore.update` tries by default, and the longest pause between
#: tries: with full jitter, a hundred concurrent updates of one session all get through.
_UPDATE_ATTEMPTS = 64
_UPDATE_PAUSE_MAX = 0.05
#: A record's version: 8 random bytes, written as 16 hex characters.
_VERSION_BYTES = 8
#: An AES-GCM nonce (see ``_crypto``), drawn with the version.
_NONCE_BYTES = 12
_CONFLICT = (
    "the session was saved, regenerated or deleted elsewhere since it was loaded, or it expired"
)


def _datetime(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


def _ms(delta: dt.timedelta) -> int:
    return delta // dt.timedelta(milliseconds=1)


def _plain_id(session_id: object, method: str) -> str:
    """Return the id as an exact ``str`` (a subclass is converted); refuse anything else."""
    if type(session_id) is str:
        return session_id
    if isinstance(session_id, str):
        # str.__str__, not str(): a subclass may override __str__, but its value is the id.
        return str.__str__(session_id)
    msg = f"{method}() takes a session id (str), got {type(session_id).__qualname__}"
    raise UsageError(msg)


def _check_flag(remember_me: object, method: str) -> None:
    """Refuse a ``remember_me`` that is not a ``bool`` (callers ignore the annotation)."""
    if type(remember_me) is not bool:
        # A truthy string or None would be stored and then never read back as a session.
        msg = (
            f"{method}(remember_me=...) takes True or False, got {type(remember_me).__name__}; "
            "convert a form or cookie value to a bool first"
        )
        raise UsageError(msg)


def _index_secret(cfg: SessionConfig) -> str:
    """Return what the user index is keyed by: ``index_secret``, else ``secret``."""
    for secret in (cfg.index_secret, cfg.secret):
        if secret is not None:
            return secret.get_secret_value()
    # In memory without a secret the keyring's key is random per process; so is this one.
    return secrets.token_urlsafe(32)


async def _to_the_end(operation: Coroutine[Any, Any, A]) -> A:
    """Run ``operation`` to its end even if the caller is cancelled meanwhile.

    For a protocol of several writes that must not stop half-way (a login across cluster
    slots). Each of its steps is bounded by its own deadline; a cancellation of the caller
    (asyncio's or an anyio scope's) is raised once the operation has ended.
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except BaseException:
        with anyio.CancelScope(shield=True):
            while not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # seen: the caller's cancellation is what is raised
        raise


def _check_user(user: object, method: str) -> str:
    if type(user) is not str or not user:
        got = "an empty str" if user == "" else type(user).__qualname__
        msg = f"{method}(user=...) takes a non-empty str (the user's name or id), got {got}"
        raise UsageError(msg)
    try:
        user.encode()
    except UnicodeEncodeError:
        # A lone surrogate (say, from a mis-decoded header): no UTF-8 to hash.
        msg = f"{method}(user=...) takes text encodable as UTF-8, got a lone surrogate"
        raise UsageError(msg) from None
    return user


def _aad(key: bytes, record: Record) -> bytes:
    """Return the associated data of ``record``'s blob (with its user and public id, if any)."""
    aad = associated_data(key, record.version, record.deadline_ms, record.inactivity_ms)
    if record.user is None or record.public_id is None:
        return aad
    return b"|".join((aad, record.user, record.public_id))


def _plain_aad(key: bytes, record: Record) -> bytes:
    """:func:`_aad` of a record without a user, in one step: :func:`associated_data`'s bytes."""
    return b"%s|%s|%d|%d" % (key, record.version, record.deadline_ms, record.inactivity_ms)


def _metadata_aad(base: bytes, public_id: bytes) -> bytes:
    return b"metadata|%s|%s" % (base, public_id)


def _limit_message(limit: int) -> str:
    return (
        f"the user already has {limit} sessions (session.max_sessions_per_user) and "
        "session.session_limit_action is deny: log out another session first"
    )


def _redact_id(session_id: str) -> str:
    # The id is a bearer credential: a log line showing a Session must not leak it.
    return repr(session_id[:4] + "…")


class Session(Generic[T]):
    """One session, as loaded from or created by a :class:`SessionStore`.

    Change :attr:`data` (or assign a new value) and pass the session to
    :meth:`SessionStore.save`. The other attributes are read-only. ``repr()`` shows only the
    first characters of the id, which is a bearer credential. Sessions compare by identity:
    each is a handle on one version of the stored session.
    """

    # A plain slotted class rather than attrs: one is built per load, and attrs' per-field
    # setattr hooks (for the read-only fields) cost more than the rest of the Python side of a
    # load. The datetimes are computed on access from the stored milliseconds for the same
    # reason.
    __slots__ = (
        "_created_ms",
        "_deadline_ms",
        "_id",
        "_inactivity_ms",
        "_key",
        "_public_id",
        "_remember_me",
        "_store",
        "_user",
        "_version",
        "data",
    )

    def __init__(  # noqa: PLR0917 - positional on load's hot path (see created_ms)
        self,
        session_id: str,
        data: T,
        # Not keyword-only: load builds one per call, and a positional call is cheaper.
        created_ms: int,
        deadline_ms: int,
        inactivity_ms: int,
        remember_me: bool,
        version: bytes,
        key: bytes,
        store: SessionStore[T],
        user: bytes | None = None,
        public_id: str | None = None,
    ) -> None:
        self._id = session_id
        #: The application's data: a ``dict`` or an instance of the store's ``data_type``.
        self.data: T = data
        self._created_ms = created_ms
        self._deadline_ms = deadline_ms
        # What save needs to rebuild the record and compare-and-set it.
        self._inactivity_ms = inactivity_ms
        self._remember_me = remember_me
        self._version = version
        self._key = key
        # The store it belongs to: another store (another secret, name or Redis) must not
        # write it under its own key names.
        self._store = store
        # A session of a user: its user's base key (B) and its public id.
        self._user = user
        self._public_id = public_id

    @property
    def id(self) -> str:
        """The opaque value to put in the cookie: 43 base64url characters (256 random bits).

        On Redis Cluster, 46: a public three-character slot tag, then the same 43.
        """
        return self._id

    @property
    def created_at(self) -> dt.datetime:
        """When the session was created (UTC), by the Redis server's clock.

        Stamped before the create is sent, from the server's clock as known here, so it may
        lag the server by the time the create was in flight (at most ``redis.timeout``).
        """
        return _datetime(self._created_ms)

    @property
    def expires_at(self) -> dt.datetime:
        """The absolute deadline (UTC): the session ends then, however active.

        It may end earlier through inactivity unless :attr:`remember_me` is set.
        """
        return _datetime(self._deadline_ms)

    @property
    def remember_me(self) -> bool:
        """Whether this is a remember-me session (lifetime ``remember_me``, no idle limit)."""
        return self._remember_me

    @property
    def public_id(self) -> str | None:
        """The shareable id of a session that belongs to a user; ``None`` for one without.

        38 base64url characters: for "your devices" pages, logs and admin tools. It can
        revoke the session (:meth:`SessionStore.revoke`) but never load it, so it must never
        be a cookie. It names the user only by a keyed hash.
        """
        return self._public_id

    def __repr__(self) -> str:
        return (
            f"Session(id={_redact_id(self._id)}, data={self.data!r}, "
            f"created_at={self.created_at!r}, expires_at={self.expires_at!r}, "
            f"remember_me={self._remember_me!r})"
        )


@attrs.frozen
class Lookup(Generic[T]):
    """What :meth:`SessionStore.lookup` found: the session, or why there is none.

    ``session`` is what :meth:`SessionStore.load` returns. ``moved`` is true only when there
    is no session because the id was regenerated moments ago (within a minute, or what the
    session had left if less): the caller holds a stale id, not a forged or dead one. A web
    layer then leaves the browser's cookie alone, since the login's response is setting the
    new one.
    """

    #: The session, or ``None``.
    session: Session[T] | None
    #: Whether the id was just regenerated (then ``session`` is ``None``).
    moved: bool = False


@attrs.frozen
class SessionInfo:
    """One live session of a user, as :meth:`SessionStore.list_sessions` returns it."""

    #: The session's public id (what :meth:`SessionStore.revoke` takes).
    public_id: str
    #: When the session was created (UTC, the Redis server's clock).
    created_at: dt.datetime
    #: When it was last loaded or saved (UTC).
    last_active_at: dt.datetime
    #: When it ends unless used again: its absolute deadline, or earlier by inactivity.
    expires_at: dt.datetime
    #: Whether it is a remember-me session.
    remember_me: bool
    #: What the app passed as ``metadata`` at login (``{}`` if nothing), decrypted.
    metadata: dict[str, Any]


_MISS: Lookup[Any] = Lookup(None)
_MOVED: Lookup[Any] = Lookup(None, moved=True)


class SessionStore(Generic[T]):
    """Creates, loads, saves, regenerates and deletes sessions.

    Get one from :func:`open_session_store`. Belongs to the event loop it was opened on.
    Close it with :meth:`aclose` or ``async with store:``.

    Errors: :class:`~redis_session.SessionConflict` when a save or regenerate lost a race;
    :class:`~redis_session.SessionDataError` for data that cannot be stored;
    :class:`~redis_session.StoreUnavailable` (and its subclass
    :class:`~redis_session.PoolTimeout`) when Redis cannot be reached, from every method
    including :meth:`load`, because "no session" and "the store is down" call for different
    answers (a login page versus an error page); :class:`~redis_session.UsageError` for a
    call it cannot honour (an id that is not a ``str``, a ``remember_me`` that is not a
    ``bool``, a :class:`Session` of another store), before anything is read or written.
    Sessions expire by the Redis server's clock, not this host's.
    """

    def __init__(
        self,
        cfg: SessionConfig,
        provider: Provider,
        codec: Codec[T],
        keyring: KeyRing,
        index: UserIndex | None = None,
    ) -> None:
        self._config = cfg
        self._provider = provider
        self._codec = codec
        self._keyring = keyring
        #: keyring.has_previous, read once: a keyring's secrets never change.
        self._rotating = keyring.has_previous
        self._ids = IdLayout(f"{cfg.name}:".encode(), tagged=provider.sharded)
        self._expiration_ms = _ms(cfg.expiration)
        self._remember_me_ms = _ms(cfg.remember_me)
        self._inactivity_ms = _ms(cfg.inactivity)
        self._maximum_data_size = cfg.maximum_data_size
        index_secret = _index_secret(cfg)
        if index is None:
            index = UserIndex(index_secret)
        self._index = index
        #: Sessions' metadata lives in the user's index and is never re-encrypted by a save:
        #: it is sealed under the index secret, which stays across rotations of ``secret``.
        self._metadata_ring = KeyRing.from_secrets(index_secret)
        #: During a rotation without index_secret, the user index key would change with the
        #: secret: operations that find a user's sessions by name refuse (see _index_key_for).
        self._index_moves = bool(cfg.previous_secrets) and cfg.index_secret is None
        self._limit = cfg.max_sessions_per_user
        self._evict = cfg.session_limit_action == "evict_oldest"
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    @property
    def config(self) -> SessionConfig:
        """The configuration this store was opened with (resolved: defaults filled in)."""
        return self._config

    @property
    def data_type(self) -> type[T]:
        """The type of ``data`` this store keeps: ``dict`` or the attrs class it was opened with."""
        return self._codec.data_type

    async def create(
        self,
        data: T,
        *,
        remember_me: bool = False,
        domain: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session[T]:
        """Store ``data`` as a new session and return it; its :attr:`~Session.id` is new.

        With ``user`` the session belongs to that user (see :meth:`regenerate`, the usual
        way to log in): it gets a :attr:`~Session.public_id`, is listed by
        :meth:`list_sessions` with ``metadata`` (a JSON-serializable mapping, encrypted at
        rest), can be revoked, and counts against ``session.max_sessions_per_user``
        (:class:`~redis_session.SessionLimitReached` when the login is denied).

        The session lasts ``expiration`` (``remember_me`` with ``remember_me=True``) and,
        unless ``remember_me``, ends earlier after ``inactivity`` without a load or save.
        ``domain`` (a request's host, or a cookie domain) picks the ``session.cookies`` entry
        whose durations apply; without it the top-level ones do. Raises
        :class:`~redis_session.SessionDataError` if ``data`` cannot be serialized or is larger
        than ``session.maximum_data_size``, and :class:`~redis_session.UsageError` if
        ``remember_me`` is not a ``bool``, remember-me is disabled (``remember_me: -1``), or
        no cookie entry serves ``domain``.
        """
        self._check_open()
        _check_flag(remember_me, "create")
        lifetime, inactivity = self._clocks(remember_me, domain, "create")
        if user is not None or metadata is not None:
            return await self._create_owned(
                data,
                remember_me,
                lifetime=lifetime,
                inactivity=inactivity,
                user=user,
                metadata=metadata,
            )
        provider = self._provider
        # One deadline for every try, so a retry cannot stretch the call past redis.timeout.
        deadline = provider.deadline()
        ids = self._ids
        session_id = ids.new()
        key = self._keyring.redis_key(session_id, ids.prefix(session_id))
        outcome = CREATED
        for _ in range(_CREATE_ATTEMPTS):
            # Stamped by the provider's clock as best known; a stamp it disagrees with is
            # refused (nothing stored) and the next one follows its clock.
            now = provider.now_ms()
            payload = self._encode(now, remember_me, data)
            record = self._seal(key, payload, now + lifetime, inactivity)
            outcome = await provider.create(key, record, now, deadline)
            if outcome == CREATED:
                return Session(
                    session_id,
                    data,
                    created_ms=now,
                    deadline_ms=now + lifetime,
                    inactivity_ms=inactivity,
                    remember_me=remember_me,
                    version=record.version,
                    key=key,
                    store=self,
                )
            if outcome != CLOCK:  # pragma: no cover - 2**-256 odds
                session_id = ids.new()
                key = self._keyring.redis_key(session_id, ids.prefix(session_id))
        if outcome == CLOCK:
            msg = (
                f"could not stamp a new session by the {provider.name} server's clock: its "
                "clock kept changing against this host's, or this event loop stalled for "
                "longer than the session's lifetime; nothing was stored"
            )
            raise StoreUnavailable(msg)
        msg = "could not find a free session id"  # pragma: no cover - 2**-256 odds
        raise SessionConflict(msg)  # pragma: no cover

    async def load(self, session_id: str | None) -> Session[T] | None:
        """Return the session, or ``None`` if there is none; slides its inactivity clock.

        ``None`` covers a missing id (``None``: a request without a session cookie), an id
        that is malformed, unknown, expired or idle too long, and data that is tampered with,
        written under a secret no longer configured, or no longer fits ``data_type`` (those
        last cases are logged as warnings, without the id, and the data is left in place).
        Raises :class:`~redis_session.StoreUnavailable` when Redis is down, and
        :class:`~redis_session.UsageError` if ``session_id`` is neither a ``str`` nor ``None``.
        """
        found = await self._find(session_id, "load")
        return None if found is MOVED else found

    async def lookup(self, session_id: str | None) -> Lookup[T]:
        """Load the session as :meth:`load` does, and say why there is none (one round trip).

        Returns a :class:`Lookup`: its ``session`` is what :meth:`load` returns; its ``moved``
        tells an id regenerated moments ago (a request that raced a login, carrying the old
        id) from one that is unknown, expired or deleted. Raises as :meth:`load`.
        """
        found = await self._find(session_id, "lookup")
        if found is MOVED:
            return _MOVED
        return _MISS if found is None else Lookup(found)

    async def _find(self, session_id: str | None, method: str) -> Session[T] | Moved | None:
        # MOVED only when the provider found a tombstone.
        if self._closed:
            self._check_open()
        if session_id is None:
            # The common case of a request without a cookie: no session, not a bug. delete()
            # still refuses None, where silently doing nothing would leave a logout undone.
            return None
        if type(session_id) is not str:
            session_id = _plain_id(session_id, method)
        keys = self._keys_of(session_id)
        if keys is None:
            return None
        found = await self._provider.load(keys)
        if found is None or found is MOVED:
            return found
        return self._opened(session_id, keys, found)

    def _keys_of(self, session_id: str) -> list[bytes] | None:
        """Return the key names a load of ``session_id`` looks under; None if it is malformed."""
        ids = self._ids
        if not ids.valid(session_id):
            return None
        keyring = self._keyring
        prefix = ids.prefix(session_id)
        keys = [keyring.redis_key(session_id, prefix)]
        if self._rotating:
            # During a secret rotation, sessions written before it live under their old key
            # name until their next save moves them. All names go in one atomic lookup, so a
            # load racing with that move finds the session under one name or the other.
            keys += keyring.previous_redis_keys(session_id, prefix)
        return keys

    def _opened(
        self, session_id: str, keys: list[bytes], found: tuple[int, Record]
    ) -> Session[T] | None:
        """Return the session a load found (decrypted, decoded); None (logged) if unusable."""
        index, record = found
        key = keys[index]
        public_id = record.public_id
        aad = _plain_aad(key, record) if public_id is None else _aad(key, record)
        plaintext = self._keyring.decrypt(record.blob, aad)
        if plaintext is None:
            logger.warning(
                "ignoring a stored session that does not decrypt: tampered with, or written "
                "under a secret that is not configured (secret or previous_secrets)"
            )
            return None
        decoded = self._codec.decode(plaintext)
        if decoded is None:
            logger.warning(
                "ignoring a stored session whose data does not decode as %s",
                self._codec.data_type.__qualname__,
            )
            return None
        created, remember_me, data = decoded
        # Positional: a keyword call costs more, and one is built per load.
        return Session(
            session_id, data, created, record.deadline_ms, record.inactivity_ms, remember_me,
            record.version, key, self, record.user,
            None if public_id is None else public_id.decode(),
        )  # fmt: skip

    async def save(self, session: Session[T]) -> None:
        """Persist ``session.data``, if nobody else changed the session since it was loaded.

        Also slides the inactivity clock. Raises :class:`~redis_session.SessionConflict` if the
        session was saved, regenerated or deleted elsewhere since this object was loaded (or
        last saved), or has expired; nothing is written then. After a successful save the same
        object can be saved again. If a save is cancelled (or fails with
        :class:`~redis_session.StoreUnavailable`) it may or may not have been applied; the next
        save of the same object then raises :class:`~redis_session.SessionConflict` if it was,
        so reload before retrying. Raises :class:`~redis_session.UsageError` for anything but
        a :class:`Session` this store created or loaded.
        """
        if self._closed:
            self._check_open()
        if type(session) is not Session or session._store is not self:
            self._check_session(session, "save")
        payload = self._encode(session._created_ms, session._remember_me, session.data)
        keyring = self._keyring
        # Without previous secrets the key a session was loaded under is the current one; only
        # during a rotation can it differ (and the session then moves). Saves an HMAC.
        key = (
            keyring.redis_key(session.id, self._ids.prefix(session.id))
            if self._rotating
            else session._key
        )
        record = self._seal(
            key,
            payload,
            session._deadline_ms,
            session._inactivity_ms,
            None if session._user is None else self._owner(session),
        )
        if key == session._key:
            saved = await self._provider.save(key, session._version, record)
        else:
            # Loaded under a previous secret's key name: move it to the current one, atomically
            # (a concurrent load looks under both names in one step).
            moved = await self._provider.regenerate(
                session._key,
                key,
                session._version,
                record,
                operation="save",
                tombstone=False,
                login=self._entry(session, session._created_ms, session.remember_me, None),
            )
            saved = moved == CREATED
        if not saved:
            raise SessionConflict(_CONFLICT)
        session._version = record.version
        session._key = key

    async def regenerate(
        self,
        session: Session[T],
        *,
        remember_me: bool | None = None,
        domain: str | None = None,
        user: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Session[T]:
        """Move the session to a new id and return it; the old id stops working at once.

        With ``user`` (a login) the new session belongs to that user, in the same atomic step:
        it gets a :attr:`~Session.public_id` and an entry in the user's list with
        ``metadata`` (a JSON-serializable mapping such as the user agent and IP, encrypted at
        rest); ``session.max_sessions_per_user`` is enforced (with ``deny``,
        :class:`~redis_session.SessionLimitReached` and nothing changes). A session that
        already belongs to ``user`` keeps its public id (``metadata`` then replaces its
        metadata); one of another user raises :class:`~redis_session.UsageError` (delete it
        and create a new one). A session of a user keeps its user across every regenerate.

        Call it when privileges change (after a login) against session fixation. The new
        session holds ``session.data`` as it is now. It keeps ``created_at``, ``expires_at``
        and ``remember_me``, unless ``remember_me`` switches the kind (a login with "remember
        me" ticked): then, in the same atomic step, its clocks restart now with that kind's
        durations (of the ``session.cookies`` entry serving ``domain``, as in :meth:`create`).
        Raises :class:`~redis_session.SessionConflict` and
        :class:`~redis_session.UsageError` under the same conditions as :meth:`save` and
        :meth:`create`; the old id keeps working when it raises.
        """
        self._check_open()
        self._check_session(session, "regenerate")
        kind = session.remember_me
        switch: tuple[int, int] | None = None
        if remember_me is not None:
            _check_flag(remember_me, "regenerate")
            if remember_me != kind:
                kind = remember_me
                switch = self._clocks(kind, domain, "regenerate")
        if switch is None and domain is not None:
            # Not used for the clocks, but a domain no entry serves is still a caller's bug.
            self._clocks(kind, domain, "regenerate")
        meta: bytes | None = None
        if user is not None or metadata is not None:
            if session._user is None:
                return await self._login(session, kind, switch, user, metadata)
            if user is not None:
                base, _ = self._user_base(user, "regenerate")
                if base != session._user:
                    msg = (
                        "regenerate(user=...): this session belongs to another user; delete "
                        "it and create a new one for this user"
                    )
                    raise UsageError(msg)
            if metadata is not None:
                assert session._public_id is not None  # set with _user
                meta = self._seal_metadata(session._user, session._public_id, metadata)
        provider = self._provider
        # One deadline for every try, so restamping cannot stretch the call.
        deadline = provider.deadline()
        old_clock = (session._deadline_ms, session._inactivity_ms)
        # Same slot tag as the old id (on a cluster): the move stays within one slot.
        session_id = self._ids.new(like=session.id)
        key = self._keyring.redis_key(session_id, self._ids.prefix(session_id))
        for _ in range(_CREATE_ATTEMPTS):
            created_ms, deadline_ms, inactivity_ms = session._created_ms, *old_clock
            stamp = None
            if switch is not None:
                # The clocks restart now, stamped like create's by the provider's clock as
                # best known; the script refuses a stamp its clock disagrees with (CLOCK).
                lifetime, inactivity_ms = switch
                created_ms = stamp = provider.now_ms()
                deadline_ms = created_ms + lifetime
            payload = self._encode(created_ms, kind, session.data)
            record = self._seal(key, payload, deadline_ms, inactivity_ms, self._owner(session))
            outcome = await provider.regenerate(
                session._key,
                key,
                session._version,
                record,
                deadline,
                clock=old_clock,
                created_ms=stamp,
                login=self._entry(session, created_ms, kind, meta),
            )
            if outcome == CREATED:
                return Session(
                    session_id,
                    session.data,
                    created_ms=created_ms,
                    deadline_ms=deadline_ms,
                    inactivity_ms=inactivity_ms,
                    remember_me=kind,
                    version=record.version,
                    key=key,
                    store=self,
                    user=session._user,
                    public_id=session._public_id,
                )
            if outcome != CLOCK or switch is None:
                raise SessionConflict(_CONFLICT)
        msg = (
            f"could not stamp the regenerated session by the {provider.name} server's clock: "
            "its clock kept changing against this host's; nothing was changed"
        )
        raise StoreUnavailable(msg)

    async def update(
        self,
        session_id: str,
        fn: Callable[[T], T | Awaitable[T | None] | None],
        *,
        attempts: int = _UPDATE_ATTEMPTS,
    ) -> Session[T] | None:
        """Load the session, apply ``fn`` to its data and save it, retrying lost races.

        For read-modify-write work such as counters: ``fn`` gets the current data and returns
        the new data, or ``None`` after changing it in place (``lambda d: d.update(n=1)``); it
        may be a coroutine function. When another writer saved the session in between, the
        save raises nothing: the session is loaded again and ``fn`` applied again (so ``fn``
        must not have other effects), up to ``attempts`` times with short random pauses,
        after which :class:`~redis_session.SessionConflict` is raised. Returns the saved
        session, or ``None`` if there is no session (unknown, expired or deleted: nothing is
        created). When it is cancelled or raises :class:`~redis_session.StoreUnavailable`,
        the last save may or may not have been applied: ``fn``'s change is then in the
        session at most once, never twice (a save resent after a broken connection that
        finds the session changed since raises :class:`~redis_session.ConnectionLost`
        rather than a conflict that would be retried).
        """
        self._check_open()
        given: object = fn  # callers ignore the annotation; check what really came
        if not callable(given):
            msg = f"update() takes a function of the session data, got {type(given).__qualname__}"
            raise UsageError(msg)
        if type(attempts) is not int or attempts < 1:
            msg = f"update(attempts=...) takes a whole number of at least 1, got {attempts!r}"
            raise UsageError(msg)
        pause = 0.001
        for attempt in range(attempts):
            session = await self.load(session_id)
            if session is None:
                return None
            result = fn(session.data)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                session.data = result
            try:
                await self.save(session)
            except SessionConflict:
                if attempt + 1 == attempts:
                    raise
                # Full jitter: contenders that lost together do not come back together.
                await anyio.sleep(pause * secrets.randbelow(1001) / 1000)
                pause = min(pause * 2, _UPDATE_PAUSE_MAX)
            else:
                return session
        raise AssertionError  # pragma: no cover - the loop returns or raises

    async def delete(self, session_or_id: Session[T] | str) -> None:
        """Delete the session; its id stops working, and no concurrent save can revive it.

        Takes a :class:`Session` of this store, or an id (any ``str``). Deleting an unknown or
        malformed id does nothing. Raises :class:`~redis_session.UsageError` for anything
        else, including a session of another store (pass its id to delete it here).
        """
        self._check_open()
        if isinstance(session_or_id, Session):
            self._check_session(session_or_id, "delete")
            session_id = session_or_id.id
            keys = {session_or_id._key}
        else:
            session_id = _plain_id(session_or_id, "delete")
            keys = set()
            if not self._ids.valid(session_id):
                return
        prefix = self._ids.prefix(session_id)
        keys.add(self._keyring.redis_key(session_id, prefix))
        keys.update(self._keyring.previous_redis_keys(session_id, prefix))
        await self._provider.delete(sorted(keys))

    def statistics(self) -> PoolStatistics:
        """Return the connection pool figures (all zeros for the in-memory provider)."""
        return self._provider.statistics()

    async def aclose(self) -> None:
        """Close connections and background tasks. Safe to call twice, and concurrently.

        The cleanup runs shielded (each step is bounded by the pools' own cleanup timeouts):
        a caller cancelled while closing does not stop it half-way, and a second call waits
        for the same cleanup instead of returning before it ends.
        """
        if self._closing is None:
            # From another thread's live loop: refuse before anything changes, so the owner
            # can still use and close the store.
            self._provider.check_caller()
        self._closed = True
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._provider.aclose())
        await asyncio.shield(self._closing)

    async def __aenter__(self) -> SessionStore[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.statistics()
        state = "closed" if self._closed else "open"
        return (
            f"<SessionStore {self._provider.name}, {state} [Connections: {s.open} open, "
            f"{s.in_use} in use, {s.idle} idle, {s.max_connections} max | "
            f"Commands: {s.waiting} waiting]>"
        )

    def _clocks(self, remember_me: bool, domain: str | None, method: str) -> tuple[int, int]:
        """Return (lifetime, inactivity) in ms for a new session of this kind on ``domain``."""
        cfg = self._config
        if domain is None:
            expiration, inactivity, remember = cfg.expiration, cfg.inactivity, cfg.remember_me
            option = "session.remember_me"
        else:
            entry = cookie_for(cfg, domain)
            if entry is None:
                if cfg.cookies:
                    msg = (
                        f"{method}(domain=...): no session.cookies entry serves "
                        f"{domain!r} (configured: "
                        f"{', '.join(repr(c.domain) for c in cfg.cookies)})"
                    )
                    raise UsageError(msg)
                expiration, inactivity, remember = cfg.expiration, cfg.inactivity, cfg.remember_me
                option = "session.remember_me"
            else:
                # Loading fills every entry in; a hand-built one may leave options unset.
                expiration = entry.expiration if entry.expiration is not None else cfg.expiration
                inactivity = entry.inactivity if entry.inactivity is not None else cfg.inactivity
                remember = entry.remember_me if entry.remember_me is not None else cfg.remember_me
                index = cfg.cookies.index(entry)
                option = f"session.cookies[{index}].remember_me"
        if not remember_me:
            return _ms(expiration), _ms(inactivity)
        if remember <= dt.timedelta(0):
            value = "negative" if remember else "zero"
            msg = f"{method}(remember_me=True): remember-me is disabled ({option} is {value})"
            raise UsageError(msg)
        return _ms(remember), 0

    def _check_open(self) -> None:
        if self._closed:
            msg = "the session store is closed"
            raise StoreClosed(msg)

    def _check_session(self, session: object, method: str) -> None:
        if not isinstance(session, Session):
            msg = (
                f"{method}() takes a Session from this store's create() or load(), "
                f"got {type(session).__qualname__}"
            )
            raise UsageError(msg)
        if session._store is not self:
            # Writing it here would put another store's session under this store's key names
            # and secret (or move or delete another app's key).
            msg = (
                f"{method}(): this Session was created or loaded by another SessionStore; "
                "use that store, or load the id with this one"
            )
            raise UsageError(msg)

    def _encode(self, created_ms: int, remember_me: bool, data: T) -> bytes:
        payload = self._codec.encode(created_ms, remember_me, data)
        if len(payload) > self._maximum_data_size:
            msg = (
                f"session data is {len(payload)} bytes serialized, more than "
                f"session.maximum_data_size ({self._maximum_data_size} bytes)"
            )
            raise SessionDataError(msg)
        return payload

    def _seal(
        self,
        key: bytes,
        payload: bytes,
        deadline_ms: int,
        inactivity_ms: int,
        owner: tuple[bytes, bytes] | None = None,
    ) -> Record:
        # The version and the nonce from one system call.
        fresh = os.urandom(_VERSION_BYTES + _NONCE_BYTES)
        version = binascii.b2a_hex(fresh[:_VERSION_BYTES])
        nonce = fresh[_VERSION_BYTES:]
        if owner is None:
            # associated_data's bytes, in one step.
            aad = b"%s|%s|%d|%d" % (key, version, deadline_ms, inactivity_ms)
            blob = self._keyring.encrypt(payload, aad, nonce)
            return Record(version, deadline_ms, inactivity_ms, blob)
        aad = associated_data(key, version, deadline_ms, inactivity_ms)
        # A session of a user is bound to its user and public id too: a blob copied into
        # another user's session, or a public id edited, does not decrypt.
        aad = b"|".join((aad, *owner))
        blob = self._keyring.encrypt(payload, aad, nonce)
        return Record(version, deadline_ms, inactivity_ms, blob, *owner)

    # -- sessions of users (docs/users.md) ----------------------------------------------------

    def _user_base(self, user: str, method: str) -> tuple[bytes, str | None]:
        """Return the user's base key B and, on a cluster, its slot tag U.

        Raises :class:`UsageError` during a secret rotation without ``index_secret``: B is
        keyed by ``secret`` then, so the sessions logged in before the rotation are under
        another B, and answering from the new one would be wrong (a revoke that misses them).
        """
        if self._index_moves:
            msg = (
                f"{method}() needs session.index_secret while previous_secrets is set: the "
                "user index is keyed by secret otherwise, and the sessions logged in before "
                "the rotation are indexed under the old one; set index_secret to the secret "
                "they were indexed under (the previous secret, if index_secret was never set)"
            )
            raise UsageError(msg)
        return self._ids.user_base(self._index.digest(_check_user(user, method)))

    def _of_another_user(self, session: Session[T], user: str) -> bool:
        """Whether ``session`` belongs to a user other than ``user`` (for the web login)."""
        if session._user is None:
            return False
        base, _ = self._user_base(user, "login")
        return base != session._user

    @staticmethod
    def _owner(session: Session[T]) -> tuple[bytes, bytes] | None:
        if session._user is None or session._public_id is None:
            return None
        return session._user, session._public_id.encode()

    def _entry(
        self, session: Session[T], created_ms: int, remember_me: bool, metadata: bytes | None
    ) -> Login | None:
        """Return the index entry a move of ``session`` rewrites (None: it has no user)."""
        if session._user is None or session._public_id is None:
            return None
        return Login(session._user, session._public_id.encode(), created_ms, remember_me, metadata)

    def _new_public_id(self, base: bytes) -> str:
        # H (the user's 22 characters, the end of B) then 96 random bits.
        return base.rsplit(b":", 1)[1].decode() + secrets.token_urlsafe(_PUBLIC_RANDOM_BYTES)

    def _base_of(self, public_id: str) -> bytes | None:
        """Return the base key a public id names, or None if it is not one of ours."""
        if _PUBLIC_ID_PATTERN.fullmatch(public_id) is None:
            return None
        try:
            digest = base64.urlsafe_b64decode(public_id[:_USER_HASH_LENGTH] + "==")
        except ValueError:  # pragma: no cover - valid() admits only base64url characters
            return None
        base, _ = self._ids.user_base(digest)
        # A non-canonical encoding (the last character's spare bits set) names nobody.
        if not base.endswith(public_id[:_USER_HASH_LENGTH].encode()):
            return None
        return base

    def _seal_metadata(self, base: bytes, public_id: str, metadata: object) -> bytes:
        if not isinstance(metadata, Mapping):
            msg = f"metadata must be a mapping (dict), got {type(metadata).__qualname__}"
            raise UsageError(msg)
        plain = dict(metadata)
        what = "metadata must be JSON data (str keys; str, number, bool, None, list, dict)"
        try:
            text = json.dumps(plain, separators=(",", ":"), allow_nan=False)
            # json.dumps turns int keys into str and tuples into lists: listed back, they would
            # differ from what was given. Refused instead of changed.
            same = json.loads(text) == plain
        except (TypeError, ValueError) as exc:
            raise SessionDataError(f"{what}: {exc}") from None
        if not same:
            raise SessionDataError(f"{what}: it would not read back equal (a non-str key?)")
        payload = text.encode()
        if len(payload) > self._maximum_data_size:
            msg = (
                f"metadata is {len(payload)} bytes serialized, more than "
                f"session.maximum_data_size ({self._maximum_data_size} bytes)"
            )
            raise SessionDataError(msg)
        return self._metadata_ring.encrypt(payload, _metadata_aad(base, public_id.encode()))

    def _open_metadata(self, base: bytes, listed: Listed) -> dict[str, Any]:
        if listed.metadata is None:
            return {}
        plain = self._metadata_ring.decrypt(listed.metadata, _metadata_aad(base, listed.public_id))
        if plain is None:
            logger.warning("ignoring session metadata that does not decrypt")
            return {}
        try:
            value = json.loads(plain)
        except ValueError:  # pragma: no cover - it authenticated, so we wrote it
            return {}
        return value if isinstance(value, dict) else {}

    def _login_of(
        self,
        base: bytes,
        public_id: str,
        created_ms: int,
        remember_me: bool,
        metadata: bytes | None,
    ) -> Login:
        return Login(
            base,
            public_id.encode(),
            created_ms,
            remember_me,
            metadata,
            limit=self._limit,
            evict=self._evict,
        )

    async def _create_owned(
        self,
        data: T,
        remember_me: bool,
        *,
        lifetime: int,
        inactivity: int,
        user: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Session[T]:
        if user is None:
            msg = "create(metadata=...) needs user=...: metadata describes a user's session"
            raise UsageError(msg)
        base, tag = self._user_base(user, "create")
        provider = self._provider
        deadline = provider.deadline()
        ids = self._ids
        public_id = self._new_public_id(base)
        meta = None if metadata is None else self._seal_metadata(base, public_id, metadata)
        session_id = ids.new(tag=tag)
        key = self._keyring.redis_key(session_id, ids.prefix(session_id))
        owner = (base, public_id.encode())
        for _ in range(_CREATE_ATTEMPTS):
            now = provider.now_ms()
            payload = self._encode(now, remember_me, data)
            record = self._seal(key, payload, now + lifetime, inactivity, owner)
            login = self._login_of(base, public_id, now, remember_me, meta)
            outcome = await provider.login(key, record, login, deadline, created_ms=now)
            if outcome == CREATED:
                return Session(
                    session_id,
                    data,
                    created_ms=now,
                    deadline_ms=now + lifetime,
                    inactivity_ms=inactivity,
                    remember_me=remember_me,
                    version=record.version,
                    key=key,
                    store=self,
                    user=base,
                    public_id=public_id,
                )
            if outcome == LIMIT:
                raise SessionLimitReached(_limit_message(self._limit))
            if outcome != CLOCK:  # pragma: no cover - 2**-256 odds
                session_id = ids.new(tag=tag)
                key = self._keyring.redis_key(session_id, ids.prefix(session_id))
        msg = (
            f"could not stamp a new session by the {provider.name} server's clock: its "
            "clock kept changing against this host's; nothing was stored"
        )
        raise StoreUnavailable(msg)

    async def _login(
        self,
        session: Session[T],
        kind: bool,
        switch: tuple[int, int] | None,
        user: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Session[T]:
        """Regenerate a session without a user into a session of ``user`` (one login)."""
        if user is None:
            msg = "regenerate(metadata=...) needs user=... for a session without a user"
            raise UsageError(msg)
        base, tag = self._user_base(user, "regenerate")
        provider = self._provider
        deadline = provider.deadline()
        public_id = self._new_public_id(base)
        meta = None if metadata is None else self._seal_metadata(base, public_id, metadata)
        old_clock = (session._deadline_ms, session._inactivity_ms)
        # On a cluster the new id is in the user's slot; the old one usually is not.
        session_id = self._ids.new(tag=tag)
        key = self._keyring.redis_key(session_id, self._ids.prefix(session_id))
        across = tag is not None and self._ids.tag_of(session.id) != tag
        owner = (base, public_id.encode())
        for _ in range(_CREATE_ATTEMPTS):
            created_ms, deadline_ms, inactivity_ms = session._created_ms, *old_clock
            stamp = None
            if switch is not None:
                lifetime, inactivity_ms = switch
                created_ms = stamp = provider.now_ms()
                deadline_ms = created_ms + lifetime
            payload = self._encode(created_ms, kind, session.data)
            record = self._seal(key, payload, deadline_ms, inactivity_ms, owner)
            login = self._login_of(base, public_id, created_ms, kind, meta)
            if across:
                # PLACE in the user's slot, then FENCE the old session (docs/users.md, 5),
                # shielded: a caller cancelled in between would leave half a login (the new
                # session listed and counted, the old one still working). Each step is bounded
                # by the deadline; a cancellation is delivered once both are done or undone.
                login = attrs.evolve(login, origin=session._key)
                outcome = await _to_the_end(
                    self._place_and_fence(session, key, record, login, deadline, stamp=stamp)
                )
            else:
                outcome = await provider.login(
                    key,
                    record,
                    login,
                    deadline,
                    old_key=session._key,
                    expected=session._version,
                    clock=old_clock,
                    created_ms=stamp,
                )
            if outcome == LIMIT:
                raise SessionLimitReached(_limit_message(self._limit))
            if outcome == CREATED:
                return Session(
                    session_id,
                    session.data,
                    created_ms=created_ms,
                    deadline_ms=deadline_ms,
                    inactivity_ms=inactivity_ms,
                    remember_me=kind,
                    version=record.version,
                    key=key,
                    store=self,
                    user=base,
                    public_id=public_id,
                )
            if outcome != CLOCK or switch is None:
                raise SessionConflict(_CONFLICT)
        msg = (
            f"could not stamp the regenerated session by the {provider.name} server's clock: "
            "its clock kept changing against this host's; nothing was changed"
        )
        raise StoreUnavailable(msg)

    async def _place_and_fence(
        self,
        session: Session[T],
        key: bytes,
        record: Record,
        login: Login,
        deadline: float | None,
        *,
        stamp: int | None,
    ) -> int:
        """PLACE the new session in the user's slot, then FENCE the old one."""
        outcome = await self._provider.login(key, record, login, deadline, created_ms=stamp)
        if outcome == CREATED:
            await self._fence(session, key, record, login, deadline)
        return outcome

    async def _fence(
        self,
        session: Session[T],
        key: bytes,
        record: Record,
        login: Login,
        deadline: float | None,
    ) -> None:
        """Run the FENCE half of a login across slots; undo the PLACE if the old one changed."""
        provider = self._provider
        clock = (session._deadline_ms, session._inactivity_ms)
        try:
            fenced = await provider.fence(
                session._key, session._version, record.version, clock, deadline
            )
        except BaseException:
            # The caller will not get the new id: the placed session is of no use to anyone.
            with anyio.CancelScope(shield=True):
                try:
                    await provider.unplace(key, record.version, login)
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    logger.warning("could not undo a half-done login; it expires on its own")
            raise
        if not fenced:
            await provider.unplace(key, record.version, login, deadline)
            raise SessionConflict(_CONFLICT)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """Return the live sessions of ``user``, oldest first (one round trip).

        Expired, deleted and revoked sessions never appear; listing also drops them from the
        user's index. ``metadata`` is what the login passed, decrypted. Raises
        :class:`~redis_session.UsageError` if ``user`` is not a non-empty ``str``.
        """
        self._check_open()
        base, _ = self._user_base(user, "list_sessions")
        rows = await self._provider.list_sessions(base)
        infos = []
        for row in sorted(rows, key=lambda r: (r.created_ms, r.public_id)):
            expires = row.deadline_ms
            if row.inactivity_ms:
                expires = min(expires, row.last_active_ms + row.inactivity_ms)
            infos.append(
                SessionInfo(
                    public_id=row.public_id.decode(),
                    created_at=_datetime(row.created_ms),
                    last_active_at=_datetime(row.last_active_ms),
                    expires_at=_datetime(expires),
                    remember_me=row.remember_me,
                    metadata=self._open_metadata(base, row),
                )
            )
        return infos

    async def revoke(self, public_id: str) -> bool:
        """End the session with this public id; whether a live session was ended.

        Its id stops working at once; a save or regenerate racing with it finds no session
        (:class:`~redis_session.SessionConflict`). A public id that is unknown, malformed or
        of another store returns ``False``. Raises :class:`~redis_session.UsageError` if it
        is not a ``str``.
        """
        self._check_open()
        public_id = _plain_id(public_id, "revoke")
        base = self._base_of(public_id)
        if base is None:
            return False
        return await self._provider.revoke(base, public_id.encode())

    async def revoke_user(self, user: str, *, keep: str | None = None) -> None:
        """End every session of ``user``, but the one whose public id is ``keep``.

        One round trip whatever the number of sessions: a not-before mark in the user's base
        key kills every session logged in before it, including one being loaded, saved or
        regenerated at that moment; a login that completes after it lives. ``keep`` ("log
        out everywhere else") must be a public id of this user's. Raises
        :class:`~redis_session.UsageError` for a ``user`` that is not a non-empty ``str`` or
        a ``keep`` of another user.
        """
        self._check_open()
        base, _ = self._user_base(user, "revoke_user")
        kept: bytes | None = None
        if keep is not None:
            keep = _plain_id(keep, "revoke_user")
            if self._base_of(keep) != base:
                msg = "revoke_user(keep=...) takes a public id of one of this user's sessions"
                raise UsageError(msg)
            kept = keep.encode()
        await self._provider.revoke_all(base, kept)
