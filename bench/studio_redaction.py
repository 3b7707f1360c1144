"""Redaction: emails per second, and recall/precision per entity type on the annotated history.

The sample history (`../shared/data/emails/history.jsonl`, 150 mails) is redacted field by field
(context, subject, body: what a dataset redacts) by the studio's `Redactor`, in one batch as a
dataset build does; the batch is the history repeated `--repeat` times with fresh ids. Scores
come from `tests/studio/pii_annotations.jsonl` (spans a person marked by reading; a found span
counts when it overlaps a marked span of the same type). The baseline, when the spaCy pipeline
`fr_core_news_sm` is installed, is Presidio's own AnalyzerEngine with that pipeline and its
default recognisers (what one gets out of the box), on the same fields.

    .venv/bin/python bench/studio_redaction.py [--quick] [--repeat 10]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import default_result_path, machine_facts, write_result  # noqa: E402

# Presidio's names for our types.
_BASELINE_TYPES = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IBAN_CODE": "IBAN",
    "LOCATION": "ADDRESS",
}


def _ours(texts: list[str], languages: list[str], repeat: int) -> tuple[float, list[Any]]:
    from service.studio.redaction import Redactor

    redactor = Redactor()
    redactor.redact(texts[:30], languages=languages[:30])  # warm-up
    started = time.perf_counter()
    redacted, _ = redactor.redact(texts * repeat, languages=languages * repeat)
    elapsed = time.perf_counter() - started
    return elapsed, [item.entities for item in redacted[: len(texts)]]


def _baseline(texts: list[str], repeat: int) -> tuple[float, list[Any]] | None:
    if importlib.util.find_spec("fr_core_news_sm") is None:
        return None
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from service.studio.redaction import Entity

    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "fr", "model_name": "fr_core_news_sm"}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["fr"])
    analyzer.analyze(texts[0], language="fr")
    started = time.perf_counter()
    results = [analyzer.analyze(text, language="fr") for text in texts * repeat]
    elapsed = time.perf_counter() - started
    found = [
        [
            Entity(_BASELINE_TYPES[r.entity_type], r.start, r.end, "")
            for r in result
            if r.entity_type in _BASELINE_TYPES
        ]
        for result in results[: len(texts)]
    ]
    return elapsed, found


def main() -> None:
    """Measure and write bench/results/studio_redaction.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat

    from tests.processes import SHARED_DIR
    from tests.studio import annotations

    annotated = annotations.load(SHARED_DIR / "data" / "emails" / "history.jsonl")
    texts = [item.text for item in annotated]
    languages = [item.language for item in annotated]
    n_emails = len(texts) // 3

    elapsed, found = _ours(texts, languages, repeat)
    result: dict[str, Any] = {
        "benchmark": "studio_redaction",
        "machine": machine_facts(
            (
                "presidio-analyzer",
                "presidio-anonymizer",
                "phonenumbers",
                "schwifty",
                "faker",
                "spacy",
            )
        ),
        "parameters": {"emails": n_emails, "fields_per_email": 3, "repeat": repeat},
        "service": {
            "emails_per_s": round(n_emails * repeat / elapsed, 1),
            "seconds": round(elapsed, 3),
            "scores": annotations.scores(annotated, found),
        },
    }
    baseline = None if args.quick else _baseline(texts, max(1, repeat // 5))
    if baseline is not None:
        seconds, found = baseline
        result["baseline_presidio_fr_core_news_sm"] = {
            "emails_per_s": round(n_emails * max(1, repeat // 5) / seconds, 1),
            "seconds": round(seconds, 3),
            "scores": annotations.scores(annotated, found),
            "note": "Presidio defaults map LOCATION to ADDRESS here; it has no BIC or ID types.",
        }
    path = write_result(
        args.out or default_result_path("studio_redaction", quick=args.quick), result
    )
    print(f"studio redaction: {result['service']['emails_per_s']} emails/s ->", path)
    for kind, row in result["service"]["scores"].items():
        print(f"  {kind:8} recall {row['recall']:.3f} precision {row['precision']:.3f}")
    if baseline is not None:
        base = result["baseline_presidio_fr_core_news_sm"]
        print(f"baseline (Presidio + fr_core_news_sm): {base['emails_per_s']} emails/s")
        for kind, row in base["scores"].items():
            print(f"  {kind:8} recall {row['recall']:.3f} precision {row['precision']:.3f}")


if __name__ == "__main__":
    main()
