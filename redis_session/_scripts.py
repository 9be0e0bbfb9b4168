"""Lua scripts sent by SHA, with their source kept for the NOSCRIPT fallback."""

from __future__ import annotations

import hashlib

import attrs

__all__ = ["Script"]


@attrs.frozen
class Script:
    """A Lua script: its source and the SHA1 that ``EVALSHA`` names it by."""

    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
