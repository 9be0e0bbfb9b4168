"""Connection pool figures: what ``SessionStore.statistics()`` returns, whatever the backend.

Plain data, in the session core: the memory provider reports them too, and neither it nor the
store needs the Redis client to name them.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class NodeStatistics:
    """A snapshot of one node's pool."""

    #: ``host:port`` or the unix socket path.
    node: str
    max_connections: int
    #: Connections open or being opened.
    open: int
    #: Connections with a batch in flight.
    in_use: int
    #: Open connections waiting for work.
    idle: int
    #: Commands queued, not yet written to any connection.
    waiting: int


@attrs.frozen
class PoolStatistics:
    """A snapshot of the connection pools, as returned by ``SessionStore.statistics()``."""

    #: Most connections to one node (``maximum_active_connections``).
    max_connections: int
    #: Connections open or opening, all nodes.
    open: int
    #: Connections with commands in flight.
    in_use: int
    #: Open connections waiting for work.
    idle: int
    #: Commands queued for a connection.
    waiting: int
    #: The same figures per node (one entry per node in use).
    nodes: tuple[NodeStatistics, ...] = ()
