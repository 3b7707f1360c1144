"""Check an answer against OpenAI's own schemas, kept in `openai_schemas.json` (see extract.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator

BUNDLE: dict[str, Any] = json.loads(Path(__file__).with_name("openai_schemas.json").read_text())


def _validator(name: str) -> Draft202012Validator:
    # The bundle is the root document, so `#/$defs/...` references resolve inside it.
    schema = {**BUNDLE, "$ref": f"#/$defs/{name}"}
    return Draft202012Validator(schema)


def assert_openai(name: str, body: Any) -> None:
    """Fail with every violation when `body` does not validate against OpenAI's schema `name`."""
    errors = sorted(_validator(name).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
        ]
        raise AssertionError(f"not a valid OpenAI {name}:\n" + "\n".join(lines))


def check(response: httpx.Response, name: str, status: int = 200) -> Any:
    """Assert the answer's status and that its JSON body is OpenAI's `name`; return the body."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = response.json()
    assert_openai(name, body)
    return body


def check_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert an error answer: the status, and OpenAI's error envelope."""
    body: dict[str, Any] = check(response, "ErrorResponse", status)
    return body
