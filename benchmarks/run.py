"""Run every benchmark in one go and write ``benchmarks/results/latest.{json,md,png}``
and ``latest-loops.png``.

``python -m benchmarks`` (full, about 12 minutes on two cores) or ``python -m benchmarks --quick``
(under four). Starts its own redis-server on a free loopback port and stops it at the
end, and for the cluster section a 3-master Redis Cluster (the test harness's) likewise;
nothing else is touched. See ``benchmarks/README.md`` for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import cluster, hotpath, macro, report, web_server
from benchmarks._server import redis_server, tool_version
from benchmarks.payloads import DEFAULT_SIZE, SIZES

RESULTS = Path(__file__).parent / "results"
CONCURRENCIES = (1, 4, 16, 64, 256, 1024)
#: The concurrency of the headline ratio and of the payload-size sweep.
HEADLINE_TASKS = 64
#: Concurrencies of the cluster section (1 KiB): one caller, and the headline load.
CLUSTER_CONCURRENCIES = (1, HEADLINE_TASKS)

#: name: (micro repetitions, micro batch seconds, macro repetitions, warm-up s, duration s,
#: redis-benchmark requests per test)
MODES = {
    "quick": (15, 0.01, 2, 0.2, 0.5, 20_000),
    "full": (41, 0.02, 3, 0.5, 1.5, 100_000),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (under 4 minutes)")
    parser.add_argument("--duration", type=float, help="seconds per store run (after warm-up)")
    parser.add_argument("--repeat", type=int, help="repetitions of every store run")
    parser.add_argument(
        "--only",
        choices=["hotpath", "store", "cluster", "web"],
        help="run one part (the report is partial)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    return parser.parse_args(argv)


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip()


def _git_commit() -> str:
    """The commit measured; ``+dirty`` when the package has uncommitted changes."""
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "redis_session")
    return f"{commit}+dirty" if dirty and dirty != "?" else commit


def _meta(mode: str) -> dict[str, Any]:
    server = shutil.which("redis-server")
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "redis_server": tool_version(server) if server else None,
        "packages": {
            name: version(name)
            for name in (
                "redis",
                "hiredis",
                "msgpack",
                "cryptography",
                "cattrs",
                "starsessions",
                "valkey-glide",
                "coredis",
                "uvloop",
            )
        },
    }


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind normally, so the redis-server we started is stopped by its context manager.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; return the exit status."""
    args = _parse(argv)
    mode = "quick" if args.quick else "full"
    micro_repeat, batch, repeat, warmup, duration, requests = MODES[mode]
    repeat = args.repeat or repeat
    duration = args.duration or duration
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    began = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {line}", flush=True)

    results: dict[str, Any] = {
        "meta": _meta(mode),
        "settings": {
            "payload_sizes": SIZES,
            "default_payload": DEFAULT_SIZE,
            "concurrencies": CONCURRENCIES,
            "loops": macro.LOOPS,
            "msgpack_sizes": macro.MSGPACK_SIZES,
            "headline_tasks": HEADLINE_TASKS,
            "max_connections": macro.MAX_CONNECTIONS,
            "sessions_per_client": macro.POOL_SIZE,
            "micro_repeat": micro_repeat,
            "micro_batch_s": batch,
            "store_repeat": repeat,
            "store_warmup_s": warmup,
            "store_duration_s": duration,
            "redis_benchmark_requests": requests,
            "cluster_concurrencies": CLUSTER_CONCURRENCIES,
        },
    }
    if args.only in (None, "hotpath"):
        progress("hot path micro-benchmarks")
        results["hotpath"] = hotpath.run(repeat=micro_repeat, batch_seconds=batch)
        for size, figures in results["hotpath"].items():
            line = ", ".join(f"{k} {v['ratio']:.2f}x" for k, v in figures["ratios"].items())
            progress(f"  {size:>5} B: {line}")
    if args.only in (None, "store"):
        with redis_server() as port:
            progress(f"redis-server on 127.0.0.1:{port}")
            rows = macro.run_on_loops(
                port,
                concurrencies=CONCURRENCIES,
                sizes=SIZES,
                default_size=DEFAULT_SIZE,
                size_concurrency=HEADLINE_TASKS,
                repeat=repeat,
                warmup=warmup,
                duration=duration,
                progress=progress,
            )
            results["store"] = {
                "by_concurrency": [r for r in rows if r["payload"] == DEFAULT_SIZE],
                "by_payload": [r for r in rows if r["tasks"] == HEADLINE_TASKS],
            }
            results["redis_benchmark"] = {}
            for size in SIZES:
                progress(f"redis-benchmark -t set,get -d {size} -c 50 -n {requests}")
                results["redis_benchmark"][str(size)] = macro.redis_benchmark(port, size, requests)
    if args.only in (None, "cluster"):
        with redis_server() as port, cluster.redis_cluster() as nodes:
            masters = ", ".join(str(m.port) for m in nodes.masters())
            progress(f"redis-server on 127.0.0.1:{port}; cluster masters on ports {masters}")
            results["cluster"] = asyncio.run(
                cluster.run(
                    port,
                    nodes.seeds(),
                    concurrencies=CLUSTER_CONCURRENCIES,
                    size=DEFAULT_SIZE,
                    repeat=repeat,
                    warmup=warmup,
                    duration=duration,
                    progress=progress,
                    keys_per_master=lambda: cluster.count_keys(nodes),
                )
            )
    if args.only in (None, "web"):
        progress("web layer under uvicorn (wrk on loopback): no sessions, ours, starsessions")
        results["web"] = web_server.report_section(web_server.run(args.quick, progress=progress))
    results["meta"]["seconds"] = round(time.perf_counter() - began, 1)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "latest.md").write_text(report.markdown(results))
    report.chart(results, args.results / "latest.png")
    written = ["latest.json", "latest.md", "latest.png"]
    if report.loops_chart(results, args.results / "latest-loops.png"):
        written.append("latest-loops.png")
    progress(f"wrote {', '.join(written)} in {args.results}")
    print()
    print(report.targets_text(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
