"""The annotated personal data of the sample history, and recall/precision of a redactor on it.

`pii_annotations.jsonl` holds, for every record of `history.jsonl` and each of its fields
context, subject and body, the spans a person marked by reading (types PERSON EMAIL PHONE IBAN
BIC ADDRESS ID). A found span counts when it overlaps a marked span of the same type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.studio.redaction import Entity

ANNOTATIONS = Path(__file__).with_name("pii_annotations.jsonl")


@dataclass(frozen=True)
class Span:
    """A marked span: its type and offsets into the field's text."""

    type: str
    start: int
    end: int


@dataclass(frozen=True)
class Annotated:
    """One field of one record with its marked spans."""

    record_id: str
    field: str
    language: str
    text: str
    spans: list[Span]


def load(history: Path) -> list[Annotated]:
    """Return every annotated field, joined with its text from history."""
    records = {
        row["id"]: row for row in map(json.loads, history.read_text(encoding="utf-8").splitlines())
    }
    annotated = []
    for line in ANNOTATIONS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        record = records[row["id"]]
        annotated.append(
            Annotated(
                record_id=row["id"],
                field=row["field"],
                language=record["language"],
                text=record[row["field"]],
                spans=[Span(e["type"], e["start"], e["end"]) for e in row["entities"]],
            )
        )
    return annotated


def _overlaps(a_start: int, a_end: int, b_start: int, b_end: int) -> bool:
    return a_start < b_end and b_start < a_end


def scores(
    annotated: Sequence[Annotated], found: Sequence[Sequence[Entity]]
) -> dict[str, dict[str, float | int]]:
    """Return recall and precision per entity type, with the counts behind them."""
    table: dict[str, dict[str, int]] = {}
    for item, entities in zip(annotated, found, strict=True):
        for span in item.spans:
            row = table.setdefault(span.type, {"marked": 0, "found": 0, "hits": 0, "right": 0})
            row["marked"] += 1
            if any(
                e.type == span.type and _overlaps(e.start, e.end, span.start, span.end)
                for e in entities
            ):
                row["hits"] += 1
        for entity in entities:
            row = table.setdefault(entity.type, {"marked": 0, "found": 0, "hits": 0, "right": 0})
            row["found"] += 1
            if any(
                span.type == entity.type
                and _overlaps(entity.start, entity.end, span.start, span.end)
                for span in item.spans
            ):
                row["right"] += 1
    return {
        kind: {
            **row,
            "recall": round(row["hits"] / row["marked"], 3) if row["marked"] else 1.0,
            "precision": round(row["right"] / row["found"], 3) if row["found"] else 1.0,
        }
        for kind, row in sorted(table.items())
    }
