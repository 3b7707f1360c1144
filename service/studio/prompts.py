"""The prompts a training example is written with: a system prompt per department and language,
and the user prompt the seed's `collectEmailExamples` builds from a mail's category and context.

A project may override any of them (`POST /v1/email/settings`); these are the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

DEPARTMENTS = ("marketing", "support", "sales", "hr")
LANGUAGES = ("fr", "en")

# The seed's `departmentPrompts`, word for word, and their English counterparts.
SYSTEM_PROMPTS: dict[str, dict[str, str]] = {
    "marketing": {
        "fr": "Tu es un expert en marketing qui crée des emails engageants et persuasifs.",
        "en": "You are a marketing expert who writes engaging and persuasive emails.",
    },
    "support": {
        "fr": "Tu es un agent de support qui résout les problèmes clients avec empathie.",
        "en": "You are a support agent who solves customers' problems with empathy.",
    },
    "sales": {
        "fr": "Tu es un commercial qui crée des emails de vente efficaces et professionnels.",
        "en": "You are a salesperson who writes effective and professional sales emails.",
    },
    "hr": {
        "fr": "Tu es un responsable RH qui communique avec tact et professionnalisme.",
        "en": "You are an HR manager who communicates with tact and professionalism.",
    },
}
# The seed falls back to the support prompt for a department it does not know.
FALLBACK_DEPARTMENT = "support"

# The seed's prompt (`Écrire un email ${category} pour: ${context}`) and its English counterpart.
USER_TEMPLATES: dict[str, str] = {
    "fr": "Écrire un email {category} pour: {context}",
    "en": "Write an email ({category}) for: {context}",
}


def system_prompt(
    department: str, language: str, overrides: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """Return the system prompt of a department in a language, a project's override first."""
    language = language if language in LANGUAGES else "fr"
    for table in (overrides or {}, SYSTEM_PROMPTS):
        prompts = table.get(department)
        if prompts and language in prompts:
            return prompts[language]
    return SYSTEM_PROMPTS[FALLBACK_DEPARTMENT][language]


def user_prompt(
    category: str, context: str, language: str, templates: Mapping[str, str] | None = None
) -> str:
    """Return the user prompt for a mail's category and context, a project's template first."""
    language = language if language in LANGUAGES else "fr"
    template = (templates or {}).get(language) or USER_TEMPLATES[language]
    return template.format(category=category.strip(), context=context.strip())


def completion(subject: str, body: str) -> str:
    """Return what the model learns to write: the subject, a blank line, the body."""
    return f"{subject.strip()}\n\n{body.strip()}"


def split_completion(text: str) -> tuple[str | None, str]:
    """Split what a model writes (the subject, a blank line, the body) into its two parts; the
    subject is None when the first paragraph is not one (a greeting such as "Bonjour," is not)."""
    head, _, rest = text.strip().partition("\n\n")
    if rest and "\n" not in head and len(head) <= 200 and not head.rstrip().endswith(","):
        return head.strip().removeprefix("Subject:").removeprefix("Objet :").strip(), rest.strip()
    return None, text.strip()
