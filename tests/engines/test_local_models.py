"""Local base models: discovered on disk, listed, and counted with their own tokenizer."""

from __future__ import annotations

import shutil

from service.engines.local.models import discover
from service.tokens import counter_for
from tests.engines.local_jobs import local_engine


def test_discovery_finds_model_folders_and_skips_others(tiny_model_dir, tmp_path):
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models_dir / "tiny-a")
    (models_dir / "empty").mkdir()
    found = discover(models_dir, {"tiny-b": tiny_model_dir})
    assert sorted(m.spec.id for m in found) == ["tiny-a", "tiny-b"]
    model = next(m for m in found if m.spec.id == "tiny-a")
    assert model.folder == (models_dir / "tiny-a").resolve()
    assert model.spec.max_tokens_per_example == 512
    assert model.spec.tokenizer == f"hf:{(models_dir / 'tiny-a').resolve()}"


def test_local_tokenizer_counts_the_chat_template(settings, tiny_model_dir):
    engine = local_engine(settings, tiny_model_dir.parent)
    spec = next(s for s in engine.base_models() if s.id == "tiny-chat")
    counter = counter_for(spec.tokenizer)
    messages = [{"role": "user", "content": "Bonjour"}, {"role": "assistant", "content": "Merci"}]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = len(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"])
    assert counter.count_example(messages) == expected > 4
