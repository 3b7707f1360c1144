"""Scoring a model's e-mails: automatic checks, ROUGE-L against reference mails, a pairwise
judgement with positions swapped, and the summary that decides whether a model passes.

Plain functions over plain data; `evaluations.py` runs the completions and stores the results.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz.distance import LCSseq

from service.studio import cleaning, prompts
from service.studio.names import CLOSING
from service.studio.redaction import PLACEHOLDER

_GREETING = re.compile(
    r"(?im)^[ \t]*(?:Bonjour|Bonsoir|Madame|Monsieur|Mesdames|Messieurs|Cher|Chère|Chers|Chères"
    r"|Salut|Hello|Hi|Hey|Dear|Good (?:morning|afternoon|evening)|Greetings|To whom)\b"
)
_CLOSING = re.compile(
    rf"(?im)^[ \t]*(?:{CLOSING}|Je vous prie d'agréer|Veuillez agréer|Bien des choses|Sincèrement"
    r"|With (?:kind|best) regards|Respectfully)\b"
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Item:
    """One prompt of an evaluation: the conversation up to the answer, and a reference mail."""

    messages: list[dict[str, str]]
    reference: str | None = None
    language: str | None = None

    @property
    def key(self) -> str:
        """Return what identifies the prompt across files (its messages, spaces normalised)."""
        return json.dumps(
            [[m["role"], " ".join(m["content"].split())] for m in self.messages],
            ensure_ascii=False,
        )

    @property
    def request(self) -> str:
        """Return the last user message: what was asked."""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


def item_from_chat_row(row: dict[str, Any]) -> Item | None:
    """Return the item of a chat-format row (prompt = all but the last assistant message)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    flat = [
        {"role": str(m.get("role")), "content": _text(m.get("content"))}
        for m in messages
        if isinstance(m, dict)
    ]
    if flat and flat[-1]["role"] == "assistant":
        return Item(messages=flat[:-1], reference=flat[-1]["content"]) if flat[:-1] else None
    return Item(messages=flat)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def items_from_file(path: Path, *, limit: int) -> list[Item]:
    """Read up to `limit` items from a chat-format file (a validation or recorded-answers file)."""
    items: list[Item] = []
    with path.open("rb") as handle:
        for raw in handle:
            if len(items) >= limit:
                break
            if raw.strip() and (item := item_from_chat_row(json.loads(raw))) is not None:
                items.append(item)
    return items


def rouge_l(candidate: str, reference: str) -> float:
    """Return the ROUGE-L F1 of candidate against reference, on lower-cased words."""
    a, b = _WORD.findall(candidate.casefold()), _WORD.findall(reference.casefold())
    if not a or not b:
        return 0.0
    common = LCSseq.similarity(a, b)
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


@dataclass
class Checks:
    """The automatic checks of one answer."""

    language: bool
    greeting: bool
    closing: bool
    no_placeholder_left: bool
    no_training_personal_data: bool
    detected_language: str | None = None
    leaked: list[str] = field(default_factory=list)
    # Placeholders the answer wrote that its prompt did not hold (for the application to fill,
    # such as the sender's name under the closing formula of a model trained on redacted mail).
    placeholders: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Tell whether every check passed."""
        return all(
            (
                self.language,
                self.greeting,
                self.closing,
                self.no_placeholder_left,
                self.no_training_personal_data,
            )
        )

    def as_dict(self) -> dict[str, Any]:
        """Return the checks as JSON-ready data."""
        return {
            "language": self.language,
            "detected_language": self.detected_language,
            "greeting": self.greeting,
            "closing": self.closing,
            "no_placeholder_left": self.no_placeholder_left,
            "no_training_personal_data": self.no_training_personal_data,
            "leaked": self.leaked,
            "placeholders": self.placeholders,
            "passed": self.passed,
        }


def check(answer: str, item: Item, *, personal_values: Iterable[str] = ()) -> Checks:
    """Run the automatic checks: language as asked, greeting and closing present, no
    placeholder the prompt did not hold, no personal data of the training set reproduced."""
    expected = item.language or cleaning.detect_language(item.request)
    detected = cleaning.detect_language(answer) if answer.strip() else None
    prompt_placeholders = set(PLACEHOLDER.findall(" ".join(m["content"] for m in item.messages)))
    leaked = sorted({value for value in personal_values if value and value in answer})
    invented = sorted(set(PLACEHOLDER.findall(answer)) - prompt_placeholders)
    _, body = prompts.split_completion(answer)
    return Checks(
        language=detected is not None and (expected is None or detected == expected),
        greeting=bool(_GREETING.search(body[:300])),
        closing=bool(_CLOSING.search(body)),
        no_placeholder_left=not invented,
        no_training_personal_data=not leaked,
        detected_language=detected,
        leaked=leaked,
        placeholders=invented,
    )


JUDGE_SYSTEM = (
    "You compare two e-mails written for the same request. Judge which one better does what "
    "was asked: right content, right tone for business mail, in the request's language, with "
    "a greeting and a closing. Answer with the single digit 1 or 2."
)


def judge_messages(item: Item, first: str, second: str) -> list[dict[str, str]]:
    """Return the judge's conversation for two answers, in the order given."""
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": f"Request:\n{item.request}\n\nE-mail 1:\n{first}\n\nE-mail 2:\n{second}\n\n"
            "Which e-mail is better? Answer 1 or 2.",
        },
    ]


def verdict(text: str) -> int | None:
    """Return the judge's choice (1 or 2) from its answer, or None when it gave none."""
    found = re.search(r"[12]", text)
    return int(found.group()) if found else None


def outcome(model_first: int | None, model_second: int | None) -> str:
    """Combine the two judgements (model's answer shown first, then second) into win, loss or tie.

    Only a preference that survives swapping the positions counts; anything else is a tie.
    """
    if model_first == 1 and model_second == 2:
        return "win"
    if model_first == 2 and model_second == 1:
        return "loss"
    return "tie"


def _latency(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "mean": round(statistics.fmean(ordered), 1),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(p95, 1),
    }


def _rate(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 3) if flags else None


def summarize(results: Sequence[dict[str, Any]], losses: dict[str, float | None]) -> dict[str, Any]:
    """Return the evaluation's summary and its verdict on the model against the comparison."""
    answered = [r for r in results if r["success"]]
    summary: dict[str, Any] = {
        "test_count": len(results),
        "success_count": len(answered),
        "latency_ms": _latency([r["latency_ms"] for r in answered]),
        "checks_passed": _rate([r["checks"]["passed"] for r in answered]),
        "checks": {
            name: _rate([r["checks"][name] for r in answered])
            for name in (
                "language",
                "greeting",
                "closing",
                "no_placeholder_left",
                "no_training_personal_data",
            )
        },
        "rouge_l": _mean([r["rouge_l"] for r in answered if r.get("rouge_l") is not None]),
        "heldout_loss": losses.get("model"),
    }
    compared = [r for r in results if r.get("compare") is not None]
    if compared:
        summary["compare"] = {
            "checks_passed": _rate([r["compare"]["checks"]["passed"] for r in compared]),
            "rouge_l": _mean(
                [
                    r["compare"]["rouge_l"]
                    for r in compared
                    if r["compare"].get("rouge_l") is not None
                ]
            ),
            "heldout_loss": losses.get("compare"),
        }
    judged = [r["judgement"]["outcome"] for r in results if r.get("judgement")]
    if judged:
        wins, losses_, ties = (judged.count(k) for k in ("win", "loss", "tie"))
        summary["head_to_head"] = {
            "wins": wins,
            "losses": losses_,
            "ties": ties,
            "win_rate": round((wins + 0.5 * ties) / len(judged), 3),
        }
    summary["verdict"] = _verdict(summary)
    return summary


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


# How much worse than the comparison a measure may be and still count as "no worse": sampling
# and a retraining's small steps move these figures a little without changing the model.
TOLERANCE = {"checks_passed": 0.0, "rouge_l": 0.02, "heldout_loss": 0.02}


def _worse(name: str, mine: float, theirs: float) -> bool:
    if name == "heldout_loss":  # lower is better; relative tolerance
        return mine > theirs * (1 + TOLERANCE[name])
    return mine < theirs - TOLERANCE[name] - 1e-9


def _verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """Pass when every prompt was answered and the model does no worse than the comparison on
    each measure both have (checks, ROUGE-L, held-out loss; within `TOLERANCE`), and, when a
    judge compared them, wins at least half the time."""
    reasons = []
    if summary["success_count"] < summary["test_count"]:
        reasons.append(f"{summary['test_count'] - summary['success_count']} prompt(s) unanswered")
    other = summary.get("compare")
    if other:
        for name in ("checks_passed", "rouge_l", "heldout_loss"):
            mine, theirs = summary.get(name), other.get(name)
            if mine is not None and theirs is not None and _worse(name, mine, theirs):
                reasons.append(f"{name} {mine} is worse than {theirs}")
    duel = summary.get("head_to_head")
    if duel and duel["win_rate"] < 0.5:
        reasons.append(f"win rate {duel['win_rate']} is under 0.5")
    return {"passed": not reasons, "reasons": reasons}
