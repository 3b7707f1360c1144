"""Personal data out of e-mail text: Presidio finds it, placeholders replace it.

A `Redactor` is built once per process (its recognisers hold compiled patterns and a first-name
list). `redact` works on a batch: placeholders are consistent across the batch ("Julien Marsac"
is `[NOM_1]` in every mail of a dataset, and so is a later "Marsac" alone), and a name found
in one mail's signature is found in another mail's body even where no rule would see it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.studio.names import first_names, ordinary_words

if TYPE_CHECKING:
    from presidio_analyzer import RecognizerResult

LANGUAGES = ("fr", "en")
ENTITY_TYPES = ("PERSON", "EMAIL", "PHONE", "IBAN", "BIC", "ADDRESS", "ID")
# The placeholder's label per type: French words, as the seed's users read them in either language.
LABELS = {
    "PERSON": "NOM",
    "EMAIL": "EMAIL",
    "PHONE": "TEL",
    "IBAN": "IBAN",
    "BIC": "BIC",
    "ADDRESS": "ADRESSE",
    "ID": "ID",
}
PLACEHOLDER = re.compile(r"\[(?:{})_\d+\]".format("|".join(sorted(set(LABELS.values())))))
# Rules below this score only count when another rule or the batch confirms them.
_MIN_SCORE = 0.4


@dataclass(frozen=True)
class Entity:
    """One replaced span: offsets into the original text, and what replaced it."""

    type: str
    start: int
    end: int
    placeholder: str


@dataclass(frozen=True)
class Redacted:
    """A text with its personal data replaced, and what was replaced."""

    text: str
    entities: list[Entity]


@dataclass
class Placeholders:
    """Numbered placeholders per type, the same for the same value across one batch."""

    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def get(self, entity_type: str, value: str) -> str:
        """Return the placeholder of value, numbering a new one on first sight."""
        key = (entity_type, _normalised(entity_type, value))
        if key not in self._by_value:
            # A surname or first name alone is the person already named in full.
            if entity_type == "PERSON" and " " not in key[1]:
                for (kind, known), placeholder in self._by_value.items():
                    if kind == "PERSON" and key[1] in known.split(" "):
                        self._by_value[key] = placeholder
                        return placeholder
            self._counts[entity_type] = self._counts.get(entity_type, 0) + 1
            self._by_value[key] = f"[{LABELS[entity_type]}_{self._counts[entity_type]}]"
        return self._by_value[key]

    def counts(self) -> dict[str, int]:
        """Return how many distinct values of each type were replaced."""
        return dict(self._counts)


def _normalised(entity_type: str, value: str) -> str:
    """Return the form two spellings of one value share (spaces and case in numbers)."""
    if entity_type in {"PHONE", "IBAN", "BIC", "ID"}:
        return re.sub(r"[^0-9A-Za-z+]", "", value).upper().replace("+33", "0")
    return (
        " ".join(value.split()).casefold() if entity_type != "PERSON" else " ".join(value.split())
    )


def _without_overlaps(results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Keep the best of overlapping spans: higher score first, then the longer span."""
    kept: list[RecognizerResult] = []
    for result in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        if all(result.end <= other.start or result.start >= other.end for other in kept):
            kept.append(result)
    return sorted(kept, key=lambda r: r.start)


class Redactor:
    """Find and replace personal data in French and English text."""

    def __init__(self) -> None:
        # Presidio is imported here, not with the module: it imports torch and transformers
        # (seconds), and the service imports this module at start-up but builds a Redactor only
        # when the studio first redacts.
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
        from presidio_anonymizer import AnonymizerEngine

        from service.studio.recognizers import recognizers

        registry = RecognizerRegistry(supported_languages=list(LANGUAGES))
        for language in LANGUAGES:
            for recognizer in recognizers(language=language):
                registry.add_recognizer(recognizer)
        nlp = NoOpNlpEngine(
            models=[{"lang_code": code, "model_name": "none"} for code in LANGUAGES]
        )
        nlp.load()
        self._analyzer = AnalyzerEngine(
            registry=registry, nlp_engine=nlp, supported_languages=list(LANGUAGES)
        )
        self._anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]
        first_names()

    def find(self, text: str, *, language: str = "fr") -> list[RecognizerResult]:
        """Return the personal data spans of one text, without overlaps."""
        found = self._analyzer.analyze(
            text=text,
            language=language if language in LANGUAGES else "fr",
            score_threshold=_MIN_SCORE,
        )
        return _without_overlaps(list(found))

    def redact(
        self, texts: Sequence[str], *, languages: Sequence[str] | str = "fr"
    ) -> tuple[list[Redacted], Placeholders]:
        """Redact a batch of texts with one set of placeholders; return them and the set."""
        if isinstance(languages, str):
            languages = [languages] * len(texts)
        found = [
            self.find(text, language=lang) for text, lang in zip(texts, languages, strict=True)
        ]
        found = _with_known_names(texts, found)
        placeholders = Placeholders()
        redacted = [
            self._replace(text, spans, placeholders)
            for text, spans in zip(texts, found, strict=True)
        ]
        return redacted, placeholders

    def _replace(
        self, text: str, spans: list[RecognizerResult], placeholders: Placeholders
    ) -> Redacted:
        from presidio_anonymizer.entities import OperatorConfig
        from presidio_anonymizer.entities import RecognizerResult as AnonymizerInput

        entities = [
            Entity(
                type=span.entity_type,
                start=span.start,
                end=span.end,
                placeholder=placeholders.get(span.entity_type, text[span.start : span.end]),
            )
            for span in spans
        ]
        # Numbered left to right above; the anonymiser, which works right to left, finds them set.
        operators = {
            entity_type: OperatorConfig(
                "custom", {"lambda": lambda value, kind=entity_type: placeholders.get(kind, value)}
            )
            for entity_type in ENTITY_TYPES
        }
        result = self._anonymizer.anonymize(
            text=text,
            analyzer_results=[
                AnonymizerInput(span.entity_type, span.start, span.end, span.score)
                for span in spans
            ],
            operators=operators,
        )
        return Redacted(text=result.text, entities=entities)


def _with_known_names(
    texts: Sequence[str], found: list[list[RecognizerResult]]
) -> list[list[RecognizerResult]]:
    """Add every other occurrence of the names found in the batch, full names and their parts."""
    from presidio_analyzer import RecognizerResult

    known: set[str] = set()
    ordinary = ordinary_words()
    for text, spans in zip(texts, found, strict=True):
        for span in spans:
            if span.entity_type != "PERSON":
                continue
            name = text[span.start : span.end]
            known.add(name)
            known.update(
                part for part in re.split(r"[ ]+", name) if len(part) >= 3 and part not in ordinary
            )
    if not known:
        return found
    pattern = re.compile(
        r"(?<![\w])(?:{})(?![\w])".format(
            "|".join(re.escape(name) for name in sorted(known, key=len, reverse=True))
        )
    )
    completed = []
    for text, spans in zip(texts, found, strict=True):
        extra = [
            RecognizerResult("PERSON", match.start(), match.end(), 0.6)
            for match in pattern.finditer(text)
            if all(match.end() <= span.start or match.start() >= span.end for span in spans)
        ]
        completed.append(_without_overlaps(spans + extra) if extra else spans)
    return completed
