"""A chat message flattens to template text one way, for training rows, token counts and graders."""

from __future__ import annotations

import json

from service.engines.local import data
from service.engines.local.chat import message_text, plain_message
from service.engines.local.graders import grade
from service.engines.local.tokenizer import HuggingFaceCounter

TOOL_CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "réserver", "arguments": '{"salle": "Défense"}'},
        }
    ],
}


def test_text_parts_are_joined_and_tool_calls_follow_as_json_with_their_own_characters():
    assert message_text({"role": "user", "content": [
        {"type": "text", "text": "Bonjour "}, {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "Mme Lefèvre"},
    ]}) == "Bonjour Mme Lefèvre"
    text = message_text(TOOL_CALL)
    assert "réserver" in text and "\\u" not in text  # non-ASCII kept as is, never escaped
    assert json.loads(text) == [TOOL_CALL["tool_calls"][0]["function"]]


def test_roles_become_the_three_every_template_knows():
    assert plain_message({"role": "developer", "content": "Sois bref."})["role"] == "system"
    assert plain_message({"role": "tool", "content": "ok", "tool_call_id": "c"})["role"] == "user"
    assert plain_message({"role": "function", "name": "f", "content": "ok"})["role"] == "user"
    assert plain_message({"role": "assistant", "content": "Merci"}) == {
        "role": "assistant", "content": "Merci"
    }
    # A single content part, as grader inputs may give.
    assert message_text({"role": "user", "content": {"type": "input_text", "text": "Note"}}) == (
        "Note"
    )


def test_training_rows_and_token_counts_see_the_same_text(tmp_path, tiny_model_dir):
    messages = [{"role": "developer", "content": "Réponds en français."},
                {"role": "user", "content": "Réserve la salle."}, TOOL_CALL]
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
    (row,) = data.supervised_rows(path)
    assert row["prompt"] + row["completion"] == [plain_message(m) for m in messages]

    counter = HuggingFaceCounter(str(tiny_model_dir))
    rendered = counter._tokenizer.apply_chat_template(
        [plain_message(m) for m in messages], tokenize=True
    )
    assert counter.count_example(messages) == len(rendered["input_ids"])


def test_a_score_model_grader_is_asked_the_flattened_text():
    asked = []

    def scorer(model, messages):
        asked.append(messages)
        return "1"

    grader = {
        "type": "score_model", "name": "judge", "model": "judge",
        "input": [{"role": "developer", "content": [{"type": "input_text",
                                                     "text": "Note: {{ sample.output_text }}"}]}],
    }
    assert grade(grader, "Très bien", {}, scorer) == 1.0
    assert asked == [[{"role": "system", "content": "Note: Très bien"}]]
