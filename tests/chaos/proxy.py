"""A small loopback TCP proxy that breaks the network between the client and one Redis on command.

It runs as tasks on the test's own event loop, so switching faults is a plain method call that
takes effect at the next chunk of bytes. Modes (:meth:`FaultProxy.set_mode`):

``pass``
    Bytes flow both ways.
``blackhole``
    Nothing flows, in either direction, on existing and new connections: a partition. Bytes are
    held, not discarded, so when the partition heals they arrive in order, as TCP retransmission
    would deliver them; a client that gave up meanwhile has closed its side by then. New
    connections are accepted (the kernel completes the handshake anyway) but get no answer.
``stall``
    Each connection, at the next reply chunk from the server, passes a random prefix of it and
    then holds the rest of its replies until the mode changes: a reply stuck half-way.
``cut``
    Each reply chunk from the server, with probability ``cut_probability``, is cut: a random
    prefix is passed, then both sides of that connection are closed (the client sees its reply
    end mid-way, then EOF).
``desync``
    A control, not a fault a network can cause: each connection silently loses exactly one
    whole reply, so every later reply on it answers the wrong command (the CVE-2023-28859
    class of client bug, reproduced on the wire). The load driver must report it as wrong.

Only loopback addresses are accepted, for listening and for the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from typing import Literal

Mode = Literal["pass", "blackhole", "stall", "cut", "desync"]

_CHUNK = 65536
_CLOSE_TIMEOUT = 2.0


def _require_loopback(host: str) -> None:
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the fault proxy only works on loopback addresses, not {host}")


class _Link:
    """One proxied connection: the client's streams, the server's, and the two pumps."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False
        self.desynced = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in (self.client_writer, self.server_writer):
            with contextlib.suppress(Exception):
                writer.close()


class FaultProxy:
    """Listens on a free loopback port and forwards to ``upstream``; see the module docstring."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int | None = None) -> None:
        _require_loopback(upstream_host)
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = 0
        self.mode: Mode = "pass"
        self.cut_probability = 1.0
        #: The mode to switch to right after a cut (``None``: stay): "blackhole" holds the
        #: client's resend of the cut command until the test lets it through.
        self.after_cut: Mode | None = None
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        # Set whenever the mode changes: frozen pumps wake up and look again.
        self._changed = asyncio.Event()
        #: Figures for the report: connections accepted, and faults applied.
        self.accepted = 0
        self.cuts = 0
        self.stalls = 0
        self.dropped_replies = 0

    async def start(self) -> FaultProxy:
        """Start listening; ``self.port`` is the port to give the client."""
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set_mode(self, mode: Mode, *, cut_probability: float = 1.0) -> None:
        """Switch the fault; it applies from the next chunk of bytes on every connection."""
        self.mode = mode
        self.cut_probability = cut_probability
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def connections(self) -> int:
        """Proxied connections open now."""
        return sum(1 for link in self._links if not link.closed)

    async def aclose(self) -> None:
        """Stop listening and close every proxied connection; wait for the pumps (bounded)."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        pumps = [t for link in self._links for t in link.tasks]
        for task in pumps:
            task.cancel()
        # The per-connection handlers end by themselves once their pumps have: cancelling a
        # start_server handler makes asyncio log an error about it (Python 3.11).
        waiting = pumps + list(self._handlers)
        if waiting:
            await asyncio.wait(waiting, timeout=_CLOSE_TIMEOUT)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await self._server.wait_closed()
        writers = [w for link in self._links for w in (link.client_writer, link.server_writer)]
        for writer in writers:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await writer.wait_closed()
        self._links.clear()

    # -- internals -----------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                server = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.close()  # upstream down: the client sees its connection refused-ish
                return
            link = _Link((reader, writer), server)
            self._links.add(link)
            link.tasks = [
                asyncio.create_task(self._pump_up(link), name="fault-proxy up"),
                asyncio.create_task(self._pump_down(link), name="fault-proxy down"),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            link.close()
            await asyncio.wait(link.tasks, timeout=_CLOSE_TIMEOUT)
            self._links.discard(link)
            for stream in (link.client_writer, link.server_writer):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLOSE_TIMEOUT):
                        await stream.wait_closed()
        finally:
            self._handlers.discard(task)

    async def _wait_for(self, *modes: Mode) -> None:
        """Return once the mode is one of ``modes``."""
        while self.mode not in modes:
            await self._changed.wait()

    async def _pump_up(self, link: _Link) -> None:
        """Client to server: blocked while a blackhole lasts, or while this link is frozen."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await link.client_reader.read(_CHUNK)
                if not data:
                    break
                await self._wait_for("pass", "stall", "cut", "desync")
                link.server_writer.write(data)
                await link.server_writer.drain()
        with contextlib.suppress(OSError):
            if link.server_writer.can_write_eof() and not link.closed:
                link.server_writer.write_eof()

    async def _pump_down(self, link: _Link) -> None:
        """Server to client: where replies are stalled or cut half-way."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                data = await link.server_reader.read(_CHUNK)
                if not data:
                    break
                await self._wait_for("pass", "stall", "cut", "desync")
                mode = self.mode
                if mode == "desync" and not link.desynced:
                    data = await self._drop_one_reply(link, data)
                    if data is None:
                        break
                if mode == "stall":
                    self.stalls += 1
                    head, data = self._split(data)
                    link.client_writer.write(head)
                    await link.client_writer.drain()
                    await self._wait_for("pass", "cut")
                elif mode == "cut" and self._random.random() < self.cut_probability:
                    self.cuts += 1
                    head, _ = self._split(data)
                    link.client_writer.write(head)
                    await link.client_writer.drain()
                    link.close()  # FIN to both after the head: the reply ends mid-way
                    if self.after_cut is not None:
                        self.set_mode(self.after_cut)
                    return
                link.client_writer.write(data)
                await link.client_writer.drain()

    async def _drop_one_reply(self, link: _Link, data: bytes) -> bytes | None:
        """Return ``data`` without its first complete RESP2 reply (reading more if needed)."""
        while (end := reply_end(data)) is None:
            more = await link.server_reader.read(_CHUNK)
            if not more:
                return None
            data += more
        link.desynced = True
        self.dropped_replies += 1
        return data[end:]

    def _split(self, data: bytes) -> tuple[bytes, bytes]:
        if len(data) < 2:
            return b"", data
        at = self._random.randrange(1, len(data))
        return data[:at], data[at:]


def reply_end(buf: bytes, pos: int = 0) -> int | None:
    """Offset just past the RESP2 reply starting at ``pos``, or None if it is incomplete."""
    line_end = buf.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind = buf[pos : pos + 1]
    if kind in (b"+", b"-", b":"):
        return line_end + 2
    length = int(buf[pos + 1 : line_end])
    if kind == b"$":
        end = line_end + 2 + max(length, 0) + (2 if length >= 0 else 0)
        return end if len(buf) >= end else None
    if kind == b"*":
        at: int | None = line_end + 2
        for _ in range(max(length, 0)):
            assert at is not None
            at = reply_end(buf, at)
            if at is None:
                return None
        return at
    raise ValueError(f"not a RESP2 reply at offset {pos}: {buf[pos : pos + 20]!r}")
