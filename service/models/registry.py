"""Registry of base models: what each can be trained with, by which engine, and its limits.

A leaf: it only holds specs. Engines offer base models (`service.engines`), and the registry
built from them answers which engine a model name belongs to; a job's engine follows from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Literal

from service.errors import InvalidRequest
from service.models.pricing import training_price

Method = Literal["supervised", "dpo", "reinforcement"]

ALL_METHODS: frozenset[Method] = frozenset({"supervised", "dpo", "reinforcement"})


@dataclass(frozen=True)
class BaseModelSpec:
    """A model that jobs can fine-tune."""

    id: str
    methods: frozenset[Method]
    max_tokens_per_example: int
    # Token counter spec: "tiktoken:<encoding>" or "hf:<tokenizer folder>" (see service.tokens).
    tokenizer: str
    created: int
    owned_by: str = "openai"
    aliases: tuple[str, ...] = ()
    shutdown_date: date | None = None
    # From this day the provider refuses new jobs on the model (it may still serve it).
    training_cutoff: date | None = None
    # USD per million trained tokens for supervised and DPO training; None where training is free.
    training_price_per_million: float | None = None
    # How many weights it has, where known: local training time scales with it.
    parameters: int | None = None
    # The name of the engine that offers it; an engine stamps its own name when it registers.
    engine: str = ""

    def is_shut_down(self, today: date | None = None) -> bool:
        """Tell whether the provider has retired this base model."""
        today = today or datetime.now(UTC).date()
        return self.shutdown_date is not None and today >= self.shutdown_date

    def is_closed_to_training(self, today: date | None = None) -> bool:
        """Tell whether the provider no longer creates jobs on this base model."""
        today = today or datetime.now(UTC).date()
        return self.is_shut_down(today) or (
            self.training_cutoff is not None and today >= self.training_cutoff
        )

    def retirement_warning(self, today: date | None = None, *, days: int = 30) -> str | None:
        """Say what retires within `days`: job creation, then the model with its fine-tunes."""
        today = today or datetime.now(UTC).date()
        notes = []
        if self.training_cutoff is not None and 0 <= (self.training_cutoff - today).days <= days:
            notes.append(f"no new fine-tuning jobs from {self.training_cutoff.isoformat()}")
        if self.shutdown_date is not None and 0 <= (self.shutdown_date - today).days <= days:
            notes.append(
                f"shuts down on {self.shutdown_date.isoformat()} with every model fine-tuned "
                "from it"
            )
        return f"{self.id}: " + "; ".join(notes) + "." if notes else None


def ensure_supports(base: BaseModelSpec, method: Method, *, param: str) -> None:
    """Raise a 400 unless `base` can be trained with `method`."""
    if method not in base.methods:
        raise InvalidRequest(
            f"Model {base.id} does not support the '{method}' method; it supports: "
            + ", ".join(sorted(base.methods))
            + ".",
            param=param,
            code="unsupported_method",
        )


def _ts(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp())


# OpenAI's fine-tunable bases still serving in late 2026 (reference §6). Bases shut down on
# 2026-10-23 (gpt-4.1-nano, o4-mini, gpt-3.5-turbo, gpt-4-0613) are gone and not listed.
_OPENAI_BASES: tuple[BaseModelSpec, ...] = (
    BaseModelSpec(
        id="gpt-4o-mini-2024-07-18",
        aliases=("gpt-4o-mini",),
        methods=frozenset({"supervised", "dpo"}),
        max_tokens_per_example=65_536,
        tokenizer="tiktoken:o200k_base",
        created=_ts("2024-07-18"),
        owned_by="system",
        shutdown_date=date(2027, 1, 14),
    ),
    BaseModelSpec(
        id="gpt-4o-2024-08-06",
        aliases=("gpt-4o",),
        methods=frozenset({"supervised", "dpo"}),
        max_tokens_per_example=65_536,
        tokenizer="tiktoken:o200k_base",
        created=_ts("2024-08-06"),
        owned_by="system",
        shutdown_date=date(2027, 1, 14),
    ),
    BaseModelSpec(
        id="gpt-4.1-2025-04-14",
        aliases=("gpt-4.1",),
        methods=frozenset({"supervised", "dpo"}),
        max_tokens_per_example=65_536,
        tokenizer="tiktoken:o200k_base",
        created=_ts("2025-04-14"),
        owned_by="system",
        shutdown_date=date(2027, 1, 14),
    ),
    BaseModelSpec(
        id="gpt-4.1-mini-2025-04-14",
        aliases=("gpt-4.1-mini",),
        methods=frozenset({"supervised", "dpo"}),
        max_tokens_per_example=65_536,
        tokenizer="tiktoken:o200k_base",
        created=_ts("2025-04-14"),
        owned_by="system",
        shutdown_date=date(2027, 1, 14),
    ),
)
# Prices come from the one pricing file, with its sources and dates.
OPENAI_BASE_MODELS: tuple[BaseModelSpec, ...] = tuple(
    replace(model, training_price_per_million=training_price(model.id)) for model in _OPENAI_BASES
)


class ModelRegistry:
    """The base models this deployment offers, looked up by id or alias."""

    def __init__(self, models: Iterable[BaseModelSpec] = ()) -> None:
        self._by_name: dict[str, BaseModelSpec] = {}
        self._models: dict[str, BaseModelSpec] = {}
        for model in models:
            self.add(model)

    def add(self, model: BaseModelSpec) -> None:
        """Register a base model (replacing one with the same id)."""
        self._models[model.id] = model
        for name in (model.id, *model.aliases):
            self._by_name[name] = model

    def resolve(self, name: str) -> BaseModelSpec | None:
        """Return the base model called `name` (an id or an alias), or None."""
        return self._by_name.get(name)

    def all(self) -> list[BaseModelSpec]:
        """Every registered base model, sorted by id."""
        return sorted(self._models.values(), key=lambda m: m.id)
