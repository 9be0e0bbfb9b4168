"""What the package says about itself is true: its name, its hints, its license, its claims."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import redis_session

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
NAME = PROJECT["name"]

#: ``redis-session`` on PyPI is an unrelated project; ``redis_session`` normalizes to it.
TAKEN_NAMES = {"redis-session"}
#: What a ``pip install`` hint may name besides this project.
OTHER_INSTALLS = {".", "nox"}


def test_the_distribution_name_is_not_someone_elses() -> None:
    assert canonicalize_name(NAME) not in TAKEN_NAMES
    assert canonicalize_name(NAME) == "redis-session-store"


def _pip_install_targets() -> list[tuple[str, str]]:
    """``(file, target)`` for every ``pip install X`` in the docs and the package's code."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted((ROOT / "redis_session").rglob("*.py"))
    hint = re.compile(r"pip\s+install\s+(?:-\S+\s+)*['\"]?([^\s'\"`]+)")
    return [
        (str(path.relative_to(ROOT)), match.group(1))
        for path in files
        for match in hint.finditer(path.read_text(encoding="utf-8"))
    ]


def test_every_install_hint_names_this_distribution() -> None:
    targets = _pip_install_targets()
    assert any(target.startswith(NAME) for _, target in targets)
    extras = set(PROJECT["optional-dependencies"])
    for where, target in targets:
        if target in OTHER_INSTALLS:
            continue
        requirement = Requirement(target)
        assert requirement.name == NAME, f"{where}: pip install {target}"
        assert requirement.extras <= extras, f"{where}: pip install {target}"


def test_installed_metadata_matches_pyproject() -> None:
    """The metadata the build backend wrote for this install (pip install -e .)."""
    meta = metadata.metadata(NAME)
    assert meta["Name"] == NAME
    assert meta["Version"] == redis_session.__version__
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in (meta.get_all("License-File") or [])
    classifiers = meta.get_all("Classifier") or []
    assert "Framework :: AsyncIO" in classifiers
    assert "Framework :: AnyIO" not in classifiers
    scripts = {
        entry.name: entry.value
        for entry in metadata.entry_points(group="console_scripts")
        if entry.value.startswith("redis_session.")
    }
    assert scripts == {NAME: "redis_session.__main__:main"}


def test_license_file_is_mit() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 redis_session developers" in text
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]


def test_python_classifiers_match_requires_python() -> None:
    """The classifiers are the nox matrix: every 3.X they name is allowed, the oldest first."""
    versions = [
        Version(match.group(1))
        for classifier in PROJECT["classifiers"]
        if (match := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", classifier))
    ]
    requires = SpecifierSet(PROJECT["requires-python"])
    assert versions
    assert all(version in requires for version in versions)
    # The oldest Python allowed is one the matrix tests.
    assert Version(f"{min(versions).major}.{min(versions).minor - 1}") not in requires
