"""A web request's session lifecycle, shared by every framework adapter (ASGI, aiohttp).

The adapter calls :meth:`WebSessions.begin` before the app runs and :meth:`WebSessions.finish`
when the app starts its response (the cookie goes in the response's headers, so the save
happens then, once). Costs, in Redis commands per request (docs/web.md, "Costs"):

- no session cookie: 0 (nothing is loaded, and an anonymous visitor writes nothing until the
  app stores something in the session);
- an excluded path: 0, cookie or not (until the app calls ``load_session``);
- a cookie: 1 load, however often the app reads; plus 1 save if the app changed the data
  (the cookie's name sent several times: 1 more load per extra value, only after a miss).

Failures: :class:`~redis_session.StoreUnavailable` from ``begin``, ``finish`` or a helper is
the adapter's to answer (503 by default) and never turns into "no session": the cookie is left
alone. A cookie that does not load (expired, revoked, tampered with, written under a forgotten
secret, or not an id at all) is cleared and never used as an id; except an id regenerated
moments ago (a request that raced a login): clearing would drop the login's new cookie, so
nothing is sent. A save that loses a race is
merged (``_merge``) and retried; only a real clash, or a session that ended meanwhile, is a
:class:`~redis_session.SessionConflict` (a late save never brings back a deleted or
regenerated session: the store's compare-and-set refuses it, and a reload finds nothing).

The store opens lazily: if Redis is down when the app starts, the app starts anyway, one log
line says so, and a request that needs a session tries again (concurrent requests share one
attempt; for a second after a failed attempt, requests get the same failure without a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import anyio
import attrs

from ._config import SessionConfig
from ._config_loading import load_config, resolve_config
from ._cookies import CookieSpec, id_shaped, session_cookies
from ._cookies import cookie_spec as _cookie_spec
from ._errors import SessionConflict, StoreClosed, StoreUnavailable, UsageError
from ._merge import MergeConflict, merge, snapshot
from ._opener import ConfigSource, open_session_store
from ._store import Session, SessionStore
from ._web_session import WebSession

__all__ = [
    "Exclude",
    "PlainResponse",
    "WebSessions",
    "cache_headers",
    "check_choice",
    "conflict_response",
    "finish_response",
    "unavailable_response",
]

logger = logging.getLogger("redis_session")

#: Paths whose requests do not load the session: path prefixes (``"/static"`` covers
#: ``/static`` and everything under ``/static/``), or a function of the path.
Exclude = Callable[[str], bool] | Iterable[str]

#: How often the end-of-request save merges and retries after losing a race, and the longest
#: pause between tries (full jitter): a hundred concurrent writers of one session get through.
_SAVE_ATTEMPTS = 64
_PAUSE_MAX = 0.05
#: How many values of a cookie name sent several times are tried, in order: each miss costs a
#: round trip, and a browser legitimately holds two or three (host-only, domain, a sibling's).
_CANDIDATES = 3
#: After a failed open, requests fail at once for this long instead of each trying to connect
#: again: Redis is not hammered (nor the log filled) while it is down, and the app still heals
#: within this pause of Redis returning.
_REOPEN_PAUSE = 1.0
#: Cookie rules kept per ``Host`` value (working them out is most of a cookie-only request's
#: own cost). The header is the client's to choose, so the cache is bounded: emptied when full;
#: and only values no longer than a host name with a port are kept (some servers take a Host
#: of megabytes, and 256 of those would stay in memory).
_SPECS_KEPT = 256
_HOST_KEPT_MAX = 300

_SessionData = dict[str, Any]
_Store = SessionStore[_SessionData]
#: An error page must not be cached: the next try may well succeed.
_TEXT = (("content-type", "text/plain; charset=utf-8"), ("cache-control", "no-store"))


@attrs.frozen
class PlainResponse:
    """A framework-neutral plain-text response: what the adapters send by default on failure."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def unavailable_response() -> PlainResponse:
    """Return the default answer when the session store is unreachable: 503, retry shortly."""
    return PlainResponse(
        503,
        b"Service Unavailable: the session store cannot be reached; try again shortly.\n",
        (*_TEXT, ("retry-after", "5")),
    )


def conflict_response() -> PlainResponse:
    """Return the default answer to a save that clashed with a concurrent change: 409."""
    return PlainResponse(
        409,
        b"Conflict: the session was changed by another request at the same time; "
        b"this request's changes were not saved.\n",
        _TEXT,
    )


def _exclusion(exclude: Exclude) -> Callable[[str], bool]:
    if callable(exclude):
        return exclude
    if isinstance(exclude, str):
        # A lone string would be iterated character by character: "/static" would exclude "/".
        exclude = (exclude,)
    given: object = exclude  # callers ignore the annotation (exclude=settings.get(...)): check
    if not isinstance(given, Iterable) or isinstance(given, bytes | Mapping):
        msg = (
            "exclude takes path prefixes (a list of str such as ['/static']) or a function of "
            f"the path, got {type(given).__name__}"
        )
        raise UsageError(msg)
    prefixes: list[str] = []
    for p in given:
        if not isinstance(p, str):
            msg = f"exclude: a path prefix is a str such as '/static', got {type(p).__name__}"
            raise UsageError(msg)
        if not p.rstrip("/").startswith("/"):  # "/" alone would exclude every path
            msg = f"exclude: a path prefix starts with '/' and is not '/' alone, got {p!r}"
            raise UsageError(msg)
        if any(c in p for c in "*?["):
            # Taken literally, "/static/*" would exclude nothing, silently.
            msg = (
                f"exclude: {p!r} looks like a glob; exclude takes path prefixes "
                "('/static' covers /static/app.css) or a function of the path"
            )
            raise UsageError(msg)
        prefixes.append(p.rstrip("/"))

    def excluded(path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in prefixes)

    return excluded


def check_choice(option: str, value: object, word: str) -> None:
    """Refuse an ``on_unavailable``/``on_conflict`` value other than None, ``word`` or a function.

    At construction: a misspelled word would otherwise surface only during an outage (or
    silently mean the default).
    """
    if value is None or value == word or callable(value):
        return
    msg = f"{option} takes None (the default answer), {word!r} or a function; got {value!r}"
    raise UsageError(msg)


def _check_same_site(cfg: SessionConfig, *, secure: bool) -> None:
    """Refuse ``SameSite=None`` without ``Secure``: browsers drop such a cookie outright."""
    if secure:
        return
    places = []
    if cfg.same_site == "none":
        places.append("session.same_site")
    places += [
        f"session.cookies[{i}].same_site ({entry.domain})"
        for i, entry in enumerate(cfg.cookies)
        if entry.same_site == "none" or (entry.same_site is None and cfg.same_site == "none")
    ]
    if places:
        msg = (
            f"{', '.join(places)} is 'none' but secure=False: browsers reject a SameSite=None "
            "cookie without Secure, so no session would stick; use 'lax' or 'strict' for "
            "plain-http development, or keep secure=True"
        )
        raise UsageError(msg)


async def finish_response(sessions: WebSessions, ws: WebSession, status: int) -> list[str]:
    """Save the session as a response of ``status`` starts; return its ``Set-Cookie`` values.

    A 5xx response saves nothing: the app failed (or a framework's error page stands for an
    exception), and its half-done changes must not be stored. The cookie still follows what
    already happened in the store (a login's new id, a logout's clear). Nothing the second
    time (the session was finished already).
    """
    if ws.finished:
        return []
    if status < 500:
        return await sessions.finish(ws)
    ws.finished = True
    return sessions.cookie_headers(ws)


def cache_headers(
    ws: WebSession, cookies: list[str], cache_control: str | None, vary: str | None
) -> dict[str, str]:
    """Return the ``Cache-Control``/``Vary`` values that replace the response's own.

    A response carrying the session's ``Set-Cookie`` must never reach a shared cache (a CDN
    would hand the same session id to every visitor): ``public`` and ``s-maxage`` are
    dropped and ``private`` added, as Rails and ASP.NET do; the app's other directives stay
    (a browser's own cache serves one user). A response made with the session read from the
    store gets ``Vary: Cookie`` (as Django's session middleware adds it).
    """
    out: dict[str, str] = {}
    if cookies:
        kept = [
            d
            for d in (part.strip() for part in (cache_control or "").split(","))
            if d and d.split("=", 1)[0].strip().lower() not in ("public", "private", "s-maxage")
        ]
        out["cache-control"] = ", ".join(["private", *kept])
    if cookies or (ws.cookie_value is not None and ws.state != "not loaded"):
        names = {v.strip().lower() for v in (vary or "").split(",")}
        if not names & {"cookie", "*"}:
            out["vary"] = f"{vary}, Cookie" if vary and vary.strip() else "Cookie"
    return out


class WebSessions:
    """The session layer of one web app: a store (opened lazily) and the cookie rules.

    ``source`` is anything :func:`~redis_session.open_session_store` accepts (the store is
    opened on first need and closed by :meth:`aclose`), or an open
    :class:`~redis_session.SessionStore` of ``dict`` data (used as it is; :meth:`aclose`
    leaves it open). ``secure=False`` drops the cookie's ``Secure`` attribute, for plain-http
    development only. ``exclude`` names paths that never load the session up front.
    """

    def __init__(
        self,
        source: ConfigSource | SessionStore[Any],
        *,
        secure: bool = True,
        exclude: Exclude = (),
    ) -> None:
        given: object = secure  # callers ignore the annotation; check what really came
        if type(given) is not bool:
            msg = f"secure takes True or False, got {type(given).__name__}"
            raise UsageError(msg)
        self._store: SessionStore[_SessionData] | None
        if isinstance(source, SessionStore):
            if source.data_type is not dict:
                msg = (
                    "a web session middleware needs a store of dict data, got one of "
                    f"{source.data_type.__qualname__}"
                )
                raise UsageError(msg)
            self._store, self._owned = source, False
            cfg = source.config
        else:
            # Read now (a bad config fails at start-up, not at the first request); the store
            # itself opens later, so Redis need not be up yet.
            cfg = (
                resolve_config(source) if isinstance(source, SessionConfig) else load_config(source)
            )
            self._store, self._owned = None, True
        # The store opens from what was given (not from cfg: resolving a resolved config twice
        # is the opener's business, and it reads the same source to the same config).
        self._source = source
        #: The configuration (resolved): cookie rules and durations.
        self.config: SessionConfig = cfg
        _check_same_site(cfg, secure=secure)
        self.secure = secure
        self.excluded = _exclusion(exclude)
        self._specs: dict[str | None, CookieSpec] = {}
        self._opening: asyncio.Future[SessionStore[_SessionData]] | None = None
        # The last failed open and the loop time before which no new attempt is made.
        self._failure: StoreUnavailable | None = None
        self._retry_at = 0.0
        self._said_down = False
        self._closed = False

    # -- the store --

    async def start(self) -> None:
        """Open the store now if possible (at app start-up); Redis being down is not an error.

        Each start-up after an :meth:`aclose` (the next lifespan cycle of the same app, as
        test clients run one per test) opens a fresh store: a closed one is never reused.
        Any other failure of the open (a configuration Redis refuses) is raised, for the
        adapter to fail the start-up with.
        """
        self._closed = False
        self._retry_at = 0.0  # a new start-up tries at once
        # Said once by _open; the next request that needs a session tries again.
        with contextlib.suppress(StoreUnavailable):
            await self.store()

    async def store(self) -> SessionStore[_SessionData]:
        """Return the open store, opening it first if needed (one attempt shared by callers).

        Raises :class:`~redis_session.StoreUnavailable` if Redis cannot be reached yet.
        """
        if self._store is not None:
            return self._store
        if self._closed:
            msg = "the web session layer is closed"
            raise StoreClosed(msg)
        if self._opening is None:
            failure = self._failure
            if failure is not None and asyncio.get_running_loop().time() < self._retry_at:
                msg = f"session store unavailable, retrying shortly: {failure}"
                raise StoreUnavailable(msg) from failure
            self._opening = asyncio.ensure_future(self._open())
        # Shielded: a request cancelled while waiting does not cancel the attempt that other
        # requests share; the attempt itself cleans up its connections if it fails.
        return await asyncio.shield(self._opening)

    async def _open(self) -> SessionStore[_SessionData]:
        try:
            store = await open_session_store(self._source)  # type: ignore[arg-type]
        except StoreUnavailable as exc:
            self._failure = exc
            self._retry_at = asyncio.get_running_loop().time() + _REOPEN_PAUSE
            if not self._said_down:
                self._said_down = True
                logger.warning(
                    "session store unavailable (%s): the app runs on, requests that need a "
                    "session get 503, and the store opens when Redis answers",
                    exc,
                )
            raise
        finally:
            self._opening = None
        if self._closed:  # closed while opening: nobody will close it later
            await store.aclose()
            msg = "the web session layer is closed"
            raise StoreClosed(msg)
        if self._failure is not None:
            self._failure = None
            logger.info("session store opened: Redis answers again")
        self._store = store
        return store

    async def aclose(self) -> None:
        """Close the store if this object opened it; a store passed in is left open.

        A store passed in stays in use (requests after an app's shutdown still work with
        it); an owned one is gone, and requests fail with
        :class:`~redis_session.StoreClosed` until :meth:`start` opens a new one.
        """
        if not self._owned:
            return
        self._closed = True
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(opening, return_exceptions=True)
        store, self._store = self._store, None
        if store is not None and self._owned:
            await store.aclose()

    # -- one request --

    async def begin(
        self,
        path: str,
        host: str | None,
        cookie_header: str | None,
        *,
        unavailable_ok: bool = False,
    ) -> WebSession:
        """Return the session of a request; loads it (one round trip) if a cookie came.

        Raises :class:`~redis_session.StoreUnavailable` when the session cannot be loaded:
        answer 503 and leave the cookie alone. With ``unavailable_ok`` it returns the session
        in state ``"unavailable"`` instead (for an app that renders a page without it).
        """
        spec = self._cookie_spec(host)
        values = session_cookies(cookie_header, spec.name)
        if not values:
            ws = WebSession(self, spec, None, "anonymous")
            ws.attach(None)
            return ws
        # The same name several times (a domain cookie beside a host-only one, Authelia's own
        # beside the app's): each id-shaped value is tried in order, a few at most.
        ids = tuple(dict.fromkeys(v for v in values if id_shaped(v)))[:_CANDIDATES]
        ws = WebSession(self, spec, ids[0] if ids else values[0], "not loaded", ids)
        if not self.excluded(path):
            try:
                await self.load(ws)
            except StoreUnavailable:
                if not unavailable_ok:
                    raise
        return ws

    def _cookie_spec(self, host: str | None) -> CookieSpec:
        spec = self._specs.get(host)
        if spec is None:
            spec = _cookie_spec(self.config, host, secure=self.secure)
            if host is None or len(host) <= _HOST_KEPT_MAX:
                if len(self._specs) >= _SPECS_KEPT:
                    self._specs.clear()
                self._specs[host] = spec
        return spec

    async def load(self, ws: WebSession) -> WebSession:
        """Load the session of a request that has not loaded it yet (an excluded path)."""
        if ws.state in ("loaded", "anonymous"):
            return ws
        if not ws.candidates:
            # Not an id we could have issued: clear it without asking the store.
            ws.attach(None)
            ws.cookie_action = "clear"
            return ws
        session = None
        moved = False
        try:
            store = await self.store()
            # One round trip for the usual single cookie; one more per extra value, only
            # when the ones before it missed.
            for candidate in ws.candidates:
                found = await store.lookup(candidate)
                session, moved = found.session, moved or found.moved
                if session is not None:
                    break
        except StoreUnavailable:
            ws.mark_unavailable()
            raise
        ws.attach(session)
        if session is not None:
            ws.cookie_value = session.id
        elif moved:
            # The id was regenerated moments ago: this request raced a login, whose response
            # sets the new cookie. Clearing would make the browser drop that new cookie (same
            # name, Domain and Path), so the cookie is left alone.
            ws.moved = True
        else:
            # Expired, revoked, tampered with or under a forgotten secret: the browser must
            # stop sending it, and it is never reused as the id of a new session.
            ws.cookie_action = "clear"
        return ws

    async def finish(self, ws: WebSession) -> list[str]:
        """Save the session if it changed (or create it if first written); return Set-Cookies.

        Call it once, when the response starts. Raises
        :class:`~redis_session.StoreUnavailable` (answer 503) and
        :class:`~redis_session.SessionConflict` (both requests changed the same keys, or the
        session ended meanwhile: nothing was saved; also data written by a request that raced
        a login, which must not start a session that would replace the new cookie). When it
        raises, :meth:`cookie_headers` still gives what the error response must carry: the new
        id after a :meth:`login` that succeeded (its old id is dead already), or a clear.
        """
        if ws.finished:
            return []
        ws.finished = True
        if ws.state in ("loaded", "anonymous"):
            session = ws.stored
            if session is None:
                if ws.data():
                    if ws.moved:
                        msg = (
                            "this request's session was regenerated (a login) while it ran; "
                            "its changes were not saved"
                        )
                        raise SessionConflict(msg)
                    store = await self.store()
                    created = await store.create(ws.data(), domain=ws.cookie.domain)
                    ws.attach(created)
                    ws.cookie_action = "set"
            elif ws.changed:
                await self._save(ws, session)
        return self.cookie_headers(ws)

    @staticmethod
    def cookie_headers(ws: WebSession) -> list[str]:
        """Return the ``Set-Cookie`` values for the response: none, the new id, or a clear."""
        session = ws.stored
        if ws.cookie_action == "set" and session is not None:
            return [ws.cookie.set(session.id, session.expires_at)]
        if ws.cookie_action == "clear":
            return [ws.cookie.clear()]
        return []

    def changed_after_finish(self, ws: WebSession) -> bool:
        """Whether the app changed the session after its response started (lost; logged)."""
        # Runs after every request, where the data is almost always unchanged: the quick
        # test, not the walk :attr:`WebSession.changed` needs to tell True from 1 (a late
        # change of type alone goes unwarned; it is lost all the same).
        if ws.finished and ws.state in ("loaded", "anonymous") and ws.changed_by_value:
            logger.warning(
                "the session was changed after the response started; the change is not saved "
                "(change the session before sending the response)"
            )
            return True
        return False

    async def _save(self, ws: WebSession, session: Session[_SessionData]) -> None:
        async def save(store: _Store, session: Session[_SessionData]) -> Session[_SessionData]:
            await store.save(session)
            return session

        ws.attach(await self._merging(ws, session, save))

    async def _merging(
        self,
        ws: WebSession,
        session: Session[_SessionData],
        write: Callable[[_Store, Session[_SessionData]], Awaitable[Session[_SessionData]]],
    ) -> Session[_SessionData]:
        """Write the request's data with ``write`` (a save or a regenerate); merge lost races.

        On :class:`~redis_session.SessionConflict` the session is loaded again, the request's
        changes (since ``ws`` loaded it) are merged onto it, and ``write`` tries again, a
        bounded number of times.
        """
        store = await self.store()
        base, ours = ws.base(), ws.data()
        pause = 0.001
        for attempt in range(_SAVE_ATTEMPTS):
            session.data = ours
            try:
                return await write(store, session)
            except SessionConflict:
                if attempt + 1 == _SAVE_ATTEMPTS:
                    raise
            # Full jitter: requests that lost together do not come back together.
            await anyio.sleep(pause * secrets.randbelow(1001) / 1000)
            pause = min(pause * 2, _PAUSE_MAX)
            fresh = await store.load(session.id)
            if fresh is None:
                # Deleted (logout), regenerated (login) or expired meanwhile: saving would
                # bring it back, so the changes are dropped and the app is told.
                msg = (
                    "the session ended (logged out, regenerated or expired) while this "
                    "request changed it; its changes were not saved"
                )
                raise SessionConflict(msg)
            try:
                merged = merge(base, ours, fresh.data)
            except MergeConflict as exc:
                msg = (
                    f"another request changed the same session keys {exc.keys!r} at the same "
                    "time; this request's changes were not saved"
                )
                raise SessionConflict(msg) from exc
            base, ours, session = snapshot(fresh.data), merged, fresh
        raise AssertionError  # pragma: no cover - the loop returns or raises

    # -- helpers for login flows --

    async def login(
        self,
        ws: WebSession,
        *,
        remember_me: bool = False,
        user: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Give the session a new id (against fixation), of the kind ``remember_me`` says.

        An anonymous request gets a new session holding its current data. The old id stops
        working at once; the response sets the new cookie. With ``user`` the session belongs
        to that user from the same atomic step on (see ``SessionStore.regenerate``).
        """
        self._check_live(ws, "login")
        given: object = remember_me  # a form value must be converted, not stored as truthy
        if type(given) is not bool:
            msg = f"login(remember_me=...) takes True or False, got {type(given).__name__}"
            raise UsageError(msg)
        await self.load(ws)
        session = ws.stored
        domain = ws.cookie.domain
        if session is not None and user is not None:
            store = await self.store()
            if store._of_another_user(session, user):
                # Another user logs in in this browser: the first one's session ends, and the
                # new one starts empty, as Django's login() flushes: nothing of one user's
                # session data may pass to another's.
                await store.delete(session)
                ws.replace({})
                session = None
        if session is None:
            store = await self.store()
            new = await store.create(
                ws.data(), remember_me=remember_me, domain=domain, user=user, metadata=metadata
            )
        else:

            async def regenerate(
                store: _Store, session: Session[_SessionData]
            ) -> Session[_SessionData]:
                return await store.regenerate(
                    session, remember_me=remember_me, domain=domain, user=user, metadata=metadata
                )

            # Another request of the browser may have saved meanwhile (a cart, a polling
            # XHR): merged as the end-of-request save merges, not a failed login.
            new = await self._merging(ws, session, regenerate)
        ws.attach(new)
        ws.cookie_action = "set"

    async def logout(self, ws: WebSession) -> None:
        """Delete the session (no concurrent save can bring it back) and expire the cookie.

        The request goes on anonymous: data written afterwards starts a new session.
        """
        self._check_live(ws, "logout")
        session = ws.stored
        if session is not None:
            await (await self.store()).delete(session)
        elif ws.state in ("not loaded", "unavailable") and ws.cookie_value is not None:
            # Never loaded (an excluded path): delete by id, without loading it first; every
            # id-shaped value the browser sent under the name, since any one may be the live
            # session (an id of another store's names a key this store never wrote).
            store = await self.store()
            for session_id in ws.candidates or (ws.cookie_value,):
                await store.delete(session_id)
        ws.attach(None)
        ws.cookie_action = "clear"

    @staticmethod
    def _check_live(ws: WebSession, method: str) -> None:
        if ws.finished:
            msg = f"{method}() after the response started: the cookie can no longer be set"
            raise UsageError(msg)
