"""What the operator commands report: findings with a status, shown to a person or as JSON.

A :class:`Finding` is one fact about a deployment (a node reachable, a permission missing, a
risky setting) with its status, the node it is about and the option to change. Neither a
finding nor anything rendered here ever holds a secret: messages name options, never values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

__all__ = [
    "ERROR",
    "OK",
    "STATUSES",
    "WARNING",
    "Finding",
    "Status",
    "counts",
    "dump_json",
    "worst",
]

Status = Literal["ok", "warning", "error"]
OK: Status = "ok"
WARNING: Status = "warning"
ERROR: Status = "error"
#: Least to most severe.
STATUSES: tuple[Status, ...] = (OK, WARNING, ERROR)


@attrs.frozen
class Finding:
    """One fact about the configuration or a node, with what to do about it."""

    status: Status
    #: What was checked: ``config``, ``open``, ``reachable``, ``latency``, ``version``,
    #: ``role``, ``acl``, ``sentinel``, ``cluster``, ``server-config``, ``tls``, ``provider``.
    check: str
    #: One sentence for a person.
    message: str
    #: ``host:port`` (or socket path) of the node it is about; ``None`` for the whole setup.
    node: str | None = None
    #: The option to change (``session.redis.tls.skip_verify``), when one is.
    option: str | None = None
    #: What to change on the server, when that is the fix (``ACL SETUSER app +evalsha``).
    fix: str | None = None
    #: Figures behind the message, for machines (latencies in ms, the server version...).
    details: Mapping[str, Any] = attrs.field(factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Return the finding as a JSON-ready mapping (every key present)."""
        return {
            "status": self.status,
            "check": self.check,
            "node": self.node,
            "option": self.option,
            "message": self.message,
            "fix": self.fix,
            "details": dict(self.details),
        }

    def line(self) -> str:
        """Return the finding as one line for a person."""
        where = f"{self.node}: " if self.node else ""
        text = f"{self.status.upper():<8}{self.check:<14}{where}{self.message}"
        extras = []
        if self.fix:
            extras.append(f"fix: {self.fix}")
        if self.option:
            extras.append(f"option: {self.option}")
        if extras:
            text += f" [{'; '.join(extras)}]"
        return text


def worst(findings: Iterable[Finding]) -> Status:
    """Return the most severe status among ``findings`` (``ok`` for none)."""
    return max((f.status for f in findings), key=STATUSES.index, default=OK)


def counts(findings: Sequence[Finding]) -> dict[str, int]:
    """Return how many findings have each status."""
    return {status: sum(1 for f in findings if f.status == status) for status in STATUSES}


def dump_json(document: Mapping[str, Any]) -> str:
    """Return one JSON document (stable key order, ASCII-safe)."""
    return json.dumps(document, indent=2, sort_keys=False, default=str)
