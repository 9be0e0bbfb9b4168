"""The ``python -m redis_session demo`` command, on memory and on a real Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from redis_session.__main__ import main

from .servers import RedisProcess, free_port

STEPS = ("create", "load", "save", "save stale", "regenerate", "delete", "statistics")


def test_demo_walks_a_session_on_the_memory_provider(capsys: pytest.CaptureFixture[str]) -> None:
    """With no arguments the demo runs every step on the in-memory provider and exits 0."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "<SessionStore memory" in out
    for step in STEPS:
        assert f"\n{step}" in out or out.startswith(step)
    assert "refused: SessionConflict" in out
    assert "old id loads as None" in out
    assert "new id loads as None" in out


def test_demo_runs_against_the_configured_redis(
    redis: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --config the demo talks to the Redis the file names, and leaves no session behind.

    What may stay is the regenerate's tombstone under the old id: a marker, gone within a
    minute, that holds no data.
    """
    config = tmp_path / "session.yml"
    section = {"secret": "demo-secret-" + "x" * 32, "redis": redis.redis_section()}
    config.write_text(yaml.safe_dump({"session": section}))
    assert main(["demo", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "<SessionStore redis" in out
    assert f"127.0.0.1:{redis.port}" in out
    assert "refused: SessionConflict" in out
    admin = redis.admin()
    left = list(admin.scan_iter())  # the walk ends with a delete
    assert all(admin.hgetall(key) in ({b"m": b"1"}, {"m": "1"}) for key in left), left
    assert all(0 < admin.pttl(key) <= 60_000 for key in left)


def test_demo_reports_an_unreachable_redis_as_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable Redis gives exit status 1 and one readable line, not a traceback."""

    config = tmp_path / "session.yml"
    port = free_port()
    section = {"secret": "s" * 40, "redis": {"host": "127.0.0.1", "port": port}}
    config.write_text(yaml.safe_dump({"session": section}))
    assert main(["demo", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot connect to 127.0.0.1:")
    assert "Traceback" not in err


def test_module_entry_point_runs() -> None:
    """``python -m redis_session demo`` works as a command, as the README shows."""
    result = subprocess.run(
        [sys.executable, "-m", "redis_session", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "regenerate" in result.stdout
