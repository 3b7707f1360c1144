"""The background poller of `serve`: runs its steps when woken, or every interval.

Steps are objects with `async poll_once()`: today the event tail, which publishes new job
events to the hub; remote-job sync joins the same loop. Wake-ups come from commits in this
process, from PostgreSQL NOTIFY (other processes), and from the interval, the safety net (and
the only way to see another process's commits on SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)

# After a failed pass (the database is down, say), wait this long, doubling up to the cap.
RETRY_SECONDS = 0.5
RETRY_CAP_SECONDS = 10.0


class PollStep(Protocol):
    """One thing the poller does on each pass."""

    async def poll_once(self) -> int:
        """Do one pass; return how many things it handled."""
        ...


class Poller:
    """Runs `poll_once` of each step in turn, until stopped."""

    def __init__(self, steps: Sequence[PollStep], *, interval: float) -> None:
        self.steps = list(steps)
        self.interval = interval
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Ask for a pass as soon as possible; safe from any thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    async def poll_once(self) -> int:
        """Run each step once; return the total they handled."""
        return sum([await step.poll_once() for step in self.steps])

    async def run(self) -> None:
        """Pass whenever woken or every interval, until `stop()`.

        A step that fails is logged and left out of passes for a growing delay, on its own: an
        unreachable upstream provider never delays the event tail.
        """
        self._loop = loop = asyncio.get_running_loop()
        retry_at = [0.0] * len(self.steps)
        delays = [RETRY_SECONDS] * len(self.steps)
        while not self._stopping:
            self._wake.clear()
            for i, step in enumerate(self.steps):
                if retry_at[i] > loop.time():
                    continue
                try:
                    await step.poll_once()
                    delays[i], retry_at[i] = RETRY_SECONDS, 0.0
                except Exception:
                    log.exception(
                        "poller step %s failed; retrying in %.1f s", type(step).__name__, delays[i]
                    )
                    retry_at[i] = loop.time() + delays[i]
                    delays[i] = min(delays[i] * 2, RETRY_CAP_SECONDS)
            if self._stopping:
                break
            pending = [t - loop.time() for t in retry_at if t > loop.time()]
            wait = min([self.interval, *pending])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def stop(self) -> None:
        """Finish the pass under way, then return from `run`."""
        self._stopping = True
        self.wake()
