"""Delivers signed webhooks at least once: each POST is retried with exponential back-off (and
jitter) on a network error, a timeout, a 5xx, 408, 425 or 429, until it is accepted (2xx) or its
attempts or its time run out; every attempt carries the same ``webhook-id`` (receivers deduplicate by it) and a
fresh timestamp and signature. At most ``concurrency`` POSTs are in flight at once (waiting out a
back-off holds no place). Each attempt is bounded as a whole (``timeout_s``: connect, send, answer) and
reads at most a few KiB of the answer: only its status matters. No attempt starts later than ``window_s``
after the webhook was queued, whether it waited for a place or for a retry. At most ``max_pending``
webhooks of ``max_pending_bytes`` in all wait per process; past either, new ones are dropped. Outcomes
are counted: delivered, retried (each new attempt), dropped; drops are logged a burst at a time
(:class:`gateway.logs.bursts.BurstLog`): a receiver that is down makes every webhook fail, up to ~17 a second.

The HTTP client follows the process's proxy environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
``NO_PROXY``): receivers are often reached through an egress proxy. Which proxy is used is logged once,
its password masked.

With more than one receiver configured, one receiver holds at most half of the places in flight and
half of the pending room (count and bytes), and each receiver keeps a reserve of each that the others
cannot take (:mod:`gateway.webhooks.shares`): receivers that hang or are down, however many, cannot
starve the others' results (20 webhooks a second to a hung receiver had every healthy one's dropped
within a minute; two hung receivers of three took every place in flight, and a healthy one's webhooks
waited for their attempts to time out).

A drain waits for what is still pending, within its budget; close cancels the rest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from gateway.logs.bursts import WINDOW_S, BurstLog
from gateway.logs.filters import outbound_origins_only
from gateway.logs.redact import proxy_environment
from gateway.observability import PREFIX
from gateway.webhooks.shares import Room
from gateway.webhooks.targets import WebhookTarget

log = logging.getLogger(__name__)

OUTCOMES = ("delivered", "retried", "dropped")
_RETRYABLE_STATUS = frozenset({408, 425, 429})
MAX_PENDING = 1000  # webhooks queued or in flight per process: a receiver that is down cannot grow memory
MAX_PENDING_BYTES = 16 << 20  # their bodies together
_ANSWER_READ = 4096  # bytes of an answer read at most: only the status matters
#: Why a webhook was dropped, as the drop lines say it (by what its last attempt met).
_REASONS = {
    "late": "no delivery place free within the retry window",
    "unreachable": "receiver unreachable or too slow",
    "failed": "receiver answered an error (5xx, 408, 425, 429)",
    "refused": "receiver refused it (3xx, 4xx)",
}
_FULL = "pending limit reached"
_SHARE_FULL = "one receiver's share of the pending limit reached"
_DROPS_MORE = "%(count)d more webhooks dropped in the last %(seconds).1f s (%(reasons)s); the metric counts each"
_FAILURES_MORE = "%(count)d more webhook attempts failed in the last %(seconds).1f s (%(reasons)s)"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    window_s: float = 60.0  # no attempt starts later than this after the webhook was queued
    timeout_s: float = 5.0  # one attempt: connect, send, answer
    backoff_s: float = 0.5  # the first wait; doubles each time, with jitter

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based): an exponential step, less up to half of it
        at random (callers failing together do not retry together)."""
        step: float = self.backoff_s * 2 ** (attempt - 1)
        return step * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto


class WebhookDeliverer:
    def __init__(
        self, policy: RetryPolicy, concurrency: int, registry: CollectorRegistry, *,
        max_pending: int = MAX_PENDING, max_pending_bytes: int = MAX_PENDING_BYTES, drop_window_s: float = WINDOW_S,
        receivers: int = 1,
    ) -> None:  # fmt: skip
        self.policy = policy
        # What the receivers (by URL) share: places in flight, pending webhooks, their bytes (shares.py).
        self._places = Room(concurrency, receivers)
        self._count, self._bytes = Room(max_pending, receivers), Room(max_pending_bytes, receivers)
        self._place_waiters: dict[asyncio.Future[None], None] = {}  # attempts waiting for a place, oldest first
        self._pending: set[asyncio.Task[None]] = set()
        # Lines name the gateway's own webhook ids and fixed reasons, never a URL or anything a client sent.
        self._drops = BurstLog(log, _DROPS_MORE, drop_window_s)
        # Failed attempts: a receiver answering 500 fails every attempt of every webhook (each DEBUG too).
        self._failures = BurstLog(log, _FAILURES_MORE, drop_window_s, level=logging.INFO)
        self._client: httpx.AsyncClient | None = None
        self._unusable_proxy_told = False
        self.outcomes = Counter(
            f"{PREFIX}_webhook_deliveries", "Result webhooks by outcome (retried: each new attempt)", ["outcome"],
            registry=registry,
        )  # fmt: skip
        for outcome in OUTCOMES:
            self.outcomes.labels(outcome=outcome)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, target: WebhookTarget, payload: dict[str, Any]) -> str:
        """Queue one webhook; returns its id. The body is serialised once: every attempt sends the same bytes.
        Past the per-process cap (count or bytes) it is dropped and counted, not queued."""
        msg_id = f"msg_{uuid.uuid4().hex}"
        # A lone surrogate (JSON's "\ud800", from a client or Data Flow) has no UTF-8: replaced, not raised.
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(errors="replace")
        size, url = len(body), target.url
        count, held = self._count, self._bytes
        if count.used + 1 > count.whole or held.used + size > held.whole:
            self.outcomes.labels(outcome="dropped").inc()
            self._drops.warn("webhook queue full (%d pending, %d bytes): new webhooks are dropped until "
                             "it drains", count.used, held.used, reason=_FULL)  # fmt: skip
            return msg_id
        if not (count.fits(url, 1) and held.fits(url, size)):
            self.outcomes.labels(outcome="dropped").inc()
            self._drops.warn("a receiver holds its share of the webhook queue (%d pending, %d bytes): its new "
                             "webhooks are dropped until it drains", count.held(url), held.held(url),
                             reason=_SHARE_FULL)  # fmt: skip
            return msg_id
        task = asyncio.get_running_loop().create_task(self._deliver(target, msg_id, body), name=f"webhook-{msg_id}")
        self._pending.add(task)
        count.take(url, 1)
        held.take(url, size)

        def done(finished: asyncio.Task[None]) -> None:
            self._pending.discard(finished)
            count.give(url, 1)
            held.give(url, size)

        task.add_done_callback(done)
        return msg_id

    async def _deliver(self, target: WebhookTarget, msg_id: str, body: bytes) -> None:
        policy = self.policy
        deadline = time.monotonic() + policy.window_s  # from queueing: waiting for a place counts too
        for attempt in range(1, policy.attempts + 1):
            problem = await self._attempt(target, msg_id, body, deadline, attempt)
            if problem is None:
                self.outcomes.labels(outcome="delivered").inc()
                return
            if problem in ("refused", "late"):
                break
            wait = policy.backoff(attempt)
            if attempt == policy.attempts or time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        self.outcomes.labels(outcome="dropped").inc()
        reason = _REASONS[problem or "failed"]
        made = attempt - 1 if problem == "late" else attempt  # a late one never started
        self._drops.warn("webhook %s dropped after %d attempts: %s", msg_id, made, reason, reason=reason)

    async def _attempt(
        self, target: WebhookTarget, msg_id: str, body: bytes, deadline: float, attempt: int
    ) -> str | None:
        """One POST: None when accepted, else what went wrong ("refused" is not worth retrying, "late": no
        place was free before the deadline, so the attempt never started)."""
        url = target.url
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                while not self._places.fits(url, 1):  # woken, oldest first, whenever a place is given back
                    freed = asyncio.get_running_loop().create_future()
                    self._place_waiters[freed] = None
                    try:
                        await freed
                    finally:
                        self._place_waiters.pop(freed, None)
        except TimeoutError:
            return "late"
        self._places.take(url, 1)
        if attempt > 1:
            self.outcomes.labels(outcome="retried").inc()  # counted once it really starts
        try:
            status = await self._post(target, msg_id, body)
        except (httpx.HTTPError, TimeoutError) as exc:  # timeouts, refused connections, broken transfers
            self._failed(msg_id, attempt, f"unreachable ({type(exc).__name__})")
            return "unreachable"
        finally:
            self._places.give(url, 1)
            for waiter in self._place_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._place_waiters.clear()
        if 200 <= status < 300:
            return None
        self._failed(msg_id, attempt, f"answered {status}")
        if status >= 500 or status in _RETRYABLE_STATUS:
            return "failed"
        return "refused"  # 3xx/4xx: the same request will not fare better

    def _failed(self, msg_id: str, attempt: int, outcome: str) -> None:
        """A failed attempt: a DEBUG line each, an INFO line a burst at a time (by outcome: an exception's type or
        the receiver's status, never its URL), as one per attempt was a flood (5 per webhook)."""
        log.debug("webhook %s: attempt %d failed: %s", msg_id, attempt, outcome)
        self._failures.warn("webhook %s: attempt %d failed: %s", msg_id, attempt, outcome, reason=outcome)

    async def _post(self, target: WebhookTarget, msg_id: str, body: bytes) -> int:
        """The answer's status. httpx bounds each step, not the whole: a receiver trickling its answer would
        hold the place for ever, so the attempt as a whole is bounded, and only a few KiB of it are read."""
        headers = {"content-type": "application/json", **target.signer.headers(msg_id, body.decode())}
        async with asyncio.timeout(self.policy.timeout_s):
            async with self._http().stream("POST", target.url, content=body, headers=headers) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= _ANSWER_READ:
                        break  # leaving unread: the connection is closed, not reused
                return response.status_code

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # trust_env: the proxy environment applies (and SSL_CERT_FILE / SSL_CERT_DIR), on purpose: a
            # gateway in a closed network reaches its receivers through an egress proxy. httpx's default,
            # said here so that it is a decision, not an accident; the operator sees it in the log.
            outbound_origins_only()  # a receiver's URL may hold its credential: httpx's line keeps the origin
            try:
                self._client = httpx.AsyncClient(timeout=self.policy.timeout_s, follow_redirects=False, trust_env=True)
            except (ImportError, ValueError) as exc:  # a socks5:// proxy without socksio, an unknown scheme
                if not self._unusable_proxy_told:
                    self._unusable_proxy_told = True
                    log.error("webhooks cannot be sent: the proxy environment is not usable (%s): %s",
                              type(exc).__name__, proxy_environment())  # fmt: skip
                raise httpx.ProxyError("the proxy environment is not usable") from None  # an attempt that failed
            if proxies := proxy_environment():
                log.info("webhooks follow the proxy environment: %s", proxies)
        return self._client

    async def drain(self, budget_s: float) -> int:
        """Wait up to ``budget_s`` for pending deliveries; returns how many are still pending."""
        if self._pending and budget_s > 0:
            await asyncio.wait(set(self._pending), timeout=budget_s)
        return len(self._pending)

    async def aclose(self) -> None:
        """Cancel what is still pending (counted as dropped) and close the HTTP client."""
        tasks = set(self._pending)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._drops.close()  # what the open window counted, before the shutdown's own line
        self._failures.close()
        if tasks:
            self.outcomes.labels(outcome="dropped").inc(len(tasks))
            log.warning("%d webhooks were still pending at shutdown and are dropped", len(tasks))
        if self._client is not None:
            await self._client.aclose()
            self._client = None
