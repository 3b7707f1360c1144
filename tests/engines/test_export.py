"""Exports of a LoRA fine-tune trained here, each loaded in its target library: the adapter in
PEFT, the merged folder in transformers alone, the GGUF with the `gguf` reader (and transformers'
own GGUF loader); all are the same model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from service.engines.local import export
from tests.factories import EMAIL_PAIRS

PROMPT = "Remercie Mme Durand pour sa commande."
# PEFT 0.21 still asks transformers 5 a deprecated question when it wraps a model.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


def quiet(fraction: float, message: str) -> None:
    assert 0.0 <= fraction <= 1.0 and message


@pytest.fixture(scope="module")
def fine_tune(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train a LoRA adapter on the tiny model for real (a few steps, a large rate, so that the
    adapter changes what the model says) and save it as the trainer does."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(base, lora)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-2)
    batch = tokenizer([answer for _, answer in EMAIL_PAIRS], return_tensors="pt", padding=True)
    for _ in range(15):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def greedy(model: Any, tokenizer: Any, tokens: int = 12) -> list[int]:
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return [int(t) for t in out[0, inputs["input_ids"].shape[1] :]]


def adapter_model(base_dir: Path, adapter_dir: Path) -> Any:
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).eval()


def test_the_adapter_loads_in_peft_and_names_its_base(tiny_model_dir, fine_tune, tmp_path):
    out = tmp_path / "adapter"
    export.export_adapter(adapter_dir=fine_tune, base_name="tiny-chat", out_dir=out, progress=quiet)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-chat"  # not this machine's folder
    assert (out / "adapter_model.safetensors").exists() and (out / "tokenizer.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    exported = greedy(adapter_model(tiny_model_dir, out), tokenizer)
    assert exported == greedy(adapter_model(tiny_model_dir, fine_tune), tokenizer)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert exported != greedy(base, tokenizer)  # the adapter does change the answer


def test_the_merged_model_loads_without_peft_and_answers_as_the_adapter(
    tiny_model_dir, fine_tune, tmp_path
):
    out = tmp_path / "merged"
    export.export_merged(
        base_dir=tiny_model_dir, adapter_dir=fine_tune, out_dir=out, progress=quiet
    )
    assert not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template  # the chat template travels with the model
    assert greedy(merged, tokenizer, 20) == greedy(
        adapter_model(tiny_model_dir, fine_tune), tokenizer, 20
    )


def dequantized(tensor: Any) -> np.ndarray:
    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape([int(n) for n in reversed(tensor.shape)])


@pytest.mark.parametrize("quantization", ["q8_0", "f16"])
def test_the_gguf_holds_the_merged_weights_within_quantisation_tolerance(
    tiny_model_dir, fine_tune, tmp_path, quantization
):
    merged_dir = tmp_path / "merged"
    export.export_merged(
        base_dir=tiny_model_dir, adapter_dir=fine_tune, out_dir=merged_dir, progress=quiet
    )
    out = tmp_path / "gguf"
    export.export_gguf(
        merged_dir=merged_dir,
        out_dir=out,
        name="tiny-email",
        quantization=quantization,
        progress=quiet,
    )
    reader = gguf.GGUFReader(out / "model.gguf")
    fields = reader.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert "<|im_start|>" in bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    config = merged.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    expected = {}
    for hf_name, tensor in merged.state_dict().items():
        if hf_name == "lm_head.weight":
            continue  # tied to the token embeddings, as llama.cpp reads it
        data = tensor.numpy()
        if hf_name.endswith("q_proj.weight"):
            data = export.llama_permute(
                data, config.num_attention_heads, config.num_attention_heads
            )
        if hf_name.endswith("k_proj.weight"):
            data = export.llama_permute(
                data, config.num_attention_heads, config.num_key_value_heads
            )
        expected[names.get_name(hf_name, try_suffixes=(".weight", ".bias"))] = data
    assert {t.name for t in reader.tensors} == set(expected)
    # Q8_0 keeps each block of 32 within half a step of its scale (max/127); F16 ~ 1e-3.
    bound = 1 / 127 if quantization == "q8_0" else 1e-3
    for tensor in reader.tensors:
        want = expected[tensor.name]
        got = dequantized(tensor)
        assert got.shape == want.shape, tensor.name
        assert np.abs(got - want).max() <= bound * np.abs(want).max() + 1e-6, tensor.name

    # An independent reader: transformers' GGUF loader gives back the merged model.
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out, gguf_file="model.gguf")
    assert (
        tokenizer(PROMPT)["input_ids"]
        == AutoTokenizer.from_pretrained(merged_dir)(PROMPT)["input_ids"]
    )
    inputs = AutoTokenizer.from_pretrained(merged_dir)(PROMPT, return_tensors="pt")
    with torch.no_grad():
        a, b = merged(**inputs).logits, loaded(**inputs).logits
    assert torch.allclose(a, b, atol=0.05 * a.abs().max().item())

    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf")
    assert "<|im_start|>{{ .Role }}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_a_model_of_another_architecture_is_refused_with_a_reason(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(
        folder
    )
    with pytest.raises(export.ExportError, match="Llama architecture"):
        export.export_gguf(
            merged_dir=folder,
            out_dir=tmp_path / "out",
            name="x",
            quantization="q8_0",
            progress=quiet,
        )
