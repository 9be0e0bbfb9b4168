"""Which ``session.cookies`` entry serves a request: host names against cookie domains.

A cookie set with ``Domain=example.com`` is sent to ``example.com`` and every subdomain of it
(RFC 6265 §5.1.3), so an entry serves its domain and the hosts below it. When several entries
match (``example.com`` and ``app.example.com``), the most specific one wins, as a browser
would pick the most specific cookie. Host names come from requests (the ``Host`` header), so
they are normalised here and anything that is not a plain host name matches nothing.
"""

from __future__ import annotations

import re

from ._config import CookieConfig, SessionConfig

__all__ = ["cookie_for", "domain_matches", "normalize_host"]

# Letters, digits, hyphens and dots (a DNS name), or an IPv6 literal in brackets; an optional
# port. Anything else (a path, a user part, spaces) is not a host a browser would send.
_HOST = re.compile(r"(?P<name>[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")


def normalize_host(host: str | None) -> str | None:
    """Return the host name of a ``Host`` header value, lower-cased, without port or final dot.

    ``None`` for a value that is not a host name (so it matches no cookie entry).
    """
    if not host:
        return None
    match = _HOST.fullmatch(host.strip().lower())
    if match is None:
        return None
    name = match.group("name")
    if name.startswith("["):
        return name[1:-1]
    name = name.removesuffix(".")
    if not name or ".." in name or name.startswith("."):
        return None
    return name


def domain_matches(domain: str, host: str) -> bool:
    """Whether a cookie for ``domain`` is sent to ``host`` (both normalised, lower case)."""
    return host == domain or host.endswith("." + domain)


def cookie_for(cfg: SessionConfig, host: str | None) -> CookieConfig | None:
    """Return the ``cookies`` entry serving ``host`` (a host name or ``Host`` header value).

    The entry whose domain is the host or the nearest parent of it; ``None`` when no entry
    matches or ``cfg.cookies`` is empty (then a host-only cookie with the top-level options
    applies: the caller decides whether that is allowed).
    """
    name = normalize_host(host)
    if name is None:
        return None
    best: CookieConfig | None = None
    for entry in cfg.cookies:
        domain = entry.domain.lower().removeprefix(".")
        if domain_matches(domain, name) and (best is None or len(domain) > len(best.domain)):
            best = entry
    return best
