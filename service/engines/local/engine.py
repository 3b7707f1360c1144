"""The local engine: trains open-weight models on this machine and answers with them.

Base models are folders on disk (`models.py`); a worker (`worker.py`) claims the engine's queued
jobs and trains each in a trainer process; completions load a base with the job's LoRA adapter
on top (`generator.py`), off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sys
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from sqlmodel.ext.asyncio.session import AsyncSession

from service.engines.base import Engine, ExportFailed, ExportProgress, ModelTarget
from service.engines.local import tokenizer
from service.engines.local.chat import plain_message
from service.engines.local.generator import Generator, Loaded, Params
from service.engines.local.graders import check_supported
from service.engines.local.models import LocalModel, discover
from service.errors import InvalidRequest
from service.ids import new_id, now
from service.inference.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
)
from service.models.registry import BaseModelSpec
from service.models.service import get_visible_derived
from service.settings import Settings

if TYPE_CHECKING:
    from service.db import Database
    from service.engines.local.worker import LocalWorker

log = logging.getLogger(__name__)

ENGINE_NAME = "local"


class LocalEngine(Engine):
    """Trains with TRL + LoRA in a trainer process; serves base models and their adapters."""

    name = ENGINE_NAME
    keeps_data_local = True

    def __init__(self, *, settings: Settings, models: Sequence[LocalModel] | None = None) -> None:
        self.settings = settings
        if models is None:
            models = discover(settings.base_models_dir, settings.local_models)
        self._models = {m.spec.id: m for m in models}
        self.generator = Generator()
        tokenizer.register()  # token counts of `hf:<folder>` specs use the model's tokenizer

    def base_models(self) -> Sequence[BaseModelSpec]:
        """Return the base model folders found on disk."""
        return [m.spec for m in self._models.values()]

    def folder(self, base_model: str) -> Path | None:
        """Return the folder of a local base model, or None."""
        model = self._models.get(base_model)
        return model.folder if model else None

    def check_job(self, *, base: BaseModelSpec, method: Mapping[str, Any]) -> None:
        """Refuse graders that cannot run here (python, metrics that need downloads)."""
        if method["type"] == "reinforcement":
            check_supported(method["reinforcement"]["grader"])

    export_formats = frozenset({"adapter", "merged", "gguf"})

    async def export(
        self, target: ModelTarget, fmt: str, out_dir: Path, progress: ExportProgress
    ) -> None:
        """Write the fine-tune in a child process (`engines/local/export.py`), relaying its
        progress lines; a crash or a refusal there is an `ExportFailed` here."""
        base = self.folder(target.base_model)
        if base is None or target.location is None:
            raise ExportFailed(f"The base model '{target.base_model}' is no longer on disk.")
        spec = {
            "format": fmt,
            "name": target.name,
            "base_name": target.base_model,
            "base_dir": str(base),
            "adapter_dir": target.location,
            "out_dir": str(out_dir),
        }
        spec_path = out_dir.with_name(out_dir.name + ".spec.json")
        spec_path.write_text(json.dumps(spec))
        # stderr (library warnings, progress bars) goes to a file: a pipe nobody reads while
        # stdout is relayed would fill and stall the child.
        log_path = out_dir.with_name(out_dir.name + ".log")
        error = None
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service.engines.local.export",
                str(spec_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
            )
            try:
                assert process.stdout is not None
                async for line in process.stdout:
                    try:
                        report = json.loads(line)
                    except ValueError:
                        continue  # a library printing to stdout
                    if "error" in report:
                        error = str(report["error"])
                    elif "progress" in report:
                        await progress(float(report["progress"]), str(report.get("message", "")))
                await process.wait()
            finally:
                if process.returncode is None:  # cancelled: the child goes too
                    process.kill()
                    await process.wait()
                spec_path.unlink(missing_ok=True)
        if process.returncode != 0:
            if error is None:
                tail = log_path.read_bytes()[-4000:].decode(errors="replace")
                log.error("export of %s failed:\n%s", target.name, tail)
            raise ExportFailed(error or "The export process failed; see the server log.")

    def worker(self, database: Database) -> LocalWorker:
        """Return a worker that claims this engine's jobs from `database`."""
        from service.engines.local.worker import LocalWorker

        return LocalWorker(database=database, settings=self.settings, engine=self)

    async def run(self, *, database: Database, stopping: anyio.Event) -> None:
        """Run one worker until `stopping` is set; a job in progress is handed back."""
        await self.worker(database).run(stopping)

    # ------------------------------------------------------------ models a job may use

    async def resolve_local(
        self, *, session: AsyncSession, project_id: str, name: str
    ) -> tuple[str, str | None]:
        """Return (base folder, adapter folder) of a model this engine serves to the project."""
        if (folder := self.folder(name)) is not None:
            return str(folder), None
        derived = await get_visible_derived(session=session, project_id=project_id, name=name)
        folder = self.folder(derived.base_model) if derived.engine == self.name else None
        if folder is None:
            raise InvalidRequest(
                f"The model '{name}' is not served by this deployment's local engine.",
                param="model",
                code="model_not_served",
            )
        return str(folder), derived.location

    # ------------------------------------------------------------ completions

    async def _load(self, target: ModelTarget) -> Loaded:
        folder = self.folder(target.base_model)
        if folder is None:
            raise InvalidRequest(
                f"The base model '{target.base_model}' of '{target.name}' is no longer on disk.",
                param="model",
                code="model_not_served",
            )
        return await anyio.to_thread.run_sync(self.generator.load, str(folder), target.location)

    async def complete(self, target: ModelTarget, request: ChatCompletionRequest) -> dict[str, Any]:
        """Generate the completions in a thread."""
        loaded = await self._load(target)
        prompt_tokens, results = await anyio.to_thread.run_sync(
            self.generator.generate, loaded, _messages(request), _params(request)
        )
        completion_tokens = sum(r.completion_tokens for r in results)
        completion = ChatCompletion(
            id=new_id("chatcmpl-"),
            created=now(),
            model=target.name,
            choices=[
                Choice(
                    index=i,
                    message=AssistantMessage(content=r.text),
                    finish_reason=r.finish_reason,
                )
                for i, r in enumerate(results)
            ],
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )
        return completion.model_dump(mode="json")

    async def heldout_loss(
        self, target: ModelTarget, conversations: list[list[dict[str, str]]]
    ) -> float | None:
        """Compute the loss of the answers in a thread."""
        loaded = await self._load(target)
        loss, _ = await anyio.to_thread.run_sync(self.generator.loss, loaded, conversations)
        return loss

    async def complete_stream(
        self, target: ModelTarget, request: ChatCompletionRequest
    ) -> AsyncGenerator[dict[str, Any]]:
        """Yield OpenAI's `chat.completion.chunk` objects as the text is generated."""
        loaded = await self._load(target)
        prompt_tokens, pieces, outcome = await anyio.to_thread.run_sync(
            self.generator.stream, loaded, _messages(request), _params(request)
        )
        header = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": now(),
            "model": target.name,
        }

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {**header, "choices": [choice]}

        yield chunk({"role": "assistant", "content": ""})
        while (piece := await anyio.to_thread.run_sync(next, pieces, None)) is not None:
            if piece:
                yield chunk({"content": piece})
        await anyio.to_thread.run_sync(outcome["thread"].join)
        yield chunk({}, "stop" if outcome.get("stopped") else outcome["finish_reason"])
        if request.stream_options and request.stream_options.include_usage:
            completion_tokens = outcome["completion_tokens"]
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            yield {**header, "choices": [], "usage": usage}

    # ------------------------------------------------------------ deletion

    async def delete_model(self, target: ModelTarget) -> None:
        """Drop the adapter from memory and delete its folder (only under the jobs folder)."""
        if target.location is None:
            return
        self.generator.forget(target.location)
        folder = Path(target.location).resolve()
        # A location is data from the database, not a path to trust.
        if folder.is_relative_to(self.settings.jobs_dir.resolve()) and folder.is_dir():
            await anyio.to_thread.run_sync(shutil.rmtree, folder)


def _params(request: ChatCompletionRequest) -> Params:
    return Params(
        max_new_tokens=request.token_limit,
        temperature=request.temperature,
        top_p=request.top_p,
        n=request.n,
        stops=tuple(request.stops),
        seed=request.seed,
    )


def _messages(request: ChatCompletionRequest) -> list[dict[str, str]]:
    return [plain_message(m.model_dump()) for m in request.messages]
