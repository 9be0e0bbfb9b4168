"""TLS against real redis-server processes: SNI, verification, versions, mTLS, error texts.

The harness's server certificate is valid for ``myredis.example.com`` only, while every server
listens on 127.0.0.1, so a passing PING proves the name checked is ``server_name``, not the
address.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from redis_session._config import TLSConfig
from redis_session._errors import ConfigError, ConfigProblem
from redis_session._tls import describe_tls_error, tls_connection_kwargs
from redis_session._wire import TLSConnection

from .servers import RedisProcess, TLSFiles

pytestmark = pytest.mark.anyio

WRONG_NAME = "wrong.example.com"
#: Sent to servers that do not know it: must never show up in any text.
FAKE_PASSWORD = "fake-secret-pw-9c2b"


def node(proc: RedisProcess) -> str:
    return f"{proc.host}:{proc.tls_port}"


def trusted(files: TLSFiles, **changes: Any) -> TLSConfig:
    """A verifying config that trusts the harness CA and checks the certificate's name."""
    return TLSConfig(**{"server_name": files.server_name, "ca_file": files.ca_file, **changes})


def make_pool(
    proc: RedisProcess, tls: TLSConfig, *, port: int | None = None, **extra: Any
) -> redis.asyncio.ConnectionPool:
    """A redis-py pool that speaks TLS through TLSConnection, as the store's pool does."""
    credentials: dict[str, Any] = {"username": proc.username, "password": proc.password}
    credentials.update({k: extra.pop(k) for k in ("username", "password") if k in extra})
    return redis.asyncio.ConnectionPool(
        host=proc.host,
        port=port or proc.tls_port,
        protocol=2,
        socket_connect_timeout=5,
        socket_timeout=5,
        **credentials,
        **tls_connection_kwargs(tls, proc.host),
        **extra,
    )


async def ping(proc: RedisProcess, tls: TLSConfig, **extra: Any) -> bool:
    pool = make_pool(proc, tls, **extra)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()
        await pool.aclose()


async def ping_fails(
    proc: RedisProcess, tls: TLSConfig, **extra: Any
) -> tuple[redis.exceptions.ConnectionError, str | None]:
    """PING must fail; return redis-py's error and our description of it."""
    with pytest.raises(redis.exceptions.ConnectionError) as info:
        await ping(proc, tls, **extra)
    server_name = tls.server_name or proc.host
    return info.value, describe_tls_error(info.value, node=node(proc), server_name=server_name)


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The system trust store must not happen to trust the test CA; point the defaults at
    # nothing unless a test sets them itself.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))


@pytest.fixture
async def tls_conn(tls_redis: RedisProcess, tls_files: TLSFiles) -> AsyncIterator[TLSConnection]:
    """A single connected TLSConnection, to look at the negotiated session."""
    kwargs = tls_connection_kwargs(trusted(tls_files), tls_redis.host)
    conn = TLSConnection(
        host=tls_redis.host,
        port=tls_redis.tls_port or 0,
        username=tls_redis.username,
        password=tls_redis.password,
        protocol=2,
        ssl_context=kwargs["ssl_context"],
        server_hostname=kwargs["server_hostname"],
    )
    await conn.connect()
    try:
        yield conn
    finally:
        await conn.disconnect()


def ssl_object(conn: TLSConnection) -> ssl.SSLObject:
    assert conn._writer is not None
    obj = conn._writer.get_extra_info("ssl_object")
    assert isinstance(obj, ssl.SSLObject)
    return obj


# --- success ---------------------------------------------------------------------------------


async def test_server_name_differs_from_address(
    tls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """Connecting to 127.0.0.1 with server_name set to the certificate's name works."""
    assert await ping(tls_redis, trusted(tls_files))


async def test_connection_negotiates_with_our_context(tls_conn: TLSConnection) -> None:
    """The socket carries our SNI name and a verified peer certificate, over TLS 1.3."""
    obj = ssl_object(tls_conn)
    assert obj.server_hostname == "myredis.example.com"
    assert obj.context is tls_conn._tls_context
    assert obj.getpeercert()  # only filled in when the certificate was verified
    assert obj.version() == "TLSv1.3"


async def test_maximum_version_is_honoured(tls_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """maximum_version TLS1.2 makes a TLS 1.3-capable server talk TLS 1.2."""
    tls = trusted(tls_files, maximum_version=ssl.TLSVersion.TLSv1_2)
    kwargs = tls_connection_kwargs(tls, tls_redis.host)
    conn = TLSConnection(
        host=tls_redis.host,
        port=tls_redis.tls_port or 0,
        username=tls_redis.username,
        password=tls_redis.password,
        protocol=2,
        ssl_context=kwargs["ssl_context"],
        server_hostname=kwargs["server_hostname"],
    )
    await conn.connect()
    try:
        assert ssl_object(conn).version() == "TLSv1.2"
    finally:
        await conn.disconnect()


async def test_one_context_serves_many_connections(
    tls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """Concurrent commands open several TLS connections that share the pool's context."""
    pool = make_pool(tls_redis, trusted(tls_files), max_connections=8)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:

        async def one_ping() -> None:
            await client.ping()

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one_ping)
        conns = pool._available_connections
        assert all(isinstance(c, TLSConnection) for c in conns)
        contexts = {id(c._tls_context) for c in conns if isinstance(c, TLSConnection)}
        assert len(pool._available_connections) > 1
        assert contexts == {id(pool.connection_kwargs["ssl_context"])}
    finally:
        await client.aclose()
        await pool.aclose()


async def test_ssl_cert_file_is_honoured(
    tls_redis: RedisProcess, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE naming the CA makes verification pass without ca_file."""
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.ca_file)
    assert await ping(tls_redis, TLSConfig(server_name=tls_files.server_name))


async def test_skip_verify_accepts_untrusted_ca_and_wrong_name(
    tls_redis: RedisProcess, tls_files: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """skip_verify connects despite an untrusted CA and a wrong name, and warns about it."""
    tls = TLSConfig(server_name=WRONG_NAME, skip_verify=True, ca_file=tls_files.untrusted_ca_file)
    with caplog.at_level(logging.WARNING, logger="redis_session"):
        assert await ping(tls_redis, tls)
    warnings = [r for r in caplog.records if r.name == "redis_session"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert WRONG_NAME in warnings[0].getMessage()
    assert "verification is OFF" in warnings[0].getMessage()


async def test_mutual_tls_with_client_certificate(
    mtls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """A server that requires client certificates accepts ours."""
    tls = trusted(
        tls_files, certificate_file=tls_files.client_cert_file, key_file=tls_files.client_key_file
    )
    assert await ping(mtls_redis, tls)


# --- failures and their descriptions ---------------------------------------------------------


async def test_wrong_server_name(tls_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """A server_name the certificate does not list fails as a host name mismatch."""
    error, text = await ping_fails(tls_redis, trusted(tls_files, server_name=WRONG_NAME))
    assert "Hostname mismatch" in str(error)
    assert text == (
        f"TLS connection to Redis at {node(tls_redis)} failed: host name mismatch, the server's"
        f" certificate is not valid for the name '{WRONG_NAME}'; set"
        " session.redis.tls.server_name to a name the certificate was issued for"
    )


async def test_address_without_server_name(tls_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """Without server_name the address is checked, and the certificate does not list it."""
    error, text = await ping_fails(tls_redis, trusted(tls_files, server_name=None))
    assert "IP address mismatch" in str(error)
    assert text is not None
    assert "not valid for the address '127.0.0.1'" in text
    assert "session.redis.tls.server_name" in text


async def test_untrusted_ca(tls_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """Trusting only an unrelated CA fails as 'not trusted'."""
    error, text = await ping_fails(
        tls_redis, trusted(tls_files, ca_file=tls_files.untrusted_ca_file)
    )
    assert "certificate verify failed" in str(error)
    assert text is not None
    assert text.startswith(
        f"TLS connection to Redis at {node(tls_redis)} failed: the server's certificate is not"
        " trusted ("
    )
    assert "session.redis.tls.ca_file" in text
    assert "session.redis.tls.skip_verify" in text


async def test_system_store_alone_does_not_trust_test_ca(
    tls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """With no ca_file and no SSL_CERT_FILE the harness CA is not trusted: verification is on."""
    _, text = await ping_fails(tls_redis, TLSConfig(server_name=tls_files.server_name))
    assert text is not None
    assert "not trusted" in text


async def test_minimum_tls13_against_tls12_server(
    tls12_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """minimum_version TLS1.3 against a TLS 1.2-only server is a protocol version mismatch."""
    error, text = await ping_fails(
        tls12_redis, trusted(tls_files, minimum_version=ssl.TLSVersion.TLSv1_3)
    )
    assert "PROTOCOL_VERSION" in str(error)
    assert text == (
        f"TLS connection to Redis at {node(tls12_redis)} failed: protocol version mismatch, the"
        " server accepts no TLS version allowed by"
        " session.redis.tls.minimum_version/maximum_version (tlsv1 alert protocol version)"
    )


async def test_tls12_server_works_with_default_minimum(
    tls12_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """The default minimum (TLS1.2) reaches a TLS 1.2-only server."""
    assert await ping(tls12_redis, trusted(tls_files))


async def test_plaintext_client_on_tls_port(tls_redis: RedisProcess) -> None:
    """A client that does not speak TLS cannot use the TLS port."""
    client = redis.asyncio.Redis(
        host=tls_redis.host,
        port=tls_redis.tls_port or 0,
        protocol=2,
        socket_connect_timeout=5,
        socket_timeout=5,
        # redis-py retries three times with backoff by default; one attempt proves the point.
        retry=Retry(NoBackoff(), 0),
    )
    try:
        # The server hangs up on the plaintext bytes; which syscall sees it first (the write or
        # the read) is a race, so each of its forms is accepted — never a reply.
        with pytest.raises(
            redis.exceptions.ConnectionError, match=r"reset by peer|closed|Connection lost"
        ):
            await client.ping()
    finally:
        await client.aclose()


async def test_tls_client_on_plaintext_port(
    redis_server: RedisProcess, tls_files: TLSFiles
) -> None:
    """A TLS client on a plaintext Redis port fails at once, named as a plain port.

    redis-server reads the ClientHello as an unfinished inline command and never answers;
    rather than wait out the (here 60 s) connect timeout, the connection probes the port with
    a plaintext PING and, seeing a RESP reply, fails naming session.redis.tls.
    """
    pool = redis.asyncio.ConnectionPool(
        host=redis_server.host,
        port=redis_server.port,
        protocol=2,
        socket_connect_timeout=60,
        **tls_connection_kwargs(trusted(tls_files), redis_server.host),
    )
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        with anyio.fail_after(20), pytest.raises(redis.exceptions.ConnectionError) as info:
            await client.ping()
    finally:
        await client.aclose()
        await pool.aclose()
    where = f"{redis_server.host}:{redis_server.port}"
    assert describe_tls_error(info.value, node=where, server_name=None) == (
        f"TLS connection to Redis at {where} failed: the TLS handshake got no answer, and"
        f" {where} answers plain RESP instead: it is a plain TCP port, not Redis's tls-port"
        " (session.redis.tls is set); use the server's tls-port, or remove session.redis.tls"
        " if the server does not use TLS"
    )


async def test_mutual_tls_without_client_certificate(
    mtls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """Without a client certificate an mTLS server refuses us, and the text says so.

    Under TLS 1.3 the refusal races with our first command: it shows up as the server's
    certificate_required alert or as a bare reset. Twenty tries see both; each must be named.
    """
    for _ in range(20):
        _, text = await ping_fails(mtls_redis, trusted(tls_files))
        assert text is not None
        assert text.startswith(f"TLS connection to Redis at {node(mtls_redis)} failed: ")
        assert "client certificate" in text
        assert "session.redis.tls.certificate_file" in text


async def test_mutual_tls_with_untrusted_client_certificate(
    mtls_redis: RedisProcess, tls_files: TLSFiles
) -> None:
    """A client certificate from a CA the server does not trust is rejected."""
    tls = trusted(
        tls_files,
        certificate_file=tls_files.untrusted_client_cert_file,
        key_file=tls_files.untrusted_client_key_file,
    )
    _, text = await ping_fails(mtls_redis, tls)
    assert text is not None
    assert text.startswith(f"TLS connection to Redis at {node(mtls_redis)} failed: ")
    # Under TLS 1.3 the server's "unknown ca" alert races with its hang-up: the text names the
    # rejection when the alert arrives, else the hang-up; either way it points at the client
    # certificate options.
    assert "rejected the client certificate" in text or "right after the handshake" in text
    assert "session.redis.tls.certificate_file" in text


async def test_password_never_in_error_text(tls_redis: RedisProcess, tls_files: TLSFiles) -> None:
    """A failed TLS connection's error, description and repr do not contain the password."""
    tls = trusted(tls_files, server_name=WRONG_NAME)
    error, text = await ping_fails(tls_redis, tls, password=FAKE_PASSWORD)
    pool = make_pool(tls_redis, tls, password=FAKE_PASSWORD)
    try:
        conn = pool.make_connection()
        texts = [str(error), repr(error), str(text), repr(pool), repr(conn)]
    finally:
        await pool.aclose()
    assert not [t for t in texts if FAKE_PASSWORD in t]


async def test_bad_ca_file_is_a_config_error(tls_redis: RedisProcess, tmp_path: Path) -> None:
    """A ca_file that does not exist is reported against the option before any connection."""
    path = tmp_path / "missing-ca.pem"
    with pytest.raises(ConfigError) as info:
        await ping(tls_redis, TLSConfig(server_name="myredis.example.com", ca_file=str(path)))
    assert info.value.problems == (
        ConfigProblem(
            "session.redis.tls.ca_file", f"cannot load {path}: No such file or directory"
        ),
    )
