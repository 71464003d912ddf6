"""Access lines of refused requests, bounded per client address.

Every request refused before it started a session (401, 403, 404, 429, a refused handshake) had its
access line: a client with no credential wrote the log at its own rate, 3 800 lines a second from
under 1 Mbit/s of requests (67 GB a day at one replica), and the auth throttle's 429s were written one
by one too. Now each address (an IPv6 one by its /64) has its first :data:`LINES_PER_WINDOW` such
lines in a window of :data:`WINDOW_S` written whole; past them its refusals are counted, by status, and
told in one line per window (gateway.logs.bursts), the first of them saying that counting began.
Requests that were answered, and every session's lines, are written as before; the refusals' metric
(``dataflow_gateway_requests_refused_total``) counts each one.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from gateway.logs.bursts import BurstLog
from gateway.logs.client_addresses import address_group

LINES_PER_WINDOW = 10
WINDOW_S = 10.0
#: Addresses counted in a window; past them, further addresses share one count of LINES_PER_WINDOW (an
#: IPv4 botnet would otherwise grow the map a key per address, and write a line per address).
MOST_ADDRESSES = 4096
_OTHERS = f"any address past the first {MOST_ADDRESSES} of the window"
#: Its own logger: every line of ``gateway.access`` is one request's, with its fields.
log = logging.getLogger("gateway.access.refused")
_MORE = "%(count)d more refused requests not written in the last %(seconds).1f s (status %(reasons)s)"


class RefusedLines:
    """One per server (the access log middleware's)."""

    def __init__(self) -> None:
        self._written: Counter[str] = Counter()  # lines written per address in the current window
        self._since = float("-inf")
        self._held = BurstLog(log, _MORE, WINDOW_S, level=logging.INFO)

    def admit(self, client: object, status: int) -> bool:
        """Whether the access line of a refused request from ``client`` (an ASGI ``(host, port)``) is written."""
        now = time.monotonic()
        if now - self._since >= WINDOW_S:
            self._written.clear()
            self._since = now
        address = address_group(str(client[0])) if isinstance(client, tuple | list) and client else "unknown"
        if address not in self._written and len(self._written) >= MOST_ADDRESSES:
            address = _OTHERS
        self._written[address] += 1
        if self._written[address] <= LINES_PER_WINDOW:
            return True
        self._held.warn(
            "Access lines of refused requests past %d from one address in %g s are counted, not written (from %s)",
            LINES_PER_WINDOW,
            WINDOW_S,
            address,
            reason=str(status),
        )
        return False

    def close(self) -> None:
        self._held.close()
