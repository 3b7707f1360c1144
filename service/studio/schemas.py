"""Wire models of the email studio (`/v1/email/...`): our shapes, in OpenAI's conventions."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from fastapi import Path as PathParam
from pydantic import BaseModel, Field, model_validator

from service.models.aliases import PREFIX as ALIAS_PREFIX
from service.models.models import AliasChange, ModelAlias
from service.pagination import ListPage
from service.studio.datasets import EmailRecord, PreferencePair
from service.studio.models import EmailDataset, Evaluation, Retraining, StudioSettings
from service.studio.prompts import SYSTEM_PROMPTS, USER_TEMPLATES
from service.wire import RequestModel

EntityType = Literal["PERSON", "EMAIL", "PHONE", "IBAN", "BIC", "ADDRESS", "ID"]
Language = Literal["fr", "en"]

MAX_TEXTS = 1_000
MAX_TEXT_CHARS = 100_000
MAX_EMAILS = 20_000


class RedactRequest(RequestModel):
    """Texts to redact together: one set of placeholders across all of them."""

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)
    language: Language | None = Field(
        default=None, description="The texts' language; detected per text when absent."
    )

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        if any(len(text) > MAX_TEXT_CHARS for text in self.texts):
            raise ValueError(f"each text may hold at most {MAX_TEXT_CHARS} characters")
        return self


class RedactedEntity(BaseModel):
    """A replaced span: offsets into the input text, end exclusive."""

    type: EntityType
    start: int
    end: int
    placeholder: str


class RedactedText(BaseModel):
    """One text with its personal data replaced."""

    object: Literal["email.redaction"] = "email.redaction"
    text: str
    entities: list[RedactedEntity]


class RedactionList(BaseModel):
    """The redacted texts, in the order given."""

    object: Literal["list"] = "list"
    data: list[RedactedText]


class DatasetCreate(RequestModel):
    """Where the history comes from and what the dataset keeps."""

    emails: list[EmailRecord] | None = Field(
        default=None,
        max_length=MAX_EMAILS,
        description="History records (the shape of history.jsonl); or give file_id.",
    )
    file_id: str | None = Field(
        default=None,
        max_length=100,
        description="A file of the project holding history records as JSON Lines.",
    )
    min_rating: int = Field(default=4, ge=0, le=5, description="Keep mails rated at least this.")
    redact: bool | None = Field(
        default=None, description="Replace personal data; the project's setting when absent."
    )
    validation_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    department: str | None = Field(default=None, max_length=100)
    user_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.emails is None) == (self.file_id is None):
            raise ValueError("give exactly one of 'emails' and 'file_id'")
        return self


class PreferencesCreate(RequestModel):
    """Preference pairs (the shape of preferences.jsonl) for a DPO dataset."""

    pairs: list[PreferencePair] | None = Field(
        default=None,
        max_length=MAX_EMAILS,
        description="Pairs {prompt, preferred_completion, non_preferred_completion, department?, "
        "language?}; or give file_id.",
    )
    file_id: str | None = Field(
        default=None,
        max_length=100,
        description="A file of the project holding pairs as JSON Lines.",
    )
    redact: bool | None = Field(
        default=None, description="Replace personal data; the project's setting when absent."
    )
    validation_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    department: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.pairs is None) == (self.file_id is None):
            raise ValueError("give exactly one of 'pairs' and 'file_id'")
        return self


class DatasetObject(BaseModel):
    """A dataset built from e-mail history: training and validation files and the report."""

    id: str
    object: Literal["email.dataset"] = "email.dataset"
    created_at: int
    method: str = Field(description="supervised (chat examples) or dpo (preference pairs).")
    training_file: str
    validation_file: str | None
    department: str | None
    user_id: str | None
    redacted: bool
    options: dict[str, Any]
    report: dict[str, Any]

    @classmethod
    def from_row(cls, row: EmailDataset) -> DatasetObject:
        """Build the wire object from its row."""
        return cls(
            id=row.id,
            created_at=row.created_at,
            method=row.method,
            training_file=row.training_file,
            validation_file=row.validation_file,
            department=row.department,
            user_id=row.user_id,
            redacted=row.redacted,
            options=row.options,
            report=row.report,
        )


class DatasetList(ListPage[DatasetObject]):
    """A page of datasets, newest first."""


class SettingsUpdate(RequestModel):
    """The studio settings to change; fields left out keep their value."""

    system_prompts: dict[str, dict[Language, str]] | None = Field(
        default=None,
        description="Per department, per language: the system prompt of its examples.",
        examples=[{"support": {"fr": "Tu es l'agent de support de Nuagéo."}}],
    )
    user_templates: dict[Language, str] | None = Field(
        default=None,
        description="Per language: the user prompt, with {category} and {context}.",
    )
    redact: bool | None = Field(
        default=None,
        description="Off: datasets keep personal data and may only train local models.",
    )
    feedback_thresholds: dict[str, Annotated[int, Field(ge=1, le=100_000)]] | None = Field(
        default=None,
        description="Feedbacks that start a retraining, per scope (the seed's 50 otherwise).",
        examples=[{"department:support": 20}],
    )
    budget_usd: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="USD the project's training jobs may cost in all; null removes the limit. "
        "A job whose high estimate exceeds what is left is refused.",
    )

    @model_validator(mode="after")
    def _bounded(self) -> Self:
        for prompts in (self.system_prompts or {}).values():
            if any(len(text) > 4_000 for text in prompts.values()):
                raise ValueError("a system prompt may hold at most 4000 characters")
        if len(self.system_prompts or {}) > 100:
            raise ValueError("at most 100 departments")
        for template in (self.user_templates or {}).values():
            if len(template) > 4_000:
                raise ValueError("a template may hold at most 4000 characters")
            try:
                template.format(category="", context="")
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(
                    "a template may only use the fields {category} and {context}"
                ) from error
        return self


class SettingsObject(BaseModel):
    """A project's studio settings, with the defaults they override."""

    object: Literal["email.settings"] = "email.settings"
    system_prompts: dict[str, dict[str, str]]
    user_templates: dict[str, str]
    redact: bool
    feedback_thresholds: dict[str, int]
    budget_usd: float | None
    spent_usd: float = Field(
        description="Finished jobs' cost plus the high estimate of unfinished ones."
    )
    default_system_prompts: dict[str, dict[str, str]] = SYSTEM_PROMPTS
    default_user_templates: dict[str, str] = USER_TEMPLATES

    @classmethod
    def from_row(
        cls, row: StudioSettings, *, budget_usd: float | None, spent_usd: float
    ) -> SettingsObject:
        """Build the wire object from its row and the project's budget."""
        return cls(
            system_prompts=row.system_prompts,
            user_templates=row.user_templates,
            redact=row.redact,
            feedback_thresholds=row.feedback_thresholds,
            budget_usd=budget_usd,
            spent_usd=round(spent_usd, 6),
        )


Scope = Annotated[
    str,
    PathParam(
        description="department:<name> or user:<id>.",
        examples=["department:sales", "user:usr_1003"],
        max_length=120,
    ),
]


class AliasObject(BaseModel):
    """A scope's alias and the model it names now."""

    object: Literal["email.alias"] = "email.alias"
    scope: str
    alias: str = Field(description="Pass it as `model` to chat completions or jobs.")
    model: str
    updated_at: int

    @classmethod
    def from_row(cls, row: ModelAlias) -> AliasObject:
        """Build the wire object from its row."""
        return cls(
            scope=row.alias.removeprefix(ALIAS_PREFIX),
            alias=row.alias,
            model=row.model,
            updated_at=row.updated_at,
        )


class AliasList(BaseModel):
    """The project's aliases."""

    object: Literal["list"] = "list"
    data: list[AliasObject]


class PromoteRequest(RequestModel):
    """The model a scope's alias should name from now on."""

    model: str = Field(min_length=1, max_length=300)
    reason: str | None = Field(default=None, max_length=1000)
    evaluation_id: str | None = Field(default=None, max_length=40)


class RollbackRequest(RequestModel):
    """Why the alias goes back to its previous model."""

    reason: str | None = Field(default=None, max_length=1000)


class AliasChangeObject(BaseModel):
    """One promotion or rollback."""

    id: str
    object: Literal["email.alias_change"] = "email.alias_change"
    action: Literal["promote", "rollback"]
    model: str
    previous_model: str | None
    reason: str | None
    evaluation_id: str | None
    created_at: int

    @classmethod
    def from_row(cls, row: AliasChange) -> AliasChangeObject:
        """Build the wire object from its row."""
        return cls(
            id=row.id,
            action=row.action,
            model=row.model,
            previous_model=row.previous_model,
            reason=row.reason,
            evaluation_id=row.evaluation_id,
            created_at=row.created_at,
        )


class AliasChangeList(BaseModel):
    """An alias's history, newest first."""

    object: Literal["list"] = "list"
    data: list[AliasChangeObject]


class PromptItem(BaseModel):
    """A prompt with, optionally, a reference mail and its language."""

    model_config = {"extra": "forbid"}

    prompt: str = Field(min_length=1, max_length=20_000)
    reference: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    language: Language | None = None
    system: str | None = Field(default=None, max_length=4_000)


class CompareTo(BaseModel):
    """What the model is compared with: another model, or a file of recorded answers."""

    model_config = {"extra": "forbid"}

    model: str | None = Field(default=None, max_length=300)
    file_id: str | None = Field(
        default=None,
        max_length=100,
        description="A chat-format file whose rows end with the answer to compare: such as the "
        "answers the provider exit recorded from a model before it shut down.",
    )

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.model is None) == (self.file_id is None):
            raise ValueError("compare_to takes exactly one of 'model' and 'file_id'")
        return self


class EvaluationCreate(RequestModel):
    """A model, the prompts it answers, and what to compare it with."""

    model: str = Field(min_length=1, max_length=300, description="A model or a scope's alias.")
    prompts: list[str | PromptItem] | None = Field(default=None, min_length=1, max_length=200)
    file_id: str | None = Field(
        default=None,
        max_length=100,
        description="A chat-format file (a dataset's validation file): each row's last "
        "assistant message is the reference, the messages before it the prompt.",
    )
    limit: int = Field(default=50, ge=1, le=200, description="Rows read from file_id.")
    compare_to: CompareTo | None = None
    judge: str | None = Field(
        default=None,
        max_length=300,
        description="A model that compares the two answers to each prompt, twice (positions "
        "swapped); needs compare_to.",
    )
    max_tokens: int = Field(default=400, ge=1, le=4096)
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=0.9, gt=0, le=1)
    seed: int | None = Field(default=0, description="Sampling seed, for answers you can repeat.")
    concurrency: int = Field(default=4, ge=1, le=16)

    @model_validator(mode="after")
    def _source(self) -> Self:
        if (self.prompts is None) == (self.file_id is None):
            raise ValueError("give exactly one of 'prompts' and 'file_id'")
        if self.judge is not None and self.compare_to is None:
            raise ValueError("a judge needs compare_to")
        return self


class EvaluationObject(BaseModel):
    """An evaluation: per-prompt answers and scores, and the summary with its verdict."""

    id: str
    object: Literal["email.evaluation"] = "email.evaluation"
    created_at: int
    finished_at: int | None
    status: Literal["running", "completed", "failed"]
    model: str
    compare_to: dict[str, Any] | None
    judge: str | None
    error: str | None
    summary: dict[str, Any] | None
    results: list[dict[str, Any]] | None

    @classmethod
    def from_row(cls, row: Evaluation, *, with_results: bool = True) -> EvaluationObject:
        """Build the wire object from its row."""
        return cls(
            id=row.id,
            created_at=row.created_at,
            finished_at=row.finished_at,
            status=row.status,
            model=row.model,
            compare_to=row.request.get("compare_to"),
            judge=row.request.get("judge"),
            error=row.error,
            summary=row.summary,
            results=row.results if with_results else None,
        )


class EvaluationList(ListPage[EvaluationObject]):
    """A page of evaluations, newest first (without their per-prompt results)."""


class ScopeModelsCreate(RequestModel):
    """History to train department or personal models on, and how."""

    emails: list[EmailRecord] | None = Field(default=None, max_length=MAX_EMAILS)
    file_id: str | None = Field(default=None, max_length=100)
    model: str = Field(min_length=1, max_length=300, description="The base model to fine-tune.")
    departments: list[str] | None = Field(
        default=None, max_length=50, description="Departments to train; all found when absent."
    )
    user_id: str | None = Field(default=None, max_length=200)
    min_rating: int = Field(default=4, ge=0, le=5)
    redact: bool | None = None
    validation_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    suffix: str | None = Field(default=None, max_length=64)
    hyperparameters: dict[str, int | float | str] | None = Field(
        default=None, description="n_epochs, batch_size, learning_rate_multiplier."
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.emails is None) == (self.file_id is None):
            raise ValueError("give exactly one of 'emails' and 'file_id'")
        return self


class ScopeTraining(BaseModel):
    """One scope's dataset and job, or why it was skipped."""

    object: Literal["email.scope_training"] = "email.scope_training"
    scope: str
    alias: str
    dataset_id: str | None
    job_id: str | None
    job_status: str | None
    run_id: str | None
    skipped: str | None


class ScopeTrainingList(BaseModel):
    """Every scope's training."""

    object: Literal["list"] = "list"
    data: list[ScopeTraining]


class FeedbackCreate(RequestModel):
    """A rating of a mail from the history or of a completion, with the rewrite, if any."""

    email_id: str | None = Field(default=None, max_length=200)
    completion_id: str | None = Field(default=None, max_length=60)
    rating: int = Field(ge=1, le=5)
    improvements: str = Field(
        default="", max_length=MAX_TEXT_CHARS, description="The full mail as it should have been."
    )
    scope: str | None = Field(
        default=None,
        max_length=120,
        description="The scope it counts toward; by default the mail's department (or the "
        "completion's scope).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.email_id is None) == (self.completion_id is None):
            raise ValueError("give exactly one of 'email_id' and 'completion_id'")
        return self


class RunObject(BaseModel):
    """A scope's training run: initial model or feedback retraining."""

    id: str
    object: Literal["email.training_run"] = "email.training_run"
    scope: str
    kind: str
    generation: int | None
    status: str
    base_model: str
    job_id: str | None
    dataset_id: str | None
    evaluation_id: str | None
    n_feedback: int
    n_pairs: int
    detail: str | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: Retraining) -> RunObject:
        """Build the wire object from its row."""
        return cls.model_validate(row, from_attributes=True)


class FeedbackObject(BaseModel):
    """A recorded feedback, and the retraining it started, if it did."""

    id: str
    object: Literal["email.feedback"] = "email.feedback"
    scope: str
    email_id: str | None
    completion_id: str | None
    rating: int
    created_at: int
    retraining: RunObject | None = None


class FeedbackStatus(BaseModel):
    """Where a scope stands: feedback waiting, threshold, and its runs (newest first)."""

    object: Literal["email.feedback_status"] = "email.feedback_status"
    scope: str
    threshold: int
    min_rewrites: int
    pending_feedback: int
    pending_rewrites: int
    current_model: str | None
    runs: list[RunObject]


class ComposeRequest(RequestModel):
    """An e-mail to write with a studio model, asked as its training mails were."""

    model: str = Field(min_length=1, max_length=300, description="A model or a scope's alias.")
    context: str = Field(
        min_length=1,
        max_length=4_000,
        description="What the mail is for, as the user types it (the history's `context`).",
        examples=["Remercier M. Okafor pour sa commande de douze chaises."],
    )
    category: str = Field(
        min_length=1, max_length=200, description="The kind of mail (the history's `category`)."
    )
    department: str = Field(default="support", min_length=1, max_length=100)
    language: Language | None = Field(
        default=None, description="The mail's language; detected from the context when absent."
    )
    sender: str | None = Field(
        default=None,
        max_length=200,
        description="The name to sign with, in place of the name placeholder under the closing.",
    )
    redact: bool = Field(
        default=True,
        description="Replace the context's personal data by placeholders before the model sees "
        "it, and put the values back in its answer (as the model was trained).",
    )
    max_tokens: int = Field(default=400, ge=1, le=4096)
    temperature: float = Field(default=0.3, ge=0, le=2)
    top_p: float = Field(default=0.9, gt=0, le=1)
    seed: int | None = None


class ComposeObject(BaseModel):
    """A written e-mail: subject and body with the real values back, and its checks."""

    id: str = Field(
        description="The completion's id (feedback may name it when `model` is an alias)."
    )
    object: Literal["email.composition"] = "email.composition"
    created: int
    model: str
    language: Language
    subject: str | None
    body: str
    text: str = Field(description="The whole answer, values restored.")
    messages: list[dict[str, str]] = Field(description="What the model was sent (redacted).")
    restored: list[str] = Field(description="The placeholders whose values were put back.")
    checks: dict[str, Any]
    usage: dict[str, Any] | None = None
