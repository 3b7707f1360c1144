"""Wire shapes of fine-tuning jobs: requests, jobs, events, metrics, checkpoints, graders."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from service.jobs.models import Job, JobEvent
from service.jobs.states import Status
from service.pagination import ListPage
from service.wire import RequestModel, WireModel, omitted

# `enum` rather than pydantic's `const`: openapi-python-client cannot parse a `const` member of a
# union (every numeric hyperparameter failed with "must match const 'auto'"); OpenAI's own
# document writes it this way too.
Auto = Annotated[Literal["auto"], WithJsonSchema({"type": "string", "enum": ["auto"]})]
# Quotes and backslashes are refused in keys: they cannot be matched by the JSON-path filter
# of `GET /v1/fine_tuning/jobs?metadata[key]=` on every database.
MetadataKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r'^[^"\\]+$')]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- hyperparameters


class SupervisedHyperparameters(_Strict):
    """Hyperparameters of supervised training; `auto` lets the engine choose."""

    batch_size: Auto | Annotated[int, Field(strict=True, ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(strict=True, gt=0, le=100)] = "auto"
    n_epochs: Auto | Annotated[int, Field(strict=True, ge=1, le=50)] = "auto"


class DpoHyperparameters(SupervisedHyperparameters):
    """Hyperparameters of DPO; `beta` weighs the penalty for drifting from the reference."""

    beta: Auto | Annotated[float, Field(strict=True, gt=0, le=2)] = "auto"


class ReinforcementHyperparameters(SupervisedHyperparameters):
    """Hyperparameters of reinforcement fine-tuning."""

    reasoning_effort: Literal["default", "low", "medium", "high"] = "default"
    compute_multiplier: Auto | Annotated[float, Field(strict=True, gt=0.00001, le=10)] = "auto"
    eval_interval: Auto | Annotated[int, Field(strict=True, ge=1)] = "auto"
    eval_samples: Auto | Annotated[int, Field(strict=True, ge=1)] = "auto"


# ---------------------------------------------------------------- graders (reference §3.9)

Template = Annotated[str, Field(max_length=100_000)]
SimilarityMetric = Literal[
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
]


class StringCheckGrader(_Strict):
    """Compare a templated input with a templated reference."""

    type: Literal["string_check"]
    name: str = Field(max_length=256)
    input: Template
    reference: Template
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(_Strict):
    """Score the similarity of a templated input to a reference."""

    type: Literal["text_similarity"]
    name: str = Field(max_length=256)
    input: Template
    reference: Template
    evaluation_metric: SimilarityMetric


class PythonGrader(_Strict):
    """Run `grade(sample, item) -> float` from the given source."""

    type: Literal["python"]
    name: str = Field(max_length=256)
    source: str = Field(max_length=256_000)
    image_tag: str | None = Field(default=None, max_length=64)


class ScoreModelGrader(_Strict):
    """Ask a model for a numeric score."""

    type: Literal["score_model"]
    name: str = Field(max_length=256)
    model: str = Field(max_length=256)
    input: list[dict[str, Any]] = Field(min_length=1, max_length=64)
    range: list[float] | None = Field(default=None, min_length=2, max_length=2)
    sampling_params: dict[str, Any] | None = None


class LabelModelGrader(_Strict):
    """Ask a model for a label (only inside a multi grader)."""

    type: Literal["label_model"]
    name: str = Field(max_length=256)
    model: str = Field(max_length=256)
    input: list[dict[str, Any]] = Field(min_length=1, max_length=64)
    labels: list[Annotated[str, Field(max_length=256)]] = Field(min_length=1, max_length=64)
    passing_labels: list[Annotated[str, Field(max_length=256)]] = Field(min_length=1, max_length=64)


SubGrader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
    Field(discriminator="type"),
]


class MultiGrader(_Strict):
    """Combine sub-graders with a formula over their scores."""

    type: Literal["multi"]
    name: str = Field(max_length=256)
    graders: dict[str, SubGrader] | list[SubGrader] | SubGrader
    calculate_output: str = Field(max_length=4096)


Grader = Annotated[
    StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | MultiGrader,
    Field(discriminator="type"),
]


# ---------------------------------------------------------------- method and create request


class SupervisedMethod(_Strict):
    """Configuration of supervised fine-tuning."""

    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(_Strict):
    """Configuration of DPO."""

    hyperparameters: DpoHyperparameters | None = None


class ReinforcementMethod(_Strict):
    """Configuration of reinforcement fine-tuning: a grader is required."""

    grader: Grader
    hyperparameters: ReinforcementHyperparameters | None = None
    response_format: dict[str, Any] | None = None


class MethodRequest(_Strict):
    """`method`: the type and the configuration object of that type."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None
    reinforcement: ReinforcementMethod | None = None

    @model_validator(mode="after")
    def _one_configuration(self) -> MethodRequest:
        for other in ("supervised", "dpo", "reinforcement"):
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"method.{other} cannot be set when method.type is '{self.type}'")
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method.reinforcement.grader is required for reinforcement")
        return self


class WandbIntegration(_Strict):
    """Weights & Biases settings, as OpenAI accepts them."""

    project: str = Field(max_length=256)
    name: str | None = Field(default=None, max_length=256)
    entity: str | None = Field(default=None, max_length=256)
    tags: list[Annotated[str, Field(max_length=64)]] | None = Field(default=None, max_length=50)


class Integration(_Strict):
    """An integration entry."""

    type: Literal["wandb"]
    wandb: WandbIntegration


class JobCreate(RequestModel):
    """Body of `POST /v1/fine_tuning/jobs`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "gpt-4o-mini",
                    "training_file": "file-abc123",
                    "suffix": "support-fr",
                    "method": {
                        "type": "supervised",
                        "supervised": {"hyperparameters": {"n_epochs": 3}},
                    },
                }
            ]
        },
    )

    model: str = Field(min_length=1, max_length=256, description="Base or fine-tuned model.")
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    method: MethodRequest | None = Field(default=None, description="Defaults to supervised.")
    hyperparameters: SupervisedHyperparameters | None = Field(
        default=None,
        description="Deprecated: use method.supervised.",
        json_schema_extra={"deprecated": True},
    )
    suffix: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    seed: int | None = Field(default=None, strict=True, ge=0, le=2_147_483_647)
    metadata: dict[MetadataKey, Annotated[str, Field(max_length=512)]] | None = Field(
        default=None, max_length=16
    )
    integrations: list[Integration] | None = Field(default=None, max_length=5)


# ---------------------------------------------------------------- wire objects


class JobError(WireModel):
    """Why a job failed."""

    code: str
    message: str
    param: str | None = None


class SupervisedHyperparametersObject(WireModel):
    """A job's supervised hyperparameters: `auto` until the engine resolves them."""

    batch_size: Auto | int = "auto"
    learning_rate_multiplier: Auto | float = "auto"
    n_epochs: Auto | int = "auto"


class DpoHyperparametersObject(SupervisedHyperparametersObject):
    """A job's DPO hyperparameters."""

    beta: Auto | float = "auto"


class ReinforcementHyperparametersObject(SupervisedHyperparametersObject):
    """A job's reinforcement hyperparameters."""

    reasoning_effort: Literal["default", "low", "medium", "high"] = "default"
    compute_multiplier: Auto | float = "auto"
    eval_interval: Auto | int = "auto"
    eval_samples: Auto | int = "auto"
    num_generations: int | None = omitted(
        description="Extension: answers compared per prompt (GRPO's group), once the local "
        "engine has resolved it from `compute_multiplier`."
    )


class SupervisedMethodObject(WireModel):
    """A job's supervised configuration."""

    hyperparameters: SupervisedHyperparametersObject | None = omitted()


class DpoMethodObject(WireModel):
    """A job's DPO configuration."""

    hyperparameters: DpoHyperparametersObject | None = omitted()


class ReinforcementMethodObject(WireModel):
    """A job's reinforcement configuration: the grader as it was given."""

    grader: dict[str, Any]
    hyperparameters: ReinforcementHyperparametersObject | None = omitted()
    response_format: dict[str, Any] | None = omitted()


class MethodObject(WireModel):
    """A job's `method`: its type and that type's configuration (OpenAI's FineTuneMethod)."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethodObject | None = omitted()
    dpo: DpoMethodObject | None = omitted()
    reinforcement: ReinforcementMethodObject | None = omitted()


class WandbObject(WireModel):
    """A job's Weights & Biases settings."""

    project: str
    name: str | None = None
    entity: str | None = None
    tags: list[str] | None = omitted()
    run_id: str | None = omitted(description="The W&B run, once the job runs.")


class IntegrationObject(WireModel):
    """One of a job's integrations."""

    type: Literal["wandb"]
    wandb: WandbObject


def _without_nulls(value: Any) -> Any:
    # Stored configurations (and jobs imported from a provider) may hold null for "not set";
    # OpenAI's schemas allow no null inside `method` or an integration.
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


class Hyperparameters(WireModel):
    """The job's top-level hyperparameters (resolved once training starts)."""

    batch_size: Auto | int | None = "auto"
    learning_rate_multiplier: Auto | float | None = "auto"
    n_epochs: Auto | int | None = "auto"


class JobObject(WireModel):
    """OpenAI's `fine_tuning.job` object."""

    id: str = Field(examples=["ftjob-UiaiLwGdGBfdLQDBAoQheufN"])
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: Status = Field(examples=["queued"])
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[IntegrationObject] | None = None
    metadata: dict[str, str] | None = None
    method: MethodObject
    user_provided_suffix: str | None = None
    # Extensions: what the job was expected to cost, and what it cost.
    estimate: dict[str, Any] | None = Field(
        default=None,
        description="At creation: billed_tokens, cost_usd {low, high} where the provider bills, "
        "compute_seconds {low, high} for local training (2-core reference machine).",
    )
    cost_usd: float | None = Field(
        default=None, description="trained_tokens at the base model's price, once finished."
    )

    @classmethod
    def from_row(cls, job: Job) -> JobObject:
        """Build the wire object from a table row."""
        kind = job.method["type"]
        params = (job.method.get(kind) or {}).get("hyperparameters") or {}
        return cls(
            id=job.id,
            created_at=job.created_at,
            error=JobError.model_validate(job.error) if job.error else None,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=job.finished_at,
            hyperparameters=Hyperparameters(
                batch_size=params.get("batch_size", "auto"),
                learning_rate_multiplier=params.get("learning_rate_multiplier", "auto"),
                n_epochs=params.get("n_epochs", "auto"),
            ),
            model=job.model,
            organization_id=job.organization_id,
            result_files=job.result_files,
            seed=job.seed,
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            validation_file=job.validation_file,
            estimated_finish=job.estimated_finish,
            integrations=_without_nulls(job.integrations),
            metadata=job.metadata_,
            method=_without_nulls(job.method),
            user_provided_suffix=job.suffix,
            estimate=job.estimate,
            cost_usd=job.cost_usd,
        )


class EventObject(WireModel):
    """OpenAI's `fine_tuning.job.event` object."""

    id: str = Field(examples=["ftevent-TDcK6kP2mRRiof75k5YpPXzb"])
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] = Field(default_factory=dict, description="`{}` when there is none.")

    @classmethod
    def from_row(cls, event: JobEvent) -> EventObject:
        """Build the wire object from a table row."""
        return cls(
            id=event.id,
            created_at=event.created_at,
            level=event.level,
            message=event.message,
            type=event.type,
            data=event.data or {},
        )


class JobList(ListPage[JobObject]):
    """A page of fine-tuning jobs, newest first."""


class EventList(ListPage[EventObject]):
    """A page of a job's events, newest first."""


# ---------------------------------------------------------------- metrics history (extension)


def _finite_number(value: Any) -> bool:
    # bool is an int subclass, but a flag is not a metric; infinities cannot be sent as JSON.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class MetricsPoint(BaseModel):
    """One training step of a job's metrics series."""

    step: int = Field(description="The training step the metrics were measured at.", examples=[1])
    created_at: int = Field(description="When the step's metrics were logged, in Unix seconds.")
    metrics: dict[str, int | float] = Field(
        description="Every numeric field the engine logged for the step except `step` "
        "(train_loss, train_mean_token_accuracy, valid_loss, total_steps, ...).",
        examples=[{"train_loss": 1.23, "valid_loss": 1.5, "total_steps": 4}],
    )

    @classmethod
    def from_row(cls, event: JobEvent) -> MetricsPoint:
        """Build a point from a `metrics` event, keeping only its finite numeric values."""
        data = event.data or {}
        return cls(
            step=int(data["step"]),
            created_at=event.created_at,
            metrics={
                key: value for key, value in data.items() if key != "step" and _finite_number(value)
            },
        )


class MetricsHistory(BaseModel):
    """Extension: a job's whole step-metrics series, for charts."""

    object: Literal["fine_tuning.job.metrics"] = Field(
        default="fine_tuning.job.metrics", description="Always `fine_tuning.job.metrics`."
    )
    job_id: str = Field(description="The job's id.", examples=["ftjob-abc123"])
    total_steps: int | None = Field(
        default=None,
        description="The run's planned number of steps, from its latest metrics; null if "
        "the engine has not said.",
    )
    data: list[MetricsPoint] = Field(
        description="The steps after `after_step`, by step ascending; empty before the first."
    )

    @classmethod
    def of(
        cls, job_id: str, events: Sequence[JobEvent], *, total_steps: int | None
    ) -> MetricsHistory:
        """Build the series from `metrics` events in step order."""
        return cls(
            job_id=job_id,
            total_steps=total_steps,
            data=[MetricsPoint.from_row(e) for e in events],
        )


class JobRerun(RequestModel):
    """Body of `POST /v1/fine_tuning/jobs/{id}/rerun` (extension)."""

    model: str = Field(
        min_length=1, max_length=256, description="The base model to train the same data on."
    )


# ---------------------------------------------------------------- alpha graders (§2.5)


class GraderValidateRequest(RequestModel):
    """A grader to check."""

    grader: Grader


class GraderRunRequest(RequestModel):
    """A grader, a model's answer, and the dataset item it answered."""

    grader: Grader
    model_sample: str = Field(max_length=1_000_000, description="Fills sample.output_text.")
    item: Any = Field(default=None, description="Fills the item namespace of the templates.")


class GraderValidateResponse(BaseModel):
    """The grader, echoed back when it is valid."""

    grader: dict[str, Any]


class GraderErrors(BaseModel):
    """What went wrong while grading (all false when nothing did)."""

    formula_parse_error: bool = False
    sample_parse_error: bool = False
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False
    invalid_variable_error: bool = False
    other_error: bool = False
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    model_grader_server_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_server_error_details: str | None = None


class GraderRunMetadata(BaseModel):
    """How a grade was reached."""

    name: str
    type: str
    execution_time: float
    scores: dict[str, float]
    token_usage: int | None = None
    sampled_model_name: str | None = None
    errors: GraderErrors


class GraderRunResponse(BaseModel):
    """A grade in [0, 1], with sub-grades and metadata."""

    reward: float
    sub_rewards: dict[str, float]
    model_grader_token_usage_per_model: dict[str, dict[str, Any]]
    metadata: GraderRunMetadata
