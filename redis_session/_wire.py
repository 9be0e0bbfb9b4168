"""redis-py, adapted: the one module that knows its internals.

Everything the library needs from redis-py beyond its public API lives here, so a redis-py
release that moves one shows up in one place (and in ``tests/test_wire_contract.py``, which
checks every name in :data:`INTERNALS`):

- the connection classes we build (plain TCP naming a likely TLS port, and TLS with our own
  context and server name), and the settings every connection gets;
- the reply parser that keeps error codes (``READONLY``, ``NOSCRIPT``...);
- reading a connection's stream and parser directly (the pool pipelines on them), and
  asking whether bytes wait unread;
- the one bounded, shielded disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import anyio
import hiredis
import redis.exceptions
from redis._parsers import _AsyncHiredisParser
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    InvalidResponse,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = [
    "CLIENT_NAME",
    "CLOSED_AFTER_HANDSHAKE",
    "FAILURES",
    "INTERNALS",
    "NO_REPLY",
    "OUR_MARKERS",
    "PLAIN_PORT",
    "ClosedAfterHandshakeError",
    "PlainPortError",
    "TCPConnection",
    "TLSConnection",
    "causes",
    "connection_settings",
    "describe_plain",
    "disconnect",
    "is_dead",
    "node_label",
    "pack",
    "pack_tuple",
    "raise_lost",
    "reason",
    "replies_of",
    "stream_of",
    "unbracket",
    "unread",
    "unread_replies",
]

#: Every private name of redis-py (and of asyncio's streams) this module relies on, as
#: ``(owner, attribute)``: the contract test fails naming the first one a release removed.
INTERNALS: tuple[tuple[str, str], ...] = (
    ("redis._parsers", "_AsyncHiredisParser"),
    ("redis._parsers._AsyncHiredisParser", "EXCEPTION_CLASSES"),
    ("redis._parsers._AsyncHiredisParser", "parse_error"),
    ("redis._parsers._AsyncHiredisParser", "read_from_socket"),
    ("redis._parsers._AsyncHiredisParser (connected)", "_reader"),
    ("redis._parsers._AsyncHiredisParser (connected)", "_connected"),
    ("redis._parsers.hiredis", "NOT_ENOUGH_DATA"),
    ("redis.asyncio.connection.AbstractConnection (connected)", "_reader"),
    ("redis.asyncio.connection.AbstractConnection (connected)", "_writer"),
    ("redis.asyncio.connection.AbstractConnection (connected)", "_parser"),
    ("redis.asyncio.connection.AbstractConnection", "_host_error"),
    ("redis.asyncio.connection.Connection", "_connect"),
    ("redis.asyncio.connection.SSLConnection", "_connection_arguments"),
    ("redis.asyncio.connection.SSLConnection", "ssl_context"),
    ("asyncio.StreamReader", "_buffer"),
)

#: What a broken or confused connection raises: redis-py's errors, socket errors, timeouts,
#: and hiredis's own protocol errors (not RedisErrors) on a garbled stream.
FAILURES = (RedisError, OSError, TimeoutError, hiredis.HiredisError)
#: Client name on every connection, so operators (and tests) can tell ours in CLIENT LIST.
CLIENT_NAME = "redis_session"
#: Bound on closing one connection.
_DISCONNECT_TIMEOUT = 2.0


def reason(exc: BaseException) -> str:
    """One readable reason for a failed exchange with a node: its text, or "timed out"."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def pack(*args: bytes | str | int | float) -> bytes:
    """Encode one command in RESP, in the caller's task (hiredis does it in C)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]  # stub types one-tuples
    return packed


def pack_tuple(args: tuple[bytes | str | int | float, ...]) -> bytes:
    """:func:`pack` for arguments already in a tuple (one Python call less on the hot path)."""
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def node_label(host: str, port: int) -> str:
    """How a node is named in messages: ``host:port``, ``[v6]:port`` or the socket path."""
    if host.startswith("/"):
        return host
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def unbracket(host: str) -> str:
    """Return ``host`` without the brackets of an IPv6 literal (``[::1]`` is ``::1``)."""
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def connection_settings(
    *,
    username: str | None,
    password: str | None,
    timeout: float,
    db: int = 0,
    decode_responses: bool = False,
    keep_error_codes: bool = True,
) -> dict[str, Any]:
    """Return the keyword arguments every redis-py connection of ours gets (nodes, sentinels)."""
    settings: dict[str, Any] = {
        "username": username,
        "password": password,
        "db": db,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # RESP2: redis-py 8.1 surfaces an error for idle connections closed under RESP3 (#4252).
        "protocol": 2,
        "client_name": CLIENT_NAME,
        # No CLIENT SETINFO: one round trip less per connection.
        "driver_info": None,
        "decode_responses": decode_responses,
    }
    if keep_error_codes:
        # Error replies keep their code (READONLY, LOADING, NOSCRIPT...): see _CodedReplyParser.
        settings["parser_class"] = _CodedReplyParser
    return settings


class _CodedReplyParser(_AsyncHiredisParser):
    """redis-py's hiredis reply parser, except that error replies keep their whole text.

    redis-py strips the code from the errors it maps to classes, so ``READONLY You can't
    write...`` arrived as ``You can't write...`` and the failover retry (matching on
    ``_FAILOVER_REPLIES``) and the NOSCRIPT fallback never fired; ``LOADING`` even became a
    connection error; and ``ERR unknown command`` reached callers as ``unknown command``. Only
    the errors redis-py's connect path tells apart by class keep their class (and its text):
    authentication failures, and ``max number of clients reached`` (a connection error).
    Every other error reply is a plain ``ResponseError`` with the text the server sent.
    """

    EXCEPTION_CLASSES = {  # noqa: RUF012 - overrides redis-py's class attribute of that shape
        code: cls
        for code, cls in _AsyncHiredisParser.EXCEPTION_CLASSES.items()
        if code in ("ERR", "WRONGPASS", "NOAUTH")
    }

    @classmethod
    def parse_error(cls, response: str) -> RedisError:
        """Map an error reply to an exception; the code stays in the text unless it has a class."""
        error: RedisError = super().parse_error(response)  # type: ignore[no-untyped-call]
        if type(error) is ResponseError:
            return ResponseError(response)
        return error


# -- the connection classes -----------------------------------------------------------------


#: What a plain connection reports when the server hung up before its first reply.
_NO_FIRST_REPLY = "the server closed the connection before its first reply"
#: The first byte of a TLS record (alert, handshake): a TLS server answering plaintext.
_TLS_RECORD_BYTES = ('"\\x15"', '"\\x16"')


class _NoFirstReplyError(RedisConnectionError):
    """A fresh plain TCP connection was dropped before the server answered anything."""


class TCPConnection(Connection):
    """redis-py's TCP connection, naming the likely cause when a TLS-only server hangs up.

    A server that speaks only TLS reads our first command as a broken TLS record and resets
    the connection (or answers with a TLS alert), which redis-py reports like any broken
    socket: "Connection reset by peer". Raised here, inside connect(), it is known to have
    happened on the first reply, where a TLS port is the likely cause.
    """

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        """Connect as redis-py does; a hang-up before the first reply says so."""
        try:
            await super().connect_check_health(
                check_health=check_health, retry_socket_connect=retry_socket_connect
            )
        except RedisError as exc:
            if not _hung_up_before_first_reply(exc):
                raise
            msg = f"Error connecting to {self._host_error()}: {_NO_FIRST_REPLY} ({exc})"
            raise _NoFirstReplyError(msg) from exc


def _hung_up_before_first_reply(exc: RedisError) -> bool:
    text = str(exc)
    # "Error 111 connecting to ..." comes from the TCP connect itself: not a hang-up.
    if " connecting to " in text:
        return False
    if isinstance(exc, InvalidResponse):
        return any(text.endswith(f"got {b} as reply type byte") for b in _TLS_RECORD_BYTES)
    if type(exc) is not RedisConnectionError:
        return False  # authentication and "max number of clients": the server did answer
    chain: list[BaseException] = [exc]
    while (inner := chain[-1].__context__) is not None and len(chain) < 10:
        chain.append(inner)
    return "Connection closed by server" in text or any(
        isinstance(e, ConnectionResetError | BrokenPipeError) or "reset by peer" in str(e)
        for e in chain
    )


def describe_auth(exc: BaseException, *, has_user: bool, has_password: bool) -> str | None:
    """Name the options to fix when a node refused our credentials, or return ``None``.

    The server's words are kept (they never contain the password), and the option names are
    ``session.redis.username`` / ``password``: the credentials of the data nodes (sentinels
    have their own, named by the Sentinel topology).
    """
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, AuthenticationError | AuthenticationWrongNumberOfArgsError):
            if not has_password:
                fix = "it needs a password; set session.redis.password"
            elif has_user:
                fix = "check session.redis.username and session.redis.password"
            else:
                fix = "check session.redis.password (and session.redis.username for an ACL user)"
            return f"authentication failed ({reason(seen)}): {fix}"
        seen = seen.__cause__ or seen.__context__
    return None


def describe_plain(exc: BaseException, node: str) -> str | None:
    """Name ``session.redis.tls`` when a plain connection was dropped before any reply."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, _NoFirstReplyError):
            return f"{_NO_FIRST_REPLY}; does {node} require TLS? (session.redis.tls is not set)"
        seen = seen.__cause__ or seen.__context__
    return None


class TLSConnection(SSLConnection):
    """A redis-py TLS connection that uses a given context and sends a given server name.

    Extra keyword arguments (through ``ConnectionPool(connection_class=TLSConnection, ...)``):

    - ``ssl_context``: the ``ssl.SSLContext`` from :func:`build_ssl_context`, shared by every
      connection of the pool.
    - ``server_hostname``: the name sent as SNI and checked against the certificate; ``None``
      means ``host``.

    redis-py's own ``ssl_*`` arguments are refused, since they would be silently ignored.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        **kwargs: Any,
    ) -> None:
        stray = sorted(k for k in kwargs if k.startswith("ssl_"))
        if stray:
            msg = f"TLSConnection takes ssl_context, not {', '.join(stray)}"
            raise TypeError(msg)
        # SSLConnection.__init__ only records settings in a RedisSSLContext that would build a
        # second context lazily in get(). Handing it ours pre-built means get() can never build
        # one, and keeps its informational properties (cert_reqs, check_hostname, min_version)
        # truthful for code that inspects them.
        super().__init__(
            ssl_cert_reqs=ssl_context.verify_mode,
            ssl_check_hostname=ssl_context.check_hostname,
            ssl_min_version=ssl_context.minimum_version,
            **kwargs,
        )
        self.ssl_context.context = ssl_context
        self._tls_context = ssl_context
        self.server_hostname = server_hostname

    def _connection_arguments(self) -> Mapping[str, Any]:
        # What _connect uses: ``ssl`` and ``server_hostname`` drive the handshake, SNI and the
        # host name check while ``host`` stays the address.
        kwargs = dict(super()._connection_arguments())
        kwargs["ssl"] = self._tls_context
        kwargs["server_hostname"] = self.server_hostname
        return kwargs

    async def _connect(self) -> None:
        """Open the TCP connection, then run the TLS handshake on it, within the timeout.

        Two steps rather than redis-py's one call, so a handshake that gets no answer can be
        told apart: a plain Redis port reads the ClientHello as an unfinished inline command
        and never answers, which would otherwise surface as a bare timeout seconds later.
        """
        args = self._connection_arguments()
        async with asyncio.timeout(self.socket_connect_timeout):
            reader, writer = await asyncio.open_connection(args["host"], args["port"])
            try:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await self._handshake(writer, args["ssl"], args["server_hostname"])
            except BaseException:
                writer.close()
                raise
        self._reader, self._writer = reader, writer

    async def _handshake(
        self, writer: asyncio.StreamWriter, context: ssl.SSLContext, server_name: str | None
    ) -> None:
        """Upgrade ``writer`` to TLS; fail at once if the port turns out to speak plain RESP.

        A TLS server answers the ClientHello within a round trip. When no answer has come
        after ``_PROBE_AFTER``, a second connection sends an inline PING in plaintext: a
        RESP reply to it proves the port is plain, and waiting any longer is pointless. Any
        other outcome proves nothing, and the handshake keeps its whole timeout.
        """
        handshake = asyncio.ensure_future(writer.start_tls(context, server_hostname=server_name))
        probe: asyncio.Future[bool] | None = None
        try:
            done, _ = await asyncio.wait({handshake}, timeout=_PROBE_AFTER)
            if not done:
                probe = asyncio.ensure_future(_answers_plain_resp(self.host, self.port))
                await asyncio.wait({handshake, probe}, return_when=asyncio.FIRST_COMPLETED)
                if not handshake.done() and probe.done() and probe.result():
                    msg = f"Error connecting to {self._host_error()}: {PLAIN_PORT}"
                    raise PlainPortError(msg)
            await handshake
        finally:
            # Cancelled, timed out or refused: neither may outlive this connect (a cancelled
            # start_tls closes its transport; the probe closes its socket itself).
            for task in (handshake, probe):
                if task is None:
                    continue
                # Retrieve every outcome, also one that lands after the cancel: a failed
                # handshake nobody awaited would be reported as "never retrieved" at GC.
                task.add_done_callback(_retrieve)
                if not task.done():
                    task.cancel()

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        """Connect as redis-py does, but name a hang-up right after the TLS handshake.

        In TLS 1.3 the client's handshake is done before the server has checked the client
        certificate, so an mTLS rejection arrives on the first command of the connection: as
        the server's alert, or, as often, as a bare reset or EOF that redis-py reports like any
        broken socket. Raised here, inside connect(), it is known to be about the handshake.
        """
        try:
            await super().connect_check_health(
                check_health=check_health, retry_socket_connect=retry_socket_connect
            )
        except redis.exceptions.ConnectionError as exc:
            if not _hung_up_after_handshake(exc):
                raise
            msg = f"Error connecting to {self._host_error()}: {CLOSED_AFTER_HANDSHAKE} ({exc})"
            raise ClosedAfterHandshakeError(msg) from exc

    def repr_pieces(self) -> list[tuple[str, Any]]:
        """Name/value pairs for ``repr()``: address, db and server name; never credentials."""
        pieces: list[tuple[str, Any]] = list(super().repr_pieces())  # type: ignore[no-untyped-call]
        pieces.insert(2, ("server_hostname", self.server_hostname))
        return pieces


CLOSED_AFTER_HANDSHAKE = "the server closed the TLS connection right after the handshake"
#: How long a TLS handshake may go unanswered before the port is probed for plain RESP.
_PROBE_AFTER = 0.25
PLAIN_PORT = "the TLS handshake got no answer, and the port answers plain RESP"


class PlainPortError(redis.exceptions.ConnectionError):
    """The TLS handshake went unanswered, and the port answered a plaintext PING."""


#: Our own error texts, found again when only a string of them is left.
OUR_MARKERS = (
    (CLOSED_AFTER_HANDSHAKE, "closed_after_handshake"),
    (PLAIN_PORT, "plain_port"),
)


async def _answers_plain_resp(host: str, port: int) -> bool:
    """Whether ``host:port`` answers an inline ``PING`` in RESP: proof it is no TLS port.

    ``+PONG`` or any error reply (``-NOAUTH ...``, ``-ERR max number of clients...``) counts;
    a TLS port hangs up or sends a TLS record. No credentials are sent.
    """
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        line = await reader.readline()
    except OSError:
        return False
    finally:
        writer.close()
    return line[:1] in (b"+", b"-") and line.endswith(b"\r\n")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class ClosedAfterHandshakeError(redis.exceptions.ConnectionError):
    """The server hung up on a fresh TLS connection before answering anything."""


def _hung_up_after_handshake(exc: redis.exceptions.ConnectionError) -> bool:
    # Only a plain broken socket after _connect() succeeded: errors from _connect() itself say
    # "connecting to" and are described already, and subclasses (authentication) are replies.
    if type(exc) is not redis.exceptions.ConnectionError or " connecting to " in str(exc):
        return False
    chain = list(causes(exc))
    return "Connection closed by server" in str(exc) or any(
        isinstance(e, ConnectionResetError | BrokenPipeError | ssl.SSLEOFError) for e in chain
    )


# -- reading a connection directly ---------------------------------------------------------------


def stream_of(conn: AbstractConnection) -> tuple[asyncio.StreamWriter, Any]:
    """Return the connection's writer and its hiredis reply parser, to pipeline on directly.

    redis-py's own send adds a task per write (``wait_for``); writing to the stream and reading
    replies from the parser is the hot path. Raises ``ConnectionError`` if not connected.
    """
    writer = conn._writer
    if writer is None:
        raise RedisConnectionError("not connected")
    return writer, conn._parser


#: What the ``gets`` of :func:`replies_of` returns while no whole reply has arrived yet.
NO_REPLY: object = NOT_ENOUGH_DATA


def replies_of(conn: AbstractConnection) -> tuple[Callable[[], Any], Callable[[], Awaitable[Any]]]:
    """Return ``(gets, fill)``: the connection's parsed replies, taken without a coroutine each.

    ``gets()`` returns the next reply, or :data:`NO_REPLY` when its bytes have not all
    arrived; ``await fill()`` then reads more from the socket (``ConnectionError`` when the
    server closed it). What redis-py's ``read_response`` does per reply, minus a coroutine and
    the RESP3 push handling (our connections speak RESP2). Its checks of the reply are the
    caller's: :func:`raise_lost`. Raises ``ConnectionError`` if not connected.
    """
    parser: Any = conn._parser
    reader = getattr(parser, "_reader", None)
    if reader is None or not parser._connected:
        raise RedisConnectionError("not connected")
    return reader.gets, parser.read_from_socket


def raise_lost(reply: Any) -> None:
    """Raise the connection error a reply stands for, as redis-py's ``read_response`` does."""
    if isinstance(reply, RedisConnectionError):
        raise reply
    if type(reply) is list and reply and isinstance(reply[0], RedisConnectionError):
        raise reply[0]  # inside a transaction's reply, as redis-py checks too


def is_dead(conn: AbstractConnection) -> bool:
    """Whether the server or the network closed the socket while we were not reading."""
    reader = conn._reader  # redis-py has no public liveness check
    return reader is None or reader.at_eof()


def unread(conn: AbstractConnection) -> bool:
    """Whether bytes have arrived on ``conn`` that its reader has not parsed yet.

    In the stream's buffer, or still in the socket (the event loop has not run its read
    callback yet, as after a stall). Costs a ``select`` call: not for every command.
    """
    reader = conn._reader
    if reader is None:
        return False
    if reader._buffer:  # type: ignore[attr-defined]  # StreamReader: no public check
        return True
    sock = conn._writer.get_extra_info("socket") if conn._writer else None
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


def unread_replies(conn: AbstractConnection) -> bool:
    """Like :func:`unread`, counting replies already parsed but not yet taken (pub/sub)."""
    parser: Any = getattr(conn, "_parser", None)
    hiredis_reader = getattr(parser, "_reader", None)
    if hiredis_reader is not None and hiredis_reader.has_data():
        return True
    return unread(conn)


async def disconnect(conn: AbstractConnection) -> None:
    """Disconnect ``conn``: bounded, shielded, never raising.

    Shielded with anyio: an enclosing anyio cancel scope cancels every await again, and an
    ``asyncio.shield`` would return at once and leave the socket to close in a stray task.
    """
    # suppress() outermost: a coroutine closed after its loop is gone (garbage collected)
    # cannot even enter the scope, and must not raise from its cleanup either.
    with contextlib.suppress(Exception), anyio.move_on_after(_DISCONNECT_TIMEOUT, shield=True):
        await conn.disconnect(nowait=True)


def causes(exc: BaseException) -> Iterator[BaseException]:
    """Yield ``exc`` and everything it wraps: causes, contexts and exception group members."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 50:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        # __context__ survives ``raise ... from None``, so a wrapper that hides the cause from
        # tracebacks still lets us find the ssl error underneath.
        todo.extend(e for e in (cur.__cause__, cur.__context__) if e is not None)
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)
