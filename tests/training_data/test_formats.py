"""Structural validation of training JSONL: every error code, format detection, streaming."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.training_data import formats
from service.training_data.formats import (
    Issue,
    JsonlParser,
    ParseResult,
    validate_chunks,
    validate_file,
    validate_lines,
)

# Business emails in the spirit of the IAPosteManager history (French and English).
EMAILS = [
    (
        "Informer Mme Leclercq-Amadou que son problème de restauration est transmis à l'équipe.",
        "Objet : Votre demande de restauration\n\nBonjour Madame Leclercq-Amadou,\n\nVotre "
        "demande a été transmise à notre équipe d'ingénierie, qui reviendra vers vous sous 48 h."
        "\n\nCordialement,\nLe support",
    ),
    (
        "Send a tailored offer to Mr. Okafor for meeting room furniture.",
        "Subject: Proposal – meeting room furniture\n\nDear Mr. Okafor,\n\nPlease find below our "
        "proposal for your three meeting rooms: £19,640 excluding VAT.\n\nKind regards,\nRomain",
    ),
    (
        "Confirmer à M. Diallo la date de son entretien d'embauche.",
        "Objet : Entretien du 12 mars\n\nBonjour Monsieur Diallo,\n\nNous vous confirmons votre "
        "entretien le 12 mars à 10 h.\n\nBien cordialement,\nService RH",
    ),
]
SYSTEM = "Tu rédiges des e-mails professionnels clairs et courtois."


def chat(i: int = 0, **extra: Any) -> dict[str, Any]:
    context, body = EMAILS[i % len(EMAILS)]
    example: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": context},
            {"role": "assistant", "content": body},
        ]
    }
    example.update(extra)
    return example


def messages(*items: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": list(items), **extra}


def user(content: Any = "Rédige une relance pour la facture F-2291.") -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(
    content: Any = "Bonjour,\n\nSauf erreur de notre part…", **extra: Any
) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def preference(i: int = 0, **extra: Any) -> dict[str, Any]:
    context, body = EMAILS[i % len(EMAILS)]
    example: dict[str, Any] = {
        "input": {"messages": [{"role": "system", "content": SYSTEM}, user(context)]},
        "preferred_output": [assistant(body)],
        "non_preferred_output": [assistant("ok c'est transmis")],
    }
    example.update(extra)
    return example


def reinforcement(i: int = 0, **extra: Any) -> dict[str, Any]:
    context, _ = EMAILS[i % len(EMAILS)]
    example: dict[str, Any] = {
        "messages": [
            {"role": "developer", "content": "Classe la demande : sales, support, hr, marketing."},
            user(context),
        ],
        "reference_answer": "support",
    }
    example.update(extra)
    return example


def line(item: dict[str, Any] | list[Any] | bytes) -> bytes:
    return item if isinstance(item, bytes) else json.dumps(item, ensure_ascii=False).encode()


def jsonl(*items: dict[str, Any] | list[Any] | bytes) -> bytes:
    return b"".join(line(item) + b"\n" for item in items)


def padded(*items: dict[str, Any] | list[Any] | bytes, kind: str = "chat") -> bytes:
    """Ten valid examples of `kind` (fixing the format and the minimum), then the items."""
    make = {"chat": chat, "preference": preference, "reinforcement": reinforcement}[kind]
    return jsonl(*(make(i) for i in range(10)), *items)


def check(data: bytes, **options: Any) -> ParseResult:
    return validate_chunks([data], **options)


def found(result: ParseResult) -> set[tuple[int, str, str]]:
    return {(i.line, i.param, i.code) for i in result.errors}


def warned(result: ParseResult) -> set[tuple[int, str, str]]:
    return {(i.line, i.param, i.code) for i in result.warnings}


def test_valid_chat_file() -> None:
    result = check(jsonl(*(chat(i) for i in range(12))))
    assert result.valid
    assert (result.format, result.n_examples, result.n_errors, result.warnings) == (
        "chat",
        12,
        0,
        [],
    )
    assert result.stats["messages_per_example"] == {"min": 3, "mean": 3.0, "max": 3}
    assert result.stats["n_assistant_messages"] == 12
    assert result.stats["bytes"] == len(jsonl(*(chat(i) for i in range(12))))


# One bad line after ten good chat examples: (line 11, param, code).
CHAT_CASES: list[tuple[str, dict[str, Any] | list[Any] | bytes, str, str]] = [
    ("latin-1 byte", b'{"messages": "caf\xe9"}', "line", "invalid_encoding"),
    ("broken json", b'{"messages": [}', "line", "invalid_json"),
    ("NaN", b'{"messages": NaN}', "line", "invalid_json"),
    ("array line", [chat()], "line", "data_type"),
    ("string line", b'"bonjour"', "line", "data_type"),
    (
        "legacy",
        {"prompt": "Relance facture", "completion": "Bonjour…"},
        "line",
        "unsupported_format",
    ),
    ("reference field", chat(answer="support"), "line", "mixed_formats"),
    ("preference line", preference(), "line", "mixed_formats"),
    ("no messages", {"mesages": []}, "messages", "missing_messages_list"),
    ("messages not list", {"messages": "bonjour"}, "messages", "missing_messages_list"),
    ("empty messages", {"messages": []}, "messages", "empty_messages"),
    ("message not object", messages("bonjour", assistant()), "messages[0]", "message_data_type"),
    ("no role", messages({"content": "x"}, assistant()), "messages[0].role", "message_missing_key"),
    (
        "tool without id",
        messages(user(), {"role": "tool", "content": "{}"}, assistant()),
        "messages[1].tool_call_id",
        "message_missing_key",
    ),
    (
        "function without name",
        messages(user(), {"role": "function", "content": "{}"}, assistant()),
        "messages[1].name",
        "message_missing_key",
    ),
    (
        "unknown key",
        messages(user() | {"lang": "fr"}, assistant()),
        "messages[0].lang",
        "message_unrecognized_key",
    ),
    (
        "tool_calls on user",
        messages(user() | {"tool_calls": []}, assistant()),
        "messages[0].tool_calls",
        "message_unrecognized_key",
    ),
    (
        "developer",
        messages({"role": "developer", "content": SYSTEM}, user(), assistant()),
        "messages[0].role",
        "unrecognized_role",
    ),
    (
        "bot role",
        messages(user(), {"role": "bot", "content": "x"}),
        "messages[1].role",
        "unrecognized_role",
    ),
    ("empty content", messages(user(""), assistant()), "messages[0].content", "missing_content"),
    ("null content", messages(user(), assistant(None)), "messages[1].content", "missing_content"),
    (
        "no content key",
        messages({"role": "user"}, assistant()),
        "messages[0].content",
        "missing_content",
    ),
    ("empty parts", messages(user([]), assistant()), "messages[0].content", "missing_content"),
    ("number content", messages(user(42), assistant()), "messages[0].content", "invalid_content"),
    (
        "audio part",
        messages(user([{"type": "input_audio", "input_audio": {}}]), assistant()),
        "messages[0].content[0]",
        "invalid_content_part",
    ),
    (
        "text part not string",
        messages(user([{"type": "text", "text": ["x"]}]), assistant()),
        "messages[0].content[0].text",
        "invalid_content_part",
    ),
    (
        "bad image url",
        messages(user([{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]), assistant()),
        "messages[0].content[0].image_url.url",
        "invalid_content_part",
    ),
    (
        "bad image detail",
        messages(
            user([{"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "max"}}]),
            assistant(),
        ),
        "messages[0].content[0].image_url.detail",
        "invalid_content_part",
    ),
    (
        "image in assistant",
        messages(user(), assistant([{"type": "image_url", "image_url": {"url": "https://x/a"}}])),
        "messages[1].content[0]",
        "image_not_allowed",
    ),
    (
        "eleven images",
        messages(
            user(
                [
                    {"type": "image_url", "image_url": {"url": f"https://x/{i}.png"}}
                    for i in range(11)
                ]
            ),
            assistant(),
        ),
        "messages",
        "too_many_images",
    ),
    (
        "name not string",
        messages(user() | {"name": 7}, assistant()),
        "messages[0].name",
        "invalid_name",
    ),
    ("weight 0.5", messages(user(), assistant(weight=0.5)), "messages[1].weight", "invalid_weight"),
    (
        "weight true",
        messages(user(), assistant(weight=True)),
        "messages[1].weight",
        "invalid_weight",
    ),
    (
        "weight on user",
        messages(user() | {"weight": 1}, assistant()),
        "messages[0].weight",
        "invalid_weight",
    ),
    (
        "no assistant",
        messages({"role": "system", "content": SYSTEM}, user()),
        "messages",
        "example_missing_assistant_message",
    ),
    (
        "all weights zero",
        messages(user(), assistant(weight=0), user(), assistant(weight=0)),
        "messages",
        "example_all_weights_zero",
    ),
    (
        "tool call without id",
        messages(
            user(),
            assistant(
                None,
                tool_calls=[{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            ),
        ),
        "messages[1].tool_calls[0].id",
        "invalid_tool_calls",
    ),
    (
        "tool call wrong type",
        messages(
            user(),
            assistant(
                None,
                tool_calls=[
                    {"id": "c", "type": "fn", "function": {"name": "f", "arguments": "{}"}}
                ],
            ),
        ),
        "messages[1].tool_calls[0].type",
        "invalid_tool_calls",
    ),
    (
        "tool calls empty",
        messages(user(), assistant(None, tool_calls=[])),
        "messages[1].tool_calls",
        "invalid_tool_calls",
    ),
    (
        "arguments not json",
        messages(
            user(),
            assistant(
                None,
                tool_calls=[
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x"}}
                ],
            ),
        ),
        "messages[1].tool_calls[0].function.arguments",
        "invalid_tool_call_arguments",
    ),
    (
        "arguments as object",
        messages(
            user(),
            assistant(
                None,
                tool_calls=[
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                ],
            ),
        ),
        "messages[1].tool_calls[0].function.arguments",
        "invalid_tool_call_arguments",
    ),
    (
        "function_call without name",
        messages(user(), assistant(None, function_call={"arguments": "{}"})),
        "messages[1].function_call.name",
        "invalid_function_call",
    ),
    (
        "tools not list",
        chat(tools={"type": "function"}),
        "tools",
        "invalid_tools",
    ),
    (
        "tool without name",
        chat(tools=[{"type": "function", "function": {"description": "x"}}]),
        "tools[0].function.name",
        "invalid_tools",
    ),
    ("functions empty", chat(functions=[]), "functions", "invalid_functions"),
    (
        "parallel not bool",
        chat(parallel_tool_calls="false"),
        "parallel_tool_calls",
        "invalid_parallel_tool_calls",
    ),
]


@pytest.mark.parametrize(
    ("item", "param", "code"),
    [case[1:] for case in CHAT_CASES],
    ids=[case[0] for case in CHAT_CASES],
)
def test_chat_error_codes(item: dict[str, Any] | list[Any] | bytes, param: str, code: str) -> None:
    result = check(padded(item))
    assert (11, param, code) in found(result), result.errors
    issue = next(i for i in result.errors if i.code == code)
    assert issue.message.startswith("Line 11")
    if param != "line":
        assert param in issue.message
    assert result.n_examples == 11
    assert result.stats["n_valid_examples"] == 10


PREFERENCE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "old key name",
        preference(preferred_completion="x"),
        "preferred_completion",
        "unrecognized_key",
    ),
    (
        "unknown input key",
        preference() | {"input": preference()["input"] | {"temperature": 0}},
        "input.temperature",
        "unrecognized_key",
    ),
    ("input not object", preference(input=[user()]), "input", "missing_input"),
    (
        "input ends with assistant",
        preference(input={"messages": [user(), assistant()]}),
        "input.messages[1].role",
        "input_ends_with_assistant",
    ),
    (
        "developer in input",
        preference(input={"messages": [{"role": "developer", "content": "x"}, user()]}),
        "input.messages[0].role",
        "unrecognized_role",
    ),
    (
        "image in input",
        preference(
            input={"messages": [user([{"type": "image_url", "image_url": {"url": "https://x"}}])]}
        ),
        "input.messages[0].content[0]",
        "image_not_allowed",
    ),
    (
        "weight in input",
        preference(input={"messages": [user(), assistant(weight=1), user()]}),
        "input.messages[1].weight",
        "message_unrecognized_key",
    ),
    (
        "no non-preferred",
        {k: v for k, v in preference().items() if k != "non_preferred_output"},
        "non_preferred_output",
        "missing_output",
    ),
    (
        "two outputs",
        preference(preferred_output=[assistant(), assistant()]),
        "preferred_output",
        "invalid_output",
    ),
    ("empty output", preference(non_preferred_output=[]), "non_preferred_output", "invalid_output"),
    (
        "output by user",
        preference(preferred_output=[user()]),
        "preferred_output[0].role",
        "invalid_output",
    ),
    (
        "output parts",
        preference(preferred_output=[assistant([{"type": "text", "text": "x"}])]),
        "preferred_output[0].content",
        "invalid_content",
    ),
    (
        "empty output content",
        preference(preferred_output=[assistant("")]),
        "preferred_output[0].content",
        "missing_content",
    ),
    ("chat line", chat(), "line", "mixed_formats"),
]


@pytest.mark.parametrize(
    ("item", "param", "code"),
    [case[1:] for case in PREFERENCE_CASES],
    ids=[case[0] for case in PREFERENCE_CASES],
)
def test_preference_error_codes(item: dict[str, Any], param: str, code: str) -> None:
    result = check(padded(item, kind="preference"))
    assert result.format == "preference"
    assert (11, param, code) in found(result), result.errors


REINFORCEMENT_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "system role",
        reinforcement(messages=[{"role": "system", "content": "x"}, user()]),
        "messages[0].role",
        "unrecognized_role",
    ),
    (
        "ends with assistant",
        reinforcement(messages=[user(), assistant()]),
        "messages[1].role",
        "last_message_not_user",
    ),
    (
        "weight",
        reinforcement(messages=[user(), assistant(weight=1), user()]),
        "messages[1].weight",
        "message_unrecognized_key",
    ),
    ("no messages", {"reference_answer": "sales"}, "messages", "missing_messages_list"),
    ("tools not list", reinforcement(tools="none"), "tools", "invalid_tools"),
    ("preference line", preference(), "line", "mixed_formats"),
]


@pytest.mark.parametrize(
    ("item", "param", "code"),
    [case[1:] for case in REINFORCEMENT_CASES],
    ids=[case[0] for case in REINFORCEMENT_CASES],
)
def test_reinforcement_error_codes(item: dict[str, Any], param: str, code: str) -> None:
    result = check(padded(item, kind="reinforcement"))
    assert result.format == "reinforcement"
    assert (11, param, code) in found(result), result.errors


def test_system_role_in_reinforcement_hints_developer() -> None:
    result = check(
        padded(
            reinforcement(messages=[{"role": "system", "content": "x"}, user()]),
            kind="reinforcement",
        )
    )
    assert "use 'developer'" in result.errors[0].message
    assert result.n_errors == 1  # no extra last_message_not_user or similar noise


def test_developer_role_in_chat_hints_system() -> None:
    result = check(padded(messages({"role": "developer", "content": SYSTEM}, user(), assistant())))
    assert "use 'system'" in result.errors[0].message


def test_legacy_format_message_asks_for_chat() -> None:
    result = check(jsonl({"prompt": "Relance", "completion": "Bonjour"}))
    assert result.errors[0].code == "unsupported_format"
    assert "chat format" in result.errors[0].message
    assert result.format is None


# --- format detection --------------------------------------------------------------------------


def test_detects_each_format() -> None:
    assert check(padded()).format == "chat"
    assert check(padded(kind="preference")).format == "preference"
    assert check(padded(kind="reinforcement")).format == "reinforcement"


def test_messages_without_assistant_is_reinforcement() -> None:
    data = jsonl(*(messages({"role": "developer", "content": "x"}, user()) for _ in range(10)))
    result = check(data)
    assert result.format == "reinforcement"
    assert result.valid


def test_reinforcement_file_may_have_lines_without_reference_fields() -> None:
    result = check(padded(messages(user()), kind="reinforcement"))
    assert result.valid
    assert result.stats["n_examples_with_reference_fields"] == 10


def test_hint_settles_an_ambiguous_first_example() -> None:
    data = jsonl(*(messages({"role": "system", "content": SYSTEM}, user()) for _ in range(10)))
    assert check(data).format == "reinforcement"
    hinted = check(data, format_hint="chat")
    assert hinted.format == "chat"
    assert {i.code for i in hinted.errors} == {"example_missing_assistant_message"}


def test_unknown_first_example_then_detection_on_a_later_line() -> None:
    result = check(jsonl({"text": "Bonjour"}, *(chat(i) for i in range(10))))
    assert found(result) == {(1, "line", "unknown_format")}
    assert result.format == "chat"
    assert result.stats["n_valid_examples"] == 10


def test_unknown_shape_after_detection_is_checked_as_the_file_format() -> None:
    result = check(padded({"text": "Bonjour"}))
    assert found(result) == {(11, "messages", "missing_messages_list")}


def test_mixed_formats_message_names_the_fields_and_the_detection_line() -> None:
    result = check(padded(chat(answer="support", score=1)))
    message = result.errors[0].message
    assert "answer, score" in message
    assert "detected on line 1" in message


# --- valid shapes ------------------------------------------------------------------------------


def tool_example() -> dict[str, Any]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "order_status", "arguments": '{"order_id": "FR-2291"}'},
    }
    return messages(
        user("Où en est la commande FR-2291 ?"),
        assistant(None, tool_calls=[call]),
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "expédiée"}'},
        assistant("Votre commande FR-2291 a été expédiée hier.", weight=1),
        tools=[{"type": "function", "function": {"name": "order_status", "parameters": {}}}],
        parallel_tool_calls=False,
    )


def test_valid_tool_calls_images_weights_and_functions() -> None:
    image = {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
    }
    legacy = messages(
        user(),
        assistant(None, function_call={"name": "lookup", "arguments": '{"id": 1}'}),
        {"role": "function", "name": "lookup", "content": "{}"},
        assistant(),
        functions=[{"name": "lookup", "parameters": {"type": "object"}}],
    )
    result = check(
        padded(
            tool_example(),
            messages(user([{"type": "text", "text": "Voici le colis :"}, image]), assistant()),
            messages(user(), assistant(weight=0), user(), assistant(weight=1)),
            legacy,
        )
    )
    assert result.valid, result.errors
    assert result.warnings == []
    assert result.stats["n_examples_with_tools"] == 2
    assert result.stats["n_examples_with_images"] == 1
    assert result.stats["messages_per_example"] == {"min": 2, "mean": 3.14, "max": 4}


def test_tool_result_for_an_unknown_call_is_a_warning() -> None:
    example = tool_example()
    example["messages"][2]["tool_call_id"] = "call_9"
    result = check(padded(example))
    assert result.valid
    assert warned(result) == {(11, "messages[2].tool_call_id", "tool_call_id_mismatch")}


def test_identical_preference_outputs_is_a_warning() -> None:
    same = preference(non_preferred_output=preference()["preferred_output"])
    result = check(padded(same, kind="preference"))
    assert result.valid
    assert warned(result) == {(11, "non_preferred_output", "identical_outputs")}


# --- encodings and lines -----------------------------------------------------------------------


def test_utf16_file_is_reported_once() -> None:
    data = padded().decode().encode("utf-16")
    result = check(data)
    assert found(result) == {(1, "line", "invalid_encoding")}
    assert "UTF-16" in result.errors[0].message
    assert result.n_errors == 1


def test_utf16_without_bom_is_recognised_by_its_nul_bytes() -> None:
    result = check(padded().decode().encode("utf-16-le"))
    assert found(result) == {(1, "line", "invalid_encoding")}
    assert "UTF-16" in result.errors[0].message


def test_utf32_file() -> None:
    result = check(padded().decode().encode("utf-32"))
    assert "UTF-32" in result.errors[0].message
    assert result.n_errors == 1


def test_utf8_bom_is_accepted_with_a_warning() -> None:
    result = check(b"\xef\xbb\xbf" + padded())
    assert result.valid
    assert warned(result) == {(1, "line", "utf8_bom")}


def test_bad_utf8_names_the_byte() -> None:
    result = check(padded(b'{"messages": [{"role": "user", "content": "Cr\xe9dit"}]}'))
    assert found(result) == {(11, "line", "invalid_encoding")}
    assert "0xe9" in result.errors[0].message


def test_blank_lines_and_crlf_keep_editor_line_numbers() -> None:
    data = b"\n".join([line(chat()), b"", b"   ", line(chat(1)) + b"\r", b"[1]", b""])
    result = check(data + padded())
    assert found(result) == {(5, "line", "data_type")}
    assert result.stats["n_blank_lines"] == 2
    assert result.stats["n_lines"] == 15


def test_last_line_without_newline_is_read() -> None:
    data = padded().rstrip(b"\n") + b"\n" + line([1])
    assert found(check(data)) == {(11, "line", "data_type")}


def test_long_line_is_skipped_and_parsing_goes_on() -> None:
    long_line = line(chat(user_note="x" * 5000))
    data = padded(long_line, [1])
    chunks = [data[i : i + 700] for i in range(0, len(data), 700)]
    result = validate_chunks(chunks, max_line_bytes=2000)
    assert found(result) == {(11, "line", "line_too_long"), (12, "line", "data_type")}


def test_one_byte_at_a_time_equals_one_chunk() -> None:
    data = (
        b"\xef\xbb\xbf"
        + padded(
            tool_example(),
            b"",
            line(chat(2)) + b"\r",
            b'{"messages": [{"role": "user", "content": "Cr\xe9dit"}]}',
            [1],
            messages(user(), assistant(weight=2)),
            chat(answer="x"),
            b"{broken",
        )
        + line(chat(1))  # no final newline
    )
    whole = check(data)
    assert whole.n_errors == 5
    by_byte = validate_chunks(data[i : i + 1] for i in range(len(data)))
    by_line = validate_lines(data.split(b"\n"))
    assert by_byte == whole
    # validate_lines never sees the newlines, so only its byte count differs.
    assert replace(by_line, stats=whole.stats) == whole
    assert by_line.stats == whole.stats | {"bytes": len(data) - data.count(b"\n")}


def test_file_and_lines_helpers(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(padded([1]))
    assert found(validate_file(path)) == {(11, "line", "data_type")}
    assert validate_lines(padded().splitlines(keepends=True)).valid


# --- file level and bounds ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 9])
def test_too_few_examples(count: int) -> None:
    result = check(jsonl(*(chat(i) for i in range(count))))
    assert found(result) == {(count, "file", "too_few_examples")}
    assert f"holds {count} example" in result.errors[0].message


def test_ten_examples_are_enough() -> None:
    assert check(padded()).valid


def test_too_many_image_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "MAX_IMAGE_EXAMPLES", 1)
    image = {"type": "image_url", "image_url": {"url": "https://example.fr/a.png"}}
    with_image = messages(user([image]), assistant())
    result = check(padded(with_image, with_image))
    assert found(result) == {(12, "file", "too_many_image_examples")}


def test_issues_are_capped_but_counted() -> None:
    result = check(padded(*([[1]] * 30)), max_issues=5)
    assert len(result.errors) == 5
    assert result.n_errors == 30
    assert [i.line for i in result.errors] == [11, 12, 13, 14, 15]


def test_callback_sees_valid_examples_only() -> None:
    seen: list[tuple[int, str]] = []
    parser = JsonlParser(on_example=lambda line, fmt, obj: seen.append((line, fmt)))
    parser.feed(padded([1], chat()))
    parser.finish()
    assert seen == [(i, "chat") for i in range(1, 11)] + [(12, "chat")]


def test_feed_after_finish_is_refused() -> None:
    parser = JsonlParser()
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed(b"{}")


def test_issue_as_dict() -> None:
    issue = Issue(3, "messages[0].role", "unrecognized_role", "Line 3, messages[0].role: …")
    assert issue.as_dict() == {
        "line": 3,
        "param": "messages[0].role",
        "code": "unrecognized_role",
        "message": "Line 3, messages[0].role: …",
    }


def test_every_documented_code_is_exercised() -> None:
    """The module docstring lists the codes; each appears in a test case above."""
    documented = {
        text.split()[0]
        for text in (formats.__doc__ or "").splitlines()
        if text.startswith("  ") and not text.startswith("   ")
    }
    exercised = {case[3] for case in CHAT_CASES + PREFERENCE_CASES + REINFORCEMENT_CASES} | {
        "unknown_format",
        "line_too_long",
        "too_few_examples",
        "too_many_image_examples",
        "utf8_bom",
        "tool_call_id_mismatch",
        "identical_outputs",
    }
    assert documented - exercised == set()


# --- robustness --------------------------------------------------------------------------------

KEYS = [
    "messages",
    "role",
    "content",
    "weight",
    "tool_calls",
    "function",
    "arguments",
    "name",
    "id",
    "type",
    "text",
    "image_url",
    "url",
    "tools",
    "functions",
    "input",
    "preferred_output",
    "non_preferred_output",
    "tool_call_id",
    "function_call",
    "parallel_tool_calls",
    "prompt",
]
ROLES = ["system", "user", "assistant", "tool", "function", "developer"]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(ROLES + ["", "{}", "function", "text", "image_url", "https://x/a.png"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=25,
)


MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(ROLES)},
    optional={key: JSON for key in ["content", "weight", "tool_calls", "name", "tool_call_id"]},
)
EXAMPLE = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5) | st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE | JSON, max_size=4)},
    optional={"tools": JSON, "functions": JSON, "answer": JSON},
)


@settings(database=None, max_examples=300, deadline=None)
@given(st.lists(EXAMPLE, min_size=1, max_size=4))
def test_arbitrary_json_never_raises(objects: list[dict[str, Any]]) -> None:
    for fmt in (None, "chat", "preference", "reinforcement"):
        result = check(jsonl(*objects), format_hint=fmt)
        assert result.n_examples == len(objects)
        assert all(issue.message.startswith(("Line", "The file")) for issue in result.errors)
