"""One way to flatten an OpenAI chat message into the `{role, content}` text a chat template takes.

Training rows, token counts, grader prompts and completions all go through `plain_message`, so
what is counted is what is trained and what is asked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# The roles every chat template knows. `developer` is OpenAI's newer name for `system`; tool and
# function results read as user turns.
TEMPLATE_ROLES = frozenset({"system", "user", "assistant"})


def message_text(message: Mapping[str, Any]) -> str:
    """Return a message's text: its content (text parts joined), then its tool calls as JSON."""
    content = message.get("content")
    if isinstance(content, Mapping):  # a single content part, as grader inputs allow
        content = [content]
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    else:
        text = ""
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        functions = [c.get("function", {}) for c in calls if isinstance(c, Mapping)]
        text += json.dumps(functions, ensure_ascii=False, separators=(",", ":"))
    return text


def template_role(role: object) -> str:
    """Map an OpenAI role to one that chat templates know."""
    if role == "developer":
        return "system"
    return role if isinstance(role, str) and role in TEMPLATE_ROLES else "user"


def plain_message(message: Mapping[str, Any]) -> dict[str, str]:
    """Reduce a message to `{"role", "content"}` text, the shape every chat template accepts."""
    return {"role": template_role(message.get("role", "user")), "content": message_text(message)}
