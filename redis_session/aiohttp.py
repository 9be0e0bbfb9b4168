"""Sessions for aiohttp.web apps: a middleware on the framework-neutral core (``_web``).

::

    from redis_session.aiohttp import load_session, login, logout, setup

    app = web.Application()
    setup(app, "config.yml")

    async def page(request):
        session = await load_session(request)   # a dict-like mapping
        session["visits"] = session.get("visits", 0) + 1

The semantics are the ASGI middleware's (``redis_session.asgi``), with the same helper names:
the session is loaded before the handler runs when the request carries the session cookie
(one round trip; none without a cookie, none on an excluded path) and saved once, when the
response starts, only if it changed; a save that lost a race is merged; the cookie follows
the configuration (docs/web.md).

Where the save happens: a response the handler returns (or raises, such as
``web.HTTPFound`` after a login) is finished by the middleware before it goes back to
aiohttp, so a failure can still become a 503 or 409; a response the handler prepares itself
(streaming, WebSocket) is finished by an ``on_response_prepare`` hook, just before its
headers are written (a failure there raises out of ``prepare()`` before anything was sent;
as aiohttp has set the connection up for that response, no other can take its place, so
the connection is closed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal

import attrs
from aiohttp import hdrs, web

from ._errors import SessionConflict, StoreUnavailable, UsageError
from ._opener import ConfigSource
from ._store import SessionStore
from ._web import (
    Exclude,
    PlainResponse,
    WebSessions,
    cache_headers,
    check_choice,
    conflict_response,
    finish_response,
    unavailable_response,
)
from ._web_session import SessionState, WebSession

if TYPE_CHECKING:
    # aiohttp's header type, named for mypy only: multidict comes with aiohttp.
    from multidict import CIMultiDict

__all__ = [
    "ErrorHandler",
    "SessionState",
    "get_session",
    "load_session",
    "login",
    "logout",
    "session_public_id",
    "session_state",
    "session_store",
    "setup",
]

#: Builds the response for a failure: given the request and the error
#: (:class:`~redis_session.StoreUnavailable` or :class:`~redis_session.SessionConflict`).
ErrorHandler = Callable[[web.Request, Exception], Awaitable[web.StreamResponse]]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SESSIONS: web.AppKey[WebSessions] = web.AppKey("redis_session", WebSessions)
# aiohttp 3.14 warns about str keys in a request's storage and offers RequestKey; older
# releases have no RequestKey and take a str key silently.
_REQUEST_KEY: Any = (
    web.RequestKey("redis_session", WebSession)  # type: ignore[attr-defined,unused-ignore]
    if hasattr(web, "RequestKey")
    else "redis_session"
)
#: Set on a request once its session's cookie went out with a response: no error response
#: may replace that response any more.
_STARTED_KEY: Any = (
    web.RequestKey("redis_session_started", bool)  # type: ignore[attr-defined,unused-ignore]
    if hasattr(web, "RequestKey")
    else "redis_session_started"
)


def _plain(response: PlainResponse) -> web.Response:
    return web.Response(status=response.status, body=response.body, headers=dict(response.headers))


async def _default_unavailable(request: web.Request, exc: Exception) -> web.StreamResponse:
    return _plain(unavailable_response())


async def _default_conflict(request: web.Request, exc: Exception) -> web.StreamResponse:
    return _plain(conflict_response())


def setup(
    app: web.Application,
    cfg: ConfigSource | SessionStore[Any],
    *,
    secure: bool = True,
    exclude: Exclude = (),
    on_conflict: ErrorHandler | Literal["raise"] | None = None,
    on_unavailable: ErrorHandler | Literal["continue"] | None = None,
) -> WebSessions:
    """Give every request of ``app`` (and of its sub-apps) a session; return the session layer.

    ``cfg`` is anything :func:`~redis_session.open_session_store` accepts (a
    :class:`~redis_session.SessionConfig`, a mapping, a YAML file's path): the store opens at
    the app's start-up (or at the first request that needs it, if Redis was down then: the app
    starts anyway and says so in one log line) and closes at its cleanup. Or ``cfg`` is an
    open :class:`~redis_session.SessionStore` of ``dict`` data, which stays the caller's to
    close. The returned object's ``await store()`` gives the store (for ``store.update``).

    ``secure=False`` drops the cookie's ``Secure`` attribute: only for plain-http
    development. ``exclude``: path prefixes (or a function of the path) whose requests do not
    load the session up front (static files, health checks); there, the session stays
    unloaded (no Redis command) until the handler calls :func:`load_session`.
    ``on_unavailable``: what a request gets when Redis cannot be reached; by default 503
    (``Retry-After: 5``) with no cookie change; an async function ``(request, error)``
    returning a response answers instead; ``"continue"`` runs the handler anyway with the
    session in state ``"unavailable"`` (touching it raises
    :class:`~redis_session.StoreUnavailable`). ``on_conflict``: what a request gets when its
    changes clash with a concurrent request's (both changed the same keys; different keys are
    merged): by default 409; a function as above; or ``"raise"``, which lets
    :class:`~redis_session.SessionConflict` propagate to the middlewares outside this one.
    """
    if _SESSIONS in app:
        msg = "setup(app, ...) was already called for this app: one session layer per app"
        raise UsageError(msg)
    check_choice("on_unavailable", on_unavailable, "continue")
    check_choice("on_conflict", on_conflict, "raise")
    adapter = _Adapter(
        WebSessions(cfg, secure=secure, exclude=exclude),
        unavailable=on_unavailable if callable(on_unavailable) else _default_unavailable,
        conflict=on_conflict if callable(on_conflict) else _default_conflict,
        keep_going=on_unavailable == "continue",
        raise_conflict=on_conflict == "raise",
    )

    @web.middleware
    async def session_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        return await adapter.handle(request, handler)

    app[_SESSIONS] = adapter.sessions
    app.middlewares.append(session_middleware)
    app.on_response_prepare.append(adapter.on_prepare)
    app.cleanup_ctx.append(adapter.lifetime)
    return adapter.sessions


@attrs.frozen
class _Adapter:
    """One app's session middleware, its response hook and the store's lifetime."""

    sessions: WebSessions
    unavailable: ErrorHandler
    conflict: ErrorHandler
    keep_going: bool  # on_unavailable="continue"
    raise_conflict: bool  # on_conflict="raise"

    async def handle(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Run the handler with the request's session; save it when the response is known."""
        sessions = self.sessions
        try:
            ws = await sessions.begin(
                request.path,
                # request.host honours a proxy middleware's clone(host=...); without a Host
                # header it would look the machine's name up (blocking), so None then.
                request.host if hdrs.HOST in request.headers else None,
                # HTTP/2 may split Cookie into several fields; they join with "; ".
                "; ".join(request.headers.getall(hdrs.COOKIE, ())) or None,
                unavailable_ok=self.keep_going,
            )
        except StoreUnavailable as exc:
            return await self.unavailable(request, exc)
        request[_REQUEST_KEY] = ws
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                # A raised response (the redirect after a login) carries the cookie too.
                if not request.get(_STARTED_KEY, False):
                    _add_cookies(exc.headers, ws, await finish_response(sessions, ws, exc.status))
                raise
            except BaseException:
                # The handler failed (or the client left): its changes are not saved, and
                # the error page made from it must not save them either.
                ws.finished = True
                raise
            if not response.prepared:
                cookies = await finish_response(sessions, ws, response.status)
                _add_cookies(response.headers, ws, cookies)
        except StoreUnavailable as exc:
            # From the save, or from a helper in the handler (load_session, login, logout):
            # a 503, never a logout; the cookie is left as it was.
            if _abandoned(request):
                raise
            failed = await self.unavailable(request, exc)
            # After a login its new id must still reach the browser (the old one is dead).
            _add_cookies(failed.headers, ws, sessions.cookie_headers(ws))
            return failed
        except SessionConflict as exc:
            if _abandoned(request) or self.raise_conflict:
                raise
            failed = await self.conflict(request, exc)
            _add_cookies(failed.headers, ws, sessions.cookie_headers(ws))
            return failed
        sessions.changed_after_finish(ws)
        return response

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Finish the session of a response the handler prepares itself (streaming)."""
        ws = request.get(_REQUEST_KEY)
        if not isinstance(ws, WebSession) or ws.owner is not self.sessions:
            return  # a request the middleware did not see
        # Does nothing when the middleware finished already (a returned response, or our
        # error response); for one the handler prepares itself, this is the last moment
        # before its headers go out. From here on no other response can take its place
        # (see _abandoned), even if the save fails and prepare() raises.
        request[_STARTED_KEY] = True
        cookies = await finish_response(self.sessions, ws, response.status)
        _add_cookies(response.headers, ws, cookies)

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """Open the store at start-up (Redis down is no reason not to start), close it after."""
        await self.sessions.start()
        try:
            yield
        finally:
            await self.sessions.aclose()


def _abandoned(request: web.Request) -> bool:
    """Whether a response of the handler's own began; if so, its connection is closed.

    Its ``prepare()`` already set the connection's writer up for it (chunking, length,
    compression) before the hook that saves the session ran, so any other response written
    now would be malformed. Nothing of it was sent, so the client sees the connection close
    without a response (never a cleared cookie), and the error goes on to aiohttp.
    """
    if not request.get(_STARTED_KEY, False):
        return False
    transport = request.transport
    if transport is not None:
        transport.close()
    return True


def _add_cookies(headers: CIMultiDict[str], ws: WebSession, cookies: list[str]) -> None:
    def joined(name: str) -> str | None:
        values = headers.getall(name, ())
        return ", ".join(values) if values else None

    replace = cache_headers(ws, cookies, joined(hdrs.CACHE_CONTROL), joined(hdrs.VARY))
    for name, value in replace.items():
        headers[name] = value  # replaces every field of that name
    for cookie in cookies:
        headers.add(hdrs.SET_COOKIE, cookie)


def _session(request: web.Request, method: str) -> WebSession:
    ws = request.get(_REQUEST_KEY)
    if not isinstance(ws, WebSession):
        msg = (
            f"{method}() takes a request of an app set up with "
            "redis_session.aiohttp.setup(app, cfg); this one is not"
        )
        raise UsageError(msg)
    return ws


def _owner(ws: WebSession) -> WebSessions:
    owner = ws.owner
    assert isinstance(owner, WebSessions)  # made by WebSessions.begin, nothing else
    return owner


async def load_session(request: web.Request) -> MutableMapping[str, Any]:
    """Return the request's session, a ``dict``-like mapping; load it first if needed.

    It is already loaded unless the path is excluded (then this is its one round trip).
    Raises :class:`~redis_session.StoreUnavailable` when Redis cannot be reached (the
    middleware answers 503 unless the handler catches it).
    """
    ws = _session(request, "load_session")
    return await _owner(ws).load(ws)


#: The name aiohttp-session users know; the same function as :func:`load_session`.
get_session = load_session


async def login(
    request: web.Request,
    *,
    remember_me: bool = False,
    user: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Log the request's session in: a new id, atomically, so a planted id is worthless.

    Call it once the user is authenticated, before or after writing the user into the
    session. The old id stops working at once; the session becomes a remember-me one
    (lifetime ``remember_me``) or a plain one as ``remember_me`` says. An anonymous request
    gets a new session. The response carries the new cookie. With ``user`` the session
    belongs to that user from the same atomic step on, with ``metadata`` (user agent, IP...)
    in the user's list (see ``SessionStore.regenerate``; ``SessionLimitReached`` when
    ``session.max_sessions_per_user`` denies the login).
    """
    ws = _session(request, "login")
    await _owner(ws).login(ws, remember_me=remember_me, user=user, metadata=metadata)


async def logout(request: web.Request) -> None:
    """Delete the request's session (no concurrent save can revive it) and expire the cookie.

    The request goes on anonymous: data written afterwards starts a new session.
    """
    ws = _session(request, "logout")
    await _owner(ws).logout(ws)


def session_state(request: web.Request) -> SessionState:
    """Tell "no session" from "store down": the state of the request's session.

    ``"anonymous"`` (no session), ``"loaded"``, ``"not loaded"`` (an excluded path; see
    :func:`load_session`) or ``"unavailable"`` (the store was down, with
    ``on_unavailable="continue"``, or a :func:`load_session` that raised).
    """
    return _session(request, "session_state").state


async def session_store(request: web.Request) -> SessionStore[dict[str, Any]]:
    """Return the store behind the request's sessions, for a user's sessions (docs/users.md).

    ``list_sessions``, ``revoke``, ``revoke_user``: a "your sessions" page. Raises
    :class:`~redis_session.StoreUnavailable` when Redis cannot be reached yet.
    """
    ws = _session(request, "session_store")
    return await _owner(ws).store()


def session_public_id(request: web.Request) -> str | None:
    """Return the public id of the request's session: ``None`` without one, or without a user.

    The id to pass as ``revoke_user(user, keep=...)`` ("log out everywhere else") and to
    mark the current session in a list. After :func:`login`, the new session's.
    """
    ws = _session(request, "session_public_id")
    stored = ws.stored
    return None if stored is None else stored.public_id
