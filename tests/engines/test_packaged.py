"""Packaged base models: converted only when installed and missing, never left half-written, and
Gemma's turn template. The real conversion is in test_smollm2.py."""

from __future__ import annotations

import logging
import os
import shutil
import sys

import pytest

from service.engines.local import packaged
from service.engines.local.models import discover
from service.engines.local.packaged import (
    GEMMA_CHAT_TEMPLATE,
    PackagedModel,
    ensure_packaged_models,
)

MISSING = PackagedModel(
    name="missing-model",
    install="pip install missing-model",
    description="not installed",
    parts=(("no_such_module_for_tests", "model.gguf"),),
)
# Installed (the file exists) but not a real packaged model: its conversion fails.
BROKEN = PackagedModel(
    name="broken-model",
    install="pip install broken-model",
    description="not a GGUF",
    parts=(("service", "__init__.py"),),
)


def test_an_uninstalled_model_is_skipped_with_how_to_install_it(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(packaged, "PACKAGED_MODELS", (MISSING,))
    with caplog.at_level(logging.INFO, logger="service.engines.local.packaged"):
        assert ensure_packaged_models(tmp_path / "models") == []
    assert "pip install missing-model" in caplog.text
    assert not (tmp_path / "models" / "missing-model").exists()


def test_an_existing_folder_is_left_alone(monkeypatch, tmp_path, tiny_model_dir):
    monkeypatch.setattr(packaged, "PACKAGED_MODELS", (BROKEN,))
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_model_dir, models_dir / "broken-model")
    assert ensure_packaged_models(models_dir) == ["broken-model"]
    assert ensure_packaged_models(models_dir, only=["other"]) == []


def test_a_failed_conversion_leaves_nothing_discovery_could_pick_up(
    monkeypatch, tmp_path, caplog, tiny_model_dir
):
    monkeypatch.setattr(packaged, "PACKAGED_MODELS", (BROKEN,))
    models_dir = tmp_path / "models"
    # What a conversion killed just before its rename leaves: a complete model, hidden.
    shutil.copytree(tiny_model_dir, models_dir / ".broken-model.123.partial")
    with caplog.at_level(logging.INFO, logger="service.engines.local.packaged"):
        assert ensure_packaged_models(models_dir) == []
    assert "could not convert packaged model broken-model" in caplog.text
    assert [p.name for p in models_dir.iterdir() if p.is_dir()] == []
    assert discover(models_dir, {}) == []


def test_gemma_template_merges_the_system_message_into_the_first_user_turn(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": "Tu écris des emails."},
        {"role": "user", "content": "Remercie Mme Durand."},
        {"role": "assistant", "content": "Bonjour Madame Durand,"},
    ]
    bos = tokenizer.bos_token
    assert tokenizer.apply_chat_template(messages, tokenize=False) == (
        f"{bos}<start_of_turn>user\nTu écris des emails.\n\nRemercie Mme Durand.<end_of_turn>\n"
        "<start_of_turn>model\nBonjour Madame Durand,<end_of_turn>\n"
    )
    prompt = tokenizer.apply_chat_template(
        messages[1:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt == f"{bos}<start_of_turn>user\nRemercie Mme Durand.<end_of_turn>\n" + (
        "<start_of_turn>model\n"
    )


@pytest.mark.parametrize("model", packaged.PACKAGED_MODELS, ids=lambda m: m.name)
def test_packaged_models_are_found_without_importing_their_packages(model):
    paths = model.part_paths()
    if paths is None:
        pytest.skip(f"{model.name} is not installed")
    assert all(path.suffix == ".gguf" or ".gguf.part" in path.name for path in paths)
    assert not any(module in sys.modules for module, _ in model.parts)


@pytest.mark.parametrize(("flag", "converts"), [(None, True), ("0", False)])
def test_serve_converts_packaged_models_before_building_the_app(
    monkeypatch, tmp_path, flag, converts
):
    import service.__main__ as cli

    calls: list[str] = []
    monkeypatch.setattr(
        packaged, "ensure_packaged_models", lambda models_dir: calls.append(f"ensure {models_dir}")
    )
    monkeypatch.setattr(cli, "_serve", lambda settings, host, port: calls.append("serve"))
    for name in [k for k in os.environ if k.startswith("FT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FT_DATA_DIR", str(tmp_path))
    if flag is not None:
        monkeypatch.setenv("FT_PACKAGED_MODELS", flag)
    assert cli.main(["serve"]) == 0
    expected = [f"ensure {tmp_path / 'models'}"] if converts else []
    assert calls == [*expected, "serve"]
