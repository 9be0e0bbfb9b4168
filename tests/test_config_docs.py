"""docs/configuration.md agrees with the config model, so the reference cannot drift."""

from __future__ import annotations

import inspect
import re
import ssl
import typing
from datetime import timedelta
from pathlib import Path
from types import NoneType
from typing import Any

import attrs
import pytest

from redis_session import _config
from redis_session._config import (
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
from redis_session._config_loading import SECRET_FILE_VARIABLES
from redis_session._durations import format_duration, parse_duration

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
SECTIONS: dict[type[Any], str] = {
    SessionConfig: "session",
    CookieConfig: "session.cookies[]",
    RedisConfig: "session.redis",
    TLSConfig: "session.redis.tls",
    HighAvailabilityConfig: "session.redis.high_availability",
    NodeConfig: "session.redis.high_availability.nodes[]",
    ClusterConfig: "session.redis.cluster",
    ClusterNodeConfig: "session.redis.cluster.nodes[]",
}
TLS_NAMES = {
    ssl.TLSVersion.TLSv1: "TLS1.0",
    ssl.TLSVersion.TLSv1_1: "TLS1.1",
    ssl.TLSVersion.TLSv1_2: "TLS1.2",
    ssl.TLSVersion.TLSv1_3: "TLS1.3",
}
TYPE_WORDS: dict[Any, str] = {
    str: "string",
    int: "integer",
    bool: "boolean",
    timedelta: "duration",
    Secret: "secret",
    ssl.TLSVersion: "TLS version",
    tuple[Secret, ...]: "list of secrets",
    tuple[NodeConfig, ...]: "list of nodes",
    tuple[ClusterNodeConfig, ...]: "list of nodes",
    tuple[CookieConfig, ...]: "list of cookies",
}


def doc_rows() -> dict[str, list[str]]:
    """Map each option path in the doc's tables to its cells (type, default, source, text)."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `(session[^`]*)` \|(.*)\|$", line)
        if match:
            assert match[1] not in rows, f"{match[1]} is documented twice"
            rows[match[1]] = [cell.strip() for cell in match[2].split(" | ")]
    return rows


def model_fields() -> list[tuple[type[Any], attrs.Attribute[Any], str]]:
    return [
        (section, field, f"{prefix}.{field.name}")
        for section, prefix in SECTIONS.items()
        for field in attrs.fields(section)
    ]


def type_word(kind: Any) -> str:
    args = [arg for arg in typing.get_args(kind) if arg is not NoneType]
    if typing.get_origin(kind) is not tuple and args:
        (kind,) = args  # X | None documents as X
    return "section" if kind in SECTIONS else TYPE_WORDS[kind]


def default_text(field: attrs.Attribute[Any]) -> str:
    value = field.default
    if value is attrs.NOTHING:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, timedelta):
        text = format_duration(value)
    elif isinstance(value, ssl.TLSVersion):
        text = TLS_NAMES[value]
    elif value == ():
        text = "[]"
    else:
        text = str(value)
    return f"`{text}`"


def extension_fields() -> set[str]:
    """Find the fields whose ``#:`` comment in _config.py marks them ``*Extension.*``."""
    found, section, comment = set(), "", ""
    for line in inspect.getsource(_config).splitlines():
        stripped = line.strip()
        if match := re.match(r"class (\w+)", line):
            section = match[1]
        if stripped.startswith("#:"):
            comment += stripped
            continue
        if (match := re.match(r" {4}(\w+): ", line)) and "*Extension.*" in comment:
            found.add(f"{section}.{match[1]}")
        comment = ""
    return found


ROWS = doc_rows()
FIELDS = model_fields()
IDS = [path for _, _, path in FIELDS]


def test_every_option_is_documented_and_nothing_else() -> None:
    """The doc's option rows are exactly the model's fields."""
    assert sorted(ROWS) == sorted(IDS)


@pytest.mark.parametrize(("section", "field", "path"), FIELDS, ids=IDS)
def test_documented_default(section: type[Any], field: attrs.Attribute[Any], path: str) -> None:
    """Each option's documented default is the model's default, as the notation writes it."""
    assert ROWS[path][1] == default_text(field)


@pytest.mark.parametrize(("section", "field", "path"), FIELDS, ids=IDS)
def test_documented_type(section: type[Any], field: attrs.Attribute[Any], path: str) -> None:
    """Each option's documented type matches its annotation."""
    hints = typing.get_type_hints(section)
    assert ROWS[path][0] == type_word(hints[field.name])


@pytest.mark.parametrize(("section", "field", "path"), FIELDS, ids=IDS)
def test_documented_source(section: type[Any], field: attrs.Attribute[Any], path: str) -> None:
    """Options marked *Extension.* in the model are the ones the doc calls extensions."""
    is_extension = f"{section.__name__}.{field.name}" in extension_fields()
    assert ROWS[path][2] == ("extension" if is_extension else "Authelia")
    assert ROWS[path][3], f"{path} has no description"


def test_extensions_are_found_at_all() -> None:
    """The comment scan sees the extensions, so the source test above is not vacuous."""
    assert "TLSConfig.certificate_file" in extension_fields()
    assert "SessionConfig.name" not in extension_fields()


def test_secret_file_variables_are_documented() -> None:
    """Every secret-file variable appears in the doc next to the option it fills."""
    text = DOC.read_text(encoding="utf-8")
    for variable, path in SECRET_FILE_VARIABLES.items():
        assert f"| `{variable}` | `session.{'.'.join(path)}` |" in text


def test_duration_unit_table_matches_the_parser() -> None:
    """Each unit row's letter and written-out names parse to the documented length."""
    text = DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| \w+ \| `(\w+)`[^|]*\|([^|]*)\| ([0-9]+ \w+) \|$", text, re.MULTILINE)
    assert len(rows) == 6
    for letter, names, length in rows:
        assert parse_duration(f"1{letter}") == parse_duration(length), letter
        for name in re.findall(r"`(\w+)`", names):
            assert parse_duration(f"1 {name}") == parse_duration(f"1{letter}"), name
