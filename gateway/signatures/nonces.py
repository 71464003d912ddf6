"""A bounded memory of nonces already used, each kept until its signature could no longer verify."""

from __future__ import annotations

import heapq
import time


class NonceMemory:
    """Nonces seen, forgotten once their signature has expired. Only nonces of signatures that verified
    are kept, so only holders of a client secret can fill it; when full, new ones are refused (never is
    an unexpired nonce forgotten: that would allow its replay)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._until: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []  # heap by expiry

    def __len__(self) -> int:
        return len(self._until)

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            until, nonce = heapq.heappop(self._expiries)
            if self._until.get(nonce) == until:
                del self._until[nonce]

    def full(self, now: float | None = None) -> bool:
        self._forget_expired(time.time() if now is None else now)
        return len(self._until) >= self.max_entries

    def add(self, nonce: str, until: float, now: float | None = None) -> bool:
        """Remember ``nonce`` until ``until`` (epoch seconds); False when it was already seen."""
        self._forget_expired(time.time() if now is None else now)
        if nonce in self._until:
            return False
        self._until[nonce] = until
        heapq.heappush(self._expiries, (until, nonce))
        return True
