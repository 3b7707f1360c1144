"""The full check of a training file for one job: structure, tokens, epochs and cost.

`build_report` streams the file once through the parser and the model's token counter and returns a
`CheckReport`, which is served as JSON and cached in the database as JSON.
"""

from __future__ import annotations

import math
import os
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Final, Literal

import pydantic

from service.models.registry import BaseModelSpec, Method
from service.tokens import BatchTokenCounter, Example, TokenCounter, count_examples, counter_for
from service.training_data.formats import Format, Issue, JsonlParser, read_chunks

__all__ = [
    "METHOD_FORMATS",
    "CheckReport",
    "IssueModel",
    "TokenStats",
    "build_report",
    "default_epochs",
]

METHOD_FORMATS: Final[dict[Method, Format]] = {
    "supervised": "chat",
    "dpo": "preference",
    "reinforcement": "reinforcement",
}

# The cookbook's estimate of n_epochs="auto" (reference §5.2).
TARGET_EPOCHS: Final = 3
MIN_TARGET_EXAMPLES: Final = 100
MAX_TARGET_EXAMPLES: Final = 25_000
MIN_DEFAULT_EPOCHS: Final = 1
MAX_DEFAULT_EPOCHS: Final = 25

# Examples are counted in batches: fewer calls, and the batches in flight are all we hold.
_BATCH_EXAMPLES: Final = 256
# tiktoken releases the GIL while it encodes, so worker threads count tokens while the main thread
# parses and validates the next lines.
_MAX_WORKERS: Final = 4


def default_epochs(n_examples: int) -> int:
    """Return the epochs that n_epochs="auto" is expected to pick for `n_examples` examples."""
    n = max(n_examples, 1)
    if n * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n)
    if n * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n)
    return TARGET_EPOCHS


class IssueModel(pydantic.BaseModel):
    """An issue as served over HTTP."""

    model_config = pydantic.ConfigDict(frozen=True)

    line: int
    param: str
    code: str
    message: str

    @classmethod
    def from_issue(cls, issue: Issue) -> IssueModel:
        """Convert a parser issue."""
        return cls(line=issue.line, param=issue.param, code=issue.code, message=issue.message)


class TokenStats(pydantic.BaseModel):
    """Distribution of tokens per valid example (p95 by the nearest-rank method)."""

    min: int = 0
    mean: float = 0.0
    p95: int = 0
    max: int = 0


class CheckReport(pydantic.BaseModel):
    """What a training file holds, whether it fits the method and what training it would cost."""

    object: Literal["fine_tuning.file_check"] = "fine_tuning.file_check"
    method: Method
    model: str
    format: Format | None  # as detected from the first recognisable example
    valid: bool  # no errors at all: the file can be trained on with this method and model
    n_examples: int  # non-blank lines, valid or not
    # Token figures cover the structurally valid examples only.
    tokens_per_example: TokenStats
    total_tokens: int
    billable_tokens: int  # sum of min(max_tokens_per_example, tokens) over examples
    n_epochs: int  # as requested, or the "auto" estimate
    billed_tokens: int  # billable_tokens x n_epochs
    estimated_cost_usd: float | None  # None when training is free or billed by time (RFT)
    max_tokens_per_example: int
    n_examples_over_limit: int
    warnings: list[IssueModel]
    n_warnings: int
    errors: list[IssueModel]
    n_errors: int
    stats: dict[str, Any]

    def with_epochs(self, n_epochs: int, *, price_per_million: float | None) -> CheckReport:
        """Return this report with the billing figures for `n_epochs` epochs."""
        billed = self.billable_tokens * n_epochs
        return self.model_copy(
            update={
                "n_epochs": n_epochs,
                "billed_tokens": billed,
                "estimated_cost_usd": estimated_cost(
                    billed, method=self.method, price_per_million=price_per_million
                ),
            }
        )


def _example_parts(fmt: Format, obj: dict[str, Any]) -> Example:
    """Return what is counted for one valid example.

    chat: messages (+ tools, functions). reinforcement: the prompt messages (+ tools).
    preference: the input messages followed by the preferred and then the non-preferred output,
    as one sequence (+ input tools). Whether OpenAI bills the non-preferred output is unknown
    (reference §5.3); we count it, so the estimate errs on the high side.
    """
    if fmt == "chat":
        return obj["messages"], obj.get("tools"), obj.get("functions")
    if fmt == "reinforcement":
        return obj["messages"], obj.get("tools"), None
    payload = obj["input"]
    messages = [*payload["messages"], *obj["preferred_output"], *obj["non_preferred_output"]]
    return messages, payload.get("tools"), None


class _TokenTally:
    """Counts tokens of valid examples in batches and keeps a bounded histogram of the counts.

    Batches go to worker threads when there are any; at most two per worker are in flight, so
    memory stays bounded, and results are taken in order, so warnings come in line order.
    """

    def __init__(
        self,
        counter: TokenCounter,
        limit: int,
        parser: JsonlParser,
        executor: ThreadPoolExecutor | None,
        workers: int,
    ) -> None:
        self.counter = counter
        self.limit = limit
        self.parser = parser
        self.executor = executor
        self.max_in_flight = 2 * workers
        self.batch_counter = counter if isinstance(counter, BatchTokenCounter) else None
        self.in_flight: deque[tuple[list[int], Future[list[int]]]] = deque()
        self.batch_lines: list[int] = []
        self.batch: list[Example] = []
        # token count -> examples: exact percentiles in memory bounded by the distinct counts.
        self.histogram: Counter[int] = Counter()
        self.total = 0
        self.billable = 0
        self.over_limit = 0

    def add(self, line: int, fmt: Format, obj: dict[str, Any]) -> None:
        self.batch_lines.append(line)
        self.batch.append(_example_parts(fmt, obj))
        if len(self.batch) >= _BATCH_EXAMPLES:
            self.flush()

    def flush(self, *, wait: bool = False) -> None:
        """Send the current batch off; with `wait`, also take every result still in flight."""
        if self.batch:
            lines, batch = self.batch_lines, self.batch
            self.batch_lines, self.batch = [], []
            if self.executor is None:
                self._record(lines, count_examples(self.counter, batch))
            else:
                self.in_flight.append((lines, self._submit(self.executor, batch)))
        while self.in_flight and (wait or len(self.in_flight) > self.max_in_flight):
            lines, future = self.in_flight.popleft()
            self._record(lines, future.result())

    def _submit(self, executor: ThreadPoolExecutor, batch: list[Example]) -> Future[list[int]]:
        if self.batch_counter is None:
            return executor.submit(count_examples, self.counter, batch)
        # Reduce the examples to texts here, so that the worker never touches the parsed objects
        # and holds the GIL as little as possible.
        prepared = self.batch_counter.prepare_batch(batch)
        return executor.submit(self.batch_counter.count_batch, prepared)

    def _record(self, lines: list[int], counts: list[int]) -> None:
        self.histogram.update(counts)
        total = sum(counts)
        self.total += total
        self.billable += total
        limit = self.limit
        if max(counts) > limit:
            for line, n in zip(lines, counts, strict=True):
                if n > limit:
                    self._over_limit(line, n)

    def _over_limit(self, line: int, n: int) -> None:
        self.over_limit += 1
        self.billable -= n - self.limit
        self.parser.add_issue(
            Issue(
                line,
                "line",
                "example_over_token_limit",
                f"Line {line}: the example has {n} tokens, over the model's limit of "
                f"{self.limit}; training truncates it to {self.limit} tokens.",
            ),
            warning=True,
        )

    def stats(self) -> TokenStats:
        n = self.histogram.total()
        if not n:
            return TokenStats()
        rank = math.ceil(n * 95 / 100)
        seen = 0
        p95 = 0
        for value in sorted(self.histogram):
            seen += self.histogram[value]
            if seen >= rank:
                p95 = value
                break
        return TokenStats(
            min=min(self.histogram),
            mean=round(self.total / n, 2),
            p95=p95,
            max=max(self.histogram),
        )


def estimated_cost(
    billed_tokens: int, *, method: Method, price_per_million: float | None
) -> float | None:
    """Return the training cost in USD, or None where training is not billed per token."""
    if price_per_million is None or method == "reinforcement":  # RFT is billed by time
        return None
    return round(billed_tokens / 1_000_000 * price_per_million, 6)


def build_report(
    path: Path,
    *,
    method: Method,
    base: BaseModelSpec,
    n_epochs: int | None,
    counter: TokenCounter | None = None,
    threads: int | None = None,
    format_hint: Format | None = None,
) -> CheckReport:
    """Check a training file for a job of `method` on `base`; bad data never raises, I/O does.

    `counter` replaces the base model's token counter; `threads` the number of token-counting
    worker threads (0: count on the calling thread; default: one per CPU, at most 4).
    `format_hint` is the format detected when the file was uploaded; it decides ambiguous
    files, so a file of another format is reported as a mismatch, not judged line by line by
    the method's rules. Without it, the method's format decides.
    """
    if n_epochs is not None and n_epochs < 1:
        raise ValueError("n_epochs must be at least 1")
    expected = METHOD_FORMATS[method]
    counter = counter or counter_for(base.tokenizer)
    parser = JsonlParser(format_hint=format_hint or expected)
    workers = min(_MAX_WORKERS, os.cpu_count() or 1) if threads is None else threads
    with ThreadPoolExecutor(workers) if workers > 0 else nullcontext() as executor:
        tally = _TokenTally(counter, base.max_tokens_per_example, parser, executor, workers)
        parser.on_example = tally.add
        for chunk in read_chunks(path):
            parser.feed(chunk)
        parser.end()  # the last line may lack its newline: count it too
        tally.flush(wait=True)
    result = parser.finish()

    errors = result.errors
    n_errors = result.n_errors
    if result.format is not None and result.format != expected:
        mismatch = Issue(
            parser.format_line,
            "file",
            "invalid_format_for_method",
            f"The file is in the {result.format} format, but the {method} method needs the "
            f"{expected} format.",
        )
        errors = [mismatch, *errors][: parser.max_issues]
        n_errors += 1

    epochs = n_epochs if n_epochs is not None else default_epochs(result.n_examples)
    billed = tally.billable * epochs
    cost = estimated_cost(billed, method=method, price_per_million=base.training_price_per_million)
    return CheckReport(
        method=method,
        model=base.id,
        format=result.format,
        valid=n_errors == 0,
        n_examples=result.n_examples,
        tokens_per_example=tally.stats(),
        total_tokens=tally.total,
        billable_tokens=tally.billable,
        n_epochs=epochs,
        billed_tokens=billed,
        estimated_cost_usd=cost,
        max_tokens_per_example=base.max_tokens_per_example,
        n_examples_over_limit=tally.over_limit,
        warnings=[IssueModel.from_issue(i) for i in sorted(result.warnings, key=_by_line)],
        n_warnings=result.n_warnings,
        errors=[IssueModel.from_issue(i) for i in errors],
        n_errors=n_errors,
        stats=result.stats,
    )


def _by_line(issue: Issue) -> int:
    return issue.line
