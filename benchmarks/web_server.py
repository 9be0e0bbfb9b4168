"""The web layer's cost under a real server: requests per second of a small app under uvicorn.

``python -m benchmarks.web_server [--quick] [--loops asyncio,uvloop]``: one small Starlette app,
served by uvicorn (one worker, ``httptools`` if installed, else ``h11``) in its own process on a
free loopback port, in three variants on the same throwaway redis-server:

* ``none``: no session middleware (the baseline);
* ``ours``: :class:`redis_session.asgi.SessionMiddleware` (the store opened by the middleware
  from a config mapping, 8 connections, AES-GCM, msgpack, compare-and-set save);
* ``starsessions``: starsessions' ``SessionMiddleware`` + ``RedisStore`` (JSON, no encryption,
  plain ``SET``), on a ``redis.asyncio.BlockingConnectionPool(max_connections=8)``.

Every request carries the cookie of one of 1000 sessions created beforehand (1 KiB of
``payloads.make_session`` data each), taken in turn, so no two requests in flight share a
session; the route reads the session and writes one key, so each request is one load and one
save in both session variants (starsessions saves on every request anyway; ours saves when the
data changed, which it does). ``wrk`` drives the load on loopback (a Lua script picks the
cookies); without ``wrk`` a small Python load generator stands in (and says so).

Runs of the variants are interleaved, their order rotated per repetition; each figure is the
median of the repetitions, and each ratio is taken per repetition before the median. Server
CPU per request is the uvicorn process's ``utime + stime`` (``/proc/<pid>/stat``) over the run
divided by the requests wrk completed; Redis's CPU per request is taken the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starsessions import SessionMiddleware as StarMiddleware
from starsessions import load_session
from starsessions.serializers import JsonSerializer
from starsessions.stores.redis import RedisStore

from benchmarks._server import HOST, free_port, redis_server, tool_version
from benchmarks.payloads import DEFAULT_SIZE, make_session, packed_size
from redis_session import open_session_store
from redis_session.asgi import SessionMiddleware

VARIANTS = ("none", "ours", "starsessions")
LOOPS = ("asyncio", "uvloop")
SESSIONS = 1000
CONNECTIONS = 32
MAX_CONNECTIONS = 8
LIFETIME = 3600
SECRET = "a benchmark secret that is long enough to be taken seriously"
OURS_COOKIE = "authelia_session"
STAR_COOKIE = "session"
STAR_PREFIX = "bench:web:star:"
_READY_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")

_WRK_SCRIPT = """
local cookies = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do cookies[#cookies + 1] = line end
end
request = function()
  i = i % #cookies + 1
  return wrk.format("GET", "/", {["Host"] = wrk.headers["Host"], ["Cookie"] = cookies[i]})
end
"""


def _config(redis_port: int) -> dict[str, Any]:
    return {
        "secret": SECRET,
        "redis": {"host": HOST, "port": redis_port},
        # Longer than any run: the pre-created sessions must not expire between two visits.
        "inactivity": "1h",
        "expiration": "2h",
    }


def _http_impl() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


# -- the server process (``--serve``) --


def _app(variant: str, redis_port: int) -> Any:
    """Return the variant's Starlette app: the same route, with or without a session layer."""
    if variant == "none":

        async def plain(request: Request) -> PlainTextResponse:
            return PlainTextResponse("0")

        return Starlette(routes=[Route("/", plain)])

    if variant == "ours":
        middleware = Middleware(SessionMiddleware, cfg=_config(redis_port), secure=False)
        load = None
    else:
        # RESP2 and the same cap of 8 connections as macro.py's starsessions client.
        pool = aioredis.BlockingConnectionPool(
            host=HOST, port=redis_port, max_connections=MAX_CONNECTIONS, timeout=60, protocol=2
        )
        store = RedisStore(connection=aioredis.Redis(connection_pool=pool), prefix=STAR_PREFIX)
        middleware = Middleware(
            StarMiddleware,
            store=store,
            lifetime=LIFETIME,
            cookie_name=STAR_COOKIE,
            cookie_https_only=False,
        )
        # Its documented on-demand load (cheaper than its autoload middleware).
        load = load_session

    async def session(request: Request) -> PlainTextResponse:
        if load is not None:
            await load(request)
        data = request.session
        n = data.get("n", 0)
        if data["username"] != "john.doe":
            msg = "the pre-created session did not load"
            raise RuntimeError(msg)
        data["n"] = n + 1
        return PlainTextResponse(str(n))

    return Starlette(routes=[Route("/", session)], middleware=[middleware])


def _serve(variant: str, port: int, redis_port: int, loop: str) -> None:
    uvicorn.run(
        _app(variant, redis_port),
        host=HOST,
        port=port,
        loop=loop,
        http=_http_impl(),
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


# -- the parent: sessions, servers, load, measurements --


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (``/proc/<pid>/stat``), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5), counted from the state (field 3) here.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _redis_pid(port: int) -> int:
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"INFO server\r\n")
        data = b""
        while b"process_id:" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    found = re.search(rb"process_id:(\d+)", data)
    if found is None:
        msg = "redis-server did not tell its process id"
        raise RuntimeError(msg)
    return int(found.group(1))


async def _create_sessions(redis_port: int) -> tuple[list[str], list[str]]:
    """Create the sessions of both session variants; return their ``Cookie`` header values."""
    data = make_session(DEFAULT_SIZE)
    async with await open_session_store(_config(redis_port)) as store:
        ours = []
        for start in range(0, SESSIONS, 100):
            batch = [store.create(dict(data)) for _ in range(start, min(start + 100, SESSIONS))]
            ours += [f"{OURS_COOKIE}={s.id}" for s in await asyncio.gather(*batch)]
    redis = aioredis.Redis(host=HOST, port=redis_port, protocol=2)
    try:
        star_store = RedisStore(connection=redis, prefix=STAR_PREFIX)
        now = time.time()
        blob = JsonSerializer().serialize(
            {**data, "__metadata__": {"lifetime": LIFETIME, "created": now, "last_access": now}}
        )
        star_ids = [secrets.token_hex(16) for _ in range(SESSIONS)]
        for i in star_ids:
            await star_store.write(i, blob, LIFETIME, LIFETIME)
    finally:
        await redis.aclose()
    return ours, [f"{STAR_COOKIE}={i}" for i in star_ids]


def _get(port: int, cookie: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """One GET / with ``cookie``; return the status and the raw response head."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(
            f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nCookie: {cookie}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), head


class _Server:
    """One uvicorn process serving one variant on one event loop; stopped by its pid."""

    def __init__(self, variant: str, loop: str, redis_port: int, cookie: str) -> None:
        self.variant, self.loop = variant, loop
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.web_server",
                "--serve",
                variant,
                "--port",
                str(self.port),
                "--redis-port",
                str(redis_port),
                "--loop",
                loop,
            ],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                msg = f"{variant} server ({loop}) exited with {self.proc.returncode}"
                raise RuntimeError(msg)
            with contextlib.suppress(OSError):
                status, head = _get(self.port, cookie)
                if status != 200:
                    msg = f"{variant} server ({loop}) answered {status}: {head!r}"
                    raise RuntimeError(msg)
                return
            if time.monotonic() > deadline:
                self.stop()
                msg = f"{variant} server ({loop}) pid {self.proc.pid} not ready on {self.port}"
                raise RuntimeError(msg)
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(_STOP_TIMEOUT)


@contextlib.contextmanager
def _servers(redis_port: int, loops: tuple[str, ...], cookies: dict[str, str]) -> Iterator[Any]:
    started: list[_Server] = []
    try:
        for loop in loops:
            for variant in VARIANTS:
                # One at a time, so a failed start stops the ones before it.
                started.append(_Server(variant, loop, redis_port, cookies[variant]))  # noqa: PERF401
        yield {(s.variant, s.loop): s for s in started}
    finally:
        for s in started:
            s.stop()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _wrk(port: int, cookie_file: Path, script: Path, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"http://{HOST}:{port}/",
            "--",
            str(cookie_file),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    if done is None:
        msg = f"cannot read wrk's output:\n{out}"
        raise RuntimeError(msg)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors is not None:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    return {
        "requests": int(done.group(1)),
        "seconds": _ms(done.group(2) + done.group(3)) / 1e3,
        "errors": errors,
        "p50_ms": _ms(latency["50"]) if "50" in latency else None,
        "p99_ms": _ms(latency["99"]) if "99" in latency else None,
    }


def _python_load(port: int, cookie_file: Path, seconds: float) -> dict[str, Any]:
    """The fallback load generator, in its own process: keep-alive GETs on ``CONNECTIONS``."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.web_server",
            "--load",
            str(port),
            str(cookie_file),
            str(seconds),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


async def _load(port: int, cookies: list[str], seconds: float) -> dict[str, Any]:
    requests = errors = 0
    latencies: list[float] = []
    turn = 0
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        nonlocal requests, errors, turn
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while time.perf_counter() < deadline:
                turn = turn % len(cookies) + 1
                cookie = cookies[turn - 1]
                started = time.perf_counter()
                writer.write(
                    f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append(time.perf_counter() - started)
                requests += 1
                errors += not head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "seconds": elapsed,
        "errors": errors,
        "p50_ms": latencies[len(latencies) // 2] * 1e3 if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else None,
    }


def _measure(
    server: _Server, redis_pid: int, cookie_file: Path, script: Path | None, seconds: float
) -> dict[str, Any]:
    cpu0, redis0 = _cpu_seconds(server.proc.pid), _cpu_seconds(redis_pid)
    if script is not None:
        result = _wrk(server.port, cookie_file, script, seconds)
    else:
        result = _python_load(server.port, cookie_file, seconds)
    cpu = _cpu_seconds(server.proc.pid) - cpu0
    redis_cpu = _cpu_seconds(redis_pid) - redis0
    n = max(1, result["requests"])
    return {
        **result,
        "rps": result["requests"] / result["seconds"],
        "cpu_us_per_request": cpu / n * 1e6,
        "redis_cpu_us_per_request": redis_cpu / n * 1e6,
        # Below 1: the server waited (for Redis, for the load) or the machine's other work
        # took the core from it.
        "server_cpu_share": cpu / result["seconds"],
    }


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _ratio(runs: dict[str, list[dict[str, Any]]], a: str, b: str, key: str) -> float:
    """Median over the repetitions of ``a``'s ``key`` over ``b``'s in the same repetition."""
    return float(statistics.median(x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)))


def run(
    quick: bool,
    *,
    loops: tuple[str, ...] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run the web benchmark; return its settings, rows, ratios and whether the target is met.

    ``quick``: 3 repetitions of 2 s per variant and loop (else 8 of 4 s). ``loops``: the
    event loops to serve on (default: asyncio, and uvloop if installed). ``progress``: a
    function given one line of text per step (default: print to stderr).
    """
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if loops is None:
        loops = tuple(lp for lp in LOOPS if lp == "asyncio" or importlib.util.find_spec(lp))
    # Many short runs rather than a few long ones: on a shared machine the load of the other
    # processes drifts, and variants measured close together in time see the same drift.
    repeat, seconds, warmup = (3, 2.0, 1.0) if quick else (8, 4.0, 2.0)
    wrk = shutil.which("wrk")
    if wrk is None:
        say(
            "wrk is not installed (apt-get install wrk); falling back to the Python load "
            "generator, which is slower than the server: the req/s then measure it, not us"
        )
    with redis_server() as redis_port, tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        redis_pid = _redis_pid(redis_port)
        ours, star = asyncio.run(_create_sessions(redis_port))
        files = {"ours": Path(tmp, "ours.txt"), "starsessions": Path(tmp, "star.txt")}
        files["ours"].write_text("\n".join(ours) + "\n")
        files["starsessions"].write_text("\n".join(star) + "\n")
        # The baseline gets the same cookies (same request bytes) and ignores them.
        files["none"] = files["ours"]
        script: Path | None = None
        if wrk is not None:
            script = Path(tmp, "cookies.lua")
            script.write_text(_WRK_SCRIPT)
        first = {"none": ours[0], "ours": ours[0], "starsessions": star[0]}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            lp: {v: [] for v in VARIANTS} for lp in loops
        }
        with _servers(redis_port, loops, first) as servers:
            say(f"servers up: {', '.join(f'{v}/{lp}' for v, lp in servers)}")
            for server in servers.values():
                _measure(server, redis_pid, files[server.variant], script, warmup)
            for rep in range(repeat):
                for loop in loops:
                    order = VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]
                    for variant in order:
                        result = _measure(
                            servers[variant, loop], redis_pid, files[variant], script, seconds
                        )
                        runs[loop][variant].append(result)
                        say(
                            f"rep {rep + 1}/{repeat} {loop} {variant}: {result['rps']:,.0f} "
                            f"req/s, {result['cpu_us_per_request']:.0f} us CPU/req, "
                            f"{result['errors']} errors"
                        )
    rows = []
    ratios: list[dict[str, Any]] = []
    for loop in loops:
        for variant in VARIANTS:
            r = runs[loop][variant]
            rows.append(
                {
                    "loop": loop,
                    "variant": variant,
                    "rps": _median(r, "rps"),
                    "cpu_us_per_request": _median(r, "cpu_us_per_request"),
                    "redis_cpu_us_per_request": _median(r, "redis_cpu_us_per_request"),
                    "p50_ms": _median(r, "p50_ms"),
                    "p99_ms": _median(r, "p99_ms"),
                    "server_cpu_share": _median(r, "server_cpu_share"),
                    "errors": sum(x["errors"] for x in r),
                    "runs": r,
                }
            )
        lr = runs[loop]
        ratios.append(
            {
                "loop": loop,
                "ours_vs_none_rps": _ratio(lr, "ours", "none", "rps"),
                "ours_vs_none_cpu": _ratio(lr, "ours", "none", "cpu_us_per_request"),
                "starsessions_vs_none_rps": _ratio(lr, "starsessions", "none", "rps"),
                "starsessions_vs_none_cpu": _ratio(
                    lr, "starsessions", "none", "cpu_us_per_request"
                ),
                "ours_vs_starsessions_rps": _ratio(lr, "ours", "starsessions", "rps"),
                "ours_vs_starsessions_cpu": _ratio(
                    lr, "ours", "starsessions", "cpu_us_per_request"
                ),
            }
        )
    met = all(
        r["ours_vs_starsessions_rps"] > 1.0 and r["ours_vs_starsessions_cpu"] < 1.0 for r in ratios
    ) and not any(row["errors"] for row in rows)
    return {
        "settings": {
            "quick": quick,
            "repeat": repeat,
            "seconds": seconds,
            "warmup": warmup,
            "sessions": SESSIONS,
            "connections": CONNECTIONS,
            "redis_max_connections": MAX_CONNECTIONS,
            "session_bytes_msgpack": packed_size(make_session(DEFAULT_SIZE)),
            "loops": list(loops),
            "http": _http_impl(),
            "load_generator": "wrk -t1" if wrk else "python (wrk missing)",
        },
        "versions": _versions(),
        "rows": rows,
        "ratios": ratios,
        "target": {
            "text": "ours > starsessions in req/s and < in server CPU per request, no errors",
            "met": met,
        },
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "redis-server": tool_version("redis-server")}
    for name in ("uvicorn", "starlette", "starsessions", "redis", "httptools", "uvloop"):
        with contextlib.suppress(Exception):
            out[name] = version(name)
    if shutil.which("wrk"):
        out["wrk"] = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, check=False
        ).stdout.split("\n")[0]
    return out


def table(result: dict[str, Any]) -> str:
    """Return the result as markdown: one row per loop and variant, then the ratios."""
    lines = [
        "| loop | variant | req/s | server CPU us/req | server busy | Redis CPU us/req "
        "| p50 ms | p99 ms | req/s xnone | CPU xnone | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {r["loop"]: r for r in result["ratios"]}
    for row in result["rows"]:
        r = ratios[row["loop"]]
        v = row["variant"]
        rps_x = {"none": 1.0, "ours": r["ours_vs_none_rps"]}.get(v, r["starsessions_vs_none_rps"])
        cpu_x = {"none": 1.0, "ours": r["ours_vs_none_cpu"]}.get(v, r["starsessions_vs_none_cpu"])
        lines.append(
            f"| {row['loop']} | {v} | {row['rps']:,.0f} | {row['cpu_us_per_request']:.0f} "
            f"| {row['server_cpu_share']:.0%} | {row['redis_cpu_us_per_request']:.0f} "
            f"| {row['p50_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {rps_x:.2f}x | {cpu_x:.2f}x | {row['errors']} |"
        )
    lines += [
        "",
        "| loop | ours ÷ starsessions, req/s | ours ÷ starsessions, server CPU/req |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {r['loop']} | **{r['ours_vs_starsessions_rps']:.2f}x** "
        f"| **{r['ours_vs_starsessions_cpu']:.2f}x** |"
        for r in result["ratios"]
    ]
    target = result["target"]
    lines += ["", f"Target ({target['text']}): {'met' if target['met'] else 'NOT met'}."]
    return "\n".join(lines)


def report_section(result: dict[str, Any]) -> dict[str, Any]:
    """The result with what the runner's report takes from it (see ``report.targets``).

    ``targets``: per loop, ours against starsessions in req/s (must be above 1) and in server
    CPU per request (must be below 1), and ours against no sessions (reported, no target: the
    overhead). ``markdown``: this section's lines for latest.md.
    """
    checks: list[dict[str, Any]] = []
    errors = sum(row["errors"] for row in result["rows"])
    for r in result["ratios"]:
        loop = r["loop"]
        rps, cpu = r["ours_vs_starsessions_rps"], r["ours_vs_starsessions_cpu"]
        checks.append(
            {
                "target": f"web ({loop}): our middleware's req/s > starsessions' (no errors)",
                "measured": rps,
                "unit": "x",
                "met": rps > 1.0 and not errors,
            }
        )
        checks.append(
            {
                "target": f"web ({loop}): our server CPU per request < starsessions'",
                "measured": cpu,
                "unit": "x",
                "met": cpu < 1.0,
            }
        )
        checks.append(
            {
                "target": f"web ({loop}): our server CPU per request against no sessions "
                "(the overhead; reported)",
                "measured": r["ours_vs_none_cpu"],
                "unit": "x",
                "met": True,
            }
        )
    settings = result["settings"]
    markdown = [
        "## Web layer: a Starlette app under uvicorn",
        "",
        f"One uvicorn worker per variant ({settings['http']}), {settings['load_generator']} "
        f"with {settings['connections']} connections on loopback, {settings['sessions']} "
        f"sessions of {settings['session_bytes_msgpack']} B, each request reads the session "
        f"and writes one key; {settings['repeat']} repetitions of {settings['seconds']} s, "
        "variants interleaved, medians, ratios per repetition. starsessions neither encrypts "
        "nor compare-and-sets.",
        "",
        *table(result).splitlines(),
    ]
    return {**result, "targets": checks, "markdown": markdown}


def main(argv: list[str] | None = None) -> int:
    """Serve one variant (``--serve``), drive load (``--load``), or run the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs of 2 s instead of 8 of 4 s")
    parser.add_argument("--loops", help="comma-separated: asyncio,uvloop (default: both)")
    parser.add_argument("--json", type=Path, help="also write the result dict here")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.port, args.redis_port, args.loop)
        return 0
    if args.load:
        port, cookie_file, seconds = args.load
        cookies = Path(cookie_file).read_text().split()
        print(json.dumps(asyncio.run(_load(int(port), cookies, float(seconds)))))
        return 0
    loops = tuple(args.loops.split(",")) if args.loops else None
    result = run(args.quick, loops=loops)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
