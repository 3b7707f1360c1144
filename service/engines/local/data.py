"""Turn OpenAI-format training files into the datasets TRL trains on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from service.engines.local.chat import plain_message


def read_examples(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON object of every non-blank line (the file was validated at upload)."""
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                yield json.loads(raw)


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
                        "prompt": [plain_message(m) for m in messages[:i]],
                        "completion": [plain_message(message)],
                    }
                )
    return rows


def preference_rows(path: Path) -> list[dict[str, Any]]:
    """One prompt/chosen/rejected row per DPO example."""
    return [
        {
            "prompt": [plain_message(m) for m in example["input"]["messages"]],
            "chosen": [plain_message(example["preferred_output"][0])],
            "rejected": [plain_message(example["non_preferred_output"][0])],
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
                "prompt": [plain_message(m) for m in example["messages"]],
                "item": json.dumps(item, ensure_ascii=False),
            }
        )
    return rows
