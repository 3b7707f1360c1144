"""Baseline: OpenAI cookbook's Chat_finetuning_data_prep.ipynb check, as the notebook runs it.

Usage: .venv/bin/python bench/baseline_cookbook.py FILE.jsonl [--json]

The notebook `json.loads` every line into a list held in memory, counts format errors, counts
tokens with tiktoken cl100k_base (3 per message, +1 per name, +3 for the reply), computes its
distributions and the epoch and billing estimate (reference §5.2). The code below follows the
notebook's cells in order (openai-cookbook examples/Chat_finetuning_data_prep.ipynb, current
revision with MAX_TOKENS_PER_EXAMPLE = 16385). Deviations, each needed to run it here:
  1. the encoding is loaded with service.tokens.load_encoding("cl100k_base") (offline) instead of
     tiktoken.get_encoding, which would download it;
  2. numpy is not installed in this project, so mean/median/quantile are computed in pure Python
     with numpy's default (linear) interpolation;
  3. non-string message values (tool_calls lists, weight ints, null content) are skipped when
     counting tokens: the notebook predates tools and weights and would raise TypeError on them
     (reference §5.2: "tools, weights and images are not counted").
With --json, the notebook's printed output goes to stderr and one JSON line to stdout holding the
check's results, the wall time of the check (encoding load excluded) and the peak RSS.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CpuMeter, current_rss_mib, peak_rss_mib  # noqa: E402

from service.tokens import load_encoding  # noqa: E402


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


def _quantile(values: list[int], q: float) -> float:
    # numpy.quantile's default method ("linear"); np.median is the 0.5 quantile.
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def cookbook_check(data_path: Path, encoding: Any, out: Any = print) -> dict[str, Any]:
    """Run the notebook's cells on `data_path`; `out` receives what the notebook prints."""
    # --- Data loading
    with open(data_path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]

    out("Num examples:", len(dataset))
    out("First example:")
    for message in dataset[0]["messages"]:
        out(message)

    # --- Format validation
    format_errors: defaultdict[str, int] = defaultdict(int)

    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue

        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue

        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1

            if any(
                k not in ("role", "content", "name", "function_call", "weight") for k in message
            ):
                format_errors["message_unrecognized_key"] += 1

            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1

            content = message.get("content", None)
            function_call = message.get("function_call", None)

            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1

        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    if format_errors:
        out("Found errors:")
        for k, v in format_errors.items():
            out(f"{k}: {v}")
    else:
        out("No errors found")

    # --- Token counting utilities
    # not exact!
    def num_tokens_from_messages(
        messages: list[dict[str, Any]], tokens_per_message: int = 3, tokens_per_name: int = 1
    ) -> int:
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                if not isinstance(value, str):
                    continue  # deviation 3 (see the module docstring)
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages: list[dict[str, Any]]) -> int:
        num_tokens = 0
        for message in messages:
            if message["role"] == "assistant":
                if not isinstance(message["content"], str):
                    continue  # deviation 3
                num_tokens += len(encoding.encode(message["content"]))
        return num_tokens

    distributions: dict[str, dict[str, float]] = {}

    def print_distribution(values: list[int], name: str) -> None:
        stats = {
            "min": min(values),
            "max": max(values),
            "mean": _mean(values),
            "median": _quantile(values, 0.5),
            "p10": _quantile(values, 0.1),
            "p90": _quantile(values, 0.9),
        }
        distributions[name] = stats
        out(f"\n#### Distribution of {name}:")
        out(f"min / max: {stats['min']}, {stats['max']}")
        out(f"mean / median: {stats['mean']}, {stats['median']}")
        # The notebook labels the 0.1 and 0.9 quantiles "p5 / p95".
        out(f"p5 / p95: {stats['p10']}, {stats['p90']}")

    # --- Data warnings and token counts
    n_missing_system = 0
    n_missing_user = 0
    n_messages = []
    convo_lens = []
    assistant_message_lens = []

    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))

    out("Num examples missing system message:", n_missing_system)
    out("Num examples missing user message:", n_missing_user)
    print_distribution(n_messages, "num_messages_per_example")
    print_distribution(convo_lens, "num_total_tokens_per_example")
    print_distribution(assistant_message_lens, "num_assistant_tokens_per_example")
    n_too_long = sum(length > 16385 for length in convo_lens)
    out(
        f"\n{n_too_long} examples may be over the 16,385 token limit, they will be truncated "
        "during fine-tuning"
    )

    # --- Cost estimation
    MAX_TOKENS_PER_EXAMPLE = 16385

    TARGET_EPOCHS = 3
    MIN_TARGET_EXAMPLES = 100
    MAX_TARGET_EXAMPLES = 25000
    MIN_DEFAULT_EPOCHS = 1
    MAX_DEFAULT_EPOCHS = 25

    n_epochs = TARGET_EPOCHS
    n_train_examples = len(dataset)
    if n_train_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        n_epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_train_examples)
    elif n_train_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        n_epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_train_examples)

    n_billing_tokens_in_dataset = sum(
        min(MAX_TOKENS_PER_EXAMPLE, length) for length in convo_lens
    )
    out(
        f"Dataset has ~{n_billing_tokens_in_dataset} tokens that will be charged for during "
        "training"
    )
    out(f"By default, you'll train for {n_epochs} epochs on this dataset")
    out(f"By default, you'll be charged for ~{n_epochs * n_billing_tokens_in_dataset} tokens")

    return {
        "n_examples": len(dataset),
        "format_errors": dict(format_errors),
        "n_missing_system": n_missing_system,
        "n_missing_user": n_missing_user,
        "distributions": distributions,
        "total_tokens": sum(convo_lens),
        "n_too_long": n_too_long,
        "billable_tokens": n_billing_tokens_in_dataset,
        "n_epochs": n_epochs,
        "billed_tokens": n_epochs * n_billing_tokens_in_dataset,
    }


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    as_json = "--json" in argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(args[0])
    encoding = load_encoding("cl100k_base")  # deviation 1 (see the module docstring)

    def out(*values: Any) -> None:
        print(*values, file=sys.stderr if as_json else sys.stdout)

    rss_before = current_rss_mib()
    with CpuMeter() as meter:
        result = cookbook_check(path, encoding, out)
    wall = meter.wall_s
    if as_json:
        record = {
            "method": "cookbook",
            **meter.as_dict(),
            "peak_rss_mib": peak_rss_mib(),
            "rss_before_mib": rss_before,
            **result,
        }
        print(json.dumps(record))
    else:
        print(f"\n[baseline] {result['n_examples']} examples in {wall:.2f} s, "
              f"peak RSS {peak_rss_mib()} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
