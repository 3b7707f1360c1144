"""Presidio recognisers for the personal data of French and English business e-mail: addresses,
phone numbers, IBAN and BIC, national identifiers, e-mail addresses and person names (the rules of
`service.studio.names`).

Each recogniser keeps its own case-sensitive patterns (Presidio's pattern recogniser applies the
analyser's IGNORECASE, which would read any eleven-letter word as a BIC).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import PhoneRecognizer
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from service.studio.names import find_names, first_names

# The regions whose national formats ("06 12 34 56 78", "020 7946 0000") are read without a
# country code; numbers written with one ("+44 ...") are found whatever the region.
PHONE_REGIONS = ("FR", "BE", "CH", "LU", "GB", "IE", "US", "CA", "DE", "ES", "IT", "MA")

_UPPER = "A-ZÀ-ÖØ-Þ"
_NAME_WORD = rf"[{_UPPER}0-9][\wÀ-ÿ'’]*(?:-[\wÀ-ÿ'’]+)*"
_LINK = r"(?:de la|de l'|de l’|d'|d’|du|des|de|la|le|les|l'|l’|aux|au|à|et|sur|sous|en|lès)"

_FRENCH_STREET_TYPES = (
    r"(?:rue|avenue|av\.|boulevard|bd|allée|allées|impasse|place|chemin|route|quai|cours|square"
    r"|passage|voie|esplanade|rond-point|lotissement|résidence|hameau|cité|parvis|sentier|villa"
    r"|promenade|faubourg|chaussée|montée|rampe|ruelle|sente|traverse|zone|ZA|ZI|ZAC)"
)
_FRENCH_STREET = (
    rf"\b\d{{1,4}}(?:[ ]?(?:bis|ter|quater|[A-D]))?,?[ ]+{_FRENCH_STREET_TYPES}[ ]+"
    rf"(?:{_LINK}[ ]?)?{_NAME_WORD}(?:[ ](?:{_LINK}[ ]?)?{_NAME_WORD})*"
)
# "69400 Villefranche-sur-Saône", "44000 Nantes Cedex 1": hyphenated parts are one word.
_FRENCH_CITY = (
    rf"\d{{5}}[ ]+{_NAME_WORD}(?:[ ][{_UPPER}][\wÀ-ÿ'’]*(?:-[\wÀ-ÿ'’]+)*)*"
    rf"(?:[ ]+(?:CEDEX|Cedex)(?:[ ]\d+)?)?"
)
_FRENCH_ADDRESS = re.compile(
    rf"(?:(?:BP|CS)[ ]\d+,?[ ]+)?{_FRENCH_STREET}(?:[ \t]*,?[ \t]*\n?[ \t]*{_FRENCH_CITY})?"
)

_UK_STREET_TYPES = (
    r"(?:Road|Street|St|Avenue|Ave|Lane|Mews|Close|Court|Drive|Way|Place|Square|Gardens|Terrace"
    r"|Crescent|Row|Hill|Park|Grove|Walk|Yard|Wharf|Parade|Boulevard|Rise|View|Green)"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]?[ ]?\d[A-Z]{2}"
_UK_ADDRESS = re.compile(
    rf"(?:(?:Unit|Flat|Suite|Apartment|Floor)[ ]\d+[A-Z]?,?[ ]+)?\b\d{{1,4}}[A-Z]?[ ]+"
    rf"(?:[A-Z][a-z]+[ ]){{1,3}}{_UK_STREET_TYPES}\b"
    rf"(?:[ \t]*,?[ \t]*\n?[ \t]*(?:[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*,?[ ]+)?{_UK_POSTCODE})?"
)

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b")
# Spaces every four characters as people write them, or none at all.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_BIC = re.compile(r"\b[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b")
# French social security number (NIR): sex, year, month, department, commune, order, key.
_NIR = re.compile(r"\b[12][ ]?\d{2}[ ]?\d{2}[ ]?(?:\d{2}|2[AB])[ ]?\d{3}[ ]?\d{3}(?:[ ]?\d{2})?\b")
# UK National Insurance number.
_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z]{2}[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-D]\b")


class _Patterns(EntityRecognizer):
    """A recogniser for one entity type from case-sensitive patterns and a check per match."""

    entity = ""
    patterns: tuple[tuple[re.Pattern[str], float], ...] = ()

    def __init__(self, *, language: str) -> None:
        super().__init__(supported_entities=[self.entity], supported_language=language)

    def load(self) -> None:
        """Nothing to load: the patterns are compiled at import."""

    def score(self, text: str, score: float) -> float | None:
        """Return the score of a match, or None to drop it."""
        return score

    def spans(self, text: str) -> Iterator[tuple[int, int, float]]:
        """Yield (start, end, score) for each match that passes `score`."""
        for pattern, base in self.patterns:
            for match in pattern.finditer(text):
                score = self.score(match.group(), base)
                if score is not None:
                    yield match.start(), match.end(), score

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return this recogniser's spans of text."""
        return [
            RecognizerResult(self.entity, start, end, score)
            for start, end, score in self.spans(text)
        ]


class EmailRecognizer(_Patterns):
    """E-mail addresses."""

    entity = "EMAIL"
    patterns = ((_EMAIL, 0.95),)


class IbanRecognizer(_Patterns):
    """IBANs: a valid checksum is certain; the right length for the country is enough to redact."""

    entity = "IBAN"
    patterns = ((_IBAN, 0.8),)

    def score(self, text: str, score: float) -> float | None:
        """Trust a valid IBAN fully; keep one of the country's length whose checksum fails."""
        try:
            IBAN(text)
            return 1.0
        except SchwiftyException:
            pass
        try:
            # Example and mistyped IBANs fail the checksum but are still someone's bank details.
            candidate = IBAN(text, allow_invalid=True)
            plausible = len(candidate) == candidate.spec.iban_length and bool(
                candidate.spec.regex.match(candidate.bban)
            )
        except (SchwiftyException, KeyError, ValueError):
            return None
        return score if plausible else None


class BicRecognizer(_Patterns):
    """BIC (SWIFT) codes with a known country, not ordinary upper-case words."""

    entity = "BIC"
    patterns = ((_BIC, 0.75),)

    def score(self, text: str, score: float) -> float | None:
        """Keep a BIC whose structure and country schwifty accepts and that has a digit or X."""
        try:
            BIC(text)
        except SchwiftyException:
            return None
        # "ENTREPRISE"-like acronyms pass the structure; real BICs have a digit or a branch code.
        return score if any(c.isdigit() for c in text) or len(text) == 11 or "PP" in text else None


class AddressRecognizer(_Patterns):
    """French and British street addresses, with the postcode and city that follow."""

    entity = "ADDRESS"
    patterns = ((_FRENCH_ADDRESS, 0.85), (_UK_ADDRESS, 0.85))


class NationalIdRecognizer(_Patterns):
    """French social security numbers (NIR) and UK National Insurance numbers."""

    entity = "ID"
    patterns = ((_NIR, 0.9), (_NINO, 0.85))


class PhoneNumberRecognizer(PhoneRecognizer):
    """Presidio's phonenumbers-based recogniser, lenient but only on numbers written as such.

    Leniency 0 (POSSIBLE) accepts unassigned numbers ("06 00 00 00 58" in examples and tests);
    on its own it also reads "21", "2026-118" or "140 x 70" as numbers, so a match must have at
    least eight digits and start the way a dialled number does.
    """

    def __init__(self, *, language: str) -> None:
        super().__init__(
            supported_language=language,
            supported_regions=PHONE_REGIONS,
            supported_entity="PHONE",
            leniency=0,
        )

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return the phone numbers of text."""
        return [
            result
            # Presidio's phone recogniser reads no NLP artefacts; None is what the no-op engine has.
            for result in super().analyze(text, entities, nlp_artifacts)  # type: ignore[arg-type]
            if _dialled(text[result.start : result.end])
        ]


def _dialled(number: str) -> bool:
    """Tell whether a match looks like a dialled number: +, 0 or ( first, eight digits or more."""
    digits = sum(c.isdigit() for c in number)
    return digits >= 8 and number[:1] in {"+", "0", "("} and not _DATE.fullmatch(number)


_DATE = re.compile(r"\d{2,4}[-/.]\d{1,2}[-/.]\d{1,4}")


class PersonNameRecognizer(EntityRecognizer):
    """Presidio recogniser for PERSON built on `find_names` (needs no NLP artefacts)."""

    def __init__(self, *, language: str) -> None:
        super().__init__(
            supported_entities=["PERSON"], supported_language=language, name="PersonNames"
        )

    def load(self) -> None:
        """Build the first-name list now rather than on the first request."""
        first_names()

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return the PERSON spans of text."""
        return [
            RecognizerResult("PERSON", start, end, score) for start, end, score in find_names(text)
        ]


def recognizers(*, language: str) -> list[EntityRecognizer]:
    """Return every recogniser of personal data, for one language."""
    return [
        PersonNameRecognizer(language=language),
        EmailRecognizer(language=language),
        IbanRecognizer(language=language),
        BicRecognizer(language=language),
        AddressRecognizer(language=language),
        NationalIdRecognizer(language=language),
        PhoneNumberRecognizer(language=language),
    ]
