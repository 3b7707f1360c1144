"""Person names in business e-mail, found where e-mail puts them: after a title, in the greeting,
on the signature line, and wherever a known first name starts a name.

Rules rather than a statistical NER model: on these texts a small spaCy pipeline tags half the
capitalised words as persons (precision near 0.36) and is the slowest part of a Presidio run.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache

_UPPER = "A-ZÀ-ÖØ-Þ"
_LOWER = "a-zß-öø-ÿ"
# "Roussel-Biet", "O'Neill", "Ramanathan-Cole", "DUPONT"; an initial such as "R." counts too.
_WORD = (
    rf"(?:[{_UPPER}](?:[{_LOWER}]+|['’][{_UPPER}][{_LOWER}]+)(?:[-'’][{_UPPER}][{_LOWER}]+)*"
    rf"|[{_UPPER}]{{2,}}(?:-[{_UPPER}]{{2,}})*)"
)
_INITIAL = rf"[{_UPPER}]\."
_PARTICLE = (
    r"(?:de la|de|du|des|d'|d’|van der|van den|van|von|der|den|le|la|De|Van|Von|Le|La|Di|Da)"
)
# A name: one to four words; particles only inside it ("Jean de La Fontaine", "Tom van Oosterhuis").
NAME = rf"(?:{_INITIAL}[ ]?)?{_WORD}(?:(?:[ ]+{_PARTICLE}[ ]?|[ ]+|-){_WORD}){{0,3}}"
_TITLE = (
    r"(?:M\.|MM\.|Mme|Mmes|Mlle|Madame|Monsieur|Mademoiselle|Maître|Me|Docteur|Dr\.?|Pr\.?"
    r"|Professeur|Mr\.?|Mrs\.?|Ms\.?|Miss|Mx\.?|Sir|Dame|Prof\.?)"
)
_GREETING = r"(?:Bonjour|Bonsoir|Cher|Chère|Chers|Chères|Dear|Hello|Hi|Hey|Salut|Coucou)"
CLOSING = (
    r"(?:(?:Bien |Très )?[Cc]ordialement|Bien à (?:vous|toi)|(?:Bien )?[Aa]micalement"
    r"|Respectueusement"
    r"|(?:Sincères |Meilleures |Mes )?[Ss]alutations(?: distinguées)?|Bonne (?:journée|soirée)"
    r"|Belle journée|À (?:très )?bientôt|A bientôt|Merci(?: beaucoup| encore| d'avance)?"
    r"|(?:Kind|Best|Warm|Warmest|Many thanks and) regards|Regards|Best(?: wishes)?|Cheers"
    r"|(?:Yours )?(?:[Ss]incerely|[Ff]aithfully|[Tt]ruly)|Thanks(?: again)?|Thank you|Many thanks"
    r"|Talk soon|Speak soon|All the best)"
)

_TITLED = re.compile(rf"\b{_TITLE}[ \u00a0]+(?P<name>(?:{_PARTICLE}[ ])?{NAME})")
_GREETED = re.compile(
    rf"(?m)^[ \t]*{_GREETING}[ \t]+(?:{_TITLE}[ \t]+)?(?P<name>{NAME})[ \t]*[,!\n]"
)
_SIGNED = re.compile(
    rf"(?m)^[ \t]*{CLOSING}[ \t]*[,.!]?[ \t]*(?:\n[ \t]*)+(?P<name>{NAME})[ \t]*,?[ \t]*$"
    rf"|^[ \t]*{CLOSING}[ \t]*,[ \t]*(?P<inline>{NAME})[ \t]*$"
)
_WORDS = re.compile(_WORD)

# Words that a greeting or a signature line puts where a name goes but that are no names.
_NOT_NAMES = frozenset(
    """
        Team Teams All Everyone Everybody Customer Customers Client Clients Colleague
        Colleagues Partner Partners Friends Madam Sir Sirs Madame Monsieur Messieurs Mesdames
        Mademoiselle Tous Toutes Équipe Equipe Service Direction Support Sales Marketing
        Ressources Humaines Accounting Finance Comptabilité Commercial Responsable Manager
        Director Directeur Directrice Chère Cher Bonjour Hello Merci Thanks Regards
        Cordialement Atelier Groupe Société Maison Cabinet Agence Studio Le La Les L Nous Vous
        Je Our The This Your You We All Madame Monsieur Docteur Maître Mr Mrs Ms Dr Mme Mlle
        Miss Prof
        """.split()
)


@cache
def _first_names_from_faker() -> frozenset[str]:
    """Return the first names of Faker's French, English and neighbouring locales."""
    names: set[str] = set()
    for locale in """
        fr_FR fr_CA fr_CH fr_BE en_US en_GB en_IE en_CA en_AU en_IN en_NZ es_ES it_IT de_DE
        pt_PT pt_BR nl_NL nl_BE pl_PL ar_AA tr_TR
        """.split():
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ImportError:
            continue
        for attribute in ("first_names", "first_names_male", "first_names_female"):
            value = vars(provider).get(attribute)
            if isinstance(value, dict | list | tuple | set | frozenset):
                names.update(str(name) for name in value)
    return frozenset(names)


@cache
def ordinary_words() -> frozenset[str]:
    """Return words that are first names somewhere but ordinary words in these mails."""
    from faker.providers.address.en_US import Provider as EnglishAddresses
    from faker.providers.address.fr_FR import Provider as FrenchAddresses
    from spacy.lang.en.stop_words import STOP_WORDS as ENGLISH_STOP_WORDS
    from spacy.lang.fr.stop_words import STOP_WORDS as FRENCH_STOP_WORDS

    calendar = """
        janvier février mars avril mai juin juillet août septembre octobre novembre décembre
        lundi mardi mercredi jeudi vendredi samedi dimanche january february march april may
        june july august september october november december monday tuesday wednesday thursday
        friday saturday sunday
        """.split()
    places = [
        *FrenchAddresses.countries,
        *EnglishAddresses.countries,
        "Paris",
        "Lyon",
        "Nice",
        "Florence",
        "Valence",
        "Orange",
        "Lourdes",
        "Victoria",
        "Sydney",
        "London",
        "Jersey",
        "Madison",
        "Austin",
        "Chelsea",
    ]
    # Words a business mail capitalises that some locale also lists as a first name.
    common = """
        Rose Page Olive Hope Joy Faith Summer Sky Angel Chance Grace Mark Bill Rich Frank Art
        Ray Dean Don Sun Max Pierre Claire Victoire France Avril Guy Will Miles Sandy Patience
        Reine Prudence Espérance Marine Océane Aube Aurore Flore Noël Gentil Franc Blanche
        Colombe Perle Ambre Jade Violette Iris Lys Rosé Daisy Ivy Holly Crystal Amber Pearl
        Ruby Jasmine Hazel Heather Autumn Dawn Star Prince Duke King Earl Baron Major Hunter
        Mason Cooper Parker Carter Porter Fisher Baker Archer Gene Lance Pat Sue Van Nick Long
        Young Bright Case Cash Clay Lane Field Hill Wood Brook Rock Stone Forest Gray Grey
        Green Black White Brown Bell Ferrari Mercedes Sophia Ford Lincoln
        """.split()
    words = {word.capitalize() for word in (*FRENCH_STOP_WORDS, *ENGLISH_STOP_WORDS, *calendar)}
    return frozenset(words | set(places) | set(common))


@cache
def first_names() -> frozenset[str]:
    """Return the first names the recogniser trusts on their own (built once per process)."""
    return frozenset(
        name
        for name in _first_names_from_faker() - ordinary_words()
        if len(name) >= 3 and name.isalpha()
    )


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Drop leading and trailing words that are not names; None when nothing is left."""
    words = [match for match in _WORDS.finditer(text, start, end)]
    while words and words[0].group() in _NOT_NAMES:
        words.pop(0)
    while words and words[-1].group() in _NOT_NAMES:
        words.pop()
    if not words:
        return None
    begin = words[0].start()
    # A particle the pattern put first belongs to the name ("Mr. van Oosterhuis").
    if re.fullmatch(_PARTICLE, text[start:begin].strip()):
        begin = start
    # An initial before the first word ("R. Tessereau") belongs to the name.
    if begin >= 3 and text[begin - 2] == "." and text[begin - 3].isupper() and begin - 3 >= start:
        begin -= 3
    return begin, words[-1].end()


def find_names(text: str) -> Iterator[tuple[int, int, float]]:
    """Yield (start, end, score) for each person name the rules find in text."""
    for pattern, score in ((_TITLED, 0.9), (_GREETED, 0.85), (_SIGNED, 0.85)):
        for match in pattern.finditer(text):
            group = "name" if match.group("name") is not None else "inline"
            span = _trimmed(text, match.start(group), match.end(group))
            if span is not None:
                yield (*span, score)
    known = first_names()
    for match in _WORDS.finditer(text):
        word = match.group()
        # A compound first name ("Marie-Claire") is one whose parts all are first names.
        if word not in known and not (
            "-" in word and all(part in _first_names_from_faker() for part in word.split("-"))
        ):
            continue
        end = match.end()
        # A capitalised word right after a first name is its surname ("Hannah Ellery will").
        following = _WORDS.match(text, end + 1) if text[end : end + 1] == " " else None
        if (
            following is not None
            and following.group() not in _NOT_NAMES
            and following.group().capitalize() not in ordinary_words()
        ):
            end = following.end()
        yield match.start(), end, 0.7
