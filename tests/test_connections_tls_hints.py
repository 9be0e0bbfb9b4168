"""A TLS mismatch between client and server is named as such, quickly, and only then.

A TLS client on a plain port used to wait out ``redis.timeout`` and report ``timed out``; a
plain client on a TLS port reported ``Connection reset by peer``. Each now names
``session.redis.tls``, and the first fails as soon as the port proves to speak plain RESP.
Servers that merely fail (refuse, hang) get no such hint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from redis_session import StoreUnavailable, open_session_store

from .servers import RedisProcess, TLSFiles

pytestmark = pytest.mark.anyio

SECRET = "tls-hints: a secret long enough to be taken seriously"
#: A long connect timeout: failing well within HANG_GUARD proves the open did not wait it out.
LONG_TIMEOUT = "60s"
HANG_GUARD = 20.0


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Only the harness CA, given as ca_file, may be trusted.
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-ca.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "no-such-dir"))


async def open_fails(section: dict[str, Any]) -> str:
    """Open a store on ``section``; it must fail with StoreUnavailable. Return the message."""
    with anyio.fail_after(HANG_GUARD), pytest.raises(StoreUnavailable) as info:
        await open_session_store({"secret": SECRET, "redis": section})
    return str(info.value)


def tls_section_for(tls_redis: RedisProcess, port: int, **overrides: Any) -> dict[str, Any]:
    """A TLS ``session.redis`` (the harness CA and name) aimed at ``port``."""
    return tls_redis.redis_section(port=port, **overrides)


async def test_tls_client_on_plain_port_fails_fast_naming_the_option(
    redis: RedisProcess, tls_redis: RedisProcess
) -> None:
    """TLS set against a plain port: the port answers plain RESP, so say so, long before 60 s."""
    text = await open_fails(tls_section_for(tls_redis, redis.port, timeout=LONG_TIMEOUT))
    node = f"{redis.host}:{redis.port}"
    assert text.startswith(f"cannot connect to {node}: TLS connection to Redis at {node} failed:")
    assert "the TLS handshake got no answer" in text
    assert "plain TCP port" in text
    assert "(session.redis.tls is set)" in text
    assert "timed out" not in text


async def test_tls_client_on_password_protected_plain_port(
    redis_factory: Callable[..., RedisProcess], tls_redis: RedisProcess
) -> None:
    """A plain port that wants a password still answers the probe (NOAUTH) in RESP."""
    plain = redis_factory(requirepass="plain-pw")
    text = await open_fails(
        tls_section_for(tls_redis, plain.port, password="plain-pw", timeout=LONG_TIMEOUT)
    )
    assert "plain TCP port" in text
    assert "plain-pw" not in text


async def test_plain_client_on_tls_port_names_the_option(tls_redis: RedisProcess) -> None:
    """No TLS set against a TLS-only port: the hang-up on our first command names the option."""
    assert tls_redis.tls_port is not None
    for _ in range(5):  # the server's reset races with our read: every form must be named
        text = await open_fails({"host": tls_redis.host, "port": tls_redis.tls_port})
        node = f"{tls_redis.host}:{tls_redis.tls_port}"
        assert text == (
            f"cannot connect to {node}: the server closed the connection before its first "
            f"reply; does {node} require TLS? (session.redis.tls is not set)"
        )


async def test_plain_client_on_tls_port_with_password(tls_redis: RedisProcess) -> None:
    """The first command is AUTH then: the hint is the same, and the password is not shown."""
    assert tls_redis.tls_port is not None
    section = {"host": tls_redis.host, "port": tls_redis.tls_port, "password": "hint-pw-77"}
    text = await open_fails(section)
    assert "(session.redis.tls is not set)" in text
    assert "hint-pw-77" not in text


async def test_refused_port_gets_no_tls_hint(
    redis_factory: Callable[..., RedisProcess], tls_redis: RedisProcess
) -> None:
    """A server that is down is reported as refusing, with no word about TLS, either way."""
    proc = redis_factory()
    proc.stop()
    plain_text = await open_fails({"host": proc.host, "port": proc.port})
    tls_text = await open_fails(tls_section_for(tls_redis, proc.port))
    for text in (plain_text, tls_text):
        assert "Connect call failed" in text  # ECONNREFUSED, in asyncio's words
        assert "plain" not in text
        assert "require TLS" not in text


async def test_hung_tls_server_gets_no_plain_port_hint(
    redis_factory: Callable[..., RedisProcess], tls_files: TLSFiles
) -> None:
    """A TLS server that does not answer (SIGSTOP) times out; the probe proves nothing."""
    proc = redis_factory(tls=tls_files, tls_only=True)
    assert proc.tls_port is not None
    section = proc.redis_section(timeout="1s")
    proc.pause()
    try:
        text = await open_fails(section)
    finally:
        proc.resume()
    assert "timed out" in text
    assert "plain" not in text
    assert "require TLS" not in text


async def test_hung_plain_server_gets_no_hint_either_way(
    fresh_redis: RedisProcess, tls_redis: RedisProcess
) -> None:
    """A plain server that does not answer (SIGSTOP) times out for TLS and plain clients alike."""
    fresh_redis.pause()
    try:
        tls_text = await open_fails(tls_section_for(tls_redis, fresh_redis.port, timeout="1s"))
        plain_text = await open_fails(fresh_redis.redis_section(timeout="1s"))
    finally:
        fresh_redis.resume()
    for text in (tls_text, plain_text):
        assert "timed out" in text
        assert "plain" not in text
        assert "require TLS" not in text
