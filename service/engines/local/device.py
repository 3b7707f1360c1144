"""How the trainer uses the device it runs on: precision, batches without padding, attention.

The choices are made once per job from what the device offers (`detect`, then `plan_for`), and the
job's event log says which were made and why. Each one keeps the training result (the same
batches, in the same order, the same loss to within bf16 rounding) and only removes work:

- bf16 where the hardware computes it natively (CUDA with bf16, CPUs with AMX or AVX512-BF16):
  the frozen base weights are loaded in bf16 (no fp32 copy to cast at every matmul) and the
  step runs under bf16 autocast; the LoRA weights and optimizer stay float32.
- padding-free supervised batches: a batch's examples go end to end in one row, so no compute
  is spent on padding; attention stays within each example (flash attention's varlen kernel
  where installed, else `attention.segmented_sdpa`, one sdpa call per example).
- on CPUs, the supervised loss projects only the trained (completion) tokens onto the
  vocabulary, with ATen's fused softmax (`loss_head`), where TRL's Triton-less path projects
  every position in small tiles.
- no gradient checkpointing (TRL's default recomputes activations to save memory a LoRA on a
  small model does not need).
- Liger kernels on CUDA where `liger-kernel` is installed.
- the trainer process keeps the memory a step frees for the next one (glibc's malloc would
  unmap its large blocks and fault them in again at every step: `memory`).
`torch.compile` is left off: a job's batches have varying lengths, so each new length
recompiles, which costs more than it saves over the few hundred steps of an email model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from service.engines.local import memory
from service.engines.local.attention import ATTENTION

# CPU flags (Linux /proc/cpuinfo) of native bf16 matrix arithmetic.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Device:
    """What the trainer's device offers."""

    kind: str  # "cuda" or "cpu"
    name: str
    threads: int  # torch's intra-op threads (CPU) or 0
    native_bf16: bool
    bf16_reason: str
    flash_attention: bool  # the flash-attn package is importable (CUDA only)
    liger: bool  # the liger-kernel package is importable (CUDA only)
    glibc_malloc: bool = False  # the process allocates with glibc's malloc (memory.py)


@dataclass(frozen=True)
class Plan:
    """The trainer's per-device choices; `describe()` is the job's event text."""

    device: Device
    bf16: bool
    padding_free: bool
    attention: str
    gradient_checkpointing: bool
    liger: bool
    torch_compile: bool
    trained_token_head: bool = False  # loss_head.install (CPU, supervised)
    retain_freed_memory: bool = False  # memory.retain_freed_memory (glibc)

    @property
    def weights_dtype(self) -> str:
        """dtype the frozen base weights are loaded in."""
        return "bfloat16" if self.bf16 else "float32"

    def describe(self) -> str:
        """One line for the job's events."""
        device = self.device
        where = f"{device.kind} ({device.name}"
        where += f", {device.threads} threads)" if device.kind == "cpu" else ")"
        parts = [
            f"bf16 weights and autocast ({device.bf16_reason})"
            if self.bf16
            else f"float32 ({device.bf16_reason})",
            f"padding-free batches, attention per example ({self.attention})"
            if self.padding_free
            else "padded batches",
            "gradient checkpointing"
            if self.gradient_checkpointing
            else "no gradient checkpointing",
        ]
        if self.trained_token_head:
            parts.append("loss on trained tokens only")
        if self.liger:
            parts.append("Liger kernels")
        if self.retain_freed_memory:
            parts.append("freed memory kept for the next step")
        parts.append("torch.compile" if self.torch_compile else "no torch.compile")
        return f"Training on {where}: " + ", ".join(parts) + "."

    def record(self) -> dict[str, Any]:
        """The plan as event data."""
        return {**asdict(self), "weights_dtype": self.weights_dtype, "description": self.describe()}


def _cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """The CPU's model name and flags (Linux); empty elsewhere."""
    name, flags = "unknown CPU", set[str]()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown CPU":
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, flags


def detect(cpuinfo: Path = Path("/proc/cpuinfo")) -> Device:
    """Describe the device training will run on (the first GPU if there is one)."""
    import torch

    if torch.cuda.is_available():
        bf16 = bool(torch.cuda.is_bf16_supported())
        return Device(
            kind="cuda",
            name=torch.cuda.get_device_name(0),
            threads=0,
            native_bf16=bf16,
            bf16_reason="the GPU supports bf16" if bf16 else "the GPU lacks bf16",
            flash_attention=importlib.util.find_spec("flash_attn") is not None,
            liger=importlib.util.find_spec("liger_kernel") is not None,
            glibc_malloc=memory.available(),
        )
    name, flags = _cpu_facts(cpuinfo)
    native = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    return Device(
        kind="cpu",
        name=name,
        threads=torch.get_num_threads(),
        native_bf16=bool(native),
        bf16_reason=(
            f"the CPU has {native[0].upper().replace('_', '-')}"
            if native
            else "the CPU has no native bf16 (AMX or AVX512-BF16)"
        ),
        flash_attention=False,
        liger=False,
        glibc_malloc=memory.available(),
    )


def windowed_attention(config: Any) -> bool:
    """Whether some layers of the model attend within a sliding window (Gemma 3, Mistral)."""
    text = config.get_text_config()
    layer_types = getattr(text, "layer_types", None)
    if layer_types:
        return "sliding_attention" in layer_types
    return getattr(text, "sliding_window", None) is not None and bool(
        getattr(text, "use_sliding_window", True)
    )


def plan_for(device: Device, method: str, *, optimize: bool = True, windowed: bool = False) -> Plan:
    """Choose the trainer's settings for this device, method and model.

    `optimize=False` (FT_TRAINING_OPTIMIZATIONS=off) keeps plain TRL training at full
    precision: float32 weights, padded batches, sdpa attention. `windowed`: the model has
    sliding-window layers, which only flash attention's kernel applies within packed rows.
    """
    if not optimize:
        return Plan(device, False, False, "sdpa", False, False, False)
    # Padding-free rows need a trainer that flattens its batches: TRL's SFT collator does;
    # DPO pairs and GRPO generations keep their padded batches.
    padding_free = method == "supervised" and (device.flash_attention or not windowed)
    if padding_free and device.flash_attention:
        attention = "flash_attention_2"
    elif padding_free:
        attention = ATTENTION
    else:
        attention = "sdpa"
    return Plan(
        device=device,
        bf16=device.native_bf16,
        padding_free=padding_free,
        attention=attention,
        gradient_checkpointing=False,
        liger=device.kind == "cuda" and device.liger,
        torch_compile=False,
        # With Triton (CUDA), TRL's fused head already scores the trained tokens only.
        trained_token_head=device.kind == "cpu" and method == "supervised",
        retain_freed_memory=device.glibc_malloc,
    )
