"""Which ``session.cookies`` entry serves a request: host names against cookie domains.

A cookie set with ``Domain=example.com`` is sent to ``example.com`` and every subdomain of it
(RFC 6265 §5.1.3), so an entry serves its domain and the hosts below it. When several entries
match (``example.com`` and ``app.example.com``), the most specific one wins, as a browser
would pick the most specific cookie. Host names come from requests (the ``Host`` header), so
they are normalised here and anything that is not a plain host name matches nothing.
"""

from __future__ import annotations

import ipaddress
import re

from ._config import CookieConfig, SessionConfig
from ._config_names import canonical_domain, is_ip

__all__ = ["cookie_for", "domain_matches", "normalize_host"]

# Letters, digits, hyphens, underscores and dots (a DNS name), or a bracketed IPv6 literal; an
# optional port. Anything else (a path, a user part, spaces) is not a host a browser would send.
_HOST = re.compile(r"(?P<name>[a-z0-9_.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
# RFC 1035: at most 63 characters a label, 253 a name (without the final dot).
_LABEL_MAX, _NAME_MAX = 63, 253


def _ipv6(address: str) -> str | None:
    try:
        return ipaddress.IPv6Address(address).compressed
    except ValueError:
        return None


def normalize_host(host: str | None) -> str | None:
    """Return the host name of a ``Host`` header value, lower-cased, without port or final dot.

    An IPv6 literal comes back without its brackets. ``None`` for a value that is not a host
    name or address (so it matches no cookie entry): non-ASCII text (browsers send IDNs as
    ``xn--`` labels, and ``str.lower`` would fold some non-ASCII letters into ASCII ones),
    brackets around anything but an IPv6 address, empty labels, labels over 63 characters,
    names over 253.
    """
    if not host or not host.isascii():
        return None
    match = _HOST.fullmatch(host.strip().lower())
    if match is None:
        return None
    name = match.group("name")
    if name.startswith("["):
        return _ipv6(name[1:-1])
    name = name.removesuffix(".")
    if not name or len(name) > _NAME_MAX:
        return None
    if any(not label or len(label) > _LABEL_MAX for label in name.split(".")):
        return None
    return name


def domain_matches(domain: str, host: str) -> bool:
    """Whether a cookie for ``domain`` is sent to ``host`` (both normalised, lower case).

    A name matches itself and its subdomains; an IP address only itself (``1.2.3.4`` is not
    a parent of ``5.1.2.3.4``, and browsers never domain-match addresses, RFC 6265 §5.1.3).
    """
    if host == domain:
        return True
    if is_ip(host) or is_ip(domain):
        return False
    return host.endswith("." + domain)


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
        domain = canonical_domain(entry.domain.removeprefix("."))
        if domain_matches(domain, name) and (best is None or len(domain) > len(best.domain)):
            best = entry
    return best
