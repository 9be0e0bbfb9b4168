"""The cattrs converter that turns a mapping into a checked :class:`SessionConfig`.

One private, strict converter (never ``cattrs.global_converter``), with detailed validation:
leaf types take exactly what ``_config_rules.VALUE_TYPES`` allows, each option with a rule gets
it as it is structured, a section's own checks run once it is built, and unknown keys are
reported with the option they were probably meant to be. :func:`structure` walks cattrs'
exception groups into one :class:`ConfigProblem` per problem (path and message apart) and
raises them together in a :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import NoneType
from typing import Any

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
    ClusterConfig,
    ClusterNodeConfig,
    CookieConfig,
    HighAvailabilityConfig,
    NodeConfig,
    RedisConfig,
    SessionConfig,
    TLSConfig,
)
from ._config_rules import (
    EMPTY_SECTIONS,
    OPTION_RULES,
    OPTION_TYPES,
    SECTION_CHECKS,
    VALUE_TYPES,
    Invalid,
    at,
    check_session,
    kind_of,
    show,
)
from ._errors import ConfigError, ConfigProblem

__all__ = ["SECTIONS", "section_fields", "structure"]

#: The config section classes and the path of each in a configuration file.
SECTIONS: Mapping[type[Any], str] = {
    SessionConfig: "session",
    CookieConfig: "session.cookies[]",
    RedisConfig: "session.redis",
    TLSConfig: "session.redis.tls",
    HighAvailabilityConfig: "session.redis.high_availability",
    NodeConfig: "session.redis.high_availability.nodes[]",
    ClusterConfig: "session.redis.cluster",
    ClusterNodeConfig: "session.redis.cluster.nodes[]",
}
for _section in SECTIONS:
    attrs.resolve_types(_section)


def _noted_names(problems: Iterable[BaseException]) -> set[str]:
    return {
        note.name
        for exc in problems
        for note in getattr(exc, "__notes__", ())
        if isinstance(note, AttributeValidationNote)
    }


def _unknown(key: object, section: type[Any]) -> str:
    names = [field.name for field in attrs.fields(section)]
    if isinstance(key, str):
        close = difflib.get_close_matches(key, names, n=1)
        if close:
            return f"unknown option (did you mean {close[0]!r}?)"
        for other, path in SECTIONS.items():
            if other is not section and key in attrs.fields_dict(other):
                return f"unknown option ({show(key)} is an option of {path}; check the indentation)"
    return "unknown option"


def section_fields(kind: type[Any]) -> tuple[attrs.Attribute[Any], ...]:
    """Return the fields of a config section class, typed for mypy."""
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(kind)
    return fields


def _fields_of(instance: object) -> dict[str, Any]:
    """Read a config object back as a mapping so that Python-built configs pass the same rules."""
    # A field left at its default is left out, as if not written: "remember_me_duration
    # with remember_me" must not fire because remember_me has a default.
    return {
        field.name: value
        for field in section_fields(type(instance))
        if not (
            type(value := getattr(instance, field.name)) is type(field.default)
            and value == field.default
        )
    }


def _section_hook(converter: cattrs.Converter, section: type[Any]) -> Callable[..., Any]:
    rules = {}
    for field in attrs.fields(section):
        rule = OPTION_RULES.get((section, field.name))
        own = OPTION_TYPES.get((section, field.name))
        if rule is not None:
            rules[field.name] = override(struct_hook=_ruled(converter, field.type, rule, own))
        elif own is not None:
            rules[field.name] = override(struct_hook=own)
    # mypy matches **rules against the _cattrs_* flags; they are field overrides.
    generated = make_dict_structure_fn(section, converter, **rules)  # type: ignore[arg-type]
    check = SECTION_CHECKS.get(section)

    def hook(value: object, _: object) -> Any:
        if isinstance(value, section):
            value = _fields_of(value)
        if not isinstance(value, Mapping):
            msg = f"expected a mapping of options, got {kind_of(value)}"
            raise Invalid(msg)
        early = check_session(value) if section is SessionConfig else []
        try:
            result = generated(value, section)
        except ClassValidationError as exc:
            problems: list[Exception] = []
            for problem in exc.exceptions:
                if isinstance(problem, ForbiddenExtraKeysError):
                    keys = sorted(problem.extra_fields, key=show)
                    problems.extend(
                        at(show(key) if not isinstance(key, str) else key, _unknown(key, section))
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


def _ruled(
    converter: cattrs.Converter,
    kind: Any,
    rule: Callable[[Any], None],
    own: Callable[[object, object], Any] | None = None,
) -> Any:
    base = own or converter.get_structure_hook(kind)

    def hook(value: object, _: object) -> Any:
        result = base(value, kind)
        if result is not None:
            rule(result)
        return result

    return hook


def _optional_section(kind: Any) -> type[Any] | None:
    args = typing.get_args(kind)
    if len(args) == 2 and args[1] is NoneType and args[0] in EMPTY_SECTIONS:
        return typing.cast("type[Any]", args[0])
    return None


def _optional_section_hook(converter: cattrs.Converter, kind: Any) -> Callable[..., Any]:
    section = _optional_section(kind)
    assert section is not None
    inner = converter.get_structure_hook(section)
    empty = EMPTY_SECTIONS[section]

    def hook(value: object, _: object) -> Any:
        # An explicit empty section is almost always lost indentation: say so, don't ignore it.
        if value is None:
            raise Invalid(empty)
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
            msg = f"expected a list, got {kind_of(value)}"
            raise Invalid(msg)
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
    for kind, leaf in VALUE_TYPES.items():
        converter.register_structure_hook(kind, leaf)
    converter.register_structure_hook_factory(_is_list_of, lambda k: _list_hook(converter, k))
    converter.register_structure_hook_factory(
        lambda kind: _optional_section(kind) is not None,
        lambda k: _optional_section_hook(converter, k),
    )
    converter.register_structure_hook_factory(
        lambda kind: kind in SECTIONS, lambda k: _section_hook(converter, k)
    )
    return converter


_CONVERTER = _make_converter()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Invalid):
        return str(exc)
    if isinstance(exc, KeyError):
        return "is required"
    return f"is invalid ({type(exc).__name__})"  # pragma: no cover - a bug in a hook


def _problems(exc: BaseException, path: str) -> Iterator[ConfigProblem]:
    """Walk cattrs' exception groups down to each problem, building its option path.

    The path grows as cattrs' ``transform_error`` grows it: ``.name`` for an option of a
    section, ``[index]`` for an item of a list; an exception without a note belongs to ``path``.
    """
    if isinstance(exc, ClassValidationError):
        options, own = exc.group_exceptions()
        for inner, option in options:
            yield from _problems(inner, f"{path}.{option.name}")
    elif isinstance(exc, IterableValidationError):
        items, own = exc.group_exceptions()
        for inner, item in items:
            yield from _problems(inner, f"{path}[{item.index!r}]")
    else:
        yield ConfigProblem(path, _describe(exc))
        return
    for inner in own:
        yield from _problems(inner, path)


def structure(raw: object) -> SessionConfig:
    """Structure and check ``raw`` (a mapping or a ``SessionConfig``).

    Raises:
        ConfigError: with one :class:`ConfigProblem` per problem found, paths from ``session``.

    """
    try:
        return _CONVERTER.structure(raw, SessionConfig)
    except (Invalid, ClassValidationError) as exc:
        raise ConfigError(list(_problems(exc, "session"))) from None
