"""One clock decides every deadline: the Redis server's, not each app host's.

Issue 9, finding 13a. ``load`` used to compare a session's deadline with the app's clock, so a
host whose clock ran fast deleted sessions every other host considered valid, and a host whose
clock ran slow kept expired sessions alive (and stamped new ones as already expired for the
others). Here each store's clock source is replaced by a skewed one, as on a host with a bad
clock; the server's clock is left alone, and expiry must follow it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from redis_session._provider import wall_clock_ms
from redis_session._redis_provider import RedisProvider
from redis_session._store import SessionStore

from .store_helpers import Backend, make_backend

pytestmark = pytest.mark.anyio

#: Ten minutes: "clocks skewed by minutes".
SKEW_MS = 10 * 60 * 1000


@pytest.fixture
async def redis_backend(redis: Any) -> AsyncIterator[Backend]:
    """The Redis backend: the clock under test is the server's."""
    b = make_backend("redis", redis)
    try:
        yield b
    finally:
        await b.aclose()
        b.close_raw()


async def _skewed(backend: Backend, skew_ms: int, **overrides: Any) -> SessionStore[Any]:
    """A store on a host whose clock is ``skew_ms`` off (positive: fast)."""
    store = await backend.open(**overrides)
    provider = store._provider
    assert isinstance(provider, RedisProvider)
    provider.clock = lambda: wall_clock_ms() + skew_ms
    return store


def _server_now(backend: Backend) -> dt.datetime:
    assert backend.raw is not None
    seconds, micros = backend.raw.time()
    return dt.datetime.fromtimestamp(seconds + micros / 1e6, dt.UTC)


async def test_fast_host_does_not_delete_valid_sessions(redis_backend: Backend) -> None:
    """A host ten minutes fast loads a one-minute session as valid, and leaves it in place."""
    honest = await redis_backend.open(expiration=60)
    fast = await _skewed(redis_backend, SKEW_MS, expiration=60)
    session = await honest.create({"user": "alice"})
    loaded = await fast.load(session.id)
    assert loaded is not None
    assert loaded.data == {"user": "alice"}
    assert redis_backend.keys() == [session._key]
    loaded.data["seen"] = True
    await fast.save(loaded)
    again = await honest.load(session.id)
    assert again is not None
    assert again.data == {"user": "alice", "seen": True}


async def test_slow_host_cannot_keep_an_expired_session(redis_backend: Backend) -> None:
    """A host ten minutes slow sees a session end at its deadline by the server's clock.

    Before the fix its loads slid the TTL to ``inactivity`` (its clock said there was time
    left) and kept returning the session after the deadline.
    """
    honest = await redis_backend.open(expiration=2)
    slow = await _skewed(redis_backend, -SKEW_MS, expiration=2)
    session = await honest.create({"user": "alice"})
    await anyio.sleep(1.0)
    assert await slow.load(session.id) is not None
    await anyio.sleep(max(0.0, (session.expires_at - _server_now(redis_backend)).total_seconds()))
    await anyio.sleep(0.2)
    assert await slow.load(session.id) is None
    assert redis_backend.keys() == []


@pytest.mark.parametrize("skew_ms", [SKEW_MS, -SKEW_MS, 3_000, -30_000], ids=str)
async def test_skewed_host_stamps_sessions_by_the_server_clock(
    redis_backend: Backend, skew_ms: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Sessions a skewed host creates report the server's time and live their lifetime.

    Before the fix a slow host's sessions were already past their deadline for every other
    host (created "ten minutes ago"), and a fast host's lived ten minutes too long.
    """
    honest = await redis_backend.open(expiration=60, inactivity=30)
    skewed = await _skewed(redis_backend, skew_ms, expiration=60, inactivity=30)
    with caplog.at_level(logging.INFO, logger="redis_session"):
        first = await skewed.create({"n": 1})
    assert "clock differs from the Redis server's" in caplog.text
    second = await skewed.create({"n": 2})  # the offset is known now
    server_now = _server_now(redis_backend)
    for session in (first, second):
        assert abs(session.created_at - server_now) < dt.timedelta(seconds=3)
        assert session.expires_at - session.created_at == dt.timedelta(seconds=60)
        loaded = await honest.load(session.id)
        assert loaded is not None
        assert loaded.created_at == session.created_at
        assert loaded.expires_at == session.expires_at
        assert redis_backend.pttl(session._key) > 25_000
    # Deleted by neither host's loads, and each host reads the other's sessions.
    mine = await honest.create({"n": 3})
    assert await skewed.load(mine.id) is not None
    assert len(redis_backend.keys()) == 3


async def test_small_skew_costs_no_extra_round_trip(redis_backend: Backend) -> None:
    """Within the tolerance the host's own stamp is taken: one create, one script."""
    honest = await redis_backend.open()
    assert redis_backend.raw is not None
    await honest.create({})  # the server caches the script
    redis_backend.raw.config_resetstat()
    session = await honest.create({})
    assert abs(session.created_at - _server_now(redis_backend)) < dt.timedelta(seconds=3)
    stats = redis_backend.raw.info("commandstats")
    assert int(stats["cmdstat_evalsha"]["calls"]) == 1


@pytest.mark.parametrize("slow_ms", [2_500, 3_500])
async def test_a_slow_stamp_is_never_born_expired(redis_backend: Backend, slow_ms: int) -> None:
    """A stamp within the lag allowance but older than the lifetime is stamped again.

    With a 2 s lifetime and a host 2.5 s slow, the stamp was accepted (it lags TIME by less
    than the time in flight allows) and the script stored nothing yet reported success:
    create returned a session that never loads (adversarial review of issue 9).
    """
    slow = await _skewed(redis_backend, -slow_ms, expiration=2)
    session = await slow.create({"user": "alice"})
    loaded = await slow.load(session.id)
    assert loaded is not None
    assert loaded.data == {"user": "alice"}
    assert redis_backend.keys() == [session._key]
    lag = (_server_now(redis_backend) - session.created_at).total_seconds()
    assert -1.0 < lag < 1.0
