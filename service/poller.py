"""The background poller of `serve`: runs its steps when woken, or every interval (longer idle).

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
# Passes that find nothing stretch the wait up to this (or the interval, if longer).
IDLE_CEILING_SECONDS = 1.0


class IdleWait:
    """How long a polling loop sleeps: its interval after a pass that found work, doubling up to
    a ceiling while passes find none.

    Every wake-up of an idle service takes a core from a local training job for a moment, and
    torch's threads wait for each other at every operation: 20 empty passes a second cost a
    2-core trainer 5 % of its speed. Wake-ups by commit still answer at once.
    """

    def __init__(self, interval: float, ceiling: float) -> None:
        self.interval = interval
        self.ceiling = max(ceiling, interval)
        self._current = interval

    def after(self, worked: bool) -> float:
        """The wait after a pass that did (or did not) find work."""
        self._current = self.interval if worked else min(self.ceiling, self._current * 2)
        return self._current


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
        self._idle = IdleWait(interval, IDLE_CEILING_SECONDS)
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
            woken = self._wake.is_set()
            self._wake.clear()
            handled = 0
            for i, step in enumerate(self.steps):
                if retry_at[i] > loop.time():
                    continue
                try:
                    handled += await step.poll_once()
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
            wait = min([self._idle.after(woken or handled > 0), *pending])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def stop(self) -> None:
        """Finish the pass under way, then return from `run`."""
        self._stopping = True
        self.wake()
