"""Error replies that mean "the server cannot serve now" reach callers as StoreUnavailable."""

from __future__ import annotations

import copy
import pickle
import threading
from datetime import timedelta

import anyio
import anyio.to_thread
import pytest
import redis as redis_py

from redis_session import (
    CommandError,
    ConfigError,
    ConnectionLost,
    StoreUnavailable,
    open_session_store,
)

from .pool_helpers import config, opened
from .servers import RedisProcess

pytestmark = pytest.mark.anyio

# Busy-waits on the server for about 1.5 s: long enough to outlast a 0.5 s timeout.
BUSY_SCRIPT = """
local t = redis.call('TIME')
while true do
  local n = redis.call('TIME')
  if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 1500000 then break end
end
return 1
"""


def _run_busy_script(proc: RedisProcess, started: threading.Event) -> None:
    client = redis_py.Redis(
        host=proc.host,
        port=proc.port,
        username=proc.admin_username,
        password=proc.admin_password,
        protocol=2,
    )
    try:
        started.set()
        client.eval(BUSY_SCRIPT, 0)
    finally:
        client.close()


async def test_busy_server_is_unavailable_not_a_command_error(fresh_redis: RedisProcess) -> None:
    """While a long script runs, a command gets StoreUnavailable naming the node, in time."""
    fresh_redis.admin().config_set("busy-reply-threshold", 100)
    cfg = config(fresh_redis, timeout=timedelta(seconds=0.5))
    async with opened(cfg) as manager:
        started = threading.Event()
        worker = threading.Thread(target=_run_busy_script, args=(fresh_redis, started))
        worker.start()
        try:
            started.wait(5)
            await anyio.sleep(0.3)  # past busy-reply-threshold: the server now answers BUSY
            with pytest.raises(StoreUnavailable) as info:
                await manager.execute("PING")
            assert not isinstance(info.value, CommandError)
            assert "busy running a script" in str(info.value)
            assert f"{fresh_redis.host}:{fresh_redis.port}" in str(info.value)
        finally:
            worker.join(10)
        assert await manager.execute("PING") == b"PONG"  # and it recovers by itself


async def test_out_of_memory_on_save_is_unavailable(fresh_redis: RedisProcess) -> None:
    """A server at maxmemory (noeviction) makes create raise StoreUnavailable, not CommandError."""
    section = fresh_redis.redis_section()
    async with open_session_store({"secret": "s" * 40, "redis": section}) as store:
        session = await store.create({"user": "john"})
        admin = fresh_redis.admin()
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        try:
            with pytest.raises(StoreUnavailable) as info:
                await store.create({"user": "jane", "pad": "x" * 2000})
            assert "cannot take writes now" in str(info.value)
            assert "OOM" in str(info.value)
            # The server's own reply is the cause, with its code.
            assert isinstance(info.value.__cause__, CommandError)
            assert info.value.__cause__.code == "OOM"
        finally:
            admin.config_set("maxmemory", 0)
        assert await store.load(session.id) is not None


async def test_error_reply_keeps_its_err_code(redis: RedisProcess) -> None:
    """A command the server refuses raises CommandError carrying the server's whole reply."""
    async with opened(config(redis)) as manager:
        with pytest.raises(CommandError) as unknown:
            await manager.execute("NOSUCHCOMMAND", "x")
        with pytest.raises(CommandError) as arity:
            await manager.execute("GET")
        await manager.execute("SET", "a-string", "1")
        with pytest.raises(CommandError) as wrong_type:
            await manager.execute("HGET", "a-string", "f")
        # The error replies were read off the connection in order: it still answers.
        assert await manager.execute("PING") == b"PONG"
    # The code first, as the server sent it (and as redis-cli prints it).
    assert str(unknown.value).startswith("ERR unknown command 'NOSUCHCOMMAND'")
    assert str(arity.value) == "ERR wrong number of arguments for 'get' command"
    assert str(wrong_type.value).startswith("WRONGTYPE Operation against a key holding")
    assert [e.value.code for e in (unknown, arity, wrong_type)] == ["ERR", "ERR", "WRONGTYPE"]


def test_a_command_error_without_a_code_has_an_empty_one() -> None:
    """A reply that does not start with an error code (a script's own error text) has none."""
    assert CommandError("user script: something failed").code == ""
    assert CommandError("NOSCRIPT No matching script").code == "NOSCRIPT"


async def test_a_dead_server_raises_connection_lost_with_its_cause(
    fresh_redis: RedisProcess,
) -> None:
    """Nothing listens any more: ConnectionLost, not sent, caused by the connect's own error."""
    cfg = config(fresh_redis, timeout=timedelta(seconds=0.5))
    async with opened(cfg) as manager:
        await anyio.to_thread.run_sync(fresh_redis.kill)
        with pytest.raises(ConnectionLost) as info:
            await manager.execute("PING")
    assert isinstance(info.value, StoreUnavailable)
    assert info.value.sent is False
    assert isinstance(info.value.__cause__, redis_py.ConnectionError | OSError)
    assert f"{fresh_redis.host}:{fresh_redis.port}" in str(info.value)


async def test_an_open_against_a_dead_server_keeps_the_connect_error_as_cause(
    fresh_redis: RedisProcess,
) -> None:
    """The open itself fails: ConnectionLost (not sent), caused by the connect's own error."""
    section = fresh_redis.redis_section()
    await anyio.to_thread.run_sync(fresh_redis.kill)
    with pytest.raises(ConnectionLost) as info:
        await open_session_store({"secret": "s" * 40, "redis": section})
    assert info.value.sent is False
    assert isinstance(info.value.__cause__, redis_py.ConnectionError | OSError)


def test_errors_survive_pickle_and_copy() -> None:
    """ConnectionLost keeps ``sent``, ConfigError its problems and its message."""
    lost = ConnectionLost("connection to 127.0.0.1:1 failed: timed out", sent=True)
    for again in (pickle.loads(pickle.dumps(lost)), copy.copy(lost), copy.deepcopy(lost)):
        assert type(again) is ConnectionLost
        assert again.sent is True
        assert str(again) == str(lost)
    error = ConfigError(["session.redis.port: must be between 1 and 65535, got 70000", "x: y"])
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert again.problems == error.problems
        assert str(again) == str(error)
    # One line alone is one problem, not one per letter.
    single = ConfigError("session.redis.port: must be between 1 and 65535, got 70000")
    assert [p.path for p in single.problems] == ["session.redis.port"]
