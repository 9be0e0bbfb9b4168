"""Fixtures that start real Redis servers (see ``tests/servers.py``) and always stop them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from .cluster_servers import RedisCluster, start_cluster
from .servers import (
    RedisProcess,
    SentinelCluster,
    TLSFiles,
    make_tls_files,
    start_redis,
    start_sentinel_cluster,
)
from .store_helpers import Backend, make_backend

# Hypothesis: CI runs a fixed, derandomized profile so a red run can be reproduced; each test
# still bounds its own example count. ``HYPOTHESIS_PROFILE=dev`` explores with fresh seeds.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

APP_USER = "app"
APP_PASSWORD = "app-secret-pw"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """redis-py runs only on asyncio."""
    return "asyncio"


def _dir(factory: pytest.TempPathFactory, name: str) -> Path:
    # Short names: a unix socket path must stay under ~100 bytes.
    return factory.mktemp(name)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One standalone server (TCP and unix socket) shared by the whole session."""
    proc = start_redis(_dir(tmp_path_factory, "std"), unixsocket=True)
    try:
        yield proc
    finally:
        proc.stop()


def reset_server(proc: RedisProcess) -> None:
    """Bring a shared server back to a clean state: running, empty, no leftover clients."""
    if proc.paused:
        proc.resume()
    if not proc.alive():
        proc.restart()
    admin = proc.admin()
    # Connections a previous test leaked would confuse connection-count assertions.
    admin.client_kill_filter(_type="normal", skipme=True)
    admin.client_kill_filter(_type="pubsub", skipme=True)
    admin.flushall()
    admin.script_flush()
    admin.config_resetstat()


@pytest.fixture
def redis(redis_server: RedisProcess) -> RedisProcess:
    """The shared standalone server, emptied (all DBs, scripts, stats, clients) for this test.

    Tests that kill, pause, restart or reconfigure a server must use ``fresh_redis`` instead.
    """
    reset_server(redis_server)
    return redis_server


@pytest.fixture
def fresh_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A standalone server (TCP and unix socket) of this test's own, to kill or pause at will."""
    proc = start_redis(_dir(tmp_path_factory, "fresh"), unixsocket=True)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def redis_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisProcess]]:
    """``factory(**start_redis_kwargs)`` starts more servers; all are stopped after the test."""
    started: list[RedisProcess] = []

    def factory(**kwargs: Any) -> RedisProcess:
        proc = start_redis(_dir(tmp_path_factory, "rf"), **kwargs)
        started.append(proc)
        return proc

    try:
        yield factory
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture(scope="session")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """Server with the default user off and ACL user ``app`` / ``app-secret-pw``."""
    proc = start_redis(
        _dir(tmp_path_factory, "acl"),
        acl_users=["default off", f"{APP_USER} on >{APP_PASSWORD} ~* &* +@all"],
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """CA, a server certificate for myredis.example.com only, and client certificates."""
    return make_tls_files(_dir(tmp_path_factory, "tls"))


def _tls_server(
    factory: pytest.TempPathFactory, name: str, tls_files: TLSFiles, **kwargs: Any
) -> Iterator[RedisProcess]:
    proc = start_redis(_dir(factory, name), tls=tls_files, tls_only=True, **kwargs)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[RedisProcess]:
    """TLS-only server (``port`` is 0); client certificates optional."""
    yield from _tls_server(tmp_path_factory, "tls", tls_files)


@pytest.fixture(scope="session")
def tls12_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[RedisProcess]:
    """TLS-only server that speaks TLS 1.2 and nothing newer."""
    yield from _tls_server(tmp_path_factory, "tls12", tls_files, tls_protocols="TLSv1.2")


@pytest.fixture(scope="session")
def mtls_redis(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[RedisProcess]:
    """TLS-only server that requires a client certificate signed by ``tls_files.ca_file``."""
    yield from _tls_server(tmp_path_factory, "mtls", tls_files, tls_auth_clients="yes")


@pytest.fixture
def sentinel_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """Master, replica and three sentinels (quorum 2, down-after 1 s), new for each test."""
    cluster = start_sentinel_cluster(_dir(tmp_path_factory, "sentinel"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def tls_sentinel_cluster(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles
) -> Iterator[SentinelCluster]:
    """Like ``sentinel_cluster``, every node TLS-only (sentinels and replication included)."""
    cluster = start_sentinel_cluster(_dir(tmp_path_factory, "tlssent"), tls=tls_files)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """Three masters and three replicas, one cluster per run; ``reset()`` it before use."""
    cluster = start_cluster(_dir(tmp_path_factory, "cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A storage shared by the stores a test opens: in memory, the flushed redis-server, or
    the reset 3-master cluster.

    The same store tests run on all three, so the providers and layouts cannot drift apart.
    """
    fixture = {"memory": None, "redis": "redis", "cluster": "redis_cluster"}[request.param]
    proc = None if fixture is None else request.getfixturevalue(fixture)
    b = make_backend(request.param, proc)
    try:
        yield b
    finally:
        await b.aclose()
        b.close_raw()
