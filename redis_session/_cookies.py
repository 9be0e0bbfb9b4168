"""The session cookie: which one a request gets, what its ``Set-Cookie`` says, how to read it.

Framework-neutral: the web adapters hand in header values and a host, and get header values
back. The rules (docs/web.md, "The cookie"):

- name and ``Domain`` come from the ``session.cookies`` entry serving the request's host
  (subdomains included, the most specific entry wins); with no entry for the host (or no
  ``cookies`` at all) the cookie is host-only (no ``Domain``) and named ``session.name``;
- always ``Path=/`` and ``HttpOnly``; ``Secure`` unless the middleware was told the app runs
  on plain http (development); ``SameSite`` from the entry, else ``session.same_site``;
- ``Expires`` and ``Max-Age`` are the session's absolute deadline (``expiration``, or
  ``remember_me`` for a remember-me session), as the seed says;
- clearing sends the same name, ``Domain`` and ``Path`` with a date in the past, so the
  browser drops exactly the cookie it was given.
"""

from __future__ import annotations

import datetime as dt
import re
from email.utils import format_datetime

import attrs

from ._config import SessionConfig
from ._config_names import is_ip
from ._domains import cookie_for

__all__ = ["CookieSpec", "cookie_spec", "id_shaped", "session_cookie", "session_cookies"]

#: The shape of an id the store issues (``secrets.token_urlsafe``): anything else in the
#: cookie cannot be a session and is dropped without a round trip.
_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,100}")
_SAME_SITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_PAST = "Thu, 01 Jan 1970 00:00:00 GMT"


@attrs.frozen
class CookieSpec:
    """The session cookie for one request host: its name and attributes, without a value."""

    #: Cookie name: the entry's ``name``, else ``session.name``.
    name: str
    #: ``Domain`` attribute (the entry's domain); ``None`` for a host-only cookie.
    domain: str | None
    #: ``SameSite`` value as sent: ``Lax``, ``Strict`` or ``None``.
    same_site: str
    #: Whether to send the ``Secure`` attribute.
    secure: bool

    def set(self, value: str, expires_at: dt.datetime, now: dt.datetime | None = None) -> str:
        """Return a ``Set-Cookie`` value giving ``value`` until ``expires_at`` (aware, UTC)."""
        now = dt.datetime.now(dt.UTC) if now is None else now
        # Max-Age takes precedence in browsers and is immune to the client's clock; Expires
        # serves clients that ignore Max-Age. Never negative: 0 expires at once.
        max_age = max(0, int((expires_at - now).total_seconds()))
        expires = format_datetime(expires_at.astimezone(dt.UTC), usegmt=True)
        return self._header(value, f"Expires={expires}; Max-Age={max_age}")

    def clear(self) -> str:
        """Return a ``Set-Cookie`` value that makes the browser drop this cookie."""
        return self._header("", f"Expires={_PAST}; Max-Age=0")

    def _header(self, value: str, expiry: str) -> str:
        parts = [f"{self.name}={value}"]
        if self.domain is not None:
            parts.append(f"Domain={self.domain}")
        parts += ["Path=/", expiry, "HttpOnly"]
        if self.secure:
            parts.append("Secure")
        parts.append(f"SameSite={self.same_site}")
        return "; ".join(parts)


def cookie_spec(cfg: SessionConfig, host: str | None, *, secure: bool = True) -> CookieSpec:
    """Return the cookie a request for ``host`` (a ``Host`` header value) gets under ``cfg``."""
    entry = cookie_for(cfg, host)
    if entry is None:
        return CookieSpec(cfg.name, None, _SAME_SITE.get(cfg.same_site, "Lax"), secure)
    # Loading fills every entry in; a hand-built one may leave options unset.
    same_site = entry.same_site if entry.same_site is not None else cfg.same_site
    domain = entry.domain.lower().removeprefix(".")
    return CookieSpec(
        entry.name if entry.name is not None else cfg.name,
        # An address has no subdomains: a host-only cookie is the same cookie, and browsers
        # disagree on a Domain attribute that is an address (an IPv6 one above all).
        None if is_ip(domain) else domain,
        _SAME_SITE.get(same_site, "Lax"),
        secure,
    )


def id_shaped(value: str) -> bool:
    """Whether ``value`` has the shape of an id the store issues (else: never sent to it)."""
    return _ID_SHAPE.fullmatch(value) is not None


def session_cookies(header: str | None, name: str) -> list[str]:
    """Return every value of the session cookie in a ``Cookie`` header, in order (maybe none).

    Robust against what browsers and attackers send: pairs without ``=``, stray spaces,
    quoted values and duplicate names. A browser sends the same name twice when a host-only
    cookie and a domain cookie (or a sibling subdomain's cookie, or Authelia's own: the
    default name is Authelia's) coexist, the oldest first at equal paths; so the caller tries
    each value shaped like an id, not only the first. A value that cannot be an id is
    returned too, so the caller can clear it; it is never used as an id.
    """
    if not header:
        return []
    found: list[str] = []
    for pair in header.split(";"):
        key, eq, value = pair.partition("=")
        if not eq or key.strip() != name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        found.append(value)
    return found


def session_cookie(header: str | None, name: str) -> str | None:
    """Return one value of the session cookie: the first shaped like an id, else the first.

    ``None`` if the header has none. The middleware tries every id-shaped value
    (:func:`session_cookies`); this is for a caller that wants one.
    """
    values = session_cookies(header, name)
    return next((v for v in values if id_shaped(v)), values[0] if values else None)
