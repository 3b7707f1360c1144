"""One client's stream of a job's (or a project's) messages: snapshot, replay, then live.

The order of a stream is the events' `pk`, which is also their commit order (see
`service/jobs/lifecycle.py`). A stream subscribes to the hub first, then replays the stored
events after the client's cursor, then forwards live ones, dropping any at or before the last
position sent. Whatever the client missed was either committed before the replay read it, or
is published after the subscription began: nothing falls in between, and nothing comes twice.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from service.db import Database
from service.events import service
from service.events.hub import Hub, Published, job_topic, project_topic
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
        self._scope = scope
        self._after = after
        self._heartbeat_seconds = heartbeat_seconds
        self.close_code: int | None = None
        # Position of the job's last event, once a snapshot has shown the job final.
        self._final_position: int | None = None
        # The last snapshot sent per job: the poller may publish one the client already has.
        self._snapshots: dict[str, str] = {}

    async def messages(self) -> AsyncIterator[Published]:
        """Yield the snapshot, the replayed events, then live messages until the stream ends."""
        scope = self._scope
        topic = job_topic(scope.job_id) if scope.job_id else project_topic(scope.project_id)
        with self._hub.subscribe(topic) as subscription:
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
                    position = self._after
                elif scope.job_id is not None:
                    position = 0  # a job's stream starts with its whole log
                else:
                    position = await service.latest_position(session, scope)
            for message in first:
                self._note(message)
                self._snapshots[message.job_id] = message.text
                yield message
            while True:  # replay, a page per short session
                async with self._database.session() as session:
                    rows = await service.events_after(session, scope, position)
                for row in rows:
                    yield service.encode_event(row)
                    position = row.pk or position
                if len(rows) < service.REPLAY_PAGE:
                    break
            if self._finished(position):
                return
            next_heartbeat = time.monotonic() + self._heartbeat_seconds
            while True:
                batch = await subscription.take(max(0.0, next_heartbeat - time.monotonic()))
                if subscription.overflowed:
                    self.close_code = CLOSE_TRY_AGAIN_LATER
                    return
                if subscription.closed:
                    self.close_code = CLOSE_GOING_AWAY
                    return
                if time.monotonic() >= next_heartbeat:
                    yield _heartbeat()
                    next_heartbeat = time.monotonic() + self._heartbeat_seconds
                for message in batch:
                    if message.position is not None:
                        if message.position <= position:
                            continue  # replayed already
                        position = message.position
                    elif self._snapshots.get(message.job_id) == message.text:
                        continue  # the client has this state already
                    else:
                        self._snapshots[message.job_id] = message.text
                    self._note(message)
                    yield message
                    if self._finished(position):
                        return

    def _note(self, message: Published) -> None:
        if message.finished and self._scope.job_id is not None:
            self._final_position = message.last_position or 0

    def _finished(self, position: int) -> bool:
        """A job stream ends once the job is final and its last event has been sent.

        The snapshot that shows the job final may arrive before that event (the poller can read
        the job row after a commit its event query missed), so both orders end the stream.
        """
        if self._final_position is not None and position >= self._final_position:
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
