"""The supervised loss on CPUs: score only the trained tokens, with ATen's vectorised softmax.

TRL's SFT trainer asks the model for per-token log-probabilities through its fused LM head
(`trl.trainer.utils.add_fused_lm_head`). On devices without Triton that head projects every
position of the batch, prompts included, onto the whole vocabulary, and folds each
[4096 x 4096] tile into online-softmax statistics with a dozen elementwise torch ops, forward and
again backward: on SmolLM2 it took 40 % of a training step on CPU. What a CPU does well is one
large matrix product and one fused log-softmax, so `install` replaces that head with one that
projects the positions whose label is trained only (completion tokens), in chunks of tokens
whose logits fit in ~256 MiB, each recomputed in the backward pass (activation checkpointing)
so memory stays bounded on long batches. Same outputs, same loss (to float rounding):
`FusedCausalLMOutput` with log_probs, entropy and is_top1, zero where the label is -100.
"""

from __future__ import annotations

import types
from typing import Any

# Logits of a chunk of tokens, in float32, stay under this many bytes.
CHUNK_BYTES = 256 * 2**20


def supported(model: Any) -> bool:
    """Whether the model's head is a plain projection (no soft-capping or logit scaling)."""
    config = model.config.get_text_config()
    return all(
        getattr(config, name, None) is None
        for name in (
            "final_logit_softcapping",
            "logit_scale",
            "output_multiplier",
            "lm_head_multiplier",
            "logits_scaling",
        )
    )


def _score(hidden: Any, weight: Any, targets: Any) -> tuple[Any, Any, Any]:
    """Log-probability of each target, the distribution's entropy and whether it is the argmax."""
    import torch

    logits = (hidden @ weight.t()).float()
    log_z = torch.logsumexp(logits, dim=-1)
    log_probs = logits.gather(1, targets[:, None]).squeeze(1) - log_z
    with torch.no_grad():  # metrics only
        probs = torch.softmax(logits, dim=-1)
        entropy = log_z - (probs * logits).sum(-1)
        is_top1 = logits.argmax(-1) == targets
    return log_probs, entropy.detach(), is_top1


def scored_tokens(hidden: Any, weight: Any, targets: Any) -> tuple[Any, Any, Any]:
    """`_score` over chunks of tokens, each recomputed in backward to bound memory."""
    import torch
    from torch.utils.checkpoint import checkpoint

    chunk = max(16, CHUNK_BYTES // (4 * weight.shape[0]))
    parts = [
        checkpoint(
            _score,
            hidden[start : start + chunk],
            weight,
            targets[start : start + chunk],
            use_reentrant=False,
        )
        if hidden.requires_grad
        else _score(hidden[start : start + chunk], weight, targets[start : start + chunk])
        for start in range(0, hidden.shape[0], chunk)
    ]
    if not parts:
        empty = hidden.new_zeros((0,), dtype=torch.float32)
        return empty, empty, torch.zeros((0,), dtype=torch.bool, device=hidden.device)
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def install(model: Any) -> None:
    """Answer TRL's `fused_lm_head=True` calls on `model` (the base under PEFT) as above."""
    from trl.trainer.utils import FusedCausalLMOutput

    previous = model.forward  # TRL's fused forward: kept for every other kind of call

    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: Any = None,
        shift_labels: Any = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head or shift_labels is not None or kwargs.get("output_router_logits"):
            return previous(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        labels = labels[:, 1:]
        mask = labels != -100
        log_probs, entropy, is_top1 = scored_tokens(
            hidden[mask], self.get_output_embeddings().weight, labels[mask]
        )
        # masked_scatter keeps the loss connected to the model when no label is trained.
        log_probs = log_probs.new_zeros(mask.shape).masked_scatter(mask, log_probs)
        entropy = entropy.new_zeros(mask.shape).masked_scatter(mask, entropy)
        is_top1 = is_top1.new_zeros(mask.shape).masked_scatter(mask, is_top1)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            entropy=entropy,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
