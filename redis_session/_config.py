"""The configuration model: frozen attrs classes mirroring Authelia's ``session:`` section.

Keys, types and defaults follow the spec in ``shared/seeds`` (Authelia's session and redis
documentation). Options that Authelia does not have are marked *extension* in their docstring.
These classes hold values only; the rules live in ``_config_rules``, parsing in
``_config_converter``, files and secrets in ``_config_loading``, and nothing here does I/O.
"""

from __future__ import annotations

import ssl
from datetime import timedelta

import attrs

__all__ = [
    "ClusterConfig",
    "ClusterNodeConfig",
    "CookieConfig",
    "HighAvailabilityConfig",
    "NodeConfig",
    "RedisConfig",
    "Secret",
    "SessionConfig",
    "TLSConfig",
]

_MASK = "**********"


@attrs.frozen(repr=False)
class Secret:
    """A secret string (session secret, Redis password) that never shows itself.

    ``repr()`` and ``str()`` print a fixed mask, so a secret cannot leak through a log line, a
    traceback or an error message by accident. Call :meth:`get_secret_value` where the real
    value is needed.
    """

    _value: str = attrs.field(alias="value")

    def get_secret_value(self) -> str:
        """Return the secret itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK


@attrs.frozen
class TLSConfig:
    """``session.redis.tls``: connect to Redis over TLS.

    Certificate and host name verification are on by default against the system trust store
    (so ``SSL_CERT_FILE`` works).
    """

    #: Name sent as SNI and checked against the certificate; defaults to ``redis.host``.
    server_name: str | None = None
    #: Turn off certificate and host name verification (logged as a warning). Testing only.
    skip_verify: bool = False
    #: Lowest TLS version accepted; Authelia's notation, e.g. ``TLS1.2``.
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    #: Highest TLS version offered (Authelia 4.38+); ``None`` means the newest supported.
    maximum_version: ssl.TLSVersion | None = None
    #: *Extension.* PEM file of extra CA certificates to trust, on top of the system store.
    ca_file: str | None = None
    #: *Extension.* PEM client certificate (chain) for mutual TLS. Its private key is read from
    #: ``key_file``, or from this same file when ``key_file`` is unset.
    certificate_file: str | None = None
    #: *Extension.* PEM private key of ``certificate_file``; needs ``certificate_file``.
    key_file: str | None = None
    #: Client certificate (chain) for mutual TLS, given inline as PEM (Authelia 4.38+); needs
    #: ``private_key``. Not with ``certificate_file``.
    certificate_chain: str | None = None
    #: Private key of ``certificate_chain``, inline as PEM (Authelia 4.38+). Not with
    #: ``key_file``.
    private_key: Secret | None = None


@attrs.frozen
class NodeConfig:
    """One entry of ``session.redis.high_availability.nodes``: a Redis Sentinel."""

    host: str
    port: int = 26379


@attrs.frozen
class HighAvailabilityConfig:
    """``session.redis.high_availability``: find the master through Redis Sentinel."""

    #: The master name that the sentinels monitor (not a host name).
    sentinel_name: str
    #: ACL user name on the sentinels themselves (Authelia 4.38+); needs ``sentinel_password``.
    sentinel_username: str | None = None
    #: Password of the sentinels themselves (``requirepass`` in sentinel.conf).
    sentinel_password: Secret | None = None
    #: Sentinels to ask; ``redis.host``, when set, is tried first.
    nodes: tuple[NodeConfig, ...] = ()
    #: Send read-only commands to the lowest-latency node among master and replicas.
    route_by_latency: bool = False
    #: Send read-only commands to a random node among master and replicas.
    route_randomly: bool = False


@attrs.frozen
class ClusterNodeConfig:
    """One entry of ``session.redis.cluster.nodes``: a Redis Cluster node to start from."""

    #: *Extension.* Host name, IPv4 address or bracketed IPv6 literal of the node.
    host: str
    #: *Extension.* TCP port of the node.
    port: int = 6379


@attrs.frozen
class ClusterConfig:
    """*Extension.* ``session.redis.cluster``: sessions sharded over a Redis Cluster.

    The nodes are seeds: the store asks the first that answers for the slot map and then talks
    to every master (and, with read routing, every replica) it names. TLS, ``username``,
    ``password`` and both pool limits of ``session.redis`` apply to each node. Redis Cluster
    has database 0 only, and is not used together with ``high_availability``.
    """

    #: *Extension.* Seed nodes; ``redis.host`` and ``redis.port``, when ``host`` is set, first.
    nodes: tuple[ClusterNodeConfig, ...] = ()
    #: *Extension.* Send read-only commands to the lowest-latency node among each slot's
    #: master and replicas.
    route_by_latency: bool = False
    #: *Extension.* Send read-only commands to a random node among each slot's master and
    #: replicas.
    route_randomly: bool = False
    #: *Extension.* Most MOVED or ASK redirections one command follows before it fails.
    max_redirects: int = 5


@attrs.frozen
class RedisConfig:
    """``session.redis``: the Redis provider. Without it, sessions live in process memory."""

    #: Host name, IPv4 address, bracketed IPv6 literal (``"[fd00::1]"``) or absolute unix
    #: socket path. With ``high_availability`` this is a sentinel and is optional.
    host: str | None = None
    #: TCP port; ignored for a unix socket.
    port: int = 6379
    #: ACL user name (Redis 6+).
    username: str | None = None
    #: Password (``AUTH``).
    password: Secret | None = None
    #: Database number selected on every new connection (``SELECT``).
    database_index: int = 0
    #: Most sockets open to one node at once, whatever the concurrency.
    maximum_active_connections: int = 8
    #: Connections opened when the store opens and kept open while idle.
    minimum_idle_connections: int = 0
    #: *Extension.* How long a command may wait for a connection and for its reply.
    timeout: timedelta = timedelta(seconds=5)
    #: *Extension.* Idle connections above the floor are closed after this long.
    maximum_idle_time: timedelta = timedelta(minutes=5)
    #: Retries of a command whose connection failed on a single server, when it may have run
    #: (Authelia 4.38+). ``0``, the default, keeps the built-in number (2), as go-redis does
    #: for Authelia. Ignored under Sentinel, where ``timeout`` bounds the retries.
    max_retries: int = 0
    #: Connect over TLS when present.
    tls: TLSConfig | None = None
    #: Use Redis Sentinel when present.
    high_availability: HighAvailabilityConfig | None = None
    #: *Extension.* Use Redis Cluster when present.
    cluster: ClusterConfig | None = None


#: ``remember_me: -1`` in Authelia's notation: remember-me is disabled. Any negative duration
#: means the same; compare with ``< timedelta(0)``.
REMEMBER_ME_DISABLED = timedelta(seconds=-1)


@attrs.frozen
class CookieConfig:
    """One entry of ``session.cookies`` (Authelia 4.38+): the session cookie of one domain.

    The cookie is sent for ``domain`` and its subdomains. Options left ``None`` take the value
    of the same option at the top of ``session`` when the configuration is loaded, so a loaded
    configuration's entries are complete.
    """

    #: Cookie domain: a registrable domain or a subdomain, never a public suffix.
    domain: str
    #: Authelia's portal URL for this domain. Accepted for compatibility; not used here.
    authelia_url: str | None = None
    #: Authelia's redirection target for this domain. Accepted for compatibility; not used here.
    default_redirection_url: str | None = None
    #: Cookie name for this domain; defaults to ``session.name``.
    name: str | None = None
    #: ``SameSite`` attribute (``lax``, ``strict`` or ``none``); defaults to ``session.same_site``.
    same_site: str | None = None
    #: Absolute lifetime of a session on this domain; defaults to ``session.expiration``.
    expiration: timedelta | None = None
    #: Idle limit on this domain; defaults to ``session.inactivity``.
    inactivity: timedelta | None = None
    #: Lifetime of a remember-me session on this domain (negative: disabled); defaults to
    #: ``session.remember_me``.
    remember_me: timedelta | None = None


@attrs.frozen
class SessionConfig:
    """``session``: the whole session configuration (Authelia's keys and defaults)."""

    #: Cookie name (the default of every ``cookies`` entry); also namespaces the keys in Redis.
    name: str = "authelia_session"
    #: ``SameSite`` attribute of the cookie: ``lax``, ``strict`` or ``none`` (Authelia 4.38+).
    same_site: str = "lax"
    #: Deprecated (Authelia before 4.38): one cookie domain. Loading maps it to a ``cookies``
    #: entry, with a warning.
    domain: str | None = None
    #: Per-domain cookies (Authelia 4.38+). Empty: a host-only cookie for whatever host served
    #: the request.
    cookies: tuple[CookieConfig, ...] = ()
    #: Key material for encryption at rest and key hashing. Required with ``redis``.
    secret: Secret | None = None
    #: *Extension.* Former secrets still accepted for reading during a key rotation.
    previous_secrets: tuple[Secret, ...] = ()
    #: Absolute lifetime of a session.
    expiration: timedelta = timedelta(hours=1)
    #: Idle limit: a session unused this long is gone. Not applied to remember-me sessions.
    inactivity: timedelta = timedelta(minutes=5)
    #: Absolute lifetime of a remember-me session (replaces ``expiration``); a negative
    #: duration (Authelia's ``-1``) disables remember-me (Authelia 4.38+).
    remember_me: timedelta = timedelta(days=30)
    #: Deprecated (Authelia before 4.38): the old name of ``remember_me``. Loading maps it
    #: there, with a warning.
    remember_me_duration: timedelta | None = None
    #: *Extension.* Largest serialized session data accepted by ``save``, in bytes.
    maximum_data_size: int = 64 * 1024
    #: *Extension.* Key material for the keyed hash of user names in key names and public ids;
    #: ``None``: derived from ``secret``. Set it to the old secret's value when ``secret``
    #: rotates, so users keep their indexes (see docs/users.md).
    index_secret: Secret | None = None
    #: *Extension.* Most sessions one user may hold at once; 0 for no limit.
    max_sessions_per_user: int = 0
    #: *Extension.* What a login beyond ``max_sessions_per_user`` does: ``deny`` (raises
    #: ``SessionLimitReached``) or ``evict_oldest`` (ends the user's oldest session).
    session_limit_action: str = "deny"
    #: The Redis provider; ``None`` selects the in-memory provider.
    redis: RedisConfig | None = None
