"""One upstream provider: its `openai.AsyncOpenAI` client, its models, and keeping its key secret.

Every upstream call goes through the official SDK, which retries 408, 409, 429, 5xx, timeouts and
dropped connections with exponential backoff, honouring `Retry-After`. Azure OpenAI takes its
key in an `api-key` header on its `/openai/v1/` base URL; the others take a bearer key.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

import openai

from service.errors import APIError, InvalidRequest, NotFound, PermissionDenied, ServiceUnavailable
from service.models.registry import ALL_METHODS, OPENAI_BASE_MODELS, BaseModelSpec, Method
from service.settings import ProviderSettings, Settings

# OpenAI ends self-serve job creation for everyone on this day (notice of 2026-05-07).
OPENAI_JOB_CREATION_END = date(2027, 1, 6)
# What a model the catalog does not know is assumed to allow (peers run the local engine).
DEFAULT_METHODS: dict[str, frozenset[Method]] = {
    "peer": ALL_METHODS,
    "openai": frozenset({"supervised", "dpo"}),
    "azure": frozenset({"supervised", "dpo"}),
    "nebius": frozenset({"supervised"}),
}
# A peer trains at most this many tokens per example (the local engine's limit).
PEER_MAX_TOKENS = 4096
UNKNOWN_MAX_TOKENS = 65_536
# The metadata key that ties a provider's job to ours, so a create repeated after a crash finds it.
JOB_ID_METADATA_KEY = "ft_job_id"
MAX_METADATA_PAIRS = 16


def make_client(provider: ProviderSettings, settings: Settings) -> openai.AsyncOpenAI:
    """Return the SDK client of a provider."""
    key = provider.api_key.get_secret_value()
    headers = {"api-key": key} if provider.kind == "azure" else None
    return openai.AsyncOpenAI(
        base_url=str(provider.base_url),
        api_key=key,
        default_headers=headers,
        timeout=settings.upstream_timeout_seconds,
        max_retries=settings.upstream_max_retries,
        webhook_secret=(
            provider.webhook_secret.get_secret_value() if provider.webhook_secret else None
        ),
    )


def _catalog_spec(name: str) -> BaseModelSpec | None:
    for spec in OPENAI_BASE_MODELS:
        if name == spec.id or name in spec.aliases:
            return spec
    return None


def provider_models(provider: ProviderSettings) -> list[BaseModelSpec]:
    """The base models a provider offers, with their limits and retirement dates."""
    specs = []
    for entry in provider.model_entries():
        known = _catalog_spec(entry.id) if provider.kind in ("openai", "azure") else None
        if known is not None:
            spec = known
            if provider.kind == "openai":
                spec = dataclasses.replace(spec, training_cutoff=OPENAI_JOB_CREATION_END)
        else:
            spec = BaseModelSpec(
                id=entry.id,
                methods=DEFAULT_METHODS[provider.kind],
                max_tokens_per_example=(
                    PEER_MAX_TOKENS if provider.kind == "peer" else UNKNOWN_MAX_TOKENS
                ),
                # Only approximate for a model with a tokenizer of its own (token counts, costs).
                tokenizer="tiktoken:o200k_base",
                created=0,
                owned_by=provider.name,
            )
        overrides: dict[str, object] = {}
        if entry.methods is not None:
            overrides["methods"] = frozenset(entry.methods)
        if entry.shutdown_date is not None:
            overrides["shutdown_date"] = entry.shutdown_date
        if entry.training_cutoff is not None:
            overrides["training_cutoff"] = entry.training_cutoff
        specs.append(dataclasses.replace(spec, **overrides))  # type: ignore[arg-type]
    return specs


def today() -> date:
    """The current UTC day, the one retirement dates are compared with."""
    return datetime.now(UTC).date()


class Redactor:
    """Removes a provider's secrets from any text that may reach a log or a client."""

    def __init__(self, provider: ProviderSettings) -> None:
        secrets = [provider.api_key.get_secret_value()]
        if provider.webhook_secret is not None:
            secrets.append(provider.webhook_secret.get_secret_value())
        self._secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text


def is_transient(error: Exception) -> bool:
    """Tell whether an upstream failure may pass by itself (an outage, a rate limit)."""
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def describe(error: Exception, redact: Redactor) -> str:
    """A short, secret-free description of an upstream failure."""
    if isinstance(error, openai.APIStatusError):
        return redact(f"{error.status_code} {_message(error)}")
    if isinstance(error, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(error, openai.APIConnectionError):
        return "the connection failed"
    return redact(f"{type(error).__name__}: {error}")


def _message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if isinstance(message, str):
            return message
    return str(error.message)


def as_api_error(error: Exception, provider: str, redact: Redactor) -> APIError:
    """Turn an upstream failure into our error envelope, with the provider's message and code."""
    if isinstance(error, openai.APIStatusError) and not is_transient(error):
        body = error.body if isinstance(error.body, dict) else {}
        code = body.get("code") if isinstance(body.get("code"), str) else None
        param = body.get("param") if isinstance(body.get("param"), str) else None
        message = redact(f"Provider {provider}: {_message(error)}")
        kinds: dict[int, type[APIError]] = {403: PermissionDenied, 404: NotFound}
        return kinds.get(error.status_code, InvalidRequest)(message, param=param, code=code)
    return ServiceUnavailable(
        f"Provider {provider} is unavailable ({describe(error, redact)}); retry later.",
        code="provider_unavailable",
    )
