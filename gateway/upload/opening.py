"""What ends an upload's wait for its body's opening before its session exists: the start timeout, a drain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.errors import ErrorCode, GatewayError, LimitReached
from gateway.relay.registry import shutting_down
from gateway.relay.session import Session


@contextlib.asynccontextmanager
async def start_bound(deadline: float, start_timeout_s: float, late: str) -> AsyncIterator[None]:
    """The block ends with 408 ``start_timeout`` (``late`` within ``start_timeout_s``) at ``deadline``."""
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError:
        raise LimitReached(f"{late} within {start_timeout_s:g} s", code=ErrorCode.START_TIMEOUT) from None


class Opening:
    """An upload's :class:`~gateway.relay.registry.Drainable` from the moment it holds its slot until its
    session has started (then the session is the lease's drainable, and is told of a drain under way).

    Before the session exists a drain's ``go_away`` ends the wait in :meth:`until_sent_away` with the very
    refusal a new upload gets while draining (503 ``going_away``, ``Retry-After``); while it starts, the
    session is ended (a notice waits for ``started``: the pipeline tells it then)."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.sent_away = False
        self._waiting: asyncio.Task[object] | None = None  # the task in until_sent_away
        self._cancelling = 0  # its cancel requests before ours

    def notify(self, error: GatewayError) -> None:
        # An upload still reading its opening keeps waiting: it was accepted before the drain, so, like a
        # WebSocket connection that starts its session during one, it is served for what is left of the
        # budget (told once started) and sent away with the rest when the budget ends. Refusing it now
        # would throw away a body already on its way that may well finish in time; refused or sent away,
        # the client resends it elsewhere.
        return

    def go_away(self) -> None:
        if self.session is not None:
            self.session.go_away()
        elif not self.sent_away:
            self.sent_away = True
            if self._waiting is not None:
                self._waiting.cancel()

    @contextlib.asynccontextmanager
    async def until_sent_away(self) -> AsyncIterator[None]:
        """The block ends with the drain's GoingAway if the upload is sent away while in it."""
        task = asyncio.current_task()
        assert task is not None
        if self.sent_away:
            raise shutting_down()
        self._waiting, self._cancelling = task, task.cancelling()
        try:
            yield
        except asyncio.CancelledError:
            if self.sent_away and task.uncancel() <= self._cancelling:  # ours, not the server's
                raise shutting_down() from None
            raise
        finally:
            self._waiting = None

    def attach(self, session: Session) -> None:
        """The session exists (not started yet): a drain's go_away ends it from now."""
        if self.sent_away:
            raise shutting_down()
        self.session = session
