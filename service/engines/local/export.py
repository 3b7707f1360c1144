"""A local fine-tuned model written out in a format other tools load, in a child process.

- `adapter`: the LoRA adapter as PEFT saves it (`adapter_config.json`, safetensors), which
  PEFT and vLLM (`--lora-modules`) load on the base model;
- `merged`: the adapter merged into the base, a Hugging Face folder `transformers` loads alone;
- `gguf`: the merged model as one GGUF file (Q8_0, or F16) for llama.cpp, with an Ollama
  `Modelfile` that carries the chat template; Llama-architecture models (SmolLM2's) only.

Run as `python -m service.engines.local.export SPEC.json`: it prints one JSON line per step
(`{"progress": 0.4, "message": "..."}`) and writes into the spec's `out_dir`, which the caller
then packs; the caller runs it in a child process so that a crash or a kill leaves the server
untouched, and only a finished folder is ever used.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

ExportFormat = Literal["adapter", "merged", "gguf"]
Quantization = Literal["q8_0", "f16"]
Progress = Callable[[float, str], None]

# Files of a model folder that tokenizers and chat templates live in.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)
GGUF_ARCHITECTURES = ("LlamaForCausalLM",)


class ExportError(RuntimeError):
    """The model cannot be written in the asked format (said in words a client can act on)."""


def export_adapter(*, adapter_dir: Path, base_name: str, out_dir: Path, progress: Progress) -> None:
    """Copy the adapter, naming its base model by name rather than by this machine's folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    progress(0.3, "Adapter configuration written")
    for path in sorted(adapter_dir.iterdir()):
        if path.suffix == ".safetensors" or path.name in TOKENIZER_FILES:
            shutil.copyfile(path, out_dir / path.name)
    progress(1.0, "Adapter weights copied")


def export_merged(*, base_dir: Path, adapter_dir: Path, out_dir: Path, progress: Progress) -> None:
    """Merge the LoRA weights into the base and save a plain Hugging Face folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(0.1, "Loading the base model")
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    progress(0.3, "Applying the adapter")
    model = PeftModel.from_pretrained(base, adapter_dir)
    progress(0.5, "Merging the adapter into the weights")
    merged = model.merge_and_unload()
    progress(0.7, "Saving the merged model")
    merged.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(out_dir)
    progress(1.0, "Merged model saved")


def export_gguf(
    *,
    merged_dir: Path,
    out_dir: Path,
    name: str,
    quantization: Quantization,
    progress: Progress,
) -> None:
    """Write the merged model as `model.gguf` (Llama architecture) and an Ollama `Modelfile`."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(merged_dir)
    if not set(config.architectures or ()) & set(GGUF_ARCHITECTURES):
        raise ExportError(
            f"GGUF export supports the Llama architecture; this model is "
            f"{', '.join(config.architectures or ['unknown'])}. Export 'merged' instead."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    arch = gguf.MODEL_ARCH.LLAMA
    writer = gguf.GGUFWriter(out_dir / "model.gguf", gguf.MODEL_ARCH_NAMES[arch])
    _write_llama_parameters(writer, config, name=name, quantization=quantization)
    _write_tokenizer(writer, tokenizer, merged_dir)
    progress(0.2, "Model parameters and tokenizer written")

    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    state = model.state_dict()
    for i, (hf_name, tensor) in enumerate(state.items()):
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp uses the token embeddings as the output layer
        data = tensor.to(torch.float32).numpy()
        # llama.cpp's rotary embedding pairs dimensions as Meta's checkpoints did; Hugging Face
        # reordered q and k for its own, so they are put back (as llama.cpp's converter does).
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = llama_permute(data, heads, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = llama_permute(data, heads, kv_heads)
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"No GGUF name for the tensor '{hf_name}'.")
        # Matrices are quantised; norms and vectors stay F32, as llama.cpp expects them.
        if data.ndim == 2 and quantization == "q8_0" and data.shape[1] % 32 == 0:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif data.ndim == 2:
            writer.add_tensor(gguf_name, data.astype(np.float16))
        else:
            writer.add_tensor(gguf_name, data.astype(np.float32))
        progress(0.2 + 0.6 * (i + 1) / len(state), f"Tensor {gguf_name} converted")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (out_dir / "Modelfile").write_text(ollama_modelfile(tokenizer.chat_template, tokenizer))
    progress(1.0, "GGUF file and Ollama Modelfile written")


def _write_llama_parameters(
    writer: Any, config: Any, *, name: str, quantization: Quantization
) -> None:
    import gguf

    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    theta = rope.get("rope_theta") or getattr(config, "rope_theta", None) or 10_000.0
    writer.add_rope_freq_base(float(theta))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    file_type = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(file_type[quantization])


def _write_tokenizer(writer: Any, tokenizer: Any, folder: Path) -> None:
    """Byte-level BPE (GPT-2 style, SmolLM2's): tokens, their types, merges, special ids."""
    import gguf

    tokenizer_json = json.loads((folder / "tokenizer.json").read_text())
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise ExportError("GGUF export supports byte-level BPE tokenizers (GPT-2 style).")
    vocab = tokenizer.get_vocab()
    by_id = {i: token for token, i in vocab.items()}
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    size = max(by_id) + 1
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    types = [
        gguf.TokenType.CONTROL
        if i in special
        else gguf.TokenType.NORMAL
        if i in by_id
        else gguf.TokenType.UNUSED
        for i in range(size)
    ]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer_json.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _pre_tokenizer(pre: Any) -> str:
    """llama.cpp's name for how text is split before BPE: SmolLM2's splits digits one by one
    before the GPT-2 byte-level split, plain byte-level tokenizers use GPT-2's."""
    steps = pre.get("pretokenizers", [pre]) if isinstance(pre, dict) else []
    kinds = {step.get("type") for step in steps if isinstance(step, dict)}
    if "Digits" in kinds and "ByteLevel" in kinds:
        return "smollm"
    return "gpt2"


def llama_permute(weights: Any, heads: int, kv_heads: int) -> Any:
    """Reorder q or k rows from Hugging Face's rotary layout to llama.cpp's (Meta's)."""
    if heads != kv_heads:
        heads = kv_heads
    shape = weights.shape
    return (
        weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
    )


def ollama_modelfile(chat_template: str | None, tokenizer: Any) -> str:
    """An Ollama Modelfile for `model.gguf`: its chat template in Ollama's (Go) syntax where the
    model uses ChatML (SmolLM2), and the end-of-turn token as the stop word."""
    lines = ["FROM ./model.gguf", ""]
    if chat_template and "<|im_start|>" in chat_template:
        lines += [
            'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}',
            "{{ .Content }}<|im_end|>",
            "{{ end }}<|im_start|>assistant",
            '"""',
            'PARAMETER stop "<|im_end|>"',
        ]
    elif tokenizer.eos_token:
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    lines += ["PARAMETER temperature 0.7", ""]
    return "\n".join(lines)


def run(spec: dict[str, Any], progress: Progress) -> None:
    """Write the export the spec asks for into `spec["out_dir"]`."""
    fmt: ExportFormat = spec["format"]
    out_dir = Path(spec["out_dir"])
    adapter_dir = Path(spec["adapter_dir"])
    if fmt == "adapter":
        export_adapter(
            adapter_dir=adapter_dir, base_name=spec["base_name"], out_dir=out_dir, progress=progress
        )
        return
    merged_dir = out_dir if fmt == "merged" else out_dir.with_name(out_dir.name + ".merged")
    scale = 1.0 if fmt == "merged" else 0.4

    def merge_progress(fraction: float, message: str) -> None:
        progress(fraction * scale, message)

    export_merged(
        base_dir=Path(spec["base_dir"]),
        adapter_dir=adapter_dir,
        out_dir=merged_dir,
        progress=merge_progress,
    )
    if fmt == "gguf":
        try:
            export_gguf(
                merged_dir=merged_dir,
                out_dir=out_dir,
                name=spec["name"],
                quantization=spec.get("quantization", "q8_0"),
                progress=lambda fraction, message: progress(0.4 + 0.6 * fraction, message),
            )
        finally:
            shutil.rmtree(merged_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Entry point of the child process: one JSON spec file in, progress lines out."""
    spec = json.loads(Path(argv[0]).read_text())

    def report(fraction: float, message: str) -> None:
        print(json.dumps({"progress": round(fraction, 4), "message": message}), flush=True)

    try:
        run(spec, report)
    except ExportError as error:
        print(json.dumps({"error": str(error)}), flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
