"""A throwaway redis-server for one benchmark run: free loopback port, no persistence, by pid.

Never 6379: a Redis that is not ours may run there. Binds 127.0.0.1 only, keeps its files in a
temporary directory, and is stopped by its own pid (SIGTERM, then SIGKILL after a bounded wait).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
_RESERVED_PORTS = frozenset({6379, 26379})
_READY_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_ATTEMPTS = 5


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now, never 6379 or 26379."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
        if port not in _RESERVED_PORTS:
            return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def tool_version(binary: str) -> str:
    """``v=7.0.15`` style version of redis-server / redis-benchmark, or ``?``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip() or "?"


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """Start redis-server on a free loopback port; yield the port; stop it by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        msg = "redis-server is not on PATH (run .ci/ensure-redis-server, or nox -s bench)"
        raise RuntimeError(msg)
    with tempfile.TemporaryDirectory(prefix="redis-bench-") as workdir:
        for _ in range(_ATTEMPTS):
            port = free_port()
            conf = Path(workdir, "redis.conf")
            conf.write_text(
                f"port {port}\nbind {HOST}\nprotected-mode yes\ndir {workdir}\n"
                'save ""\nappendonly no\nlogfile redis.log\ndaemonize no\n'
            )
            proc = subprocess.Popen(
                [binary, str(conf)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                deadline = time.monotonic() + _READY_TIMEOUT
                while proc.poll() is None and not _ping(port):
                    if time.monotonic() > deadline:
                        msg = f"redis-server pid {proc.pid} not ready on port {port}"
                        raise RuntimeError(msg)
                    time.sleep(0.02)
                if proc.poll() is not None:
                    continue  # lost the port to someone else: try another
                yield port
                return
            finally:
                _stop(proc)
        msg = f"redis-server could not get a free port in {_ATTEMPTS} attempts"
        raise RuntimeError(msg)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_TIMEOUT)
