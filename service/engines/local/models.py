"""Local base models: each sub-folder of the models folder holding a Hugging Face causal LM.

A folder qualifies when it has a `config.json`, weights (`*.safetensors` or `*.bin`) and a
tokenizer with a chat template. Its name is the model's id. `FT_LOCAL_MODELS` adds folders
elsewhere under names of the operator's choice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from service.models.registry import BaseModelSpec, Method

log = logging.getLogger(__name__)

# Longest example trained on CPU-sized hardware; a model's own context may be shorter.
MAX_TRAINING_TOKENS = 4096
LOCAL_METHODS: frozenset[Method] = frozenset({"supervised", "dpo", "reinforcement"})


@dataclass(frozen=True)
class LocalModel:
    """A base model on disk: its spec and its folder."""

    spec: BaseModelSpec
    folder: Path


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file():
        return True
    config = folder / "tokenizer_config.json"
    if config.is_file():
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    return False


def count_parameters(weights: list[Path]) -> int | None:
    """Return the number of weights in safetensors files from their headers (no tensor is read)."""
    total = 0
    for path in weights:
        if path.suffix != ".safetensors":
            return None
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                total += math.prod(tensor["shape"])
    return total or None


def local_model(name: str, folder: Path) -> LocalModel | None:
    """Describe the model in `folder`, or return None (with a log line) if it is not one."""
    config_path = folder / "config.json"
    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
    if not config_path.is_file() or not weights:
        log.warning("skipping %s: no config.json or weights", folder)
        return None
    if not _has_chat_template(folder):
        log.warning("skipping %s: its tokenizer has no chat template", folder)
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    context = int(config.get("max_position_embeddings") or MAX_TRAINING_TOKENS)
    spec = BaseModelSpec(
        id=name,
        methods=LOCAL_METHODS,
        max_tokens_per_example=min(context, MAX_TRAINING_TOKENS),
        tokenizer=f"hf:{folder.resolve()}",
        created=int(config_path.stat().st_mtime),
        owned_by="local",
        parameters=count_parameters(weights),
    )
    return LocalModel(spec=spec, folder=folder.resolve())


def discover(models_dir: Path, extra: dict[str, Path]) -> list[LocalModel]:
    """Return the local base models in `models_dir` and those named in `extra`."""
    found: dict[str, LocalModel] = {}
    if models_dir.is_dir():
        for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
            model = local_model(folder.name, folder)
            if model is not None:
                found[model.spec.id] = model
    for name, folder in extra.items():
        model = local_model(name, Path(folder).expanduser())
        if model is not None:
            found[name] = model
    return list(found.values())
