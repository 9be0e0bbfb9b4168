"""The session payload: msgpack, with attrs classes going through a private cattrs converter.

A payload is the msgpack array ``[created_at_ms, remember_me, data]``. It is only ever read
after AES-GCM authenticated it, so the decoder sees nothing an attacker wrote; still, decoding
never raises, because a payload written by a newer or older version of the app (another
``data_type``) must read as "no session", not as an error page.

What ``data`` may hold:

* ``data_type=dict``: a ``dict`` of msgpack types: ``str``, ``int`` (64-bit), ``float``,
  ``bool``, ``None``, ``bytes``, ``list``, ``dict``, and timezone-aware ``datetime`` (stored as a
  msgpack Timestamp; read back as the same instant in UTC). Tuples are stored as lists and read
  back as lists, except as map keys, where they come back as tuples. Subclasses of these types
  (``IntEnum``, ``StrEnum``, ``OrderedDict``…) are stored as their base type. Map keys may be
  ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes`` or tuples of these. Anything
  else (sets, naive datetimes, arbitrary objects) raises :class:`SessionDataError` when saved,
  naming the type.
* an attrs class: unstructured and structured by a private cattrs converter (the msgpack
  preset, except that datetimes keep full precision as msgpack Timestamps). A payload that
  does not structure into the class (the class changed since it was written) reads as
  ``None``.

Never pickle: a payload is data, never code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import attrs
import cattrs
import msgpack
import msgspec
from cattrs.preconf.msgpack import make_converter

from ._errors import SessionDataError

__all__ = ["Codec"]

T = TypeVar("T")


def _structure_datetime(value: Any, _: type) -> dt.datetime:
    # Payloads read with timestamp=3 already hold aware datetimes; numbers come from
    # converters that stored a float timestamp (the cattrs msgpack preset).
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    msg = f"expected a timestamp, got {type(value).__name__}"
    raise TypeError(msg)


def _make_payload_converter() -> cattrs.Converter:
    converter = make_converter()
    # The preset turns datetimes into float timestamps, which loses microseconds; msgpack's
    # Timestamp extension is exact, so hand aware datetimes to msgpack unchanged.
    converter.register_unstructure_hook(dt.datetime, lambda value: value)
    converter.register_structure_hook(dt.datetime, _structure_datetime)
    return converter


_CONVERTER = _make_payload_converter()


# strict_types makes msgpack hand every subclass (and every tuple) to _default instead of
# guessing, so an IntEnum is stored as its value and a tuple as a list, explicitly. bool comes
# before int because it is one.
_COERCIONS: tuple[tuple[type | tuple[type, ...], Callable[[Any], object]], ...] = (
    ((tuple, list), list),
    (dict, dict),
    (bool, bool),
    (str, str.__str__),
    (int, int),
    (float, float),
    ((bytes, bytearray, memoryview), bytes),
)


def _default(obj: object) -> object:
    """Turn what msgpack's strict mode refuses into a msgpack type, or name the problem."""
    for types, coerce in _COERCIONS:
        if isinstance(obj, types):
            return coerce(obj)
    if isinstance(obj, dt.datetime):
        if obj.utcoffset() is None:
            msg = "cannot store a naive datetime in session data; attach a timezone"
            raise SessionDataError(msg)
        return msgpack.Timestamp.from_datetime(obj)
    msg = f"cannot store {type(obj).__module__}.{type(obj).__qualname__} in session data"
    raise SessionDataError(msg)


def _ext_type(code: int, data: memoryview) -> msgpack.ExtType:
    return msgpack.ExtType(code, bytes(data))


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if type(key) is list else key


def _tuple_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_hashable(key): value for key, value in pairs}


def _unpack_deep(payload: bytes) -> Any:
    """Decode with msgpack, whose nesting bound is a fixed stack (see :meth:`Codec.decode`)."""
    try:
        return msgpack.unpackb(payload, timestamp=3, strict_map_key=False)
    except TypeError:
        # A tuple map key was stored as an array, which reads back as an unhashable list.
        return msgpack.unpackb(
            payload, timestamp=3, strict_map_key=False, object_pairs_hook=_tuple_keys
        )


class Codec(Generic[T]):
    """Encodes session payloads of one ``data_type`` to bytes and back.

    Not thread-safe (it reuses one msgpack packer); a store and its codec belong to one event
    loop.
    """

    __slots__ = ("_data_type", "_decoder", "_packer", "_structure", "_unstructure")

    def __init__(self, data_type: type[T]) -> None:
        self._data_type = data_type
        self._packer = msgpack.Packer(
            use_bin_type=True, datetime=True, strict_types=True, default=_default
        )
        # Decoding with msgspec: the same msgpack, read in about 40% of msgpack's time (the
        # largest single cost of a load after the round trip). It reads array map keys as
        # tuples, and Timestamps as aware UTC datetimes, as decode() promises. The payloads
        # are ours (authenticated), written by the packer above: no other extension types, and
        # whole microseconds (msgpack truncates other nanoseconds, msgspec rounds them).
        # Any other extension value was stored from a msgpack ExtType (the packer takes those
        # as is): read it back as one, not as msgspec's Ext, which the packer refuses.
        self._decoder = msgspec.msgpack.Decoder(ext_hook=_ext_type)
        self._unstructure: Callable[[Any], Any] | None
        self._structure: Callable[[Any, Any], T] | None
        if data_type is dict:
            # Plain data needs no converter pass: msgpack walks it in C.
            self._unstructure = self._structure = None
        elif attrs.has(data_type):
            # Hooks looked up once: converter.unstructure() would dispatch on every call.
            self._unstructure = _CONVERTER.get_unstructure_hook(data_type)
            self._structure = _CONVERTER.get_structure_hook(data_type)
        else:
            msg = f"data_type must be dict or an attrs class, got {data_type!r}"
            raise TypeError(msg)

    @property
    def data_type(self) -> type[T]:
        """The type that :meth:`decode` returns data as."""
        return self._data_type

    def encode(self, created_at_ms: int, remember_me: bool, data: T) -> bytes:
        """Serialize one payload; raise :class:`SessionDataError` for data msgpack cannot take."""
        if not isinstance(data, self._data_type):
            msg = (
                f"session data must be a {self._data_type.__qualname__}, "
                f"got {type(data).__qualname__}"
            )
            raise SessionDataError(msg)
        try:
            raw: Any = data if self._unstructure is None else self._unstructure(data)
            packed: bytes = self._packer.pack([created_at_ms, remember_me, raw])
        except SessionDataError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the converter or packer refuses
            # OverflowError: ints beyond 64 bits; ValueError: nesting deeper than msgpack allows.
            # msgpack's and cattrs's messages name types and limits, not values.
            msg = f"cannot serialize session data: {type(exc).__name__}: {exc}"
            raise SessionDataError(msg) from None
        return packed

    def decode(self, payload: bytes) -> tuple[int, bool, T] | None:
        """Return ``(created_at_ms, remember_me, data)``, or ``None`` for any unusable payload."""
        try:
            try:
                obj = self._decoder.decode(payload)
            except RecursionError:
                # msgspec bounds nesting by what is left of the interpreter's recursion limit,
                # so deep data (which the packer took) could read as "no session" from a deep
                # call stack; msgpack's bound does not depend on the caller. Rare: deep data.
                obj = _unpack_deep(payload)
            created, remember_me, raw = obj
            if type(obj) is not list or type(created) is not int or type(remember_me) is not bool:
                return None
            if self._structure is not None:
                return created, remember_me, self._structure(raw, self._data_type)
        except Exception:  # noqa: BLE001 - malformed, or a class that changed shape: no session
            return None
        if type(raw) is not dict:
            return None
        return created, remember_me, cast(T, raw)
