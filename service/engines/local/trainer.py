"""The trainer process: fine-tunes one job with TRL and LoRA and reports through a queue.

It runs in a child process of the worker (torch, transformers and TRL are imported here
only), never touches the database, and reports with the typed messages of `messages.py`:
`Started`, a `StepLogged` per optimizer step, a `CheckpointSaved` at each epoch end, and last
`Stopped`, `Succeeded` or `Failed`.

The worker sets `stop` (with `reason`) to ask for a pause or a cancel; the trainer stops at the
end of the current step, saving a resumable checkpoint first when pausing.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.engines.local import attention, loss_head, memory
from service.engines.local.device import Plan, detect, plan_for, windowed_attention
from service.engines.local.messages import (
    CheckpointSaved,
    Failed,
    Started,
    StepLogged,
    Stopped,
    StopReason,
    Succeeded,
)
from service.training_data.report import default_epochs

log = logging.getLogger(__name__)

# Learning rates for LoRA that `learning_rate_multiplier` scales (1.0 when "auto").
BASE_LEARNING_RATE = {"supervised": 2e-4, "dpo": 5e-5, "reinforcement": 1e-5}
MAX_LENGTH = 1024


@dataclass(frozen=True)
class TrainSpec:
    """Everything the trainer process needs, picklable."""

    job_id: str
    method: str
    base_path: str
    training_path: str
    validation_path: str | None
    output_dir: str
    hyperparameters: dict[str, Any]
    seed: int
    adapter_path: str | None = None  # continue training from a fine-tuned adapter
    # Highest step already reported by an earlier attempt: resume from a checkpoint at or
    # before it, so no step is trained without being logged.
    logged_step: int = 0
    # Reinforcement: the job's grader, and the local folders (base, adapter) of the models
    # its score_model graders name.
    grader: dict[str, Any] | None = None
    grader_models: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    # FT_TRAINING_OPTIMIZATIONS: per-device speed choices (device.plan_for), or plain TRL.
    optimize: bool = True


def resolve_hyperparameters(method: str, given: dict[str, Any], n_rows: int) -> dict[str, Any]:
    """Replace every "auto" with the value the trainer will use (documented in the README)."""
    resolved = dict(given)
    if resolved.get("n_epochs", "auto") == "auto":
        resolved["n_epochs"] = default_epochs(n_rows)
    if resolved.get("batch_size", "auto") == "auto":
        # Small batches on small sets keep several steps per epoch; 8 at most on CPU memory.
        resolved["batch_size"] = max(1, min(8, n_rows // 32))
    if resolved.get("learning_rate_multiplier", "auto") == "auto":
        resolved["learning_rate_multiplier"] = 1.0
    if method == "dpo" and resolved.get("beta", "auto") == "auto":
        resolved["beta"] = 0.1
    if method == "reinforcement":
        # GRPO compares a group of answers per prompt; compute_multiplier scales the group.
        multiplier = resolved.get("compute_multiplier", "auto")
        resolved.setdefault(
            "num_generations", 4 if multiplier == "auto" else max(2, round(4 * float(multiplier)))
        )
    return resolved


def metrics_csv(history: list[dict[str, Any]]) -> str:
    """OpenAI's results file: one row per step."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    )
    for row in history:
        writer.writerow(
            [
                row["step"],
                row.get("train_loss", ""),
                row.get("train_mean_token_accuracy", ""),
                row.get("valid_loss", ""),
                row.get("valid_mean_token_accuracy", ""),
            ]
        )
    return out.getvalue()


def main(spec: TrainSpec, outbox: Any, stop: Any, reason: Any, parent_pid: int) -> None:
    """Process entry point: train, and report the outcome as the last message."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _train(spec, outbox, stop, reason, parent_pid)
    except MemoryError:
        outbox.put(Failed("out_of_memory", "Training ran out of memory."))
    except Exception as exc:  # every failure must end the job, never leave it running
        log.error("training failed:\n%s", traceback.format_exc())
        code = "out_of_memory" if "out of memory" in str(exc).lower() else "training_error"
        outbox.put(Failed(code, f"Training failed: {type(exc).__name__}: {exc}"))


@dataclass
class _Progress:
    tokens: int = 0
    stopping: StopReason | None = None


def _resume_point(output_dir: Path, logged_step: int) -> str | None:
    """Pick the newest checkpoint no later than the last logged step; drop later ones.

    A trainer whose worker died may run on for a step or two and save a checkpoint nobody
    heard of; resuming from it would leave those steps out of the job's log.
    """
    resume = None
    for path in sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])):
        if int(path.name.split("-")[-1]) <= logged_step:
            resume = path
        else:
            shutil.rmtree(path, ignore_errors=True)
    return str(resume) if resume else None


# How each method's rows are read, and which TRL trainer and config train them.
_ROWS = {
    "supervised": "supervised_rows",
    "dpo": "preference_rows",
    "reinforcement": "reinforcement_rows",
}
GRPO_MAX_COMPLETION_TOKENS = 64


def _make_trainer(
    spec: TrainSpec,
    hyper: dict[str, Any],
    rows: list[dict[str, Any]],
    eval_rows: list[dict[str, Any]] | None,
    plan: Plan,
) -> Any:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import (  # type: ignore[attr-defined]
        DPOConfig,
        DPOTrainer,
        GRPOConfig,
        GRPOTrainer,
        SFTConfig,
        SFTTrainer,
    )

    if plan.retain_freed_memory:  # before the model's weights and the first step allocate
        memory.retain_freed_memory()
    gpu = plan.device.kind == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(spec.base_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if plan.attention == attention.ATTENTION:
        attention.register()
    # The base is frozen: in bf16 it needs no float32 copy (the LoRA weights stay float32).
    model: Any = AutoModelForCausalLM.from_pretrained(
        spec.base_path,
        dtype=torch.bfloat16 if plan.bf16 else torch.float32,
        attn_implementation=plan.attention,
    )
    peft_config = None
    if spec.adapter_path:
        model = PeftModel.from_pretrained(model, spec.adapter_path, is_trainable=True)
    else:
        peft_config = LoraConfig(
            r=spec.lora.get("r", 16),
            lora_alpha=spec.lora.get("alpha", 32),
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    common: dict[str, Any] = {
        "output_dir": spec.output_dir,
        "num_train_epochs": hyper["n_epochs"],
        "per_device_train_batch_size": hyper["batch_size"],
        "per_device_eval_batch_size": hyper["batch_size"],
        "learning_rate": BASE_LEARNING_RATE[spec.method] * hyper["learning_rate_multiplier"],
        "lr_scheduler_type": "linear",
        "logging_steps": 1,
        "save_strategy": "epoch",
        "save_total_limit": 4,
        "eval_strategy": "epoch" if eval_rows else "no",
        "report_to": "none",
        "use_cpu": not gpu,
        "bf16": plan.bf16,
        "activation_checkpointing": plan.gradient_checkpointing,
        "use_liger_kernel": plan.liger,
        "seed": spec.seed,
        "data_seed": spec.seed,
        "disable_tqdm": True,
        "max_length": MAX_LENGTH,
        "dataloader_num_workers": 0,
    }
    datasets = {
        "train_dataset": Dataset.from_list(rows),
        "eval_dataset": Dataset.from_list(eval_rows) if eval_rows else None,
    }
    if spec.method == "reinforcement":
        tokenizer.padding_side = "left"  # generation needs prompts aligned on the right
        group = int(hyper["num_generations"])
        # Every batch must hold whole groups of answers to the same prompt.
        common["per_device_train_batch_size"] = group * max(1, -(-hyper["batch_size"] // group))
        common.pop("max_length")
        return GRPOTrainer(
            model=model,
            reward_funcs=[_reward_function(spec)],
            args=GRPOConfig(
                num_generations=group,
                max_completion_length=GRPO_MAX_COMPLETION_TOKENS,
                beta=0.04,  # a KL penalty keeps the policy near the base, as OpenAI's RFT
                **common,
            ),
            processing_class=tokenizer,
            peft_config=peft_config,
            **datasets,
        )
    if spec.method == "dpo":
        # ref_model=None: the reference is the base with the adapter disabled, no second copy.
        return DPOTrainer(
            model=model,
            ref_model=None,
            args=DPOConfig(beta=hyper["beta"], **common),
            processing_class=tokenizer,
            peft_config=peft_config,
            **datasets,
        )
    if plan.padding_free:
        # TRL enforces max_length on padded batches only: truncate the tokenized rows below.
        common.update(padding_free=True, max_length=None)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**common),
        processing_class=tokenizer,
        peft_config=peft_config,
        **datasets,
    )
    if plan.trained_token_head and loss_head.supported(model):
        peft_model: Any = trainer.model
        loss_head.install(peft_model.get_base_model())
    if plan.padding_free:
        trainer.train_dataset = truncate_tokens(trainer.train_dataset, MAX_LENGTH)
        if trainer.eval_dataset is not None:
            trainer.eval_dataset = truncate_tokens(trainer.eval_dataset, MAX_LENGTH)
    return trainer


def truncate_tokens(dataset: Any, max_length: int) -> Any:
    """Keep the first max_length tokens of each tokenized row, as TRL's keep_start does."""
    columns = [
        name
        for name in ("input_ids", "completion_mask", "assistant_masks", "attention_mask")
        if name in dataset.column_names
    ]
    if max((len(ids) for ids in dataset["input_ids"]), default=0) <= max_length:
        return dataset
    return dataset.map(lambda row: {name: row[name][:max_length] for name in columns})


def _reward_function(spec: TrainSpec) -> Any:
    """The job's grader as a TRL reward function: one score in [0, 1] per completion."""
    import json as json_module

    from service.engines.local.generator import Generator, Params
    from service.engines.local.graders import grade

    generator = Generator(cache_size=1)

    def scorer(model: str, messages: list[dict[str, str]]) -> str:
        base, adapter = spec.grader_models[model]
        loaded = generator.load(base, adapter)
        params = Params(max_new_tokens=16, temperature=0.0, top_p=1.0, n=1, stops=(), seed=0)
        return generator.generate(loaded, messages, params)[1][0].text

    grader = spec.grader or {}

    def reward(completions: list[Any], item: list[str], **_: Any) -> list[float]:
        scores = []
        for completion, raw_item in zip(completions, item, strict=True):
            text = completion[0]["content"] if isinstance(completion, list) else str(completion)
            scores.append(grade(grader, text, json_module.loads(raw_item), scorer))
        return scores

    reward.__name__ = str(grader.get("name") or "grader")
    return reward


def _step_metrics(logs: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's metric names, plus DPO's reward figures when present."""
    metrics = {
        "train_loss": logs.get("loss"),
        "train_mean_token_accuracy": logs.get("mean_token_accuracy"),
        "learning_rate": logs.get("learning_rate"),
        "epoch": logs.get("epoch"),
    }
    for key in ("margins", "accuracies", "chosen", "rejected"):
        if f"rewards/{key}" in logs:
            metrics[f"train_reward_{key}"] = logs[f"rewards/{key}"]
    if "reward" in logs:  # GRPO: the grader's mean score and its spread across the group
        metrics["train_reward_mean"] = logs["reward"]
        metrics["train_reward_std"] = logs.get("reward_std")
    return {k: v for k, v in metrics.items() if v is not None}


def _train(spec: TrainSpec, outbox: Any, stop: Any, reason: Any, parent_pid: int) -> None:
    import torch
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from service.engines.local import data

    torch.manual_seed(spec.seed)
    if spec.method not in _ROWS:  # job creation refuses other methods for local models
        raise ValueError(f"the local engine does not train '{spec.method}' jobs")
    read = getattr(data, _ROWS[spec.method])
    rows = read(Path(spec.training_path))
    eval_rows = read(Path(spec.validation_path)) if spec.validation_path else None
    hyper = resolve_hyperparameters(spec.method, spec.hyperparameters, len(rows))
    steps_per_epoch = -(-len(rows) // hyper["batch_size"])
    total_steps = steps_per_epoch * hyper["n_epochs"]
    from transformers import AutoConfig

    windowed = windowed_attention(AutoConfig.from_pretrained(spec.base_path))
    plan = plan_for(detect(), spec.method, optimize=spec.optimize, windowed=windowed)
    outbox.put(Started(hyperparameters=hyper, total_steps=total_steps, plan=plan.record()))
    output_dir = Path(spec.output_dir)
    trainer = _make_trainer(spec, hyper, rows, eval_rows, plan)
    trainer.remove_callback(PrinterCallback)
    history: list[dict[str, Any]] = []
    progress = _Progress()

    class Reporter(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not logs or "train_runtime" in logs:
                return
            if "eval_loss" in logs:
                history[-1:] = [
                    {
                        **history[-1],
                        "valid_loss": logs["eval_loss"],
                        "valid_mean_token_accuracy": logs.get("eval_mean_token_accuracy"),
                    }
                ]
                return
            progress.tokens = int(logs.get("num_tokens", progress.tokens))
            metrics = {
                "step": state.global_step,
                "total_steps": state.max_steps,
                **_step_metrics(logs),
            }
            history.append(metrics)
            outbox.put(StepLogged(metrics))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if os.getppid() != parent_pid:  # the worker died: stop, it will be recovered
                os._exit(3)
            if stop.is_set() and progress.stopping is None:
                progress.stopping = "pause" if reason.value.decode() == "pause" else "cancel"
                control.should_training_stop = True
                control.should_save = progress.stopping == "pause"

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress.stopping is not None:
                return
            metrics = {
                k: v
                for k, v in (history[-1] if history else {}).items()
                if k not in ("total_steps", "learning_rate", "epoch")
            }
            path = output_dir / f"checkpoint-{state.global_step}"
            outbox.put(CheckpointSaved(step=state.global_step, metrics=metrics, path=str(path)))

    trainer.add_callback(Reporter())
    trainer.train(resume_from_checkpoint=_resume_point(output_dir, spec.logged_step))
    if progress.stopping is not None:
        outbox.put(Stopped(progress.stopping))
        return
    adapter = output_dir / "final"
    trainer.save_model(str(adapter))
    outbox.put(
        Succeeded(adapter=str(adapter), trained_tokens=progress.tokens, csv=metrics_csv(history))
    )
