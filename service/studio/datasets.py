"""From e-mail history to chat-format training and validation rows, with a report of every choice.

`build` is plain synchronous Python (the service runs it in a worker thread): filter by rating,
department and user; clean each body; drop empty, wrong-language and duplicate mails; redact
personal data with one set of placeholders for the whole dataset; split by groups of related
mails; write chat rows with the department's system prompt and the seed's user prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.studio import cleaning, prompts
from service.studio.redaction import Redactor

MAX_TEXT = 100_000
# A fine-tune file holds at least this many examples (the upload rule).
MIN_EXAMPLES = 10


class EmailRecord(BaseModel):
    """One sent mail as IAPosteManager exports it (the shape of `history.jsonl`)."""

    # Exports carry more fields than these (sent_at, contains_pii, ...): they are kept out.
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    user_id: str = Field(default="", max_length=200)
    department: str = Field(default="", max_length=100)
    category: str = Field(default="", max_length=500)
    context: str = Field(default="", max_length=MAX_TEXT)
    language: str = Field(default="fr", max_length=10)
    subject: str = Field(default="", max_length=2_000)
    body: str = Field(max_length=MAX_TEXT)
    rating: int | None = Field(default=None, ge=0, le=5)
    # A conversation id where the export has one; otherwise the subject without Re:/Fwd: is used.
    thread_id: str | None = Field(default=None, max_length=200)


@dataclass(frozen=True)
class Options:
    """What a dataset keeps and how it is split."""

    min_rating: int = 4
    redact: bool = True
    validation_fraction: float = 0.1
    department: str | None = None
    user_id: str | None = None
    system_prompts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    user_templates: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Built:
    """Training and validation rows (chat format), and the report."""

    training: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    report: dict[str, Any]
    kept_ids: list[str]


_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|tr|fwd?|réf|aw|wg)\s*(?:\[\d+\])?\s*:\s*)+", re.I)


def thread_key(record: EmailRecord) -> str:
    """Return the conversation a mail belongs to: its thread id, or its subject without Re:."""
    if record.thread_id:
        return f"id:{record.thread_id}"
    subject = _REPLY_PREFIX.sub("", record.subject).casefold().strip()
    return f"subject:{record.user_id}:{subject}" if subject else f"mail:{record.id}"


def grouped_split(
    records: Sequence[EmailRecord], fraction: float, *, minimum: int = 1, seed: str = "studio"
) -> tuple[list[int], list[int]]:
    """Split record indexes into training and validation; one user's thread never straddles.

    Groups are ordered by a hash of their key (stable across runs and input order) and taken
    into validation until it holds `fraction` of the records (at least `minimum`, since a
    fine-tune file needs ten examples); when training would keep fewer than `minimum`, there is
    no validation set.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[f"{record.user_id}|{thread_key(record)}"].append(index)
    target = max(minimum, round(fraction * len(records)))
    if fraction <= 0 or len(groups) < 2 or len(records) - target < minimum:
        return list(range(len(records))), []
    order = sorted(groups, key=lambda key: hashlib.sha256(f"{seed}:{key}".encode()).hexdigest())
    validation: list[int] = []
    for key in order:
        if len(validation) >= target:
            break
        if len(validation) + len(groups[key]) > len(records) - minimum:
            continue
        validation.extend(groups[key])
    if len(validation) < minimum:
        return list(range(len(records))), []
    held_out = set(validation)
    return [i for i in range(len(records)) if i not in held_out], sorted(validation)


def chat_row(
    record: EmailRecord, options: Options, *, context: str, subject: str, body: str
) -> dict[str, Any]:
    """Return one training example: system prompt, the seed's user prompt, subject and body."""
    return {
        "messages": [
            {
                "role": "system",
                "content": prompts.system_prompt(
                    record.department, record.language, options.system_prompts
                ),
            },
            {
                "role": "user",
                "content": prompts.user_prompt(
                    record.category, context, record.language, options.user_templates
                ),
            },
            {"role": "assistant", "content": prompts.completion(subject, body)},
        ]
    }


def build(records: Sequence[EmailRecord], options: Options, redactor: Redactor | None) -> Built:
    """Build a dataset from records; every record is either kept or dropped with a reason."""
    dropped: list[tuple[str, str]] = []
    candidates: list[EmailRecord] = []
    for record in records:
        if options.department and record.department != options.department:
            dropped.append((record.id, "other_department"))
        elif options.user_id and record.user_id != options.user_id:
            dropped.append((record.id, "other_user"))
        elif options.min_rating and (record.rating is None or record.rating < options.min_rating):
            dropped.append((record.id, "unrated" if record.rating is None else "low_rating"))
        else:
            candidates.append(record)

    bodies = [cleaning.clean_body(r.body, language=r.language) for r in candidates]
    n_cleaned = sum(body != r.body.strip() for r, body in zip(candidates, bodies, strict=True))
    detected = cleaning.detect_languages(
        [f"{r.subject}\n{b}" for r, b in zip(candidates, bodies, strict=True)]
    )
    repeats = cleaning.duplicates(bodies)
    kept: list[EmailRecord] = []
    kept_bodies: list[str] = []
    mismatches: list[dict[str, str | None]] = []
    for index, (record, body) in enumerate(zip(candidates, bodies, strict=True)):
        if cleaning.is_empty(body):
            dropped.append((record.id, "empty"))
        elif detected[index] is not None and detected[index] != record.language:
            dropped.append((record.id, "language_mismatch"))
            mismatches.append(
                {"id": record.id, "declared": record.language, "detected": detected[index]}
            )
        elif index in repeats:
            reason, original = repeats[index]
            dropped.append((record.id, reason))
        else:
            kept.append(record)
            kept_bodies.append(body)

    fields = [(r.context, r.subject, body) for r, body in zip(kept, kept_bodies, strict=True)]
    redaction: dict[str, Any] = {"enabled": bool(options.redact and redactor is not None)}
    if options.redact and redactor is not None and fields:
        texts = [text for triple in fields for text in triple]
        languages = [r.language for r in kept for _ in range(3)]
        redacted, placeholders = redactor.redact(texts, languages=languages)
        fields = [
            (redacted[i].text, redacted[i + 1].text, redacted[i + 2].text)
            for i in range(0, len(redacted), 3)
        ]
        replaced = Counter(e.type for item in redacted for e in item.entities)
        redaction |= {
            "replaced": dict(sorted(replaced.items())),
            "distinct_values": dict(sorted(placeholders.counts().items())),
            "records_with_personal_data": sum(
                any(item.entities for item in redacted[i : i + 3])
                for i in range(0, len(redacted), 3)
            ),
        }

    rows = [
        chat_row(record, options, context=context, subject=subject, body=body)
        for record, (context, subject, body) in zip(kept, fields, strict=True)
    ]
    training_indexes, validation_indexes = grouped_split(
        kept, options.validation_fraction, minimum=MIN_EXAMPLES
    )
    by_department: dict[str, Counter[str]] = defaultdict(Counter)
    for record in kept:
        by_department[record.department or "unknown"][record.language] += 1
    reasons = Counter(reason for _, reason in dropped)
    report = {
        "n_records": len(records),
        "n_kept": len(kept),
        "n_training": len(training_indexes),
        "n_validation": len(validation_indexes),
        "n_dropped": len(dropped),
        "dropped": dict(sorted(reasons.items())),
        "dropped_records": [{"id": rid, "reason": reason} for rid, reason in dropped[:1000]],
        "by_department": {d: dict(sorted(c.items())) for d, c in sorted(by_department.items())},
        "by_language": dict(sorted(Counter(r.language for r in kept).items())),
        "n_bodies_cleaned": n_cleaned,
        "language_mismatches": mismatches[:1000],
        "redaction": redaction,
    }
    return Built(
        training=[rows[i] for i in training_indexes],
        validation=[rows[i] for i in validation_indexes],
        report=report,
        kept_ids=[r.id for r in kept],
    )


class PreferencePair(BaseModel):
    """A prompt with a better and a worse e-mail for it (the shape of `preferences.jsonl`)."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    preferred_completion: str = Field(min_length=1, max_length=MAX_TEXT)
    non_preferred_completion: str = Field(min_length=1, max_length=MAX_TEXT)
    department: str = Field(default="", max_length=100)
    language: str = Field(default="fr", max_length=10)


def preference_row(
    system: str | None, prompt: str, preferred: str, non_preferred: str
) -> dict[str, Any]:
    """Return one DPO example in OpenAI's preference format (the seed's createPreferenceData)."""
    messages = [{"role": "system", "content": system}] if system else []
    return {
        "input": {"messages": [*messages, {"role": "user", "content": prompt}]},
        "preferred_output": [{"role": "assistant", "content": preferred}],
        "non_preferred_output": [{"role": "assistant", "content": non_preferred}],
    }


def build_preferences(
    pairs: Sequence[PreferencePair], options: Options, redactor: Redactor | None
) -> Built:
    """Build a DPO dataset: pairs with the department's system prompt, redacted, split by prompt."""
    dropped: list[tuple[str, str]] = []
    kept: list[PreferencePair] = []
    seen: set[tuple[str, str]] = set()
    for index, pair in enumerate(pairs):
        key = (
            " ".join(pair.prompt.split()).casefold(),
            " ".join(pair.preferred_completion.split()),
        )
        if options.department and pair.department != options.department:
            dropped.append((str(index), "other_department"))
        elif pair.preferred_completion.strip() == pair.non_preferred_completion.strip():
            dropped.append((str(index), "no_preference"))
        elif key in seen:
            dropped.append((str(index), "duplicate"))
        else:
            seen.add(key)
            kept.append(pair)
    texts = [
        t for p in kept for t in (p.prompt, p.preferred_completion, p.non_preferred_completion)
    ]
    redaction: dict[str, Any] = {"enabled": bool(options.redact and redactor is not None)}
    if options.redact and redactor is not None and texts:
        languages = [p.language for p in kept for _ in range(3)]
        redacted, placeholders = redactor.redact(texts, languages=languages)
        texts = [item.text for item in redacted]
        redaction |= {
            "replaced": dict(sorted(Counter(e.type for r in redacted for e in r.entities).items())),
            "distinct_values": dict(sorted(placeholders.counts().items())),
        }
    rows = [
        preference_row(
            prompts.system_prompt(pair.department, pair.language, options.system_prompts)
            if pair.department
            else None,
            *texts[3 * i : 3 * i + 3],
        )
        for i, pair in enumerate(kept)
    ]
    # Related pairs share a prompt: grouping by it keeps them on one side of the split.
    as_records = [
        EmailRecord(id=str(i), body="", thread_id=hashlib.sha256(pair.prompt.encode()).hexdigest())
        for i, pair in enumerate(kept)
    ]
    training_indexes, validation_indexes = grouped_split(
        as_records, options.validation_fraction, minimum=MIN_EXAMPLES
    )
    by_department: dict[str, Counter[str]] = defaultdict(Counter)
    for pair in kept:
        by_department[pair.department or "unknown"][pair.language] += 1
    report = {
        "n_records": len(pairs),
        "n_kept": len(kept),
        "n_training": len(training_indexes),
        "n_validation": len(validation_indexes),
        "n_dropped": len(dropped),
        "dropped": dict(sorted(Counter(reason for _, reason in dropped).items())),
        "dropped_records": [{"index": int(i), "reason": r} for i, r in dropped[:1000]],
        "by_department": {d: dict(sorted(c.items())) for d, c in sorted(by_department.items())},
        "by_language": dict(sorted(Counter(p.language for p in kept).items())),
        "redaction": redaction,
    }
    return Built(
        training=[rows[i] for i in training_indexes],
        validation=[rows[i] for i in validation_indexes],
        report=report,
        kept_ids=[str(i) for i in range(len(kept))],
    )


def jsonl(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Return rows as JSON Lines bytes."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
