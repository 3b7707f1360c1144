"""Token counting for training examples: the counter interface, exact tiktoken counts offline.

A base model names its tokenizer with a spec ("tiktoken:o200k_base"); `counter_for` turns it into a
`TokenCounter`. Other schemes (the local engine's "hf") plug in via `register_counter_factory`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import tiktoken

__all__ = [
    "DEFAULT_CACHE_DIR",
    "IMAGE_TOKENS",
    "PACKAGED_ENCODINGS",
    "BatchTokenCounter",
    "Example",
    "PreparedBatch",
    "TiktokenCounter",
    "TokenCounter",
    "count_examples",
    "counter_for",
    "load_encoding",
    "prepare_tiktoken_cache",
    "register_counter_factory",
    "unregister_counter_factory",
]

# Chat framing as OpenAI counts it (cookbook "num_tokens_from_messages"): every message costs 3
# tokens of framing, a `name` one more, and the reply is primed with 3 tokens.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
# A `detail: "low"` image costs a flat 85 tokens; we cannot know the real size of other images
# without downloading them, so every image counts as the low-detail figure.
IMAGE_TOKENS = 85

# Joins texts for batch counting; any special token would do, this one exists in every encoding.
_SEPARATOR = "<|endoftext|>"

# Token counts of short texts are cached (system prompts repeat in every example); clearing the
# cache when full keeps it under about _CACHE_MAX_ENTRIES x _CACHE_MAX_CHARS characters.
_CACHE_MAX_ENTRIES = 1024
_CACHE_MAX_CHARS = 4096

# sha256 of the files tiktoken downloads, as tiktoken_ext/openai_public.py checks them.
PACKAGED_ENCODINGS: dict[str, str] = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
_ENCODINGS_DIR = Path(__file__).resolve().parent / "encodings"
_DOWNLOAD_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
DEFAULT_CACHE_DIR = Path(tempfile.gettempdir()) / "ft-tiktoken-cache"

# (messages, tools, functions) of one chat example.
Example = tuple[Sequence[Mapping[str, Any]], Sequence[Any] | None, Sequence[Any] | None]


class TokenCounter(Protocol):
    """Counts tokens the way a base model's tokenizer sees them."""

    def count_text(self, text: str) -> int:
        """Return the number of tokens in a plain string."""
        ...

    def count_example(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> int:
        """Return the number of tokens of one chat example, framing included."""
        ...


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Examples reduced to what their counts need: count_i = fixed[i] + tokens of its texts."""

    fixed: list[int]  # framing and image tokens of each example
    sizes: list[int]  # how many of `texts` belong to each example, in order
    texts: list[str]


@runtime_checkable
class BatchTokenCounter(TokenCounter, Protocol):
    """A counter that counts many examples at once, in two steps.

    `prepare_batch` is plain Python (run it where the examples are); `count_batch` does the
    encoding, holds no reference to the examples and may run in a worker thread.
    """

    def prepare_batch(self, examples: Iterable[Example]) -> PreparedBatch:
        """Reduce examples to their fixed tokens and texts."""
        ...

    def count_batch(self, batch: PreparedBatch) -> list[int]:
        """Return the token count of each prepared example, in order."""
        ...


def count_examples(counter: TokenCounter, examples: Iterable[Example]) -> list[int]:
    """Count many examples, in batch when the counter supports it."""
    if isinstance(counter, BatchTokenCounter):
        return counter.count_batch(counter.prepare_batch(examples))
    return [counter.count_example(*example) for example in examples]


# --- offline tiktoken --------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_tiktoken_cache(name: str, cache_dir: Path | None = None) -> Path:
    """Put the packaged encoding file where tiktoken's cache looks for it; return its path.

    tiktoken reads `$TIKTOKEN_CACHE_DIR/sha1(<download url>)` and checks its sha256 before it would
    download anything. If TIKTOKEN_CACHE_DIR is set (and not empty) the file goes there and
    `cache_dir` is ignored, since that is the only folder tiktoken reads; otherwise it goes to
    `cache_dir` (default: DEFAULT_CACHE_DIR) and TIKTOKEN_CACHE_DIR is pointed at it.
    """
    expected = PACKAGED_ENCODINGS.get(name)
    if expected is None:
        raise ValueError(
            f"tiktoken encoding {name!r} is not shipped with the service "
            f"(shipped: {', '.join(sorted(PACKAGED_ENCODINGS))})"
        )
    # An empty TIKTOKEN_CACHE_DIR means "no cache" to tiktoken, which would force a download;
    # offline, the only working choice is our own folder.
    env_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
    if env_dir:
        target_dir = Path(env_dir)
    else:
        target_dir = cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR
        os.environ["TIKTOKEN_CACHE_DIR"] = str(target_dir)
    url = _DOWNLOAD_URL.format(name=name)
    target = target_dir / hashlib.sha1(url.encode()).hexdigest()
    if target.is_file() and _sha256(target) == expected:
        return target
    source = _ENCODINGS_DIR / f"{name}.tiktoken"
    data = source.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeError(f"packaged encoding file {source} is corrupt (sha256 mismatch)")
    target_dir.mkdir(parents=True, exist_ok=True)
    # Write under a unique name then rename: concurrent loaders (threads or processes) never see
    # a half-written file, and rename over an existing file is atomic on POSIX.
    tmp = target_dir / f"{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


_load_lock = threading.Lock()


@functools.cache
def load_encoding(name: str, cache_dir: Path | None = None) -> tiktoken.Encoding:
    """Return the tiktoken encoding `name`, loaded from the packaged files without network."""
    # One loader at a time: setting TIKTOKEN_CACHE_DIR and reading it must not interleave.
    with _load_lock:
        prepare_tiktoken_cache(name, cache_dir)
        encoding: tiktoken.Encoding = tiktoken.get_encoding(name)
        return encoding


# --- tiktoken counter --------------------------------------------------------------------------


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_mapping(value: Any) -> bool:
    # Parsed JSON holds plain dicts; the exact type test skips the slow ABC check for them.
    return type(value) is dict or isinstance(value, Mapping)


def _append_function_texts(function: Any, texts: list[str]) -> None:
    if _is_mapping(function):
        for key in ("name", "arguments"):
            value = function.get(key)
            if isinstance(value, str) and value:
                texts.append(value)


def _append_parts_texts(parts: Any, texts: list[str]) -> int:
    """Append the text of list content to `texts`; return the fixed tokens of its images."""
    images = 0
    if isinstance(parts, list):
        for part in parts:
            if not _is_mapping(part):
                continue
            kind = part.get("type")
            if kind == "text":
                text = part.get("text")
                if isinstance(text, str) and text:
                    texts.append(text)
            elif kind == "image_url":
                images += IMAGE_TOKENS
    return images


class TiktokenCounter:
    """Exact token counts with a tiktoken encoding.

    Counting rule for one example (OpenAI's chat counting, extended to every field we train on):
    3 tokens of reply priming, plus for each message 3 tokens of framing + the tokens of `role`
    + string `content` (or the `text` of each text part; each image part counts 85, the
    low-detail figure) + `name` (and 1 more token) + for each of `tool_calls` and for
    `function_call` the function `name` and `arguments` string; plus the compact JSON
    (`separators=(",", ":")`, non-ASCII kept) of `tools` and of `functions` when present.
    `weight`, `tool_call_id` and tool-call ids are not counted. Special-token text such as
    "<|endoftext|>" counts as ordinary text. Malformed parts are skipped, never raised on.
    """

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding
        self._encode = encoding.encode_ordinary
        separator = _SEPARATOR if _SEPARATOR in encoding.special_tokens_set else None
        self._separator = separator
        self._separator_set = frozenset({separator} if separator else ())
        self._separator_token = encoding.encode_single_token(separator) if separator else -1
        self._cache: dict[str, int] = {}

    @classmethod
    def for_encoding(cls, name: str) -> TiktokenCounter:
        """Build a counter for a packaged tiktoken encoding."""
        return cls(load_encoding(name))

    def count_text(self, text: str) -> int:
        """Return the number of tokens in `text`, special-token text counted as ordinary text."""
        return len(self._encode(text)) if text else 0

    def example_texts(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> tuple[int, list[str]]:
        """Split an example into its fixed tokens and the strings whose tokens must be added."""
        texts: list[str] = []
        fixed = REPLY_PRIMING_TOKENS
        append = texts.append
        # The common message is {"role": str, "content": str}: test it with `type() is` and
        # `is not None` first, since this loop runs for every message of every example.
        for message in messages:
            fixed += TOKENS_PER_MESSAGE
            if not _is_mapping(message):
                continue
            get = message.get
            role = get("role")
            if type(role) is str:
                append(role)
            content = get("content")
            if type(content) is str:
                if content:
                    append(content)
            elif content is not None:
                fixed += _append_parts_texts(content, texts)
            name = get("name")
            if type(name) is str:
                fixed += TOKENS_PER_NAME
                if name:
                    append(name)
            tool_calls = get("tool_calls")
            if type(tool_calls) is list:
                for call in tool_calls:
                    if _is_mapping(call):
                        _append_function_texts(call.get("function"), texts)
            function_call = get("function_call")
            if function_call is not None:
                _append_function_texts(function_call, texts)
        if tools:
            append(_compact_json(tools))
        if functions:
            append(_compact_json(functions))
        return fixed, texts

    def count_example(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> int:
        """Return the tokens of one chat example (see the class docstring for the rule)."""
        fixed, texts = self.example_texts(messages, tools, functions)
        encode = self._encode
        return fixed + sum([len(encode(text)) for text in texts])

    def prepare_batch(self, examples: Iterable[Example]) -> PreparedBatch:
        """Reduce examples to their fixed tokens and the texts to encode."""
        batch = PreparedBatch([], [], [])
        for messages, tools, functions in examples:
            fixed, texts = self.example_texts(messages, tools, functions)
            batch.fixed.append(fixed)
            batch.sizes.append(len(texts))
            batch.texts.extend(texts)
        return batch

    def count_batch(self, batch: PreparedBatch) -> list[int]:
        """Return the token count of each prepared example, in order (one encoder call)."""
        lengths = self.text_lengths(batch.texts)
        counts: list[int] = []
        start = 0
        for fixed, size in zip(batch.fixed, batch.sizes, strict=True):
            counts.append(fixed + sum(lengths[start : start + size]))
            start += size
        return counts

    def text_lengths(self, texts: list[str]) -> list[int]:
        """Return the token count of each text, as `count_text` would.

        Each distinct text is encoded once, and short texts seen in earlier batches (a system
        prompt repeated in every example, say) are not encoded again: their counts are cached.
        """
        cache = self._cache
        lengths: dict[str, int] = {}
        unknown: list[str] = []
        for text in texts:
            if text not in lengths:
                known = cache.get(text)
                if known is None:
                    lengths[text] = -1
                    unknown.append(text)
                else:
                    lengths[text] = known
        if unknown:
            for text, n in zip(unknown, self._encode_lengths(unknown), strict=True):
                lengths[text] = n
            # Other threads may share this counter: the cache is only ever read with get(), and
            # clearing it when full bounds its memory (the counts are cheap to recompute).
            if len(cache) >= _CACHE_MAX_ENTRIES:
                cache.clear()
            for text in unknown:
                if len(text) <= _CACHE_MAX_CHARS:
                    cache[text] = lengths[text]
        return [lengths[text] for text in texts]

    def _encode_lengths(self, texts: list[str]) -> list[int]:
        """Return the token count of each text, in one encoder call.

        The texts are joined with "<|endoftext|>" and encoded with that special token allowed:
        tiktoken encodes the text between special tokens exactly as it would encode it alone, so
        the distances between separators are the counts. One long call (which releases the GIL)
        costs far less than many short ones. Texts that hold the separator themselves, or an
        encoding without it, take the one-call-per-text path.
        """
        encode = self._encode
        joined = _SEPARATOR.join(texts)
        if len(texts) < 2 or self._separator is None or joined.count(_SEPARATOR) != len(texts) - 1:
            return [len(encode(text)) if text else 0 for text in texts]
        tokens = self.encoding.encode(
            joined, allowed_special=self._separator_set, disallowed_special=()
        )
        separator = self._separator_token
        lengths: list[int] = []
        previous = -1
        find = tokens.index
        for _ in range(len(texts) - 1):
            position = find(separator, previous + 1)
            lengths.append(position - previous - 1)
            previous = position
        lengths.append(len(tokens) - previous - 1)
        return lengths


# --- spec -> counter ---------------------------------------------------------------------------

CounterFactory = Callable[[str], TokenCounter]

_COUNTER_FACTORIES: dict[str, CounterFactory] = {"tiktoken": TiktokenCounter.for_encoding}


def register_counter_factory(scheme: str, factory: CounterFactory) -> None:
    """Make `counter_for("<scheme>:<arg>")` return `factory("<arg>")` (replaces an earlier one)."""
    if not scheme or ":" in scheme:
        raise ValueError(f"invalid tokenizer scheme {scheme!r}")
    _COUNTER_FACTORIES[scheme] = factory


def unregister_counter_factory(scheme: str) -> None:
    """Forget the factory registered for `scheme` (no error if there is none)."""
    _COUNTER_FACTORIES.pop(scheme, None)


def counter_for(tokenizer_spec: str) -> TokenCounter:
    """Return the token counter named by a spec such as "tiktoken:o200k_base"."""
    scheme, sep, argument = tokenizer_spec.partition(":")
    if not sep or not scheme or not argument:
        raise ValueError(
            f"invalid tokenizer spec {tokenizer_spec!r}: expected '<scheme>:<argument>', "
            "e.g. 'tiktoken:o200k_base'"
        )
    factory = _COUNTER_FACTORIES.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_COUNTER_FACTORIES))
        raise ValueError(
            f"unknown tokenizer scheme {scheme!r} in {tokenizer_spec!r} (known schemes: {known})"
        )
    return factory(argument)
