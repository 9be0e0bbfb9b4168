"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``, ``bench``, ``chaos``."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHON = os.environ.get("NOX_PYTHON", "3.11")


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def _ensure_redis_server(session: nox.Session) -> None:
    # The tests start real redis-server processes; a missing binary must be provisioned,
    # never turned into skipped tests.
    if shutil.which("redis-server") is None:
        session.run("bash", ".ci/ensure-redis-server", external=True)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite against real redis-server processes, with branch coverage."""
    _ensure_redis_server(session)
    session.install("-e", ".[yaml]", *_group("tests"))
    session.run("coverage", "erase")
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        *(session.posargs or ["tests"]),
        env={"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")},
    )
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style with ruff (lint rules and formatting)."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    session.install("-e", ".[yaml]", *_group("typecheck"))
    session.run("mypy")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Walk a session through its life on the in-memory provider (or ``-- --config FILE``)."""
    session.install("-e", ".[yaml]")
    session.run("python", "-m", "redis_session", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmark the hot path and the store against peers (``-- --quick`` for a short run)."""
    _ensure_redis_server(session)
    session.install("-e", ".[yaml]", *_group("bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(python=PYTHON)
def chaos(session: nox.Session) -> None:
    """Faults under mixed load, long form (tests/chaos); prints the table, writes a report."""
    _ensure_redis_server(session)
    session.install("-e", ".[yaml]", *_group("tests"))
    report = os.path.join(session.create_tmp(), "chaos-report.md")
    session.run(
        "pytest",
        *(session.posargs or ["tests/chaos"]),
        env={"REDIS_SESSION_CHAOS": "full", "REDIS_SESSION_CHAOS_REPORT": report},
    )
