"""Attention for padding-free batches on devices without a varlen kernel (CPUs).

A padding-free batch is one row holding several examples end to end, their position ids
restarting at 0 where each begins. Flash attention's varlen kernel attends within each example;
without it (CPUs, GPUs without flash-attn), transformers' sdpa path builds a dense block-diagonal
mask over the whole row and computes every pair of tokens, examples' cross pairs included: for
4 examples that is 4 times the attention work, and the saving on padding is lost.

`segmented_sdpa` does what the varlen kernel does with the kernel we have: one causal
`scaled_dot_product_attention` per example (boundaries from TRL's `cu_seq_lens_q`, else from the
position ids), so no token can see another example's and no work is spent on pairs that are
masked anyway. Inputs that are not packed go to transformers' own sdpa unchanged.
"""

from __future__ import annotations

from typing import Any

ATTENTION = "sdpa_segments"


def segment_bounds(position_ids: Any) -> list[int]:
    """Start offsets of the examples in a packed row (position ids restart at 0), plus its end."""
    row = position_ids[0]
    starts = (row == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return [*starts, int(row.shape[0])]


def segmented_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention of a packed row, one causal sdpa call per example; anything else to sdpa."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = None
    if attention_mask is None and query.shape[0] == 1 and query.shape[2] > 1:
        cu_seq_lens = kwargs.get("cu_seq_lens_q")
        if cu_seq_lens is not None:
            bounds = [int(b) for b in cu_seq_lens.tolist()]
        elif kwargs.get("position_ids") is not None:
            bounds = segment_bounds(kwargs["position_ids"])
    if bounds is None or len(bounds) <= 2:
        out: tuple[Any, None] = sdpa_attention_forward(
            module, query, key, value, attention_mask, **kwargs
        )
        return out
    single = {k: v for k, v in kwargs.items() if k not in ("is_causal", "position_ids")}
    parts = [
        sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            None,
            is_causal=True,
            **single,
        )[0]
        for start, end in zip(bounds[:-1], bounds[1:], strict=False)
        if end > start
    ]
    # sdpa_attention_forward answers (batch, sequence, heads, head_dim): join along the sequence.
    return torch.cat(parts, dim=1), None


def segmented_mask(*args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
    """No mask for padding-free rows (the attention splits them); sdpa's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    kwargs["attention_mask"] = attention_mask
    return sdpa_mask(*args, **kwargs)


def register() -> str:
    """Make `segmented_sdpa` loadable as attn_implementation; return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION, segmented_sdpa)
    AttentionMaskInterface.register(ATTENTION, segmented_mask)
    return ATTENTION
