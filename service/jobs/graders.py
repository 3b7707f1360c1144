"""`/v1/fine_tuning/alpha/graders`: check a grader, or grade one answer with it, exactly as the
local engine grades answers during reinforcement fine-tuning (OpenAI's alpha grader routes).

A `score_model` grader is answered by a model the project may use, through chat completions.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.from_thread
from fastapi import APIRouter

from service.db import Database
from service.deps import CallerDep, DatabaseDep, EnginesDep
from service.engines.base import Engines
from service.engines.local import graders
from service.errors import APIError, InvalidRequest
from service.inference import service as inference
from service.inference.schemas import ChatCompletionRequest
from service.jobs.schemas import (
    GraderErrors,
    GraderRunMetadata,
    GraderRunRequest,
    GraderRunResponse,
    GraderValidateRequest,
    GraderValidateResponse,
)

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["Fine-tuning"])


def _checked(grader: Any) -> dict[str, Any]:
    """The grader as the client gave it, refused with a 400 when it cannot run here."""
    wire: dict[str, Any] = grader.model_dump(mode="json", exclude_unset=True)
    try:
        graders.check_supported(wire)
    except InvalidRequest as error:
        param = (error.param or "").replace("method.reinforcement.grader", "grader")
        raise InvalidRequest(error.message, param=param, code=error.code) from None
    return wire


@router.post(
    "/validate",
    operation_id="validateGrader",
    summary="Check a grader",
    response_model=GraderValidateResponse,
)
async def validate_grader(body: GraderValidateRequest, caller: CallerDep) -> GraderValidateResponse:
    """Answer with the grader when it is valid and this service can run it; a 400 says why
    not (a python grader, a metric that needs a download), as job creation would."""
    return GraderValidateResponse(grader=_checked(body.grader))


class _Scorer:
    """Answers score_model graders from a worker thread through the project's chat completions,
    counting tokens per model."""

    def __init__(self, database: Database, engines: Engines, project_id: str) -> None:
        self.database, self.engines, self.project_id = database, engines, project_id
        self.usage: dict[str, dict[str, int]] = {}

    def __call__(self, model: str, messages: list[dict[str, str]]) -> str:
        request = ChatCompletionRequest.model_validate(
            {"model": model, "messages": messages, "temperature": 0, "max_tokens": 32}
        )
        completion = anyio.from_thread.run(
            functools.partial(
                inference.complete,
                database=self.database,
                engines=self.engines,
                project_id=self.project_id,
                request=request,
            )
        )
        totals = self.usage.setdefault(model, {})
        for name, value in (completion.get("usage") or {}).items():
            if isinstance(value, int):
                totals[name] = totals.get(name, 0) + value
        return str(completion["choices"][0]["message"].get("content") or "")


def _grade(
    grader: Mapping[str, Any], sample: str, item: Mapping[str, Any], scorer: _Scorer
) -> tuple[float, dict[str, float], GraderErrors]:
    """Return the reward, the sub-graders' scores and what went wrong, as OpenAI reports them."""
    errors = GraderErrors()
    scores: dict[str, float] = {}
    try:
        if grader["type"] != "multi":
            return graders.grade(grader, sample, item, scorer), scores, errors
        for name, sub in graders.sub_graders(grader).items():
            scores[name] = graders.grade(sub, sample, item, scorer)
    except APIError as error:  # the scoring model could not answer
        errors.model_grader_server_error = True
        errors.model_grader_server_error_details = error.message
        return 0.0, scores, errors
    except ValueError:
        errors.other_error = True
        return 0.0, scores, errors
    try:
        reward = graders.evaluate(grader["calculate_output"], scores)
    except (SyntaxError, ValueError):
        errors.formula_parse_error = True
        return 0.0, scores, errors
    return max(0.0, min(1.0, reward)), scores, errors


@router.post(
    "/run",
    operation_id="runGrader",
    summary="Grade one answer",
    response_model=GraderRunResponse,
)
async def run_grader(
    body: GraderRunRequest, caller: CallerDep, database: DatabaseDep, engines: EnginesDep
) -> GraderRunResponse:
    """Grade `model_sample` (sample.output_text, and sample.output_json when it is JSON) for
    `item` (the item namespace): the reward in [0, 1], each sub-grader's score, tokens used by
    score_model graders, and the errors met."""
    grader = _checked(body.grader)
    item = body.item if isinstance(body.item, Mapping) else {}
    scorer = _Scorer(database, engines, caller.project_id)
    started = time.perf_counter()
    reward, scores, errors = await anyio.to_thread.run_sync(
        lambda: _grade(grader, body.model_sample, item, scorer)
    )
    return GraderRunResponse(
        reward=reward,
        sub_rewards=scores,
        model_grader_token_usage_per_model=scorer.usage,
        metadata=GraderRunMetadata(
            name=grader["name"],
            type=grader["type"],
            execution_time=round(time.perf_counter() - started, 6),
            scores=scores,
            errors=errors,
        ),
    )
