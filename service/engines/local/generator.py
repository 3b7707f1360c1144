"""Text generation with a local base model and, optionally, a LoRA adapter on top.

Loaded models are kept in a small LRU cache keyed by (base folder, adapter folder). Generation
is blocking and runs in a worker thread; one lock per loaded model serialises its use, since a
model is not safe to drive from two threads at once. torch and transformers are imported on
first use, so an API process that never generates never pays for them.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CACHE_SIZE = 2


@dataclass
class Loaded:
    """A model ready to generate, with its tokenizer and lock."""

    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Generated:
    """One completion."""

    text: str
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True)
class Params:
    """Sampling parameters of one request."""

    max_new_tokens: int
    temperature: float
    top_p: float
    n: int
    stops: tuple[str, ...]
    seed: int | None


class Generator:
    """Loads models on demand and generates chat completions."""

    def __init__(self, cache_size: int = CACHE_SIZE) -> None:
        self._cache: OrderedDict[tuple[str, str | None], Loaded] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._load_lock = threading.Lock()

    def forget(self, adapter: str) -> None:
        """Drop cached models using `adapter` (its files are being deleted)."""
        with self._cache_lock:
            for key in [k for k in self._cache if k[1] == adapter]:
                del self._cache[key]

    def load(self, base: str, adapter: str | None) -> Loaded:
        """Return the model for (base, adapter), loading it if needed (one load at a time)."""
        key = (base, adapter)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        # transformers builds a model on torch's meta device by patching torch for the whole
        # process while it loads: two loads in two threads corrupt each other ("Cannot copy out
        # of meta tensor"). Requests arriving together for one model also load it only once.
        with self._load_lock:
            with self._cache_lock:
                if key in self._cache:
                    return self._cache[key]
            return self._load(key)

    def _load(self, key: tuple[str, str | None]) -> Loaded:
        base, adapter = key
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(adapter or base)
        model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        if adapter:
            from peft import PeftModel

            with warnings.catch_warnings():
                # peft 0.21 asks transformers 5 a deprecated question; nothing for us to change.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        loaded = Loaded(model=model, tokenizer=tokenizer)
        with self._cache_lock:
            self._cache[key] = loaded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return loaded

    def prompt_ids(self, loaded: Loaded, messages: list[dict[str, str]]) -> Any:
        """Tokenise the conversation with the model's chat template."""
        encoded = loaded.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        return encoded["input_ids"]

    def loss(self, loaded: Loaded, conversations: list[list[dict[str, str]]]) -> tuple[float, int]:
        """Return the mean loss per token of each conversation's last (assistant) message given
        the rest, over all conversations, and the number of tokens it is the mean of."""
        import torch

        total, tokens = 0.0, 0
        with loaded.lock, torch.no_grad():
            for messages in conversations:
                prompt = self.prompt_ids(loaded, messages[:-1])
                full = loaded.tokenizer.apply_chat_template(
                    messages, return_tensors="pt", return_dict=True
                )["input_ids"]
                labels = full.clone()
                labels[:, : prompt.shape[1]] = -100  # score the answer, not the prompt
                scored = int((labels[:, 1:] != -100).sum())
                if scored == 0:
                    continue
                output = loaded.model(input_ids=full, labels=labels)
                total += float(output.loss) * scored
                tokens += scored
        return (total / tokens if tokens else float("nan")), tokens

    def _kwargs(self, loaded: Loaded, params: Params) -> dict[str, Any]:
        sample = params.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": sample,
            "pad_token_id": loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id,
        }
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        return kwargs

    def _generate_ids(self, loaded: Loaded, ids: Any, params: Params, **extra: Any) -> Any:
        """Run the model's `generate` on the prompt ids, holding its lock, seeded as asked."""
        import torch

        with loaded.lock, torch.no_grad():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            return loaded.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                **extra,
                **self._kwargs(loaded, params),
            )

    def generate(
        self, loaded: Loaded, messages: list[dict[str, str]], params: Params
    ) -> tuple[int, list[Generated]]:
        """Return the prompt's token count and `n` completions."""
        ids = self.prompt_ids(loaded, messages)
        # Greedy decoding gives one answer; n choices are n copies of it, as OpenAI's are.
        sequences = params.n if params.temperature > 0 else 1
        output = self._generate_ids(loaded, ids, params, num_return_sequences=sequences)
        if sequences < params.n:
            output = output.repeat(params.n, 1)
        prompt_len = ids.shape[1]
        eos = loaded.tokenizer.eos_token_id
        results = []
        for row in output:
            new = [int(t) for t in row[prompt_len:]]
            ended = eos in new
            if ended:
                new = new[: new.index(eos)]
            text = without_nul(loaded.tokenizer.decode(new, skip_special_tokens=True))
            text, stopped = _cut_at_stop(text, params.stops)
            full = len(new) >= params.max_new_tokens and not (ended or stopped)
            results.append(Generated(text, "length" if full else "stop", len(new)))
        return prompt_len, results

    def stream(
        self, loaded: Loaded, messages: list[dict[str, str]], params: Params
    ) -> tuple[int, Iterator[str], dict[str, Any]]:
        """Start generating in a thread; return the prompt size, a text iterator, and a dict
        that holds `finish_reason` and `completion_tokens` once the iterator is exhausted."""
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(loaded, messages)
        streamer = TextIteratorStreamer(
            loaded.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        outcome: dict[str, Any] = {"finish_reason": "stop", "completion_tokens": 0}

        def run() -> None:
            out = self._generate_ids(loaded, ids, params, streamer=streamer)
            new = [int(t) for t in out[0][ids.shape[1] :]]
            eos = loaded.tokenizer.eos_token_id
            outcome["completion_tokens"] = len(new) - (1 if eos in new else 0)
            if len(new) >= params.max_new_tokens and eos not in new:
                outcome["finish_reason"] = "length"

        thread = threading.Thread(target=run, daemon=True)
        # The caller joins it before reading `outcome`: the streamer ends before run() has
        # counted the tokens.
        outcome["thread"] = thread
        thread.start()
        pieces = (without_nul(piece) for piece in streamer)
        return ids.shape[1], _stop_filtered(pieces, params.stops, outcome), outcome


def without_nul(text: str) -> str:
    """The text without NUL characters, which a byte-level tokenizer can decode (an undertrained
    model does) but no request, JSON column of PostgreSQL or judge prompt accepts."""
    return text.replace("\x00", "")


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _stop_filtered(
    pieces: Iterator[str], stops: tuple[str, ...], outcome: dict[str, Any]
) -> Iterator[str]:
    """Pass text through until a stop sequence appears (held back while it might be forming)."""
    if not stops:
        yield from pieces
        return
    pending = ""
    longest = max(len(s) for s in stops)
    for piece in pieces:
        pending += piece
        text, stopped = _cut_at_stop(pending, stops)
        if stopped:
            if text:
                yield text
            outcome["stopped"] = True
            for _ in pieces:  # let generation finish so the model's lock is released
                pass
            return
        safe = len(pending) - (longest - 1)
        if safe > 0:
            yield pending[:safe]
            pending = pending[safe:]
    if pending:
        yield pending
