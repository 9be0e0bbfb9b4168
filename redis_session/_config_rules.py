"""Configuration rules: what each option accepts and how options of one section must agree.

Three kinds of rule, all raising :class:`Invalid` with the message shown to the user:

- value types (:data:`VALUE_TYPES`): exactly the YAML types each kind of option takes (no
  ``"true"`` for a boolean, no ``"6379"`` for a port), and the TLS version names;
- per-option rules (:data:`OPTION_RULES`): ranges, host, cookie-name and cookie-domain syntax
  (``_config_names``), run once the option has its type; a few options read a value their
  type's hook would refuse (:data:`OPTION_TYPES`: ``remember_me: -1``);
- section rules (:data:`SECTION_CHECKS` and :func:`check_session`): options of one section that
  must agree, run once the section is built.

The cattrs wiring that applies them lives in ``_config_converter``. Messages may quote a value
the user wrote (a port, a host, a duration) but never a secret: secrets are checked for type and
emptiness only, and their values are not read into any message.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import ssl
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from cattrs.errors import AttributeValidationNote
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ._config import (
    REMEMBER_ME_DISABLED,
    ClusterConfig,
    ClusterNodeConfig,
    CookieConfig,
    HighAvailabilityConfig,
    NodeConfig,
    RedisConfig,
    Secret,
    SessionConfig,
    TLSConfig,
)
from ._config_names import cookie_domain_problem, overlapping_domains
from ._durations import format_duration, parse_duration

__all__ = [
    "DEPRECATED",
    "EMPTY_SECTIONS",
    "OPTION_RULES",
    "OPTION_TYPES",
    "SECTION_CHECKS",
    "VALUE_TYPES",
    "Invalid",
    "at",
    "check_session",
    "kind_of",
    "show",
]

#: What to say about a section written with nothing under it (``redis:`` alone), which is
#: almost always lost indentation.
EMPTY_SECTIONS: Mapping[type[Any], str] = {
    RedisConfig: "is empty; give its options, or remove it to keep sessions in memory",
    TLSConfig: "is empty; write 'tls: {}' for TLS with the defaults, or remove it",
    HighAvailabilityConfig: "is empty; give sentinel_name and nodes, or remove it",
    ClusterConfig: "is empty; give nodes, or remove it",
}
_TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
_TLS_NAMES = {version: f"TLS{number}" for number, version in _TLS_VERSIONS.items()}
_TLS_PATTERN = re.compile(r"(tls|ssl)v?\s*([0-9])\.([0-9])", re.IGNORECASE)
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 6265 cookie-name = token
# RFC 1123 labels, plus "_": container platforms resolve service names such as "my_redis".
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_HOST_AND_PORT = re.compile(r"([^:]+):[0-9]+")
_SAME_SITE = ("lax", "strict", "none")
# Authelia's "-1" for a disabled remember-me, as YAML gives it (an integer) or as a string.
_MINUS_ZERO = re.compile(r"\s*-\s*0+\s*")
_NEGATIVE = re.compile(r"\s*-\s*0*[1-9][0-9]*\s*")  # "-0" is zero (an error), not disabled


class Invalid(ValueError):
    """One problem with one value; the message is shown to the user as is.

    Without a note the problem belongs to the value being structured; :func:`at` attaches it
    to an option of the section being structured instead.
    """


# -- small helpers -----------------------------------------------------------------------------


def show(value: object) -> str:
    """Return a short, always printable repr of a value a user wrote, for a message."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int past Python's digit limit
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def kind_of(value: object) -> str:
    """Name the YAML kind of a value, for "expected ..., got <kind>" messages."""
    if value is None:
        return "nothing (null)"
    kinds: tuple[tuple[type[Any] | tuple[type[Any], ...], str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (Mapping, "a mapping"),
        ((list, tuple), "a list"),
    )
    for types, name in kinds:
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"


def at(name: str, message: str) -> Invalid:
    """Build a problem attached to the option ``name`` of the section being structured."""
    problem = Invalid(message)
    problem.add_note(AttributeValidationNote(f"option {name}", name, None))
    return problem


# -- leaf hooks: exactly the YAML types each option takes ----------------------------------------


def _structure_str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    msg = f"expected a string, got {kind_of(value)}"
    raise Invalid(msg)


def _structure_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    msg = f"expected true or false, got {kind_of(value)}"
    raise Invalid(msg)


def _structure_int(value: object, _: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        msg = f"expected an integer, got the string {show(value)}; remove the quotes"
    elif isinstance(value, float):
        msg = f"expected an integer, got {show(value)}"
    else:
        msg = f"expected an integer, got {kind_of(value)}"
    raise Invalid(msg)


def _structure_duration(value: object, _: object) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _structure_secret(value: object, _: object) -> Secret:
    # Never put the value in a message: only its kind and whether it is empty.
    if isinstance(value, Secret):
        text: object = value.get_secret_value()
    elif isinstance(value, str):
        text = value
    else:
        msg = f"expected a string, got {kind_of(value)}; quote the value"
        raise Invalid(msg)
    if not isinstance(text, str):
        msg = "expected a string inside Secret()"
        raise Invalid(msg)
    if not text:
        msg = "must not be empty"
        raise Invalid(msg)
    return value if isinstance(value, Secret) else Secret(text)


def _structure_tls_version(value: object, _: object) -> ssl.TLSVersion:
    expected = "expected one of TLS1.0, TLS1.1, TLS1.2, TLS1.3"
    if isinstance(value, ssl.TLSVersion):
        if value in _TLS_NAMES:
            return value
        if value is ssl.TLSVersion.SSLv3:
            msg = "must not be below TLS1.0, got SSLv3"
            raise Invalid(msg)
        msg = f"{expected}, got {value.name}"
        raise Invalid(msg)
    if isinstance(value, str):
        match = _TLS_PATTERN.fullmatch(value.strip())
        if match and match[1].lower() == "ssl":
            msg = f"must not be below TLS1.0, got {show(value)}"
            raise Invalid(msg)
        if match and f"{match[2]}.{match[3]}" in _TLS_VERSIONS:
            return _TLS_VERSIONS[f"{match[2]}.{match[3]}"]
        msg = f"{expected}, got {show(value)}"
        raise Invalid(msg)
    msg = f"{expected}, got {kind_of(value)}"
    raise Invalid(msg)


#: The structure hook of each leaf type: only the YAML types that type's options take.
VALUE_TYPES: Mapping[type[Any], Callable[[object, object], Any]] = {
    str: _structure_str,
    bool: _structure_bool,
    int: _structure_int,
    Secret: _structure_secret,
    ssl.TLSVersion: _structure_tls_version,
    timedelta: _structure_duration,
}


def _structure_remember_me(value: object, kind: object) -> timedelta | None:
    """Read a remember-me duration: Authelia's notation, or a negative number ("disabled")."""
    if value is None and kind != timedelta:
        return None  # a cookies entry's option left unset: it takes the top-level value
    if isinstance(value, timedelta) and value < timedelta(0):
        return REMEMBER_ME_DISABLED
    if (isinstance(value, int) and not isinstance(value, bool) and value < 0) or (
        isinstance(value, str) and _NEGATIVE.fullmatch(value)
    ):
        return REMEMBER_ME_DISABLED
    if isinstance(value, str) and _MINUS_ZERO.fullmatch(value):
        return timedelta(0)  # zero, refused as zero ("must be longer than zero")
    return _structure_duration(value, kind)


#: Options read by their own hook instead of their type's (the type's hook refuses -1).
OPTION_TYPES: Mapping[tuple[type[Any], str], Callable[[object, object], Any]] = {
    (SessionConfig, "remember_me"): _structure_remember_me,
    (SessionConfig, "remember_me_duration"): _structure_remember_me,
    (CookieConfig, "remember_me"): _structure_remember_me,
}


# -- per-option rules, applied as each option is structured ------------------------------------


def _not_empty(value: str) -> None:
    if not value:
        msg = "must not be empty; leave the option out instead"
        raise Invalid(msg)


def _at_least(low: int) -> Callable[[int], None]:
    def rule(value: int) -> None:
        if value < low:
            msg = f"must be at least {low}, got {value}"
            raise Invalid(msg)

    return rule


def _port(value: int) -> None:
    if not 1 <= value <= 65535:
        msg = f"must be between 1 and 65535, got {value}"
        raise Invalid(msg)


def _positive(value: timedelta) -> None:
    if not value:
        msg = "must be longer than zero"
        raise Invalid(msg)


#: Longest session clock accepted. Redis TTLs and Lua numbers (doubles) stay exact far beyond
#: this, and no session should outlive a century; beyond it the Redis provider would refuse
#: what the in-memory one accepts.
_LONGEST_SESSION_CLOCK = timedelta(days=100 * 365)


def _session_clock(value: timedelta) -> None:
    _positive(value)
    if value > _LONGEST_SESSION_CLOCK:
        msg = f"must be at most 100y, got {format_duration(value)}"
        raise Invalid(msg)


def _remember_me(value: timedelta) -> None:
    if value < timedelta(0):
        return  # disabled (Authelia's -1)
    if not value:
        msg = "must be longer than zero; write -1 to disable remember-me"
        raise Invalid(msg)
    _session_clock(value)


def _same_site(value: str) -> None:
    if value in _SAME_SITE:
        return
    hint = f"; write it in lower case: {value.lower()!r}" if value.lower() in _SAME_SITE else ""
    msg = f"must be one of lax, strict or none, got {show(value)}{hint}"
    raise Invalid(msg)


_LIMIT_ACTIONS = ("deny", "evict_oldest")


def _limit_action(value: str) -> None:
    if value not in _LIMIT_ACTIONS:
        msg = f"must be deny or evict_oldest, got {show(value)}"
        raise Invalid(msg)


def _not_empty_secret(value: Secret) -> None:
    if not value.get_secret_value():
        msg = "must not be empty (leave it out to derive the index key from secret)"
        raise Invalid(msg)


def _cookie_domain(value: str) -> None:
    problem = cookie_domain_problem(value)
    if problem is not None:
        raise Invalid(problem)


def _pem_certificates(value: str) -> None:
    if "PRIVATE KEY" in value:
        # A pasted "certificate + key" bundle: certificate_chain is not a secret (it shows in
        # reprs and logs), so its key would leak. Never quote the value.
        msg = "holds a private key; give the certificates alone here and the key as private_key"
        raise Invalid(msg)
    try:
        x509.load_pem_x509_certificates(value.encode())
    except (ValueError, UnicodeError):
        msg = "is not a PEM certificate chain (-----BEGIN CERTIFICATE----- ...)"
        raise Invalid(msg) from None


def _pem_private_key(value: Secret) -> None:
    # Never quote the value, nor the parser's message about it: both could show the key.
    try:
        serialization.load_pem_private_key(value.get_secret_value().encode(), password=None)
    except TypeError:
        msg = "is an encrypted private key; give it unencrypted (there is no pass phrase option)"
        raise Invalid(msg) from None
    except (ValueError, UnicodeError, UnsupportedAlgorithm):
        msg = "is not a PEM private key (-----BEGIN PRIVATE KEY----- ...)"
        raise Invalid(msg) from None


def _cookie_name(value: str) -> None:
    if not _COOKIE_NAME.fullmatch(value):
        msg = f"{show(value)} is not a valid cookie name (use letters, digits and !#$%&'*+-.^_`|~)"
        raise Invalid(msg)


def _is_address(text: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _is_hostname(text: str) -> bool:
    name = text.removesuffix(".")
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _host(value: str, *, socket: bool) -> None:
    """Check a host as Authelia documents it; ``socket`` allows an absolute unix socket path."""
    _not_empty(value)
    if value.startswith("/"):
        if socket:
            return
        msg = "must be a host name or address, not a unix socket path"
        raise Invalid(msg)
    if value.startswith("[") and value.endswith("]"):
        if _is_address(value[1:-1], ipaddress.IPv6Address):
            return
        msg = f"{show(value)} is not a valid IPv6 address in brackets"
        raise Invalid(msg)
    if _is_address(value, ipaddress.IPv6Address):
        msg = f'an IPv6 address must be in square brackets and quoted: "[{value}]"'
        raise Invalid(msg)
    if _is_address(value, ipaddress.IPv4Address):
        return
    match = _HOST_AND_PORT.fullmatch(value)
    if match and _is_hostname(match[1]):
        msg = f"{show(value)} includes a port; give the port in the port option"
    elif all(part.isdigit() for part in value.split(".")):
        msg = f"{show(value)} is not a valid IPv4 address"
    elif _is_hostname(value):
        return
    else:
        forms = "a host name, an IPv4 address or a bracketed IPv6 address"
        msg = f"{show(value)} is not {forms}" + (
            " or an absolute unix socket path" if socket else ""
        )
    raise Invalid(msg)


def _server_name(value: str) -> None:
    _not_empty(value)
    if value.startswith("["):
        msg = "give an IPv6 address without brackets here"
        raise Invalid(msg)
    if not (_is_hostname(value) or _is_address(value, ipaddress.IPv6Address)):
        msg = f"{show(value)} is not a valid host name or address"
        raise Invalid(msg)


#: The rule of each option that has one, keyed by (section, option); it gets the typed value.
OPTION_RULES: Mapping[tuple[type[Any], str], Callable[[Any], None]] = {
    (SessionConfig, "name"): _cookie_name,
    (SessionConfig, "same_site"): _same_site,
    (SessionConfig, "domain"): _cookie_domain,
    (SessionConfig, "expiration"): _session_clock,
    (SessionConfig, "inactivity"): _session_clock,
    (SessionConfig, "remember_me"): _remember_me,
    (SessionConfig, "remember_me_duration"): _remember_me,
    (CookieConfig, "domain"): _cookie_domain,
    (CookieConfig, "authelia_url"): _not_empty,
    (CookieConfig, "default_redirection_url"): _not_empty,
    (CookieConfig, "name"): _cookie_name,
    (CookieConfig, "same_site"): _same_site,
    (CookieConfig, "expiration"): _session_clock,
    (CookieConfig, "inactivity"): _session_clock,
    (CookieConfig, "remember_me"): _remember_me,
    (SessionConfig, "maximum_data_size"): _at_least(1),
    (SessionConfig, "max_sessions_per_user"): _at_least(0),
    (SessionConfig, "session_limit_action"): _limit_action,
    (SessionConfig, "index_secret"): _not_empty_secret,
    (RedisConfig, "host"): functools.partial(_host, socket=True),
    (RedisConfig, "port"): _port,
    (RedisConfig, "username"): _not_empty,
    (RedisConfig, "database_index"): _at_least(0),
    (RedisConfig, "maximum_active_connections"): _at_least(1),
    (RedisConfig, "minimum_idle_connections"): _at_least(0),
    (RedisConfig, "timeout"): _positive,
    (RedisConfig, "maximum_idle_time"): _positive,
    (RedisConfig, "max_retries"): _at_least(0),
    (TLSConfig, "server_name"): _server_name,
    (TLSConfig, "ca_file"): _not_empty,
    (TLSConfig, "certificate_file"): _not_empty,
    (TLSConfig, "key_file"): _not_empty,
    (TLSConfig, "certificate_chain"): _pem_certificates,
    (TLSConfig, "private_key"): _pem_private_key,
    (HighAvailabilityConfig, "sentinel_name"): _not_empty,
    (HighAvailabilityConfig, "sentinel_username"): _not_empty,
    (NodeConfig, "host"): functools.partial(_host, socket=False),
    (NodeConfig, "port"): _port,
    (ClusterNodeConfig, "host"): functools.partial(_host, socket=False),
    (ClusterNodeConfig, "port"): _port,
    (ClusterConfig, "max_redirects"): _at_least(1),
}


# -- rules relating options of one section, run once the section is built -----------------------


#: Options deprecated by Authelia 4.38, and the option that replaced each.
DEPRECATED: Mapping[str, str] = {"domain": "cookies", "remember_me_duration": "remember_me"}


def check_session(raw: Mapping[Any, Any]) -> list[Invalid]:
    """Check the session section's own cross-option rules on its raw mapping."""
    # Judged on the raw mapping so that they are reported even when a section is broken.
    problems = []
    if raw.get("redis") is not None and raw.get("secret") is None:
        problems.append(at("secret", "is required when redis is configured"))
    for old, new in DEPRECATED.items():
        # Authelia refuses domain with cookies, and ignores remember_me_duration when
        # remember_me is set; we refuse both pairs rather than drop one value silently.
        if raw.get(old) is not None and raw.get(new) not in (None, [], ()):
            msg = f"is deprecated and cannot be used with {new}; keep only session.{new}"
            problems.append(at(old, msg))
    return problems


def _check_session(cfg: SessionConfig) -> list[Invalid]:
    return [
        at(f"cookies[{index}].domain", message)
        for index, message in overlapping_domains([entry.domain for entry in cfg.cookies])
    ]


def _check_redis(redis: RedisConfig) -> list[Invalid]:
    problems = []
    sentinel, cluster = redis.high_availability, redis.cluster
    socket = redis.host is not None and redis.host.startswith("/")
    if redis.host is None and sentinel is None and cluster is None:
        problems.append(at("host", "is required"))
    elif redis.host is None and sentinel is not None and not sentinel.nodes:
        problems.append(at("host", "is required unless high_availability.nodes lists a sentinel"))
    elif redis.host is None and cluster is not None and not cluster.nodes:
        problems.append(at("host", "is required unless cluster.nodes lists a node"))
    if socket and sentinel is not None:
        problems.append(at("host", "must be a sentinel's host name or address, not a socket"))
    if cluster is not None:
        if sentinel is not None:
            msg = "cannot be used with high_availability: Redis Cluster fails over by itself"
            problems.append(at("cluster", msg))
        if socket:
            problems.append(
                at("host", "must be a cluster node's host name or address, not a socket")
            )
        if redis.database_index != 0:
            index = redis.database_index
            msg = f"must be 0 with cluster (Redis Cluster has database 0 only), got {index}"
            problems.append(at("database_index", msg))
    if socket and redis.tls is not None:
        problems.append(at("tls", "cannot be used with a unix socket host"))
    if redis.minimum_idle_connections > redis.maximum_active_connections:
        limit = redis.maximum_active_connections
        msg = f"must not exceed maximum_active_connections ({limit}), got"
        problems.append(at("minimum_idle_connections", f"{msg} {redis.minimum_idle_connections}"))
    return problems


def _check_tls(tls: TLSConfig) -> list[Invalid]:
    problems = []
    low, high = tls.minimum_version, tls.maximum_version
    if high is not None and high < low:
        msg = f"must not be below minimum_version ({_TLS_NAMES[low]}), got {_TLS_NAMES[high]}"
        problems.append(at("maximum_version", msg))
    # certificate_file alone is fine: its PEM may hold the key too (ssl.load_cert_chain).
    if tls.key_file is not None and tls.certificate_file is None:
        if tls.certificate_chain is None:
            problems.append(at("certificate_file", "is required with key_file"))
        else:
            msg = "cannot be used with certificate_chain; give its key as private_key"
            problems.append(at("key_file", msg))
    inline = "give the client certificate either inline or as files"
    if tls.certificate_chain is not None and tls.certificate_file is not None:
        msg = f"cannot be used with certificate_file; {inline}"
        problems.append(at("certificate_chain", msg))
    if tls.private_key is not None and tls.key_file is not None:
        problems.append(at("private_key", f"cannot be used with key_file; {inline}"))
    if tls.certificate_chain is not None and tls.private_key is None:
        problems.append(at("private_key", "is required with certificate_chain"))
    if tls.private_key is not None and tls.certificate_chain is None:
        problems.append(at("certificate_chain", "is required with private_key"))
    return problems


def _check_high_availability(ha: HighAvailabilityConfig) -> list[Invalid]:
    if ha.sentinel_username is not None and ha.sentinel_password is None:
        return [at("sentinel_password", "is required with sentinel_username")]
    return []


#: The rules relating options of a built section; each returns the problems it finds.
SECTION_CHECKS: Mapping[type[Any], Callable[[Any], list[Invalid]]] = {
    SessionConfig: _check_session,
    RedisConfig: _check_redis,
    TLSConfig: _check_tls,
    HighAvailabilityConfig: _check_high_availability,
}
