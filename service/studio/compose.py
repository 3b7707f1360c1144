"""Writing an e-mail with a studio model the way it was trained: the department's system prompt,
the user template, the request's personal data replaced by placeholders (as its training mails
were), then the real values put back into the answer and the sender's name under its closing.

A model trained on redacted mail writes `[NOM_1]` where a name goes: given "Remercier M.
[NOM_1]", it writes "Bonjour M. [NOM_1]"; given the real name, which it never saw in training,
it may write a placeholder anyway. So the request is redacted before the model sees it and the
answer is restored after, and the application gets a mail it can send.
"""

from __future__ import annotations

import re
from typing import Any

import anyio

from service.db import Database
from service.engines.base import Engines
from service.inference import service as inference
from service.inference.schemas import ChatCompletionRequest
from service.models import aliases
from service.studio import cleaning, prompts
from service.studio.names import CLOSING
from service.studio.redaction import PLACEHOLDER
from service.studio.schemas import ComposeObject, ComposeRequest
from service.studio.scoring import Item, check
from service.studio.service import LazyRedactor, get_settings

_SIGNATURE_START = re.compile(rf"(?im)^[ \t]*{CLOSING}\b")
_NAME_PLACEHOLDER = re.compile(r"\[NOM_\d+\]")


def restore(answer: str, values: dict[str, str], sender: str | None) -> str:
    """Put the request's values back in place of their placeholders, and the sender's name in
    place of a name placeholder below the closing formula (where the author signs)."""
    text = PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), answer)
    closings = list(_SIGNATURE_START.finditer(text))
    if sender and closings:
        start = closings[-1].end()
        text = text[:start] + _NAME_PLACEHOLDER.sub(lambda _: sender, text[start:])
    return text


def _language(text: str) -> str:
    detected = cleaning.detect_language(text)
    return detected if detected in prompts.LANGUAGES else "fr"


async def compose(
    *,
    database: Database,
    engines: Engines,
    redactor: LazyRedactor,
    project_id: str,
    body: ComposeRequest,
) -> ComposeObject:
    """Write the e-mail `body` asks for with its model; return it with its checks."""
    async with database.session() as session:
        settings = await get_settings(session=session, project_id=project_id)
    language = body.language or _language(body.context)
    context, values = body.context, {}
    if body.redact:
        engine = await redactor.get()
        found, _ = await anyio.to_thread.run_sync(
            lambda: engine.redact([body.context], languages=language)
        )
        context = found[0].text
        values = {e.placeholder: body.context[e.start : e.end] for e in found[0].entities}
    system = prompts.system_prompt(body.department, language, settings.system_prompts)
    templates = settings.user_templates
    messages = [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": prompts.user_prompt(body.category, context, language, templates),
        },
    ]
    request = ChatCompletionRequest.model_validate(
        {
            "model": body.model,
            "messages": messages,
            "max_tokens": body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
        }
    )
    completion: dict[str, Any] = await inference.complete(
        database=database, engines=engines, project_id=project_id, request=request
    )
    if aliases.is_alias(body.model):  # rated later by its id, as any answer of an alias
        await inference.record_alias_completion(
            database=database, project_id=project_id, request=request, completion=completion
        )
    answer = completion["choices"][0]["message"].get("content") or ""
    text = restore(answer, values, body.sender)
    subject, mail = prompts.split_completion(text)
    asked = Item(
        messages=[
            messages[0],
            {
                "role": "user",
                "content": prompts.user_prompt(body.category, body.context, language, templates),
            },
        ],
        language=language,
    )
    return ComposeObject(
        id=completion["id"],
        created=completion.get("created") or 0,
        model=str(completion.get("model") or body.model),
        language=language,
        subject=subject,
        body=mail,
        text=text,
        messages=messages,
        restored=sorted(p for p in set(PLACEHOLDER.findall(answer)) if p in values),
        checks=check(text, asked).as_dict(),
        usage=completion.get("usage"),
    )
