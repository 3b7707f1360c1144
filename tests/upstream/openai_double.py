"""An OpenAI-wire fine-tuning server for tests: real HTTP on loopback, scriptable, faulty on demand.

It stands in for OpenAI's own service, which cannot run here: files, fine-tuning jobs that move
one tick at a time (validating, queued, running steps with metrics and checkpoints, succeeded or
failed), pause, resume, cancel, events newest first with `after` cursors, checkpoints, chat
completions (plain and streamed), models, and Standard Webhooks deliveries on final statuses.

Faults, drawn per request with a seeded generator: 429 with `Retry-After`, 500, a timeout (the
request is carried out, then the answer comes too late) and a dropped connection (carried out,
then the connection closes mid-answer); a repeated event and shuffled pages in event lists.
Every request is counted in `calls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.processes import free_port

BASES = ("gpt-4o-mini-2024-07-18", "gpt-4.1-mini-2025-04-14")
CHECKPOINTS_KEPT = 3
# What "auto" hyperparameters resolve to at the double.
RESOLVED = {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 1.0}


def step_metrics(step: int, total: int) -> dict[str, float]:
    """What the double reports for a step."""
    return {
        "train_loss": round(2.0 / step, 4),
        "train_mean_token_accuracy": round(0.5 + step / (4 * total), 4),
    }


def _id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


def _error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = {401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class Faults:
    """What goes wrong, and how often (a share of requests, drawn with `seed`)."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ("429", "500", "timeout", "drop")
    timeout_seconds: float = 1.5  # longer than the client's timeout in the tests
    duplicate_events: bool = False
    shuffle_events: bool = False
    seed: int = 0


@dataclass
class DoubleJob:
    """A job and its life at the double."""

    body: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    step: int = 0


class OpenAIDouble:
    """The server; `async with OpenAIDouble() as double:` serves it on a free port."""

    def __init__(
        self,
        *,
        api_key: str = "sk-double-key",
        steps: int = 3,
        checkpoint_every: int = 1,
        faults: Faults | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        organization: str = "double-org",
    ) -> None:
        self.api_key = api_key
        self.steps = steps
        self.checkpoint_every = checkpoint_every
        self.faults = faults or Faults()
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.organization = organization
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, DoubleJob] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.deleted_models: list[str] = []
        self.calls: Counter[str] = Counter()
        self.webhooks_sent: list[dict[str, Any]] = []
        # When each job became final here (time.monotonic()), for latency measurements.
        self.finished: dict[str, float] = {}
        self._random = random.Random(self.faults.seed)
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = free_port()
        self.app = Starlette(routes=self._routes())

    @property
    def url(self) -> str:
        """The base URL an SDK client takes (ends with /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ serving

    async def __aenter__(self) -> OpenAIDouble:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop_ticking()
        assert self._server is not None and self._serving is not None
        self._server.should_exit = True
        self._server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._serving, 10)

    def tick_every(self, seconds: float) -> None:
        """Advance every live job by one tick every `seconds`, in the background."""

        async def ticking() -> None:
            while True:
                await asyncio.sleep(seconds)
                await self.tick()

        self._ticker = asyncio.create_task(ticking())

    def stop_ticking(self) -> None:
        """Stop advancing jobs by themselves."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    # ------------------------------------------------------------ the jobs' lives

    def _event(
        self,
        job: DoubleJob,
        message: str,
        *,
        level: str = "info",
        kind: str = "message",
        data: dict[str, Any] | None = None,
    ) -> None:
        created = max(int(time.time()), job.events[-1]["created_at"] if job.events else 0)
        job.events.append(
            {
                "id": _id("ftevent-"),
                "object": "fine_tuning.job.event",
                "created_at": created,
                "level": level,
                "message": message,
                "type": kind,
                "data": data or {},
            }
        )

    async def tick(self, job_id: str | None = None) -> None:
        """Move one job (or every live one) a step further."""
        for job in [self.jobs[job_id]] if job_id else list(self.jobs.values()):
            await self._advance(job)

    async def run_to_end(self, job_id: str) -> dict[str, Any]:
        """Tick the job until it is final; return it."""
        job = self.jobs[job_id]
        while job.body["status"] not in ("succeeded", "failed", "cancelled"):
            await self._advance(job)
        return job.body

    async def _advance(self, job: DoubleJob) -> None:
        body = job.body
        status = body["status"]
        if status == "validating_files":
            body["status"] = "queued"
            self._event(job, "Files validated, moving job to queued state")
        elif status == "queued":
            body["status"] = "running"
            hyper = body["method"][body["method"]["type"]]["hyperparameters"]
            hyper.update(RESOLVED)
            body["estimated_finish"] = int(time.time()) + 60
            self._event(job, "Fine-tuning job started")
        elif status == "running":
            job.step += 1
            metrics = {
                "step": job.step,
                "total_steps": self.steps,
                **step_metrics(job.step, self.steps),
            }
            self._event(
                job,
                f"Step {job.step}/{self.steps}: training loss={metrics['train_loss']:.2f}",
                kind="metrics",
                data=metrics,
            )
            if (body.get("metadata") or {}).get("double_outcome") == "failed":
                await self._finish(
                    job,
                    "failed",
                    error={
                        "code": "invalid_training_file",
                        "param": "training_file",
                        "message": "The training file has examples the double refuses.",
                    },
                )
                return
            if job.step % self.checkpoint_every == 0:
                # Each checkpoint has an id segment of its own, as OpenAI's do.
                name = f"{self._model_name(body, _id('')[:8])}:ckpt-step-{job.step}"
                job.checkpoints.append(
                    {
                        "id": _id("ftckpt_"),
                        "object": "fine_tuning.job.checkpoint",
                        "created_at": int(time.time()),
                        "fine_tuning_job_id": body["id"],
                        "fine_tuned_model_checkpoint": name,
                        "step_number": job.step,
                        "metrics": {k: v for k, v in metrics.items() if k != "total_steps"},
                    }
                )
                self.models[name] = {
                    "id": name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": self.organization,
                }
                del job.checkpoints[:-CHECKPOINTS_KEPT]  # as OpenAI, the last three are kept
                self._event(job, f"Checkpoint created at step {job.step} with Snapshot ID: {name}")
            if job.step >= self.steps:
                model = self._model_name(body)
                self.models[model] = {
                    "id": model,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": self.organization,
                }
                csv = "step,train_loss\n" + "".join(
                    f"{e['data']['step']},{e['data']['train_loss']}\n"
                    for e in job.events
                    if e["type"] == "metrics"
                )
                results = self._store_file("step_metrics.csv", "fine-tune-results", csv.encode())
                body.update(
                    fine_tuned_model=model,
                    trained_tokens=1000 * self.steps,
                    result_files=[results["id"]],
                )
                self._event(job, f"New fine-tuned model created: {model}")
                await self._finish(job, "succeeded")

    def _model_name(self, body: dict[str, Any], id8: str | None = None) -> str:
        base = body["model"].split(":")[1] if body["model"].startswith("ft:") else body["model"]
        suffix = body.get("user_provided_suffix") or ""
        return f"ft:{base}:{self.organization}:{suffix}:{id8 or body['id'][-8:]}"

    async def _finish(
        self, job: DoubleJob, status: str, *, error: dict[str, Any] | None = None
    ) -> None:
        job.body.update(status=status, finished_at=int(time.time()), estimated_finish=None)
        self.finished[job.body["id"]] = time.monotonic()
        if status == "succeeded":
            self._event(job, "The job has successfully completed")
        elif status == "failed":
            job.body["error"] = error
            self._event(job, f"Fine-tuning job failed: {error and error['message']}", level="error")
        else:
            self._event(job, "Fine-tuning job cancelled")
        await self.send_webhook(job.body["id"], f"fine_tuning.job.{status}")

    def signed_delivery(
        self,
        job_id: str,
        event_type: str,
        *,
        webhook_id: str | None = None,
        timestamp: datetime | None = None,
        secret: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A webhook about the job, signed as Standard Webhooks say: (body, headers)."""
        payload = json.dumps(
            {
                "id": _id("evt_"),
                "object": "event",
                "created_at": int(time.time()),
                "type": event_type,
                "data": {"id": job_id},
            }
        )
        webhook_id = webhook_id or _id("wh_")
        timestamp = timestamp or datetime.now(UTC)
        signer = Webhook(secret or self.webhook_secret or "")
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signer.sign(webhook_id, timestamp, payload),
            "content-type": "application/json",
        }
        return payload, headers

    async def send_webhook(self, job_id: str, event_type: str) -> int:
        """Deliver a signed webhook about the job; return the receiver's status (0: none)."""
        if self.webhook_url is None or self.webhook_secret is None:
            return 0
        payload, headers = self.signed_delivery(job_id, event_type)
        sent = {"type": event_type, "job": job_id, "headers": headers, "status": 0}
        self.webhooks_sent.append(sent)
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                response = await http.post(self.webhook_url, content=payload, headers=headers)
        except httpx.HTTPError:
            return 0
        sent["status"] = response.status_code
        return response.status_code

    # ------------------------------------------------------------ HTTP

    def _routes(self) -> list[Route]:
        return [
            Route("/v1/files", self._files, methods=["GET", "POST"]),
            Route("/v1/files/{file_id}", self._file, methods=["GET", "DELETE"]),
            Route("/v1/files/{file_id}/content", self._file_content, methods=["GET"]),
            Route("/v1/fine_tuning/jobs", self._jobs, methods=["GET", "POST"]),
            Route("/v1/fine_tuning/jobs/{job_id}", self._job, methods=["GET"]),
            Route(
                "/v1/fine_tuning/jobs/{job_id}/{action:str}",
                self._job_action,
                methods=["GET", "POST"],
            ),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/models/{model:path}", self._model, methods=["GET", "DELETE"]),
        ]

    async def _guard(self, request: Request) -> Response | None:
        """Count the call, check the key, and maybe fail before doing anything."""
        self.calls[f"{request.method} {request.url.path}"] += 1
        key = request.headers.get("api-key") or request.headers.get("authorization", "")[7:]
        if key != self.api_key:
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        if self.faults.rate and self._random.random() < self.faults.rate:
            kind = self._random.choice(self.faults.kinds)
            request.state.fault = kind
            if kind == "429":
                return _error(
                    429,
                    "Rate limit reached.",
                    code="rate_limit_exceeded",
                    headers={"retry-after-ms": "30", "retry-after": "1"},
                )
            if kind == "500":
                return _error(500, "The server had an error.")
        return None

    async def _answer(self, request: Request, response: Response) -> Response:
        """Answer, or (when a late fault was drawn) answer too late or drop the connection."""
        fault = getattr(request.state, "fault", None)
        if fault == "timeout":
            await asyncio.sleep(self.faults.timeout_seconds)
        elif fault == "drop":
            return _Dropped()
        return response

    async def _files(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        if request.method == "POST":
            async with request.form() as form:
                upload: Any = form["file"]
                content = await upload.read()
                row = self._store_file(upload.filename, str(form["purpose"]), content)
            return await self._answer(request, JSONResponse(self._file_object(row)))
        purpose = request.query_params.get("purpose")
        data = [
            self._file_object(f)
            for f in self.files.values()
            if purpose is None or f["purpose"] == purpose
        ][::-1]
        return await self._answer(
            request, JSONResponse({"object": "list", "data": data, "has_more": False})
        )

    def _store_file(self, filename: str | None, purpose: str, content: bytes) -> dict[str, Any]:
        row = {
            "id": _id("file-"),
            "filename": filename or "upload",
            "purpose": purpose,
            "bytes": len(content),
            "created_at": int(time.time()),
            "content": content,
        }
        self.files[row["id"]] = row
        return row

    @staticmethod
    def _file_object(row: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "file",
            "status": "processed",
            **{k: v for k, v in row.items() if k != "content"},
        }

    async def _file(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        row = self.files.get(request.path_params["file_id"])
        if row is None:
            return _error(404, "No such File object", param="id")
        if request.method == "DELETE":
            del self.files[row["id"]]
            return await self._answer(
                request, JSONResponse({"id": row["id"], "object": "file", "deleted": True})
            )
        return await self._answer(request, JSONResponse(self._file_object(row)))

    async def _file_content(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        row = self.files.get(request.path_params["file_id"])
        if row is None:
            return _error(404, "No such File object", param="id")
        return await self._answer(request, Response(row["content"]))

    async def _jobs(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        if request.method == "GET":
            wanted = {
                k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[")
            }
            data = [
                j.body
                for j in reversed(self.jobs.values())
                if all((j.body.get("metadata") or {}).get(k) == v for k, v in wanted.items())
            ]
            limit = int(request.query_params.get("limit", 20))
            return await self._answer(
                request,
                JSONResponse(
                    {"object": "list", "data": data[:limit], "has_more": len(data) > limit}
                ),
            )
        body = await request.json()
        for param in ("training_file", "validation_file"):
            if body.get(param) and body[param] not in self.files:
                return _error(
                    400, f"invalid {param}: {body[param]}", param=param, code=f"invalid_{param}"
                )
        known = body["model"] in BASES or body["model"] in self.models
        if not known:
            return _error(
                400,
                f"Model {body['model']} is not available for fine-tuning.",
                param="model",
                code="model_not_available",
            )
        method = body.get("method") or {"type": "supervised", "supervised": {}}
        method.setdefault(method["type"], {}).setdefault("hyperparameters", {})
        job_id = _id("ftjob-")
        job = DoubleJob(
            body={
                "id": job_id,
                "object": "fine_tuning.job",
                "created_at": int(time.time()),
                "model": body["model"],
                "organization_id": f"org-{self.organization}",
                "status": "validating_files",
                "training_file": body["training_file"],
                "validation_file": body.get("validation_file"),
                "method": method,
                "hyperparameters": method[method["type"]]["hyperparameters"],
                "seed": body.get("seed", 42),
                "metadata": body.get("metadata"),
                "user_provided_suffix": body.get("suffix"),
                "fine_tuned_model": None,
                "finished_at": None,
                "trained_tokens": None,
                "result_files": [],
                "error": None,
                "estimated_finish": None,
                "integrations": body.get("integrations"),
            }
        )
        self.jobs[job_id] = job
        self._event(job, f"Created fine-tuning job: {job_id}")
        self._event(job, f"Validating training file: {body['training_file']}")
        return await self._answer(request, JSONResponse(job.body))

    async def _job(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "No such fine-tuning job", param="fine_tuning_job_id")
        return await self._answer(request, JSONResponse(job.body))

    async def _job_action(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "No such fine-tuning job", param="fine_tuning_job_id")
        action = request.path_params["action"]
        if action == "events":
            return await self._answer(request, JSONResponse(self._page(request, job.events)))
        if action == "checkpoints":
            return await self._answer(request, JSONResponse(self._page(request, job.checkpoints)))
        status = job.body["status"]
        if action == "cancel" and status not in ("succeeded", "failed", "cancelled"):
            await self._finish(job, "cancelled")
        elif action == "pause" and status in ("queued", "running"):
            job.body["status"] = "paused"
            self._event(job, "Fine-tuning job paused")
        elif action == "resume" and status == "paused":
            job.body["status"] = "queued"
            self._event(job, "Fine-tuning job resumed")
        elif action in ("cancel", "pause", "resume"):
            return _error(
                400,
                f"Job {job.body['id']} is {status}; it cannot be {action}ed.",
                code=f"job_not_{action}able",
            )
        else:
            return _error(404, "Invalid URL")
        return await self._answer(request, JSONResponse(job.body))

    def _page(self, request: Request, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Newest first, `after` an id, `limit`; with the event anomalies when asked."""
        newest_first = list(reversed(rows))
        after = request.query_params.get("after")
        if after:
            ids = [r["id"] for r in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query_params.get("limit", 20))
        data = newest_first[:limit]
        has_more = len(newest_first) > limit
        if data and rows and rows[0].get("object") == "fine_tuning.job.event":
            if self.faults.duplicate_events and self._random.random() < 0.5:
                data = [*data, self._random.choice(data)]
            if self.faults.shuffle_events and self._random.random() < 0.5:
                data = self._random.sample(data, len(data))
        return {"object": "list", "data": data, "has_more": has_more}

    async def _chat(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        body = await request.json()
        model = body.get("model")
        if model not in self.models and model not in BASES:
            return _error(
                404, f"The model '{model}' does not exist", param="model", code="model_not_found"
            )
        text = f"Réponse de {model}: {body['messages'][-1]['content']}"
        created = int(time.time())
        if not body.get("stream"):
            return await self._answer(
                request,
                JSONResponse(
                    {
                        "id": _id("chatcmpl-"),
                        "object": "chat.completion",
                        "created": created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "logprobs": None,
                                "message": {"role": "assistant", "content": text, "refusal": None},
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
                    }
                ),
            )

        async def chunks() -> AsyncIterator[bytes]:
            words = text.split(" ")
            pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
            deltas = [
                ({"role": "assistant", "content": ""}, None),
                *(({"content": piece}, None) for piece in pieces),
                ({}, "stop"),
            ]
            for delta, finish in deltas:
                chunk = {
                    "id": "chatcmpl-double",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def _models(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        bases = [{"id": b, "object": "model", "created": 0, "owned_by": "system"} for b in BASES]
        return await self._answer(
            request, JSONResponse({"object": "list", "data": bases + list(self.models.values())})
        )

    async def _model(self, request: Request) -> Response:
        if refused := await self._guard(request):
            return refused
        name = request.path_params["model"]
        if name not in self.models:
            return _error(404, f"The model '{name}' does not exist", code="model_not_found")
        if request.method == "DELETE":
            del self.models[name]
            self.deleted_models.append(name)
            return await self._answer(
                request, JSONResponse({"id": name, "object": "model", "deleted": True})
            )
        return await self._answer(request, JSONResponse(self.models[name]))


class _Dropped(Response):
    """Starts an answer, then closes the connection: the client never gets a whole response."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"partial": ', "more_body": True})
        raise ConnectionAbortedError("the double drops this connection on purpose")


T = TypeVar("T")


class ThreadedDouble:
    """The double served from a thread of its own, for tests that block (the sync SDK, waits on
    other processes): `with ThreadedDouble(...) as double:` then `double.call(fn)`."""

    def __init__(self, **options: Any) -> None:
        self.double = OpenAIDouble(**options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedDouble:
        self._thread.start()
        self.call(lambda d: d.__aenter__())
        return self

    def __exit__(self, *_: object) -> None:
        self.call(lambda d: d.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def url(self) -> str:
        return self.double.url

    def call(self, fn: Callable[[OpenAIDouble], Awaitable[T]]) -> T:
        """Run `fn(double)` in the double's loop and return its result."""

        async def run() -> T:
            return await fn(self.double)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(60)

    def job_for(self, our_job_id: str, timeout: float = 20) -> str:
        """Wait until the provider has the job our service created for `our_job_id`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for job_id, job in list(self.double.jobs.items()):
                if (job.body.get("metadata") or {}).get("ft_job_id") == our_job_id:
                    return job_id
            time.sleep(0.05)
        raise AssertionError(f"the provider never got a job for {our_job_id}")
