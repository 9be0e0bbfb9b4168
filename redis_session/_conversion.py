"""Configuration loading: a YAML file or a mapping in, a checked :class:`SessionConfig` out.

One private, strict cattrs converter does the work (never ``cattrs.global_converter``). Leaf
hooks accept exactly the types YAML gives for each option (no ``"true"`` for a boolean, no
``"6379"`` for a port), per-option rules (ranges, host syntax) run as the option is structured,
and rules that relate options of one section run once that section is built. Every problem ends
up as one line ``session.<path>: <message>`` in a single :class:`ConfigError`.

Messages may quote a value the user wrote (a port, a host, a duration) but never a secret:
secrets are checked for type and emptiness only, and their values are not read into any message.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import re
import ssl
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from types import NoneType
from typing import TYPE_CHECKING, Any

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from ._config import (
    HighAvailabilityConfig,
    NodeConfig,
    RedisConfig,
    Secret,
    SessionConfig,
    TLSConfig,
)
from ._durations import format_duration, parse_duration
from ._errors import ConfigError

if TYPE_CHECKING:
    import yaml

__all__ = ["SECRET_FILE_VARIABLES", "load_config", "resolve_config", "validate_config"]

#: Environment variables naming a file that holds a secret, and the option each one fills.
#: The scheme is ``REDIS_SESSION_`` + the option path below ``session`` + ``_FILE``.
SECRET_FILE_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "REDIS_SESSION_SECRET_FILE": ("secret",),
    "REDIS_SESSION_REDIS_PASSWORD_FILE": ("redis", "password"),
    "REDIS_SESSION_REDIS_HIGH_AVAILABILITY_SENTINEL_PASSWORD_FILE": (
        "redis",
        "high_availability",
        "sentinel_password",
    ),
}

_SECTIONS: dict[type[Any], str] = {
    SessionConfig: "session",
    RedisConfig: "session.redis",
    TLSConfig: "session.redis.tls",
    HighAvailabilityConfig: "session.redis.high_availability",
    NodeConfig: "session.redis.high_availability.nodes[]",
}
for _section in _SECTIONS:
    attrs.resolve_types(_section)

_EMPTY_SECTION = {
    RedisConfig: "is empty; give its options, or remove it to keep sessions in memory",
    TLSConfig: "is empty; write 'tls: {}' for TLS with the defaults, or remove it",
    HighAvailabilityConfig: "is empty; give sentinel_name and nodes, or remove it",
}
_TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
_TYPE_NAMES = {
    Secret: "a Secret",
    tuple: "a tuple",
    timedelta: "a timedelta",
    ssl.TLSVersion: "an ssl.TLSVersion",
}
_TLS_NAMES = {version: f"TLS{number}" for number, version in _TLS_VERSIONS.items()}
_TLS_PATTERN = re.compile(r"(tls|ssl)v?\s*([0-9])\.([0-9])", re.IGNORECASE)
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 6265 cookie-name = token
# RFC 1123 labels, plus "_": container platforms resolve service names such as "my_redis".
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_HOST_AND_PORT = re.compile(r"([^:]+):[0-9]+")
_END = "\x00"  # ends each message inside transform_error's "message @ path" (values are repr'd)


class _Invalid(ValueError):
    """One problem with one value; the message is shown to the user as is."""


# -- small helpers -----------------------------------------------------------------------------


def _show(value: object) -> str:
    """Return a short, always printable repr of a value a user wrote, for a message."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int past Python's digit limit
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _kind(value: object) -> str:
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


def _at(name: str, message: str) -> _Invalid:
    """Build a problem attached to the option ``name`` of the section being structured."""
    problem = _Invalid(message)
    problem.add_note(AttributeValidationNote(f"option {name}", name, None))
    return problem


def _noted_names(problems: Iterable[BaseException]) -> set[str]:
    return {
        note.name
        for exc in problems
        for note in getattr(exc, "__notes__", ())
        if isinstance(note, AttributeValidationNote)
    }


# -- leaf hooks: exactly the YAML types each option takes ----------------------------------------


def _structure_str(value: object, _: object) -> str:
    if isinstance(value, str):
        return value
    msg = f"expected a string, got {_kind(value)}"
    raise _Invalid(msg)


def _structure_bool(value: object, _: object) -> bool:
    if isinstance(value, bool):
        return value
    msg = f"expected true or false, got {_kind(value)}"
    raise _Invalid(msg)


def _structure_int(value: object, _: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        msg = f"expected an integer, got the string {_show(value)}; remove the quotes"
    elif isinstance(value, float):
        msg = f"expected an integer, got {_show(value)}"
    else:
        msg = f"expected an integer, got {_kind(value)}"
    raise _Invalid(msg)


def _structure_duration(value: object, _: object) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _structure_secret(value: object, _: object) -> Secret:
    # Never put the value in a message: only its kind and whether it is empty.
    if isinstance(value, Secret):
        text: object = value.get_secret_value()
    elif isinstance(value, str):
        text = value
    else:
        msg = f"expected a string, got {_kind(value)}; quote the value"
        raise _Invalid(msg)
    if not isinstance(text, str):
        msg = "expected a string inside Secret()"
        raise _Invalid(msg)
    if not text:
        msg = "must not be empty"
        raise _Invalid(msg)
    return value if isinstance(value, Secret) else Secret(text)


def _structure_tls_version(value: object, _: object) -> ssl.TLSVersion:
    expected = "expected one of TLS1.0, TLS1.1, TLS1.2, TLS1.3"
    if isinstance(value, ssl.TLSVersion):
        if value in _TLS_NAMES:
            return value
        if value is ssl.TLSVersion.SSLv3:
            msg = "must not be below TLS1.0, got SSLv3"
            raise _Invalid(msg)
        msg = f"{expected}, got {value.name}"
        raise _Invalid(msg)
    if isinstance(value, str):
        match = _TLS_PATTERN.fullmatch(value.strip())
        if match and match[1].lower() == "ssl":
            msg = f"must not be below TLS1.0, got {_show(value)}"
            raise _Invalid(msg)
        if match and f"{match[2]}.{match[3]}" in _TLS_VERSIONS:
            return _TLS_VERSIONS[f"{match[2]}.{match[3]}"]
        msg = f"{expected}, got {_show(value)}"
        raise _Invalid(msg)
    msg = f"{expected}, got {_kind(value)}"
    raise _Invalid(msg)


# -- per-option rules, applied as each option is structured ------------------------------------


def _not_empty(value: str) -> None:
    if not value:
        msg = "must not be empty; leave the option out instead"
        raise _Invalid(msg)


def _at_least(low: int) -> Callable[[int], None]:
    def rule(value: int) -> None:
        if value < low:
            msg = f"must be at least {low}, got {value}"
            raise _Invalid(msg)

    return rule


def _port(value: int) -> None:
    if not 1 <= value <= 65535:
        msg = f"must be between 1 and 65535, got {value}"
        raise _Invalid(msg)


def _positive(value: timedelta) -> None:
    if not value:
        msg = "must be longer than zero"
        raise _Invalid(msg)


#: Longest session clock accepted. Redis TTLs and Lua numbers (doubles) stay exact far beyond
#: this, and no session should outlive a century; beyond it the Redis provider would refuse
#: what the in-memory one accepts.
_LONGEST_SESSION_CLOCK = timedelta(days=100 * 365)


def _session_clock(value: timedelta) -> None:
    _positive(value)
    if value > _LONGEST_SESSION_CLOCK:
        msg = f"must be at most 100y, got {format_duration(value)}"
        raise _Invalid(msg)


def _cookie_name(value: str) -> None:
    if not _COOKIE_NAME.fullmatch(value):
        msg = f"{_show(value)} is not a valid cookie name (use letters, digits and !#$%&'*+-.^_`|~)"
        raise _Invalid(msg)


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
        raise _Invalid(msg)
    if value.startswith("[") and value.endswith("]"):
        if _is_address(value[1:-1], ipaddress.IPv6Address):
            return
        msg = f"{_show(value)} is not a valid IPv6 address in brackets"
        raise _Invalid(msg)
    if _is_address(value, ipaddress.IPv6Address):
        msg = f'an IPv6 address must be in square brackets and quoted: "[{value}]"'
        raise _Invalid(msg)
    if _is_address(value, ipaddress.IPv4Address):
        return
    match = _HOST_AND_PORT.fullmatch(value)
    if match and _is_hostname(match[1]):
        msg = f"{_show(value)} includes a port; give the port in the port option"
    elif all(part.isdigit() for part in value.split(".")):
        msg = f"{_show(value)} is not a valid IPv4 address"
    elif _is_hostname(value):
        return
    else:
        forms = "a host name, an IPv4 address or a bracketed IPv6 address"
        msg = f"{_show(value)} is not {forms}" + (
            " or an absolute unix socket path" if socket else ""
        )
    raise _Invalid(msg)


def _server_name(value: str) -> None:
    _not_empty(value)
    if value.startswith("["):
        msg = "give an IPv6 address without brackets here"
        raise _Invalid(msg)
    if not (_is_hostname(value) or _is_address(value, ipaddress.IPv6Address)):
        msg = f"{_show(value)} is not a valid host name or address"
        raise _Invalid(msg)


_RULES: dict[tuple[type[Any], str], Callable[[Any], None]] = {
    (SessionConfig, "name"): _cookie_name,
    (SessionConfig, "domain"): _not_empty,
    (SessionConfig, "expiration"): _session_clock,
    (SessionConfig, "inactivity"): _session_clock,
    (SessionConfig, "remember_me_duration"): _session_clock,
    (SessionConfig, "maximum_data_size"): _at_least(1),
    (RedisConfig, "host"): functools.partial(_host, socket=True),
    (RedisConfig, "port"): _port,
    (RedisConfig, "username"): _not_empty,
    (RedisConfig, "database_index"): _at_least(0),
    (RedisConfig, "maximum_active_connections"): _at_least(1),
    (RedisConfig, "minimum_idle_connections"): _at_least(0),
    (RedisConfig, "timeout"): _positive,
    (RedisConfig, "maximum_idle_time"): _positive,
    (TLSConfig, "server_name"): _server_name,
    (TLSConfig, "ca_file"): _not_empty,
    (TLSConfig, "certificate_file"): _not_empty,
    (TLSConfig, "key_file"): _not_empty,
    (HighAvailabilityConfig, "sentinel_name"): _not_empty,
    (NodeConfig, "host"): functools.partial(_host, socket=False),
    (NodeConfig, "port"): _port,
}


# -- rules relating options of one section, run once the section is built -----------------------


def _check_session(raw: Mapping[Any, Any]) -> list[_Invalid]:
    # Judged on the raw mapping so that it is reported even when the redis section is broken.
    if raw.get("redis") is not None and raw.get("secret") is None:
        return [_at("secret", "is required when redis is configured")]
    return []


def _check_redis(redis: RedisConfig) -> list[_Invalid]:
    problems = []
    sentinel = redis.high_availability
    socket = redis.host is not None and redis.host.startswith("/")
    if redis.host is None and sentinel is None:
        problems.append(_at("host", "is required"))
    elif redis.host is None and sentinel is not None and not sentinel.nodes:
        problems.append(_at("host", "is required unless high_availability.nodes lists a sentinel"))
    if socket and sentinel is not None:
        problems.append(_at("host", "must be a sentinel's host name or address, not a socket"))
    if socket and redis.tls is not None:
        problems.append(_at("tls", "cannot be used with a unix socket host"))
    if redis.minimum_idle_connections > redis.maximum_active_connections:
        limit = redis.maximum_active_connections
        msg = f"must not exceed maximum_active_connections ({limit}), got"
        problems.append(_at("minimum_idle_connections", f"{msg} {redis.minimum_idle_connections}"))
    return problems


def _check_tls(tls: TLSConfig) -> list[_Invalid]:
    problems = []
    low, high = tls.minimum_version, tls.maximum_version
    if high is not None and high < low:
        msg = f"must not be below minimum_version ({_TLS_NAMES[low]}), got {_TLS_NAMES[high]}"
        problems.append(_at("maximum_version", msg))
    # certificate_file alone is fine: its PEM may hold the key too (ssl.load_cert_chain).
    if tls.key_file is not None and tls.certificate_file is None:
        problems.append(_at("certificate_file", "is required with key_file"))
    return problems


_CHECKS: dict[type[Any], Callable[[Any], list[_Invalid]]] = {
    RedisConfig: _check_redis,
    TLSConfig: _check_tls,
}


# -- the converter ---------------------------------------------------------------------------


def _unknown(key: object, section: type[Any]) -> str:
    names = [field.name for field in attrs.fields(section)]
    if isinstance(key, str):
        close = difflib.get_close_matches(key, names, n=1)
        if close:
            return f"unknown option (did you mean {close[0]!r}?)"
        for other, path in _SECTIONS.items():
            if other is not section and key in attrs.fields_dict(other):
                return (
                    f"unknown option ({_show(key)} is an option of {path}; check the indentation)"
                )
    return "unknown option"


def _fields(kind: type[Any]) -> tuple[attrs.Attribute[Any], ...]:
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(kind)
    return fields


def _fields_of(instance: object) -> dict[str, Any]:
    """Read a config object back as a mapping so that Python-built configs pass the same rules."""
    return {
        field.name: getattr(instance, field.name)
        for field in _fields(type(instance))
        if not (field.default is None and getattr(instance, field.name) is None)
    }


def _section_hook(converter: cattrs.Converter, section: type[Any]) -> Callable[..., Any]:
    rules = {}
    for field in attrs.fields(section):
        rule = _RULES.get((section, field.name))
        if rule is not None:
            rules[field.name] = override(struct_hook=_ruled(converter, field.type, rule))
    # mypy matches **rules against the _cattrs_* flags; they are field overrides.
    generated = make_dict_structure_fn(section, converter, **rules)  # type: ignore[arg-type]
    check = _CHECKS.get(section)

    def hook(value: object, _: object) -> Any:
        if isinstance(value, section):
            value = _fields_of(value)
        if not isinstance(value, Mapping):
            msg = f"expected a mapping of options, got {_kind(value)}"
            raise _Invalid(msg)
        early = _check_session(value) if section is SessionConfig else []
        try:
            result = generated(value, section)
        except ClassValidationError as exc:
            problems: list[Exception] = []
            for problem in exc.exceptions:
                if isinstance(problem, ForbiddenExtraKeysError):
                    keys = sorted(problem.extra_fields, key=_show)
                    problems.extend(
                        _at(_show(key) if not isinstance(key, str) else key, _unknown(key, section))
                        for key in keys
                    )
                else:
                    problems.append(problem)
            failed = _noted_names(exc.exceptions)
            problems.extend(p for p in early if not _noted_names([p]) & failed)
            raise _group(problems, section) from None
        late = early + (check(result) if check is not None else [])
        if late:
            raise _group(late, section)
        return result

    return hook


def _group(problems: typing.Sequence[Exception], section: type[Any]) -> ClassValidationError:
    return ClassValidationError(f"While structuring {section.__name__}", problems, section)


def _ruled(converter: cattrs.Converter, kind: Any, rule: Callable[[Any], None]) -> Any:
    base = converter.get_structure_hook(kind)

    def hook(value: object, _: object) -> Any:
        result = base(value, kind)
        if result is not None:
            rule(result)
        return result

    return hook


def _optional_section(kind: Any) -> type[Any] | None:
    args = typing.get_args(kind)
    if len(args) == 2 and args[1] is NoneType and args[0] in _EMPTY_SECTION:
        return typing.cast("type[Any]", args[0])
    return None


def _optional_section_hook(converter: cattrs.Converter, kind: Any) -> Callable[..., Any]:
    section = _optional_section(kind)
    assert section is not None
    inner = converter.get_structure_hook(section)
    empty = _EMPTY_SECTION[section]

    def hook(value: object, _: object) -> Any:
        # An explicit empty section is almost always lost indentation: say so, don't ignore it.
        if value is None:
            raise _Invalid(empty)
        return inner(value, section)

    return hook


def _is_list_of(kind: Any) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


def _list_hook(converter: cattrs.Converter, kind: Any) -> Callable[..., Any]:
    item = typing.get_args(kind)[0]
    item_hook = converter.get_structure_hook(item)

    def hook(value: object, _: object) -> tuple[Any, ...]:
        # A string or a mapping is iterable too, but is never a valid list of nodes or secrets.
        if not isinstance(value, list | tuple):
            msg = f"expected a list, got {_kind(value)}"
            raise _Invalid(msg)
        items, problems = [], []
        for index, element in enumerate(value):
            try:
                items.append(item_hook(element, item))
            except (ValueError, BaseValidationError) as exc:
                exc.add_note(IterableValidationNote(f"index {index}", index, item))
                problems.append(exc)
        if problems:
            raise IterableValidationError(f"While structuring {kind!r}", problems, kind)
        return tuple(items)

    return hook


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(Secret, _structure_secret)
    converter.register_structure_hook(ssl.TLSVersion, _structure_tls_version)
    converter.register_structure_hook(timedelta, _structure_duration)
    converter.register_structure_hook_factory(_is_list_of, lambda k: _list_hook(converter, k))
    converter.register_structure_hook_factory(
        lambda kind: _optional_section(kind) is not None,
        lambda k: _optional_section_hook(converter, k),
    )
    converter.register_structure_hook_factory(
        lambda kind: kind in _SECTIONS, lambda k: _section_hook(converter, k)
    )
    return converter


_CONVERTER = _make_converter()


def _describe(exc: BaseException, _: object) -> str:
    if isinstance(exc, _Invalid):
        return str(exc) + _END
    if isinstance(exc, KeyError):
        return "is required" + _END
    return f"is invalid ({type(exc).__name__})" + _END  # pragma: no cover - a bug in a hook


def _structure(raw: object) -> SessionConfig:
    """Structure and check ``raw`` (a mapping or a ``SessionConfig``); raise ``ConfigError``."""
    try:
        return _CONVERTER.structure(raw, SessionConfig)
    except _Invalid as exc:
        raise ConfigError([f"session: {exc}"]) from None
    except ClassValidationError as exc:
        lines = cattrs.transform_error(exc, path="session", format_exception=_describe)
        problems = []
        for line in lines:
            message, _, path = line.partition(_END + " @ ")
            problems.append(f"{path}: {message}")
        raise ConfigError(problems) from None


# -- files and the environment ---------------------------------------------------------------


@functools.cache
def _yaml_loader() -> type[yaml.SafeLoader]:
    import yaml  # noqa: PLC0415 - PyYAML is an optional dependency

    class Loader(yaml.SafeLoader):
        """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(loader: Loader, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    problem = f"found duplicate key {key_node.value!r}"
                    raise yaml.constructor.ConstructorError(
                        None, None, problem, key_node.start_mark
                    )
                seen.add((key_node.tag, key_node.value))
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


def _read_yaml(path: Path) -> object:
    try:
        loader = _yaml_loader()
    except ImportError:
        msg = f"{path}: reading a YAML file needs PyYAML: pip install 'redis-session-store[yaml]'"
        raise ConfigError([msg]) from None
    import yaml  # noqa: PLC0415 - present, _yaml_loader() just imported it

    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"{path}: cannot read the configuration file: {exc.strerror or exc}"
        raise ConfigError([msg]) from None
    try:
        return yaml.load(data, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the position and PyYAML's description: its snippet of the line could hold a secret.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(text for text in (exc.context, exc.problem) if text)
        msg = f"{path}: invalid YAML{where}: {what}"
        raise ConfigError([msg]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {type(exc).__name__}"]) from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # PyYAML's constructors raise these for explicit tags that do not parse
        # (``!!int abc``), absurd nesting or huge integers; their text quotes the scalar,
        # which may be a secret, so only the kind of failure is reported.
        msg = f"{path}: invalid YAML: a value could not be read ({type(exc).__name__})"
        raise ConfigError([msg]) from None


def _session_mapping(document: object, problems: list[str]) -> Mapping[Any, Any] | None:
    """Find the session options in ``document``, with or without a top-level ``session:``."""
    if isinstance(document, Mapping) and "session" in document:
        misplaced = [
            k for k in document if isinstance(k, str) and k in attrs.fields_dict(SessionConfig)
        ]
        problems.extend(f"{k}: is a session option; indent it under 'session:'" for k in misplaced)
        document = document["session"]
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        problems.append(f"session: expected a mapping of options, got {_kind(document)}")
        return None
    return document


def _read_secret_files(
    raw: Mapping[Any, Any], environ: Mapping[str, str], problems: list[str]
) -> dict[Any, Any]:
    """Copy ``raw`` with each secret named by a ``*_FILE`` variable read in from its file."""
    result = dict(raw)
    for variable, path in SECRET_FILE_VARIABLES.items():
        file_name = environ.get(variable)
        if not file_name:
            continue
        parent = result
        for key in path[:-1]:
            child = parent.get(key)
            if not isinstance(child, Mapping):
                break  # the section is absent: the variable has nothing to fill
            parent[key] = dict(child)
            parent = parent[key]
        else:
            option = "session." + ".".join(path)
            source = f"the file named by {variable} ({file_name!r})"
            if parent.get(path[-1]) is not None:
                problems.append(f"{option}: is set both here and by {variable}; use one")
                continue
            try:
                text = Path(file_name).read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(f"{option}: cannot read {source}: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{option}: {source} is not UTF-8 text")
                continue
            text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
            if not text:
                problems.append(f"{option}: {source} is empty")
                continue
            parent[path[-1]] = Secret(text)
    return result


def _with_defaults(cfg: SessionConfig) -> SessionConfig:
    """Fill the defaults that depend on other options: ``tls.server_name`` from ``host``."""
    redis = cfg.redis
    if redis is None or redis.tls is None or redis.tls.server_name or redis.host is None:
        return cfg
    name = redis.host.removeprefix("[").removesuffix("]")
    tls = attrs.evolve(redis.tls, server_name=name)
    return attrs.evolve(cfg, redis=attrs.evolve(redis, tls=tls))


# -- public functions ------------------------------------------------------------------------


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
) -> SessionConfig:
    """Read and check a session configuration.

    ``source`` is a path to a YAML file (needs PyYAML: ``pip install 'redis-session-store[yaml]'``)
    or a mapping. Either may hold a top-level ``session:`` key, as in Authelia's configuration
    file (other top-level keys are ignored), or be the session options themselves. An empty
    document gives the defaults, with the in-memory provider.

    Secrets may come from files named by the environment variables in
    :data:`SECRET_FILE_VARIABLES` (looked up in ``environ``, default ``os.environ``). The Redis
    ones only apply when the configuration has the section they belong to.

    Raises:
        ConfigError: listing every problem found, each as ``session.<path>: <message>``.

    """
    document: object = source
    if isinstance(source, str | os.PathLike):
        document = _read_yaml(Path(source))
    problems: list[str] = []
    raw = _session_mapping(document, problems)
    if raw is None:
        raise ConfigError(problems)
    raw = _read_secret_files(raw, os.environ if environ is None else environ, problems)
    try:
        cfg = _structure(raw)
    except ConfigError as exc:
        # A secret whose file could not be read is reported once, not again as "is required".
        reported = {line.partition(": ")[0] for line in problems}
        problems.extend(p for p in exc.problems if p.partition(": ")[0] not in reported)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return _with_defaults(cfg)


def validate_config(cfg: SessionConfig) -> None:
    """Check a ``SessionConfig`` built in Python by the same rules as :func:`load_config`.

    On top of those rules every value must already have its declared type: a ``str`` where a
    :class:`Secret` belongs, a list for a tuple or ``"1h"`` for a ``timedelta`` is reported
    (:func:`resolve_config` converts those instead).

    Raises:
        ConfigError: listing every problem found, each as ``session.<path>: <message>``.

    """
    problems = list(_mismatches(cfg, _structure(cfg), "session"))
    if problems:
        raise ConfigError(problems)


def _mismatches(given: object, checked: object, path: str) -> Iterator[str]:
    """Yield where ``given`` differs from its structured form ``checked`` (equal but for type)."""
    kind = type(checked)
    if type(given) is kind and kind in _SECTIONS:
        for field in _fields(kind):
            name = field.name
            yield from _mismatches(getattr(given, name), getattr(checked, name), f"{path}.{name}")
    elif type(given) is tuple and isinstance(checked, tuple):
        for index, (item, done) in enumerate(zip(given, checked, strict=True)):
            yield from _mismatches(item, done, f"{path}[{index}]")
    elif type(given) is not kind:
        expected = _TYPE_NAMES.get(kind, f"a {kind.__name__}")
        yield f"{path}: expected {expected}, got {_kind(given)}"


def resolve_config(cfg: SessionConfig) -> SessionConfig:
    """Check ``cfg`` and return it in the form :func:`load_config` gives.

    Values are converted as if read from YAML (``"hunter2"`` to a :class:`Secret`, ``"1h"`` to a
    ``timedelta``, lists to tuples), and the defaults that depend on other options are filled:
    ``redis.tls.server_name`` defaults to ``redis.host`` (without IPv6 brackets).

    Raises:
        ConfigError: listing every problem found, each as ``session.<path>: <message>``.

    """
    return _with_defaults(_structure(cfg))
