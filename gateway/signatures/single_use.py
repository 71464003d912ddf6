"""The memory of single-use browser tokens (by their ``jti``): in use while a session starts, spent once it has.

A use is *reserved* when a session is admitted, so two concurrent uses cannot both pass; it is *committed*
once Data Flow accepted the session (its StartResponse), and *released* when the start failed, so the
token can be tried again until it expires. Every entry is kept only until its token could no longer
verify (by both clocks: :mod:`gateway.signatures.expiries`); when the memory is full, new single-use
tokens are refused (never is a live entry forgotten).
"""

from __future__ import annotations

from typing import Literal

from gateway.signatures.expiries import Expiries

_State = Literal["reserved", "spent", "free"]


class SingleUseTokens:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, _State]] = {}  # jti -> (until, state)
        self._expiries = Expiries()  # one entry per jti

    def __len__(self) -> int:
        return len(self._entries)

    def state(self, jti: str) -> _State | None:
        entry = self._entries.get(jti)
        return entry[1] if entry is not None else None

    def _forget_expired(self, now: float, mono: float | None) -> None:
        for jti, until in self._expiries.due(now, mono):
            if (entry := self._entries.get(jti)) is not None and entry[0] == until:
                del self._entries[jti]

    def full(self, now: float, mono: float | None = None) -> bool:
        self._forget_expired(now, mono)
        return len(self._entries) >= self.max_entries

    def reserve(self, jti: str, until: float, now: float, mono: float | None = None) -> bool:
        """Reserve a use of ``jti`` until ``until`` (epoch seconds; ``now`` the wall clock, ``mono`` the
        monotonic one, read when None); False: in use or spent already."""
        self._forget_expired(now, mono)
        entry = self._entries.get(jti)
        if entry is not None and entry[1] != "free":
            return False
        if entry is None:  # a released entry keeps its place in the heap: retries add nothing to it
            self._expiries.add(jti, until, now, mono)
        self._entries[jti] = (entry[0] if entry is not None else until, "reserved")
        return True

    def settle(self, jti: str, *, spent: bool) -> None:
        """A reserved use ends: its session started (``spent``), or its start failed (free again)."""
        entry = self._entries.get(jti)
        if entry is not None and entry[1] == "reserved":
            self._entries[jti] = (entry[0], "spent" if spent else "free")


class TokenHold:
    """One reserved use of a single-use token: :meth:`commit` once the session started, :meth:`release`
    when it did not (leaving a ``with hold:`` block uncommitted releases it). The first call decides, the
    rest do nothing; a hold neither committed nor released keeps the token reserved (refused as reused)
    until it expires."""

    __slots__ = ("_jti", "_memory")

    def __init__(self, memory: SingleUseTokens | None = None, jti: str | None = None) -> None:
        self._memory, self._jti = memory, jti

    def __enter__(self) -> TokenHold:
        return self

    def __exit__(self, *exc_info: object) -> None:  # leaving without a commit (a failed start, a cancellation)
        self.release()

    def commit(self) -> None:
        self._settle(spent=True)

    def release(self) -> None:
        self._settle(spent=False)

    def _settle(self, *, spent: bool) -> None:
        memory, jti, self._memory = self._memory, self._jti, None
        if memory is not None and jti is not None:
            memory.settle(jti, spent=spent)


#: The hold of a credential that is not single-use: nothing to commit or release.
NO_HOLD = TokenHold()
