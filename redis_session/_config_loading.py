"""Where a configuration comes from, and the three public ways in.

:func:`load_config` reads a YAML file (or takes a mapping), finds the session options with or
without a top-level ``session:``, fills secrets from the files named by
:data:`SECRET_FILE_VARIABLES`, and structures the result with the config converter;
:func:`validate_config` and :func:`resolve_config` check a :class:`SessionConfig` built in
Python by the same rules. Every problem found is reported in one :class:`ConfigError`.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys
import types
import warnings
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ._config import CookieConfig, Secret, SessionConfig
from ._config_converter import SECTIONS, section_fields, structure
from ._config_rules import DEPRECATED, kind_of
from ._errors import ConfigError, ConfigProblem

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
    "REDIS_SESSION_REDIS_TLS_PRIVATE_KEY_FILE": ("redis", "tls", "private_key"),
}
_TYPE_NAMES = {
    Secret: "a Secret",
    tuple: "a tuple",
    timedelta: "a timedelta",
    ssl.TLSVersion: "an ssl.TLSVersion",
}


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
        msg = "reading a YAML file needs PyYAML: pip install 'redis-session-store[yaml]'"
        raise ConfigError([ConfigProblem(str(path), msg)]) from None
    import yaml  # noqa: PLC0415 - present, _yaml_loader() just imported it

    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the configuration file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(str(path), msg)]) from None
    try:
        return yaml.load(data, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # Only the position and PyYAML's description: its snippet of the line could hold a secret.
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(text for text in (exc.context, exc.problem) if text)
        msg = f"invalid YAML{where}: {what}"
        raise ConfigError([ConfigProblem(str(path), msg)]) from None
    except yaml.YAMLError as exc:
        msg = f"invalid YAML: {type(exc).__name__}"
        raise ConfigError([ConfigProblem(str(path), msg)]) from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # PyYAML's constructors raise these for explicit tags that do not parse
        # (``!!int abc``), absurd nesting or huge integers; their text quotes the scalar,
        # which may be a secret, so only the kind of failure is reported.
        msg = f"invalid YAML: a value could not be read ({type(exc).__name__})"
        raise ConfigError([ConfigProblem(str(path), msg)]) from None


def _session_mapping(document: object, problems: list[ConfigProblem]) -> Mapping[Any, Any] | None:
    """Find the session options in ``document``, with or without a top-level ``session:``."""
    if isinstance(document, Mapping) and "session" in document:
        misplaced = [
            k for k in document if isinstance(k, str) and k in attrs.fields_dict(SessionConfig)
        ]
        problems.extend(
            ConfigProblem(k, "is a session option; indent it under 'session:'") for k in misplaced
        )
        document = document["session"]
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        problems.append(
            ConfigProblem("session", f"expected a mapping of options, got {kind_of(document)}")
        )
        return None
    return document


def _read_secret_files(
    raw: Mapping[Any, Any], environ: Mapping[str, str], problems: list[ConfigProblem]
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
                problems.append(
                    ConfigProblem(option, f"is set both here and by {variable}; use one")
                )
                continue
            try:
                text = Path(file_name).read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(
                    ConfigProblem(option, f"cannot read {source}: {exc.strerror or exc}")
                )
                continue
            except UnicodeDecodeError:
                problems.append(ConfigProblem(option, f"{source} is not UTF-8 text"))
                continue
            text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
            if not text:
                problems.append(ConfigProblem(option, f"{source} is empty"))
                continue
            parent[path[-1]] = Secret(text)
    return result


def _caller_level() -> int:
    """Return the ``stacklevel`` of the first frame outside this package (the user's code).

    The loaders are reached through several public entry points (``load_config``,
    ``resolve_config``, ``open_session_store`` and the web adapters), each at its own depth;
    a warning must point at the user's line whichever one they called.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == (
        package
    ):
        frame, level = frame.f_back, level + 1
    # Counted from the caller of this function; warn() counts from the caller of warn().
    return level


def _without_deprecated(cfg: SessionConfig) -> SessionConfig:
    """Map the options Authelia 4.38 deprecated to their replacements, with one warning.

    ``domain`` becomes the single ``cookies`` entry and ``remember_me_duration`` becomes
    ``remember_me``, as Authelia maps them; both fields are then left unset, so the loaded
    configuration has one place for each setting. (Giving both an old option and its
    replacement was refused while structuring.)
    """
    used = [old for old in DEPRECATED if getattr(cfg, old) is not None]
    if not used:
        return cfg
    changes: dict[str, Any] = dict.fromkeys(used)
    if cfg.domain is not None:
        changes["cookies"] = (CookieConfig(domain=cfg.domain),)
    if cfg.remember_me_duration is not None:
        changes["remember_me"] = cfg.remember_me_duration
    names = ", ".join(f"session.{old} (use session.{DEPRECATED[old]})" for old in used)
    warnings.warn(
        f"deprecated since Authelia 4.38 and mapped for you: {names}; see"
        " docs/configuration.md for the current shape",
        FutureWarning,
        stacklevel=_caller_level(),
    )
    return attrs.evolve(cfg, **changes)


def _complete_cookies(cfg: SessionConfig) -> SessionConfig:
    """Fill each ``cookies`` entry's unset options from the top of ``session``, as Authelia."""
    inherited: dict[str, Any] = {
        "name": cfg.name,
        "same_site": cfg.same_site,
        "expiration": cfg.expiration,
        "inactivity": cfg.inactivity,
        "remember_me": cfg.remember_me,
    }
    cookies = tuple(
        attrs.evolve(
            entry,
            **{key: value for key, value in inherited.items() if getattr(entry, key) is None},
        )
        for entry in cfg.cookies
    )
    return cfg if cookies == cfg.cookies else attrs.evolve(cfg, cookies=cookies)


def _with_defaults(cfg: SessionConfig) -> SessionConfig:
    """Fill the defaults that depend on other options.

    The deprecated options move to their replacements, every ``cookies`` entry gets the
    top-level value of each option it leaves unset, and ``tls.server_name`` defaults to
    ``host``.
    """
    cfg = _complete_cookies(_without_deprecated(cfg))
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
        ConfigError: listing every problem found, each a ConfigProblem at ``session.<path>``.

    """
    document: object = source
    if isinstance(source, str | os.PathLike):
        document = _read_yaml(Path(source))
    problems: list[ConfigProblem] = []
    raw = _session_mapping(document, problems)
    if raw is None:
        raise ConfigError(problems)
    raw = _read_secret_files(raw, os.environ if environ is None else environ, problems)
    try:
        cfg = structure(raw)
    except ConfigError as exc:
        # A secret whose file could not be read is reported once, not again as "is required".
        reported = {problem.path for problem in problems}
        problems.extend(p for p in exc.problems if p.path not in reported)
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
        ConfigError: listing every problem found, each a ConfigProblem at ``session.<path>``.

    """
    problems = list(_mismatches(cfg, structure(cfg), "session"))
    if problems:
        raise ConfigError(problems)


def _mismatches(given: object, checked: object, path: str) -> Iterator[ConfigProblem]:
    """Yield where ``given`` differs from its structured form ``checked`` (equal but for type)."""
    kind = type(checked)
    if type(given) is kind and kind in SECTIONS:
        for field in section_fields(kind):
            name = field.name
            yield from _mismatches(getattr(given, name), getattr(checked, name), f"{path}.{name}")
    elif type(given) is tuple and isinstance(checked, tuple):
        for index, (item, done) in enumerate(zip(given, checked, strict=True)):
            yield from _mismatches(item, done, f"{path}[{index}]")
    elif type(given) is not kind:
        expected = _TYPE_NAMES.get(kind, f"a {kind.__name__}")
        yield ConfigProblem(path, f"expected {expected}, got {kind_of(given)}")


def resolve_config(cfg: SessionConfig) -> SessionConfig:
    """Check ``cfg`` and return it in the form :func:`load_config` gives.

    Values are converted as if read from YAML (``"hunter2"`` to a :class:`Secret`, ``"1h"`` to a
    ``timedelta``, lists to tuples), and the defaults that depend on other options are filled:
    ``redis.tls.server_name`` defaults to ``redis.host`` (without IPv6 brackets).

    Raises:
        ConfigError: listing every problem found, each a ConfigProblem at ``session.<path>``.

    """
    return _with_defaults(structure(cfg))
