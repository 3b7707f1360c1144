"""One client's stream of a job's (or a project's) messages: snapshot, replay, then live.

The order of a stream is the events' `pk`, which is also their commit order (see
`service/jobs/lifecycle.py`). A stream subscribes to the hub first, then replays the stored
events after the client's cursor, then forwards live ones, dropping any at or before the last
position sent. Whatever the client missed was either committed before the replay read it, or
is published after the subscription began: nothing falls in between, and nothing comes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
from sqlmodel.ext.asyncio.session import AsyncSession

from service.db import Database
from service.events import service
from service.events.hub import Hub, Published, Subscription, job_topic, project_topic
from service.events.messages import (
    CLOSE_GOING_AWAY,
    CLOSE_JOB_FINISHED,
    CLOSE_TRY_AGAIN_LATER,
    HeartbeatMessage,
)
from service.events.service import Scope
from service.ids import now
from service.jobs.service import get_job


class EventStream:
    """Produce one subscriber's messages; `close_code` says why it ended."""

    def __init__(
        self,
        *,
        database: Database,
        hub: Hub,
        scope: Scope,
        after: int,
        heartbeat_seconds: float,
        starts: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._database = database
        self._starts = starts
        self._hub = hub
        self.scope = scope
        self._heartbeat_seconds = heartbeat_seconds
        self.close_code: int | None = None
        # Position of the job's last event, once a snapshot has shown the job final.
        self._final_position: int | None = None
        # The last snapshot sent per job: the poller may publish one the client already has.
        self._snapshots: dict[str, str] = {}
        # The position of the last event sent (events are ordered by pk).
        self._position = after

    async def messages(self) -> AsyncGenerator[Published, None]:
        """Yield the snapshot, the replayed events, then live messages until the stream ends."""
        scope = self.scope
        topic = job_topic(scope.job_id) if scope.job_id else project_topic(scope.project_id)
        with self._hub.subscribe(topic) as subscription:
            async for message in self._history():
                yield message
            if self._finished():
                return
            async for message in self._live(subscription):
                yield message

    async def _history(self) -> AsyncGenerator[Published, None]:
        """The snapshot(s), then the stored events after the cursor (a page per session).

        Its own generator so that nothing it read stays referenced while the stream is live.
        """
        scope = self.scope
        async with self._reading() as session:
            if scope.job_id is not None:
                jobs = [
                    await get_job(session=session, project_id=scope.project_id, job_id=scope.job_id)
                ]
            else:
                jobs = await service.unfinished_jobs(session, scope.project_id)
            first = await service.snapshots(session, jobs)
        for message in first:
            if self._admit(message):
                yield message
        while True:
            async with self._reading() as session:
                rows = await service.events_after(session, scope, self._position)
            for row in rows:
                message = service.encode_event(row)
                if self._admit(message):
                    yield message
            if len(rows) < service.REPLAY_PAGE:
                return

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncSession]:
        """A session for the stream's start, among at most `starts` at a time: a storm of
        connections then queues behind itself instead of in front of every other request."""
        async with self._starts or contextlib.nullcontext(), self._database.session() as session:
            yield session

    async def _live(self, subscription: Subscription) -> AsyncGenerator[Published, None]:
        """Forward published messages not sent yet, and a heartbeat when one is due."""
        loop = asyncio.get_running_loop()
        # One timer per heartbeat period rather than a time-out per message: at 1,000
        # subscribers, per-message timers cost more than the sends.
        next_heartbeat = loop.time() + self._heartbeat_seconds
        timer = loop.call_at(next_heartbeat, subscription.poke)
        try:
            while True:
                batch = await subscription.take()
                if subscription.overflowed:
                    self.close_code = CLOSE_TRY_AGAIN_LATER
                    return
                if subscription.closed:
                    self.close_code = CLOSE_GOING_AWAY
                    return
                if loop.time() >= next_heartbeat:
                    yield _heartbeat()
                    next_heartbeat = loop.time() + self._heartbeat_seconds
                    timer = loop.call_at(next_heartbeat, subscription.poke)
                for message in batch:
                    if self._admit(message):
                        yield message
                        if self._finished():
                            return
        finally:
            timer.cancel()

    def _admit(self, message: Published) -> bool:
        """Whether the client lacks this message; if so, it counts as sent from now on.

        Events are new past the last position sent. A snapshot is new unless the client has
        that exact state; a final one tells a job stream where the log ends, and lets a project
        stream forget the job.
        """
        if message.position is not None:
            if message.position <= self._position:
                return False
            self._position = message.position
            return True
        if self._snapshots.get(message.job_id) == message.text:
            return False
        if message.finished and self.scope.job_id is None:
            self._snapshots.pop(message.job_id, None)
            return True
        if message.finished:
            self._final_position = message.last_position or 0
        self._snapshots[message.job_id] = message.text
        return True

    def _finished(self) -> bool:
        """A job stream ends once the job is final and its last event has been sent.

        The snapshot that shows the job final may arrive before that event (the poller can read
        the job row after a commit its event query missed), so both orders end the stream.
        """
        if self._final_position is not None and self._position >= self._final_position:
            self.close_code = CLOSE_JOB_FINISHED
            return True
        return False


def _heartbeat() -> Published:
    return Published(
        job_id="",
        project_id="",
        text=HeartbeatMessage(time=now()).model_dump_json(),
        kind="heartbeat",
    )
