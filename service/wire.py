"""Base class of request bodies: unknown fields refused, NUL characters refused everywhere."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class RequestModel(BaseModel):
    """A request body: extra fields are errors, and no string may hold a NUL character."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        # PostgreSQL cannot store NUL in text; refuse it here rather than fail in the database.
        if _has_nul(data):
            raise ValueError("strings may not contain NUL characters")
        return data
