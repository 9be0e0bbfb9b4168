"""One backoff: a pause that doubles after each failure, from a minimum up to a maximum.

``Backoff(low, high)`` starts at rest (``delay == 0.0``, false in a boolean test). Each
:meth:`~Backoff.failed` doubles the delay (the first one gives ``low``) up to ``high`` and
returns it; :meth:`~Backoff.reset` brings it back to rest after a success. The sequence is
``low, 2*low, 4*low, ... high, high``: what the Sentinel watchers, the sentinel links, the pool's
connect backoff and the manager's refused-connection backoff each wrote by hand.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """A doubling delay between ``low`` and ``high`` seconds; at rest (0.0) until a failure."""

    __slots__ = ("_delay", "high", "low")

    def __init__(self, low: float, high: float) -> None:
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got low={low!r}, high={high!r}")
        self.low = low
        self.high = high
        self._delay = 0.0

    @property
    def delay(self) -> float:
        """The pause after the latest failure; 0.0 at rest."""
        return self._delay

    def failed(self) -> float:
        """Record a failure: double the delay (at rest: ``low``), at most ``high``; return it."""
        self._delay = min(self.high, max(self.low, 2 * self._delay))
        return self._delay

    def reset(self) -> None:
        """Back to rest after a success: the next failure waits ``low`` again."""
        self._delay = 0.0

    def __bool__(self) -> bool:
        """Whether a failure since the last reset is being backed off."""
        return self._delay > 0.0

    def __repr__(self) -> str:
        return f"<Backoff {self._delay:g}s of {self.low:g}..{self.high:g}s>"
