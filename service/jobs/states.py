"""The job status machine: one table of allowed transitions, enforced in one place.

    validating_files ─► queued ─► running ─► succeeded
          │               │ ▲       │ │ └──► failed
          │               │ │       │ └────► cancelled
          │               ▼ │       ▼
          │             paused ◄────┘        (running ─► queued: lease lost, retried)
          └─► failed / cancelled             (cancel and fail from any live status)

Terminal statuses absorb: nothing leaves succeeded, failed or cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Status = Literal[
    "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"
]

TERMINAL: Final = frozenset({"succeeded", "failed", "cancelled"})

TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "validating_files": frozenset({"queued", "failed", "cancelled"}),
    "queued": frozenset({"running", "paused", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled", "paused", "queued"}),
    "paused": frozenset({"queued", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

# Event text for entering a status, in OpenAI's wording where OpenAI has one.
ENTER_MESSAGES: Final[dict[str, str]] = {
    "queued": "Files validated, moving job to queued state",
    "running": "Fine-tuning job started",
    "paused": "Fine-tuning job paused",
    "succeeded": "The job has successfully completed",
    "failed": "Fine-tuning job failed",
    "cancelled": "Fine-tuning job cancelled",
}

RESUMED_MESSAGE: Final = "Fine-tuning job resumed"
REQUEUED_MESSAGE: Final = "Fine-tuning job interrupted; it will resume from its last checkpoint"


def is_allowed(current: str, target: str) -> bool:
    """Tell whether a job may move from `current` to `target`."""
    return target in TRANSITIONS.get(current, frozenset())


def is_terminal(status: str) -> bool:
    """Tell whether `status` is final."""
    return status in TERMINAL


def path(current: str, target: str) -> list[str] | None:
    """Return the shortest list of statuses that leads from `current` to `target` (empty when
    they are equal), or None when the table allows no way there.

    A job mirrored from elsewhere may have moved several times between two looks at it
    (paused, then running again): it follows the same table, one allowed step at a time.
    """
    routes: dict[str, list[str]] = {current: []}
    frontier = [current]
    while frontier:
        following = []
        for status in frontier:
            if status == target:
                return routes[status]
            for step in sorted(TRANSITIONS.get(status, frozenset())):
                if step not in routes:
                    routes[step] = [*routes[status], step]
                    following.append(step)
        frontier = following
    return None


@dataclass(frozen=True)
class ClientAction:
    """What a client's cancel, pause or resume may do: from which statuses, to which one."""

    target: str
    sources: frozenset[str]
    refused_code: str
    # Repeating the action on a job already in `target` answers the job unchanged.
    idempotent: bool
    message: str | None = None


LIVE: Final = frozenset(TRANSITIONS) - TERMINAL

CLIENT_ACTIONS: Final[dict[str, ClientAction]] = {
    "cancel": ClientAction("cancelled", LIVE, "job_not_cancellable", idempotent=True),
    "pause": ClientAction(
        "paused", frozenset({"queued", "running"}), "job_not_pausable", idempotent=True
    ),
    "resume": ClientAction(
        "queued",
        frozenset({"paused"}),
        "job_not_paused",
        idempotent=False,
        message=RESUMED_MESSAGE,
    ),
}
