"""Training data: structural validation of fine-tuning JSONL files and the per-job check report."""

from service.training_data.formats import (
    FORMATS,
    MIN_EXAMPLES,
    Format,
    Issue,
    JsonlParser,
    ParseResult,
    validate_chunks,
    validate_file,
    validate_lines,
)
from service.training_data.report import CheckReport, IssueModel, TokenStats, build_report

__all__ = [
    "FORMATS",
    "MIN_EXAMPLES",
    "CheckReport",
    "Format",
    "Issue",
    "IssueModel",
    "JsonlParser",
    "ParseResult",
    "TokenStats",
    "build_report",
    "validate_chunks",
    "validate_file",
    "validate_lines",
]
