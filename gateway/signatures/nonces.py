"""A bounded memory of nonces already used, each kept until its signature could no longer verify (by both
clocks: :mod:`gateway.signatures.expiries`)."""

from __future__ import annotations

import time

from gateway.signatures.expiries import Expiries


class NonceMemory:
    """Nonces seen, forgotten once their signature has expired. Only nonces of signatures that verified
    are kept, so only holders of a client secret can fill it; when full, new ones are refused (never is
    an unexpired nonce forgotten: that would allow its replay)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._until: dict[str, float] = {}
        self._expiries = Expiries()

    def __len__(self) -> int:
        return len(self._until)

    def _forget_expired(self, now: float, mono: float | None) -> None:
        for nonce, until in self._expiries.due(now, mono):
            if self._until.get(nonce) == until:
                del self._until[nonce]

    def full(self, now: float | None = None, mono: float | None = None) -> bool:
        self._forget_expired(time.time() if now is None else now, mono)
        return len(self._until) >= self.max_entries

    def add(self, nonce: str, until: float, now: float | None = None, mono: float | None = None) -> bool:
        """Remember ``nonce`` until ``until`` (epoch seconds; ``now`` the wall clock, ``mono`` the monotonic
        one, each read when None); False when it was already seen."""
        now = time.time() if now is None else now
        self._forget_expired(now, mono)
        if nonce in self._until:
            return False
        self._until[nonce] = until
        self._expiries.add(nonce, until, now, mono)
        return True
