"""Base classes of the wire: request bodies (unknown fields and NUL characters refused) and
answers (always-present fields required, optional ones left out rather than null)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


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


class WireModel(BaseModel):
    """An answer: every field it always sends is `required` in the OpenAPI document, so that
    generated clients type it as present (pydantic leaves fields with defaults out otherwise)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


def _is_none(value: Any) -> bool:
    return value is None


def _never_null(schema: dict[str, Any]) -> None:
    # The document says what is sent: the value's own type, never null.
    branches = [branch for branch in schema.pop("anyOf", []) if branch != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    schema.pop("default", None)


def omitted(**kwargs: Any) -> Any:
    """Declare an optional answer field that is left out when it has no value, as OpenAI leaves
    it out (`expires_at`, `status_details`, W&B `tags`): OpenAI's schemas do not allow null."""
    return Field(default=None, exclude_if=_is_none, json_schema_extra=_never_null, **kwargs)
