"""How the webhook receivers share what the deliverer holds: places in flight, pending webhooks, and
their bytes, each a :class:`Room` of receivers by URL (the operator's configuration: a bounded set).

Alone, a receiver may use a room whole. With several receivers known (configured, or seen), no
receiver holds more than half of a room, and each keeps a reserve (``whole // (2 * receivers)``, at
least 1) that the others may not take while it holds less: however many receivers hang, each other
one still finds room, and its webhooks never wait for a hung receiver's attempts to time out. The
reserves need ``whole`` ≥ the number of receivers (``GATEWAY_WEBHOOK_CONCURRENCY``, 32 by default,
for the places): with fewer places than receivers each holds at most one, and one may wait for a place.
"""

from __future__ import annotations


class Room:
    """``whole`` units (places, webhooks or bytes) shared by receivers; not thread-safe (one event loop)."""

    def __init__(self, whole: int, receivers: int) -> None:
        self.whole = whole
        self.used = 0
        self._configured = receivers
        self._held: dict[str, int] = {}
        self._reserve = 0
        self._short = 0  # what the known receivers together lack of their reserves
        self._update()

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def fits(self, key: str, amount: int) -> bool:
        """May receiver ``key`` take ``amount`` more now?"""
        if key not in self._held:
            self._held[key] = 0
            self._update()
        if self.used + amount > self.whole:
            return False
        if self._known() <= 1:
            return True
        held = self._held[key]
        own_short = max(0, self._reserve - held)
        if amount <= own_short:
            return True  # within its own reserve
        if held + amount > max(1, self.whole // 2):
            return False
        return self.whole - self.used - amount >= self._short - own_short  # the others' reserves stay free

    def take(self, key: str, amount: int) -> None:
        self._change(key, amount)

    def give(self, key: str, amount: int) -> None:
        self._change(key, -amount)

    def _change(self, key: str, amount: int) -> None:
        held = self._held.get(key, 0)
        self._short -= max(0, self._reserve - held) - max(0, self._reserve - held - amount)
        self._held[key] = held + amount
        self.used += amount

    def _known(self) -> int:
        return max(self._configured, len(self._held))

    def _update(self) -> None:
        """A receiver more is known: the reserves are shared anew."""
        known = self._known()
        self._reserve = max(1, self.whole // (2 * max(1, known)))  # none configured: webhooks go nowhere
        unseen = known - len(self._held)  # configured receivers with nothing sent yet hold nothing
        self._short = unseen * self._reserve + sum(max(0, self._reserve - h) for h in self._held.values())
