"""Sessions for any ASGI app (Starlette, FastAPI, Litestar, ...): a pure ASGI middleware.

::

    from redis_session.asgi import SessionMiddleware, login, logout

    app = SessionMiddleware(app, "config.yml")   # or app.add_middleware(SessionMiddleware, cfg=...)

Each HTTP request gets ``scope["session"]``, a mutable mapping of the session's data, so
Starlette's and FastAPI's ``request.session`` work as they do with Starlette's own middleware.
It is loaded before the app runs when the request carries the session cookie (one round trip;
none without a cookie, none on an excluded path) and saved when the app starts its response,
once, only if it changed, and never for a 5xx or an app that raised; the cookie follows the
configuration, and a response carrying it is made private to caches (docs/web.md). The helpers
:func:`login`, :func:`logout`, :func:`load_session`, :func:`session_state`,
:func:`session_store` and :func:`session_public_id` take a request object (anything with a
``scope``) or the scope itself.

No web framework is imported here. WebSocket connections see the session of their handshake
request, read-only: a write raises (a WebSocket cannot set a cookie, and nothing saves it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any, Literal

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

__all__ = [
    "SessionMiddleware",
    "SessionState",
    "load_session",
    "login",
    "logout",
    "session_public_id",
    "session_state",
    "session_store",
]

logger = logging.getLogger("redis_session")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: Loose on purpose: frameworks type scope and messages as their own TypedDicts (Litestar),
#: which a precise signature here would refuse.
ASGIApp = Callable[..., Awaitable[None]]
#: Builds the response for a failure: given the error, returns an ASGI app (a Starlette
#: ``Response`` is one) that the middleware runs in place of the app's response.
ErrorHandler = Callable[[Exception], ASGIApp]

#: Where the request's :class:`WebSession` is kept besides ``scope["session"]``, which a
#: framework may replace (Litestar's ``request.set_session``).
_SCOPE_KEY = "redis_session"


def _plain(response: PlainResponse) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.encode(), v.encode()) for k, v in response.headers],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    return app


def _default_unavailable(exc: Exception) -> ASGIApp:
    return _plain(unavailable_response())


def _default_conflict(exc: Exception) -> ASGIApp:
    return _plain(conflict_response())


def _host_and_cookie(scope: Scope) -> tuple[str | None, str | None]:
    """Return the request's ``Host`` and ``Cookie`` header values (one pass over the headers)."""
    hosts: list[bytes] = []
    cookies: list[bytes] = []
    for k, v in scope.get("headers", ()):
        # ASGI servers send lower-case names; lowered anyway for a hand-built scope.
        name = k if k in (b"host", b"cookie") else k.lower()
        if name == b"cookie":
            cookies.append(v)
        elif name == b"host":
            hosts.append(v)
    if hosts:
        host: str | None = "; ".join(v.decode("latin-1") for v in hosts)
    else:
        server = scope.get("server")
        host = str(server[0]) if server else None
    # HTTP/2 may split Cookie into several fields; they join with "; " (RFC 9113 §8.2.3).
    cookie = "; ".join(v.decode("latin-1") for v in cookies) if cookies else None
    return host, cookie


class SessionMiddleware:
    """Pure ASGI middleware putting the request's session in ``scope["session"]``.

    ``cfg`` is anything :func:`~redis_session.open_session_store` accepts (a
    :class:`~redis_session.SessionConfig`, a mapping, a YAML file's path): the middleware
    opens the store at each ASGI lifespan's startup (or at the first request that needs it, if
    the server sends no lifespan, or if Redis was down then) and closes it at that lifespan's
    shutdown. Or ``cfg`` is an open :class:`~redis_session.SessionStore` of ``dict`` data,
    which stays the caller's to close (the middleware never closes it).

    ``secure=False`` drops the cookie's ``Secure`` attribute: only for plain-http
    development. ``exclude``: path prefixes (or a function of the path) whose requests do
    not load the session up front (static files, health checks; none by default); there,
    touching ``request.session`` raises until ``await load_session(request)``.
    ``on_unavailable``: what a request gets when Redis cannot be reached; by default 503
    (``Retry-After: 5``) with no cookie change; a function of the error returning an ASGI app
    (a Starlette ``Response``, say) answers instead; ``"continue"`` runs the app anyway with
    the session in state ``"unavailable"`` (touching it raises
    :class:`~redis_session.StoreUnavailable`). ``on_conflict``: what a request gets when its
    changes clash with a concurrent request's (both changed the same keys; different keys are
    merged): by default 409; a function as above; or ``"raise"``, which raises
    :class:`~redis_session.SessionConflict` to the app from its response's first ``send``.
    """

    def __init__(
        self,
        app: ASGIApp,
        cfg: ConfigSource | SessionStore[Any],
        *,
        secure: bool = True,
        exclude: Exclude = (),
        on_conflict: ErrorHandler | Literal["raise"] | None = None,
        on_unavailable: ErrorHandler | Literal["continue"] | None = None,
    ) -> None:
        self.app = app
        check_choice("on_unavailable", on_unavailable, "continue")
        check_choice("on_conflict", on_conflict, "raise")
        #: The framework-neutral session layer: the store and the cookie rules.
        self.sessions = WebSessions(cfg, secure=secure, exclude=exclude)
        self._continue = on_unavailable == "continue"
        self._raise_conflict = on_conflict == "raise"
        self._on_unavailable: ErrorHandler = (
            _default_unavailable if on_unavailable in (None, "continue") else on_unavailable  # type: ignore[assignment]
        )
        self._on_conflict: ErrorHandler = (
            _default_conflict if on_conflict in (None, "raise") else on_conflict  # type: ignore[assignment]
        )

    async def aclose(self) -> None:
        """Close the store if the middleware opened it (for servers without lifespan)."""
        await self.sessions.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: HTTP with a session, lifespan with the store's life."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            ws = scope[_SCOPE_KEY] = await self._begin(scope, unavailable_ok=True)
            # A WebSocket sets no cookie and its session is never saved: the handshake's
            # session, read-only (writes raise rather than vanish); login/logout refuse too.
            ws.finished = True
            scope["session"] = _ReadOnlySession(ws)
            await self.app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _begin(self, scope: Scope, *, unavailable_ok: bool) -> WebSession:
        host, cookie = _host_and_cookie(scope)
        return await self.sessions.begin(
            scope.get("path", "/"), host, cookie, unavailable_ok=unavailable_ok
        )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The start-up message is taken here, before the app sees it: a store that cannot
        # open for any reason but Redis being down (which is no reason to refuse to start)
        # fails the start-up with a message, instead of an error raised out of the app's
        # receive() that a framework may never answer (the server would wait for ever).
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await self.sessions.start()
            except Exception as exc:  # noqa: BLE001 - any cause: the server must hear of it
                # The error's message is the news; a traceback would bury it.
                logger.error("session store could not be opened at start-up: %s", exc)  # noqa: TRY400
                message = f"redis_session: the session store could not be opened: {exc}"
                await send({"type": "lifespan.startup.failed", "message": message})
                return
        pending: Message | None = first

        async def receive_rest() -> Message:
            nonlocal pending
            if pending is not None:
                message, pending = pending, None
                return message
            return await receive()

        async def send_and_close(message: Message) -> None:
            # The app's start-up failing means no shutdown will come: close now as well.
            if message["type"] in _LIFESPAN_ENDS:
                try:
                    await self.sessions.aclose()
                finally:
                    await send(message)
                return
            await send(message)

        await self.app(scope, receive_rest, send_and_close)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            ws = await self._begin(scope, unavailable_ok=self._continue)
        except StoreUnavailable as exc:
            await self._on_unavailable(exc)(scope, receive, send)
            return
        scope["session"] = scope[_SCOPE_KEY] = ws
        started = replaced = False

        async def send_with_cookie(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the app's own response was replaced by an error response
            if message["type"] == "http.response.start" and not started:
                _adopt(scope, ws)
                try:
                    cookies = await finish_response(self.sessions, ws, message.get("status", 200))
                except StoreUnavailable as exc:
                    replaced = True
                    await self._on_unavailable(exc)(scope, receive, self._cookies(ws, send))
                    return
                except SessionConflict as exc:
                    if self._raise_conflict:
                        raise
                    replaced = True
                    await self._on_conflict(exc)(scope, receive, self._cookies(ws, send))
                    return
                started = True
                message = {**message, "headers": _headers(message, ws, cookies)}
            await send(message)

        try:
            await self.app(scope, receive, send_with_cookie)
        except StoreUnavailable as exc:
            # From a helper inside the app (load_session, login, logout): still no logout.
            if started or replaced:
                raise
            await self._on_unavailable(exc)(scope, receive, self._cookies(ws, send))
        except SessionConflict as exc:
            if started or replaced or self._raise_conflict:
                raise
            await self._on_conflict(exc)(scope, receive, self._cookies(ws, send))
        except BaseException:
            # The app failed before its response started: its changes are not saved, nor by
            # an error page an outer layer makes of the error (a 5xx, refused anyway).
            ws.finished = True
            raise
        else:
            self.sessions.changed_after_finish(ws)

    def _cookies(self, ws: WebSession, send: Send) -> Send:
        """``send`` adding the cookie an error response must still carry (after a login)."""
        cookies = self.sessions.cookie_headers(ws)
        if not cookies:
            return send

        async def send_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers += [(b"set-cookie", c.encode("latin-1")) for c in cookies]
                message = {**message, "headers": headers}
            await send(message)

        return send_cookies


#: The lifespan messages after which the server sends nothing more: the store closes.
_LIFESPAN_ENDS = frozenset(
    ("lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed")
)


def _headers(message: Message, ws: WebSession, cookies: list[str]) -> list[tuple[bytes, bytes]]:
    """Return the response start's headers with the cookies and the cache rules they need."""
    headers = list(message.get("headers", ()))

    def joined(name: bytes) -> str | None:
        values = [v.decode("latin-1") for k, v in headers if k.lower() == name]
        return ", ".join(values) if values else None

    replace = cache_headers(ws, cookies, joined(b"cache-control"), joined(b"vary"))
    if replace:
        names = {n.encode() for n in replace}
        headers = [(k, v) for k, v in headers if k.lower() not in names]
        headers += [(n.encode(), v.encode("latin-1")) for n, v in replace.items()]
    headers += [(b"set-cookie", c.encode("latin-1")) for c in cookies]
    return headers


class _ReadOnlySession(MutableMapping[str, Any]):
    """A WebSocket's session: its handshake's data, read-only.

    Nothing could save a write: no cookie goes out on a WebSocket, and no response start
    comes to save at. So writes raise instead of vanishing.
    """

    def __init__(self, ws: WebSession) -> None:
        #: The session behind the view.
        self.ws = ws

    def __getitem__(self, key: str) -> Any:
        return self.ws[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ws)

    def __len__(self) -> int:
        return len(self.ws)

    def __contains__(self, key: object) -> bool:
        return key in self.ws

    def _refuse(self) -> UsageError:
        return UsageError(
            "a WebSocket's session is read-only: a WebSocket cannot set a cookie and its "
            "session is never saved; change it in an HTTP request, or with "
            "store.update(session_id, ...)"
        )

    def __setitem__(self, key: str, value: Any) -> None:
        raise self._refuse()

    def __delitem__(self, key: str) -> None:
        raise self._refuse()

    def __repr__(self) -> str:
        return f"<read-only {self.ws!r}>"


def _adopt(scope: Scope, ws: WebSession) -> None:
    """Take over a session mapping a framework put in place of ours (or its removal)."""
    current = scope.get("session")
    if current is ws or ws.state not in ("loaded", "anonymous"):
        return
    if isinstance(current, Mapping):
        ws.replace(dict(current))
    else:
        ws.clear()  # a framework's way of removing the session (Litestar: Empty)


def _session(request: Any, method: str, *, http_only: bool = False) -> WebSession:
    scope = request if isinstance(request, Mapping) else getattr(request, "scope", None)
    ws = scope.get(_SCOPE_KEY) if isinstance(scope, Mapping) else None
    if not isinstance(ws, WebSession):
        msg = (
            f"{method}() takes a request (or ASGI scope) that went through "
            "redis_session.asgi.SessionMiddleware; this one did not"
        )
        raise UsageError(msg)
    if http_only and isinstance(scope, Mapping) and scope.get("type") == "websocket":
        msg = f"{method}() on a WebSocket: no cookie can be set there; do it in an HTTP request"
        raise UsageError(msg)
    return ws


def _owner(ws: WebSession) -> WebSessions:
    owner = ws.owner
    assert isinstance(owner, WebSessions)  # made by WebSessions.begin, nothing else
    return owner


async def load_session(request: Any) -> MutableMapping[str, Any]:
    """Load the request's session if it is not loaded yet (an excluded path) and return it.

    Returns ``scope["session"]``. Raises :class:`~redis_session.StoreUnavailable` when Redis
    cannot be reached (the middleware answers 503 unless the app catches it).
    """
    ws = _session(request, "load_session")
    manager = _owner(ws)
    await manager.load(ws)
    scope = request if isinstance(request, Mapping) else request.scope
    view = scope.get("session")
    # A WebSocket's session stays the read-only view of it.
    return view if isinstance(view, _ReadOnlySession) and view.ws is ws else ws


async def login(
    request: Any,
    *,
    remember_me: bool = False,
    user: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Log the request's session in: a new id, atomically, so a planted id is worthless.

    Call it once the user is authenticated, before or after writing the user into the
    session. The old id stops working at once; a session becomes a remember-me one (lifetime
    ``remember_me``, no inactivity limit) or a plain one as ``remember_me`` says. An anonymous
    request gets a new session. The response carries the new cookie. With ``user`` the
    session belongs to that user from the same atomic step on, with ``metadata`` (user agent,
    IP...) in the user's list (see ``SessionStore.regenerate``; ``SessionLimitReached`` when
    ``session.max_sessions_per_user`` denies the login).
    """
    ws = _session(request, "login", http_only=True)
    manager = _owner(ws)
    await manager.login(ws, remember_me=remember_me, user=user, metadata=metadata)


async def logout(request: Any) -> None:
    """Delete the request's session (no concurrent save can revive it) and expire the cookie."""
    ws = _session(request, "logout", http_only=True)
    manager = _owner(ws)
    await manager.logout(ws)


def session_state(request: Any) -> SessionState:
    """Tell "no session" from "store down": the state of the request's session.

    ``"anonymous"`` (no session), ``"loaded"``, ``"not loaded"`` (an excluded path; see
    :func:`load_session`) or ``"unavailable"`` (the store was down, with
    ``on_unavailable="continue"``).
    """
    return _session(request, "session_state").state


async def session_store(request: Any) -> SessionStore[dict[str, Any]]:
    """Return the store behind the request's sessions, for a user's sessions (docs/users.md).

    ``list_sessions``, ``revoke``, ``revoke_user``: a "your sessions" page. Raises
    :class:`~redis_session.StoreUnavailable` when Redis cannot be reached yet.
    """
    ws = _session(request, "session_store")
    return await _owner(ws).store()


def session_public_id(request: Any) -> str | None:
    """Return the public id of the request's session: ``None`` without one, or without a user.

    The id to pass as ``revoke_user(user, keep=...)`` ("log out everywhere else") and to
    mark the current session in a list. After :func:`login`, the new session's.
    """
    ws = _session(request, "session_public_id")
    stored = ws.stored
    return None if stored is None else stored.public_id
