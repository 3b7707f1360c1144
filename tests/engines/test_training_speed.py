"""The trainer's speed choices keep its result: attention per example, same loss and masks."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from service.engines.local import attention, device, memory, trainer
from service.engines.local.data import supervised_rows
from tests.processes import REPO_ROOT

torch = pytest.importorskip("torch")

CPU_AMX = device.Device(
    kind="cpu",
    name="Test CPU",
    threads=2,
    native_bf16=True,
    bf16_reason="the CPU has AMX-BF16",
    flash_attention=False,
    liger=False,
)
CPU_OLD = replace(
    CPU_AMX, native_bf16=False, bf16_reason="the CPU has no native bf16 (AMX or AVX512-BF16)"
)
GPU = device.Device(
    kind="cuda",
    name="Test GPU",
    threads=0,
    native_bf16=True,
    bf16_reason="the GPU supports bf16",
    flash_attention=True,
    liger=True,
)


def _gqa_model():
    """A random 2-layer Llama whose 4 query heads share 2 key/value heads, on segmented sdpa."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    config._attn_implementation = attention.register()
    return LlamaForCausalLM(config).eval()


def test_packed_examples_never_attend_to_each_other():
    model = _gqa_model()
    first = torch.randint(0, 97, (1, 9))
    second = torch.randint(0, 97, (1, 6))
    other_first = torch.randint(0, 97, (1, 9))

    def packed_logits(a, b):
        ids = torch.cat([a, b], dim=1)
        positions = torch.cat([torch.arange(a.shape[1]), torch.arange(b.shape[1])])[None]
        with torch.no_grad():
            return model(input_ids=ids, position_ids=positions).logits[0]

    with torch.no_grad():
        alone_first = model(input_ids=first).logits[0]
        alone_second = model(input_ids=second).logits[0]
    packed = packed_logits(first, second)
    # Each example in the row sees exactly what it sees alone ...
    torch.testing.assert_close(packed[:9], alone_first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[9:], alone_second, atol=1e-5, rtol=1e-5)
    # ... so changing the first example changes nothing in the second.
    torch.testing.assert_close(
        packed_logits(other_first, second)[9:], packed[9:], atol=1e-5, rtol=1e-5
    )
    # The same row read as one sequence (no restart of the positions) would mix them.
    with torch.no_grad():
        mixed = model(input_ids=torch.cat([first, second], dim=1)).logits[0]
    assert not torch.allclose(mixed[9:], alone_second, atol=1e-3)


def test_segment_bounds_follow_position_restarts():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert attention.segment_bounds(positions) == [0, 3, 5, 9]


def test_plan_uses_what_the_device_offers():
    cpu = device.plan_for(CPU_AMX, "supervised")
    assert (cpu.bf16, cpu.padding_free, cpu.attention) == (True, True, "sdpa_segments")
    assert cpu.trained_token_head and not cpu.gradient_checkpointing and not cpu.torch_compile
    assert cpu.describe() == (
        "Training on cpu (Test CPU, 2 threads): bf16 weights and autocast (the CPU has AMX-BF16), "
        "padding-free batches, attention per example (sdpa_segments), no gradient checkpointing, "
        "loss on trained tokens only, no torch.compile."
    )
    old = device.plan_for(CPU_OLD, "supervised")
    assert (old.bf16, old.weights_dtype, old.padding_free) == (False, "float32", True)
    gpu = device.plan_for(GPU, "supervised")
    assert (gpu.attention, gpu.liger, gpu.trained_token_head) == ("flash_attention_2", True, False)
    dpo = device.plan_for(CPU_AMX, "dpo")
    assert (dpo.padding_free, dpo.attention, dpo.bf16) == (False, "sdpa", True)
    plain = device.plan_for(CPU_AMX, "supervised", optimize=False)
    assert (plain.bf16, plain.padding_free, plain.attention, plain.trained_token_head) == (
        False,
        False,
        "sdpa",
        False,
    )
    assert json.loads(json.dumps(cpu.record()))["description"] == cpu.describe()
    # Sliding-window layers keep padded batches unless flash attention applies the window.
    windowed = device.plan_for(CPU_AMX, "supervised", windowed=True)
    assert (windowed.padding_free, windowed.attention, windowed.bf16) == (False, "sdpa", True)
    assert device.plan_for(GPU, "supervised", windowed=True).padding_free
    # Where the process allocates with glibc, the trainer keeps the memory a step frees.
    glibc = device.plan_for(replace(CPU_AMX, glibc_malloc=True), "dpo")
    assert glibc.retain_freed_memory and not cpu.retain_freed_memory
    assert glibc.describe().endswith("freed memory kept for the next step, no torch.compile.")
    assert not device.plan_for(
        replace(CPU_AMX, glibc_malloc=True), "dpo", optimize=False
    ).retain_freed_memory


FAULTS_OF_A_BLOCK = """
import resource, sys
from service.engines.local import memory
if sys.argv[1] == "retain":
    assert memory.retain_freed_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = b"\\x01" * (64 << 20)  # 64 MiB, every page written
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[faults() for _ in range(3)])
"""


@pytest.mark.skipif(not memory.available(), reason="the process does not use glibc's malloc")
def test_a_trainer_process_reuses_the_memory_it_freed():
    def page_faults(mode: str) -> list[int]:
        done = subprocess.run(
            [sys.executable, "-c", FAULTS_OF_A_BLOCK, mode],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        )
        return [int(n) for n in done.stdout.split()]

    pages = (64 << 20) // resource.getpagesize()
    # By default each new 64 MiB block is a fresh mapping: every page faults in again.
    assert all(n > 0.99 * pages for n in page_faults("default"))
    # Retained: the first block faults in once, the next ones reuse its pages.
    first, *again = page_faults("retain")
    assert first > 0.99 * pages and all(n < 0.01 * pages for n in again)


def test_sliding_window_models_are_recognised():
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    assert device.windowed_attention(Gemma3TextConfig())
    assert not device.windowed_attention(LlamaConfig())
    assert not device.windowed_attention(Qwen2Config(use_sliding_window=False))


def test_cpu_bf16_is_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some Xeon\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n")
    found = device.detect(cpuinfo)
    if found.kind == "cpu":
        assert (found.name, found.native_bf16) == ("Some Xeon", True)
        assert found.bf16_reason == "the CPU has AMX-BF16"
        cpuinfo.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n")
        assert device.detect(cpuinfo).native_bf16 is False
        assert device.detect(tmp_path / "missing").name == "unknown CPU"


def _training_file(path: Path) -> Path:
    """Chats of varied lengths; the first has a weight-0 assistant turn before the trained one."""
    examples = [
        {
            "messages": [
                {"role": "system", "content": "You write emails."},
                {"role": "user", "content": "Draft a reply"},
                {"role": "assistant", "content": "zzz ignored draft zzz", "weight": 0},
                {"role": "user", "content": "Shorter please"},
                {"role": "assistant", "content": "Thanks, see you Monday."},
            ]
        }
    ]
    for i in range(7):
        examples.append(
            {
                "messages": [
                    {"role": "user", "content": "Write to the client " + "about the order " * i},
                    {"role": "assistant", "content": "Dear client, " + "thank you " * (i + 1)},
                ]
            }
        )
    path.write_text("\n".join(json.dumps(e) for e in examples) + "\n")
    return path


def _trainer(tiny_model_dir: Path, tmp_path: Path, plan: device.Plan, name: str):
    """The service's own SFT trainer on the training file, batches of 4."""
    training = _training_file(tmp_path / "train.jsonl")
    spec = trainer.TrainSpec(
        job_id="ftjob-test",
        method="supervised",
        base_path=str(tiny_model_dir),
        training_path=str(training),
        validation_path=None,
        output_dir=str(tmp_path / name),
        hyperparameters={},
        seed=3,
    )
    hyper = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1.0}
    torch.manual_seed(3)
    return trainer._make_trainer(spec, hyper, supervised_rows(training), None, plan)


pytestmark_peft = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


@pytestmark_peft
def test_loss_covers_assistant_tokens_only_and_weight_zero_turns_stay_untrained(
    tiny_model_dir, tmp_path
):
    built = _trainer(tiny_model_dir, tmp_path, device.plan_for(CPU_OLD, "supervised"), "pf")
    assert not built.args.gradient_checkpointing and built.args.padding_free
    tokenizer = built.processing_class
    batches = list(built.get_train_dataloader())
    assert all("attention_mask" not in b and b["input_ids"].shape[0] == 1 for b in batches)
    trained = []
    for batch in batches:
        labels, positions = batch["labels"][0], batch["position_ids"][0]
        assert (labels[positions == 0] == -100).all()  # no example predicts from another's end
        bounds = attention.segment_bounds(batch["position_ids"])
        for start, end in zip(bounds[:-1], bounds[1:], strict=False):
            kept = labels[start:end][labels[start:end] != -100]
            trained.append(tokenizer.decode(kept))
    assert len(trained) == 8
    # Only the assistant's answers are learnt: never the system or user text, never the
    # weight-0 draft (it appears as context of the trained turn only).
    for text in trained:
        assert text.startswith(("Thanks, see you Monday.", "Dear client,"))
        assert "zzz" not in text and "Write to" not in text and "You write" not in text
    assert sum(text.startswith("Thanks, see you Monday.") for text in trained) == 1


@pytestmark_peft
def test_optimised_batches_give_the_padded_loss_and_gradients(tiny_model_dir, tmp_path):
    # float32 on both sides, so that only the batching, attention and loss head differ.
    padded = _trainer(
        tiny_model_dir, tmp_path, device.plan_for(CPU_OLD, "supervised", optimize=False), "a"
    )
    packed = _trainer(tiny_model_dir, tmp_path, device.plan_for(CPU_OLD, "supervised"), "b")
    for one, other in zip(
        padded.get_train_dataloader(), packed.get_train_dataloader(), strict=True
    ):
        assert "attention_mask" in one and "position_ids" in other
        losses = []
        grads = []
        for built, batch in ((padded, one), (packed, other)):
            built.model.zero_grad()
            loss = built.compute_loss(built.model, dict(batch))
            loss.backward()
            losses.append(loss.item())
            grads.append(
                torch.cat(
                    [p.grad.flatten() for p in built.model.parameters() if p.grad is not None]
                )
            )
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_rows_longer_than_the_limit_are_cut_as_trl_cuts_them():
    from datasets import Dataset

    rows = Dataset.from_list(
        [
            {"input_ids": list(range(10)), "completion_mask": [0] * 4 + [1] * 6},
            {"input_ids": [1, 2, 3], "completion_mask": [0, 1, 1]},
        ]
    )
    cut = trainer.truncate_tokens(rows, 6)
    assert cut["input_ids"] == [[0, 1, 2, 3, 4, 5], [1, 2, 3]]
    assert cut["completion_mask"] == [[0, 0, 0, 0, 1, 1], [0, 1, 1]]
    assert trainer.truncate_tokens(rows, 10) is rows


def test_loss_head_chunks_give_the_dense_log_probs_and_gradients(monkeypatch):
    from service.engines.local import loss_head

    torch.manual_seed(1)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    targets = torch.randint(0, 50, (37,))
    # 8 tokens' logits per chunk: 5 chunks, each recomputed in the backward pass.
    monkeypatch.setattr(loss_head, "CHUNK_BYTES", 8 * 4 * 50)
    log_probs, entropy, is_top1 = loss_head.scored_tokens(hidden, weight, targets)
    log_probs.sum().backward()
    chunked_grad = hidden.grad.clone()

    hidden.grad = None
    logits = hidden @ weight.t()
    dense = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    dense.sum().backward()
    torch.testing.assert_close(log_probs, dense)
    torch.testing.assert_close(chunked_grad, hidden.grad)
    probs = torch.softmax(logits.detach(), -1)
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1), atol=1e-5, rtol=1e-5)
    assert torch.equal(is_top1, logits.argmax(-1) == targets)


def test_loss_head_leaves_scaled_heads_to_trl():
    from transformers import Gemma2Config, LlamaConfig

    from service.engines.local import loss_head

    class Model:
        def __init__(self, config):
            self.config = config

    assert loss_head.supported(Model(LlamaConfig()))
    assert not loss_head.supported(Model(Gemma2Config(final_logit_softcapping=30.0)))
