"""Talking to Redis Sentinel: connections, the survey questions and answers, failover events.

This module only speaks the protocol; deciding what the answers mean for the connection pools
is ``_topology``'s job. Sentinel connections are plain redis-py connections (not our pools):
the sentinel's own password, RESP2, short timeouts, TLS like the data nodes when configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from ._backoff import Backoff
from ._config import RedisConfig
from ._spec import SENTINEL_TIMEOUT, ConnectionSpec
from ._tls import describe_tls_error
from ._wire import (
    disconnect,
    node_label,
    reason,
)

__all__ = [
    "OPTION",
    "SENTINEL_TIMEOUT",
    "Address",
    "Answer",
    "Event",
    "SentinelLink",
    "configured_sentinels",
    "explain",
    "listen",
    "reason",
    "replication_info",
]

logger = logging.getLogger("redis_session")

Address = tuple[str, int]

OPTION = "session.redis.high_availability"
#: Bound on one sentinel round trip, connecting included: a dead sentinel costs this, not more.
#: Sentinel's well-known port; also tried for ``redis.host`` when ``redis.port`` is the data
#: default 6379, because the config model cannot tell an unset port from an explicit 6379.
_SENTINEL_PORT = 26379
_DATA_DEFAULT_PORT = 6379
#: A sentinel that failed is skipped by surveys for this long, doubling up to the maximum.
_LINK_BACKOFF = (0.5, 5.0)
#: With no event for this long a subscriber PINGs, and gives up after one more timeout.
_LISTEN_IDLE = 3.0
#: What the leader sentinel publishes during a failover, in order (aborts instead of the end).
_ABORTS = (
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
)
CHANNELS = ("+selected-slave", "+promoted-slave", "+switch-master", *_ABORTS)
_BAD_REPLICA_FLAGS = frozenset({"s_down", "o_down", "disconnected"})


@attrs.frozen
class Answer:
    """What one sentinel said in a survey."""

    sentinel: str
    #: ``ok``, ``unknown`` (no such master), ``auth``, ``unreachable`` or ``error``.
    kind: str = "ok"
    master: Address | None = None
    epoch: int = -1
    replicas: tuple[Address, ...] = ()
    sentinels: tuple[Address, ...] = ()
    problem: str | None = None
    #: Whether this sentinel is running a failover of the master (``failover_in_progress``).
    failover: bool = False


@attrs.frozen
class Event:
    """A failover event about our master.

    ``kind`` is ``selected`` (the leader picked ``node`` to promote), ``promoted`` (``node``
    now reports itself master), ``switched`` (the failover ended with ``node`` as master) or
    ``aborted``; ``master`` is the master the event is about (the old one, for a switch).
    """

    kind: str
    node: Address | None
    master: Address


class SentinelLink:
    """One sentinel: a lazily opened request/reply connection and its failure backoff."""

    def __init__(self, cfg: RedisConfig, address: Address, spec: ConnectionSpec) -> None:
        self.address = address
        self.label = node_label(*address)
        self.new_connection = spec.opener(*address, sentinel=True)
        #: Names the ``session.redis.tls`` option behind a TLS failure (None without TLS).
        self._server_name: str | None = None
        self._tls_problem: str | None = None
        self._tls = cfg.tls is not None and not address[0].startswith("/")
        if self._tls:
            assert cfg.tls is not None
            self._server_name = cfg.tls.server_name or address[0]
        self.skip_until = 0.0
        self.last_problem: str | None = None
        self._ha = cfg.high_availability
        self._backoff = Backoff(*_LINK_BACKOFF)
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    async def survey(self, name: str, *, replicas: bool, within: float) -> Answer:
        """Ask for the master of ``name``, its epoch, peers and replicas; never raises."""
        commands = [
            ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name),
            ("SENTINEL", "MASTER", name),
            ("SENTINEL", "SENTINELS", name),
        ]
        if replicas:
            commands.append(("SENTINEL", "REPLICAS", name))
        now = asyncio.get_running_loop().time()
        try:
            replies = await self._ask(commands, within)
        except AuthenticationError as exc:
            self._failed(now)
            return self._problem("auth", self.auth_problem(exc))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(now)
            return self._problem("unreachable", self.explain_failure(exc))
        self._backoff.reset()
        self.skip_until, self.last_problem = 0.0, None
        where, master, peers, *rest = replies
        if isinstance(where, ResponseError):
            return self._problem("error", f"cannot ask it for the master ({where}); a sentinel?")
        if not where:
            return Answer(self.label, "unknown", problem=f"it monitors no master named {name!r}")
        try:
            fields = _pairs(master) if isinstance(master, list) else {}
            flags = str(fields.get("flags", "")).split(",")
            return Answer(
                self.label,
                master=(where[0], int(where[1])),
                epoch=int(fields.get("config-epoch", "-1")),
                failover="failover_in_progress" in flags,
                replicas=_healthy_replicas(rest[0]) if rest else (),
                sentinels=_addresses(peers),
            )
        except (TypeError, ValueError, IndexError, KeyError, AttributeError):
            # A reply of an unexpected shape: not a sentinel we can use (never raise here).
            return self._problem("error", "its answer about the master is malformed; a sentinel?")

    def explain_failure(self, exc: BaseException) -> str:
        """Return one reason for a failed exchange with this sentinel.

        A TLS failure names the ``session.redis.tls`` option to check; a timeout after one
        keeps it (the next try often only times out).
        """
        if self._tls:
            described = describe_tls_error(exc, node=self.label, server_name=self._server_name)
            if described is not None:
                self._tls_problem = described
                return described
        text = reason(exc)
        if isinstance(exc, TimeoutError) and self._tls_problem is not None:
            return f"{text} (earlier: {self._tls_problem})"
        return text

    def auth_problem(self, exc: BaseException) -> str:
        """Say that authentication failed and which option to fix, without the password."""
        has_password = self._ha is not None and self._ha.sentinel_password is not None
        has_user = self._ha is not None and self._ha.sentinel_username is not None
        hint = "check" if has_password else "it needs a password; set"
        option = f"{OPTION}.sentinel_password"
        if has_user:
            option = f"{OPTION}.sentinel_username and {option}"
        return f"authentication to sentinel {self.label} failed ({exc}): {hint} {option}"

    async def aclose(self) -> None:
        """Drop the connection; a survey still under way drops its own when it ends."""
        self._closed = True
        await self.release()

    async def release(self) -> None:
        """Drop the connection kept between surveys; the next survey opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await disconnect(conn)

    def abandon(self) -> None:
        """Forget the connection and lock of an event loop that has closed.

        Both belong to that loop and can never be used from another. The connection was
        dropped while the loop shut down (see ``SentinelTopology._monitor``), or is garbage.
        """
        self._conn = None
        self._lock = asyncio.Lock()

    async def _ask(self, commands: Sequence[tuple[str, ...]], within: float) -> list[Any]:
        """Send ``commands`` pipelined; error replies come back as ``ResponseError`` objects.

        On any failure or cancellation the connection is dropped, so a stale reply can never
        be read by the next survey.
        """
        async with self._lock:
            conn, self._conn = self._conn, None
            try:
                async with asyncio.timeout(within):
                    if conn is None:
                        conn = self.new_connection()
                        await conn.connect()  # type: ignore[no-untyped-call]
                    await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                    replies: list[Any] = []
                    for _ in commands:
                        try:
                            replies.append(await conn.read_response())
                        except ResponseError as exc:
                            replies.append(exc)
            except BaseException:
                if conn is not None:
                    await disconnect(conn)
                raise
            if self._closed:
                # Closed while we asked (a cancellation lost in redis-py's wait_for lets the
                # survey finish): keep no connection, or it would outlive the link.
                await disconnect(conn)
            else:
                self._conn = conn
            return replies

    def _failed(self, now: float) -> None:
        # Skip this sentinel for a while, so a dead one cannot slow every survey down.
        self.skip_until = now + self._backoff.failed()

    def _problem(self, kind: str, problem: str) -> Answer:
        if problem != self.last_problem:  # once per change, not once per survey
            logger.warning("Sentinel %s: %s", self.label, problem)
        self.last_problem = problem
        return Answer(self.label, kind, problem=problem)


async def listen(
    link: SentinelLink,
    name: str,
    on_event: Callable[[Event], None],
    stopped: Callable[[], bool] = lambda: False,
    subscribed: Callable[[AbstractConnection | None], None] = lambda conn: None,
) -> None:
    """Subscribe to failover events on ``link``'s sentinel until the connection fails.

    Returns when ``stopped()`` turns true: a cancellation can be lost inside redis-py's
    ``asyncio.wait_for`` on Python 3.11, so the owner's closed flag is checked too.

    Raises ``RedisError``/``OSError``/``TimeoutError`` when it does (a sentinel that stops
    answering is detected by a PING after a quiet spell). ``subscribed`` is told the
    subscribed connection, and ``None`` once it is gone (see ``_wire.unread_replies``).
    """
    loop = asyncio.get_running_loop()
    conn = link.new_connection()
    try:
        async with asyncio.timeout(SENTINEL_TIMEOUT):
            await conn.connect()  # type: ignore[no-untyped-call]
            await conn.send_command("SUBSCRIBE", *CHANNELS, check_health=False)
            for _ in CHANNELS:
                await conn.read_response()
        logger.debug("subscribed to failover events on sentinel %s", link.label)
        subscribed(conn)
        heard = loop.time()
        pinged = False
        while not stopped():
            # A read with an explicit timeout returns None and keeps the parser intact.
            message = await conn.read_response(timeout=SENTINEL_TIMEOUT / 2)
            quiet = loop.time() - heard
            if message is not None:
                heard, pinged = loop.time(), False
                event = parse_event(message, name)
                if event is not None:
                    on_event(event)
            elif pinged and quiet > _LISTEN_IDLE + SENTINEL_TIMEOUT:
                raise TimeoutError("no answer to PING")
            elif not pinged and quiet > _LISTEN_IDLE:
                await conn.send_command("PING", check_health=False)
                pinged = True
    finally:
        subscribed(None)
        await disconnect(conn)


def parse_event(message: Any, name: str) -> Event | None:
    """Read a pub/sub message; return the event if it is about master ``name``."""
    if not isinstance(message, list) or len(message) != 3 or message[0] != "message":
        return None
    _, channel, data = message
    p = str(data).split()
    try:
        # "+switch-master <name> <old ip> <old port> <new ip> <new port>"
        if channel == "+switch-master" and len(p) == 5 and p[0] == name:
            return Event("switched", (p[3], int(p[4])), (p[1], int(p[2])))
        # "<event> slave <ip:port> <ip> <port> @ <name> <master ip> <master port>"
        if channel in ("+selected-slave", "+promoted-slave") and len(p) == 8 and p[5] == name:
            kind = "selected" if channel == "+selected-slave" else "promoted"
            return Event(kind, (p[2], int(p[3])), (p[6], int(p[7])))
        # "<event> master <name> <ip> <port>"
        if channel in _ABORTS and len(p) == 4 and p[1] == name:
            return Event("aborted", None, (p[2], int(p[3])))
    except ValueError:
        pass
    return None


def explain(name: str, answers: list[Answer], rejected: dict[Address, str]) -> str:
    """Say why no master was found, naming every sentinel asked and no secret.

    ``rejected`` maps candidates the sentinels named to why they were not accepted.
    """
    asked = ", ".join(a.sentinel for a in answers)
    details = "; ".join(f"{a.sentinel}: {a.problem}" for a in answers if a.problem)
    if rejected:
        addr, problem = next(iter(rejected.items()))
        others = f" (sentinel problems: {details})" if details else ""
        where = node_label(*addr)
        return f"the sentinels name {where} as master of {name!r}, but {problem}{others}"
    auth = [a.problem for a in answers if a.kind == "auth" and a.problem]
    if auth:
        return auth[0]
    if all(a.kind == "unknown" for a in answers):
        return (
            f"no sentinel knows a master named {name!r} (check {OPTION}.sentinel_name); "
            f"asked {asked}"
        )
    if all(a.kind == "unreachable" for a in answers):
        return f"no sentinel reachable to find master {name!r}: {details}"
    return f"cannot find the master {name!r} through Sentinel: {details}"


def configured_sentinels(cfg: RedisConfig) -> list[Address]:
    """``redis.host`` first (at ``redis.port``, and 26379 if that is the data default 6379)."""
    assert cfg.high_availability is not None
    found: list[Address] = []
    if cfg.host:
        found.append((cfg.host, cfg.port))
        if cfg.port == _DATA_DEFAULT_PORT and not cfg.host.startswith("/"):
            found.append((cfg.host, _SENTINEL_PORT))
    found += [(node.host, node.port) for node in cfg.high_availability.nodes]
    return list(dict.fromkeys(found))


def replication_info(reply: Any) -> dict[str, str]:
    """Parse an ``INFO replication`` reply into its ``key:value`` fields."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _pairs(flat: Any) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _addresses(entries: Any) -> tuple[Address, ...]:
    found = []
    for entry in entries if isinstance(entries, list) else ():
        fields = _pairs(entry)
        with contextlib.suppress(KeyError, ValueError):
            found.append((fields["ip"], int(fields["port"])))
    return tuple(found)


def _healthy_replicas(entries: Any) -> tuple[Address, ...]:
    """Replicas not flagged down or disconnected, whose link to the master is up."""
    found = []
    for entry in entries if isinstance(entries, list) else ():
        fields = _pairs(entry)
        flags = set(str(fields.get("flags", "")).split(","))
        if flags & _BAD_REPLICA_FLAGS or fields.get("master-link-status") != "ok":
            continue
        with contextlib.suppress(KeyError, ValueError):
            found.append((fields["ip"], int(fields["port"])))
    return tuple(found)
