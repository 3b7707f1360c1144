"""OpenAI's graders, run locally as GRPO rewards: string_check, text_similarity, score_model, multi.

Templates such as `{{ sample.output_text }}` and `{{ item.reference_answer }}` are filled from
the model's answer and the example's other fields. Every grade lies in [0, 1].

Offline limits, checked when the job is created (`check_supported`): `text_similarity` runs
fuzzy_match, bleu, gleu and rouge_1..5/rouge_l (cosine needs an embedding model and meteor
WordNet, neither available offline); `score_model` is answered by a local model; `python`
graders are refused, because this service cannot guarantee them a sandbox without network
access on every platform it runs on.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import operator
import re
from collections import Counter
from collections.abc import Callable, Mapping
from difflib import SequenceMatcher
from typing import Any, get_args

from service.engines.local.chat import plain_message
from service.errors import InvalidRequest
from service.jobs.schemas import SimilarityMetric

# Every metric of the wire schema but those that need what is not available offline.
_NEEDS_RESOURCES = frozenset({"cosine", "meteor"})
OFFLINE_METRICS = frozenset(get_args(SimilarityMetric)) - _NEEDS_RESOURCES
_TEMPLATE = re.compile(r"\{\{\s*(sample|item)((?:\.[A-Za-z0-9_]+)*)\s*\}\}")

# A scorer answers a score_model grader: (model name, messages) -> the model's reply text.
Scorer = Callable[[str, list[dict[str, str]]], str]


def check_supported(grader: Mapping[str, Any]) -> None:
    """Refuse, with a 400, a grader the local engine cannot run."""
    kind = grader.get("type")
    if kind == "python":
        raise InvalidRequest(
            "Python graders are not run by the local engine: it cannot guarantee them a "
            "sandbox without network access. Use string_check, text_similarity, score_model "
            "or multi.",
            param="method.reinforcement.grader",
            code="unsupported_grader",
        )
    if kind == "text_similarity" and grader.get("evaluation_metric") not in OFFLINE_METRICS:
        raise InvalidRequest(
            f"The '{grader.get('evaluation_metric')}' metric needs resources that are not "
            "available offline; use one of: " + ", ".join(sorted(OFFLINE_METRICS)) + ".",
            param="method.reinforcement.grader.evaluation_metric",
            code="unsupported_grader",
        )
    if kind == "multi":
        for sub in sub_graders(grader).values():
            check_supported(sub)


def render(template: str, sample: Mapping[str, Any], item: Mapping[str, Any]) -> str:
    """Fill `{{ sample.x }}` and `{{ item.a.b }}` placeholders (JSON for non-strings)."""

    def value(match: re.Match[str]) -> str:
        found: Any = sample if match.group(1) == "sample" else item
        for key in [k for k in match.group(2).split(".") if k]:
            found = found.get(key, "") if isinstance(found, Mapping) else ""
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)

    return _TEMPLATE.sub(value, template)


def grade(
    grader: Mapping[str, Any], output_text: str, item: Mapping[str, Any], scorer: Scorer | None
) -> float:
    """Score one answer in [0, 1]."""
    sample: dict[str, Any] = {"output_text": output_text}
    with contextlib.suppress(ValueError):
        sample["output_json"] = json.loads(output_text)
    kind = grader["type"]
    if kind == "string_check":
        return _string_check(grader, sample, item)
    if kind == "text_similarity":
        left = render(grader["input"], sample, item)
        right = render(grader["reference"], sample, item)
        return similarity(grader["evaluation_metric"], left, right)
    if kind == "score_model":
        return _score_model(grader, sample, item, scorer)
    if kind == "multi":
        scores = {
            name: grade(sub, output_text, item, scorer) for name, sub in sub_graders(grader).items()
        }
        return max(0.0, min(1.0, evaluate(grader["calculate_output"], scores)))
    raise ValueError(f"grader type {kind!r} is not run by the local engine")


def _string_check(
    grader: Mapping[str, Any], sample: Mapping[str, Any], item: Mapping[str, Any]
) -> float:
    left = render(grader["input"], sample, item)
    right = render(grader["reference"], sample, item)
    operation = grader["operation"]
    result = {
        "eq": left == right,
        "ne": left != right,
        "like": right in left,
        "ilike": right.lower() in left.lower(),
    }[operation]
    return 1.0 if result else 0.0


def _score_model(
    grader: Mapping[str, Any],
    sample: Mapping[str, Any],
    item: Mapping[str, Any],
    scorer: Scorer | None,
) -> float:
    if scorer is None:
        raise ValueError("score_model graders need a local model to answer them")
    messages = []
    for message in grader["input"]:
        plain = plain_message(message)
        messages.append({**plain, "content": render(plain["content"], sample, item)})
    low, high = (float(v) for v in (grader.get("range") or [0.0, 1.0])[:2])
    reply = scorer(str(grader["model"]), messages)
    found = re.search(r"-?\d+(?:\.\d+)?", reply)
    if found is None or high <= low:
        return 0.0  # an unusable answer scores nothing, as OpenAI's parse errors do
    score = (float(found.group()) - low) / (high - low)
    return max(0.0, min(1.0, score))


def sub_graders(grader: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Return a multi grader's sub-graders by name, however they were given."""
    graders = grader["graders"]
    if isinstance(graders, Mapping) and "type" not in graders:
        return dict(graders)
    if isinstance(graders, list):
        return {g.get("name", f"g{i}"): g for i, g in enumerate(graders)}
    return {graders.get("name", "g0"): graders}


# ---------------------------------------------------------------- similarity metrics


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _f1(overlap: float, candidate: int, reference: int) -> float:
    if overlap == 0 or candidate == 0 or reference == 0:
        return 0.0
    precision, recall = overlap / candidate, overlap / reference
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        previous = 0
        for j, y in enumerate(b, 1):
            current = row[j]
            row[j] = previous + 1 if x == y else max(row[j], row[j - 1])
            previous = current
    return row[-1]


def similarity(metric: str, candidate: str, reference: str) -> float:
    """Score `candidate` against `reference` with an offline metric, in [0, 1]."""
    if metric == "fuzzy_match":
        return SequenceMatcher(None, candidate, reference).ratio()
    cand, ref = _words(candidate), _words(reference)
    if metric.startswith("rouge_"):
        if metric == "rouge_l":
            return _f1(_lcs(cand, ref), len(cand), len(ref))
        n = int(metric[-1])
        c, r = _ngrams(cand, n), _ngrams(ref, n)
        return _f1(sum((c & r).values()), sum(c.values()), sum(r.values()))
    if metric == "bleu":
        if not cand:
            return 0.0
        logs = []
        for n in range(1, 5):
            c, r = _ngrams(cand, n), _ngrams(ref, n)
            # add-one smoothing keeps short texts from scoring zero outright
            logs.append(math.log((sum((c & r).values()) + 1) / (sum(c.values()) + 1)))
        brevity = 1.0 if len(cand) > len(ref) else math.exp(1 - len(ref) / len(cand))
        return brevity * math.exp(sum(logs) / 4)
    if metric == "gleu":
        c = sum((_ngrams(cand, n) for n in range(1, 5)), Counter())
        r = sum((_ngrams(ref, n) for n in range(1, 5)), Counter())
        overlap = sum((c & r).values())
        total = max(sum(c.values()), sum(r.values()))
        return overlap / total if total else 0.0
    raise ValueError(f"metric {metric!r} is not available offline")


# ---------------------------------------------------------------- multi formulas

_OPERATORS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}


def evaluate(formula: str, scores: Mapping[str, float]) -> float:
    """Evaluate a multi grader's arithmetic formula over sub-grader names, without eval()."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in scores:
            return float(scores[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](walk(node.operand))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
        ):
            return float(_FUNCTIONS[node.func.id](*(walk(a) for a in node.args)))
        raise ValueError(f"unsupported expression in calculate_output: {ast.dump(node)}")

    try:
        return walk(ast.parse(formula, mode="eval"))
    except ZeroDivisionError:
        return 0.0
