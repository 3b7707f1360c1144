"""The check report: method/format fit, exact tokens, limits, epochs, billed tokens and cost."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from service.models.registry import OPENAI_BASE_MODELS
from service.tokens import TiktokenCounter, load_encoding
from service.training_data.report import CheckReport, build_report, default_epochs

BASE = OPENAI_BASE_MODELS[0]  # gpt-4o-mini: o200k_base, 65,536 tokens, $3.00 per million
COUNTER = TiktokenCounter(load_encoding("o200k_base"))

SYSTEM = "Tu rédiges des e-mails professionnels pour le service client."
REQUESTS = [
    "Informer Mme Leclercq-Amadou que son dossier est transmis à l'équipe d'ingénierie.",
    "Send a tailored offer to Mr. Okafor for meeting room furniture.",
    "Relancer la société Brisevent pour la facture F-2291 impayée depuis 30 jours.",
    "Thank Ms. Patel for her feedback on the onboarding session.",
]
REPLIES = [
    "Objet : Votre dossier\n\nBonjour Madame,\n\nVotre dossier est entre les mains de notre équipe "
    "d'ingénierie, qui vous répondra sous 48 heures.\n\nCordialement,\nLe support",
    "Subject: Proposal\n\nDear Mr. Okafor,\n\nPlease find our proposal attached: £19,640 excl. VAT."
    "\n\nKind regards,\nRomain",
    "Objet : Facture F-2291\n\nBonjour,\n\nSauf erreur de notre part, la facture F-2291 reste "
    "impayée. Merci de procéder au règlement.\n\nBien cordialement,\nLa comptabilité",
    "Subject: Thank you\n\nDear Ms. Patel,\n\nThank you for your thoughtful feedback.\n\nBest,\nHR",
]


def chat(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{REQUESTS[i % 4]} (réf. {i})"},
            {"role": "assistant", "content": REPLIES[i % 4] * (1 + i % 3)},
        ]
    }


def preference(i: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": REQUESTS[i % 4]}]},
        "preferred_output": [{"role": "assistant", "content": REPLIES[i % 4]}],
        "non_preferred_output": [{"role": "assistant", "content": "c'est fait."}],
    }


def reinforcement(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "developer", "content": "Classe la demande : sales, support, hr, marketing."},
            {"role": "user", "content": REQUESTS[i % 4]},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup_customer"}}],
        "reference_answer": ["support", "sales", "sales", "hr"][i % 4],
    }


def write(tmp_path: Path, items: Sequence[Any], name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8"
    )
    return path


def p95(values: list[int]) -> int:
    return sorted(values)[math.ceil(0.95 * len(values)) - 1]


class WordCounter:
    """One token per word of content: makes the expected figures obvious."""

    def count_text(self, text: str) -> int:
        return len(text.split())

    def count_example(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Any] | None = None,
        functions: Sequence[Any] | None = None,
    ) -> int:
        return sum(self.count_text(str(m.get("content") or "")) for m in messages)


def words(n: int) -> dict[str, Any]:
    """An example of exactly n >= 2 tokens for WordCounter."""
    return {
        "messages": [
            {"role": "user", "content": "rédige"},
            {"role": "assistant", "content": " ".join(["mot"] * (n - 1))},
        ]
    }


def test_report_of_a_valid_chat_file(tmp_path: Path) -> None:
    examples = [chat(i) for i in range(40)]
    report = build_report(write(tmp_path, examples), method="supervised", base=BASE, n_epochs=None)

    counts = [COUNTER.count_example(e["messages"]) for e in examples]
    assert report.valid
    assert (report.object, report.method, report.model, report.format) == (
        "fine_tuning.file_check",
        "supervised",
        "gpt-4o-mini-2024-07-18",
        "chat",
    )
    assert report.n_examples == 40
    assert report.tokens_per_example.min == min(counts)
    assert report.tokens_per_example.max == max(counts)
    assert report.tokens_per_example.mean == round(sum(counts) / 40, 2)
    assert report.tokens_per_example.p95 == p95(counts)
    assert report.total_tokens == report.billable_tokens == sum(counts)
    assert report.n_epochs == 3  # 40 examples x 3 epochs is within [100, 25000]
    assert report.billed_tokens == 3 * sum(counts)
    assert report.estimated_cost_usd == round(3 * sum(counts) / 1_000_000 * 3.00, 6)
    assert report.max_tokens_per_example == 65_536
    assert (report.n_examples_over_limit, report.errors, report.warnings) == (0, [], [])
    assert report.stats["n_valid_examples"] == 40


def test_counts_match_the_cookbook_formula(tmp_path: Path) -> None:
    enc = load_encoding("o200k_base")
    examples = [chat(i) for i in range(10)]
    report = build_report(write(tmp_path, examples), method="supervised", base=BASE, n_epochs=1)
    expected = sum(
        3
        + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in e["messages"])
        for e in examples
    )
    assert report.total_tokens == expected


@pytest.mark.parametrize(
    ("n_examples", "epochs"), [(1, 25), (5, 20), (10, 10), (20, 5), (34, 3), (1000, 3), (10_000, 2)]
)
def test_auto_epochs(tmp_path: Path, n_examples: int, epochs: int) -> None:
    assert default_epochs(n_examples) == epochs
    path = write(tmp_path, [words(3)] * n_examples)
    report = build_report(
        path, method="supervised", base=BASE, n_epochs=None, counter=WordCounter()
    )
    assert report.n_epochs == epochs
    assert report.billed_tokens == 3 * n_examples * epochs


def test_auto_epochs_extremes() -> None:
    assert default_epochs(0) == 25
    assert default_epochs(8333) == 3
    assert default_epochs(8334) == 2
    assert default_epochs(30_000) == 1


def test_explicit_epochs(tmp_path: Path) -> None:
    path = write(tmp_path, [words(4)] * 10)
    report = build_report(path, method="supervised", base=BASE, n_epochs=4, counter=WordCounter())
    assert (report.n_epochs, report.billed_tokens) == (4, 4 * 40)
    with pytest.raises(ValueError):
        build_report(path, method="supervised", base=BASE, n_epochs=0)


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_token_distribution_and_p95(tmp_path: Path, threads: int) -> None:
    path = write(tmp_path, [words(n) for n in range(21, 1, -1)])
    report = build_report(
        path, method="supervised", base=BASE, n_epochs=1, counter=WordCounter(), threads=threads
    )
    stats = report.tokens_per_example
    assert (stats.min, stats.mean, stats.p95, stats.max) == (2, 11.5, 20, 21)
    assert report.total_tokens == 230


def test_p95_nearest_rank_on_a_large_file(tmp_path: Path) -> None:
    sizes = [(i * 37) % 101 + 2 for i in range(1000)]
    path = write(tmp_path, [words(n) for n in sizes])
    report = build_report(path, method="supervised", base=BASE, n_epochs=1, counter=WordCounter())
    assert report.tokens_per_example.p95 == p95(sizes)


def test_examples_over_the_limit_are_warned_and_truncated(tmp_path: Path) -> None:
    small = replace(BASE, max_tokens_per_example=50)
    sizes = [10] * 10 + [80, 50, 51]
    path = write(tmp_path, [words(n) for n in sizes])
    report = build_report(path, method="supervised", base=small, n_epochs=1, counter=WordCounter())
    assert report.valid  # OpenAI truncates long examples, it does not reject them
    assert report.n_examples_over_limit == 2
    assert [(w.line, w.code) for w in report.warnings] == [
        (11, "example_over_token_limit"),
        (13, "example_over_token_limit"),
    ]
    assert "80 tokens" in report.warnings[0].message
    assert report.total_tokens == sum(sizes)
    assert report.billable_tokens == sum(min(50, n) for n in sizes)
    assert report.billed_tokens == report.billable_tokens * report.n_epochs


def test_cost(tmp_path: Path) -> None:
    path = write(tmp_path, [words(1000)] * 10)
    report = build_report(path, method="supervised", base=BASE, n_epochs=3, counter=WordCounter())
    assert report.billed_tokens == 30_000
    assert report.estimated_cost_usd == pytest.approx(0.09)
    free = replace(BASE, training_price_per_million=None)
    report = build_report(path, method="supervised", base=free, n_epochs=3, counter=WordCounter())
    assert report.estimated_cost_usd is None


def test_dpo_bills_input_and_both_outputs(tmp_path: Path) -> None:
    examples = [preference(i) for i in range(10)]
    report = build_report(write(tmp_path, examples), method="dpo", base=BASE, n_epochs=2)
    expected = [
        COUNTER.count_example(
            e["input"]["messages"] + e["preferred_output"] + e["non_preferred_output"]
        )
        for e in examples
    ]
    assert report.valid
    assert report.format == "preference"
    assert report.total_tokens == sum(expected)
    assert report.estimated_cost_usd == round(2 * sum(expected) / 1_000_000 * 3.00, 6)


def test_reinforcement_counts_the_prompt_and_has_no_token_cost(tmp_path: Path) -> None:
    examples = [reinforcement(i) for i in range(10)]
    report = build_report(write(tmp_path, examples), method="reinforcement", base=BASE, n_epochs=1)
    expected = [COUNTER.count_example(e["messages"], e["tools"]) for e in examples]
    assert report.valid
    assert report.total_tokens == sum(expected)
    assert report.estimated_cost_usd is None


def test_format_must_fit_the_method(tmp_path: Path) -> None:
    path = write(tmp_path, [preference(i) for i in range(10)])
    report = build_report(path, method="supervised", base=BASE, n_epochs=None)
    assert not report.valid
    assert report.n_errors == 1
    assert (report.errors[0].code, report.errors[0].line, report.errors[0].param) == (
        "invalid_format_for_method",
        1,
        "file",
    )
    assert "preference" in report.errors[0].message
    assert "chat" in report.errors[0].message


def test_method_settles_an_ambiguous_first_example(tmp_path: Path) -> None:
    no_reply = {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "x"}]
    }
    path = write(tmp_path, [no_reply] + [chat(i) for i in range(10)])
    report = build_report(path, method="supervised", base=BASE, n_epochs=None)
    assert report.format == "chat"
    assert [(e.line, e.code) for e in report.errors] == [(1, "example_missing_assistant_message")]


def test_bad_data_gives_an_invalid_report(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'[1, 2]\n{"messages": [}\n' + json.dumps(chat(0)).encode())
    report = build_report(path, method="supervised", base=BASE, n_epochs=None)
    assert not report.valid
    assert [(e.line, e.code) for e in report.errors] == [
        (1, "data_type"),
        (2, "invalid_json"),
        (3, "too_few_examples"),
    ]
    assert report.n_examples == 3
    assert report.total_tokens == COUNTER.count_example(chat(0)["messages"])


def test_utf16_file_gives_an_invalid_report(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(chat(i)) + "\n" for i in range(10)), encoding="utf-16")
    report = build_report(path, method="supervised", base=BASE, n_epochs=None)
    assert [e.code for e in report.errors] == ["invalid_encoding"]
    assert report.total_tokens == 0
    assert report.tokens_per_example.p95 == 0


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "absent.jsonl", method="supervised", base=BASE, n_epochs=None)


def test_threads_do_not_change_the_report(tmp_path: Path) -> None:
    path = write(tmp_path, [chat(i) for i in range(1500)] + [[1]])
    reports = [
        build_report(path, method="supervised", base=BASE, n_epochs=None, threads=threads)
        for threads in (0, 1, 4)
    ]
    assert reports[0] == reports[1] == reports[2]
    assert reports[0].n_errors == 1


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    small = replace(BASE, max_tokens_per_example=60)
    path = write(tmp_path, [chat(i) for i in range(12)] + [[1]])
    report = build_report(path, method="supervised", base=small, n_epochs=None)
    assert report.warnings and report.errors
    dumped = report.model_dump(mode="json")
    assert CheckReport.model_validate(dumped) == report
    assert CheckReport.model_validate_json(json.dumps(dumped)) == report
    assert dumped["object"] == "fine_tuning.file_check"
    assert set(dumped["errors"][0]) == {"line", "param", "code", "message"}
