"""Turn FastAPI/pydantic request validation errors into OpenAI's wording, param and code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The API expects a JSON payload, but what was sent was "
    "not valid JSON.)"
)


# Names pydantic adds to a location for union members and validators, not fields.
_TYPE_WORDS = {
    "int",
    "float",
    "str",
    "bool",
    "list",
    "dict",
    "none",
    "constrained-int",
    "constrained-float",
    "constrained-str",
}


def _param(loc: Sequence[Any]) -> str | None:
    text = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        elif "[" in part or "(" in part or part in _TYPE_WORDS:
            continue
        else:
            text += f".{part}" if text else part
    return text or None


def describe_validation_error(errors: Sequence[Any]) -> tuple[str, str | None, str]:
    """Return (message, param, code) for the first validation error."""
    if not errors:
        return "Invalid request.", None, "invalid_request"
    error = errors[0]
    param = _param(error.get("loc", ()))
    if error.get("type") == "literal_error":
        # For `"auto" | number`, say what is wrong with the number, not that it isn't "auto".
        error = next(
            (
                e
                for e in errors[1:]
                if _param(e.get("loc", ())) == param and e.get("type") != "literal_error"
            ),
            error,
        )
    kind = error.get("type", "")
    if kind == "json_invalid":
        return _INVALID_JSON, None, "invalid_json"
    if kind == "missing":
        if param is None:
            return "The request body is missing; it must be a JSON object.", None, "missing_body"
        return f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param, "unknown_parameter"
    if kind in {"model_attributes_type", "dict_type"} and param is None:
        return "The request body must be a JSON object.", None, "invalid_type"
    message = str(error.get("msg", "Invalid value")).removeprefix("Value error, ")
    code = "invalid_type" if kind.endswith(("_type", "_parsing")) else "invalid_value"
    if param is None:
        return f"Invalid request: {message}.", None, code
    return f"Invalid value for '{param}': {message}.", param, code
