"""A node that refuses our credentials: the error names the options to fix, never the password.

Real server with ACL users (the ``acl_redis`` fixture: default user off, ``app`` with a
password). Authelia users meet this first when they copy a config between environments.
"""

from __future__ import annotations

from typing import Any

import pytest

from redis_session import ConnectionLost, open_session_store

from .conftest import APP_PASSWORD, APP_USER
from .servers import RedisProcess

pytestmark = pytest.mark.anyio

SECRET = "an-auth-errors-test-secret-of-sufficient-length-0123456789"
WRONG = "not-the-password-4c1e"


async def _refusal(redis: dict[str, Any]) -> str:
    with pytest.raises(ConnectionLost) as caught:
        await open_session_store({"session": {"secret": SECRET, "redis": redis}})
    assert caught.value.sent is False
    return str(caught.value)


@pytest.mark.parametrize(
    ("credentials", "fix"),
    [
        ({}, "it needs a password; set session.redis.password"),
        ({"password": WRONG}, "check session.redis.password (and session.redis.username"),
        (
            {"username": APP_USER, "password": WRONG},
            "check session.redis.username and session.redis.password",
        ),
        (
            {"username": "nobody", "password": APP_PASSWORD},
            "check session.redis.username and session.redis.password",
        ),
    ],
)
async def test_refused_credentials_name_the_options(
    acl_redis: RedisProcess, credentials: dict[str, str], fix: str
) -> None:
    message = await _refusal({"host": acl_redis.host, "port": acl_redis.port, **credentials})
    assert f"cannot connect to {acl_redis.host}:{acl_redis.port}" in message, message
    assert fix in message, message
    assert WRONG not in message
    assert APP_PASSWORD not in message


async def test_the_right_credentials_open(acl_redis: RedisProcess) -> None:
    section = {
        "host": acl_redis.host,
        "port": acl_redis.port,
        "username": APP_USER,
        "password": APP_PASSWORD,
    }
    store = await open_session_store({"session": {"secret": SECRET, "redis": section}})
    try:
        session = await store.create({"who": "me"})
        loaded = await store.load(session.id)
        assert loaded is not None
        assert loaded.data == {"who": "me"}
    finally:
        await store.aclose()
