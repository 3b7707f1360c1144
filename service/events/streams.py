"""One client's stream of a job's (or a project's) messages: snapshot, replay, then live.

The order of a stream is the events' `pk`, which is also their commit order (see
`service/jobs/lifecycle.py`). A stream subscribes to the hub first, then replays the stored
events after the client's cursor, then forwards live ones, dropping any at or before the last
position sent. Whatever the client missed was either committed before the replay read it, or
is published after the subscription began: nothing falls in between, and nothing comes twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

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
        after: int | None,
        heartbeat_seconds: float,
    ) -> None:
        self._database = database
        self._hub = hub
        self.scope = scope
        self._after = after
        self._heartbeat_seconds = heartbeat_seconds
        self.close_code: int | None = None
        # Position of the job's last event, once a snapshot has shown the job final.
        self._final_position: int | None = None
        # The last snapshot sent per job: the poller may publish one the client already has.
        self._snapshots: dict[str, str] = {}
        # The position of the last event sent (events are ordered by pk).
        self._position = 0

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
        async with self._database.session() as session:
            if scope.job_id is not None:
                job = await get_job(
                    session=session, project_id=scope.project_id, job_id=scope.job_id
                )
                first = [await service.snapshot(session, job)]
            else:
                jobs = await service.unfinished_jobs(session, scope.project_id)
                first = [await service.snapshot(session, job) for job in jobs]
            if self._after is not None:
                self._position = self._after
            elif scope.job_id is None:
                self._position = await service.latest_position(session, scope)
            # else: a job's stream starts with its whole log (position 0)
        for message in first:
            self._note(message)
            self._snapshots[message.job_id] = message.text
            yield message
        while True:
            async with self._database.session() as session:
                rows = await service.events_after(session, scope, self._position)
            for row in rows:
                yield service.encode_event(row)
                self._position = row.pk or self._position
            if len(rows) < service.REPLAY_PAGE:
                return

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
                    if message.position is not None:
                        if message.position <= self._position:
                            continue  # replayed already
                        self._position = message.position
                    elif self._snapshots.get(message.job_id) == message.text:
                        continue  # the client has this state already
                    elif message.finished and self.scope.job_id is None:
                        # A final job changes no more: a project stream forgets it.
                        self._snapshots.pop(message.job_id, None)
                    else:
                        self._snapshots[message.job_id] = message.text
                    self._note(message)
                    yield message
                    if self._finished():
                        return
        finally:
            timer.cancel()

    def _note(self, message: Published) -> None:
        if message.finished and self.scope.job_id is not None:
            self._final_position = message.last_position or 0

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
