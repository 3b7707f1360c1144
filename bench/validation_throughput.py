"""Throughput and peak memory of training-file validation: ours versus the cookbook's check.

Usage: .venv/bin/python bench/validation_throughput.py [--quick] [--examples N] [--repeats R]
           [--seed S] [--methods report,parser,cookbook] [--quiet-wait S] [--out PATH]

Generates a chat JSONL file (bench/_chatdata.py) in a temporary folder, then measures, each run
in a fresh subprocess so that peak RSS belongs to one method:
  report    service.training_data.report.build_report(method="supervised",
            base=gpt-4o-mini-2024-07-18, n_epochs=None): structure + exact o200k_base counts
  parser    service.training_data.formats.JsonlParser alone, fed 64 KiB chunks (upload path)
  cookbook  bench/baseline_cookbook.py: the cookbook notebook's check (cl100k_base)
Runs are interleaved (report, parser, cookbook, report, ...) so that drift hits all alike.
Wall time covers the check only: interpreter start, imports and the encoding load are excluded
(the load is timed separately). The file sits in the page cache for every run.
Writes bench/results/validation_throughput.json (--quick: validation_throughput.quick.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BENCH_DIR,
    ROOT,
    CpuMeter,
    current_rss_mib,
    default_result_path,
    machine_facts,
    peak_rss_mib,
    spread,
    wait_for_quiet,
    write_result,
)

BASE_MODEL = "gpt-4o-mini-2024-07-18"
CHUNK = 64 * 1024
METHODS = ("report", "parser", "cookbook")
CHILD_TIMEOUT_S = 300


# --- child side: one method, one run, one JSON line on stdout ----------------------------------


def _child_report(path: Path) -> dict[str, Any]:
    from service.models.registry import OPENAI_BASE_MODELS
    from service.tokens import load_encoding
    from service.training_data.report import build_report

    base = next(m for m in OPENAI_BASE_MODELS if m.id == BASE_MODEL)
    started = time.perf_counter()
    load_encoding(base.tokenizer.partition(":")[2])  # cached: build_report reuses it
    load_s = time.perf_counter() - started
    rss_before = current_rss_mib()
    with CpuMeter() as meter:
        report = build_report(path, method="supervised", base=base, n_epochs=None)
    return {
        **meter.as_dict(),
        "encoding_load_s": load_s,
        "rss_before_mib": rss_before,
        "n_examples": report.n_examples,
        "valid": report.valid,
        "n_errors": report.n_errors,
        "n_warnings": report.n_warnings,
        "first_errors": [e.message for e in report.errors[:3]],
        "total_tokens": report.total_tokens,
        "billable_tokens": report.billable_tokens,
        "n_epochs": report.n_epochs,
        "billed_tokens": report.billed_tokens,
        "estimated_cost_usd": report.estimated_cost_usd,
        "tokens_per_example": report.tokens_per_example.model_dump(),
    }


def _child_parser(path: Path) -> dict[str, Any]:
    from service.training_data.formats import JsonlParser

    rss_before = current_rss_mib()
    with CpuMeter() as meter:
        parser = JsonlParser()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                parser.feed(chunk)
        result = parser.finish()
    return {
        **meter.as_dict(),
        "rss_before_mib": rss_before,
        "n_examples": result.n_examples,
        "valid": result.valid,
        "n_errors": result.n_errors,
        "format": result.format,
        "first_errors": [e.message for e in result.errors[:3]],
    }


def _child(method: str, path: Path) -> int:
    record = _child_report(path) if method == "report" else _child_parser(path)
    record = {"method": method, **record, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(record))
    return 0


# --- parent side -------------------------------------------------------------------------------


def _run_child(method: str, path: Path) -> dict[str, Any]:
    if method == "cookbook":
        command = [sys.executable, str(BENCH_DIR / "baseline_cookbook.py"), str(path), "--json"]
    else:
        command = [sys.executable, __file__, "--child", method, str(path)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{method} run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    record: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def _summarise(method: str, runs: list[dict[str, Any]], n_examples: int) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    rates = [n_examples / w for w in walls]
    per_run = ("wall_s", "cpu_s", "other_busy_s", "contention", "peak_rss_mib",
               "rss_before_mib", "method", "waited_s", "load_before")
    last = {k: v for k, v in runs[-1].items() if k not in per_run}
    return {
        "wall_s": spread(walls),
        "examples_per_s": spread(rates, 1),
        "cpu_s": spread([r["cpu_s"] for r in runs]),
        "peak_rss_mib": spread([r["peak_rss_mib"] for r in runs], 1),
        "rss_before_work_mib": spread([r["rss_before_mib"] or 0.0 for r in runs], 1),
        "runs": [
            {"wall_s": round(r["wall_s"], 3), "cpu_s": r["cpu_s"],
             "contention": r["contention"], "load_before": r["load_before"],
             "peak_rss_mib": r["peak_rss_mib"]}
            for r in runs
        ],
        "result": last,
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 examples: a smoke test")
    parser.add_argument("--examples", type=int, help="examples in the file (default 100,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/...)")
    parser.add_argument("--quiet-wait", type=float, help="before each run, wait up to this many "
                        "seconds for other processes to leave the CPUs idle (default 30; quick 0)")
    args = parser.parse_args()
    n = args.examples or (2_000 if args.quick else 100_000)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    out = args.out or default_result_path("validation_throughput", quick=args.quick)
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 30.0

    from _chatdata import write_chat_jsonl

    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        path = Path(tmp) / "train.jsonl"
        t0 = time.perf_counter()
        data = write_chat_jsonl(path, n, args.seed)
        data["generate_s"] = round(time.perf_counter() - t0, 2)
        print(f"generated {n:,} examples ({data['bytes'] / 2**20:.1f} MiB) "
              f"in {data['generate_s']} s", flush=True)
        for repeat in range(args.repeats):
            for method in methods:
                quiet = wait_for_quiet(args.quiet_wait)
                record = {**_run_child(method, path), **quiet}
                runs[method].append(record)
                print(f"  run {repeat + 1}/{args.repeats} {method:8s} "
                      f"{record['wall_s']:7.2f} s wall {record['cpu_s']:7.2f} s CPU  "
                      f"peak {record['peak_rss_mib']:7.1f} MiB  "
                      f"others' load {_pct(record['contention'])}", flush=True)

    results = {m: _summarise(m, runs[m], n) for m in methods}
    ratios: dict[str, float] = {}
    if "cookbook" in results:
        baseline = results["cookbook"]["examples_per_s"]["median"]
        for m in ("report", "parser"):
            if m in results:
                ratios[f"{m}_over_cookbook"] = round(
                    results[m]["examples_per_s"]["median"] / baseline, 2
                )
    contention = [r["contention"] for m in methods for r in runs[m] if r["contention"] is not None]
    problems = [
        f"{m}: {r['result'].get('n_errors')} errors"
        for m, r in results.items()
        if m != "cookbook" and r["result"].get("n_errors")
    ]
    if contention and max(contention) > 0.1:
        problems.append(
            f"the machine was shared: other processes used up to {_pct(max(contention))} of "
            "all CPUs during a timed run (see runs[].contention); compare cpu_s too"
        )
    report = {
        "benchmark": "validation_throughput",
        "machine": machine_facts(),
        "parameters": {
            "quick": args.quick,
            "n_examples": n,
            "repeats": args.repeats,
            "seed": args.seed,
            "base_model": BASE_MODEL,
            "parser_chunk_bytes": CHUNK,
            "quiet_wait_s": args.quiet_wait,
            "methods": methods,
            "timed": "the check only, in a fresh subprocess per run; imports and encoding load "
            "excluded; data file in the page cache",
        },
        "data": data,
        "results": results,
        "speed_ratio_median": ratios,
        "contention_max": max(contention) if contention else None,
        "problems": problems,
        "total_bench_s": round(time.perf_counter() - started, 1),
    }
    write_result(out, report)

    print(f"\nvalidation throughput, {n:,} examples, median of {args.repeats} "
          f"(min-max), {report['machine']['cpu_count']} CPUs:")
    for m, r in results.items():
        e, w, p = r["examples_per_s"], r["wall_s"], r["peak_rss_mib"]
        print(f"  {m:8s} {e['median']:>10,.0f} ex/s ({e['min']:,.0f}-{e['max']:,.0f})  "
              f"{w['median']:6.2f} s wall  {r['cpu_s']['median']:6.2f} s CPU  "
              f"peak RSS {p['median']:7.1f} MiB "
              f"(+{p['median'] - r['rss_before_work_mib']['median']:.1f} during the check)")
    for name, ratio in ratios.items():
        print(f"  {name}: {ratio}x")
    for problem in problems:
        print(f"  WARNING {problem}")
    print(f"written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2], Path(sys.argv[3])))
    sys.exit(main())
