"""Turn OpenAI-format training files into the datasets TRL trains on."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def read_examples(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON object of every non-blank line (the file was validated at upload)."""
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                yield json.loads(raw)


def _plain(message: Mapping[str, Any]) -> dict[str, str]:
    """Reduce a message to role and text, the shape every chat template accepts."""
    content = message.get("content")
    if isinstance(content, list):
        text = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    else:
        text = content if isinstance(content, str) else ""
    calls = message.get("tool_calls")
    if calls:
        text += json.dumps([c.get("function", {}) for c in calls], ensure_ascii=False)
    role = message.get("role", "user")
    # Templates know system/user/assistant; tool and function results read as user turns.
    return {"role": role if role in ("system", "user", "assistant") else "user", "content": text}


def supervised_rows(path: Path) -> list[dict[str, Any]]:
    """One prompt/completion row per trained assistant message (weight 0 is skipped).

    Loss then falls on the assistant's words only, as OpenAI trains: the prompt is every
    message before that assistant turn.
    """
    rows = []
    for example in read_examples(path):
        messages = example["messages"]
        for i, message in enumerate(messages):
            if message.get("role") == "assistant" and message.get("weight", 1) != 0:
                rows.append(
                    {
                        "prompt": [_plain(m) for m in messages[:i]],
                        "completion": [_plain(message)],
                    }
                )
    return rows


def preference_rows(path: Path) -> list[dict[str, Any]]:
    """One prompt/chosen/rejected row per DPO example."""
    return [
        {
            "prompt": [_plain(m) for m in example["input"]["messages"]],
            "chosen": [_plain(example["preferred_output"][0])],
            "rejected": [_plain(example["non_preferred_output"][0])],
        }
        for example in read_examples(path)
    ]


def reinforcement_rows(path: Path) -> list[dict[str, Any]]:
    """One prompt row per RFT example; the other fields are kept for the grader as `item`."""
    rows = []
    for example in read_examples(path):
        item = {k: v for k, v in example.items() if k not in ("messages", "tools")}
        rows.append(
            {
                "prompt": [_plain(m) for m in example["messages"]],
                "item": json.dumps(item, ensure_ascii=False),
            }
        )
    return rows
