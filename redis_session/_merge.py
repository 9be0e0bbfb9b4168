"""Three-way merge of session data, for a save that lost a compare-and-set race.

Two requests of one browser load the same session; both change it; the second save is refused
(:class:`~redis_session.SessionConflict`). Instead of failing that request, its changes are
replayed onto the fresh copy: ``base`` is the data as this request loaded it, ``ours`` the data
at the end of this request, ``theirs`` what the other writer saved. Every top-level key this
request set or deleted (``ours`` differs from ``base``) is applied onto ``theirs``, unless the
other writer changed that same key since ``base`` to something else: then both changed one
value and neither can win silently, which is a conflict. Keys only the other writer changed are
kept as it left them. Values compare by :func:`same` (type and value, recursively: ``True``
over ``1`` is a change, though ``True == 1``), so a nested change counts as a change of its
top-level key.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MergeConflict", "changed_keys", "merge", "same", "snapshot"]

_MISSING: Any = object()
#: Leaf types the codec decodes that nothing can change in place: a snapshot shares them.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, dt.datetime})


class MergeConflict(Exception):
    """Both writers changed the same keys; ``keys`` names them (sorted)."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"both requests changed session keys {keys!r}")
        self.keys = keys


def same(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` would be stored alike: same types and values, recursively.

    ``==`` is not enough: ``True == 1 == 1.0`` and ``(1,) != [1]`` aside, the codec stores
    ``True``, ``1`` and ``1.0`` differently, so replacing one by another is a change to save;
    so are ``-0.0`` over ``0.0`` and a map key ``True`` over ``1``. A NaN is the same as a NaN
    (``nan != nan``, but a NaN freshly loaded is no change by the writer that stored it).
    Cheaper than encoding both sides: it stops at the first difference, and an unchanged value
    (the usual case) is often the very object (``is``), :func:`snapshot` copies included: the
    identity test comes before the call, so shared leaves cost no call at all.
    """
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    # What the codec decodes, by exact type first: cheaper than isinstance.
    if kind is dict:
        return _same_items(a, b)
    if kind is list:
        return _same_seq(a, b)
    if kind is str or kind is int:
        return bool(a == b)
    return _same_other(a, b)


def _same_other(a: Any, b: Any) -> bool:
    """Compare like ``same`` two values of one type other than dict, list, str and int."""
    if isinstance(a, dict):
        return _same_items(a, b)
    if isinstance(a, list | tuple):
        return _same_seq(a, b)
    return _same_float(a, b) if isinstance(a, float) else bool(a == b)


def _same_float(a: float, b: float) -> bool:
    if a == b:
        # 0.0 == -0.0, but the sign is stored.
        return a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b)
    return math.isnan(a) and math.isnan(b)


def _same_items(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    if len(a) != len(b):
        return False
    # Loops, not all(<generator>): a generator frame per element was most of the cost.
    for k, v in a.items():
        if type(k) is not str:
            # A lookup finds ``True`` for ``1``: keys of other types are compared by type too.
            # (A str key finds only a str, or a str subclass, which is stored as a str.)
            return _same_typed_keys(a, b)
        w = b.get(k, _MISSING)
        if v is not w and (w is _MISSING or not same(v, w)):
            return False
    return True


def _same_typed_keys(a: dict[Any, Any], b: dict[Any, Any]) -> bool:
    """``_same_items`` for maps with keys other than str: keys match by type and value."""
    typed = {_typed_key(j): w for j, w in b.items()}
    for k, v in a.items():
        w = typed.get(_typed_key(k), _MISSING)
        if w is _MISSING or (v is not w and not same(v, w)):
            return False
    return True


def _typed_key(key: Any) -> Any:
    """Return ``key`` as the codec tells it apart: with its type; a float by its bits."""
    kind = type(key)
    if kind is tuple:
        return (tuple, tuple(_typed_key(k) for k in key))
    if kind is float:
        return (float, key.hex())
    return (kind, key)


def _same_seq(a: list[Any] | tuple[Any, ...], b: list[Any] | tuple[Any, ...]) -> bool:
    if len(a) != len(b):
        return False
    for v, w in zip(a, b, strict=True):  # noqa: SIM110
        if v is not w and not same(v, w):
            return False
    return True


def snapshot(data: Any) -> Any:
    """Return a copy of session data that shares nothing mutable with it (the merge's base).

    What the codec decodes (dicts, lists and immutable leaves) is copied by hand, many times
    faster than :func:`copy.deepcopy` (no memo, no dispatch, no call per leaf); immutable
    leaves are shared, so :func:`same` finds an unchanged leaf by identity. Tuples,
    ``bytearray`` and ``memoryview`` (which the codec stores, and ``deepcopy`` cannot copy)
    are copied by hand too; anything else (a set, a dict subclass, an object the app stored)
    goes to ``deepcopy``. Never fails on data the codec stored: the snapshot is taken after
    the save, where an error would fail a request whose changes went through.
    """
    kind = type(data)
    if kind is dict:
        return {k: v if type(v) in _IMMUTABLE else snapshot(v) for k, v in data.items()}
    if kind is list:
        return [v if type(v) in _IMMUTABLE else snapshot(v) for v in data]
    if kind in _IMMUTABLE:
        return data
    return _snapshot_other(data)


def _snapshot_other(data: Any) -> Any:
    """Copy like ``snapshot`` what the codec never decodes (the app's own values, saved)."""
    kind = type(data)
    if kind is tuple:
        return tuple(v if type(v) in _IMMUTABLE else snapshot(v) for v in data)
    if kind is bytearray:
        return bytearray(data)
    if kind is memoryview:
        copied = memoryview(data.tobytes())
        with contextlib.suppress(TypeError, ValueError):  # as it was shaped, when it can be
            copied = copied.cast(data.format, data.shape)
        return copied
    try:
        return copy.deepcopy(data)
    except Exception:  # noqa: BLE001 - whatever deepcopy refuses (a memoryview in a subclass)
        return _as_stored(data)


def _as_stored(data: Any) -> Any:
    """Return a copy as the codec stores it (a subclass as its base type): the last resort.

    The copy then compares as a change of type: at worst one save more, never a failed request.
    """
    if isinstance(data, dict):
        return {k: snapshot(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [snapshot(v) for v in data]
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    msg = f"cannot copy {type(data).__qualname__} session data"
    raise TypeError(msg)


def changed_keys(base: Mapping[str, Any], ours: Mapping[str, Any]) -> set[str]:
    """Return the keys whose value differs between ``base`` and ``ours`` (set or deleted)."""
    return {
        k
        for k in base.keys() | ours.keys()
        if not same(base.get(k, _MISSING), ours.get(k, _MISSING))
    }


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
        if not same(other, base.get(key, _MISSING)) and not same(other, mine):
            clashes.append(key)
        elif mine is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = mine
    if clashes:
        raise MergeConflict(sorted(clashes))
    return merged
