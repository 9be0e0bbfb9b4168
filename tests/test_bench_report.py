"""The benchmark report's target checks (benchmarks/report.py) on results built by hand.

No timing is measured here: these check that each of issue 14's targets reads the right row,
loop and ratio, names the worst concurrency, applies the no-dip tolerance, and that a web
section's own checks are listed.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import report

TASKS = (1, 4, 16, 64, 256, 1024)
PEERS = ("store", "redis-py", "starsessions", "valkey-glide", "coredis")


def _client(pairs_per_s: float, cpu_us: float) -> dict[str, Any]:
    return {
        "pairs_per_s": pairs_per_s,
        "cpu_us_per_pair": cpu_us,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "p999_ms": 3.0,
        "max_ms": 4.0,
        "slowest_task_share": 1.0,
    }


def _row(
    loop: str,
    tasks: int,
    payload: int,
    store_vs: dict[str, float],
    *,
    store_cpu: float = 50.0,
    names: tuple[str, ...] = PEERS,
) -> dict[str, Any]:
    """A row where the store does 1000 pairs/s and each other client 1000 / store_vs[name]."""
    clients = {name: _client(1000 / store_vs.get(name, 1.0), 100.0) for name in names}
    clients["store"] = _client(1000.0, store_cpu)
    raw = clients["redis-py"]["pairs_per_s"]
    ratios = {
        name: {"pairs_per_s": c["pairs_per_s"] / raw, "p99_ms": 1.0, "cpu_us_per_pair": 1.0}
        for name, c in clients.items()
        if name != "redis-py"
    }
    vs = {
        name: {"pairs_per_s": store_vs.get(name, 1.0), "cpu_us_per_pair": 0.5}
        for name in names
        if name != "store"
    }
    return {
        "loop": loop,
        "tasks": tasks,
        "payload": payload,
        "clients": clients,
        "ratios": ratios,
        "store_vs": vs,
    }


def _results(
    glide: dict[tuple[str, int], float],
    *,
    one_task_raw: float = 1.0,
    large: dict[str, float] | None = None,
    cpu_at_64: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Results of both loops; ``glide[loop, tasks]`` is the store ÷ valkey-glide pairs/s."""
    cpu = cpu_at_64 or {}
    rows = [
        _row(
            loop,
            tasks,
            1024,
            {"valkey-glide": glide.get((loop, tasks), 1.5), "redis-py": one_task_raw},
            store_cpu=cpu.get(loop, 50.0) if tasks == 64 else 80.0,
        )
        for loop in ("asyncio", "uvloop")
        for tasks in TASKS
    ]
    by_payload = [r for r in rows if r["tasks"] == 64]
    for loop, ratio in (large or {}).items():
        by_payload.append(
            _row(loop, 64, 16384, {"redis-py+msgpack": ratio}, names=(*PEERS, "redis-py+msgpack"))
        )
    return {
        "meta": {
            "date": "2026-01-01T00:00:00+00:00",
            "mode": "quick",
            "seconds": 1.0,
            "commit": "abc",
            "python": "3.11",
            "cpus": 2,
            "load_average": (0.0, 0.0, 0.0),
            "redis_server": "7.0",
            "packages": {},
        },
        "settings": {
            "default_payload": 1024,
            "headline_tasks": 64,
            "max_connections": 8,
            "sessions_per_client": 1024,
            "store_warmup_s": 0.2,
            "store_duration_s": 0.5,
            "store_repeat": 2,
        },
        "store": {"by_concurrency": rows, "by_payload": by_payload},
    }


def _find(checks: list[dict[str, Any]], *words: str) -> list[dict[str, Any]]:
    return [c for c in checks if all(w in c["target"] for w in words)]


def test_glide_target_names_the_worst_concurrency_from_4_tasks_per_loop() -> None:
    # 1 task is below the target's range: its 0.5 does not count.
    results = _results({("asyncio", 1): 0.5, ("asyncio", 256): 0.97, ("asyncio", 16): 1.2})
    checks = report.targets(results)
    (asyncio,) = _find(checks, "valkey-glide's", "(asyncio;")
    assert asyncio["measured"] == pytest.approx(0.97)
    assert "worst at 256 tasks" in asyncio["target"]
    assert not asyncio["met"]
    (uvloop,) = _find(checks, "valkey-glide's", "(uvloop;")
    assert uvloop["measured"] == pytest.approx(1.5)
    assert uvloop["met"]


def test_no_dip_is_within_ten_percent_of_the_64_task_ratio() -> None:
    # 64 tasks: 2.0, so the floor is 1.8; 256 tasks above it, 1024 below.
    results = _results({("asyncio", 64): 2.0, ("asyncio", 256): 1.81, ("asyncio", 1024): 1.79})
    checks = report.targets(results)
    (at256,) = _find(checks, "no dip (asyncio)", "at 256 tasks")
    (at1024,) = _find(checks, "no dip (asyncio)", "at 1024 tasks")
    assert at256["met"]
    assert not at1024["met"]
    assert at1024["measured"] == pytest.approx(1.79)
    assert "(1.80" in at1024["target"]
    assert len(_find(checks, "no dip (uvloop)")) == 2


def test_cpu_and_one_task_targets_read_asyncio_only() -> None:
    results = _results({}, one_task_raw=0.94, cpu_at_64={"asyncio": 29.0, "uvloop": 90.0})
    checks = report.targets(results)
    (cpu,) = _find(checks, "client CPU per pair")
    assert cpu["measured"] == pytest.approx(29.0)
    assert cpu["met"]
    (one,) = _find(checks, "at 1 task")
    assert one["measured"] == pytest.approx(0.94)
    assert not one["met"]


def test_large_sessions_against_redis_py_with_msgpack_per_loop() -> None:
    results = _results({}, large={"asyncio": 1.05, "uvloop": 0.9})
    checks = report.targets(results)
    (asyncio,) = _find(checks, "16 KiB", "(asyncio)", "redis-py+msgpack")
    (uvloop,) = _find(checks, "16 KiB", "(uvloop)", "redis-py+msgpack")
    assert asyncio["met"]
    assert not uvloop["met"]
    text = report.markdown(results)
    assert "### Large sessions" in text
    assert "| uvloop | 64 | 16 KiB | redis-py+msgpack |" in text


def test_a_web_section_adds_its_checks_and_lines() -> None:
    results = _results({})
    web_check = {
        "target": "web: store rps ≥ starsessions'",
        "measured": 1.2,
        "unit": report.X,
        "met": True,
    }
    results["web"] = {"targets": [web_check], "markdown": ["## Web", "", "a web table"]}
    assert web_check in report.targets(results)
    assert f"[MET ] web: store rps ≥ starsessions': 1.20{report.X}" in report.targets_text(results)
    text = report.markdown(results)
    assert f"| web: store rps ≥ starsessions' | 1.20{report.X} | ✅ |" in text
    assert "a web table" in text


def test_a_partial_run_has_only_its_own_targets() -> None:
    results = _results({})
    del results["store"]
    assert report.targets(results) == []
    assert "## Targets" in report.markdown(results)
