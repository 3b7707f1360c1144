"""Dataset build time for 10,000 e-mails: the whole studio pipeline, without the HTTP layer.

10,000 records are made from the sample history: each takes a mail of the history and appends
a paragraph of another mail, gets a fresh id, user and thread, so that most are no near
duplicates of each other (the report says how many were). `datasets.build` then filters, cleans,
detects languages, deduplicates, redacts (one placeholder set for the whole dataset) and splits;
the script times it and each stage apart, and writes the training rows as JSON Lines.

    .venv/bin/python bench/studio_dataset_build.py [--quick] [--emails 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import default_result_path, machine_facts, peak_rss_mib, write_result  # noqa: E402


def records(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """Return n history records made from the sample history."""
    from tests.processes import SHARED_DIR

    history = [
        json.loads(line)
        for line in (SHARED_DIR / "data" / "emails" / "history.jsonl")
        .read_text("utf-8")
        .splitlines()
    ]
    rng = random.Random(seed)
    made = []
    for i in range(n):
        base, other = rng.choice(history), rng.choice(history)
        paragraphs = [p for p in other["body"].split("\n\n") if len(p) > 80] or [other["body"]]
        head, _, tail = base["body"].rpartition("\n\n")
        extra = rng.choice(paragraphs)
        made.append(
            {
                **base,
                "id": f"bench-{i:05d}",
                "user_id": f"usr_{rng.randrange(200):03d}",
                "thread_id": f"th-{rng.randrange(n // 2)}",
                "body": f"{head}\n\n{extra}\n\n{tail}" if head else base["body"],
            }
        )
    return made


def main() -> None:
    """Measure and write bench/results/studio_dataset_build.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--emails", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    n = 500 if args.quick else args.emails

    from service.studio import cleaning
    from service.studio.datasets import EmailRecord, Options, build, jsonl
    from service.studio.redaction import Redactor

    rows = records(n)
    started = time.perf_counter()
    parsed = [EmailRecord.model_validate(row) for row in rows]
    parse_s = time.perf_counter() - started
    redactor = Redactor()
    cleaning.detect_language("Bonjour")  # load the language models outside the timing

    started = time.perf_counter()
    built = build(parsed, Options(), redactor)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    content = jsonl(built.training) + jsonl(built.validation)
    write_s = time.perf_counter() - started

    # Stage by stage, on the same records, for where the time goes.
    kept = [r for r in parsed if r.rating is not None and r.rating >= 4]
    stages: dict[str, float] = {}
    t = time.perf_counter()
    bodies = [cleaning.clean_body(r.body, language=r.language) for r in kept]
    stages["clean"] = time.perf_counter() - t
    t = time.perf_counter()
    cleaning.detect_languages([f"{r.subject}\n{b}" for r, b in zip(kept, bodies, strict=True)])
    stages["languages"] = time.perf_counter() - t
    t = time.perf_counter()
    cleaning.duplicates(bodies)
    stages["duplicates"] = time.perf_counter() - t
    t = time.perf_counter()
    redactor.redact(
        [text for r, b in zip(kept, bodies, strict=True) for text in (r.context, r.subject, b)]
    )
    stages["redaction"] = time.perf_counter() - t

    report = built.report
    result = {
        "benchmark": "studio_dataset_build",
        "machine": machine_facts(
            (
                "presidio-analyzer",
                "lingua-language-detector",
                "datasketch",
                "mail-parser-reply",
                "faker",
            )
        ),
        "parameters": {"emails": n, "min_rating": 4, "redact": True, "validation_fraction": 0.1},
        "results": {
            "build_seconds": round(build_s, 2),
            "emails_per_s": round(n / build_s, 1),
            "parse_seconds": round(parse_s, 2),
            "write_seconds": round(write_s, 3),
            "output_mib": round(len(content) / 2**20, 2),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
            "kept": report["n_kept"],
            "training": report["n_training"],
            "validation": report["n_validation"],
            "dropped": report["dropped"],
            "replaced": report["redaction"].get("replaced"),
        },
    }
    path = write_result(
        args.out or default_result_path("studio_dataset_build", quick=args.quick), result
    )
    print(f"{n} emails built in {build_s:.1f} s ({n / build_s:.0f} emails/s) ->", path)
    print("  stages:", result["results"]["stage_seconds"], "dropped:", report["dropped"])


if __name__ == "__main__":
    main()
