"""``stats CONFIG``: the sessions in Redis by kind, the pool figures, and the key-rotation state.

Every master is scanned (each cluster master; the master under Sentinel) with ``SCAN`` and
``MATCH <session.name>:*``, in batches, never ``KEYS``; each key found is read with ``HMGET``
(its type with ``TYPE`` when it is not a hash). Nothing is written. (Reading a key whose TTL
ran out makes Redis delete it then, as any read does: that session was already gone.)

What a record is, from the layout in ``_redis_provider``:

- a session: a hash with ``v``; remember-me when ``i`` (its inactivity limit) is ``0``;
- a tombstone: a hash with only ``m``, the old id of a regenerate, gone within a minute;
- a user's keys (docs/users.md section 2), told by their names: the state ``<name>:u:<H>``
  (login counter, not-before mark) and the index ``<name>:u:<H>:e`` (public id -> session),
  with ``{U}:`` after the name on a cluster; H is a keyed hash, so they name no user;
- the secret that encrypted it: its blob starts with a format byte and the 4-byte key id of
  the secret (``_crypto``). A key's name is an HMAC of the id and cannot be inverted, but the
  key id tells which configured secret wrote the record (current or ``previous_secrets[n]``),
  or that none did (a secret since removed: such a session no longer loads).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from os import PathLike
from typing import Any

import attrs

from ._cli_nodes import discover
from ._cli_report import ERROR
from ._config import SessionConfig
from ._config_loading import load_config
from ._crypto import KeyRing, key_id_of
from ._errors import CommandError, StoreUnavailable, UsageError
from ._opener import open_session_store
from ._probe import DataNode
from ._spec import connection_spec
from ._statistics import PoolStatistics
from ._tasks import gather_all

__all__ = ["NodeCount", "StatsReport", "run_stats"]

#: Keys asked for per ``SCAN`` call (``COUNT``), unless ``--batch`` says otherwise.
BATCH = 500
#: Most ``HMGET`` in flight at once per node (the pool pipelines them onto its connections).
_READS_IN_FLIGHT = 100


@attrs.define
class NodeCount:
    """What one master holds under the store's prefix."""

    node: str
    keys: int = 0
    sessions: int = 0


@attrs.define
class StatsReport:
    """The figures ``stats`` prints."""

    provider: str
    remember_me: int = 0
    regular: int = 0
    tombstones: int = 0
    #: Users' state keys (one per user with a session since its longest one began) and index
    #: keys (the same, but gone after a ``revoke_user`` until the next login).
    user_states: int = 0
    user_indexes: int = 0
    #: Sessions by the secret that encrypted them: ``session.secret``, then
    #: ``session.previous_secrets[n]``, then ``None`` (no configured secret).
    by_secret: collections.Counter[str | None] = attrs.field(factory=collections.Counter)
    #: Keys under the prefix that are not sessions or tombstones, by Redis type (``hash`` for
    #: a hash of another shape).
    other: collections.Counter[str] = attrs.field(factory=collections.Counter)
    nodes: list[NodeCount] = attrs.field(factory=list)
    pool: PoolStatistics | None = None
    secrets: tuple[str, ...] = ()

    @property
    def sessions(self) -> int:
        """Every live session."""
        return self.remember_me + self.regular

    @property
    def previous(self) -> int:
        """Sessions still under a previous secret (their next save moves them to the current)."""
        return sum(
            n for option, n in self.by_secret.items() if option not in (None, "session.secret")
        )

    def as_json(self) -> dict[str, Any]:
        """Return the figures as one JSON-ready mapping."""
        pool = self.pool
        return {
            "provider": self.provider,
            "sessions": {
                "total": self.sessions,
                "remember_me": self.remember_me,
                "regular": self.regular,
            },
            "tombstones": self.tombstones,
            "users": {"state_keys": self.user_states, "index_keys": self.user_indexes},
            "rotation": {
                "current_secret": self.by_secret.get("session.secret", 0),
                "previous_secrets": [
                    {"option": option, "sessions": self.by_secret.get(option, 0)}
                    for option in self.secrets[1:]
                ],
                "under_previous_secrets": self.previous,
                "no_configured_secret": self.by_secret.get(None, 0),
            },
            "other_keys": dict(sorted(self.other.items())),
            "nodes": [attrs.asdict(n) for n in self.nodes],
            "pool": None if pool is None else attrs.asdict(pool),
        }

    def lines(self) -> list[str]:
        """Return the figures as lines for a person."""
        out = [
            f"sessions     {self.sessions:>9}  (remember-me {self.remember_me}, "
            f"regular {self.regular})",
            f"tombstones   {self.tombstones:>9}  (ids regenerated within the last minute)",
            f"user keys    {self.user_states + self.user_indexes:>9}  (state {self.user_states}, "
            f"index {self.user_indexes}: the users' session lists, docs/users.md)",
            "key rotation:",
            f"  {'session.secret':<28}{self.by_secret.get('session.secret', 0):>9}",
        ]
        out += [f"  {option:<28}{self.by_secret.get(option, 0):>9}" for option in self.secrets[1:]]
        out.append(f"  {'no configured secret':<28}{self.by_secret.get(None, 0):>9}")
        if self.other:
            kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.other.items()))
            out.append(f"other keys   {sum(self.other.values()):>9}  ({kinds})")
        out.append("nodes:")
        out += [f"  {n.node:<28}{n.keys:>9} keys, {n.sessions} sessions" for n in self.nodes]
        if self.pool is not None:
            p = self.pool
            out.append(
                f"pool: {p.max_connections} connections at most per node; {p.open} open, "
                f"{p.in_use} in use, {p.idle} idle, {p.waiting} commands waiting"
            )
            out += [
                f"  {n.node:<28}{n.open} open, {n.in_use} in use, {n.idle} idle" for n in p.nodes
            ]
        return out


async def run_stats(source: str | PathLike[str], *, batch: int = BATCH) -> StatsReport:
    """Count the sessions the configuration at ``source`` reaches; read-only.

    Raises :class:`ConfigError` for an invalid configuration, :class:`UsageError` for one
    without ``session.redis``, and :class:`StoreUnavailable` when Redis cannot be reached.
    """
    cfg = load_config(source)
    redis = cfg.redis
    if redis is None:
        msg = (
            "stats needs session.redis: without it, sessions live in each app process's memory, "
            "out of this command's reach"
        )
        raise UsageError(msg)
    kids = _key_ids(cfg)
    async with open_session_store(cfg) as store:
        pool = store.statistics()
        deployment = await discover(redis, connection_spec(redis))
        try:
            masters = deployment.masters()
            if not masters:
                problems = "; ".join(f.message for f in deployment.findings if f.status == ERROR)
                raise StoreUnavailable(problems or "no master found")
            report = StatsReport(deployment.kind, pool=pool, secrets=tuple(kids.values()))
            pattern = _glob(cfg.name) + b":*"
            users = _user_keys(cfg.name)
            counts = await gather_all(
                [
                    _scan(m.node, pattern, users=users, kids=kids, report=report, batch=batch)
                    for m in masters
                ]
            )
            report.nodes = sorted(counts, key=lambda n: n.node)
        finally:
            await deployment.aclose()
    return report


def _key_ids(cfg: SessionConfig) -> dict[bytes, str]:
    """Return the key id of each configured secret, by the option holding it (current first)."""
    kids: dict[bytes, str] = {}
    secrets = [("session.secret", cfg.secret)]
    secrets += [(f"session.previous_secrets[{i}]", s) for i, s in enumerate(cfg.previous_secrets)]
    for option, secret in secrets:
        if secret is None:
            continue
        kid = KeyRing.from_secrets(secret.get_secret_value()).key_id
        # A previous secret equal to the current one (or to an earlier one) adds nothing.
        kids.setdefault(kid, option)
    return kids


def _glob(name: str) -> bytes:
    # SCAN MATCH is a glob: the name's own glob characters are matched literally.
    escaped = "".join(f"\\{c}" if c in "*?[]\\" else c for c in name)
    return escaped.encode()


def _user_keys(name: str) -> re.Pattern[bytes]:
    """Match a user's state key (group 1 empty) or index key (group 1 ``:e``) by name."""
    # _ids.user_base: <name>:u:<H> or <name>:{U}:u:<H>, H 22 base64url characters. A session
    # key's last part is an HMAC without a colon, so no session key matches.
    return re.compile(rb"%s:(?:\{[^}]*\}:)?u:[A-Za-z0-9_-]{22}(:e)?" % re.escape(name.encode()))


async def _scan(
    node: DataNode,
    pattern: bytes,
    *,
    users: re.Pattern[bytes],
    kids: dict[bytes, str],
    report: StatsReport,
    batch: int,
) -> NodeCount:
    count = NodeCount(node.label)
    cursor: bytes = b"0"
    while True:
        cursor, found = await node.execute("SCAN", cursor, "MATCH", pattern, "COUNT", batch)
        keys = []
        for key in found:
            user_key = users.fullmatch(key)
            if user_key is None:
                keys.append(key)
                continue
            # Counted by name, not read: they hold no session (and a state hash has none of
            # the fields a session is judged by).
            count.keys += 1
            if user_key.group(1):
                report.user_indexes += 1
            else:
                report.user_states += 1
        for start in range(0, len(keys), _READS_IN_FLIGHT):
            chunk = keys[start : start + _READS_IN_FLIGHT]
            for record in await gather_all([_read(node, key) for key in chunk]):
                _tally(record, kids, report, count)
        if cursor in (b"0", 0, "0"):
            return count


async def _read(node: DataNode, key: bytes) -> Sequence[Any] | str:
    """Return the fields a record is judged by, ``v i m d``; its type if it is not a hash."""
    try:
        reply: Sequence[Any] = await node.execute("HMGET", key, "v", "i", "m", "d")
    except CommandError as exc:
        if exc.code != "WRONGTYPE":
            raise
        kind = await node.execute("TYPE", key)
        return kind.decode() if isinstance(kind, bytes) else str(kind)
    return reply


def _tally(
    record: Sequence[Any] | str, kids: dict[bytes, str], report: StatsReport, count: NodeCount
) -> None:
    if isinstance(record, str):
        if record != "none":  # gone since the SCAN
            count.keys += 1
            report.other[record] += 1
        return
    version, inactivity, marker, blob = record[0], record[1], record[2], record[3]
    if version is None and marker is None and inactivity is None and blob is None:
        return  # gone since the SCAN (expired, deleted)
    count.keys += 1
    if version is None:
        if marker is not None:
            report.tombstones += 1
        else:
            report.other["hash"] += 1
        return
    count.sessions += 1
    if inactivity == b"0":
        report.remember_me += 1
    else:
        report.regular += 1
    kid = key_id_of(blob) if isinstance(blob, bytes) else None
    report.by_secret[kids.get(kid) if kid is not None else None] += 1
