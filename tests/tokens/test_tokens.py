"""Token counting: exact tiktoken counts, the documented chat overhead, offline loading, specs."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
from hypothesis import given, settings
from hypothesis import strategies as st

from service.tokens import (
    DEFAULT_CACHE_DIR,
    IMAGE_TOKENS,
    BatchTokenCounter,
    TiktokenCounter,
    TokenCounter,
    count_examples,
    counter_for,
    load_encoding,
    prepare_tiktoken_cache,
    register_counter_factory,
    unregister_counter_factory,
)

O200K = load_encoding("o200k_base")
COUNTER = TiktokenCounter(O200K)

TEXTS = [
    "Bonjour Madame Leclercq-Amadou,\n\nVotre demande de restauration est transmise à l'équipe.",
    "Dear Mr. Okafor,\n\nPlease find below our proposal for your three meeting rooms.",
    "Total : 19 640 £ HT, livraison et installation comprises.",
    "  leading and trailing spaces  ",
    "\n\n",
    "emoji 📨 et accents éèàç",
    "<|endoftext|> is ordinary text here",
]


def n(text: str) -> int:
    return len(O200K.encode(text, disallowed_special=()))


def email_messages() -> list[dict[str, Any]]:
    return [
        {
            "role": "system",
            "content": "Tu rédiges des e-mails professionnels pour le service sales.",
        },
        {"role": "user", "content": TEXTS[0]},
        {"role": "assistant", "content": TEXTS[1]},
    ]


def cookbook_count(messages: list[dict[str, Any]]) -> int:
    """The OpenAI cookbook's num_tokens_from_messages, with the exact encoding."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            total += n(value)
            if key == "name":
                total += 1
    return total


@pytest.mark.parametrize("text", TEXTS)
def test_count_text_matches_tiktoken(text: str) -> None:
    assert COUNTER.count_text(text) == n(text)


def test_count_text_of_empty_string_is_zero() -> None:
    assert COUNTER.count_text("") == 0


def test_plain_messages_follow_the_cookbook_overhead() -> None:
    messages = email_messages()
    expected = 3 + sum(3 + n(m["role"]) + n(m["content"]) for m in messages)
    assert COUNTER.count_example(messages) == expected == cookbook_count(messages)


def test_name_costs_one_more_token() -> None:
    messages = email_messages()
    messages[1]["name"] = "romain"
    assert COUNTER.count_example(messages) == cookbook_count(messages)
    assert (
        COUNTER.count_example(messages) == COUNTER.count_example(email_messages()) + n("romain") + 1
    )


def test_text_parts_and_images() -> None:
    parts = [
        {"type": "text", "text": "Voici la photo du colis abîmé."},
        {"type": "image_url", "image_url": {"url": "https://example.fr/colis.jpg"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
    ]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": parts},
        {"role": "assistant", "content": "Nous sommes désolés."},
    ]
    expected = (
        3
        + (3 + n("user") + n("Voici la photo du colis abîmé.") + 2 * IMAGE_TOKENS)
        + (3 + n("assistant") + n("Nous sommes désolés."))
    )
    assert IMAGE_TOKENS == 85
    assert COUNTER.count_example(messages) == expected


def test_tool_calls_function_call_and_definitions() -> None:
    arguments = '{"order_id": "FR-2291", "language": "fr"}'
    tools = [
        {
            "type": "function",
            "function": {
                "name": "order_status",
                "description": "Statut d'une commande",
                "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
            },
        }
    ]
    functions = [{"name": "legacy_lookup", "parameters": {"type": "object"}}]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Où en est ma commande FR-2291 ?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "order_status", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "expédiée"}'},
        {
            "role": "assistant",
            "function_call": {"name": "legacy_lookup", "arguments": "{}"},
            "content": "",
        },
    ]
    compact_tools = json.dumps(tools, separators=(",", ":"), ensure_ascii=False)
    compact_functions = json.dumps(functions, separators=(",", ":"), ensure_ascii=False)
    expected = (
        3
        + (3 + n("user") + n("Où en est ma commande FR-2291 ?"))
        + (3 + n("assistant") + n("order_status") + n(arguments))
        + (3 + n("tool") + n('{"status": "expédiée"}'))
        + (3 + n("assistant") + n("legacy_lookup") + n("{}"))
        + n(compact_tools)
        + n(compact_functions)
    )
    assert COUNTER.count_example(messages, tools, functions) == expected


def test_malformed_parts_are_skipped_not_raised() -> None:
    messages: list[Any] = [
        {"role": "user", "content": [None, {"type": "text", "text": 3}, {"type": "audio"}]},
        "not a message",
        {"role": "assistant", "content": 42, "tool_calls": "oops", "function_call": [1]},
    ]
    assert COUNTER.count_example(messages) == 3 + 3 * 3 + n("user") + n("assistant")


def test_batch_counts_equal_single_counts() -> None:
    examples: list[tuple[Sequence[Mapping[str, Any]], Any, Any]] = [
        ([{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}], None, None)
        for text in TEXTS
    ]
    examples.append((email_messages(), [{"type": "function", "function": {"name": "f"}}], None))
    examples.append(([], None, None))
    expected = [COUNTER.count_example(*example) for example in examples]
    assert isinstance(COUNTER, BatchTokenCounter)
    assert COUNTER.count_batch(COUNTER.prepare_batch(examples)) == expected
    assert count_examples(COUNTER, examples) == expected


def test_repeated_texts_are_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = TiktokenCounter(O200K)
    encoded: list[str] = []
    real = counter._encode_lengths

    def spy(texts: list[str]) -> list[int]:
        encoded.extend(texts)
        return real(texts)

    monkeypatch.setattr(counter, "_encode_lengths", spy)
    prompt = "Tu rédiges des e-mails professionnels clairs et courtois."
    assert counter.text_lengths([prompt, "Bonjour", prompt]) == [n(prompt), n("Bonjour"), n(prompt)]
    assert counter.text_lengths([prompt, "Merci"]) == [n(prompt), n("Merci")]
    assert encoded == [prompt, "Bonjour", "Merci"]


def test_count_cache_stays_bounded() -> None:
    counter = TiktokenCounter(O200K)
    counter.text_lengths([f"ligne {i}" for i in range(3000)])
    counter.text_lengths(["x" * 5000])  # too long to be cached
    assert len(counter._cache) <= 1024 + 3000
    counter.text_lengths([f"autre {i}" for i in range(10)])
    assert len(counter._cache) <= 10
    assert "x" * 5000 not in counter._cache


def test_text_lengths_fall_back_when_a_text_holds_the_separator() -> None:
    texts = ["avant <|endoftext|> après", "fin"]
    assert COUNTER.text_lengths(texts) == [n(texts[0]), n(texts[1])]


@settings(database=None, max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(" \n\t\r.,'é😀aZ9-<|>"), max_size=12)))
def test_joined_encoding_counts_each_text_exactly(texts: list[str]) -> None:
    assert TiktokenCounter(O200K).text_lengths(texts) == [n(text) for text in texts]


@settings(database=None, max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=8))
def test_joined_encoding_counts_any_unicode_exactly(texts: list[str]) -> None:
    expected = [len(O200K.encode_ordinary(text)) for text in texts]
    assert TiktokenCounter(O200K).text_lengths(texts) == expected


# --- offline loading ---------------------------------------------------------------------------


def cache_name(name: str) -> str:
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    return hashlib.sha1(url.encode()).hexdigest()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget loaded encodings and make any download attempt fail the test."""

    def no_download(blobpath: str) -> bytes:
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)


@pytest.mark.parametrize(("name", "n_vocab"), [("o200k_base", 200_019), ("cl100k_base", 100_277)])
def test_load_encoding_works_offline(
    offline: None, tmp_path: Path, name: str, n_vocab: int
) -> None:
    encoding = load_encoding(name, tmp_path)
    assert encoding.name == name
    assert encoding.n_vocab == n_vocab
    assert (tmp_path / cache_name(name)).is_file()
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)
    assert encoding.encode("Bonjour") == tiktoken.get_encoding(name).encode("Bonjour")


def test_user_cache_dir_is_used_when_set(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "theirs"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(theirs))
    path = prepare_tiktoken_cache("cl100k_base", tmp_path / "ours")
    assert path == theirs / cache_name("cl100k_base")
    assert not (tmp_path / "ours").exists()
    assert tiktoken.get_encoding("cl100k_base").n_vocab == 100_277


def test_corrupt_cached_file_is_replaced(offline: None, tmp_path: Path) -> None:
    target = tmp_path / cache_name("o200k_base")
    target.write_bytes(b"garbage")
    assert prepare_tiktoken_cache("o200k_base", tmp_path) == target
    expected = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left


def test_default_cache_dir_is_in_the_temp_folder() -> None:
    assert DEFAULT_CACHE_DIR.name == "ft-tiktoken-cache"


def test_unshipped_encoding_is_refused(offline: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not shipped"):
        load_encoding("p50k_base", tmp_path)


# --- specs -------------------------------------------------------------------------------------


class WhitespaceCounter:
    """A toy counter: one token per whitespace-separated word."""

    def count_text(self, text: str) -> int:
        return len(text.split())

    def count_example(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> int:
        return sum(self.count_text(str(m.get("content", ""))) for m in messages)


def test_counter_for_tiktoken_spec() -> None:
    counter = counter_for("tiktoken:o200k_base")
    assert isinstance(counter, TiktokenCounter)
    assert counter.encoding.name == "o200k_base"
    assert counter.count_text("Bonjour à tous") == n("Bonjour à tous")
    cl100k = counter_for("tiktoken:cl100k_base")
    assert isinstance(cl100k, TiktokenCounter)
    assert cl100k.encoding.name == "cl100k_base"


def test_registered_scheme_is_used() -> None:
    register_counter_factory("ws", lambda argument: WhitespaceCounter())
    try:
        counter: TokenCounter = counter_for("ws:anything")
        assert isinstance(counter, WhitespaceCounter)
        messages = [{"role": "user", "content": "trois mots ici"}]
        assert counter.count_example(messages) == 3
        assert count_examples(counter, [(messages, None, None)]) == [3]
    finally:
        unregister_counter_factory("ws")
    with pytest.raises(ValueError, match="unknown tokenizer scheme 'ws'"):
        counter_for("ws:anything")


@pytest.mark.parametrize("spec", ["o200k_base", "tiktoken:", ":o200k_base", ""])
def test_malformed_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="invalid tokenizer spec"):
        counter_for(spec)


def test_unknown_scheme_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown tokenizer scheme 'spm'.*tiktoken"):
        counter_for("spm:/models/mistral-7b")


def test_invalid_scheme_cannot_be_registered() -> None:
    with pytest.raises(ValueError):
        register_counter_factory("a:b", lambda argument: WhitespaceCounter())
