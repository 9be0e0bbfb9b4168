"""Three-way merge of session data, for a save that lost a compare-and-set race.

Two requests of one browser load the same session; both change it; the second save is refused
(:class:`~redis_session.SessionConflict`). Instead of failing that request, its changes are
replayed onto the fresh copy: ``base`` is the data as this request loaded it, ``ours`` the data
at the end of this request, ``theirs`` what the other writer saved. Every top-level key this
request set or deleted (``ours`` differs from ``base``) is applied onto ``theirs``, unless the
other writer changed that same key since ``base`` to something else: then both changed one
value and neither can win silently, which is a conflict. Keys only the other writer changed are
kept as it left them. Values compare by equality, so a nested change counts as a change of
its top-level key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["MergeConflict", "changed_keys", "merge"]

_MISSING: Any = object()


class MergeConflict(Exception):
    """Both writers changed the same keys; ``keys`` names them (sorted)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"both requests changed session keys {keys!r}")
        self.keys = keys


def changed_keys(base: Mapping[str, Any], ours: Mapping[str, Any]) -> set[str]:
    """Return the keys whose value differs between ``base`` and ``ours`` (set or deleted)."""
    return {k for k in base.keys() | ours.keys() if base.get(k, _MISSING) != ours.get(k, _MISSING)}


def merge(
    base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> dict[str, Any]:
    """Return ``theirs`` with this request's changes (``base`` to ``ours``) applied onto it.

    Raises :class:`MergeConflict` if the other writer changed one of those keys too, to a
    different value than ours.
    """
    merged = dict(theirs)
    clashes = []
    for key in changed_keys(base, ours):
        mine = ours.get(key, _MISSING)
        other = theirs.get(key, _MISSING)
        if other != base.get(key, _MISSING) and other != mine:
            clashes.append(key)
        elif mine is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = mine
    if clashes:
        raise MergeConflict(sorted(clashes))
    return merged
