"""The sender of outbound webhooks: claims due messages, signs and posts them, records how it went.

Messages live in the database (written with the event), so a restart loses none: a message is
claimed for one attempt (a crashed sender's claim runs out), and retried with growing delays
until the endpoint answers 2xx or the retry window has passed. Every attempt re-checks the
target's addresses (`targets.resolve`) and is signed afresh (the SDK refuses timestamps older
than 5 minutes), with the same `webhook-id`, so a receiver can drop a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx
from sqlalchemy import or_, update
from sqlmodel import col, select

from service.db import Database
from service.ids import now
from service.poller import IdleWait
from service.settings import Settings
from service.webhooks import targets
from service.webhooks.models import WebhookEndpoint, WebhookMessage
from service.webhooks.service import signing_keys
from service.webhooks.signing import signed_headers

log = logging.getLogger(__name__)

# Requests in flight at once, and so messages claimed per pass: a claim starts its clock only
# when its request can start, so it never runs out while the message waits for a slot.
CONCURRENCY = 16
MAX_DELAY_SECONDS = 8 * 3600.0
CLAIM_MARGIN_SECONDS = 5.0
MAX_ERROR_LENGTH = 500
USER_AGENT = "iaposte-finetune-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    """What one delivery attempt gave: the endpoint's status, or why there was none."""

    status_code: int | None
    error: str | None
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        """2xx only: a redirect is a failure, as OpenAI counts it."""
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(attempts: int, base: float) -> float:
    """Seconds to wait after the `attempts`-th failure: base x 4^(attempts-1), at most 8 h, with
    10 % jitter so that deliveries failed together do not come back together."""
    delay: float = min(base * 4.0 ** (attempts - 1), MAX_DELAY_SECONDS)
    return delay * random.uniform(0.9, 1.1)


class Dispatcher:
    """Sends the outbox: `run()` in the background of `serve`; `deliver_due()` is one pass.

    Each claimed message is sent by a task of its own, at most one per endpoint and
    `CONCURRENCY` in all, so a slow endpoint delays only its own messages.
    """

    def __init__(self, *, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.http = httpx.AsyncClient(
            timeout=settings.webhook_timeout_seconds,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment may reroute a checked address
            # A kept-alive connection is keyed by address, not name: reusing one verified for
            # another host on the same address would skip this host's certificate check.
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sending: dict[str, asyncio.Task[None]] = {}  # by endpoint id

    def wake(self) -> None:
        """Ask for a pass as soon as possible; safe from any thread."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Deliver whatever is due, whenever woken or every `webhook_poll_seconds` (longer idle)."""
        self._loop = asyncio.get_running_loop()
        # Idle passes stretch to 10 intervals: a retry falls due at most that late, and an
        # idle service leaves the CPUs to training (see IdleWait).
        interval = self.settings.webhook_poll_seconds
        idle = IdleWait(interval, 10 * interval)
        while not self._stopping:
            woken = self._wake.is_set()
            self._wake.clear()
            started = 0
            try:
                started = await self.deliver_due()
            except Exception:
                log.exception("webhook delivery pass failed")
            wait = idle.after(woken or started > 0 or bool(self._sending))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        # Attempts under way finish (each within the timeout) and are recorded.
        await asyncio.gather(*self._sending.values(), return_exceptions=True)

    def stop(self) -> None:
        """End `run` once the attempts under way are recorded."""
        self._stopping = True
        self.wake()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self.http.aclose()

    async def deliver_due(self) -> int:
        """Claim the messages due now, where a slot is free, and start sending them; return how
        many were started (a finished send wakes the next pass)."""
        if self._stopping or len(self._sending) >= CONCURRENCY:
            return 0
        claimed = await self._claim(busy=set(self._sending), slots=CONCURRENCY - len(self._sending))
        for message, endpoint, token in claimed:
            task = asyncio.create_task(self._deliver(message, endpoint, token))
            self._sending[endpoint.id] = task
            task.add_done_callback(functools.partial(self._done, endpoint.id))
        return len(claimed)

    def _done(self, endpoint_id: str, _task: asyncio.Task[None]) -> None:
        self._sending.pop(endpoint_id, None)
        self._wake.set()

    async def send_test(self, message: WebhookMessage, endpoint: WebhookEndpoint) -> Attempt:
        """Send a test message once and record the outcome (never retried)."""
        attempt = await self._attempt(message, endpoint)
        await self._record(message, attempt, retry=False, token=None)
        return attempt

    async def _claim(
        self, *, busy: set[str], slots: int
    ) -> list[tuple[WebhookMessage, WebhookEndpoint, float]]:
        """Take due messages for one attempt each, at most one per endpoint (a failing endpoint
        holds one slot, not all): a compare-and-set per message, so several senders, in one
        process or many, never send the same attempt twice. The claim's expiry is its token."""
        at = time.time()
        # An attempt takes at most the timeout (`_attempt`): a claim outlives it by a margin.
        hold_until = at + self.settings.webhook_timeout_seconds + CLAIM_MARGIN_SECONDS
        claimable = or_(
            col(WebhookMessage.claimed_until).is_(None), col(WebhookMessage.claimed_until) < at
        )
        async with self.database.session() as session:
            rows = (
                await session.exec(
                    select(WebhookMessage, WebhookEndpoint)
                    .join(WebhookEndpoint, col(WebhookEndpoint.id) == WebhookMessage.endpoint_id)
                    .where(
                        col(WebhookMessage.status) == "pending",
                        col(WebhookMessage.next_attempt_at) <= at,
                        claimable,
                    )
                    .order_by(col(WebhookMessage.next_attempt_at))
                    .limit(CONCURRENCY * 4)
                )
            ).all()
            picked: dict[str, tuple[WebhookMessage, WebhookEndpoint]] = {}
            for message, endpoint in rows:
                if endpoint.id not in busy and endpoint.id not in picked and len(picked) < slots:
                    picked[endpoint.id] = (message, endpoint)
            claimed = []
            for message, endpoint in picked.values():
                result = await session.exec(
                    update(WebhookMessage)
                    .where(
                        col(WebhookMessage.id) == message.id,
                        col(WebhookMessage.status) == "pending",
                        claimable,
                    )
                    .values(claimed_until=hold_until)
                )
                if result.rowcount == 1:
                    claimed.append((message, endpoint, hold_until))
            await session.commit()
        return claimed

    async def _deliver(
        self, message: WebhookMessage, endpoint: WebhookEndpoint, token: float
    ) -> None:
        attempt = await self._attempt(message, endpoint)
        await self._record(message, attempt, retry=True, token=token)

    async def _attempt(self, message: WebhookMessage, endpoint: WebhookEndpoint) -> Attempt:
        """Check the target again, sign, post, all within the timeout; never raises."""
        limit = self.settings.webhook_timeout_seconds
        try:
            async with asyncio.timeout(limit):
                return await self._post(message, endpoint)
        except TimeoutError:
            return Attempt(status_code=None, error=f"The endpoint did not answer within {limit} s.")
        except Exception:  # recorded as a failed attempt, never left claimed and unrecorded
            log.exception("webhook %s: unexpected error while sending", message.id)
            return Attempt(status_code=None, error="The request failed (server error).")

    async def _post(self, message: WebhookMessage, endpoint: WebhookEndpoint) -> Attempt:
        try:
            target = await targets.resolve(
                endpoint.url, allow_private=self.settings.webhooks_allow_private
            )
        except targets.UnsafeTarget as error:
            return Attempt(status_code=None, error=str(error))
        headers = signed_headers(
            signing_keys(endpoint, now()), message_id=message.id, body=message.payload
        )
        try:
            # The body of the answer is not read: a receiver cannot make us hold a large one.
            async with self.http.stream(
                "POST",
                target.pinned_url,
                content=message.payload.encode(),
                headers={**headers, **target.headers},
                extensions=target.extensions,
            ) as response:
                return Attempt(
                    status_code=response.status_code,
                    error=None if 200 <= response.status_code < 300 else _status_error(response),
                    retry_after=_retry_after(response),
                )
        except httpx.HTTPError as error:
            return Attempt(status_code=None, error=_describe(error))

    async def _record(
        self, message: WebhookMessage, attempt: Attempt, *, retry: bool, token: float | None
    ) -> None:
        """Store the attempt under its claim (a claim that ran out and was taken over records
        nothing); schedule the next one unless delivered, a test, or out of time: a retry
        that would come after the window is made at its end instead, once."""
        attempts = message.attempts + 1
        at = time.time()
        values: dict[str, object] = {
            "attempts": attempts,
            "last_attempt_at": int(at),
            "last_status_code": attempt.status_code,
            "last_error": (attempt.error or "")[:MAX_ERROR_LENGTH] or None,
            "claimed_until": None,
        }
        if attempt.delivered:
            values.update(status="delivered", delivered_at=int(at), next_attempt_at=None)
        else:
            delay = retry_delay(attempts, self.settings.webhook_retry_base_seconds)
            if attempt.retry_after is not None:
                delay = max(delay, min(attempt.retry_after, MAX_DELAY_SECONDS))
            give_up_at = message.created_at + self.settings.webhook_retry_window_seconds
            if not retry or at >= give_up_at:
                values.update(status="failed", next_attempt_at=None)
            else:
                values.update(next_attempt_at=min(at + delay, give_up_at))
        mine = [col(WebhookMessage.id) == message.id, col(WebhookMessage.status) == "pending"]
        if token is not None:
            mine.append(col(WebhookMessage.claimed_until) == token)
        async with self.database.session() as session:
            result = await session.exec(update(WebhookMessage).where(*mine).values(**values))
            await session.commit()
        if result.rowcount != 1:
            log.warning("webhook %s: its claim ran out before the attempt was recorded", message.id)
            return
        for name, value in values.items():
            setattr(message, name, value)
        if not attempt.delivered:
            log.info(
                "webhook %s to endpoint %s: attempt %d failed (%s)",
                message.id,
                message.endpoint_id,
                attempts,
                attempt.error,
            )


def _status_error(response: httpx.Response) -> str:
    return f"The endpoint answered {response.status_code}; only 2xx counts as delivered."


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked by a 429 or 503 answer's `Retry-After` (seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if response.status_code not in (429, 503) or not value:
        return None
    with contextlib.suppress(ValueError):
        return max(float(value), 0.0)
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": HTTP dates are in UTC
            when = when.replace(tzinfo=UTC)
        return max(when.timestamp() - time.time(), 0.0)
    return None


def _describe(error: httpx.HTTPError) -> str:
    """Say why no answer came, without the exception's internals."""
    kinds = {
        httpx.ConnectTimeout: "Connecting to the endpoint timed out.",
        httpx.ReadTimeout: "The endpoint did not answer in time.",
        httpx.ConnectError: "The endpoint could not be reached",
    }
    for kind, text in kinds.items():
        if isinstance(error, kind):
            detail = str(error)
            return f"{text} ({detail})." if detail and kind is httpx.ConnectError else text
    return f"The request failed: {type(error).__name__}."
