"""The session one web request sees: a mutable mapping that knows where its data came from.

Web frameworks expect ``request.session`` to be a synchronous ``dict``-like object, so the
data must be in memory before the app runs (``_web`` loads it) and written back after
(``_web`` saves it). This object only records what that needs:

- ``state``: ``"anonymous"`` (no session: no cookie, or one that did not load),
  ``"loaded"`` (a stored session), ``"not loaded"`` (an excluded path: the cookie was not
  read against the store; ``await load_session(...)`` loads it), ``"unavailable"`` (the store
  was down when the request began);
- a deep copy of the data as loaded (the merge's base, and how a change is noticed: the data
  differs from it, nested changes included);
- what the response must do with the cookie (set a new id, clear it, or nothing).

Reading or writing the mapping in state ``"not loaded"`` or ``"unavailable"`` raises: an
empty mapping there would look like "logged out" to the app, which is the failure this
library exists to avoid.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Literal

from ._cookies import CookieSpec
from ._errors import StoreUnavailable, UsageError
from ._merge import same, snapshot
from ._store import Session

__all__ = ["SessionState", "WebSession"]

#: See the module docstring.
SessionState = Literal["anonymous", "loaded", "not loaded", "unavailable"]


class WebSession(MutableMapping[str, Any]):
    """The session of one request (``scope["session"]``): a ``dict``-like view of its data.

    Created by the middleware for every request; nothing is stored unless it is written to.
    ``repr()`` shows the state and keys, never the id or values.
    """

    def __init__(
        self,
        owner: object,
        cookie: CookieSpec,
        cookie_value: str | None,
        state: SessionState,
        candidates: tuple[str, ...] = (),
    ) -> None:
        # The WebSessions that made it (typed loosely: _web imports this module, not back),
        # so helpers given only a request can find the store.
        self.owner = owner
        #: The cookie this request's host gets, and the value the browser sent (maybe None).
        self.cookie = cookie
        self.cookie_value = cookie_value
        #: The id-shaped values of the cookie, in the order sent (the name may come several
        #: times: see ``_cookies.session_cookies``); the load tries them in turn.
        self.candidates = candidates
        #: Set when the load missed because the id was regenerated moments ago (a request that
        #: raced a login): the browser's cookie is left alone and nothing new is created.
        self.moved = False
        self._state: SessionState = state
        self._session: Session[dict[str, Any]] | None = None
        self._data: dict[str, Any] = {}
        self._base: dict[str, Any] = {}
        #: ``"set"``: the response carries the current id; ``"clear"``: it expires the cookie.
        self.cookie_action: Literal["set", "clear"] | None = None
        #: Set once the end-of-request save ran: later changes cannot reach the store.
        self.finished = False

    @property
    def state(self) -> SessionState:
        """``"anonymous"``, ``"loaded"``, ``"not loaded"`` or ``"unavailable"``."""
        return self._state

    @property
    def stored(self) -> Session[dict[str, Any]] | None:
        """The store's session behind this one, if any (``None`` when anonymous)."""
        return self._session

    @property
    def changed(self) -> bool:
        """Whether the data differs from what was loaded (or, anonymous, is not empty).

        By type and value (``_merge.same``): ``True`` written over ``1`` is a change.
        """
        data, base = self._data, self._base
        # ``!=`` runs in C and refutes at once (``same`` implies ``==``, but for a NaN the app
        # wrote anew: one save more at worst); only equal data needs the walk that tells
        # ``True`` from ``1``.
        return data != base or not same(data, base)

    @property
    def changed_by_value(self) -> bool:
        """Whether the data differs from what was loaded by ``==``: the quick test (in C).

        A change of type alone (``True`` written over ``1``) is not seen; :attr:`changed` sees it.
        """
        return self._data != self._base

    def attach(self, session: Session[dict[str, Any]] | None) -> None:
        """Make ``session`` (or none) the stored session behind this request's data."""
        self._session = session
        self._state = "loaded" if session is not None else "anonymous"
        self._data = session.data if session is not None else {}
        # The base must not share nested objects with the data, or an in-place change of a
        # nested list would change both and go unnoticed.
        self._base = snapshot(self._data)

    def mark_unavailable(self) -> None:
        """Record that the store was down when this request needed its session."""
        self._state = "unavailable"

    def base(self) -> dict[str, Any]:
        """Return the data as loaded (a private copy): the merge's base."""
        return self._base

    def data(self) -> dict[str, Any]:
        """Return the current data (the live dict, not a copy)."""
        return self._data

    def replace(self, data: dict[str, Any]) -> None:
        """Replace the current data wholesale (a framework assigned a new session dict)."""
        self._usable()
        self._data = data

    # -- the mapping --

    def _usable(self) -> dict[str, Any]:
        if self._state in {"loaded", "anonymous"}:
            return self._data
        if self._state == "unavailable":
            msg = "the session store is unavailable; this request's session could not be loaded"
            raise StoreUnavailable(msg)
        msg = (
            "this request's path is excluded from session loading; "
            "use 'await load_session(request)' to load the session on demand"
        )
        raise UsageError(msg)

    def __getitem__(self, key: str) -> Any:
        return self._usable()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._usable()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._usable()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._usable())

    def __len__(self) -> int:
        return len(self._usable())

    def __contains__(self, key: object) -> bool:
        return key in self._usable()

    def __repr__(self) -> str:
        keys = sorted(self._data) if self._state in ("loaded", "anonymous") else []
        return f"<WebSession {self._state}, keys={keys!r}>"
