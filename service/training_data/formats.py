"""Structural validation of fine-tuning JSONL: formats, per-line rules and the streaming parser.

Formats: "chat" (supervised), "preference" (DPO), "reinforcement" (RFT); see the reference, §4.
Error codes (Issue.code), all reported with a 1-based line number:

line level (param "line")
  invalid_encoding       the line is not strict UTF-8 (UTF-16/UTF-32 byte-order mark or NUL bytes:
                         the message says "UTF-16"; a UTF-16/32 file is reported once, on line 1)
  invalid_json           the line is not valid JSON (NaN/Infinity refused too)
  line_too_long          the line exceeds the parser's max_line_bytes (it is skipped)
  data_type              the line is JSON but not an object (e.g. an array)
  unknown_format         the first example is neither chat, preference nor reinforcement
  unsupported_format     a legacy {"prompt", "completion"} line; chat format is required
  mixed_formats          the line's shape differs from the file's format (detected earlier)
example level (param: the field path, e.g. "messages[2].role")
  missing_messages_list  `messages` is missing or not a list
  empty_messages         `messages` is an empty list
  message_data_type      a message is not an object
  message_missing_key    a required key is missing: role; tool_call_id (tool); name (function)
  message_unrecognized_key  a key that this role does not accept (including `weight` outside SFT)
  unrecognized_role      a role this format does not accept (developer in SFT/DPO, system in RFT)
  missing_content        content missing, null or empty (assistant tool/function calls excepted)
  invalid_content        content is neither a string nor a list of parts
  invalid_content_part   a content part is malformed or of an unsupported type
  image_not_allowed      an image outside a user message, or in a DPO example (text only)
  too_many_images        more than 10 images in one example
  invalid_name           `name` is not a non-empty string
  invalid_weight         `weight` is not 0 or 1, or is on a non-assistant message
  example_missing_assistant_message   a supervised example has no assistant message
  example_all_weights_zero            every assistant message has weight 0 (nothing to train on)
  invalid_tool_calls     `tool_calls` malformed (list of {id, type: "function", function: {name,
                         arguments}})
  invalid_tool_call_arguments  `function.arguments` is not a string holding JSON
  invalid_function_call  `function_call` is not {name, arguments: JSON string}
  invalid_tools          `tools` is not a list of {type: "function", function: {name, ...}}
  invalid_functions      `functions` is not a list of 1..128 {name, ...}
  invalid_parallel_tool_calls  `parallel_tool_calls` is not a boolean
  unrecognized_key       a top-level or `input` key that the preference format does not accept
  missing_input          preference: `input` missing or not an object
  input_ends_with_assistant  preference: the last input message is an assistant message
  missing_output         preference: `preferred_output` / `non_preferred_output` missing
  invalid_output         preference: an output is not a list of exactly one assistant message
                         (its content must be a string: invalid_content otherwise)
  last_message_not_user  reinforcement: the final message must have the user role
file level (param "file")
  too_few_examples       fewer than 10 examples
  too_many_image_examples  more than 50,000 examples with images
Warnings: utf8_bom (a UTF-8 byte-order mark on line 1 is accepted and ignored),
tool_call_id_mismatch (a tool message answers no earlier tool call), identical_outputs (DPO).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeGuard

__all__ = [
    "FORMATS",
    "MIN_EXAMPLES",
    "Format",
    "Issue",
    "JsonlParser",
    "ParseResult",
    "read_chunks",
    "validate_chunks",
    "validate_file",
    "validate_lines",
]

Format = Literal["chat", "preference", "reinforcement"]
FORMATS: Final[tuple[Format, ...]] = ("chat", "preference", "reinforcement")

MIN_EXAMPLES: Final = 10
MAX_IMAGES_PER_EXAMPLE: Final = 10
MAX_IMAGE_EXAMPLES: Final = 50_000
MAX_FUNCTIONS: Final = 128
DEFAULT_MAX_ISSUES: Final = 100
DEFAULT_MAX_LINE_BYTES: Final = 64 * 1024 * 1024
_READ_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a training file."""

    line: int
    param: str
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        """Return the issue as a JSON-ready dict."""
        return {"line": self.line, "param": self.param, "code": self.code, "message": self.message}


# --- findings of one line ----------------------------------------------------------------------

# (param, code, detail): the parser turns each into an Issue whose message names the line.
Finding = tuple[str, str, str]


class _Findings:
    """Errors and warnings found while checking one example."""

    __slots__ = ("errors", "warnings")

    def __init__(self) -> None:
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []

    def error(self, param: str, code: str, detail: str) -> None:
        self.errors.append((param, code, detail))

    def warn(self, param: str, code: str, detail: str) -> None:
        self.warnings.append((param, code, detail))


@dataclass(slots=True)
class _ExampleInfo:
    """What the statistics need to know about one checked example."""

    n_messages: int = 0
    n_assistant: int = 0
    n_trainable: int = 0
    n_images: int = 0
    has_tools: bool = False
    has_reference_fields: bool = False
    last_role: str | None = None
    # Created on the first tool call only: most examples have none.
    tool_call_ids: set[str] | None = None


# --- message rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _MessageRules:
    """What one format accepts in a list of messages."""

    label: str  # for messages: "supervised fine-tuning"
    keys: Mapping[str, frozenset[str]]  # allowed keys, per accepted role
    hints: Mapping[str, str]  # why a role is refused and what to use instead
    image_roles: frozenset[str] = frozenset()
    string_content_only: bool = False


def _keys(*names: str) -> frozenset[str]:
    return frozenset(("role", "content", *names))


_CHAT_RULES = _MessageRules(
    label="supervised fine-tuning",
    keys={
        "system": _keys("name"),
        "user": _keys("name"),
        "assistant": _keys("name", "weight", "tool_calls", "function_call"),
        "tool": _keys("tool_call_id"),
        "function": _keys("name"),
    },
    hints={
        "developer": "supervised fine-tuning does not accept the 'developer' role; use 'system'"
    },
    image_roles=frozenset({"user"}),
)
_DPO_INPUT_RULES = _MessageRules(
    label="preference (DPO) input",
    keys={
        "system": _keys("name"),
        "user": _keys("name"),
        "assistant": _keys("name", "tool_calls", "function_call"),
        "tool": _keys("tool_call_id"),
        "function": _keys("name"),
    },
    hints={
        "developer": "preference fine-tuning does not accept the 'developer' role; use 'system'"
    },
)
_DPO_OUTPUT_RULES = _MessageRules(
    label="preference (DPO) output",
    keys={"assistant": _keys()},
    hints={},
    string_content_only=True,
)
_RFT_RULES = _MessageRules(
    label="reinforcement fine-tuning",
    keys={
        "developer": _keys("name"),
        "user": _keys("name"),
        "assistant": _keys("name", "tool_calls"),
        "tool": _keys("tool_call_id"),
    },
    hints={
        "system": "reinforcement fine-tuning does not accept the 'system' role; use 'developer'",
        "function": "reinforcement fine-tuning does not accept the 'function' role; use 'tool'",
    },
    image_roles=frozenset({"user"}),
)
_IMAGE_DETAILS = frozenset({"low", "high", "auto"})
_IMAGE_URL_PREFIXES = ("https://", "http://", "data:image/")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _is_name(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def _check_function(function: Any, p: str, code: str, args_code: str, out: _Findings) -> None:
    """Check a {name, arguments} object (a tool call's `function` or a `function_call`)."""
    if not isinstance(function, dict):
        out.error(p, code, "must be an object with 'name' and 'arguments'")
        return
    if not _is_name(function.get("name")):
        out.error(f"{p}.name", code, "must be a non-empty string naming the function")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        out.error(f"{p}.arguments", args_code, "must be a string holding JSON, e.g. '{\"x\": 1}'")
    elif not _is_json(arguments):
        out.error(f"{p}.arguments", args_code, "is not valid JSON")


def _check_tool_calls(calls: Any, p: str, out: _Findings, info: _ExampleInfo) -> None:
    if not isinstance(calls, list) or not calls:
        out.error(p, "invalid_tool_calls", "must be a non-empty list of tool calls")
        return
    for j, call in enumerate(calls):
        q = f"{p}[{j}]"
        if not isinstance(call, dict):
            out.error(q, "invalid_tool_calls", "must be an object {id, type, function}")
            continue
        call_id = call.get("id")
        if _is_name(call_id):
            if info.tool_call_ids is None:
                info.tool_call_ids = set()
            info.tool_call_ids.add(call_id)
        else:
            out.error(f"{q}.id", "invalid_tool_calls", "must be a non-empty string")
        if call.get("type") != "function":
            out.error(f"{q}.type", "invalid_tool_calls", "must be 'function'")
        for key in call.keys() - {"id", "type", "function"}:
            out.error(f"{q}.{key}", "invalid_tool_calls", f"'{key}' is not a tool-call field")
        _check_function(
            call.get("function"),
            f"{q}.function",
            "invalid_tool_calls",
            "invalid_tool_call_arguments",
            out,
        )


def _check_image(part: dict[str, Any], q: str, out: _Findings) -> None:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url.startswith(_IMAGE_URL_PREFIXES):
        out.error(
            f"{q}.image_url.url",
            "invalid_content_part",
            "must be an https:// URL or a data:image/...;base64 URL",
        )
    elif isinstance(image, dict) and image.get("detail", "auto") not in _IMAGE_DETAILS:
        out.error(f"{q}.image_url.detail", "invalid_content_part", "must be low, high or auto")


def _check_parts(
    parts: list[Any], p: str, role: str, rules: _MessageRules, out: _Findings, info: _ExampleInfo
) -> None:
    """Check list content; an empty list, or one without text or image, counts as missing."""
    useful = 0
    n_errors = len(out.errors)
    for j, part in enumerate(parts):
        q = f"{p}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if isinstance(part.get("text"), str):
                useful += 1
            else:
                out.error(f"{q}.text", "invalid_content_part", "must be a string")
        elif kind == "image_url":
            if role not in rules.image_roles:
                where = "user messages" if rules.image_roles else "no message"
                out.error(
                    q,
                    "image_not_allowed",
                    f"images are allowed in {where} for {rules.label}, not in {role} messages",
                )
            else:
                _check_image(part, q, out)
                info.n_images += 1
                useful += 1
        else:
            out.error(
                q,
                "invalid_content_part",
                "must be an object with type 'text' or 'image_url'"
                + (f" (got type {kind!r})" if kind is not None else ""),
            )
    if not useful and len(out.errors) == n_errors:
        out.error(p, "missing_content", "holds no text or image")


def _check_content(
    message: dict[str, Any],
    p: str,
    role: str,
    rules: _MessageRules,
    out: _Findings,
    info: _ExampleInfo,
) -> None:
    content = message.get("content")
    if type(content) is str and content:
        return
    # An assistant turn that calls a tool or function may leave its content empty.
    calls = role == "assistant" and ("tool_calls" in message or "function_call" in message)
    if content is None or content == "":
        if not calls:
            out.error(f"{p}.content", "missing_content", f"a {role} message needs content")
    elif isinstance(content, list) and not rules.string_content_only:
        _check_parts(content, f"{p}.content", role, rules, out, info)
    else:
        kind = "a string" if rules.string_content_only else "a string or a list of content parts"
        out.error(f"{p}.content", "invalid_content", f"must be {kind}")


def _check_unknown_keys(
    message: dict[str, Any],
    allowed: frozenset[str],
    p: str,
    role: str,
    rules: _MessageRules,
    out: _Findings,
) -> None:
    for key in message.keys() - allowed:
        if key == "weight" and rules is _CHAT_RULES:
            out.error(
                f"{p}.weight", "invalid_weight", "weight is only allowed on assistant messages"
            )
        else:
            accepted = ", ".join(sorted(allowed))
            out.error(
                f"{p}.{key}",
                "message_unrecognized_key",
                f"'{key}' is not accepted in a {role} message for {rules.label} "
                f"(accepted: {accepted})",
            )


def _check_role_fields(
    message: dict[str, Any], p: str, role: str, out: _Findings, info: _ExampleInfo
) -> None:
    """Check the keys that only some roles carry (weight, calls, tool_call_id, name)."""
    if role == "assistant":
        info.n_assistant += 1
        weight = message.get("weight", 1)
        if type(weight) not in (int, float) or weight not in (0, 1):
            out.error(f"{p}.weight", "invalid_weight", "must be 0 or 1")
            # Counted as trainable so that one bad weight is not reported twice.
            info.n_trainable += 1
        elif weight:
            info.n_trainable += 1
        if "tool_calls" in message:
            _check_tool_calls(message["tool_calls"], f"{p}.tool_calls", out, info)
        if "function_call" in message:
            _check_function(
                message["function_call"],
                f"{p}.function_call",
                "invalid_function_call",
                "invalid_function_call",
                out,
            )
    elif role == "tool":
        call_id = message.get("tool_call_id")
        if "tool_call_id" not in message:
            out.error(f"{p}.tool_call_id", "message_missing_key", "a tool message needs one")
        elif not _is_name(call_id):
            out.error(f"{p}.tool_call_id", "message_missing_key", "must be a non-empty string")
        elif info.tool_call_ids is None or call_id not in info.tool_call_ids:
            out.warn(
                f"{p}.tool_call_id",
                "tool_call_id_mismatch",
                f"{call_id!r} answers no tool call made earlier in the example",
            )
    elif role == "function" and "name" not in message:
        out.error(f"{p}.name", "message_missing_key", "a function message needs the function name")
    if "name" in message and not _is_name(message["name"]):
        out.error(f"{p}.name", "invalid_name", "must be a non-empty string")


def _check_message(
    message: Any, p: str, rules: _MessageRules, out: _Findings, info: _ExampleInfo
) -> None:
    if not isinstance(message, dict):
        out.error(p, "message_data_type", "each message must be a JSON object")
        return
    role = message.get("role")
    if not isinstance(role, str) or role not in rules.keys:
        if "role" not in message:
            out.error(f"{p}.role", "message_missing_key", "the message has no 'role'")
        else:
            accepted = ", ".join(rules.keys)
            hint = rules.hints.get(role) if isinstance(role, str) else None
            out.error(
                f"{p}.role",
                "unrecognized_role",
                hint or f"{role!r} is not a role for {rules.label} (accepted: {accepted})",
            )
        return
    info.last_role = role
    allowed = rules.keys[role]
    if not allowed.issuperset(message):
        _check_unknown_keys(message, allowed, p, role, rules, out)
    _check_content(message, p, role, rules, out, info)
    _check_role_fields(message, p, role, out, info)


def _check_messages(
    messages: Any, p: str, rules: _MessageRules, out: _Findings, info: _ExampleInfo
) -> bool:
    """Check a list of messages; return False when there is no usable list at all."""
    if not isinstance(messages, list):
        out.error(p, "missing_messages_list", f"'{p}' must be a list of messages")
        return False
    if not messages:
        out.error(p, "empty_messages", f"'{p}' must hold at least one message")
        return False
    for i, message in enumerate(messages):
        info.last_role = None
        _check_message(message, f"{p}[{i}]", rules, out, info)
    info.n_messages += len(messages)
    if info.n_images > MAX_IMAGES_PER_EXAMPLE:
        out.error(
            p,
            "too_many_images",
            f"holds {info.n_images} images; at most {MAX_IMAGES_PER_EXAMPLE} per example",
        )
    return True


# --- example-level rules -----------------------------------------------------------------------


def _check_tools(obj: Mapping[str, Any], p: str, out: _Findings, info: _ExampleInfo) -> None:
    """Check the optional `tools`, `functions` and `parallel_tool_calls` keys of `obj`."""
    if "tools" in obj:
        tools = obj["tools"]
        info.has_tools = True
        if not isinstance(tools, list):
            out.error(f"{p}tools", "invalid_tools", "must be a list of tool definitions")
        else:
            for j, tool in enumerate(tools):
                q = f"{p}tools[{j}]"
                if not isinstance(tool, dict) or tool.get("type") != "function":
                    out.error(q, "invalid_tools", "must be an object with type 'function'")
                elif not isinstance(tool.get("function"), dict):
                    out.error(f"{q}.function", "invalid_tools", "must be a function definition")
                elif not _is_name(tool["function"].get("name")):
                    out.error(f"{q}.function.name", "invalid_tools", "must be a non-empty string")
    if "functions" in obj:
        functions = obj["functions"]
        info.has_tools = True
        if not isinstance(functions, list) or not 1 <= len(functions) <= MAX_FUNCTIONS:
            out.error(
                f"{p}functions",
                "invalid_functions",
                f"must be a list of 1 to {MAX_FUNCTIONS} function definitions",
            )
        else:
            for j, function in enumerate(functions):
                if not isinstance(function, dict) or not _is_name(function.get("name")):
                    out.error(
                        f"{p}functions[{j}]", "invalid_functions", "must be an object with a name"
                    )
    if "parallel_tool_calls" in obj and not isinstance(obj["parallel_tool_calls"], bool):
        out.error(f"{p}parallel_tool_calls", "invalid_parallel_tool_calls", "must be true or false")


def _check_chat(obj: dict[str, Any], out: _Findings) -> _ExampleInfo:
    """Check one supervised (chat) example."""
    info = _ExampleInfo()
    if _check_messages(obj.get("messages"), "messages", _CHAT_RULES, out, info):
        if not info.n_assistant:
            out.error(
                "messages",
                "example_missing_assistant_message",
                "the example has no assistant message to train on",
            )
        elif not info.n_trainable:
            out.error(
                "messages",
                "example_all_weights_zero",
                "every assistant message has weight 0, so there is nothing to train on",
            )
    _check_tools(obj, "", out, info)
    return info


_PREFERENCE_TOP_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
_PREFERENCE_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
_RENAMED_KEYS = {
    "preferred_completion": "preferred_output",
    "non_preferred_completion": "non_preferred_output",
}


def _check_output(obj: dict[str, Any], key: str, out: _Findings) -> None:
    if key not in obj:
        out.error(key, "missing_output", f"a preference example needs '{key}'")
        return
    output = obj[key]
    if not isinstance(output, list) or len(output) != 1:
        out.error(key, "invalid_output", "must be a list holding exactly one assistant message")
        return
    message = output[0]
    if isinstance(message, dict) and message.get("role") != "assistant":
        out.error(f"{key}[0].role", "invalid_output", "the output message must be an assistant one")
        return
    _check_message(message, f"{key}[0]", _DPO_OUTPUT_RULES, out, _ExampleInfo())


def _check_preference(obj: dict[str, Any], out: _Findings) -> _ExampleInfo:
    """Check one preference (DPO) example."""
    info = _ExampleInfo()
    for key in obj.keys() - _PREFERENCE_TOP_KEYS:
        renamed = _RENAMED_KEYS.get(key)
        hint = f"; it is now called '{renamed}'" if renamed else ""
        out.error(key, "unrecognized_key", f"'{key}' is not a preference-format key{hint}")
    payload = obj.get("input")
    if not isinstance(payload, dict):
        out.error("input", "missing_input", "must be an object holding 'messages'")
    else:
        for key in payload.keys() - _PREFERENCE_INPUT_KEYS:
            out.error(f"input.{key}", "unrecognized_key", f"'{key}' is not accepted in 'input'")
        if (
            _check_messages(payload.get("messages"), "input.messages", _DPO_INPUT_RULES, out, info)
            and info.last_role == "assistant"
        ):
            last = len(payload["messages"]) - 1
            out.error(
                f"input.messages[{last}].role",
                "input_ends_with_assistant",
                "the input must not end with an assistant message: the preferred and "
                "non-preferred outputs are the final assistant turn",
            )
        _check_tools(payload, "input.", out, info)
    _check_output(obj, "preferred_output", out)
    _check_output(obj, "non_preferred_output", out)
    if (
        not out.errors
        and obj["preferred_output"][0]["content"] == obj["non_preferred_output"][0]["content"]
    ):
        out.warn("non_preferred_output", "identical_outputs", "is identical to preferred_output")
    return info


_RFT_RESERVED_KEYS = frozenset({"messages", "tools"})


def _check_reinforcement(obj: dict[str, Any], out: _Findings) -> _ExampleInfo:
    """Check one reinforcement (RFT) example; keys other than messages/tools are grader fields."""
    info = _ExampleInfo(has_reference_fields=not _RFT_RESERVED_KEYS.issuperset(obj))
    messages = obj.get("messages")
    if (
        _check_messages(messages, "messages", _RFT_RULES, out, info)
        and info.last_role not in (None, "user")
        and isinstance(messages, list)
    ):
        last = len(messages) - 1
        out.error(
            f"messages[{last}].role",
            "last_message_not_user",
            "the final message must have the 'user' role: the model answers it during training",
        )
    if "tools" in obj:
        _check_tools({"tools": obj["tools"]}, "", out, info)
    return info


_CHECKS: dict[Format, Callable[[dict[str, Any], _Findings], _ExampleInfo]] = {
    "chat": _check_chat,
    "preference": _check_preference,
    "reinforcement": _check_reinforcement,
}

# --- format detection --------------------------------------------------------------------------

_CHAT_TOP_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PREFERENCE_MARKERS = frozenset({"preferred_output", "non_preferred_output", *_RENAMED_KEYS})
# Shapes a line may have, beyond the three formats: "messages" is a messages line without
# reference fields, valid as chat or as reinforcement.
Shape = Literal["messages", "reinforcement", "preference", "legacy", "unknown"]
_COMPATIBLE: dict[Format, frozenset[str]] = {
    "chat": frozenset({"messages"}),
    "reinforcement": frozenset({"messages", "reinforcement"}),
    "preference": frozenset({"preference"}),
}


def _shape_name(obj: dict[str, Any], shape: Shape) -> str:
    if shape == "reinforcement":
        fields = ", ".join(sorted(obj.keys() - _CHAT_TOP_KEYS))
        return f"a reinforcement example (it has grader reference fields: {fields})"
    return "a chat example" if shape == "messages" else "a preference example"


def _shape(obj: dict[str, Any]) -> Shape:
    if not _PREFERENCE_MARKERS.isdisjoint(obj) or ("input" in obj and "messages" not in obj):
        return "preference"
    if "messages" in obj:
        return "messages" if _CHAT_TOP_KEYS.issuperset(obj) else "reinforcement"
    if "prompt" in obj or "completion" in obj:
        return "legacy"
    return "unknown"


def _has_assistant(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, dict) and m.get("role") == "assistant" for m in messages
    )


def _detect(obj: dict[str, Any], shape: Shape, hint: Format | None) -> Format | None:
    """Pick the file's format from its first recognisable example (`hint` settles ambiguity)."""
    if shape == "preference":
        return "preference"
    if shape == "reinforcement":
        return "reinforcement"
    if shape != "messages":
        return None
    if hint in ("chat", "reinforcement"):
        return hint
    messages = obj.get("messages")
    if isinstance(messages, list) and not _has_assistant(messages):
        return "reinforcement"
    return "chat"


# --- streaming parser --------------------------------------------------------------------------


# NaN and Infinity are not JSON; Python's decoder accepts them unless told otherwise.
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)

ExampleCallback = Callable[[int, Format, dict[str, Any]], None]


@dataclass
class ParseResult:
    """Outcome of validating a file: its format, counts, the first issues and statistics."""

    format: Format | None
    n_examples: int
    errors: list[Issue]
    n_errors: int
    warnings: list[Issue]
    n_warnings: int
    stats: dict[str, Any]

    @property
    def valid(self) -> bool:
        """Tell whether the file has no errors at all."""
        return self.n_errors == 0


class JsonlParser:
    """Validate a JSONL upload fed in chunks of any size, in bounded memory.

    Keeps counters, the first `max_issues` errors and warnings and small aggregates, never the
    examples. Blank lines are skipped but counted, so line numbers match a text editor. A UTF-8
    byte-order mark on line 1 is accepted (warning `utf8_bom`). `on_example(line, format, obj)`
    is called for each structurally valid example, e.g. to count its tokens.
    """

    def __init__(
        self,
        *,
        max_issues: int = DEFAULT_MAX_ISSUES,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        format_hint: Format | None = None,
        on_example: ExampleCallback | None = None,
    ) -> None:
        self.max_issues = max_issues
        self.max_line_bytes = max_line_bytes
        self.format_hint = format_hint
        self.on_example = on_example
        self.format: Format | None = None
        self.format_line = 0
        self._pending = bytearray()
        self._skipping = False  # inside a line longer than max_line_bytes
        self._abandoned = False  # the whole file is in a wrong encoding
        self._finished = False  # end() was called
        self._checked = False  # finish() ran the file-level checks
        self.errors: list[Issue] = []
        self.warnings: list[Issue] = []
        self.n_errors = 0
        self.n_warnings = 0
        self.n_lines = 0
        self.n_blank = 0
        self.n_examples = 0
        self.n_valid = 0
        self.n_bytes = 0
        self.n_messages = 0
        self.min_messages = 0
        self.max_messages = 0
        self.n_assistant = 0
        self.n_with_tools = 0
        self.n_with_images = 0
        self.n_with_reference_fields = 0

    # feeding

    def feed(self, chunk: bytes) -> None:
        """Consume the next bytes of the file (any size, any boundary)."""
        if self._finished:
            raise RuntimeError("feed() after end() or finish()")
        self.n_bytes += len(chunk)
        if self._abandoned or not chunk:
            return
        pieces = chunk.split(b"\n")
        tail = pieces.pop()
        if pieces:
            first = pieces[0]
            if self._skipping:
                first = b""  # the rest of an over-long line: _end_line reports it
            elif self._pending:
                self._pending += first
                first = bytes(self._pending)
                self._pending.clear()
            self._end_line(first)
            for piece in pieces[1:]:
                self._end_line(piece)
        self._add_pending(tail)

    def feed_line(self, line: bytes) -> None:
        """Consume one whole line (a trailing newline is optional); do not mix with feed()."""
        if self._pending:
            raise RuntimeError("feed_line() while a line fed by feed() is incomplete")
        if self._finished:
            raise RuntimeError("feed_line() after end() or finish()")
        self.n_bytes += len(line)
        if line.endswith(b"\n"):
            line = line[:-1]
        if not self._abandoned:
            self._end_line(line)

    def _add_pending(self, data: bytes) -> None:
        if self._skipping or not data:
            return
        self._pending += data
        if len(self._pending) > self.max_line_bytes:
            # Drop the partial line now so that memory stays bounded; report it at its end.
            self._pending.clear()
            self._skipping = True

    def _end_line(self, raw: bytes) -> None:
        if self._skipping or len(raw) > self.max_line_bytes:
            self._skipping = False
            self.n_lines += 1
            self.n_examples += 1
            self._line_issue(
                self.n_lines,
                "line_too_long",
                f"the line is longer than {self.max_line_bytes} bytes and was skipped",
            )
            return
        if self._abandoned:
            return
        self._line(raw)

    def end(self) -> None:
        """Process the last line if it has no newline; feeding more is then refused."""
        if not self._finished:
            self._finished = True
            if self._pending or self._skipping:
                last = bytes(self._pending)
                self._pending.clear()
                self._end_line(last)

    def finish(self) -> ParseResult:
        """End the input, run the file-level checks once and return the results."""
        if not self._checked:
            self.end()
            self._checked = True
            self._file_checks()
        return ParseResult(
            format=self.format,
            n_examples=self.n_examples,
            errors=list(self.errors),
            n_errors=self.n_errors,
            warnings=list(self.warnings),
            n_warnings=self.n_warnings,
            stats=self.stats(),
        )

    def stats(self) -> dict[str, Any]:
        """Return the statistics gathered so far (JSON-ready)."""
        mean = round(self.n_messages / self.n_valid, 2) if self.n_valid else 0.0
        return {
            "n_lines": self.n_lines,
            "n_blank_lines": self.n_blank,
            "n_examples": self.n_examples,
            "n_valid_examples": self.n_valid,
            "bytes": self.n_bytes,
            "messages_per_example": {
                "min": self.min_messages,
                "mean": mean,
                "max": self.max_messages,
            },
            "n_assistant_messages": self.n_assistant,
            "n_examples_with_tools": self.n_with_tools,
            "n_examples_with_images": self.n_with_images,
            "n_examples_with_reference_fields": self.n_with_reference_fields,
        }

    # issues

    def _add(self, issue: Issue, *, warning: bool = False) -> None:
        if warning:
            self.n_warnings += 1
            if len(self.warnings) < self.max_issues:
                self.warnings.append(issue)
        else:
            self.n_errors += 1
            if len(self.errors) < self.max_issues:
                self.errors.append(issue)

    def add_issue(self, issue: Issue, *, warning: bool = False) -> None:
        """Record an issue found outside the parser (e.g. by a report), under the same caps."""
        self._add(issue, warning=warning)

    def _line_issue(self, line: int, code: str, detail: str, *, warning: bool = False) -> None:
        self._add(Issue(line, "line", code, f"Line {line}: {detail}."), warning=warning)

    def _example_issues(self, line: int, found: _Findings) -> None:
        for findings, warning in ((found.errors, False), (found.warnings, True)):
            for param, code, detail in findings:
                self._add(
                    Issue(line, param, code, f"Line {line}, {param}: {detail}."), warning=warning
                )

    # one line

    def _line(self, raw: bytes) -> None:
        self.n_lines += 1
        line = self.n_lines
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if line == 1 and not self._check_first_line(raw):
            return
        if line == 1 and raw.startswith(_UTF8_BOM):
            raw = raw[len(_UTF8_BOM) :]
        if not raw or raw.isspace():
            self.n_blank += 1
            return
        self.n_examples += 1
        obj = self._decode(raw, line)
        if obj is not None:
            self._example(obj, line)

    def _check_first_line(self, raw: bytes) -> bool:
        """Spot a file in the wrong encoding once, on line 1, instead of failing every line."""
        for bom, name in _WIDE_BOMS:
            if raw.startswith(bom):
                self._abandon(
                    f"the file is {name} encoded (it starts with a {name} byte-order mark)"
                )
                return False
        if b"\x00" in raw:
            self._abandon("the line holds NUL bytes: the file looks UTF-16 or UTF-32 encoded")
            return False
        if raw.startswith(_UTF8_BOM):
            self._line_issue(
                1, "utf8_bom", "the UTF-8 byte-order mark at the start is ignored", warning=True
            )
        return True

    def _abandon(self, detail: str) -> None:
        self.n_examples += 1
        self._abandoned = True
        self._pending.clear()
        self._line_issue(1, "invalid_encoding", f"{detail}; save it as UTF-8 JSONL")

    def _decode(self, raw: bytes, line: int) -> dict[str, Any] | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if b"\x00" in raw:
                detail = "the line holds NUL bytes: the file looks UTF-16 or UTF-32 encoded"
            else:
                detail = (
                    f"byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} is not valid UTF-8 "
                    "(was the file saved as Latin-1 or Windows-1252?)"
                )
            self._line_issue(line, "invalid_encoding", f"{detail}; save it as UTF-8")
            return None
        try:
            obj = _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            self._line_issue(
                line, "invalid_json", f"invalid JSON ({exc.msg} at column {exc.colno})"
            )
            return None
        except (ValueError, RecursionError) as exc:
            self._line_issue(line, "invalid_json", f"invalid JSON ({exc})")
            return None
        if type(obj) is not dict:
            kind = "an array" if isinstance(obj, list) else f"a JSON {type(obj).__name__}"
            self._line_issue(line, "data_type", f"each line must be a JSON object, not {kind}")
            return None
        return obj

    def _example(self, obj: dict[str, Any], line: int) -> None:
        shape = _shape(obj)
        if shape == "legacy":
            self._line_issue(
                line,
                "unsupported_format",
                "the prompt/completion format is not supported; use the chat format "
                '{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}',
            )
            return
        fmt = self.format
        if fmt is None:
            fmt = _detect(obj, shape, self.format_hint)
            if fmt is None:
                self._line_issue(
                    line,
                    "unknown_format",
                    "the example is neither chat ('messages'), preference ('input', "
                    "'preferred_output', 'non_preferred_output') nor reinforcement",
                )
                return
            self.format, self.format_line = fmt, line
        elif shape != "unknown" and shape not in _COMPATIBLE[fmt]:
            self._line_issue(
                line,
                "mixed_formats",
                f"this line is {_shape_name(obj, shape)} but the file is in the {fmt} format "
                f"(detected on line {self.format_line}); a file holds a single format",
            )
            return
        found = _Findings()
        info = _CHECKS[fmt](obj, found)
        if found.errors or found.warnings:
            self._example_issues(line, found)
        if not found.errors:
            self._count(info)
            if self.on_example is not None:
                self.on_example(line, fmt, obj)

    def _count(self, info: _ExampleInfo) -> None:
        n = info.n_messages
        if not self.n_valid:
            self.min_messages = self.max_messages = n
        elif n < self.min_messages:
            self.min_messages = n
        elif n > self.max_messages:
            self.max_messages = n
        self.n_valid += 1
        self.n_messages += n
        self.n_assistant += info.n_assistant
        self.n_with_tools += info.has_tools
        self.n_with_images += info.n_images > 0
        self.n_with_reference_fields += info.has_reference_fields

    def _file_checks(self) -> None:
        if self._abandoned:
            return
        if self.n_examples < MIN_EXAMPLES:
            self._add(
                Issue(
                    self.n_lines,
                    "file",
                    "too_few_examples",
                    f"The file holds {self.n_examples} example(s); fine-tuning needs at least "
                    f"{MIN_EXAMPLES} (50 to 100 are recommended).",
                )
            )
        if self.n_with_images > MAX_IMAGE_EXAMPLES:
            self._add(
                Issue(
                    self.n_lines,
                    "file",
                    "too_many_image_examples",
                    f"The file holds {self.n_with_images} examples with images; at most "
                    f"{MAX_IMAGE_EXAMPLES} are allowed.",
                )
            )


# --- conveniences ------------------------------------------------------------------------------


def validate_chunks(chunks: Iterable[bytes], **options: Any) -> ParseResult:
    """Validate a file given as byte chunks of any size (options: see JsonlParser)."""
    parser = JsonlParser(**options)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish()


def validate_lines(lines: Iterable[bytes], **options: Any) -> ParseResult:
    """Validate a file given line by line, each line with or without its newline."""
    parser = JsonlParser(**options)
    for line in lines:
        parser.feed_line(line)
    return parser.finish()


def read_chunks(path: Path, size: int = _READ_CHUNK) -> Iterable[bytes]:
    """Yield the bytes of a file in chunks of `size`."""
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def validate_file(path: Path, **options: Any) -> ParseResult:
    """Validate a JSONL file on disk, streaming it (options: see JsonlParser)."""
    return validate_chunks(read_chunks(path), **options)
