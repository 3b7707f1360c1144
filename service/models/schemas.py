"""Wire shapes of the models API (OpenAI's `model` object)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from service.wire import WireModel


class ModelObject(WireModel):
    """OpenAI's `model` object."""

    id: str = Field(examples=["ft:gpt-4o-mini-2024-07-18:personal:support-fr:9o1eNNKO"])
    object: Literal["model"] = "model"
    created: int = Field(description="Unix seconds.")
    owned_by: str
    shutdown_date: str | None = Field(
        default=None, description="YYYY-MM-DD after which the model stops serving, if known."
    )
    training_cutoff: str | None = Field(
        default=None,
        description="Extension: YYYY-MM-DD from which its provider creates no more jobs on it.",
    )
    warning: str | None = Field(
        default=None,
        description="Extension: set within 30 days of the shutdown date or the training cutoff.",
    )


class ModelDeleted(WireModel):
    """Answer to a model deletion."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class ModelList(WireModel):
    """`GET /v1/models` envelope (not paginated)."""

    object: Literal["list"] = "list"
    data: list[ModelObject]
