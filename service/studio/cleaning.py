"""What an e-mail body is stripped of before it is trained on: quoted replies, forwarded blocks,
contact cards under the signature and legal disclaimers; and the checks that drop a mail:
language, emptiness, duplicates.

The closing formula and the signing name stay: a model must learn to close a mail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache

from datasketch import MinHash, MinHashLSH
from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder
from mailparser_reply import EmailReplyParser

from service.studio.names import CLOSING

# Where an earlier message starts when the mail client wrote no quote header that
# mail-parser-reply knows.
_FORWARDED = re.compile(
    r"(?im)^[ \t>]*(?:-{2,}[ \t]*(?:Forwarded message|Message transféré|Original Message"
    r"|Message d'origine|Message original)[ \t]*-{2,}|Début du message réexpédié ?:"
    r"|Begin forwarded message:)"
    r"|^[ \t]*(?:De|From)[ \t]*:[^\n]*\n[ \t]*(?:Envoyé|Sent|Date)[ \t]*:"
)
_QUOTED_LINE = re.compile(r"(?m)^[ \t]*>.*(?:\n|$)")
# Paragraphs that are boilerplate, not writing: confidentiality notices and the like.
_DISCLAIMER = re.compile(
    r"(?is)^[ \t]*(?:\*{0,2}(?:avertissement|disclaimer|confidential(?:ité|ity)?)\b"
    r"|ce (?:message|courriel|e-mail|mail)(?: électronique)?(?: et (?:ses|les|toutes les) pièces"
    r" jointes)?,? (?:est|sont|peut|contient)[^.]*confidenti"
    r"|this (?:e-?mail|message)(?: and any (?:files|attachments)[^.]*?)?,? (?:is|are|may)[^.]*"
    r"(?:confidential|privileged)"
    r"|(?:pensez|merci de penser) à l'environnement|please consider the environment)"
)
# A line of a contact card: a phone, an address on the web, a mail address, a social link.
_CARD_LINE = re.compile(
    r"(?i)^[ \t]*(?:(?:t[ée]l(?:[ée]phone)?|tel|mob(?:ile)?|portable|port|fax|ligne directe"
    r"|direct|phone|cell|m|t|e|w|mail|e-mail|courriel|web|site)\.?[ \t]*(?::|(?=[+\d]))"
    r"|[+(]?\d[\d .()/-]{7,}\d[ \t]*$|(?:https?://|www\.)\S+[ \t]*$|\S+@\S+\.\w+[ \t]*$"
    r"|(?:linkedin|twitter|x)\.com/)"
)
_MIN_WORDS = 5


def strip_quoted(body: str, *, language: str) -> str:
    """Return the newest message of body: replies and forwarded blocks below it removed."""
    parser = EmailReplyParser(languages=[language] if language in {"fr", "en"} else ["fr", "en"])
    newest = parser.parse_reply(text=body) or body
    forwarded = _FORWARDED.search(newest)
    if forwarded is not None:
        newest = newest[: forwarded.start()]
    return _QUOTED_LINE.sub("", newest).strip()


def strip_boilerplate(body: str) -> str:
    """Return body without disclaimers and without the contact card below the signing name."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", body) if not _DISCLAIMER.match(p)]
    text = "\n\n".join(paragraphs).strip()
    closings = list(re.finditer(rf"(?m)^[ \t]*{CLOSING}[ \t]*[,.!]?[ \t]*$", text))
    if not closings:
        return _without_card_lines(text)
    # The last closing formula is the signature's; the first line after it is the signing name.
    head, tail = text[: closings[-1].end()], text[closings[-1].end() :]
    name = re.match(r"\s*[^\n]*", tail)
    signature = name.group() if name else ""
    rest = tail[len(signature) :]
    if not rest.strip() or _is_card(rest):
        return (head + signature).rstrip()
    # More writing after the signature (a P.S.): keep it, without its contact lines.
    return (head + signature + "\n" + _without_card_lines(rest)).rstrip()


def _is_card(block: str) -> bool:
    lines = [line.strip() for line in block.strip().split("\n") if line.strip()]
    return all(len(line) <= 80 and not line.endswith((".", "?", "!")) for line in lines) or any(
        _CARD_LINE.match(line) for line in lines
    )


def _without_card_lines(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if not _CARD_LINE.match(line)).strip()


def clean_body(body: str, *, language: str) -> str:
    """Return the part of body worth training on."""
    return strip_boilerplate(strip_quoted(body.replace("\r\n", "\n"), language=language))


def is_empty(text: str) -> bool:
    """Tell whether text holds too few words to teach anything."""
    return len(re.findall(r"\w+", text)) < _MIN_WORDS


@cache
def _detector() -> LanguageDetector:
    # French and English, and the languages a French company's mail most often mixes in, so that
    # a German mail is reported as German rather than forced into French or English.
    languages = [
        Language.FRENCH,
        Language.ENGLISH,
        Language.GERMAN,
        Language.SPANISH,
        Language.ITALIAN,
        Language.DUTCH,
        Language.PORTUGUESE,
    ]
    return LanguageDetectorBuilder.from_languages(*languages).build()


def detect_language(text: str) -> str | None:
    """Return the ISO 639-1 code of text's language, or None when it cannot tell."""
    found = _detector().detect_language_of(text)
    if found is None:
        return None
    code: IsoCode639_1 = found.iso_code_639_1
    return str(code.name).lower()


def detect_languages(texts: Sequence[str]) -> list[str | None]:
    """Return the language of each text (in parallel inside lingua)."""
    found = _detector().detect_languages_in_parallel_of(list(texts))
    return [None if lang is None else str(lang.iso_code_639_1.name).lower() for lang in found]


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def _shingles(text: str, size: int = 3) -> set[bytes]:
    words = text.split()
    if len(words) <= size:
        return {text.encode()}
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


def duplicates(texts: Iterable[str], *, threshold: float = 0.85) -> dict[int, tuple[str, int]]:
    """Map the index of each duplicate text to (reason, index of the text it repeats).

    Exact duplicates after normalising case, spaces and punctuation; near duplicates (the same
    mail with another name or date) when the Jaccard similarity of their word trigrams reaches
    `threshold`. A MinHash LSH index, tuned loose, proposes candidates so that 10,000 mails are
    not compared pair by pair; the exact similarity decides.
    """
    seen: dict[str, int] = {}
    lsh = MinHashLSH(threshold=threshold - 0.2, num_perm=_PERMUTATIONS)
    shingles: dict[int, set[bytes]] = {}
    found: dict[int, tuple[str, int]] = {}
    for index, text in enumerate(texts):
        key = _normalised(text)
        if key in seen:
            found[index] = ("duplicate", seen[key])
            continue
        seen[key] = index
        mine = _shingles(key)
        signature = MinHash(num_perm=_PERMUTATIONS, seed=1)
        signature.update_batch(list(mine))
        similar = [
            int(other)
            for other in lsh.query(signature)
            if _jaccard(mine, shingles[int(other)]) >= threshold
        ]
        if similar:
            found[index] = ("near_duplicate", min(similar))
            continue
        lsh.insert(str(index), signature)
        shingles[index] = mine
    return found


_PERMUTATIONS = 128


def _jaccard(a: set[bytes], b: set[bytes]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0
