"""Cookie domains in the configuration: what ``session.cookies[].domain`` may be.

A cookie's ``Domain`` attribute sends the cookie to that domain and every subdomain of it
(RFC 6265 §5.2.3), so a wrong value either never works (a URL, a port, a wildcard) or hands
the session to other sites (a public suffix such as ``com`` or ``github.io``, which browsers
refuse anyway). The rules follow Authelia's validator (``internal/configuration/validator/
session.go``): a domain with at least one dot or an IP address, no wildcard, not on the Public
Suffix List, and no two entries whose cookies would reach the same hosts.

Functions here return a message (or ``None``) rather than raise, so the config rules decide how
a problem is reported; nothing here knows about option paths.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

__all__ = ["canonical_domain", "cookie_domain_problem", "is_ip", "overlapping_domains"]

# RFC 1123 labels: letters, digits and inner hyphens, at most 63 characters. No "_": browsers
# accept it in hosts, but a cookie domain is a registered DNS name.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_WITH_PORT = re.compile(r"(?P<host>[^:\[\]]+):(?P<port>[0-9]*)")


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # Parsed once, on the first domain checked: the list is large and most configs have none.
    from publicsuffixlist import PublicSuffixList  # noqa: PLC0415 - loaded on demand

    return PublicSuffixList()


def _show(value: str) -> str:
    """Quote a value for a message, shortened: a domain can be a mistaken paste of anything."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(value)} characters)"


def is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (no brackets, no port)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _syntax_problem(value: str) -> str | None:  # noqa: PLR0911 - one return per mistake
    """Say what is wrong with the form of ``value``, or ``None`` when it is a domain or an IP."""
    example = "'example.com'"
    if not value:
        return "must not be empty"
    if value != value.strip():
        return f"{_show(value)} has spaces around it"
    if _SCHEME.match(value):
        return f"{_show(value)} is a URL; give the domain alone, e.g. {example}"
    if "/" in value:
        return f"{_show(value)} has a path; give the domain alone, e.g. {example}"
    if "*" in value:
        return (
            f"{_show(value)} is a wildcard; give the domain itself ({_show(value.lstrip('*.'))}):"
            " its cookie is sent to every subdomain"
        )
    if value.startswith("."):
        return (
            f"{_show(value)} starts with '.'; remove it: the cookie is sent to every subdomain"
            " anyway (RFC 6265)"
        )
    if value.startswith("[") or is_ip(value):
        if value.startswith("[") and value.endswith("]") and is_ip(value[1:-1]):
            return f"give an IPv6 address without brackets: {_show(value[1:-1])}"
        if "%" in value:
            return f"{_show(value)} has a zone id ('%'); a browser never sends one in a Host"
        return None if is_ip(value) else f"{_show(value)} is not a valid IP address"
    match = _WITH_PORT.fullmatch(value)
    if match:
        return f"{_show(value)} has a port; cookies are not bound to ports: {_show(match['host'])}"
    if value.endswith("."):
        return f"{_show(value)} ends with '.'; remove it"
    if not value.isascii():
        return f"{_show(value)} is not ASCII; give an internationalised name in its xn-- form"
    return _name_problem(value)


def _name_problem(value: str) -> str | None:  # noqa: PLR0911 - one return per mistake
    name = value.lower()
    labels = name.split(".")
    if len(labels) < 2:  # a registrable domain has at least two labels
        return (
            f"{_show(value)} has no '.': give a domain such as {'example.com'!r} or an IP address;"
            " leave session.cookies empty for a cookie of the request's host only"
        )
    if len(name) > 253:  # RFC 1035's limit on a name
        return f"is {len(name)} characters long; a domain name has at most 253"
    for label in labels:
        if not label:
            return f"{_show(value)} has an empty label ('..')"
        if len(label) > 63:  # RFC 1035's limit on a label
            return f"{_show(value)} has a label of {len(label)} characters; at most 63 are allowed"
        if not _LABEL.fullmatch(label):
            return (
                f"{_show(value)} is not a valid domain name (letters, digits and inner hyphens"
                " between the dots)"
            )
    if labels[-1].isdigit():
        return f"{_show(value)} is neither a valid IPv4 address nor a domain name"
    return None


def cookie_domain_problem(value: str) -> str | None:
    """Return why ``value`` cannot be a cookie domain, or ``None`` when it can.

    A domain name with at least two labels that is not a public suffix (``com``, ``co.uk``,
    ``github.io``), or an IPv4 or IPv6 address (a cookie then goes to that exact host). No
    scheme, port, path, wildcard, or leading or trailing dot.
    """
    problem = _syntax_problem(value)
    if problem is not None or is_ip(value):
        return problem
    if _public_suffixes().is_public(value.lower()):
        return (
            f"{_show(value)} is a public suffix (Public Suffix List): browsers refuse a cookie for"
            " it; give your own domain under it"
        )
    return None


def canonical_domain(value: str) -> str:
    """Return a valid cookie domain in one spelling: lower case, an IP address compressed."""
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return value.lower()


def overlapping_domains(domains: Sequence[str]) -> list[tuple[int, str]]:
    """Return ``(index, message)`` for each domain that repeats or lies within an earlier one.

    Two cookies whose domains overlap are both sent to the hosts they share, so a request would
    carry two sessions; Authelia refuses such entries, and so do we. Compared without case.
    """
    found = []
    seen: list[tuple[int, str]] = []
    for index, domain in enumerate(domains):
        name = canonical_domain(domain)
        for other_index, other in seen:
            if name == other:
                found.append(
                    (index, f"{_show(domain)} is also the domain of cookies[{other_index}]")
                )
                break
            if not is_ip(name) and (name.endswith("." + other) or other.endswith("." + name)):
                message = (
                    f"{_show(domain)} overlaps cookies[{other_index}].domain"
                    f" ({_show(domains[other_index])}): a cookie for a domain is also sent to its"
                    " subdomains, so a request would carry both; keep one of them"
                )
                found.append((index, message))
                break
        seen.append((index, name))
    return found
