"""Wards (which beds belong where) and the API's bearer tokens, each scoped to wards.

``WARDSTREAM_WARDS="icu:1-24,cardio:25-200"`` names bed ranges; a bed in no range belongs to
``ward-N``, N counting blocks of 200 beds (beds 1–200: ``ward-1``). ``WARDSTREAM_API_TOKENS``
(environment only, never the repo) lists ``TOKEN=wardA|wardB`` pairs separated by ``;``; ``*``
grants every ward. Tokens are kept as SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

DEFAULT_WARD_SIZE = 200
_RANGE = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*:\s*(\d+)\s*-\s*(\d+)\s*$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class WardMap:
    ranges: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> "WardMap":
        out = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            m = _RANGE.match(part)
            if not m or int(m.group(2)) > int(m.group(3)):
                raise ConfigError(f"WARDSTREAM_WARDS: {part!r} is not 'name:first-last'")
            out.append((m.group(1), int(m.group(2)), int(m.group(3))))
        return cls(tuple(out))

    def ward_of(self, bed: int) -> str:
        for name, lo, hi in self.ranges:
            if lo <= bed <= hi:
                return name
        return f"ward-{(bed - 1) // DEFAULT_WARD_SIZE + 1}"


@dataclass(frozen=True)
class Principal:
    """Who a token is: its wards (``None``: every ward) and a short name for audit records."""

    name: str
    wards: frozenset[str] | None

    def may_see(self, ward: str) -> bool:
        return self.wards is None or ward in self.wards


class Tokens:
    def __init__(self, spec: str):
        self._by_digest: dict[bytes, Principal] = {}
        for i, part in enumerate(filter(None, (p.strip() for p in spec.split(";")))):
            token, sep, wards = part.partition("=")
            if not sep or len(token.strip()) < 16 or not wards.strip():
                raise ConfigError(f"WARDSTREAM_API_TOKENS entry {i + 1}: expected TOKEN=ward|ward (token ≥ 16 chars)")
            ws = None if wards.strip() == "*" else frozenset(w.strip() for w in wards.split("|") if w.strip())
            digest = hashlib.sha256(token.strip().encode()).digest()
            self._by_digest[digest] = Principal(f"token-{digest[:4].hex()}", ws)

    def __len__(self) -> int:
        return len(self._by_digest)

    def principal(self, authorization: str | None) -> Principal | None:
        """The principal of an ``Authorization: Bearer ...`` header, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        for d, p in self._by_digest.items():
            if hmac.compare_digest(d, digest):
                return p
        return None
