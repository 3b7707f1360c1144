"""In-process publish/subscribe of committed job events and job snapshots.

The poller publishes; each stream holds a `Subscription` with a bounded queue. Publishing never
waits: a subscriber whose queue is full is marked overflowed (its stream closes, and the client
resumes from its cursor), so one slow client never slows the publisher or anyone else.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

Topic = tuple[str, str]  # ("job", job_id) or ("project", project_id)


def job_topic(job_id: str) -> Topic:
    """The topic of one job's messages."""
    return ("job", job_id)


def project_topic(project_id: str) -> Topic:
    """The topic of every job message of a project."""
    return ("project", project_id)


@dataclass(frozen=True, slots=True)
class Published:
    """One message, encoded once for every subscriber.

    `position` is the event's pk (the stream order) for events, None for job snapshots.
    A snapshot carries `finished`: the job is final and `last_position` is its last event.
    """

    job_id: str
    project_id: str
    text: str
    kind: str = "event"
    position: int | None = None
    event_id: str | None = None
    finished: bool = False
    last_position: int | None = None


class Subscription:
    """A subscriber's bounded queue of published messages."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._queue: deque[Published] = deque()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def offer(self, message: Published) -> None:
        """Queue a message without waiting; past capacity the subscription overflows instead."""
        if self.overflowed or self.closed:
            return
        if len(self._queue) >= self._capacity:
            self.overflowed = True
            self._queue.clear()
        else:
            self._queue.append(message)
        self._ready.set()

    def poke(self) -> None:
        """Wake the reader without a message (its heartbeat is due)."""
        self._ready.set()

    def close(self) -> None:
        """End the subscription (the server is shutting down)."""
        self.closed = True
        self._ready.set()

    async def take(self, timeout: float | None = None) -> list[Published]:
        """Return every queued message, waiting for one (or a poke, or `timeout`); may be []."""
        if not self._queue and not (self.overflowed or self.closed):
            # No wait_for: it would create a task per message per subscriber.
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        taken = list(self._queue)
        self._queue.clear()
        return taken


class Hub:
    """Fans published messages out to the subscribers of their job and of their project."""

    def __init__(self, *, capacity: int = 1000) -> None:
        self.capacity = capacity
        self._subscribers: dict[Topic, set[Subscription]] = {}
        self.closed = False

    @contextmanager
    def subscribe(self, topic: Topic) -> Iterator[Subscription]:
        """Receive the topic's messages for the duration of the `with` block."""
        subscription = Subscription(self.capacity)
        if self.closed:
            subscription.close()
        subscribers = self._subscribers.setdefault(topic, set())
        subscribers.add(subscription)
        try:
            yield subscription
        finally:
            subscribers.discard(subscription)
            if not subscribers:
                self._subscribers.pop(topic, None)

    def publish(self, message: Published) -> None:
        """Offer the message to its job's and its project's subscribers."""
        for topic in (job_topic(message.job_id), project_topic(message.project_id)):
            for subscription in self._subscribers.get(topic, ()):
                subscription.offer(message)

    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return sum(len(s) for s in self._subscribers.values())

    def close(self) -> None:
        """End every subscription: streams finish so the server can shut down."""
        self.closed = True
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.close()
