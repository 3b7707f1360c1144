"""Token counts with a local model's own Hugging Face tokenizer and chat template."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from service.engines.local.chat import plain_message
from service.tokens import register_counter_factory

_LOCK = threading.Lock()


class HuggingFaceCounter:
    """Counts what the trainer will see: the chat template applied to the messages."""

    def __init__(self, folder: str) -> None:
        # transformers is imported here only: the API process pays for it on first use.
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(folder)

    def count_text(self, text: str) -> int:
        """Count the tokens of a plain string."""
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def count_example(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> int:
        """Count one example as the chat template renders it (tools as JSON text)."""
        # Rendered as the trainer renders them, so the count is what will be trained on.
        rendered = [plain_message(m) for m in messages]
        ids = self._tokenizer.apply_chat_template(rendered, tokenize=True)
        count = len(ids["input_ids"] if isinstance(ids, Mapping) else ids)
        extra = [*(tools or ()), *(functions or ())]
        if extra:
            count += self.count_text(json.dumps(extra, separators=(",", ":")))
        return count


@functools.lru_cache(maxsize=8)
def _counter(folder: str) -> HuggingFaceCounter:
    with _LOCK:
        return HuggingFaceCounter(folder)


def register() -> None:
    """Make `hf:<folder>` tokenizer specs count with that folder's tokenizer."""
    register_counter_factory("hf", _counter)
