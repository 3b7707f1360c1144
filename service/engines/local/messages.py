"""Messages from the trainer process to its worker: frozen dataclasses, matched by type.

    Started       the hyperparameters resolved, the total number of steps, the device plan
    StepLogged    one optimizer step's metrics
    CheckpointSaved   a checkpoint folder written at an epoch end
    Stopped       training stopped as asked (pause or cancel)
    Succeeded     the final adapter, trained tokens and the results CSV
    Failed        an error code and message; always the last message of a failed run

Every message is picklable: it crosses a multiprocessing queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

StopReason = Literal["pause", "cancel"]


@dataclass(frozen=True)
class Started:
    """Training began with these resolved hyperparameters and per-device choices."""

    hyperparameters: dict[str, Any]
    total_steps: int
    plan: dict[str, Any] = field(default_factory=dict)  # device.Plan.record()


@dataclass(frozen=True)
class StepLogged:
    """One optimizer step ended; `metrics` holds `step`, `total_steps` and OpenAI's names."""

    metrics: dict[str, Any]

    @property
    def step(self) -> int:
        """The step number."""
        return int(self.metrics["step"])


@dataclass(frozen=True)
class CheckpointSaved:
    """A resumable checkpoint was saved in `path` after `step`."""

    step: int
    metrics: dict[str, Any]
    path: str


@dataclass(frozen=True)
class Stopped:
    """Training stopped because the worker asked (a pause saved a checkpoint first)."""

    reason: StopReason


@dataclass(frozen=True)
class Succeeded:
    """Training finished; the adapter is in `adapter`."""

    adapter: str
    trained_tokens: int
    csv: str


@dataclass(frozen=True)
class Failed:
    """Training failed; the job fails with this error."""

    code: str
    message: str


TrainerMessage = Started | StepLogged | CheckpointSaved | Stopped | Succeeded | Failed
