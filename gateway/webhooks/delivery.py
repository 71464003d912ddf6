"""Delivers signed webhooks at least once: each POST is retried with exponential back-off (and
jitter) on a network error, a timeout, a 5xx, 408 or 429, until it is accepted (2xx) or its attempts
or its time run out; every attempt carries the same ``webhook-id`` (receivers deduplicate by it) and a
fresh timestamp and signature. At most ``concurrency`` POSTs are in flight at once (waiting out a
back-off holds no place). Outcomes are counted: delivered, retried (each new attempt), dropped.

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

from gateway.observability import PREFIX
from gateway.webhooks.targets import WebhookTarget

log = logging.getLogger(__name__)

OUTCOMES = ("delivered", "retried", "dropped")
_RETRYABLE_STATUS = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    window_s: float = 60.0  # no attempt starts later than this after the first
    timeout_s: float = 5.0  # one attempt: connect, send, answer
    backoff_s: float = 0.5  # the first wait; doubles each time, with jitter

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based): an exponential step, less up to half of it
        at random (callers failing together do not retry together)."""
        step: float = self.backoff_s * 2 ** (attempt - 1)
        return step * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto


class WebhookDeliverer:
    def __init__(self, policy: RetryPolicy, concurrency: int, registry: CollectorRegistry) -> None:
        self.policy = policy
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
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
        """Queue one webhook; returns its id. The body is serialised once: every attempt sends the same bytes."""
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        task = asyncio.get_running_loop().create_task(self._deliver(target, msg_id, body), name=f"webhook-{msg_id}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return msg_id

    async def _deliver(self, target: WebhookTarget, msg_id: str, body: str) -> None:
        policy = self.policy
        deadline = time.monotonic() + policy.window_s
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1:
                self.outcomes.labels(outcome="retried").inc()
            problem = await self._attempt(target, msg_id, body)
            if problem is None:
                self.outcomes.labels(outcome="delivered").inc()
                return
            if problem == "refused":
                break
            wait = policy.backoff(attempt)
            if attempt == policy.attempts or time.monotonic() + wait > deadline:
                break
            await asyncio.sleep(wait)
        self.outcomes.labels(outcome="dropped").inc()
        log.warning("webhook %s dropped after %d attempts", msg_id, attempt)

    async def _attempt(self, target: WebhookTarget, msg_id: str, body: str) -> str | None:
        """One POST: None when accepted, else what went wrong ("refused" is not worth retrying)."""
        headers = {"content-type": "application/json", **target.signer.headers(msg_id, body)}
        async with self._slots:
            try:
                response = await self._http().post(target.url, content=body.encode(), headers=headers)
            except httpx.HTTPError as exc:  # timeouts, refused connections, broken transfers
                log.info("webhook %s: attempt failed (%s)", msg_id, type(exc).__name__)
                return "unreachable"
        if response.is_success:
            return None
        log.info("webhook %s: the receiver answered %d", msg_id, response.status_code)
        if response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS:
            return "failed"
        return "refused"  # 3xx/4xx: the same request will not fare better

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.policy.timeout_s, follow_redirects=False)
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
        if tasks:
            self.outcomes.labels(outcome="dropped").inc(len(tasks))
            log.warning("%d webhooks were still pending at shutdown and are dropped", len(tasks))
        if self._client is not None:
            await self._client.aclose()
            self._client = None
